//! One tenant: its services, phase, conditions and milestones.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::conditions::ConditionSet;
use super::coverage::{Licence, coverage};
use super::duplicates::{self, Neighbour};
use super::subscription::{SubscriptionEvaluation, evaluate_subscription};
use super::{Policy, TenantUsers, earlier, human, human_from, later, next_after, whole_seconds};
use crate::api::{
    MilestoneRecord, Plan, PossibleDuplicate, ServicePhase, ServiceStatus, Subscription, Tenant,
    TenantPhase, TenantStatus,
};

/// Milestone records kept in status beyond those that are still reached.
pub const MILESTONE_HISTORY: usize = 32;
/// Milestones reached at once that are recorded (and announced): with the history, at most
/// [`crate::api::bounds::MAX_MILESTONES`] records.
pub const MAX_REACHED: usize = crate::api::bounds::MAX_MILESTONES - MILESTONE_HISTORY;

/// Keeps at most [`MAX_REACHED`] of the milestones reached (sorted by due time), so that
/// `status.milestones` stays within its bound however many subscriptions are shared with the
/// tenant: the services' lifecycle first (the base product's before the add-ons'), then seat
/// limits, transfers and possible duplicates, each earliest first. The others are neither
/// recorded nor announced while so many are reached; the result is the same on every
/// evaluation, so none of them is announced later by accident.
fn cap_reached(reached: &mut Vec<Milestone>) {
    if reached.len() <= MAX_REACHED {
        return;
    }
    let rank = |m: &Milestone| match m.kind {
        MilestoneKind::SeatLimitExceeded => 2,
        MilestoneKind::TransferredIn | MilestoneKind::TransferredOut => 3,
        MilestoneKind::PossibleDuplicate => 4,
        _ if m.base => 0,
        _ => 1,
    };
    reached.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(a.due_at.cmp(&b.due_at))
            .then(a.kind.cmp(&b.kind))
            .then(a.id.cmp(&b.id))
    });
    reached.truncate(MAX_REACHED);
    reached.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.kind.cmp(&b.kind)));
}

/// The kinds of milestone announced to a tenant's administrators and as Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MilestoneKind {
    /// The warning period started (E − W).
    ExpiringSoon,
    /// Coverage ended (E): read-only for the grace period.
    ReadOnly,
    /// The grace period ended (E + G): suspended.
    Suspended,
    /// A product has no started subscription.
    SubscriptionMissing,
    /// A service came back because of a new or longer subscription.
    Renewed,
    /// A product is covered only by trials.
    TrialLicense,
    /// A subscription covering the tenant has more users than seats.
    SeatLimitExceeded,
    /// A subscription was transferred to this tenant.
    TransferredIn,
    /// A subscription was transferred from this tenant to another.
    TransferredOut,
    /// Another tenant shares an administrator address with this one (a late renewal can leave
    /// a second tenant holding the contract): see [`super::duplicates`].
    PossibleDuplicate,
}

impl MilestoneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExpiringSoon => "ExpiringSoon",
            Self::ReadOnly => "ReadOnly",
            Self::Suspended => "Suspended",
            Self::SubscriptionMissing => "SubscriptionMissing",
            Self::Renewed => "Renewed",
            Self::TrialLicense => "TrialLicense",
            Self::SeatLimitExceeded => "SeatLimitExceeded",
            Self::TransferredIn => "TransferredIn",
            Self::TransferredOut => "TransferredOut",
            Self::PossibleDuplicate => "PossibleDuplicate",
        }
    }

    /// Every kind, in the order above.
    pub const ALL: [MilestoneKind; 10] = [
        Self::ExpiringSoon,
        Self::ReadOnly,
        Self::Suspended,
        Self::SubscriptionMissing,
        Self::Renewed,
        Self::TrialLicense,
        Self::SeatLimitExceeded,
        Self::TransferredIn,
        Self::TransferredOut,
        Self::PossibleDuplicate,
    ];

    /// The kind named `name` (as written in `status.milestones[].kind`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Milestones that restrict or warn, as opposed to good news.
    pub fn is_warning(self) -> bool {
        !matches!(
            self,
            Self::Renewed | Self::TransferredIn | Self::TransferredOut
        )
    }

    /// Transfers: recorded by the Subscription controller in the subscription's status; on the
    /// tenants, milestones whose Events are `SubscriptionTransferredIn/Out`.
    pub fn is_transfer(self) -> bool {
        matches!(self, Self::TransferredIn | Self::TransferredOut)
    }
}

