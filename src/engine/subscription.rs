//! One subscription on its own: phase, instants, seats, transfers.

use chrono::{DateTime, Utc};

use super::conditions::ConditionSet;
use super::{Policy, TenantUsers, earlier, human, human_from, later, next_after, whole_seconds};
use crate::api::date::DateError;
use crate::api::{
    ConditionType, Reason, Subscription, SubscriptionPhase, SubscriptionStatus, Transfer,
};

/// Transfers kept in `status.transfers`.
pub const TRANSFER_HISTORY: usize = 10;

/// The instants of one subscription's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// S: the licence starts.
    pub starts_at: DateTime<Utc>,
    /// E: the later of `endDate` and `extension.until`.
    pub effective_end_at: DateTime<Utc>,
    /// E − W.
    pub expiring_soon_at: DateTime<Utc>,
    /// E + G.
    pub grace_ends_at: DateTime<Utc>,
}

impl Timeline {
    /// Reads the dates of a subscription; an unreadable date is an error the caller reports.
    pub fn of(sub: &Subscription, policy: &Policy) -> Result<Self, DateError> {
        let starts_at = sub.spec.start_date.start_instant()?;
        let mut end = sub.spec.end_date.end_instant()?;
        if let Some(ext) = &sub.spec.extension {
            end = end.max(ext.until.end_instant()?);
        }
        Ok(Self {
            starts_at,
            effective_end_at: end,
            expiring_soon_at: earlier(end, policy.warning_period),
            grace_ends_at: later(end, policy.grace_period),
        })
    }

    /// The phase at `now`; boundaries belong to the later phase.
    pub fn phase(&self, now: DateTime<Utc>) -> SubscriptionPhase {
        if now < self.starts_at {
            SubscriptionPhase::Pending
        } else if now < self.expiring_soon_at {
            SubscriptionPhase::Active
        } else if now < self.effective_end_at {
            SubscriptionPhase::ExpiringSoon
        } else if now < self.grace_ends_at {
            SubscriptionPhase::GracePeriod
        } else {
            SubscriptionPhase::Expired
        }
    }

    /// True while the licence is in force (started, not ended).
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.effective_end_at
    }

    /// The next instant after `now` at which [`Timeline::phase`] changes.
    pub fn next_transition(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // E − W only changes the phase when it falls after the start.
        let warning = (self.expiring_soon_at > self.starts_at).then_some(self.expiring_soon_at);
        next_after(
            now,
            [
                Some(self.starts_at),
                warning,
                Some(self.effective_end_at),
                Some(self.grace_ends_at),
            ]
            .into_iter()
            .flatten(),
        )
    }
}

/// The tenants whose evaluation `sub` can change, and so the tenants that read it: the owner
/// and the sharers in spec (coverage), the owner and sharers it was last seen with (they lose
/// coverage before the transfer or un-sharing is recorded), and both parties of every recorded
/// transfer (their transfer milestones). A name may come more than once.
pub fn tenants_named(sub: &Subscription) -> impl Iterator<Item = &str> {
    let status = sub.status.iter();
    sub.tenants()
        .chain(status.clone().flat_map(|s| s.tenant.as_deref()))
        .chain(
            status
                .clone()
                .flat_map(|s| s.shared_with.iter().map(String::as_str)),
        )
        .chain(status.flat_map(|s| {
            s.transfers
                .iter()
                .flat_map(|t| [t.from.as_str(), t.to.as_str()])
        }))
}

/// Whether `sub` names `tenant` (see [`tenants_named`]).
pub fn names_tenant(sub: &Subscription, tenant: &str) -> bool {
    tenants_named(sub).any(|t| t == tenant)
}

/// Something that happened to a subscription since its last status, announced as an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// `spec.tenantRef` changed.
    Transferred { from: String, to: String },
    /// The effective end moved later because of `spec.extension`.
    Extended {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// The effective end moved later because `endDate` was raised.
    Renewed {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// `spec.sharedWith` gained or lost tenants.
    SharingChanged {
        added: Vec<String>,
        removed: Vec<String>,
    },
}

/// The engine's answer for one subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionEvaluation {
    pub status: SubscriptionStatus,
    /// `None` when the dates can not be read (the status says why).
    pub timeline: Option<Timeline>,
    /// Users counted against the seats, and whether they exceed them.
    pub seats_used: i64,
    pub seats_exceeded: bool,
    pub changes: Vec<SubscriptionChange>,
    pub next_transition: Option<DateTime<Utc>>,
}

