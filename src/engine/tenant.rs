//! One tenant: its services, phase, conditions and milestones.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::conditions::ConditionSet;
use super::coverage::{Licence, coverage};
use super::duplicates::{self, Neighbour};
use super::subscription::{SubscriptionEvaluation, subscription_facts};
use super::{Policy, TenantUsers, earlier, human, human_from, later, next_after, whole_seconds};
use crate::api::labels::NOT_DUPLICATE_ANNOTATION;
use crate::api::{
    ConditionType, MilestoneKind, MilestoneRecord, Plan, PossibleDuplicate, Reason, ServicePhase,
    ServiceStatus, Subscription, Tenant, TenantPhase, TenantStatus, product_word,
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
    /// The subscriptions that concern the tenant, by name: what this evaluation read of each
    /// (phase, dates, seats). Their conditions and changes are left empty: each subscription's
    /// own evaluation has them.
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
    reason: Reason,
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

/// Evaluates a tenant at `now`: a chain of steps over the gathered input, each adding what it
/// finds (services, milestones reached, causes for attention, instants of change).
pub fn evaluate_tenant(
    input: &TenantInput<'_>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> TenantEvaluation {
    let no_status = TenantStatus::default();
    let facts = Facts::gather(input, policy, now, &no_status);
    let mut found = Findings {
        next: facts
            .subs
            .values()
            .filter_map(|e| e.next_transition)
            .collect(),
        ..Findings::default()
    };
    for product in service_products(&facts, input.workload_products) {
        evaluate_service(&facts, product, &mut found);
    }
    seat_limits(&facts, &mut found);
    transfers(&facts, input.subscriptions, &mut found);
    let duplicates = possible_duplicates(&facts, input.neighbours, &mut found);

    let phase = tenant_phase(&found);
    let conditions = tenant_conditions(&facts, phase, &mut found, &duplicates);
    let (milestones, fresh) = milestone_records(&facts, found.reached);
    let next_transition = found.next.into_iter().filter(|t| *t > now).min();
    let status = TenantStatus {
        phase: Some(phase),
        services: found.services,
        next_transition_at: next_transition,
        conditions,
        milestones,
        // Owned by the settings projection (see `settings::plan`); carried over here.
        settings_applied_generation: facts.previous.settings_applied_generation,
        settings_digest: facts.previous.settings_digest.clone(),
        settings_in_effect: facts.previous.settings_in_effect.clone(),
        notifications: Vec::new(),
        licences_held: licences_held(facts.name, &facts.concerning, &facts.subs),
        possible_duplicates: duplicate_records(&duplicates),
        observed_generation: facts.generation,
    };
    TenantEvaluation {
        status,
        subscriptions: facts.subs,
        milestones: fresh,
        next_transition,
    }
}

/// What every step reads: the tenant, its last status, and the subscriptions that concern it,
/// evaluated.
struct Facts<'a> {
    tenant: &'a Tenant,
    name: &'a str,
    previous: &'a TenantStatus,
    generation: Option<i64>,
    /// Milestones already recorded: their messages are never read, so they are not written.
    recorded: Recorded<'a>,
    /// The subscriptions owned by or shared with the tenant, evaluated, by name.
    subs: BTreeMap<String, SubscriptionEvaluation>,
    concerning: Vec<&'a Subscription>,
    policy: &'a Policy,
    base_product: &'a str,
    now: DateTime<Utc>,
}

impl<'a> Facts<'a> {
    fn gather(
        input: &TenantInput<'a>,
        policy: &'a Policy,
        now: DateTime<Utc>,
        no_status: &'a TenantStatus,
    ) -> Self {
        let tenant = input.tenant;
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        let previous = tenant.status.as_ref().unwrap_or(no_status);
        let mut subs = BTreeMap::new();
        let mut concerning = Vec::new();
        for sub in input
            .subscriptions
            .iter()
            .copied()
            .filter(|s| s.concerns(name))
        {
            let sub_name = sub.metadata.name.clone().unwrap_or_default();
            subs.insert(sub_name, subscription_facts(sub, input.users, policy, now));
            concerning.push(sub);
        }
        Self {
            tenant,
            name,
            previous,
            generation: tenant.metadata.generation,
            recorded: Recorded::of(&previous.milestones),
            subs,
            concerning,
            policy,
            base_product: policy.catalogue.base.as_str(),
            now,
        }
    }

