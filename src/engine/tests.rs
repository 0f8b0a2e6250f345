//! Table-driven tests of the lifecycle rules, each walked through its boundaries
//! (one second before, at, and one second after each instant).

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::api::{
    ConditionStatus, Plan, ServicePhase as S, Subscription, SubscriptionPhase as P, Tenant,
    TenantPhase as T,
};
use crate::api::{ConditionType, Reason};
use crate::fixtures::{extended, shared, subscription, tenant, trial};

const ESG: &str = "email-safeguard";
const ETI: &str = "email-threat-isolation";
const ETDR: &str = "email-threat-detection-response";

fn at(s: &str) -> DateTime<Utc> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    DateTime::parse_from_rfc3339(&full)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn sec(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn world(tenants: Vec<Tenant>, subscriptions: Vec<Subscription>) -> World {
    World {
        tenants,
        subscriptions,
    }
}

fn eval_first(w: &World, policy: &Policy, now: DateTime<Utc>) -> TenantEvaluation {
    evaluate_world(w, policy, now).tenants.remove(0)
}

fn condition(e: &TenantEvaluation, type_: ConditionType) -> (ConditionStatus, String) {
    let c = crate::api::condition::find(&e.status.conditions, type_)
        .unwrap_or_else(|| panic!("condition {type_} missing"));
    (c.status, c.reason.to_string())
}

fn service(e: &TenantEvaluation, product: &str) -> crate::api::ServiceStatus {
    e.status
        .services
        .iter()
        .find(|s| s.product == product)
        .cloned()
        .unwrap_or_else(|| panic!("service {product} missing"))
}

/// One row of a boundary walk: what the engine must say at `now`.
struct Expect {
    now: DateTime<Utc>,
    tenant: T,
    service: S,
    subscription: P,
    warning: (ConditionStatus, &'static str),
    read_only: ConditionStatus,
    suspended: ConditionStatus,
    next: Option<DateTime<Utc>>,
}

/// One base subscription ending 2026-12-31 (E = 2027-01-01T00:00Z), W = G = 30 days.
#[test]
fn base_subscription_walks_through_every_boundary() {
    let w = world(
        vec![tenant("acme", &[ESG], 10)],
        vec![subscription(
            "acme-esg",
            "acme",
            ESG,
            "2026-01-01",
            "2026-12-31",
            50,
        )],
    );
    let policy = Policy::default();
    let start = at("2026-01-01");
    let warn = at("2026-12-02");
    let end = at("2027-01-01");
    let suspend = at("2027-01-31");
    use ConditionStatus::{False as F, True as Tr};
    let row = |now, tenant, service, subscription, warning, read_only, suspended, next| Expect {
        now,
        tenant,
        service,
        subscription,
        warning,
        read_only,
        suspended,
        next,
    };
    #[rustfmt::skip]
    let rows = vec![
        row(start - sec(1),   T::ReadOnly,  S::ReadOnly,     P::Pending,      (Tr, "SubscriptionMissing"), Tr, F,  Some(start)),
        row(start,            T::Active,    S::Active,       P::Active,       (F, "SubscriptionsActive"),  F,  F,  Some(warn)),
        row(warn - sec(1),    T::Active,    S::Active,       P::Active,       (F, "SubscriptionsActive"),  F,  F,  Some(warn)),
        row(warn,             T::Warning,   S::ExpiringSoon, P::ExpiringSoon, (Tr, "ExpiringSoon"),        F,  F,  Some(end)),
        row(warn + sec(1),    T::Warning,   S::ExpiringSoon, P::ExpiringSoon, (Tr, "ExpiringSoon"),        F,  F,  Some(end)),
        row(end - sec(1),     T::Warning,   S::ExpiringSoon, P::ExpiringSoon, (Tr, "ExpiringSoon"),        F,  F,  Some(end)),
        row(end,              T::ReadOnly,  S::ReadOnly,     P::GracePeriod,  (Tr, "SubscriptionExpired"), Tr, F,  Some(suspend)),
        row(end + sec(1),     T::ReadOnly,  S::ReadOnly,     P::GracePeriod,  (Tr, "SubscriptionExpired"), Tr, F,  Some(suspend)),
        row(suspend - sec(1), T::ReadOnly,  S::ReadOnly,     P::GracePeriod,  (Tr, "SubscriptionExpired"), Tr, F,  Some(suspend)),
        row(suspend,          T::Suspended, S::Suspended,    P::Expired,      (Tr, "SubscriptionExpired"), Tr, Tr, None),
        row(suspend + sec(1), T::Suspended, S::Suspended,    P::Expired,      (Tr, "SubscriptionExpired"), Tr, Tr, None),
    ];
    for r in rows {
        let now = r.now;
        let ev = evaluate_world(&w, &policy, now);
        let te = &ev.tenants[0];
        assert_eq!(te.status.phase, Some(r.tenant), "tenant phase at {now}");
        assert_eq!(service(te, ESG).phase, r.service, "service phase at {now}");
        assert_eq!(
            ev.subscriptions[0].status.phase,
            Some(r.subscription),
            "subscription phase at {now}"
        );
        assert_eq!(
            condition(te, ConditionType::Warning),
            (r.warning.0, r.warning.1.to_string()),
            "Warning at {now}"
        );
        assert_eq!(
            condition(te, ConditionType::ReadOnly).0,
            r.read_only,
            "ReadOnly at {now}"
        );
        assert_eq!(
            condition(te, ConditionType::Suspended).0,
            r.suspended,
            "Suspended at {now}"
        );
        assert_eq!(
            condition(te, ConditionType::Ready).0,
            ConditionStatus::True,
            "Ready at {now}: a suspended tenant is still reconciled"
        );
        assert_eq!(te.next_transition, r.next, "next transition at {now}");
        assert_eq!(te.status.next_transition_at, r.next);
    }
}

#[test]
fn service_status_names_the_instants() {
    let w = world(
        vec![tenant("acme", &[ESG], 10)],
        vec![subscription(
            "acme-esg",
            "acme",
            ESG,
            "2026-01-01",
            "2026-12-31",
            50,
        )],
    );
    let te = eval_first(&w, &Policy::default(), at("2027-01-05"));
    let s = service(&te, ESG);
    assert!(s.base);
    assert_eq!(s.subscription.as_deref(), Some("acme-esg"));
    assert_eq!(s.effective_end_at, Some(at("2027-01-01")));
    assert_eq!(s.expiring_soon_at, Some(at("2026-12-02")));
    assert_eq!(s.read_only_since, Some(at("2027-01-01")));
    assert_eq!(s.suspends_at, Some(at("2027-01-31")));
    let (_, msg) = (
        (),
        crate::api::condition::find(&te.status.conditions, ConditionType::ReadOnly)
            .map(|c| c.message.clone())
            .unwrap_or_default(),
    );
    // endDate 2026-12-31 ends at 2027-01-01T00:00Z: the message names the last day in force
    // and the last day of grace, never the day after either.
    assert!(
        msg.contains("acme-esg")
            && msg.contains("until the end of 31 Dec 2026 (UTC)")
            && msg.contains("before the end of 30 Jan 2027 (UTC)"),
        "{msg}"
    );
    assert!(
        !msg.contains("2027-01-01") && !msg.contains("1 Jan 2027"),
        "no date that reads one day late: {msg}"
    );
}

#[test]
fn rfc3339_end_is_taken_as_is_and_policy_periods_are_configurable() {
    let w = world(
        vec![tenant("acme", &[ESG], 1)],
        vec![subscription(
            "s",
            "acme",
            ESG,
            "2026-01-01T00:00:00Z",
            "2026-06-01T12:00:00+09:00",
            5,
        )],
    );
    let policy = Policy {
        warning_period: sec(3),
        grace_period: sec(3),
        ..Policy::default()
    };
    let end = at("2026-06-01T03:00:00Z");
    for (now, phase) in [
        (end - sec(4), T::Active),
        (end - sec(3), T::Warning),
        (end, T::ReadOnly),
        (end + sec(2), T::ReadOnly),
        (end + sec(3), T::Suspended),
    ] {
        assert_eq!(
            eval_first(&w, &policy, now).status.phase,
            Some(phase),
            "at {now}"
        );
    }
}

#[test]
fn renewal_bought_in_advance_shows_no_warning_and_a_late_one_restores_at_once() {
    let old = subscription("old", "acme", ESG, "2026-01-01", "2026-12-31", 50);
    let chained = subscription("new", "acme", ESG, "2027-01-01", "2027-12-31", 50);
    let w = world(vec![tenant("acme", &[ESG], 10)], vec![old.clone(), chained]);
    for now in [at("2026-12-15"), at("2027-01-01"), at("2027-02-15")] {
        let te = eval_first(&w, &Policy::default(), now);
        assert_eq!(te.status.phase, Some(T::Active), "at {now}");
        assert_eq!(service(&te, ESG).subscription.as_deref(), Some("new"));
    }

    // Renewed during the grace period, starting now: Active at once, with a Renewed milestone.
    let suspended_world = world(vec![tenant("acme", &[ESG], 10)], vec![old.clone()]);
    let mut t = tenant("acme", &[ESG], 10);
    t.status = Some(eval_first(&suspended_world, &Policy::default(), at("2027-01-10")).status);
    let late = subscription("late", "acme", ESG, "2027-01-10", "2028-01-09", 50);
    let te = eval_first(
        &world(vec![t.clone()], vec![old.clone(), late.clone()]),
        &Policy::default(),
        at("2027-01-10"),
    );
    assert_eq!(te.status.phase, Some(T::Active));
    assert_eq!(
        condition(&te, ConditionType::ReadOnly).0,
        ConditionStatus::False
    );
    assert!(
        te.milestones
            .iter()
            .any(|m| m.kind == MilestoneKind::Renewed),
        "{:?}",
        te.milestones
    );

    // Renewed after suspension.
    t.status = Some(eval_first(&suspended_world, &Policy::default(), at("2027-03-01")).status);
    assert_eq!(t.status.as_ref().and_then(|s| s.phase), Some(T::Suspended));
    let after = subscription("after", "acme", ESG, "2027-03-01", "2028-02-29", 50);
    let te = eval_first(
        &world(vec![t], vec![old, after]),
        &Policy::default(),
        at("2027-03-01"),
    );
    assert_eq!(te.status.phase, Some(T::Active));
    assert_eq!(
        condition(&te, ConditionType::Suspended),
        (ConditionStatus::False, "NotSuspended".into())
    );
    assert!(
        te.milestones
            .iter()
            .any(|m| m.kind == MilestoneKind::Renewed)
    );
}

#[test]
fn add_on_lapse_only_restricts_the_add_on() {
    let w = world(
        vec![tenant("hooli", &[ESG, ETI], 10)],
        vec![
            subscription("esg", "hooli", ESG, "2026-01-01", "2027-12-31", 50),
            subscription("eti", "hooli", ETI, "2025-11-21", "2026-11-20", 50),
        ],
    );
    let policy = Policy::default();
    let end = at("2026-11-21");
    let suspend = at("2026-12-21");
    for (now, tp, eti, reason) in [
        (end - sec(1), T::Warning, S::ExpiringSoon, "ExpiringSoon"),
        (end, T::Warning, S::ReadOnly, "SubscriptionExpired"),
        (
            suspend - sec(1),
            T::Warning,
            S::ReadOnly,
            "SubscriptionExpired",
        ),
        (suspend, T::Warning, S::Suspended, "SubscriptionExpired"),
    ] {
        let te = eval_first(&w, &policy, now);
        assert_eq!(te.status.phase, Some(tp), "at {now}");
        assert_eq!(service(&te, ESG).phase, S::Active);
        assert_eq!(service(&te, ETI).phase, eti, "at {now}");
        assert_eq!(
            condition(&te, ConditionType::Warning),
            (ConditionStatus::True, reason.to_string())
        );
        assert_eq!(
            condition(&te, ConditionType::ReadOnly).0,
            ConditionStatus::False,
            "the tenant as a whole is not read-only"
        );
        assert_eq!(
            condition(&te, ConditionType::Suspended).0,
            ConditionStatus::False
        );
    }
    let te = eval_first(&w, &policy, suspend);
    let msg = crate::api::condition::find(&te.status.conditions, ConditionType::Suspended)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains(ETI),
        "the Suspended=False message names the suspended add-on: {msg}"
    );
}

#[test]
fn missing_subscription_is_read_only_from_first_sight_and_suspends_after_grace() {
    let w = world(
        vec![tenant("v", &[ESG, ETDR], 10)],
        vec![subscription(
            "esg",
            "v",
            ESG,
            "2026-01-01",
            "2027-12-31",
            50,
        )],
    );
    let policy = Policy::default();
    let first_seen = at("2026-06-01T10:00:00.500Z");
    let te = eval_first(&w, &policy, first_seen);
    let s = service(&te, ETDR);
    assert_eq!(s.phase, S::ReadOnly);
    assert_eq!(
        s.missing_since,
        Some(at("2026-06-01T10:00:00Z")),
        "whole seconds"
    );
    assert_eq!(s.suspends_at, Some(at("2026-07-01T10:00:00Z")));
    assert_eq!(te.status.phase, Some(T::Warning));
    assert_eq!(
        condition(&te, ConditionType::Warning),
        (ConditionStatus::True, "SubscriptionMissing".into())
    );
    assert!(
        te.milestones
            .iter()
            .any(|m| m.kind == MilestoneKind::SubscriptionMissing && m.product == ETDR)
    );

    // Later evaluations keep the first-seen instant from status.
    let mut t = w.tenants[0].clone();
    t.status = Some(te.status.clone());
    let w2 = world(vec![t], w.subscriptions.clone());
    let suspend = at("2026-07-01T10:00:00Z");
    for (now, phase) in [(suspend - sec(1), S::ReadOnly), (suspend, S::Suspended)] {
        let te2 = eval_first(&w2, &policy, now);
        assert_eq!(service(&te2, ETDR).phase, phase, "at {now}");
        assert_eq!(
            service(&te2, ETDR).missing_since,
            Some(at("2026-06-01T10:00:00Z"))
        );
    }
    assert_eq!(
        eval_first(&w2, &policy, suspend - sec(1)).next_transition,
        Some(suspend)
    );
}

#[test]
fn a_tenant_without_its_base_subscription_is_read_only() {
    let w = world(vec![tenant("empty", &[], 0)], vec![]);
    let te = eval_first(&w, &Policy::default(), at("2026-06-01"));
    assert_eq!(te.status.phase, Some(T::ReadOnly));
    assert_eq!(
        te.status.services.len(),
        1,
        "the base product is always evaluated"
    );
    assert_eq!(
        condition(&te, ConditionType::ReadOnly),
        (ConditionStatus::True, "SubscriptionMissing".into())
    );
}

#[test]
fn trial_warns_while_only_trials_are_in_force() {
    let t = trial(subscription("t", "p", ESG, "2026-12-01", "2027-02-28", 25));
    let paid = subscription("paid", "p", ESG, "2027-01-15", "2028-01-14", 25);
    let w = world(vec![tenant("p", &[ESG], 12)], vec![t.clone()]);
    let te = eval_first(&w, &Policy::default(), at("2026-12-15"));
    assert_eq!(te.status.phase, Some(T::Warning));
    assert_eq!(
        condition(&te, ConditionType::Warning),
        (ConditionStatus::True, "TrialLicense".into())
    );
    assert_eq!(service(&te, ESG).plan, Some(Plan::Trial));
    assert!(
        te.milestones
            .iter()
            .any(|m| m.kind == MilestoneKind::TrialLicense)
    );

    let w = world(vec![tenant("p", &[ESG], 12)], vec![t, paid]);
    assert_eq!(
        eval_first(&w, &Policy::default(), at("2027-01-15") - sec(1))
            .status
            .phase,
        Some(T::Warning)
    );
    let te = eval_first(&w, &Policy::default(), at("2027-01-15"));
    assert_eq!(
        te.status.phase,
        Some(T::Active),
        "a paid licence in force ends the trial warning"
    );
    assert_eq!(service(&te, ESG).plan, Some(Plan::Paid));
}

#[test]
fn shared_subscription_counts_every_tenants_users() {
    let sub = shared(
        subscription("w", "wayne", ESG, "2026-03-01", "2027-02-28", 500),
        &["stark"],
    );
    let within = world(
        vec![tenant("wayne", &[ESG], 300), tenant("stark", &[ESG], 200)],
        vec![sub.clone()],
    );
    let ev = evaluate_world(&within, &Policy::default(), at("2026-06-01"));
    assert_eq!(ev.subscriptions[0].status.seats_used, Some(500));
    assert!(
        ev.tenants.iter().all(|t| t.status.phase == Some(T::Active)),
        "500 of 500 seats is within the limit"
    );

    let over = world(
        vec![tenant("wayne", &[ESG], 300), tenant("stark", &[ESG], 201)],
        vec![sub],
    );
    let ev = evaluate_world(&over, &Policy::default(), at("2026-06-01"));
    assert_eq!(ev.subscriptions[0].status.seats_used, Some(501));
    assert!(ev.subscriptions[0].seats_exceeded);
    for te in &ev.tenants {
        assert_eq!(te.status.phase, Some(T::Warning));
        assert_eq!(
            condition(te, ConditionType::Warning),
            (ConditionStatus::True, "SeatLimitExceeded".into())
        );
        assert_eq!(service(te, ESG).phase, S::Active, "no suspension for seats");
    }
    let seat = crate::api::condition::find(
        &ev.subscriptions[0].status.conditions,
        ConditionType::SeatLimitExceeded,
    )
    .map(|c| c.status);
    assert_eq!(seat, Some(ConditionStatus::True));
}

#[test]
fn extension_moves_the_effective_end() {
    let base = subscription("c", "cy", ESG, "2025-12-11", "2026-12-10", 350);
    let ext = extended(base.clone(), "2027-01-31");
    let w = world(vec![tenant("cy", &[ESG], 10)], vec![ext]);
    let ev = evaluate_world(&w, &Policy::default(), at("2026-12-15"));
    assert_eq!(ev.tenants[0].status.phase, Some(T::Active));
    assert_eq!(
        ev.subscriptions[0].status.effective_end_at,
        Some(at("2027-02-01"))
    );
    assert_eq!(ev.tenants[0].next_transition, Some(at("2027-01-02")));

    // The change from the previous status is reported as an extension.
    let mut with_prev = extended(base.clone(), "2027-01-31");
    with_prev.status = evaluate_world(
        &world(vec![tenant("cy", &[ESG], 10)], vec![base]),
        &Policy::default(),
        at("2026-12-01"),
    )
    .subscriptions
    .pop()
    .map(|e| e.status);
    let ev = evaluate_world(
        &world(vec![tenant("cy", &[ESG], 10)], vec![with_prev]),
        &Policy::default(),
        at("2026-12-15"),
    );
    assert!(
        matches!(
            ev.subscriptions[0].changes.as_slice(),
            [SubscriptionChange::Extended { .. }]
        ),
        "{:?}",
        ev.subscriptions[0].changes
    );
}

#[test]
fn transfer_moves_coverage_and_is_recorded() {
    let mut sub = subscription("s", "new-owner", ESG, "2026-01-01", "2026-12-31", 10);
    sub.status = Some(crate::api::SubscriptionStatus {
        tenant: Some("old-owner".into()),
        ..Default::default()
    });
    let w = world(
        vec![
            tenant("old-owner", &[ESG], 1),
            tenant("new-owner", &[ESG], 1),
        ],
        vec![sub],
    );
    let now = at("2026-06-01T08:00:00Z");
    let ev = evaluate_world(&w, &Policy::default(), now);
    assert_eq!(
        ev.tenants[0].status.phase,
        Some(T::ReadOnly),
        "the previous owner lost coverage"
    );
    assert_eq!(
        ev.tenants[1].status.phase,
        Some(T::Active),
        "the new owner is covered at once"
    );
    let s = &ev.subscriptions[0];
    assert_eq!(s.status.tenant.as_deref(), Some("new-owner"));
    assert_eq!(s.status.transfers.len(), 1);
    assert_eq!(
        (
            s.status.transfers[0].from.as_str(),
            s.status.transfers[0].to.as_str(),
            s.status.transfers[0].at
        ),
        ("old-owner", "new-owner", now)
    );
    assert_eq!(
        s.changes,
        vec![SubscriptionChange::Transferred {
            from: "old-owner".into(),
            to: "new-owner".into()
        }]
    );
}

#[test]
fn transfers_are_confirmed_to_both_tenants_once_and_only_when_recent() {
    let policy = Policy::default();
    let moved = at("2026-06-01T08:00:00Z");
    let mut sub = subscription("s", "new-owner", ESG, "2026-01-01", "2026-12-31", 10);
    sub.status = Some(crate::api::SubscriptionStatus {
        tenant: Some("new-owner".into()),
        transfers: vec![crate::api::Transfer {
            from: "old-owner".into(),
            to: "new-owner".into(),
            at: moved,
        }],
        ..Default::default()
    });
    let tenants = vec![
        tenant("old-owner", &[ESG], 1),
        tenant("new-owner", &[ESG], 1),
    ];
    let transfers = |e: &TenantEvaluation| -> Vec<(MilestoneKind, Option<String>, Option<String>)> {
        e.milestones
            .iter()
            .filter(|m| m.kind.is_transfer())
            .map(|m| (m.kind, m.peer.clone(), m.subscription.clone()))
            .collect()
    };
    let ev = evaluate_world(
        &world(tenants.clone(), vec![sub.clone()]),
        &policy,
        moved + sec(2),
    );
    assert_eq!(
        transfers(&ev.tenants[0]),
        [(
            MilestoneKind::TransferredOut,
            Some("new-owner".into()),
            Some("s".into())
        )]
    );
    assert_eq!(
        transfers(&ev.tenants[1]),
        [(
            MilestoneKind::TransferredIn,
            Some("old-owner".into()),
            Some("s".into())
        )]
    );
    let record = ev.tenants[1]
        .status
        .milestones
        .iter()
        .find(|r| r.kind == "TransferredIn")
        .expect("recorded");
    assert_eq!(record.peer.as_deref(), Some("old-owner"));
    assert_eq!(record.due_at, moved);

    // Recorded: not announced again.
    let mut again = tenants.clone();
    for (t, e) in again.iter_mut().zip(&ev.tenants) {
        t.status = Some(e.status.clone());
    }
    let ev2 = evaluate_world(&world(again, vec![sub.clone()]), &policy, moved + sec(60));
    assert!(ev2.tenants.iter().all(|e| transfers(e).is_empty()));

    // A transfer from long ago (history found by a first run) is not announced.
    let old = evaluate_world(
        &world(tenants, vec![sub]),
        &policy,
        moved + TimeDelta::hours(2),
    );
    assert!(old.tenants.iter().all(|e| transfers(e).is_empty()));
}

#[test]
fn transfer_history_is_bounded() {
    let mut sub = subscription("s", "t0", ESG, "2026-01-01", "2026-12-31", 10);
    let users: TenantUsers = (0..20).map(|i| (format!("t{i}"), 1)).collect();
    for i in 1..20 {
        sub.status =
            Some(evaluate_subscription(&sub, &users, &Policy::default(), at("2026-06-01")).status);
        sub.spec.tenant_ref = format!("t{i}");
    }
    let s = evaluate_subscription(&sub, &users, &Policy::default(), at("2026-06-01"));
    assert_eq!(s.status.transfers.len(), subscription::TRANSFER_HISTORY);
    assert_eq!(
        s.status.transfers.last().map(|t| t.to.as_str()),
        Some("t19")
    );
}

#[test]
fn bad_references_and_dates_become_conditions() {
    let users: TenantUsers = [("acme".to_string(), 5)].into();
    let policy = Policy::default();
    let now = at("2026-06-01");
    let ready = |s: &Subscription| {
        let e = evaluate_subscription(s, &users, &policy, now);
        let c = crate::api::condition::find(&e.status.conditions, ConditionType::Ready)
            .cloned()
            .expect("Ready");
        (c.status, c.reason, c.message)
    };
    let orphan = subscription("s", "ghost", ESG, "2026-01-01", "2026-12-31", 10);
    assert_eq!(ready(&orphan).1, "TenantNotFound");
    let share = shared(
        subscription("s", "acme", ESG, "2026-01-01", "2026-12-31", 10),
        &["nobody"],
    );
    assert_eq!(ready(&share).1, "SharedTenantNotFound");
    let unknown = subscription(
        "s",
        "acme",
        "email-antivirus",
        "2026-01-01",
        "2026-12-31",
        10,
    );
    assert_eq!(ready(&unknown).1, "UnknownProduct");
    let bad_date = subscription("s", "acme", ESG, "2026-02-30", "2026-12-31", 10);
    let (status, reason, message) = ready(&bad_date);
    assert_eq!((status, &*reason), (ConditionStatus::False, "InvalidDate"));
    assert!(message.contains("2026-02-30"), "{message}");
    let e = evaluate_subscription(&bad_date, &users, &policy, now);
    assert_eq!(e.status.phase, None);
    assert_eq!(
        crate::api::condition::find(&e.status.conditions, ConditionType::Stalled).map(|c| c.status),
        Some(ConditionStatus::True)
    );

    // A subscription with unreadable dates covers nothing.
    let w = world(vec![tenant("acme", &[ESG], 5)], vec![bad_date]);
    assert_eq!(eval_first(&w, &policy, now).status.phase, Some(T::ReadOnly));
}

#[test]
fn milestones_are_announced_once_and_late_ones_are_marked() {
    let w = world(
        vec![tenant("acme", &[ESG], 10)],
        vec![subscription(
            "s",
            "acme",
            ESG,
            "2026-01-01",
            "2026-12-31",
            50,
        )],
    );
    let policy = Policy::default();
    let mut t = w.tenants[0].clone();
    let mut announced = Vec::new();
    // Walk through time, feeding the status back, as the controller does.
    for now in [
        at("2026-06-01"),
        at("2026-12-02"),
        at("2026-12-03"),
        at("2027-01-01"),
        at("2027-01-02"),
        at("2027-01-31"),
        at("2027-02-15"),
    ] {
        let te = eval_first(
            &world(vec![t.clone()], w.subscriptions.clone()),
            &policy,
            now,
        );
        announced.extend(te.milestones.iter().map(|m| (m.kind, m.late)));
        t.status = Some(te.status);
    }
    assert_eq!(
        announced,
        vec![
            (MilestoneKind::ExpiringSoon, false),
            (MilestoneKind::ReadOnly, false),
            (MilestoneKind::Suspended, false)
        ]
    );

    // An operator that was down through all three milestones announces each once, marked late.
    let te = eval_first(&w, &policy, at("2027-02-15"));
    let kinds: Vec<_> = te.milestones.iter().map(|m| (m.kind, m.late)).collect();
    assert_eq!(
        kinds,
        vec![
            (MilestoneKind::ExpiringSoon, true),
            (MilestoneKind::ReadOnly, true),
            (MilestoneKind::Suspended, true)
        ]
    );
    assert_eq!(te.status.milestones.len(), 3);
    // Seen for the first time (no status yet), they were all due before anyone looked: recorded
    // `alreadyDue`, to be announced together; only the latest of the service is notified.
    let flags: Vec<_> = te
        .status
        .milestones
        .iter()
        .map(|r| (r.kind.as_ref(), r.already_due, r.event_only))
        .collect();
    assert_eq!(
        flags,
        [
            ("ExpiringSoon", true, true),
            ("ReadOnly", true, true),
            ("Suspended", true, false)
        ]
    );
    // Walking through time, every one came alone and was announced on its own.
    assert!(
        t.status
            .iter()
            .flat_map(|s| &s.milestones)
            .all(|r| !r.already_due && !r.event_only)
    );
}

#[test]
fn milestones_due_at_first_sight_are_summed_up_per_service() {
    let w = world(
        vec![tenant("acme", &[ESG, ETDR], 10)],
        vec![
            subscription("s-esg", "acme", ESG, "2026-01-01", "2026-12-31", 50),
            subscription("s-etdr", "acme", ETDR, "2026-01-01", "2027-02-20", 50),
        ],
    );
    let policy = Policy::default();
    let now = at("2027-02-15");
    let te = eval_first(&w, &policy, now);
    let flags: Vec<_> = te
        .status
        .milestones
        .iter()
        .map(|r| {
            (
                r.kind.as_ref(),
                r.product.as_deref(),
                r.already_due,
                r.event_only,
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("ExpiringSoon", Some(ESG), true, true),
            ("ReadOnly", Some(ESG), true, true),
            ("ExpiringSoon", Some(ETDR), true, false),
            ("Suspended", Some(ESG), true, false),
        ],
        "each service's latest milestone is notified, the add-on's warning too"
    );

    // Once the operator has written the status, later milestones are announced on their own.
    let mut seen = w.tenants[0].clone();
    seen.status = Some(te.status);
    let later = eval_first(
        &world(vec![seen], w.subscriptions.clone()),
        &policy,
        at("2027-02-21"),
    );
    let fresh: Vec<_> = later
        .status
        .milestones
        .iter()
        .filter(|r| r.announced_at == at("2027-02-21"))
        .map(|r| (r.kind.as_ref(), r.already_due, r.event_only))
        .collect();
    assert_eq!(fresh, [("ReadOnly", false, false)]);

    // A single milestone due at first sight is announced as usual.
    let single = world(
        vec![tenant("solo", &[ESG], 10)],
        vec![subscription(
            "s",
            "solo",
            ESG,
            "2026-01-01",
            "2027-02-20",
            50,
        )],
    );
    assert_eq!(
        first_sight_flags(&single, &policy, now),
        [("ExpiringSoon".into(), false, false)]
    );

    // News (a subscription that starts later: missing from now on) seen together with late
    // milestones is in the same group, and notified: the tenant gets one Event.
    let with_news = world(
        vec![tenant("mixed", &[ESG, ETDR], 10)],
        vec![
            subscription("m-esg", "mixed", ESG, "2026-01-01", "2026-12-31", 50),
            subscription("m-etdr", "mixed", ETDR, "2027-03-01", "2028-02-28", 50),
        ],
    );
    assert_eq!(
        first_sight_flags(&with_news, &policy, now),
        [
            ("ExpiringSoon".into(), true, true),
            ("ReadOnly".into(), true, true),
            ("Suspended".into(), true, false),
            ("SubscriptionMissing".into(), true, false),
        ]
    );

    // Only news: each milestone on its own, as for a tenant created moments ago.
    let only_news = world(
        vec![tenant("new", &[ESG, ETDR], 10)],
        vec![subscription(
            "n-etdr",
            "new",
            ETDR,
            "2027-03-01",
            "2028-02-28",
            50,
        )],
    );
    let missing = ("SubscriptionMissing".to_string(), false, false);
    assert_eq!(
        first_sight_flags(&only_news, &policy, now),
        [missing.clone(), missing]
    );
}

/// Each milestone recorded when the tenant of `w` is first seen at `now`: kind, `alreadyDue`,
/// `eventOnly`.
fn first_sight_flags(w: &World, policy: &Policy, now: DateTime<Utc>) -> Vec<(String, bool, bool)> {
    eval_first(w, policy, now)
        .status
        .milestones
        .iter()
        .map(|r| (r.kind.to_string(), r.already_due, r.event_only))
        .collect()
}

#[test]
fn unchanged_inputs_give_an_identical_status() {
    let w = world(
        vec![tenant("acme", &[ESG, ETDR], 10)],
        vec![subscription(
            "s",
            "acme",
            ESG,
            "2026-01-01",
            "2026-12-31",
            50,
        )],
    );
    let policy = Policy::default();
    let mut t = w.tenants[0].clone();
    t.status = Some(eval_first(&w, &policy, at("2026-12-10")).status);
    let again = eval_first(
        &world(vec![t.clone()], w.subscriptions.clone()),
        &policy,
        at("2026-12-10T06:00:00Z"),
    );
    assert_eq!(
        Some(&again.status),
        t.status.as_ref(),
        "no status write while nothing changes"
    );
    assert!(again.milestones.is_empty());
}

#[test]
fn sharing_changes_are_reported_once() {
    let users: TenantUsers = [
        ("a".to_string(), 1),
        ("b".to_string(), 1),
        ("c".to_string(), 1),
    ]
    .into();
    let policy = Policy::default();
    let now = at("2026-06-01");
    let mut sub = shared(
        subscription("s", "a", ESG, "2026-01-01", "2026-12-31", 10),
        &["b"],
    );
    let first = evaluate_subscription(&sub, &users, &policy, now);
    assert!(first.changes.is_empty(), "the first sight is not a change");
    assert_eq!(first.status.shared_with, vec!["b".to_string()]);
    sub.status = Some(first.status);
    sub.spec.shared_with = vec!["c".into()];
    let second = evaluate_subscription(&sub, &users, &policy, now);
    assert_eq!(
        second.changes,
        vec![SubscriptionChange::SharingChanged {
            added: vec!["c".into()],
            removed: vec!["b".into()]
        }]
    );
    sub.status = Some(second.status);
    assert!(
        evaluate_subscription(&sub, &users, &policy, now)
            .changes
            .is_empty()
    );
}

#[test]
fn a_licence_applied_twice_is_flagged_on_both() {
    let a = subscription("esg-a", "acme", ESG, "2026-01-01", "2026-12-31", 50);
    let b = subscription("esg-b", "acme", ESG, "2026-01-01", "2026-12-31", 50);
    let other = subscription("esg-next", "acme", ESG, "2027-01-01", "2027-12-31", 50);
    let w = world(vec![tenant("acme", &[ESG], 10)], vec![a, b, other]);
    let ev = evaluate_world(&w, &Policy::default(), at("2026-06-01"));
    let ready: Vec<(String, String)> = ev
        .subscriptions
        .iter()
        .map(|e| {
            let c = crate::api::condition::find(&e.status.conditions, ConditionType::Ready)
                .expect("Ready");
            (c.reason.to_string(), c.message.clone())
        })
        .collect();
    assert_eq!(ready[0].0, "DuplicateSubscription");
    assert!(ready[0].1.contains("esg-b"), "{}", ready[0].1);
    assert_eq!(ready[1].0, "DuplicateSubscription");
    assert!(ready[1].1.contains("esg-a"));
    assert_eq!(
        ready[2].0, "Evaluated",
        "a renewal with other dates is not a duplicate"
    );
    assert_eq!(
        ev.tenants[0].status.phase,
        Some(T::Active),
        "coverage is unaffected"
    );
}

/// A late renewal: the contract lands on a second tenant with the same administrator. Both are
/// flagged (condition, status list, a milestone each, notified only by the tenant in use), the
/// phase is left alone; after the transfer the hint changes; sharing clears it.
#[test]
fn a_duplicate_tenant_left_by_a_late_renewal_is_pointed_at() {
    let mut used = tenant("soylent", &[ESG], 80);
    if let Some(s) = used.spec.services.first_mut() {
        s.settings.insert("spamThreshold".into(), 5.into());
    }
    let mut unused = tenant("soylent-new", &[], 0);
    unused.spec.admins = used.spec.admins.clone();
    unused.spec.admins[0].email = unused.spec.admins[0].email.to_uppercase();
    let old = subscription("esg-2025", "soylent", ESG, "2025-11-15", "2026-11-14", 100);
    let renewal = subscription(
        "esg-2026",
        "soylent-new",
        ESG,
        "2026-11-15",
        "2027-11-14",
        100,
    );
    let policy = Policy::default();
    let now = at("2026-11-29");
    let w = world(
        vec![used.clone(), unused.clone()],
        vec![old.clone(), renewal.clone()],
    );
    let ev = evaluate_world(&w, &policy, now);
    let (u, n) = (&ev.tenants[0], &ev.tenants[1]);
    assert_eq!(
        u.status.phase,
        Some(T::ReadOnly),
        "the duplicate never changes a phase"
    );
    for e in [u, n] {
        assert_eq!(
            condition(e, ConditionType::PossibleDuplicate),
            (ConditionStatus::True, "SharesAdmins".into())
        );
        assert_eq!(condition(e, ConditionType::Ready).0, ConditionStatus::True);
        let d = &e.status.possible_duplicates;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].tenant_in_use, "soylent");
        assert_eq!(d[0].subscriptions_to_move, ["esg-2026"]);
        assert_eq!(d[0].shared_admins, ["admin@soylent.example"]);
    }
    let dup = |e: &TenantEvaluation| {
        e.milestones
            .iter()
            .find(|m| m.kind == MilestoneKind::PossibleDuplicate)
            .cloned()
            .expect("a PossibleDuplicate milestone")
    };
    let (mu, mn) = (dup(u), dup(n));
    assert_eq!(mu.id, "PossibleDuplicate/soylent-new");
    assert_eq!(mn.id, "PossibleDuplicate/soylent");
    assert!(
        !mu.event_only,
        "notified to the admins of the tenant in use"
    );
    assert!(mn.event_only, "the other tenant only gets the Event");
    assert_eq!(mu.subscription.as_deref(), Some("esg-2026"));
    assert_eq!(mu.peer.as_deref(), Some("soylent-new"));
    let msg = &crate::api::condition::find(&u.status.conditions, ConditionType::PossibleDuplicate)
        .expect("condition")
        .message;
    assert!(
        msg.contains("move subscription esg-2026 to this tenant (spec.tenantRef: soylent), then delete tenant soylent-new once it owns nothing in force"),
        "{msg}"
    );
    // The hint is good until the renewal ends; then nothing is worth moving.
    assert_eq!(u.next_transition.map(|t| t <= at("2027-11-15")), Some(true));

    // Announced once: evaluated again with its own status, nothing new.
    let mut again = w.clone();
    for (t, e) in again.tenants.iter_mut().zip(&ev.tenants) {
        t.status = Some(e.status.clone());
    }
    let ev2 = evaluate_world(&again, &policy, now + sec(60));
    assert!(ev2.tenants.iter().all(|e| e.milestones.is_empty()));

    // The transfer: still a pair (same admin), now the hint is to delete the unused tenant.
    let mut moved = again.clone();
    moved.subscriptions[1].spec.tenant_ref = "soylent".into();
    let ev3 = evaluate_world(&moved, &policy, now + sec(120));
    assert_eq!(ev3.tenants[0].status.phase, Some(T::Active));
    let d = &ev3.tenants[0].status.possible_duplicates;
    assert!(d[0].subscriptions_to_move.is_empty());
    let (_, reason) = condition(&ev3.tenants[0], ConditionType::PossibleDuplicate);
    assert_eq!(reason, "SharesAdmins");

    // The unused tenant deleted: the flag clears.
    let mut alone = moved.clone();
    alone.tenants.truncate(1);
    let ev4 = evaluate_world(&alone, &policy, now + sec(180));
    assert_eq!(
        condition(&ev4.tenants[0], ConditionType::PossibleDuplicate),
        (ConditionStatus::False, "NoDuplicate".into())
    );
    assert!(ev4.tenants[0].status.possible_duplicates.is_empty());

    // Shared on purpose (a merger): not a duplicate, however many admins they share.
    let merged = world(
        vec![used, unused],
        vec![shared(old, &["soylent-new"]), renewal],
    );
    let ev5 = evaluate_world(&merged, &policy, now);
    assert!(
        ev5.tenants
            .iter()
            .all(|e| e.status.possible_duplicates.is_empty())
    );
}