/// Evaluates one subscription at `now`. `users` holds `spec.users` of the known tenants.
pub fn evaluate_subscription(
    sub: &Subscription,
    users: &TenantUsers,
    policy: &Policy,
    now: DateTime<Utc>,
) -> SubscriptionEvaluation {
    evaluate_subscription_among(sub, &[], users, policy, now)
}

/// The names of `others` that repeat `sub`: same owner, product and dates (one licence applied
/// twice under two names).
pub fn duplicates<'a>(sub: &Subscription, others: &[&'a Subscription]) -> Vec<&'a str> {
    fn key(s: &Subscription) -> (&str, &str, &str, &str) {
        (
            s.spec.tenant_ref.as_str(),
            s.spec.product.as_ref(),
            s.spec.start_date.as_str(),
            s.spec.end_date.as_str(),
        )
    }
    if others.is_empty() {
        return Vec::new();
    }
    let mine = key(sub);
    let mut names: Vec<&str> = others
        .iter()
        .filter(|o| o.metadata.name != sub.metadata.name && key(o) == mine)
        .filter_map(|o| o.metadata.name.as_deref())
        .collect();
    names.sort();
    names
}

/// [`evaluate_subscription`], also checking `others` (any subscriptions; typically those of the
/// same owner) for duplicates of this one.
pub fn evaluate_subscription_among(
    sub: &Subscription,
    others: &[&Subscription],
    users: &TenantUsers,
    policy: &Policy,
    now: DateTime<Utc>,
) -> SubscriptionEvaluation {
    let no_status;
    let previous: &SubscriptionStatus = match &sub.status {
        Some(status) => status,
        None => {
            no_status = SubscriptionStatus::default();
            &no_status
        }
    };
    let mut conditions = ConditionSet::new(&previous.conditions, sub.metadata.generation, now);
    let (mut eval, seats, dates) = read_dates_and_seats(sub, users, policy, now);
    let (changes, transfers) = tenancy_changes(sub, previous, now);
    eval.changes = changes;
    eval.status.shared_with = sub.spec.shared_with.iter().map(|t| t.0.clone()).collect();
    eval.status.transfers = transfers;

    match dates {
        Ok((tl, phase)) => {
            eval.changes.extend(end_moved(sub, previous, &tl));
            let (ready, reason, message) = readiness(sub, others, &seats, policy, phase, &tl);
            conditions.set(ConditionType::Ready, ready, reason, message);
            let (reason, message) = in_force(&tl, phase);
            conditions.set(ConditionType::InForce, tl.in_force(now), reason, message);
            let exceeded = eval.seats_exceeded;
            let (reason, message) = seat_limit(sub, users, &seats, exceeded);
            conditions.set(ConditionType::SeatLimitExceeded, exceeded, reason, message);
        }
        Err(err) => {
            conditions.set(
                ConditionType::Ready,
                false,
                Reason::InvalidDate,
                format!("{err}; fix the date so the operator can evaluate this subscription"),
            );
            conditions.set(
                ConditionType::Stalled,
                true,
                Reason::InvalidDate,
                err.to_string(),
            );
        }
    }
    eval.status.conditions = conditions.finish();
    eval
}

/// What a tenant's evaluation reads of each subscription that concerns it: the phase, the dates
/// and the seats, as [`evaluate_subscription`] finds them, without the conditions, changes and
/// transfer history that only the subscription's own status shows. A tenant evaluates every
/// subscription it holds, and over a fleet most of that work was writing messages it never read.
pub(crate) fn subscription_facts(
    sub: &Subscription,
    users: &TenantUsers,
    policy: &Policy,
    now: DateTime<Utc>,
) -> SubscriptionEvaluation {
    read_dates_and_seats(sub, users, policy, now).0
}

/// The part of an evaluation that both [`evaluate_subscription_among`] and
/// [`subscription_facts`] make: the owner, the seats and, when the dates can be read, the
/// timeline, the phase at `now` and the next transition. Also the seats' use and the timeline
/// with its phase (or why the dates can not be read), from which the conditions are written.
fn read_dates_and_seats<'a>(
    sub: &'a Subscription,
    users: &TenantUsers,
    policy: &Policy,
    now: DateTime<Utc>,
) -> (
    SubscriptionEvaluation,
    SeatUse<'a>,
    Result<(Timeline, SubscriptionPhase), DateError>,
) {
    let seats = SeatUse::of(sub, users);
    let mut status = SubscriptionStatus {
        tenant: Some(sub.spec.tenant_ref.clone()),
        seats_used: Some(seats.used),
        observed_generation: sub.metadata.generation,
        ..Default::default()
    };
    let (timeline, next_transition, seats_exceeded, dates) = match Timeline::of(sub, policy) {
        Err(err) => (None, None, false, Err(err)),
        Ok(tl) => {
            let phase = tl.phase(now);
            let next = tl.next_transition(now);
            record_timeline(&mut status, &tl, phase, next);
            (Some(tl), next, seats.exceeded(sub, phase), Ok((tl, phase)))
        }
    };
    let eval = SubscriptionEvaluation {
        status,
        timeline,
        seats_used: seats.used,
        seats_exceeded,
        changes: Vec::new(),
        next_transition,
    };
    (eval, seats, dates)
}

