//! The pure lifecycle engine.
//!
//! Given a tenant, the subscriptions that concern it, the users of the tenants those
//! subscriptions name, the [`Policy`] and the instant `now`, it returns the status the operator
//! should write, the milestones to announce and the next instant at which anything changes.
//! No clock reads, no I/O: the controller and the `evaluate` CLI call the same functions.

pub mod conditions;
pub mod coverage;
pub mod duplicates;
pub mod policy;
pub mod settings;
pub mod subscription;
pub mod tenant;
pub mod workloads;
pub mod world;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

pub use duplicates::Neighbour;
pub use policy::{Catalogue, Policy, parse_period};
pub use subscription::{SubscriptionChange, SubscriptionEvaluation, evaluate_subscription};
pub use tenant::{Milestone, MilestoneKind, TenantEvaluation, TenantInput, evaluate_tenant};
pub use world::{World, WorldEvaluation, evaluate_world};

/// `spec.users` of every known tenant, by name. A tenant missing from the map does not exist.
pub type TenantUsers = BTreeMap<String, i64>;

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

/// A date as people read it in messages: `2026-12-31` for midnight UTC, else RFC 3339.
pub(crate) fn human(t: DateTime<Utc>) -> String {
    use chrono::Datelike;
    if t.timestamp() % 86_400 == 0 {
        if (0..=9999).contains(&t.year()) {
            // What `%Y-%m-%d` writes for these years, without a format interpreter.
            let mut out = String::with_capacity(10);
            crate::api::date::push_date(&mut out, t.date_naive());
            return out;
        }
        t.format("%Y-%m-%d").to_string()
    } else {
        crate::api::date::format_instant(t)
    }
}
