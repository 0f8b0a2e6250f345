//! Table-driven tests of the tenant plan: what the controller is told to do.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::plan::*;
use super::{Policy, TenantInput, TenantUsers, evaluate_subscription, evaluate_tenant};
use crate::api::ConditionType;
use crate::api::labels::FORCE_DELETE_ANNOTATION;
use crate::api::{ConditionStatus, NamespaceName, Subscription, Tenant, TenantPhase, TenantStatus};
use crate::fixtures::{subscription, tenant};
use crate::workloads::plan::Workload;

const ESG: &str = "email-safeguard";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn users(t: &Tenant) -> TenantUsers {
    [(t.metadata.name.clone().unwrap_or_default(), t.spec.users)].into()
}

/// The plan for `t` owning `subs` at `now`, with these workloads and namespaces.
fn plan(
    t: &Tenant,
    subs: &[Subscription],
    workloads: &[Workload],
    namespaces: &ListedNamespaces,
    now: DateTime<Utc>,
) -> TenantPlan {
    let policy = Policy::default();
    let refs: Vec<&Subscription> = subs.iter().collect();
    let users = users(t);
    let eval = evaluate_tenant(&TenantInput::new(t, &refs, &users), &policy, now);
    let cluster = ClusterFacts {
        workloads,
        namespaces,
    };
    plan_tenant(t, eval, &cluster, &policy.catalogue.base, now)
}

fn workload(replicas: Option<i32>, remembered: Option<i32>, phase: &str) -> Workload {
    Workload {
        kind: crate::api::WorkloadKind::Deployment,
        namespace: "acme-mail".into(),
        name: "filter".into(),
        product: None,
        replicas,
        remembered,
        phase_label: Some(phase.into()),
    }
}

fn deleting(mut t: Tenant, forced: bool) -> Tenant {
    let epoch = k8s_openapi::jiff::Timestamp::UNIX_EPOCH;
    t.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(epoch));
    if forced {
        t.metadata.annotations =
            Some([(FORCE_DELETE_ANNOTATION.to_string(), "true".to_string())].into());
    }
    t
}

/// Each workload's desired state follows the tenant's phase, and what it changes is named.
#[test]
fn workloads_follow_the_phase_and_their_changes_are_named() {
    let active = at("2026-06-01T00:00:00Z");
    let suspended = at("2027-03-01T00:00:00Z");
    let sub = subscription("acme-esg", "acme", ESG, "2026-01-01", "2026-12-31", 10);
    let rows: Vec<(DateTime<Utc>, Workload, Option<WorkloadChange>)> = vec![
        // Active and labelled so: nothing to do.
        (active, workload(Some(3), None, "Active"), None),
        // Active, label out of date: relabelled, nothing to announce.
        (
            active,
            workload(Some(3), None, "Suspended"),
            Some(WorkloadChange::None),
        ),
        // Suspension scales to zero, remembering the count.
        (
            suspended,
            workload(Some(3), None, "Active"),
            Some(WorkloadChange::Suspended { was: 3 }),
        ),
        // Scaled up again by someone while suspended: scaled back.
        (
            suspended,
            workload(Some(2), Some(3), "Suspended"),
            Some(WorkloadChange::ScaledBack { was: 2 }),
        ),
        // Renewed (active again): restored to the remembered count.
        (
            active,
            workload(Some(0), Some(3), "Suspended"),
            Some(WorkloadChange::Restored { to: 3 }),
        ),
    ];
    for (now, w, expected) in rows {
        let p = plan(
            &tenant("acme", &[ESG], 1),
            std::slice::from_ref(&sub),
            std::slice::from_ref(&w),
            &ListedNamespaces::default(),
            now,
        );
        assert_eq!(
            p.workloads.first().map(|w| w.change),
            expected,
            "{w:?} at {now}"
        );
    }
}

