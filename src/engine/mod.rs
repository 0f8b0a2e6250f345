//! The pure lifecycle engine.
//!
//! Given a tenant, the subscriptions that concern it, the users of the tenants those
//! subscriptions name, the [`Policy`] and the instant `now`, it returns the status the operator
//! should write, the milestones to announce and the next instant at which anything changes.
//! No clock reads, no I/O: the controller and the `evaluate` CLI call the same functions.

pub mod conditions;
pub mod coverage;
pub mod duplicates;
pub mod plan;
pub mod policy;
pub mod subscription;
pub mod tenant;
pub mod world;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};

pub use crate::api::MilestoneKind;
pub use duplicates::Neighbour;
pub use policy::{Catalogue, Policy, parse_period};
pub use subscription::{SubscriptionChange, SubscriptionEvaluation, evaluate_subscription};
pub use tenant::{Milestone, TenantEvaluation, TenantInput, evaluate_tenant};
pub use world::{
    World, WorldEvaluation, evaluate_world, evaluate_world_indexed, evaluate_world_map,
};

/// `spec.users` of every known tenant, by name. A tenant missing from the map does not exist.
/// (Only looked up, several times per evaluation: a hash map, as a fleet has 100,000s.)
pub type TenantUsers = std::collections::HashMap<String, i64>;

/// The earliest instant RFC 3339 can write (year 0000). Computed instants are kept within
/// RFC 3339's range so that every status value reads back exactly as written.
pub const FIRST_INSTANT: i64 = -62_167_219_200;
/// The last instant RFC 3339 can write: 9999-12-31T23:59:59Z.
pub const LAST_INSTANT: i64 = 253_402_300_799;

fn clamp(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().clamp(FIRST_INSTANT, LAST_INSTANT);
    if secs == t.timestamp() {
        t
    } else {
        DateTime::from_timestamp(secs, 0).unwrap_or(t)
    }
}

