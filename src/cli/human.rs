//! How the plugin's text output is written: instants and durations as people read them, and
//! the tables and cells every command's output is made of.
//!
//! An end of coverage is an exclusive instant: a licence whose `endDate` is `2026-12-31` ends at
//! `2027-01-01T00:00:00Z`. Written as a bare date that would read a day late, so an instant at
//! midnight UTC reads "until the end of 31 Dec 2026 (UTC)", and any other instant is written
//! exactly, with its zone ("2026-12-31 15:30:00 UTC").

use chrono::{DateTime, TimeDelta, Timelike, Utc};

fn at_midnight(t: DateTime<Utc>) -> bool {
    t.num_seconds_from_midnight() == 0 && t.nanosecond() == 0
}

/// An exact instant with its zone: `2027-01-01 00:00:00 UTC`.
pub fn instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The end of something that lasts until `t` (exclusive): "until the end of 31 Dec 2026 (UTC)"
/// for midnight UTC, else "until 2026-12-31 15:30:00 UTC".
pub fn until(t: DateTime<Utc>) -> String {
    if at_midnight(t) {
        let last_day = t - TimeDelta::days(1);
        format!("until the end of {} (UTC)", last_day.format("%-d %b %Y"))
    } else {
        format!("until {}", instant(t))
    }
}

/// A deadline: the last moment before `t` (exclusive): "before the end of 30 Nov 2026 (UTC)"
/// for midnight UTC, else "before 2026-12-31 15:30:00 UTC".
pub fn before(t: DateTime<Utc>) -> String {
    if at_midnight(t) {
        let last_day = t - TimeDelta::days(1);
        format!("before the end of {} (UTC)", last_day.format("%-d %b %Y"))
    } else {
        format!("before {}", instant(t))
    }
}

/// When something starts at `t`: "at the start of 1 Jan 2027 (00:00 UTC)" for midnight UTC,
/// else "at 2026-12-31 15:30:00 UTC".
pub fn from(t: DateTime<Utc>) -> String {
    if at_midnight(t) {
        format!("at the start of {} (00:00 UTC)", t.format("%-d %b %Y"))
    } else {
        format!("at {}", instant(t))
    }
}

/// `t` relative to `now`: "in 3 days", "in 5h 2m", "12 min ago", "now".
pub fn relative(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let d = t - now;
    let text = span(d.abs());
    if d.num_seconds() == 0 {
        "now".to_string()
    } else if d > TimeDelta::zero() {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A positive duration, rounded to its two largest units: "3 days", "1 day 4h", "5h 2m", "40s".
pub fn span(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m {seconds}s"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) if d >= 2 => plural(d, "day"),
        (d, h, _) if d < 7 => format!("{} {h}h", plural(d, "day")),
        (d, _, _) => plural(d, "day"),
    }
}

/// Whole days from `now` to `end`, rounded down; negative once it has passed (as `report`).
pub fn days_left(now: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    (end - now).num_seconds().div_euclid(86_400)
}

/// Renders rows as left-aligned columns separated by two spaces, under a `# title` line.
pub fn render_columns<R: AsRef<[String]>>(title: &str, rows: &[R]) -> String {
    format!("# {title}\n{}", columns(rows))
}

/// Renders rows as left-aligned columns separated by two spaces.
pub fn columns<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.first().map(|r| r.as_ref().len()).unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.as_ref().get(i).map(|c| c.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Written in place, without a string per cell or line, into a text sized at once: a fleet's
    // report is millions of cells. Every column but the last is padded to its width; the last
    // is not (lines are trimmed), so one long last cell does not size every line. The size is
    // a hint: if it can not be had, the text grows as it is written.
    let padded: usize = widths.iter().take(columns.saturating_sub(1)).sum::<usize>()
        + 2 * columns.saturating_sub(1)
        + 1;
    let size = rows.iter().fold(0usize, |size, row| {
        let last = row
            .as_ref()
            .get(columns.saturating_sub(1))
            .map_or(0, String::len);
        size.saturating_add(padded).saturating_add(last)
    });
    let mut out = String::new();
    let _ = out.try_reserve(size);
    for row in rows {
        let start = out.len();
        for (i, cell) in row.as_ref().iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let width = widths.get(i).copied().unwrap_or(0);
            out.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.chars().count()),
            ));
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    }
    out
}

/// A cell that is never blank, so columns stay aligned: `-` for an empty text.
pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// `text` indented by two spaces, line by line (a section's body under its heading).
pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        crate::cli::evaluate::parse_at(s).expect("instant")
    }

    #[test]
    fn an_end_at_midnight_reads_as_the_last_day() {
        assert_eq!(until(t("2027-01-01")), "until the end of 31 Dec 2026 (UTC)");
        assert_eq!(
            until(t("2026-12-31T15:30:00Z")),
            "until 2026-12-31 15:30:00 UTC"
        );
        assert_eq!(
            before(t("2026-12-01")),
            "before the end of 30 Nov 2026 (UTC)"
        );
        assert_eq!(
            from(t("2027-01-01")),
            "at the start of 1 Jan 2027 (00:00 UTC)"
        );
        assert_eq!(
            from(t("2027-01-01T00:00:01Z")),
            "at 2027-01-01 00:00:01 UTC"
        );
    }

    #[test]
    fn relative_spans() {
        let now = t("2026-12-15");
        assert_eq!(relative(now, t("2027-01-01")), "in 17 days");
        assert_eq!(relative(now, t("2026-12-16T04:00:00Z")), "in 1 day 4h");
        assert_eq!(relative(now, t("2026-12-14T23:48:00Z")), "12m 0s ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(days_left(now, t("2027-01-01")), 17);
        assert_eq!(days_left(now, t("2026-12-14T12:00:00Z")), -1);
    }

    #[test]
    fn tables_align_columns_and_never_leave_a_cell_blank() {
        let rows = vec![
            vec!["NAME".to_string(), "PHASE".to_string(), dash("")],
            vec!["globex".to_string(), dash("Active"), "x".to_string()],
        ];
        let cases = [
            (columns(&rows), "NAME    PHASE   -\nglobex  Active  x\n"),
            (
                render_columns("t", &rows),
                "# t\nNAME    PHASE   -\nglobex  Active  x\n",
            ),
            (indent("a\nb\n"), "  a\n  b\n"),
            // Widths in characters, not bytes; a long last cell pads nothing; lines trimmed.
            (
                columns(&[
                    ["A".to_string(), "B".to_string()],
                    ["ééé".to_string(), "x".repeat(40)],
                    ["b".to_string(), String::new()],
                ]),
                &format!("A    B\nééé  {}\nb\n", "x".repeat(40)),
            ),
            (columns::<[String; 2]>(&[]), ""),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