/// Every product the tenant holds a started subscription for, or runs labelled workloads for,
/// is a service, listed in `spec.services` or not: a lapsed add-on warns and stops its
/// workloads; one with workloads but no subscription is missing. A subscription that has not
/// started adds nothing yet.
#[test]
fn products_held_or_run_are_services_whether_listed_or_not() {
    let t = tenant("initrode", &[ESG], 10);
    let subs = [
        subscription("base", "initrode", ESG, "2026-01-01", "2027-12-31", 50),
        subscription("etdr", "initrode", ETDR, "2026-01-01", "2026-06-30", 50),
        subscription("eti-next", "initrode", ETI, "2027-01-01", "2027-12-31", 50),
    ];
    let refs: Vec<&Subscription> = subs.iter().collect();
    let users = TenantUsers::from([("initrode".to_string(), 10)]);
    let policy = Policy::default();
    let eval = |now: &str, workloads: &[String]| {
        let input = TenantInput {
            workload_products: workloads,
            ..TenantInput::new(&t, &refs, &users)
        };
        evaluate_tenant(&input, &policy, at(now))
    };

    // The ETDR subscription ended on 30 Jun: read-only, then suspended, although not listed.
    let e = eval("2026-07-15", &[]);
    let products: Vec<&str> = e
        .status
        .services
        .iter()
        .map(|s| s.product.as_ref())
        .collect();
    assert_eq!(products, [ESG, ETDR], "the ETI renewal has not started");
    assert_eq!(service(&e, ETDR).phase, S::ReadOnly);
    assert_eq!(e.status.phase, Some(T::Warning));
    assert_eq!(
        condition(&e, ConditionType::Warning),
        (ConditionStatus::True, "SubscriptionExpired".into())
    );
    assert!(
        e.milestones
            .iter()
            .any(|m| m.kind == MilestoneKind::ReadOnly && m.product == ETDR)
    );
    assert_eq!(service(&eval("2026-08-01", &[]), ETDR).phase, S::Suspended);

    // Workloads labelled for an add-on nobody bought: missing from first sight.
    let e = eval("2026-05-01", &[ETI.to_string()]);
    let eti = service(&e, ETI);
    assert_eq!(
        (eti.phase, eti.missing_since),
        (S::ReadOnly, Some(at("2026-05-01")))
    );
    assert!(
        e.milestones
            .iter()
            .any(|m| m.kind == MilestoneKind::SubscriptionMissing && m.product == ETI)
    );

    // Once the ETI subscription has started it covers the service.
    let e = eval("2027-02-01", &[ETI.to_string()]);
    assert_eq!(service(&e, ETI).phase, S::Active);
    assert_eq!(service(&e, ETI).subscription.as_deref(), Some("eti-next"));
}