    /// The timeline of the concerning subscription named `name`, when its dates can be read.
    fn timeline(&self, name: &str) -> Option<super::subscription::Timeline> {
        self.subs.get(name).and_then(|e| e.timeline)
    }
}

/// Milestone ids, sorted for lookup. (A few dozen at most: a sorted vector is cheaper than a
/// tree.)
struct Recorded<'a>(Vec<&'a str>);

impl<'a> Recorded<'a> {
    fn of(records: &'a [MilestoneRecord]) -> Self {
        let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        Self(ids)
    }

    fn contains(&self, id: &str) -> bool {
        self.0.binary_search(&id).is_ok()
    }
}

/// What the steps found so far.
#[derive(Default)]
struct Findings {
    services: Vec<ServiceStatus>,
    reached: Vec<Milestone>,
    causes: Vec<Cause>,
    next: Vec<DateTime<Utc>>,
}

/// The tenant's services: the base product always; then the listed ones, in spec order; then
/// every other product it holds a started subscription for (owned or shared: a lapsed add-on
/// warns although nobody listed it) or runs labelled workloads for (they are stopped when it
/// lapses), by name. A subscription not started yet adds nothing: it would only show as missing
/// until it starts.
fn service_products<'a>(facts: &Facts<'a>, workload_products: &'a [String]) -> Vec<&'a str> {
    let mut products: Vec<&str> = vec![facts.base_product];
    for svc in &facts.tenant.spec.services {
        if !products.contains(&svc.product.as_ref()) {
            products.push(&svc.product);
        }
    }
    let mut held: Vec<&str> = facts
        .concerning
        .iter()
        .filter(|s| facts.policy.catalogue.knows(&s.spec.product))
        .filter(|s| {
            facts
                .timeline(s.metadata.name.as_deref().unwrap_or_default())
                .is_some_and(|t| t.starts_at <= facts.now)
        })
        .map(|s| s.spec.product.as_ref())
        .chain(workload_products.iter().map(String::as_str))
        .filter(|p| !products.contains(p))
        .collect();
    held.sort_unstable();
    held.dedup();
    products.extend(held);
    products
}

/// One service being evaluated: what its milestones are made of.
struct Service<'f, 'a> {
    facts: &'f Facts<'a>,
    product: &'f str,
    base: bool,
}

impl Service<'_, '_> {
    /// A lifecycle milestone of this service, identified by its kind, product and `key`; its
    /// message is only written when it is not recorded yet.
    fn milestone(
        &self,
        kind: MilestoneKind,
        due_at: DateTime<Utc>,
        key: DateTime<Utc>,
        subscription: Option<&str>,
        message: &dyn Fn() -> String,
    ) -> Milestone {
        let id = format!(
            "{}/{}/{}",
            kind.as_str(),
            self.product,
            crate::api::date::format_instant(key)
        );
        let message = if self.facts.recorded.contains(&id) {
            String::new()
        } else {
            message()
        };
        Milestone {
            id,
            kind,
            product: self.product.to_string(),
            base: self.base,
            subscription: subscription.map(str::to_string),
            due_at,
            late: self.facts.now - due_at > self.facts.policy.late_after,
            effective_end_at: None,
            suspends_at: None,
            peer: None,
            event_only: false,
            message,
        }
    }

    /// "the tenant's …" for the base service, "this add-on's …" for an add-on.
    fn whose(&self, base: &'static str, add_on: &'static str) -> &'static str {
        if self.base { base } else { add_on }
    }
}