/// Deleting a tenant that owns a licence in force is refused (with `Ready=False`) unless
/// forced; one with nothing in force goes; nothing is scaled or projected meanwhile.
#[test]
fn deletion_is_refused_while_a_licence_is_in_force_unless_forced() {
    let now = at("2026-06-01T00:00:00Z");
    let in_force = subscription("acme-esg", "acme", ESG, "2026-01-01", "2026-12-31", 10);
    let expired = subscription("acme-old", "acme", ESG, "2024-01-01", "2024-12-31", 10);
    let ns = ListedNamespaces {
        assigned: vec![NamespaceName("acme-mail".into())],
        ..Default::default()
    };
    let w = workload(Some(3), None, "Suspended");
    let rows: Vec<(bool, &Subscription, bool)> = vec![
        // (forced, subscription, refused)
        (false, &in_force, true),
        (true, &in_force, false),
        (false, &expired, false),
    ];
    for (forced, sub, refused) in rows {
        let mut t = deleting(tenant("acme", &[ESG], 1), forced);
        t.spec.workload_namespaces = ns.assigned.clone();
        let p = plan(
            &t,
            std::slice::from_ref(sub),
            std::slice::from_ref(&w),
            &ns,
            now,
        );
        assert!(p.workloads.is_empty());
        assert_eq!(p.settings, Projection::Nothing);
        let ready =
            crate::api::condition::find(&p.evaluation.status.conditions, ConditionType::Ready)
                .expect("Ready");
        match p.deletion.expect("a verdict while deleting") {
            Deletion::Refused {
                message,
                announce,
                recheck_at,
            } => {
                assert!(refused, "{forced} {sub:?}");
                assert!(message.contains("acme-esg (in use until"), "{message}");
                assert!(announce);
                // The next transition (the warning) comes before the licence lapses.
                assert_eq!(recheck_at, p.evaluation.next_transition);
                assert_eq!(
                    (ready.status, &*ready.reason),
                    (ConditionStatus::False, "DeletionBlocked")
                );
            }
            Deletion::Allowed { forced_over } => {
                assert!(!refused, "{forced} {sub:?}");
                let expected: Vec<String> = if forced {
                    vec!["acme-esg".into()]
                } else {
                    Vec::new()
                };
                assert_eq!(forced_over, expected);
                assert_eq!(ready.status, ConditionStatus::True);
            }
        }
    }
}

/// A refusal already written into `Ready` is not announced again, and keeps its transition
/// time.
#[test]
fn a_refusal_already_recorded_is_not_announced_again() {
    let now = at("2026-06-01T00:00:00Z");
    let sub = subscription("acme-esg", "acme", ESG, "2026-01-01", "2026-12-31", 10);
    let t = deleting(tenant("acme", &[ESG], 1), false);
    let first = plan(
        &t,
        std::slice::from_ref(&sub),
        &[],
        &Default::default(),
        now,
    );
    let mut again = t.clone();
    again.status = Some(first.evaluation.status.clone());
    let later = at("2026-06-02T00:00:00Z");
    let second = plan(
        &again,
        std::slice::from_ref(&sub),
        &[],
        &Default::default(),
        later,
    );
    let Some(Deletion::Refused { announce, .. }) = second.deletion else {
        panic!("refused")
    };
    assert!(!announce);
    let ready = |p: &TenantPlan| {
        crate::api::condition::find(&p.evaluation.status.conditions, ConditionType::Ready)
            .map(|c| c.last_transition_time)
    };
    assert_eq!(ready(&second), ready(&first));
}

/// Unassigned namespaces, what the writes did, and what must come of it.
type WriteRow<'a> = (
    &'a [Unassigned],
    WriteOutcomes,
    ProjectionOutcome,
    (ConditionStatus, &'static str),
);

/// The settings to project, and how the outcome of the writes amends `SettingsApplied`.
#[test]
fn settings_are_planned_and_the_writes_outcome_is_recorded() {
    let now = at("2026-06-01T00:00:00Z");
    let sub = subscription("acme-esg", "acme", ESG, "2026-01-01", "2026-12-31", 10);
    let mut t = tenant("acme", &[ESG], 1);
    t.spec.services[0]
        .settings
        .insert("spam".into(), json!("quarantine"));
    t.spec.workload_namespaces = vec![
        NamespaceName("acme-mail".into()),
        NamespaceName("elsewhere".into()),
    ];
    let unassigned = vec![Unassigned {
        name: "elsewhere".into(),
        other: Some("globex".into()),
    }];
    let ns = ListedNamespaces {
        assigned: vec![NamespaceName("acme-mail".into())],
        copies: Vec::new(),
        unassigned: unassigned.clone(),
    };
    let p = plan(&t, std::slice::from_ref(&sub), &[], &ns, now);
    let Projection::Write {
        data, namespaces, ..
    } = &p.settings
    else {
        panic!("settings to write: {:?}", p.settings)
    };
    assert_eq!(data.get(ESG), Some(&json!({"spam": "quarantine"})));
    assert_eq!(namespaces, &ns.assigned);
    assert!(p.evaluation.status.settings_in_effect.is_some());

    let condition = |status: &TenantStatus| {
        crate::api::condition::find(&status.conditions, ConditionType::SettingsApplied)
            .map(|c| (c.status, c.reason.clone()))
    };
    let rows: Vec<WriteRow> = vec![
        (
            &[],
            WriteOutcomes::default(),
            ProjectionOutcome::Done,
            (ConditionStatus::True, "Applied"),
        ),
        (
            &unassigned,
            WriteOutcomes::default(),
            ProjectionOutcome::Done,
            (ConditionStatus::False, "NamespaceNotAssigned"),
        ),
        (
            &[],
            WriteOutcomes {
                not_ours: vec!["acme-mail".into()],
                ..Default::default()
            },
            ProjectionOutcome::Retry,
            (ConditionStatus::False, "ConfigMapNotOwned"),
        ),
        (
            &unassigned,
            WriteOutcomes {
                failures: vec!["namespace acme-mail: not found".into()],
                ..Default::default()
            },
            ProjectionOutcome::Retry,
            (ConditionStatus::False, "ProjectionFailed"),
        ),
    ];
    for (unassigned, outcomes, expected, (status, reason)) in rows {
        let mut written = p.evaluation.status.clone();
        let outcome = settings_written(&mut written, &t, unassigned, &outcomes, now);
        assert_eq!(outcome, expected, "{outcomes:?}");
        assert_eq!(condition(&written), Some((status, reason.into())));
    }
}