/// A milestone reached and not yet announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Milestone {
    /// Stable id, recorded in `status.milestones`.
    pub id: String,
    pub kind: MilestoneKind,
    pub product: String,
    /// True when `product` is the base service (the whole tenant is concerned).
    pub base: bool,
    pub subscription: Option<String>,
    pub due_at: DateTime<Utc>,
    /// Announced more than `policy.late_after` after it was due (the operator was not running).
    pub late: bool,
    /// The end of coverage and the suspension instant the milestone is about, for messages.
    pub effective_end_at: Option<DateTime<Utc>>,
    pub suspends_at: Option<DateTime<Utc>>,
    /// For a transfer or a possible duplicate: the other tenant.
    pub peer: Option<String>,
    /// Announced by an Event only, never notified (a possible duplicate is notified to the
    /// administrators of the tenant in use only).
    pub event_only: bool,
    /// What happened and what to do, in English (Events).
    pub message: String,
}

/// The engine's answer for one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantEvaluation {
    /// The status to write.
    pub status: TenantStatus,
    /// The subscriptions that concern the tenant, evaluated, by name.
    pub subscriptions: BTreeMap<String, SubscriptionEvaluation>,
    /// Milestones reached and not announced before, in the order they were due.
    pub milestones: Vec<Milestone>,
    /// The next instant at which this evaluation changes by itself.
    pub next_transition: Option<DateTime<Utc>>,
}

/// One reason for attention, ordered by severity for the condition reason.
struct Cause {
    severity: u8,
    base: bool,
    reason: &'static str,
    message: String,
}

/// What the engine needs to know about one tenant, gathered by the caller (the controller from
/// its caches, the CLI from manifests).
#[derive(Clone, Copy, Debug)]
pub struct TenantInput<'a> {
    pub tenant: &'a Tenant,
    /// Any subscriptions: only those owned by or shared with the tenant cover it; those
    /// transferred to or from it give the transfer confirmations.
    pub subscriptions: &'a [&'a Subscription],
    /// The other tenants that share an administrator address with it, for the
    /// possible-duplicate check (any others are ignored).
    pub neighbours: &'a [Neighbour<'a>],
    /// The products of the tenant's labelled workloads (`mailsec.io/product`, the base product
    /// when unlabelled): each is a service of the tenant, listed in `spec.services` or not.
    pub workload_products: &'a [String],
    /// `spec.users` of every known tenant (for seat counting and to tell which tenants exist).
    pub users: &'a TenantUsers,
}

impl<'a> TenantInput<'a> {
    /// The tenant and its subscriptions, with no neighbours and no workloads.
    pub fn new(
        tenant: &'a Tenant,
        subscriptions: &'a [&'a Subscription],
        users: &'a TenantUsers,
    ) -> Self {
        Self {
            tenant,
            subscriptions,
            neighbours: &[],
            workload_products: &[],
            users,
        }
    }
}

/// Subscriptions `tenant` owns that are still in use and would be orphaned by deleting it: not
/// expired, and not shared with anyone (a shared one keeps serving the other tenants). Sorted
/// by name. While there are any, deleting the tenant is refused (the finalizer, and the
/// deletion admission policy, which reads them from the status).
pub fn licences_held(
    tenant: &str,
    concerning: &[&Subscription],
    evaluated: &BTreeMap<String, SubscriptionEvaluation>,
) -> Vec<String> {
    let mut held: Vec<String> = concerning
        .iter()
        .filter(|s| s.spec.tenant_ref == tenant && s.spec.shared_with.is_empty())
        .filter_map(|s| {
            let name = s.metadata.name.as_deref()?;
            let e = evaluated.get(name)?;
            matches!(e.status.phase, Some(p) if p != crate::api::SubscriptionPhase::Expired)
                .then(|| name.to_string())
        })
        .collect();
    held.sort_unstable();
    // The schema's bound; deletion stays refused while any is listed.
    held.truncate(MAX_LICENCES_HELD);
    held
}

/// At most this many are listed in `status.licencesHeld`.
pub const MAX_LICENCES_HELD: usize = 16;