/// Evaluates one service: covered by its best subscription, or missing.
fn evaluate_service(facts: &Facts<'_>, product: &str, found: &mut Findings) {
    let service = Service {
        facts,
        product,
        base: product == facts.base_product,
    };
    let licences: Vec<Licence> = facts
        .concerning
        .iter()
        .filter(|s| s.spec.product == product)
        .filter_map(|s| {
            let n = s.metadata.name.as_deref().unwrap_or_default();
            facts.timeline(n).map(|timeline| Licence {
                name: n,
                plan: s.spec.plan,
                timeline,
            })
        })
        .collect();
    let status = match coverage(&licences, facts.now) {
        Some(cov) => covered_service(&service, &cov, found),
        None => missing_service(&service, found),
    };
    found.services.push(status);
}

/// The instants of a covered service: E − W, E and E + G.
struct Instants {
    end: DateTime<Utc>,
    warn_at: DateTime<Utc>,
    suspend_at: DateTime<Utc>,
}

impl Instants {
    fn phase(&self, now: DateTime<Utc>) -> ServicePhase {
        if now < self.warn_at {
            ServicePhase::Active
        } else if now < self.end {
            ServicePhase::ExpiringSoon
        } else if now < self.suspend_at {
            ServicePhase::ReadOnly
        } else {
            ServicePhase::Suspended
        }
    }
}

/// A service covered by the subscription `cov` names.
fn covered_service(
    service: &Service<'_, '_>,
    cov: &super::coverage::Coverage<'_>,
    found: &mut Findings,
) -> ServiceStatus {
    let (facts, product) = (service.facts, service.product);
    let end = cov.end;
    let at = Instants {
        end,
        warn_at: earlier(end, facts.policy.warning_period),
        suspend_at: later(end, facts.policy.grace_period),
    };
    let phase = at.phase(facts.now);
    found
        .next
        .extend(next_after(facts.now, [at.warn_at, end, at.suspend_at]));
    let sub = cov.subscription;
    lifecycle_milestones(service, sub, &at, found);
    covered_cause(service, sub, &at, phase, found);
    if cov.plan_in_force == Some(Plan::Trial) {
        trial_licence(service, sub, &at, found);
    }
    renewal(service, sub, &at, phase, found);
    ServiceStatus {
        product: product_word(product),
        base: service.base,
        phase,
        subscription: Some(sub.to_string()),
        plan: cov.plan_in_force,
        effective_end_at: Some(end),
        expiring_soon_at: Some(at.warn_at),
        read_only_since: (phase >= ServicePhase::ReadOnly).then_some(end),
        suspends_at: Some(at.suspend_at),
        missing_since: None,
    }
}

/// The warning, read-only and suspension milestones of a covered service, as they are reached.
fn lifecycle_milestones(service: &Service<'_, '_>, sub: &str, at: &Instants, found: &mut Findings) {
    let (now, product) = (service.facts.now, service.product);
    let (end, warn_at, suspend_at) = (at.end, at.warn_at, at.suspend_at);
    let (h_end, h_susp) = (human(end), human(suspend_at));
    let with_dates = |mut m: Milestone| {
        m.effective_end_at = Some(end);
        m.suspends_at = Some(suspend_at);
        m
    };
    if now >= warn_at {
        found.reached.push(with_dates(service.milestone(
            MilestoneKind::ExpiringSoon,
            warn_at,
            warn_at,
            Some(sub),
            &|| format!("Subscription {sub} for {product} runs until {h_end}: renew it before then to avoid read-only mode"),
        )));
    }
    if now >= end {
        let whose = service.whose("the tenant's settings are", "this add-on's settings are");
        found.reached.push(with_dates(service.milestone(
            MilestoneKind::ReadOnly,
            end,
            end,
            Some(sub),
            &|| format!("Subscription {sub} for {product} ran until {h_end}: {whose} read-only; renew it before {h_susp} to avoid suspension"),
        )));
    }
    if now >= suspend_at {
        let whose = service.whose("the service is", "this add-on is");
        found.reached.push(with_dates(service.milestone(
            MilestoneKind::Suspended,
            suspend_at,
            suspend_at,
            Some(sub),
            &|| format!("Subscription {sub} for {product} ran until {h_end} and its grace period until {h_susp}: {whose} suspended; renew it to restore service"),
        )));
    }
}