/// `t + d`, saturating at the ends of RFC 3339 time instead of overflowing.
pub(crate) fn later(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    clamp(t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

/// `t - d`, saturating.
pub(crate) fn earlier(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    clamp(t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// The earliest of the candidate instants that lie strictly after `now`.
pub(crate) fn next_after(
    now: DateTime<Utc>,
    candidates: impl IntoIterator<Item = DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    candidates.into_iter().filter(|t| *t > now).min()
}

/// `now` without its fraction of a second, for the timestamps the engine records.
pub(crate) fn whole_seconds(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// An instant as a customer reads a deadline ("until …", "before …") in messages: an instant at
/// midnight UTC is the end of the day before, `the end of 31 Dec 2026 (UTC)` (a bare
/// `endDate: 2026-12-31` ends at 2027-01-01T00:00:00Z, and writing that day would promise a spare
/// one); any other instant is written exactly with its zone, `2027-01-01 12:00 UTC`.
pub(crate) fn human(t: DateTime<Utc>) -> Human {
    Human { t, from: false }
}

/// An instant as a customer reads a beginning ("from …", "since …"): `the start of 1 Jan 2027
/// (UTC)` at midnight UTC, otherwise the exact instant as [`human`] writes it.
pub(crate) fn human_from(t: DateTime<Utc>) -> Human {
    Human { t, from: true }
}

/// An instant written for customers ([`human`], [`human_from`]). Written straight into the
/// message that holds it: the engine writes several per object, hundreds of thousands over a
/// fleet's manifests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Human {
    t: DateTime<Utc>,
    /// A beginning rather than a deadline.
    from: bool,
}

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let day = midnight_day(self.t);
        let (day, words) = if self.from {
            (day, "the start of ")
        } else {
            (day.and_then(|d| d.pred_opt()), "the end of ")
        };
        match day.filter(in_years) {
            Some(day) => {
                f.write_str(words)?;
                write_day(f, day)?;
                f.write_str(" (UTC)")
            }
            None => f.write_str(&exact(self.t)),
        }
    }
}

/// The day starting at `t`, when `t` is midnight UTC.
fn midnight_day(t: DateTime<Utc>) -> Option<chrono::NaiveDate> {
    use chrono::Timelike;
    (t.timestamp().rem_euclid(86_400) == 0 && t.nanosecond() == 0).then(|| t.date_naive())
}

/// Days are written by name only within the years RFC 3339 can write.
fn in_years(day: &chrono::NaiveDate) -> bool {
    use chrono::Datelike;
    (0..=9999).contains(&day.year())
}

/// `31 Dec 2026` (a day within [`in_years`]).
fn write_day(f: &mut std::fmt::Formatter<'_>, day: chrono::NaiveDate) -> std::fmt::Result {
    use chrono::Datelike;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[day.month0() as usize % 12];
    write!(f, "{} {month} {:04}", day.day(), day.year())
}

/// `2027-01-01 12:00 UTC`, with seconds (and their fraction) only when there are some.
fn exact(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let mut out = String::with_capacity(24);
    if (0..=9999).contains(&t.year()) {
        crate::api::date::push_date(&mut out, t.date_naive());
    } else {
        out.push_str(&t.format("%Y-%m-%d").to_string());
    }
    out.push_str(&format!(" {:02}:{:02}", t.hour(), t.minute()));
    let (sec, nanos) = (t.second(), t.nanosecond());
    if sec != 0 || nanos != 0 {
        out.push_str(&format!(":{sec:02}"));
        if nanos != 0 {
            let fraction = format!("{:09}", nanos.min(999_999_999));
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
        }
    }
    out.push_str(" UTC");
    out
}

#[cfg(test)]
mod human_tests {
    use super::{FIRST_INSTANT, LAST_INSTANT, human, human_from};
    use chrono::{DateTime, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn deadlines_and_beginnings_as_customers_read_them() {
        // (instant, as a deadline, as a beginning)
        let table = [
            // A bare endDate 2026-12-31 ends here: the end of the 31st, never "1 Jan".
            (
                "2027-01-01T00:00:00Z",
                "the end of 31 Dec 2026 (UTC)",
                "the start of 1 Jan 2027 (UTC)",
            ),
            (
                "2028-03-01T00:00:00Z",
                "the end of 29 Feb 2028 (UTC)",
                "the start of 1 Mar 2028 (UTC)",
            ),
            // Any other instant: exact, with its zone.
            (
                "2027-01-01T12:00:00Z",
                "2027-01-01 12:00 UTC",
                "2027-01-01 12:00 UTC",
            ),
            (
                "2026-12-31T15:00:00+09:00",
                "2026-12-31 06:00 UTC",
                "2026-12-31 06:00 UTC",
            ),
            (
                "2027-01-01T00:00:01Z",
                "2027-01-01 00:00:01 UTC",
                "2027-01-01 00:00:01 UTC",
            ),
            (
                "2027-01-01T00:00:00.250Z",
                "2027-01-01 00:00:00.25 UTC",
                "2027-01-01 00:00:00.25 UTC",
            ),
            (
                "2026-12-31T23:59:59Z",
                "2026-12-31 23:59:59 UTC",
                "2026-12-31 23:59:59 UTC",
            ),
            // The edges of RFC 3339 time (what the engine clamps to).
            (
                "0000-01-01T00:00:00Z",
                "0000-01-01 00:00 UTC",
                "the start of 1 Jan 0000 (UTC)",
            ),
            (
                "0000-01-02T00:00:00Z",
                "the end of 1 Jan 0000 (UTC)",
                "the start of 2 Jan 0000 (UTC)",
            ),
            (
                "9999-12-31T00:00:00Z",
                "the end of 30 Dec 9999 (UTC)",
                "the start of 31 Dec 9999 (UTC)",
            ),
            (
                "9999-12-31T23:59:59Z",
                "9999-12-31 23:59:59 UTC",
                "9999-12-31 23:59:59 UTC",
            ),
        ];
        for (instant, deadline, beginning) in table {
            let t = at(instant);
            assert_eq!(human(t).to_string(), deadline, "{instant} as a deadline");
            assert_eq!(
                human_from(t).to_string(),
                beginning,
                "{instant} as a beginning"
            );
        }
        assert_eq!(
            DateTime::from_timestamp(FIRST_INSTANT, 0).map(|t| human(t).to_string()),
            Some("0000-01-01 00:00 UTC".to_string())
        );
        assert_eq!(
            DateTime::from_timestamp(LAST_INSTANT, 0).map(|t| human(t).to_string()),
            Some("9999-12-31 23:59:59 UTC".to_string())
        );
        // Beyond year 9999 (never written by the engine): still a true reading, never a panic.
        let beyond = DateTime::from_timestamp(LAST_INSTANT + 1, 0).expect("10000-01-01");
        assert_eq!(human(beyond).to_string(), "the end of 31 Dec 9999 (UTC)");
        assert!(
            human_from(beyond).to_string().ends_with(" 00:00 UTC"),
            "{}",
            human_from(beyond)
        );
        let before = DateTime::from_timestamp(FIRST_INSTANT - 86_400, 0).expect("-0001-12-31");
        assert!(
            human(before).to_string().ends_with(" 00:00 UTC"),
            "{}",
            human(before)
        );
    }

    #[test]
    fn a_midnight_deadline_never_names_the_day_after() {
        // Every 13th midnight over a few centuries: the named day is the one that just ended (and,
        // as a beginning, the one that starts), as chrono's own formatting writes it.
        let mut t = at("1999-12-31T00:00:00Z").timestamp();
        while t < at("2300-01-01T00:00:00Z").timestamp() {
            let instant = DateTime::from_timestamp(t, 0).expect("instant");
            let day = instant.date_naive().pred_opt().expect("day before");
            assert_eq!(
                human(instant).to_string(),
                format!("the end of {} (UTC)", day.format("%-d %b %Y")),
                "{instant}"
            );
            assert_eq!(
                human_from(instant).to_string(),
                format!("the start of {} (UTC)", instant.format("%-d %b %Y")),
                "{instant}"
            );
            t += 86_400 * 13;
        }
    }
}