/// Evaluates a tenant at `now`.
pub fn evaluate_tenant(
    input: &TenantInput<'_>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> TenantEvaluation {
    let TenantInput {
        tenant,
        subscriptions,
        neighbours,
        workload_products,
        users,
    } = *input;
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let no_status;
    let previous: &TenantStatus = match &tenant.status {
        Some(status) => status,
        None => {
            no_status = TenantStatus::default();
            &no_status
        }
    };
    // Milestones already recorded: their messages are never read, so they are not written.
    // (A few dozen at most: a sorted vector is cheaper than a tree.)
    let mut recorded: Vec<&str> = previous.milestones.iter().map(|r| r.id.as_str()).collect();
    recorded.sort_unstable();
    let recorded = |id: &str| recorded.binary_search(&id).is_ok();
    let generation = tenant.metadata.generation;
    let base_product = policy.catalogue.base.as_str();

    let mut subs: BTreeMap<String, SubscriptionEvaluation> = BTreeMap::new();
    let mut concerning: Vec<&Subscription> = Vec::new();
    for sub in subscriptions.iter().copied().filter(|s| s.concerns(name)) {
        let sub_name = sub.metadata.name.clone().unwrap_or_default();
        subs.insert(sub_name, evaluate_subscription(sub, users, policy, now));
        concerning.push(sub);
    }

    // The base product is always a service of the tenant; then the listed ones, in spec order;
    // then every other product it holds a started subscription for (owned or shared: a lapsed
    // add-on warns although nobody listed it) or runs labelled workloads for (they are stopped
    // when it lapses), by name. A subscription not started yet adds nothing: it would only
    // show as missing until it starts.
    let mut products: Vec<&str> = vec![base_product];
    for svc in &tenant.spec.services {
        if !products.contains(&svc.product.as_str()) {
            products.push(&svc.product);
        }
    }
    let mut held: Vec<&str> = concerning
        .iter()
        .filter(|s| policy.catalogue.knows(&s.spec.product))
        .filter(|s| {
            subs.get(s.metadata.name.as_deref().unwrap_or_default())
                .and_then(|e| e.timeline)
                .is_some_and(|t| t.starts_at <= now)
        })
        .map(|s| s.spec.product.as_str())
        .chain(workload_products.iter().map(String::as_str))
        .filter(|p| !products.contains(p))
        .collect();
    held.sort_unstable();
    held.dedup();
    products.extend(held);

    let mut services = Vec::with_capacity(products.len());
    let mut reached: Vec<Milestone> = Vec::new();
    let mut causes: Vec<Cause> = Vec::new();
    let mut next: Vec<DateTime<Utc>> = subs.values().filter_map(|e| e.next_transition).collect();

    for product in products {
        let base = product == base_product;
        let prev = previous.services.iter().find(|s| s.product == product);
        let licences: Vec<Licence> = concerning
            .iter()
            .filter(|s| s.spec.product == product)
            .filter_map(|s| {
                let n = s.metadata.name.as_deref().unwrap_or_default();
                subs.get(n)
                    .and_then(|e| e.timeline)
                    .map(|timeline| Licence {
                        name: n,
                        plan: s.spec.plan,
                        timeline,
                    })
            })
            .collect();

        let milestone = |kind: MilestoneKind,
                         due_at: DateTime<Utc>,
                         key: DateTime<Utc>,
                         subscription: Option<&str>,
                         message: &dyn Fn() -> String| {
            let id = format!(
                "{}/{}/{}",
                kind.as_str(),
                product,
                crate::api::date::format_instant(key)
            );
            let message = if recorded(&id) {
                String::new()
            } else {
                message()
            };
            Milestone {
                id,
                kind,
                product: product.to_string(),
                base,
                subscription: subscription.map(str::to_string),
                due_at,
                late: now - due_at > policy.late_after,
                effective_end_at: None,
                suspends_at: None,
                peer: None,
                event_only: false,
                message,
            }
        };

        let status = match coverage(&licences, now) {
            Some(cov) => {
                let end = cov.end;
                let warn_at = earlier(end, policy.warning_period);
                let suspend_at = later(end, policy.grace_period);
                let phase = if now < warn_at {
                    ServicePhase::Active
                } else if now < end {
                    ServicePhase::ExpiringSoon
                } else if now < suspend_at {
                    ServicePhase::ReadOnly
                } else {
                    ServicePhase::Suspended
                };
                next.extend(next_after(now, [warn_at, end, suspend_at]));
                let sub = cov.subscription;
                let (h_end, h_susp) = (human(end), human(suspend_at));
                let h_suspended = human_from(suspend_at);
                let with_dates = |mut m: Milestone| {
                    m.effective_end_at = Some(end);
                    m.suspends_at = Some(suspend_at);
                    m
                };
                if now >= warn_at {
                    reached.push(with_dates(milestone(
                        MilestoneKind::ExpiringSoon,
                        warn_at,
                        warn_at,
                        Some(sub),
                        &|| format!("Subscription {sub} for {product} runs until {h_end}: renew it before then to avoid read-only mode"),
                    )));
                }
                if now >= end {
                    reached.push(with_dates(milestone(
                        MilestoneKind::ReadOnly,
                        end,
                        end,
                        Some(sub),
                        &|| format!("Subscription {sub} for {product} ran until {h_end}: {} read-only; renew it before {h_susp} to avoid suspension", if base { "the tenant's settings are" } else { "this add-on's settings are" }),
                    )));
                }
                if now >= suspend_at {
                    reached.push(with_dates(milestone(
                        MilestoneKind::Suspended,
                        suspend_at,
                        suspend_at,
                        Some(sub),
                        &|| format!("Subscription {sub} for {product} ran until {h_end} and its grace period until {h_susp}: {} suspended; renew it to restore service", if base { "the service is" } else { "this add-on is" }),
                    )));
                }
                match phase {
                    ServicePhase::Active => {}
                    ServicePhase::ExpiringSoon => causes.push(Cause {
                        severity: 2,
                        base,
                        reason: "ExpiringSoon",
                        message: format!("{product}: subscription {sub} runs until {h_end}; renew it before then to avoid read-only mode"),
                    }),
                    ServicePhase::ReadOnly => causes.push(Cause {
                        severity: 3,
                        base,
                        reason: "SubscriptionExpired",
                        message: format!("{product}: subscription {sub} ran until {h_end}; settings are read-only, renew before {h_susp} to avoid suspension"),
                    }),
                    ServicePhase::Suspended => causes.push(Cause {
                        severity: 4,
                        base,
                        reason: "SubscriptionExpired",
                        message: format!("{product}: subscription {sub} ran until {h_end}, suspended since {h_suspended}; renew it to restore service"),
                    }),
                }
                if cov.plan_in_force == Some(Plan::Trial) {
                    let id = format!("TrialLicense/{product}/{sub}");
                    let message = if recorded(&id) {
                        String::new()
                    } else {
                        format!(
                            "{product} is covered only by a trial licence ({sub}, until {h_end}): buy a paid subscription to keep the service"
                        )
                    };
                    reached.push(Milestone {
                        id,
                        kind: MilestoneKind::TrialLicense,
                        product: product.to_string(),
                        base,
                        subscription: Some(sub.to_string()),
                        due_at: whole_seconds(now),
                        late: false,
                        effective_end_at: Some(end),
                        suspends_at: Some(suspend_at),
                        peer: None,
                        event_only: false,
                        message,
                    });
                    causes.push(Cause {
                        severity: 1,
                        base,
                        reason: "TrialLicense",
                        message: format!("{product}: only trial subscription {sub} is in force (until {h_end}); buy a paid subscription"),
                    });
                }
                // A service that comes back because its coverage now ends later. A service
                // covered for the first time (say, by a subscription applied a moment after its
                // tenant, which was then seen missing) is not renewed: it had no end to move.
                let improved = prev.is_some_and(|p| {
                    p.phase > phase && p.effective_end_at.is_some_and(|e| e < end)
                });
                if improved {
                    reached.push(with_dates(milestone(
                        MilestoneKind::Renewed,
                        whole_seconds(now),
                        end,
                        Some(sub),
                        &|| {
                            format!(
                                "{product} is covered again by subscription {sub} until {h_end}"
                            )
                        },
                    )));
                }
                ServiceStatus {
                    product: product.to_string(),
                    base,
                    phase,
                    subscription: Some(sub.to_string()),
                    plan: cov.plan_in_force,
                    effective_end_at: Some(end),
                    expiring_soon_at: Some(warn_at),
                    read_only_since: (phase >= ServicePhase::ReadOnly).then_some(end),
                    suspends_at: Some(suspend_at),
                    missing_since: None,
                }
            }
            None => {
                let since = prev
                    .and_then(|p| p.missing_since)
                    .unwrap_or_else(|| whole_seconds(now));
                let suspend_at = later(since, policy.grace_period);
                let phase = if now < suspend_at {
                    ServicePhase::ReadOnly
                } else {
                    ServicePhase::Suspended
                };
                next.extend(next_after(now, [suspend_at]));
                let (h_since, h_susp) = (human_from(since), human(suspend_at));
                let h_suspended = human_from(suspend_at);
                let mut m = milestone(
                    MilestoneKind::SubscriptionMissing,
                    since,
                    since,
                    None,
                    &|| {
                        format!(
                            "{product} has no subscription: {} read-only; apply a Subscription for it before {h_susp} to avoid suspension",
                            if base {
                                "the tenant's settings are"
                            } else {
                                "this add-on's settings are"
                            }
                        )
                    },
                );
                m.suspends_at = Some(suspend_at);
                reached.push(m);
                if phase == ServicePhase::Suspended {
                    let mut m = milestone(
                        MilestoneKind::Suspended,
                        suspend_at,
                        suspend_at,
                        None,
                        &|| {
                            format!(
                                "{product} has had no subscription since {h_since}: {} suspended since {h_suspended}; apply a Subscription to restore it",
                                if base {
                                    "the service is"
                                } else {
                                    "this add-on is"
                                }
                            )
                        },
                    );
                    m.suspends_at = Some(suspend_at);
                    reached.push(m);
                }
                causes.push(Cause {
                    severity: if phase == ServicePhase::Suspended { 4 } else { 3 },
                    base,
                    reason: "SubscriptionMissing",
                    message: if phase == ServicePhase::Suspended {
                        format!("{product}: no subscription since {h_since}, suspended since {h_suspended}; apply a Subscription to restore it")
                    } else {
                        format!("{product}: no subscription (missing since {h_since}); settings are read-only, apply a Subscription before {h_susp} to avoid suspension")
                    },
                });
                ServiceStatus {
                    product: product.to_string(),
                    base,
                    phase,
                    subscription: None,
                    plan: None,
                    effective_end_at: None,
                    expiring_soon_at: None,
                    read_only_since: Some(since),
                    suspends_at: Some(suspend_at),
                    missing_since: Some(since),
                }
            }
        };
        services.push(status);
    }

    // Seats: every subscription covering the tenant that is over its limit.
    for (sub_name, eval) in &subs {
        if eval.seats_exceeded {
            let seats = concerning
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(sub_name))
                .map(|s| s.spec.seats)
                .unwrap_or_default();
            let product = concerning
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(sub_name))
                .map(|s| s.spec.product.clone())
                .unwrap_or_default();
            let message = format!(
                "Subscription {sub_name} ({product}) is used by {} users but licenses {seats} seats: buy more seats or reduce spec.users on the tenants sharing it",
                eval.seats_used
            );
            reached.push(Milestone {
                id: format!("SeatLimitExceeded/{sub_name}/{seats}"),
                kind: MilestoneKind::SeatLimitExceeded,
                base: product == base_product,
                product,
                subscription: Some(sub_name.clone()),
                due_at: whole_seconds(now),
                late: false,
                effective_end_at: eval.timeline.map(|t| t.effective_end_at),
                suspends_at: None,
                peer: None,
                event_only: false,
                message: message.clone(),
            });
            causes.push(Cause {
                severity: 0,
                base: false,
                reason: "SeatLimitExceeded",
                message,
            });
        }
    }

    // Transfers, from what the Subscription controller recorded in `status.transfers`: the
    // latest one to this tenant (if it still owns the subscription) and the latest one from it
    // (if it does not). Only recent ones (within `late_after`): the history that a first run of
    // this version finds is not announced again.
    for sub in subscriptions.iter().copied() {
        let Some(sub_status) = &sub.status else {
            continue;
        };
        let sub_name = sub.metadata.name.as_deref().unwrap_or_default();
        let owner = sub.spec.tenant_ref.as_str();
        let recent = |t: &&crate::api::Transfer| t.at <= now && now - t.at <= policy.late_after;
        let inbound = (owner == name)
            .then(|| sub_status.transfers.iter().rev().find(|t| t.to == name))
            .flatten()
            .filter(recent);
        let outbound = (owner != name)
            .then(|| sub_status.transfers.iter().rev().find(|t| t.from == name))
            .flatten()
            .filter(recent);
        let product = sub.spec.product.as_str();
        for (kind, transfer) in [
            (MilestoneKind::TransferredIn, inbound),
            (MilestoneKind::TransferredOut, outbound),
        ] {
            let Some(t) = transfer else { continue };
            let (peer, covers) = if kind == MilestoneKind::TransferredIn {
                (&t.from, "it now covers this tenant")
            } else {
                (&t.to, "it no longer covers this tenant")
            };
            reached.push(Milestone {
                id: format!(
                    "{}/{}/{}",
                    kind.as_str(),
                    sub_name,
                    crate::api::date::format_instant(t.at)
                ),
                kind,
                product: product.to_string(),
                base: product == base_product,
                subscription: Some(sub_name.to_string()),
                due_at: t.at,
                late: false,
                effective_end_at: subs
                    .get(sub_name)
                    .and_then(|e| e.timeline)
                    .map(|tl| tl.effective_end_at),
                suspends_at: None,
                peer: Some(peer.clone()),
                event_only: false,
                message: format!(
                    "Subscription {sub_name} ({product}) was transferred from tenant {} to tenant {}: {covers}",
                    t.from, t.to
                ),
            });
        }
    }

    // Possible duplicates: a condition and a milestone each, never a phase.
    let found = duplicates::possible_duplicates(tenant, &concerning, neighbours, policy, now);
    next.extend(duplicates::next_change(
        tenant,
        &concerning,
        neighbours,
        &found,
        policy,
        now,
    ));
    for d in &found {
        let id = format!("{}/{}", MilestoneKind::PossibleDuplicate.as_str(), d.other);
        let message = if recorded(&id) {
            String::new()
        } else {
            d.message.clone()
        };
        reached.push(Milestone {
            id,
            kind: MilestoneKind::PossibleDuplicate,
            product: d
                .moves
                .first()
                .map_or(base_product, |m| m.product.as_str())
                .to_string(),
            base: d.moves.first().is_none_or(|m| m.product == base_product),
            subscription: d.moves.first().map(|m| m.subscription.clone()),
            due_at: whole_seconds(now),
            late: false,
            effective_end_at: d.moves.first().map(|m| m.effective_end_at),
            suspends_at: None,
            peer: Some(d.other.clone()),
            event_only: d.in_use != name,
            message,
        });
    }

    let base_status = services.first();
    let base_phase = base_status.map(|s| s.phase).unwrap_or(ServicePhase::Active);
    let phase = match base_phase {
        ServicePhase::Suspended => TenantPhase::Suspended,
        ServicePhase::ReadOnly => TenantPhase::ReadOnly,
        _ if !causes.is_empty() => TenantPhase::Warning,
        _ => TenantPhase::Active,
    };

    // Conditions.
    causes.sort_by(|a, b| b.severity.cmp(&a.severity).then(b.base.cmp(&a.base)));
    let all_causes = causes
        .iter()
        .map(|c| c.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let base_cause = causes.iter().find(|c| c.base && c.severity >= 3);
    let frozen_add_ons: Vec<&str> = services
        .iter()
        .filter(|s| !s.base && s.phase >= ServicePhase::ReadOnly)
        .map(|s| s.product.as_str())
        .collect();
    let suspended_add_ons: Vec<&str> = services
        .iter()
        .filter(|s| !s.base && s.phase == ServicePhase::Suspended)
        .map(|s| s.product.as_str())
        .collect();

    let mut conditions = ConditionSet::new(&previous.conditions, generation, now);
    conditions.set("Ready", true, "Reconciled", format!("Tenant is {phase:?}"));
    match causes.first() {
        Some(top) => conditions.set("Warning", true, top.reason, all_causes.clone()),
        None => conditions.set(
            "Warning",
            false,
            "SubscriptionsActive",
            "Every service is covered by a paid subscription",
        ),
    }
    match (phase >= TenantPhase::ReadOnly, base_cause) {
        (true, Some(c)) => conditions.set("ReadOnly", true, c.reason, c.message.clone()),
        _ if frozen_add_ons.is_empty() => {
            conditions.set("ReadOnly", false, "NotReadOnly", "Settings can be changed")
        }
        _ => conditions.set(
            "ReadOnly",
            false,
            "NotReadOnly",
            format!(
                "The base service's settings can be changed; read-only add-ons: {}",
                frozen_add_ons.join(", ")
            ),
        ),
    }
    match (phase == TenantPhase::Suspended, base_cause) {
        (true, Some(c)) => conditions.set("Suspended", true, c.reason, c.message.clone()),
        _ if suspended_add_ons.is_empty() => {
            conditions.set("Suspended", false, "NotSuspended", "The service is running")
        }
        _ => conditions.set(
            "Suspended",
            false,
            "NotSuspended",
            format!(
                "The base service is running; suspended add-ons: {}",
                suspended_add_ons.join(", ")
            ),
        ),
    }

    match found.len() {
        0 => conditions.set(
            "PossibleDuplicate",
            false,
            "NoDuplicate",
            "No other tenant lists one of this tenant's administrator addresses (tenants linked by a shared subscription or the mailsec.io/not-duplicate-of annotation are not counted)",
        ),
        1 => conditions.set("PossibleDuplicate", true, "SharesAdmins", found[0].message.clone()),
        n => {
            let shown: Vec<&str> = found
                .iter()
                .take(duplicates::MAX_REPORTED)
                .map(|d| d.message.as_str())
                .collect();
            let more = n.saturating_sub(duplicates::MAX_REPORTED);
            let mut message = format!("{n} possible duplicates. {}", shown.join(" | "));
            if more > 0 {
                message.push_str(&format!(" | and {more} more (see status.possibleDuplicates)"));
            }
            conditions.set("PossibleDuplicate", true, "SharesAdmins", message)
        }
    }

    // Milestones: announce those reached and not recorded; keep records of those still reached,
    // plus a bounded history so a milestone that comes back after a change is not repeated at once.
    reached.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.kind.cmp(&b.kind)));
    cap_reached(&mut reached);
    let mut current: Vec<&str> = reached.iter().map(|m| m.id.as_str()).collect();
    current.sort_unstable();
    let current = |id: &str| current.binary_search(&id).is_ok();
    let stale = previous
        .milestones
        .iter()
        .filter(|r| !current(&r.id))
        .count();
    let mut to_drop = stale.saturating_sub(MILESTONE_HISTORY);
    let mut records: Vec<MilestoneRecord> = Vec::with_capacity(previous.milestones.len() + 2);
    records.extend(
        previous
            .milestones
            .iter()
            .filter(|r| {
                if to_drop > 0 && !current(&r.id) {
                    to_drop -= 1;
                    return false;
                }
                true
            })
            .cloned(),
    );
    let fresh: Vec<Milestone> = reached.into_iter().filter(|m| !recorded(&m.id)).collect();
    let announced_at = whole_seconds(now);
    records.extend(fresh.iter().map(|m| MilestoneRecord {
        id: m.id.clone(),
        kind: m.kind.as_str().to_string(),
        product: Some(m.product.clone()),
        due_at: m.due_at,
        announced_at,
        subscription: m.subscription.clone(),
        peer: m.peer.clone(),
        event_only: m.event_only,
        effective_end_at: m.effective_end_at,
        suspends_at: m.suspends_at,
    }));

    let next_transition = next.into_iter().filter(|t| *t > now).min();
    let status = TenantStatus {
        phase: Some(phase),
        services,
        next_transition_at: next_transition,
        conditions: conditions.finish(),
        milestones: records,
        // Owned by the settings projection (see `settings::plan`); carried over here.
        settings_applied_generation: previous.settings_applied_generation,
        settings_digest: previous.settings_digest.clone(),
        settings_in_effect: previous.settings_in_effect.clone(),
        notifications: Vec::new(),
        licences_held: licences_held(name, &concerning, &subs),
        possible_duplicates: found
            .iter()
            .take(duplicates::MAX_REPORTED)
            .map(|d| PossibleDuplicate {
                tenant: d.other.clone(),
                shared_admins: d
                    .shared_admins
                    .iter()
                    .take(duplicates::MAX_ADDRESSES)
                    .cloned()
                    .collect(),
                tenant_in_use: d.in_use.clone(),
                subscriptions_to_move: d
                    .moves
                    .iter()
                    .take(duplicates::MAX_MOVES)
                    .map(|m| m.subscription.clone())
                    .collect(),
            })
            .collect(),
        observed_generation: generation,
    };
    TenantEvaluation {
        status,
        subscriptions: subs,
        milestones: fresh,
        next_transition,
    }
}
