//! The pure lifecycle engine.
//!
//! Given a tenant, the subscriptions that concern it, the users of the tenants those
//! subscriptions name, the [`Policy`] and the instant `now`, it returns the status the operator
//! should write, the milestones to announce and the next instant at which anything changes.
//! No clock reads, no I/O: the controller and the `evaluate` CLI call the same functions.

pub mod conditions;
pub mod coverage;
pub mod policy;
pub mod subscription;
pub mod tenant;
pub mod world;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

pub use policy::{Catalogue, Policy, parse_period};
pub use subscription::{SubscriptionChange, SubscriptionEvaluation, evaluate_subscription};
pub use tenant::{Milestone, MilestoneKind, TenantEvaluation, evaluate_tenant};
pub use world::{World, WorldEvaluation, evaluate_world};

/// `spec.users` of every known tenant, by name. A tenant missing from the map does not exist.
pub type TenantUsers = BTreeMap<String, i64>;

/// `t + d`, saturating at the ends of time instead of panicking.
pub(crate) fn later(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(if d < TimeDelta::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// `t - d`, saturating.
pub(crate) fn earlier(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(if d < TimeDelta::zero() {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    })
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
    if t.timestamp() % 86_400 == 0 {
        t.format("%Y-%m-%d").to_string()
    } else {
        crate::api::date::format_instant(t)
    }
}