/// The users counted against a subscription's seats, and the tenants it names that do not exist.
struct SeatUse<'a> {
    used: i64,
    missing_tenants: Vec<&'a str>,
    owner_missing: bool,
}

impl<'a> SeatUse<'a> {
    fn of(sub: &'a Subscription, users: &TenantUsers) -> Self {
        let used = sub
            .tenants()
            .filter_map(|t| users.get(t))
            .fold(0i64, |sum, u| sum.saturating_add((*u).max(0)))
            .min(crate::api::bounds::MAX_STATUS_INT);
        Self {
            used,
            missing_tenants: sub.tenants().filter(|t| !users.contains_key(*t)).collect(),
            owner_missing: !users.contains_key(&sub.spec.tenant_ref),
        }
    }

    /// Seats count while the subscription is in use (not before it starts, not once expired).
    fn exceeded(&self, sub: &Subscription, phase: SubscriptionPhase) -> bool {
        let counts = matches!(
            phase,
            SubscriptionPhase::Active
                | SubscriptionPhase::ExpiringSoon
                | SubscriptionPhase::GracePeriod
        );
        counts && self.used > sub.spec.seats
    }
}

/// Transfers and sharing changes since the last status, and the transfer history to record.
fn tenancy_changes(
    sub: &Subscription,
    previous: &SubscriptionStatus,
    now: DateTime<Utc>,
) -> (Vec<SubscriptionChange>, Vec<Transfer>) {
    let spec = &sub.spec;
    // Transfers: the owner last seen differs from the one in spec.
    let mut changes = Vec::new();
    let mut transfers = previous.transfers.clone();
    if let Some(last_owner) = previous.tenant.as_deref()
        && last_owner != spec.tenant_ref
    {
        changes.push(SubscriptionChange::Transferred {
            from: last_owner.to_string(),
            to: spec.tenant_ref.clone(),
        });
        transfers.push(Transfer {
            from: last_owner.to_string(),
            to: spec.tenant_ref.clone(),
            at: whole_seconds(now),
        });
        let excess = transfers.len().saturating_sub(TRANSFER_HISTORY);
        transfers.drain(..excess);
    }

    // Sharing: compare with the tenants last seen (only once the subscription has been seen).
    if previous.tenant.is_some() {
        let added: Vec<String> = spec
            .shared_with
            .iter()
            .map(|t| &t.0)
            .filter(|t| !previous.shared_with.contains(t))
            .cloned()
            .collect();
        let removed: Vec<String> = previous
            .shared_with
            .iter()
            .filter(|t| !spec.shared_with.iter().any(|s| &s.0 == *t))
            .cloned()
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            changes.push(SubscriptionChange::SharingChanged { added, removed });
        }
    }
    (changes, transfers)
}

/// Writes the phase and instants of a readable timeline into `status`.
fn record_timeline(
    status: &mut SubscriptionStatus,
    tl: &Timeline,
    phase: SubscriptionPhase,
    next: Option<DateTime<Utc>>,
) {
    status.phase = Some(phase);
    status.starts_at = Some(tl.starts_at);
    status.effective_end_at = Some(tl.effective_end_at);
    status.expiring_soon_at = Some(tl.expiring_soon_at);
    status.grace_ends_at = Some(tl.grace_ends_at);
    status.next_transition_at = next;
}

/// The effective end moved later since the last status: by the extension, or by a renewal.
fn end_moved(
    sub: &Subscription,
    previous: &SubscriptionStatus,
    tl: &Timeline,
) -> Option<SubscriptionChange> {
    let prev_end = previous.effective_end_at?;
    if prev_end >= tl.effective_end_at {
        return None;
    }
    let by_extension = sub
        .spec
        .extension
        .as_ref()
        .and_then(|e| e.until.end_instant().ok())
        == Some(tl.effective_end_at);
    Some(if by_extension {
        SubscriptionChange::Extended {
            from: prev_end,
            until: tl.effective_end_at,
        }
    } else {
        SubscriptionChange::Renewed {
            from: prev_end,
            until: tl.effective_end_at,
        }
    })
}