/// A tenant with no workload namespaces projects nothing and records nothing about settings.
#[test]
fn no_workload_namespaces_no_projection() {
    let now = at("2026-06-01T00:00:00Z");
    let sub = subscription("acme-esg", "acme", ESG, "2026-01-01", "2026-12-31", 10);
    let t = tenant("acme", &[ESG], 1);
    let p = plan(
        &t,
        std::slice::from_ref(&sub),
        &[],
        &Default::default(),
        now,
    );
    assert_eq!(p.settings, Projection::Nothing);
    assert!(p.deletion.is_none());
    assert_eq!(p.evaluation.status.phase, Some(TenantPhase::Active));
    assert!(
        crate::api::condition::find(
            &p.evaluation.status.conditions,
            ConditionType::SettingsApplied
        )
        .is_none()
    );
}

/// Every condition type the engine writes is one the CRD documents for that kind
/// (`TENANT_CONDITIONS`, `SUBSCRIPTION_CONDITIONS`, which the CRD docs are checked against), and
/// every documented one is written by some world below, except a Tenant's `Stalled`: that one
/// only the lenient reader writes, on an object it can not decode.
#[test]
fn the_engine_writes_exactly_the_documented_conditions() {
    use std::collections::BTreeSet;

    use crate::api::condition::{SUBSCRIPTION_CONDITIONS, TENANT_CONDITIONS};

    let ns = ListedNamespaces {
        assigned: vec![NamespaceName("acme-mail".into())],
        ..Default::default()
    };
    let sub = subscription("acme-esg", "acme", ESG, "2026-01-01", "2026-12-31", 10);
    let few_seats = subscription("acme-few", "acme", ESG, "2026-01-01", "2026-12-31", 1);
    let bad_date = subscription("acme-bad", "acme", ESG, "2026-02-30", "2026-12-31", 10);
    let mut with_settings = tenant("acme", &[ESG], 5);
    with_settings.spec.workload_namespaces = ns.assigned.clone();
    with_settings.spec.services[0]
        .settings
        .insert("spam".into(), json!("quarantine"));
    let worlds: Vec<(Tenant, Vec<Subscription>)> = vec![
        (with_settings.clone(), vec![sub.clone()]),
        (with_settings.clone(), vec![few_seats]),
        (with_settings.clone(), vec![sub.clone(), bad_date]),
        (deleting(with_settings.clone(), false), vec![sub.clone()]),
        (with_settings.clone(), Vec::new()),
    ];
    // Before, during, near the end of, and after the subscription, through its grace period.
    let instants = [
        "2025-12-01T00:00:00Z",
        "2026-06-01T00:00:00Z",
        "2026-12-20T00:00:00Z",
        "2027-01-10T00:00:00Z",
        "2027-06-01T00:00:00Z",
    ];
    let (mut tenant_types, mut subscription_types) = (BTreeSet::new(), BTreeSet::new());
    for (t, subs) in &worlds {
        for now in instants {
            let p = plan(t, subs, &[], &ns, at(now));
            tenant_types.extend(
                p.evaluation
                    .status
                    .conditions
                    .iter()
                    .map(|c| c.type_.to_string()),
            );
            // A tenant's evaluation reads its subscriptions' phases, not their conditions: each
            // subscription's own evaluation writes those.
            for s in subs {
                let e = evaluate_subscription(s, &users(t), &Policy::default(), at(now));
                subscription_types.extend(e.status.conditions.iter().map(|c| c.type_.to_string()));
            }
        }
    }
    let names = |types: &[ConditionType]| -> BTreeSet<String> {
        types.iter().map(|t| t.as_str().to_string()).collect()
    };
    let mut tenant_documented = names(TENANT_CONDITIONS);
    tenant_documented.remove(ConditionType::Stalled.as_str());
    assert_eq!(tenant_types, tenant_documented, "Tenant");
    assert_eq!(
        subscription_types,
        names(SUBSCRIPTION_CONDITIONS),
        "Subscription"
    );
}