/// However many subscriptions are shared with a tenant, `status.milestones` stays within its
/// schema bound, the base service's lifecycle milestones are among those kept, and feeding the
/// status back announces nothing more (the cap is the same on every evaluation).
#[test]
fn milestones_stay_within_their_bound() {
    let mut subs: Vec<Subscription> = (0..300)
        .map(|i| {
            // Each over its seat limit: one SeatLimitExceeded milestone per subscription.
            shared(
                subscription(
                    &format!("other-{i:03}"),
                    &format!("other-{i:03}"),
                    ETDR,
                    "2026-01-01",
                    "2027-12-31",
                    1,
                ),
                &["acme"],
            )
        })
        .collect();
    subs.push(subscription(
        "acme-esg",
        "acme",
        ESG,
        "2026-01-01",
        "2026-12-31",
        50,
    ));
    let mut tenants = vec![tenant("acme", &[ESG, ETDR], 10)];
    tenants.extend((0..300).map(|i| tenant(&format!("other-{i:03}"), &[ETDR], 5)));
    let policy = Policy::default();
    let now = at("2027-02-15");
    let first = eval_first(&world(tenants.clone(), subs.clone()), &policy, now);
    assert!(
        first.status.milestones.len() <= crate::api::bounds::MAX_MILESTONES,
        "{}",
        first.status.milestones.len()
    );
    assert_eq!(first.milestones.len(), super::tenant::MAX_REACHED);
    let kinds: Vec<_> = first.milestones.iter().map(|m| m.kind).collect();
    for k in [
        MilestoneKind::ExpiringSoon,
        MilestoneKind::ReadOnly,
        MilestoneKind::Suspended,
    ] {
        assert!(kinds.contains(&k), "{k:?} kept");
    }
    tenants[0].status = Some(first.status.clone());
    let again = eval_first(&world(tenants, subs), &policy, now + sec(60));
    assert!(again.milestones.is_empty(), "{:?}", again.milestones.len());
    assert_eq!(again.status.milestones, first.status.milestones);
}