/// The cause for attention of a covered service past its warning instant.
fn covered_cause(
    service: &Service<'_, '_>,
    sub: &str,
    at: &Instants,
    phase: ServicePhase,
    found: &mut Findings,
) {
    let product = service.product;
    let (h_end, h_susp) = (human(at.end), human(at.suspend_at));
    let (severity, reason, message) = match phase {
        ServicePhase::Active => return,
        ServicePhase::ExpiringSoon => (
            2,
            Reason::ExpiringSoon,
            format!(
                "{product}: subscription {sub} runs until {h_end}; renew it before then to avoid read-only mode"
            ),
        ),
        ServicePhase::ReadOnly => (
            3,
            Reason::SubscriptionExpired,
            format!(
                "{product}: subscription {sub} ran until {h_end}; settings are read-only, renew before {h_susp} to avoid suspension"
            ),
        ),
        ServicePhase::Suspended => (
            4,
            Reason::SubscriptionExpired,
            format!(
                "{product}: subscription {sub} ran until {h_end}, suspended since {}; renew it to restore service",
                human_from(at.suspend_at)
            ),
        ),
    };
    found.causes.push(Cause {
        severity,
        base: service.base,
        reason,
        message,
    });
}

/// A service covered only by a trial: a milestone and a cause.
fn trial_licence(service: &Service<'_, '_>, sub: &str, at: &Instants, found: &mut Findings) {
    let (facts, product) = (service.facts, service.product);
    let h_end = human(at.end);
    let id = format!("TrialLicense/{product}/{sub}");
    let message = if facts.recorded.contains(&id) {
        String::new()
    } else {
        format!(
            "{product} is covered only by a trial licence ({sub}, until {h_end}): buy a paid subscription to keep the service"
        )
    };
    found.reached.push(Milestone {
        id,
        kind: MilestoneKind::TrialLicense,
        product: product.to_string(),
        base: service.base,
        subscription: Some(sub.to_string()),
        due_at: whole_seconds(facts.now),
        late: false,
        effective_end_at: Some(at.end),
        suspends_at: Some(at.suspend_at),
        peer: None,
        event_only: false,
        message,
    });
    found.causes.push(Cause {
        severity: 1,
        base: service.base,
        reason: Reason::TrialLicense,
        message: format!(
            "{product}: only trial subscription {sub} is in force (until {h_end}); buy a paid subscription"
        ),
    });
}

/// A service that comes back because its coverage now ends later. A service covered for the
/// first time (say, by a subscription applied a moment after its tenant, which was then seen
/// missing) is not renewed: it had no end to move.
fn renewal(
    service: &Service<'_, '_>,
    sub: &str,
    at: &Instants,
    phase: ServicePhase,
    found: &mut Findings,
) {
    let (facts, product) = (service.facts, service.product);
    let prev = facts
        .previous
        .services
        .iter()
        .find(|s| s.product == product);
    let improved =
        prev.is_some_and(|p| p.phase > phase && p.effective_end_at.is_some_and(|e| e < at.end));
    if !improved {
        return;
    }
    let h_end = human(at.end);
    let mut m = service.milestone(
        MilestoneKind::Renewed,
        whole_seconds(facts.now),
        at.end,
        Some(sub),
        &|| format!("{product} is covered again by subscription {sub} until {h_end}"),
    );
    m.effective_end_at = Some(at.end);
    m.suspends_at = Some(at.suspend_at);
    found.reached.push(m);
}

