//! Continuous coverage of one product by several subscriptions.

use chrono::{DateTime, Utc};

use super::subscription::Timeline;
use crate::api::Plan;

/// One subscription as far as coverage is concerned.
#[derive(Clone, Debug)]
pub struct Licence<'a> {
    pub name: &'a str,
    pub plan: Plan,
    pub timeline: Timeline,
}

/// How a product is covered at some instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage<'a> {
    /// C: the end of continuous coverage.
    pub end: DateTime<Utc>,
    /// The subscription whose end is C (the one to renew).
    pub subscription: &'a str,
    /// `Trial` when only trials are in force now, `Paid` when a paid licence is, `None` when
    /// nothing is in force (coverage has ended).
    pub plan_in_force: Option<Plan>,
}

/// Coverage of a product at `now`: `None` when no licence has started (the product is missing).
///
/// Starting from the started licences, the coverage end is the latest effective end among them;
/// any licence that starts at or before that end extends it to its own end, repeatedly. So a
/// renewal bought in advance, starting the day the old licence ends, leaves no gap.
pub fn coverage<'a>(licences: &[Licence<'a>], now: DateTime<Utc>) -> Option<Coverage<'a>> {
    let mut best = licences
        .iter()
        .filter(|l| l.timeline.starts_at <= now)
        .max_by(|a, b| {
            a.timeline
                .effective_end_at
                .cmp(&b.timeline.effective_end_at)
                .then_with(|| b.name.cmp(a.name))
        })?;
    let mut end = best.timeline.effective_end_at;

    let mut by_start: Vec<&Licence<'a>> = licences.iter().collect();
    by_start.sort_by(|a, b| {
        a.timeline
            .starts_at
            .cmp(&b.timeline.starts_at)
            .then_with(|| a.name.cmp(b.name))
    });
    for l in by_start {
        if l.timeline.starts_at > end {
            break; // a gap: later licences start after it too
        }
        if l.timeline.effective_end_at > end {
            end = l.timeline.effective_end_at;
            best = l;
        }
    }

    let in_force: Vec<Plan> = licences
        .iter()
        .filter(|l| l.timeline.in_force(now))
        .map(|l| l.plan)
        .collect();
    let plan_in_force = if in_force.is_empty() {
        None
    } else if in_force.contains(&Plan::Paid) {
        Some(Plan::Paid)
    } else {
        Some(Plan::Trial)
    };
    Some(Coverage {
        end,
        subscription: best.name,
        plan_in_force,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("{s}T00:00:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn lic<'a>(name: &'a str, plan: Plan, start: &str, end: &str) -> Licence<'a> {
        let w = TimeDelta::days(30);
        let (s, e) = (at(start), at(end));
        Licence {
            name,
            plan,
            timeline: Timeline {
                starts_at: s,
                effective_end_at: e,
                expiring_soon_at: e - w,
                grace_ends_at: e + w,
            },
        }
    }

    #[test]
    fn table() {
        use Plan::*;
        struct Case {
            name: &'static str,
            licences: Vec<Licence<'static>>,
            now: &'static str,
            want: Option<(&'static str, &'static str, Option<Plan>)>,
        }
        let cases = vec![
            Case {
                name: "nothing",
                licences: vec![],
                now: "2026-06-01",
                want: None,
            },
            Case {
                name: "only a future licence is missing coverage",
                licences: vec![lic("next", Paid, "2026-07-01", "2027-07-01")],
                now: "2026-06-01",
                want: None,
            },
            Case {
                name: "one licence in force",
                licences: vec![lic("a", Paid, "2026-01-01", "2027-01-01")],
                now: "2026-06-01",
                want: Some(("2027-01-01", "a", Some(Paid))),
            },
            Case {
                name: "renewal starting the day the old one ends chains",
                licences: vec![
                    lic("old", Paid, "2026-01-01", "2027-01-01"),
                    lic("new", Paid, "2027-01-01", "2028-01-01"),
                ],
                now: "2026-12-15",
                want: Some(("2028-01-01", "new", Some(Paid))),
            },
            Case {
                name: "renewal after a gap does not chain until it starts",
                licences: vec![
                    lic("old", Paid, "2026-01-01", "2027-01-01"),
                    lic("new", Paid, "2027-01-05", "2028-01-01"),
                ],
                now: "2026-12-15",
                want: Some(("2027-01-01", "old", Some(Paid))),
            },
            Case {
                name: "renewal after a gap covers once started",
                licences: vec![
                    lic("old", Paid, "2026-01-01", "2027-01-01"),
                    lic("new", Paid, "2027-01-05", "2028-01-01"),
                ],
                now: "2027-01-05",
                want: Some(("2028-01-01", "new", Some(Paid))),
            },
            Case {
                name: "expired licence still defines the coverage end",
                licences: vec![lic("old", Paid, "2025-01-01", "2026-01-01")],
                now: "2026-06-01",
                want: Some(("2026-01-01", "old", None)),
            },
            Case {
                name: "trial alone",
                licences: vec![lic("t", Trial, "2026-05-01", "2026-06-30")],
                now: "2026-06-01",
                want: Some(("2026-06-30", "t", Some(Trial))),
            },
            Case {
                name: "trial beside paid is paid",
                licences: vec![
                    lic("t", Trial, "2026-05-01", "2026-06-30"),
                    lic("p", Paid, "2026-05-15", "2026-06-15"),
                ],
                now: "2026-06-01",
                want: Some(("2026-06-30", "t", Some(Paid))),
            },
            Case {
                name: "chain of three in any order",
                licences: vec![
                    lic("c", Paid, "2028-01-01", "2029-01-01"),
                    lic("a", Paid, "2026-01-01", "2027-01-01"),
                    lic("b", Paid, "2026-12-01", "2028-01-01"),
                ],
                now: "2026-02-01",
                want: Some(("2029-01-01", "c", Some(Paid))),
            },
        ];
        for case in cases {
            let got = coverage(&case.licences, at(case.now))
                .map(|c| (c.end, c.subscription, c.plan_in_force));
            let want = case.want.map(|(end, name, plan)| (at(end), name, plan));
            assert_eq!(got, want, "{}", case.name);
        }
    }
}