/// The `Ready` condition of a subscription whose dates can be read: the first wrong reference
/// (owner, sharers, product, a duplicate) or, when none, a summary of its phase and dates.
fn readiness(
    sub: &Subscription,
    others: &[&Subscription],
    seats: &SeatUse<'_>,
    policy: &Policy,
    phase: SubscriptionPhase,
    tl: &Timeline,
) -> (bool, Reason, String) {
    let spec = &sub.spec;
    if seats.owner_missing {
        (
            false,
            Reason::TenantNotFound,
            format!(
                "tenantRef {:?} names no Tenant: create the tenant or correct tenantRef",
                spec.tenant_ref
            ),
        )
    } else if !seats.missing_tenants.is_empty() {
        (
            false,
            Reason::SharedTenantNotFound,
            format!(
                "sharedWith names tenants that do not exist: {}",
                seats.missing_tenants.join(", ")
            ),
        )
    } else if !policy.catalogue.knows(&spec.product) {
        (
            false,
            Reason::UnknownProduct,
            format!(
                "product {:?} is not in the operator's catalogue ({}, {})",
                spec.product,
                policy.catalogue.base,
                policy.catalogue.add_ons.join(", ")
            ),
        )
    } else if let Some(first) = duplicates(sub, others).first() {
        (
            false,
            Reason::DuplicateSubscription,
            format!(
                "subscription {first} has the same tenant, product and dates: the same licence seems applied twice; delete one of them"
            ),
        )
    } else {
        (
            true,
            Reason::Evaluated,
            format!(
                "{} for tenant {}: {}",
                describe_phase(phase),
                spec.tenant_ref,
                describe_dates(tl)
            ),
        )
    }
}

/// The reason and message of the `InForce` condition in `phase`.
fn in_force(tl: &Timeline, phase: SubscriptionPhase) -> (Reason, String) {
    match phase {
        SubscriptionPhase::Pending => (
            Reason::NotStarted,
            format!("in force from {}", human_from(tl.starts_at)),
        ),
        SubscriptionPhase::Active => (
            Reason::Active,
            format!("in force until {}", human(tl.effective_end_at)),
        ),
        SubscriptionPhase::ExpiringSoon => (
            Reason::ExpiringSoon,
            format!(
                "in force until {}: renew it before then to avoid read-only mode",
                human(tl.effective_end_at)
            ),
        ),
        SubscriptionPhase::GracePeriod => (
            Reason::SubscriptionExpired,
            format!(
                "ran until {}; grace period until {}",
                human(tl.effective_end_at),
                human(tl.grace_ends_at)
            ),
        ),
        SubscriptionPhase::Expired => (
            Reason::SubscriptionExpired,
            format!(
                "ran until {}; grace period over since {}",
                human(tl.effective_end_at),
                human_from(tl.grace_ends_at)
            ),
        ),
    }
}

/// The reason and message of the `SeatLimitExceeded` condition.
fn seat_limit(
    sub: &Subscription,
    users: &TenantUsers,
    seats: &SeatUse<'_>,
    exceeded: bool,
) -> (Reason, String) {
    let (used, licensed) = (seats.used, sub.spec.seats);
    if exceeded {
        let who: Vec<String> = sub
            .tenants()
            .filter_map(|t| users.get(t).map(|u| format!("{t} ({u})")))
            .collect();
        (
            Reason::SeatLimitExceeded,
            format!(
                "{used} users on {} exceed the {licensed} licensed seats: buy more seats or reduce users",
                who.join(", ")
            ),
        )
    } else {
        (
            Reason::WithinSeatLimit,
            format!("{used} of {licensed} seats used"),
        )
    }
}

fn describe_phase(phase: SubscriptionPhase) -> &'static str {
    match phase {
        SubscriptionPhase::Pending => "not started",
        SubscriptionPhase::Active => "active",
        SubscriptionPhase::ExpiringSoon => "expiring soon",
        SubscriptionPhase::GracePeriod => "expired, in grace period",
        SubscriptionPhase::Expired => "expired",
    }
}

fn describe_dates(tl: &Timeline) -> String {
    format!(
        "warning from {}, in force until {}, grace period until {}",
        human_from(tl.expiring_soon_at),
        human(tl.effective_end_at),
        human(tl.grace_ends_at)
    )
}