/// A service with no started subscription: read-only from the moment it was first seen
/// missing (kept in status), suspended a grace period later.
fn missing_service(service: &Service<'_, '_>, found: &mut Findings) -> ServiceStatus {
    let (facts, product) = (service.facts, service.product);
    let now = facts.now;
    let since = facts
        .previous
        .services
        .iter()
        .find(|s| s.product == product)
        .and_then(|p| p.missing_since)
        .unwrap_or_else(|| whole_seconds(now));
    let suspend_at = later(since, facts.policy.grace_period);
    let phase = if now < suspend_at {
        ServicePhase::ReadOnly
    } else {
        ServicePhase::Suspended
    };
    found.next.extend(next_after(now, [suspend_at]));
    let (h_since, h_susp) = (human_from(since), human(suspend_at));
    let h_suspended = human_from(suspend_at);
    let whose = service.whose("the tenant's settings are", "this add-on's settings are");
    let mut m = service.milestone(
        MilestoneKind::SubscriptionMissing,
        since,
        since,
        None,
        &|| format!("{product} has no subscription: {whose} read-only; apply a Subscription for it before {h_susp} to avoid suspension"),
    );
    m.suspends_at = Some(suspend_at);
    found.reached.push(m);
    let suspended = phase == ServicePhase::Suspended;
    if suspended {
        let whose = service.whose("the service is", "this add-on is");
        let mut m = service.milestone(
            MilestoneKind::Suspended,
            suspend_at,
            suspend_at,
            None,
            &|| format!("{product} has had no subscription since {h_since}: {whose} suspended since {h_suspended}; apply a Subscription to restore it"),
        );
        m.suspends_at = Some(suspend_at);
        found.reached.push(m);
    }
    found.causes.push(Cause {
        severity: if suspended { 4 } else { 3 },
        base: service.base,
        reason: Reason::SubscriptionMissing,
        message: if suspended {
            format!("{product}: no subscription since {h_since}, suspended since {h_suspended}; apply a Subscription to restore it")
        } else {
            format!("{product}: no subscription (missing since {h_since}); settings are read-only, apply a Subscription before {h_susp} to avoid suspension")
        },
    });
    ServiceStatus {
        product: product_word(product),
        base: service.base,
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

/// Seats: every subscription covering the tenant that is over its limit.
fn seat_limits(facts: &Facts<'_>, found: &mut Findings) {
    for (sub_name, eval) in &facts.subs {
        if !eval.seats_exceeded {
            continue;
        }
        let spec = facts
            .concerning
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(sub_name))
            .map(|s| &s.spec);
        let seats = spec.map(|s| s.seats).unwrap_or_default();
        let product = spec.map(|s| s.product.to_string()).unwrap_or_default();
        let message = format!(
            "Subscription {sub_name} ({product}) is used by {} users but licenses {seats} seats: buy more seats or reduce spec.users on the tenants sharing it",
            eval.seats_used
        );
        found.reached.push(Milestone {
            id: format!("SeatLimitExceeded/{sub_name}/{seats}"),
            kind: MilestoneKind::SeatLimitExceeded,
            base: product == facts.base_product,
            product,
            subscription: Some(sub_name.clone()),
            due_at: whole_seconds(facts.now),
            late: false,
            effective_end_at: eval.timeline.map(|t| t.effective_end_at),
            suspends_at: None,
            peer: None,
            event_only: false,
            message: message.clone(),
        });
        found.causes.push(Cause {
            severity: 0,
            base: false,
            reason: Reason::SeatLimitExceeded,
            message,
        });
    }
}

/// Transfers, from what the Subscription controller recorded in `status.transfers`: the latest
/// one to this tenant (if it still owns the subscription) and the latest one from it (if it
/// does not). Only recent ones (within `late_after`): the history that a first run of this
/// version finds is not announced again.
fn transfers(facts: &Facts<'_>, subscriptions: &[&Subscription], found: &mut Findings) {
    let (name, now) = (facts.name, facts.now);
    for sub in subscriptions.iter().copied() {
        let Some(sub_status) = &sub.status else {
            continue;
        };
        let owner = sub.spec.tenant_ref.as_str();
        let recent =
            |t: &&crate::api::Transfer| t.at <= now && now - t.at <= facts.policy.late_after;
        let inbound = (owner == name)
            .then(|| sub_status.transfers.iter().rev().find(|t| t.to == name))
            .flatten()
            .filter(recent);
        let outbound = (owner != name)
            .then(|| sub_status.transfers.iter().rev().find(|t| t.from == name))
            .flatten()
            .filter(recent);
        for (kind, transfer) in [
            (MilestoneKind::TransferredIn, inbound),
            (MilestoneKind::TransferredOut, outbound),
        ] {
            if let Some(t) = transfer {
                found.reached.push(transfer_milestone(facts, sub, kind, t));
            }
        }
    }
}

/// The milestone of transfer `t` of `sub`, to or from this tenant (`kind`).
fn transfer_milestone(
    facts: &Facts<'_>,
    sub: &Subscription,
    kind: MilestoneKind,
    t: &crate::api::Transfer,
) -> Milestone {
    let sub_name = sub.metadata.name.as_deref().unwrap_or_default();
    let product = sub.spec.product.as_ref();
    let (peer, covers) = if kind == MilestoneKind::TransferredIn {
        (&t.from, "it now covers this tenant")
    } else {
        (&t.to, "it no longer covers this tenant")
    };
    Milestone {
        id: format!(
            "{}/{}/{}",
            kind.as_str(),
            sub_name,
            crate::api::date::format_instant(t.at)
        ),
        kind,
        product: product.to_string(),
        base: product == facts.base_product,
        subscription: Some(sub_name.to_string()),
        due_at: t.at,
        late: false,
        effective_end_at: facts.timeline(sub_name).map(|tl| tl.effective_end_at),
        suspends_at: None,
        peer: Some(peer.clone()),
        event_only: false,
        message: format!(
            "Subscription {sub_name} ({product}) was transferred from tenant {} to tenant {}: {covers}",
            t.from, t.to
        ),
    }
}

/// Possible duplicates: a condition and a milestone each, never a phase.
fn possible_duplicates(
    facts: &Facts<'_>,
    neighbours: &[Neighbour<'_>],
    found: &mut Findings,
) -> Vec<duplicates::Duplicate> {
    let (tenant, policy, now) = (facts.tenant, facts.policy, facts.now);
    let dups = duplicates::possible_duplicates(tenant, &facts.concerning, neighbours, policy, now);
    found.next.extend(duplicates::next_change(
        tenant,
        &facts.concerning,
        neighbours,
        &dups,
        policy,
        now,
    ));
    let base_product = facts.base_product;
    for d in &dups {
        let id = format!("{}/{}", MilestoneKind::PossibleDuplicate.as_str(), d.other);
        let message = if facts.recorded.contains(&id) {
            String::new()
        } else {
            d.message.clone()
        };
        let first = d.moves.first();
        found.reached.push(Milestone {
            id,
            kind: MilestoneKind::PossibleDuplicate,
            product: first
                .map_or(base_product, |m| m.product.as_ref())
                .to_string(),
            base: first.is_none_or(|m| m.product == base_product),
            subscription: first.map(|m| m.subscription.clone()),
            due_at: whole_seconds(now),
            late: false,
            effective_end_at: first.map(|m| m.effective_end_at),
            suspends_at: None,
            peer: Some(d.other.clone()),
            event_only: d.in_use != facts.name,
            message,
        });
    }
    dups
}

/// The tenant's phase follows its base service; any cause for attention is a warning.
fn tenant_phase(found: &Findings) -> TenantPhase {
    let base_phase = found
        .services
        .first()
        .map(|s| s.phase)
        .unwrap_or(ServicePhase::Active);
    match base_phase {
        ServicePhase::Suspended => TenantPhase::Suspended,
        ServicePhase::ReadOnly => TenantPhase::ReadOnly,
        _ if !found.causes.is_empty() => TenantPhase::Warning,
        _ => TenantPhase::Active,
    }
}

/// The tenant's conditions: `Ready`, `Warning` (every cause, the most severe first),
/// `ReadOnly` and `Suspended` (the base service's cause; add-ons are named in the message),
/// and `PossibleDuplicate`.
fn tenant_conditions(
    facts: &Facts<'_>,
    phase: TenantPhase,
    found: &mut Findings,
    dups: &[duplicates::Duplicate],
) -> Vec<crate::api::Condition> {
    let causes = &mut found.causes;
    causes.sort_by(|a, b| b.severity.cmp(&a.severity).then(b.base.cmp(&a.base)));
    let all_causes = causes
        .iter()
        .map(|c| c.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let base_cause = causes.iter().find(|c| c.base && c.severity >= 3);
    let add_ons = |at_least: ServicePhase| -> Vec<&str> {
        found
            .services
            .iter()
            .filter(|s| !s.base && s.phase >= at_least)
            .map(|s| s.product.as_ref())
            .collect()
    };
    let (frozen_add_ons, suspended_add_ons) = (
        add_ons(ServicePhase::ReadOnly),
        add_ons(ServicePhase::Suspended),
    );

    let mut conditions = ConditionSet::new(&facts.previous.conditions, facts.generation, facts.now);
    conditions.set(
        ConditionType::Ready,
        true,
        Reason::Reconciled,
        format!("Tenant is {phase:?}"),
    );
    match causes.first() {
        Some(top) => conditions.set(ConditionType::Warning, true, top.reason, all_causes.clone()),
        None => conditions.set(
            ConditionType::Warning,
            false,
            Reason::SubscriptionsActive,
            "Every service is covered by a paid subscription",
        ),
    }
    match (phase >= TenantPhase::ReadOnly, base_cause) {
        (true, Some(c)) => {
            conditions.set(ConditionType::ReadOnly, true, c.reason, c.message.clone())
        }
        _ if frozen_add_ons.is_empty() => conditions.set(
            ConditionType::ReadOnly,
            false,
            Reason::NotReadOnly,
            "Settings can be changed",
        ),
        _ => conditions.set(
            ConditionType::ReadOnly,
            false,
            Reason::NotReadOnly,
            format!(
                "The base service's settings can be changed; read-only add-ons: {}",
                frozen_add_ons.join(", ")
            ),
        ),
    }
    match (phase == TenantPhase::Suspended, base_cause) {
        (true, Some(c)) => {
            conditions.set(ConditionType::Suspended, true, c.reason, c.message.clone())
        }
        _ if suspended_add_ons.is_empty() => conditions.set(
            ConditionType::Suspended,
            false,
            Reason::NotSuspended,
            "The service is running",
        ),
        _ => conditions.set(
            ConditionType::Suspended,
            false,
            Reason::NotSuspended,
            format!(
                "The base service is running; suspended add-ons: {}",
                suspended_add_ons.join(", ")
            ),
        ),
    }
    let (status, message) = duplicate_condition(dups);
    if status {
        conditions.set(
            ConditionType::PossibleDuplicate,
            true,
            Reason::SharesAdmins,
            message,
        );
    } else {
        conditions.set(
            ConditionType::PossibleDuplicate,
            false,
            Reason::NoDuplicate,
            message,
        );
    }
    conditions.finish()
}

/// Whether the `PossibleDuplicate` condition is true, and its message.
fn duplicate_condition(dups: &[duplicates::Duplicate]) -> (bool, String) {
    match dups.len() {
        0 => (
            false,
            format!(
                "No other tenant lists one of this tenant's administrator addresses (tenants linked by a shared subscription or the {NOT_DUPLICATE_ANNOTATION} annotation are not counted)"
            ),
        ),
        1 => (true, dups[0].message.clone()),
        n => {
            let shown: Vec<&str> = dups
                .iter()
                .take(duplicates::MAX_REPORTED)
                .map(|d| d.message.as_str())
                .collect();
            let more = n.saturating_sub(duplicates::MAX_REPORTED);
            let mut message = format!("{n} possible duplicates. {}", shown.join(" | "));
            if more > 0 {
                message.push_str(&format!(
                    " | and {more} more (see status.possibleDuplicates)"
                ));
            }
            (true, message)
        }
    }
}

/// `status.possibleDuplicates`, within their bounds.
fn duplicate_records(dups: &[duplicates::Duplicate]) -> Vec<PossibleDuplicate> {
    dups.iter()
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
        .collect()
}

/// Milestones: announce those reached and not recorded; keep records of those still reached,
/// plus a bounded history so a milestone that comes back after a change is not repeated at
/// once. Returns the records to write and the milestones to announce.
fn milestone_records(
    facts: &Facts<'_>,
    mut reached: Vec<Milestone>,
) -> (Vec<MilestoneRecord>, Vec<Milestone>) {
    let previous = &facts.previous.milestones;
    reached.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.kind.cmp(&b.kind)));
    cap_reached(&mut reached);
    let mut current: Vec<&str> = reached.iter().map(|m| m.id.as_str()).collect();
    current.sort_unstable();
    let current = |id: &str| current.binary_search(&id).is_ok();
    let stale = previous.iter().filter(|r| !current(&r.id)).count();
    let mut to_drop = stale.saturating_sub(MILESTONE_HISTORY);
    let mut records: Vec<MilestoneRecord> = Vec::with_capacity(previous.len() + 2);
    records.extend(
        previous
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
    let mut fresh: Vec<Milestone> = reached
        .into_iter()
        .filter(|m| !facts.recorded.contains(&m.id))
        .collect();
    // Several due at first sight, one of them at least late (the operator was installed on a
    // running fleet, or the tenant created after its licence lapsed): announced together, so a
    // tenant costs at most one Event then. A tenant whose only milestones are news (due as it
    // was created: a subscription missing from the start) has them announced one by one.
    let already_due =
        first_sight(facts.previous) && fresh.len() > 1 && fresh.iter().any(|m| m.late);
    if already_due {
        notify_latest_only(&mut fresh);
    }
    let announced_at = whole_seconds(facts.now);
    records.extend(fresh.iter().map(|m| MilestoneRecord {
        id: m.id.clone(),
        kind: m.kind.as_str().into(),
        product: Some(product_word(&m.product)),
        due_at: m.due_at,
        announced_at,
        subscription: m.subscription.clone(),
        peer: m.peer.clone(),
        event_only: m.event_only,
        already_due,
        effective_end_at: m.effective_end_at,
        suspends_at: m.suspends_at,
    }));
    (records, fresh)
}

/// The operator has never written this status: what is due now was due before it looked.
fn first_sight(previous: &TenantStatus) -> bool {
    previous.observed_generation.is_none()
}

/// Of each service's late lifecycle milestones, only the latest is notified: an
/// `ExpiringSoon` announced when the service is by now `Suspended` tells nobody anything.
fn notify_latest_only(fresh: &mut [Milestone]) {
    let latest = |product: &str| {
        fresh
            .iter()
            .filter(|m| m.late && m.product == product)
            .filter_map(|m| m.kind.lifecycle_stage())
            .max()
    };
    let superseded: Vec<bool> = fresh
        .iter()
        .map(|m| {
            m.late
                && m.kind
                    .lifecycle_stage()
                    .is_some_and(|stage| latest(&m.product).is_some_and(|l| l > stage))
        })
        .collect();
    for (m, superseded) in fresh.iter_mut().zip(superseded) {
        m.event_only |= superseded;
    }
}