#[test]
fn condition_messages_are_cut_to_their_bound() {
    let mut set = super::conditions::ConditionSet::new(&[], Some(1), at("2027-01-01"));
    set.set(
        ConditionType::Warning,
        true,
        Reason::ExpiringSoon,
        "é".repeat(5000),
    );
    let message = &set.finish()[0].message;
    assert!(message.len() <= crate::api::bounds::MAX_CONDITION_MESSAGE);
    assert!(message.len() > crate::api::bounds::MAX_CONDITION_MESSAGE - 8);
    assert!(message.ends_with('…'));
}

/// Which tenants a subscription names: the one answer the controllers' indexes, their watch
/// mapping and the `evaluate` CLI share.
#[test]
fn a_subscription_names_its_spec_last_seen_and_transfer_tenants() {
    use crate::api::{SubscriptionStatus, Transfer};
    let transfer = |from: &str, to: &str| Transfer {
        from: from.into(),
        to: to.into(),
        at: at("2026-06-01"),
    };
    let base_shared = || {
        shared(
            subscription("s", "acme", ESG, "2026-01-01", "2026-12-31", 10),
            &["beta"],
        )
    };
    let with_status = |status: SubscriptionStatus| {
        let mut s = base_shared();
        s.status = Some(status);
        s
    };
    let rows: Vec<(Subscription, Vec<&str>)> = vec![
        (base_shared(), vec!["acme", "beta"]),
        (
            with_status(SubscriptionStatus {
                tenant: Some("old".into()),
                shared_with: vec!["gone".into()],
                ..Default::default()
            }),
            vec!["acme", "beta", "gone", "old"],
        ),
        (
            with_status(SubscriptionStatus {
                tenant: Some("acme".into()),
                transfers: vec![transfer("first", "second"), transfer("second", "acme")],
                ..Default::default()
            }),
            vec!["acme", "beta", "first", "second"],
        ),
    ];
    for (sub, expected) in rows {
        let mut names: Vec<&str> = subscription::tenants_named(&sub).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names, expected);
        for name in &expected {
            assert!(subscription::names_tenant(&sub, name));
        }
        assert!(!subscription::names_tenant(&sub, "stranger"));
    }
}
