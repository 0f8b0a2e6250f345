//! The operator against a real API server, with compressed time (warning and grace periods of
//! 3 s): every scenario of the licensing policy, with the exact phases, conditions and Events,
//! and transitions observed within a second of the instant they are due.
//!
//! One operator runs in this test process for all scenarios (they use unique names). Events are
//! read from `events.k8s.io/v1`; the test server stores core/v1 Events apart from those, so
//! `kubectl describe` here does not list them (on a real cluster it does).

mod common;

use mailsec_operator::api::ConditionType;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::operator::*;
use common::{cluster, describe, unique_name};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use mailsec_operator::api::{ServicePhase, Subscription, Tenant, TenantPhase};
use mailsec_operator::fixtures::{self, ESG, ETDR, ETI};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn service_phase(t: &Tenant, product: &str) -> Option<ServicePhase> {
    t.status
        .as_ref()?
        .services
        .iter()
        .find(|s| s.product == product)
        .map(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread")]
async fn base_subscription_runs_out_on_time() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("runout");
    create_tenant(&client, &t, &[ESG], 10).await;
    let end = in_secs(5);
    let s = unique_name("runout-esg");
    create_subscription(&client, &s, &t, ESG, end, 50).await;

    wait_phase(&client, &t, TenantPhase::Active, WAIT).await;
    let warn = end - TimeDelta::seconds(PERIOD_SECS);
    let suspend = end + TimeDelta::seconds(PERIOD_SECS);
    assert_on_time(
        "Warning",
        warn,
        wait_phase(&client, &t, TenantPhase::Warning, WAIT).await,
    );
    let tn = tenant(&client, &t).await;
    assert_eq!(
        tenant_condition(&tn, ConditionType::Warning),
        Some((true, "ExpiringSoon".into()))
    );
    assert_eq!(
        tn.status.as_ref().and_then(|s| s.next_transition_at),
        Some(end)
    );

    // kubectl wait, as users run it.
    let kubectl_wait = {
        let t = t.clone();
        tokio::task::spawn_blocking(move || {
            cluster().kubectl(&[
                "wait",
                "--for=condition=ReadOnly",
                &format!("tenant/{t}"),
                "--timeout=20s",
            ])
        })
    };
    assert_on_time(
        "ReadOnly",
        end,
        wait_phase(&client, &t, TenantPhase::ReadOnly, WAIT).await,
    );
    let out = kubectl_wait.await.expect("kubectl wait");
    assert!(
        out.status.success(),
        "kubectl wait --for=condition=ReadOnly: {}",
        describe(&out)
    );
    let tn = tenant(&client, &t).await;
    assert_eq!(
        tenant_condition(&tn, ConditionType::ReadOnly),
        Some((true, "SubscriptionExpired".into()))
    );
    assert_eq!(
        tenant_condition(&tn, ConditionType::Suspended),
        Some((false, "NotSuspended".into()))
    );

    assert_on_time(
        "Suspended",
        suspend,
        wait_phase(&client, &t, TenantPhase::Suspended, WAIT).await,
    );
    let out = cluster().kubectl(&[
        "wait",
        "--for=condition=Suspended",
        &format!("tenant/{t}"),
        "--timeout=5s",
    ]);
    assert!(
        out.status.success(),
        "kubectl wait --for=condition=Suspended: {}",
        describe(&out)
    );
    let tn = tenant(&client, &t).await;
    assert_eq!(
        tenant_condition(&tn, ConditionType::Suspended),
        Some((true, "SubscriptionExpired".into()))
    );
    assert_eq!(
        tenant_condition(&tn, ConditionType::Ready),
        Some((true, "Reconciled".into())),
        "a correctly suspended tenant is Ready"
    );
    assert_eq!(
        tn.status.as_ref().and_then(|s| s.observed_generation),
        tn.metadata.generation
    );
    let sub = subscription(&client, &s).await;
    assert_eq!(
        sub.status.and_then(|s| s.phase),
        Some(mailsec_operator::api::SubscriptionPhase::Expired)
    );

    expect_events(&client, "Tenant", &t, "Suspended", 1).await;
    let events = events_about(&client, "Tenant", &t).await;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        ["ExpiringSoon", "ReadOnly", "Suspended"],
        "{events:#?}"
    );
    let (_, note) = &events[0];
    assert!(
        note.contains(&s) && note.contains("renew"),
        "the note names the subscription and what to do: {note}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_during_grace_and_after_suspension_restores_at_once() {
    shared_operator();
    let client = cluster().client().await;
    for (label, wait_for) in [
        ("grace", TenantPhase::ReadOnly),
        ("susp", TenantPhase::Suspended),
    ] {
        let t = unique_name(&format!("renew-{label}"));
        create_tenant(&client, &t, &[ESG], 10).await;
        subscribe(&client, "old", &t, ESG, 1, 50).await;
        wait_phase(&client, &t, wait_for, WAIT).await;
        let renewed_at = Utc::now();
        subscribe(&client, "new", &t, ESG, 86_400, 50).await;
        let seen = wait_phase(&client, &t, TenantPhase::Active, WAIT).await;
        assert!(
            seen - renewed_at <= TimeDelta::seconds(1),
            "{label}: renewal took {}",
            seen - renewed_at
        );
        let tn = tenant(&client, &t).await;
        assert_eq!(
            tenant_condition(&tn, ConditionType::ReadOnly).map(|c| c.0),
            Some(false)
        );
        assert_eq!(
            tenant_condition(&tn, ConditionType::Suspended).map(|c| c.0),
            Some(false)
        );
        expect_events(&client, "Tenant", &t, "Renewed", 1).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn add_on_lapse_only_restricts_the_add_on() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("addon");
    create_tenant(&client, &t, &[ESG, ETI], 10).await;
    subscribe(&client, "addon-esg", &t, ESG, 86_400, 50).await;
    let end = in_secs(4);
    create_subscription(&client, &unique_name("addon-eti"), &t, ETI, end, 50).await;

    wait_tenant(&client, &t, WAIT, "ETI expiring soon", |tn| {
        service_phase(tn, ETI) == Some(ServicePhase::ExpiringSoon)
    })
    .await;
    let seen = wait_tenant(&client, &t, WAIT, "ETI read-only", |tn| {
        service_phase(tn, ETI) == Some(ServicePhase::ReadOnly)
    })
    .await;
    assert_on_time("add-on read-only", end, seen);
    let tn = tenant(&client, &t).await;
    assert_eq!(
        tn.status.as_ref().and_then(|s| s.phase),
        Some(TenantPhase::Warning)
    );
    assert_eq!(service_phase(&tn, ESG), Some(ServicePhase::Active));
    assert_eq!(
        tenant_condition(&tn, ConditionType::ReadOnly).map(|c| c.0),
        Some(false),
        "the tenant as a whole is not read-only"
    );
    assert_eq!(
        tenant_condition(&tn, ConditionType::Warning),
        Some((true, "SubscriptionExpired".into()))
    );

    let suspend = end + TimeDelta::seconds(PERIOD_SECS);
    let seen = wait_tenant(&client, &t, WAIT, "ETI suspended", |tn| {
        service_phase(tn, ETI) == Some(ServicePhase::Suspended)
    })
    .await;
    assert_on_time("add-on suspended", suspend, seen);
    let tn = tenant(&client, &t).await;
    assert_eq!(
        tn.status.as_ref().and_then(|s| s.phase),
        Some(TenantPhase::Warning)
    );
    assert_eq!(
        tenant_condition(&tn, ConditionType::Suspended).map(|c| c.0),
        Some(false)
    );
    expect_events(&client, "Tenant", &t, "Suspended", 1).await;
    let events = events_about(&client, "Tenant", &t).await;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        ["ExpiringSoon", "ReadOnly", "Suspended"],
        "{events:#?}"
    );
    assert!(events.iter().all(|(_, n)| n.contains(ETI)), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_subscription_freezes_then_suspends_the_service() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("missing");
    create_tenant(&client, &t, &[ESG, ETDR], 10).await;
    subscribe(&client, "missing-esg", &t, ESG, 86_400, 50).await;
    wait_tenant(&client, &t, WAIT, "ETDR missing", |tn| {
        service_phase(tn, ETDR) == Some(ServicePhase::ReadOnly)
            && service_phase(tn, ESG) == Some(ServicePhase::Active)
    })
    .await;
    let tn = tenant(&client, &t).await;
    assert_eq!(
        tenant_condition(&tn, ConditionType::Warning),
        Some((true, "SubscriptionMissing".into()))
    );
    let svc = tn
        .status
        .as_ref()
        .and_then(|s| s.services.iter().find(|s| s.product == ETDR).cloned())
        .expect("ETDR status");
    let since = svc.missing_since.expect("missingSince");
    assert_eq!(
        svc.suspends_at,
        Some(since + TimeDelta::seconds(PERIOD_SECS))
    );
    let seen = wait_tenant(&client, &t, WAIT, "ETDR suspended", |tn| {
        service_phase(tn, ETDR) == Some(ServicePhase::Suspended)
    })
    .await;
    assert_on_time(
        "missing service suspended",
        since + TimeDelta::seconds(PERIOD_SECS),
        seen,
    );
    // The first-seen instant is kept, not moved on every reconcile.
    let tn = tenant(&client, &t).await;
    let svc = tn
        .status
        .as_ref()
        .and_then(|s| s.services.iter().find(|s| s.product == ETDR).cloned())
        .expect("ETDR status");
    assert_eq!(svc.missing_since, Some(since));
    expect_events(&client, "Tenant", &t, "SubscriptionMissing", 1).await;
    expect_events(&client, "Tenant", &t, "Suspended", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn trial_licence_warns() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("trial");
    create_tenant(&client, &t, &[ESG], 10).await;
    let start = rfc3339(Utc::now() - TimeDelta::days(1));
    let sub = fixtures::trial(fixtures::subscription(
        &unique_name("trial-esg"),
        &t,
        ESG,
        &start,
        &rfc3339(in_secs(86_400)),
        25,
    ));
    create(&client, sub).await;
    wait_tenant(&client, &t, WAIT, "trial warning", |tn| {
        tenant_condition(tn, ConditionType::Warning) == Some((true, "TrialLicense".into()))
    })
    .await;
    let tn = tenant(&client, &t).await;
    assert_eq!(
        tn.status.as_ref().and_then(|s| s.phase),
        Some(TenantPhase::Warning)
    );
    expect_events(&client, "Tenant", &t, "TrialLicense", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_moves_coverage_and_is_announced_on_both_tenants() {
    shared_operator();
    let client = cluster().client().await;
    let (from, to) = (unique_name("xfer-old"), unique_name("xfer-new"));
    create_tenant(&client, &from, &[ESG], 10).await;
    create_tenant(&client, &to, &[ESG], 10).await;
    let s = unique_name("xfer-esg");
    create_subscription(&client, &s, &from, ESG, in_secs(86_400), 50).await;
    wait_phase(&client, &from, TenantPhase::Active, WAIT).await;
    wait_phase(&client, &to, TenantPhase::ReadOnly, WAIT).await;

    let subs: Api<Subscription> = Api::all(client.clone());
    let moved_at = Utc::now();
    subs.patch(
        &s,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tenantRef": to}})),
    )
    .await
    .expect("transfer");
    let seen = wait_phase(&client, &to, TenantPhase::Active, WAIT).await;
    assert!(
        seen - moved_at <= TimeDelta::seconds(1),
        "transfer took {}",
        seen - moved_at
    );
    wait_phase(&client, &from, TenantPhase::ReadOnly, WAIT).await;

    let status = subscription(&client, &s).await.status.expect("status");
    assert_eq!(status.tenant.as_deref(), Some(to.as_str()));
    assert_eq!(status.transfers.len(), 1);
    assert_eq!(
        (
            status.transfers[0].from.as_str(),
            status.transfers[0].to.as_str()
        ),
        (from.as_str(), to.as_str())
    );
    expect_events(&client, "Subscription", &s, "Transferred", 1).await;
    expect_events(&client, "Tenant", &from, "SubscriptionTransferredOut", 1).await;
    expect_events(&client, "Tenant", &to, "SubscriptionTransferredIn", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_subscription_over_its_seats_warns_both_tenants() {
    shared_operator();
    let client = cluster().client().await;
    let (a, b) = (unique_name("merge-a"), unique_name("merge-b"));
    create_tenant(&client, &a, &[ESG], 300).await;
    create_tenant(&client, &b, &[ESG], 250).await;
    let s = unique_name("merge-esg");
    let start = rfc3339(Utc::now() - TimeDelta::days(1));
    let sub = fixtures::shared(
        fixtures::subscription(&s, &a, ESG, &start, &rfc3339(in_secs(86_400)), 500),
        &[&b],
    );
    create(&client, sub).await;
    for t in [&a, &b] {
        wait_tenant(&client, t, WAIT, "seat warning", |tn| {
            tenant_condition(tn, ConditionType::Warning) == Some((true, "SeatLimitExceeded".into()))
        })
        .await;
        expect_events(&client, "Tenant", t, "SeatLimitExceeded", 1).await;
    }
    let status = subscription(&client, &s).await.status.expect("status");
    assert_eq!(status.seats_used, Some(550));
    expect_events(&client, "Subscription", &s, "SeatLimitExceeded", 1).await;

    // Fewer users on the other tenant lifts the warning on both.
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .patch(
            &b,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"users": 200}})),
        )
        .await
        .expect("reduce users");
    for t in [&a, &b] {
        wait_phase(&client, t, TenantPhase::Active, WAIT).await;
    }
    assert_eq!(
        subscription(&client, &s)
            .await
            .status
            .and_then(|s| s.seats_used),
        Some(500)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extension_lifts_read_only_and_is_announced() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("ext");
    create_tenant(&client, &t, &[ESG], 10).await;
    let s = unique_name("ext-esg");
    create_subscription(&client, &s, &t, ESG, in_secs(2), 50).await;
    wait_phase(&client, &t, TenantPhase::ReadOnly, WAIT).await;
    let subs: Api<Subscription> = Api::all(client.clone());
    let until_at = in_secs(86_400);
    let until = rfc3339(until_at);
    subs.patch(
        &s,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"extension": {"until": until, "reason": "PO-4711 in progress"}}}),
        ),
    )
    .await
    .expect("extend");
    wait_phase(&client, &t, TenantPhase::Active, WAIT).await;
    expect_events(&client, "Subscription", &s, "Extended", 1).await;
    let events = events_about(&client, "Subscription", &s).await;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "Extended" && n.contains("PO-4711")),
        "{events:#?}"
    );
    // The new end as a customer reads it: the exact instant with its zone (or, at midnight UTC,
    // the end of the day before), never a bare date that reads one day late.
    let human_until = if until_at.timestamp() % 86_400 == 0 {
        format!(
            "the end of {} (UTC)",
            (until_at - TimeDelta::days(1)).format("%-d %b %Y")
        )
    } else if until_at.timestamp() % 60 == 0 {
        until_at.format("%Y-%m-%d %H:%M UTC").to_string()
    } else {
        until_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    };
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "Extended" && n.contains(&format!("until {human_until}"))),
        "the Extended note names the new end as {human_until:?}: {events:#?}"
    );
    expect_events(&client, "Tenant", &t, "SubscriptionExtended", 1).await;
    expect_events(&client, "Tenant", &t, "Renewed", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_guard_holds_a_tenant_that_owns_a_licence_in_force() {
    shared_operator();
    let client = cluster().client().await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let (t, heir) = (unique_name("guard"), unique_name("heir"));
    create_tenant(&client, &t, &[ESG], 10).await;
    create_tenant(&client, &heir, &[ESG], 10).await;
    let s = unique_name("guard-esg");
    create_subscription(&client, &s, &t, ESG, in_secs(86_400), 50).await;
    wait_tenant(&client, &t, WAIT, "finalizer", |tn| {
        tn.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "mailsec.io/licence-guard"))
    })
    .await;

    tenants
        .delete(&t, &DeleteParams::default())
        .await
        .expect("delete");
    wait_tenant(&client, &t, WAIT, "DeletionBlocked", |tn| {
        tenant_condition(tn, ConditionType::Ready) == Some((false, "DeletionBlocked".into()))
    })
    .await;
    let tn = tenant(&client, &t).await;
    let msg = mailsec_operator::api::condition::find(
        &tn.status.as_ref().expect("status").conditions,
        ConditionType::Ready,
    )
    .expect("Ready")
    .message
    .clone();
    assert!(
        msg.contains(&s) && msg.contains("tenantRef") && msg.contains("mailsec.io/force-delete"),
        "{msg}"
    );
    expect_events(&client, "Tenant", &t, "DeletionBlocked", 1).await;

    // Transferring the subscription lets the deletion finish; nothing else is deleted.
    let subs: Api<Subscription> = Api::all(client.clone());
    subs.patch(
        &s,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tenantRef": heir}})),
    )
    .await
    .expect("transfer");
    let gone = common::eventually(WAIT, || {
        (cluster().kubectl(&["get", "tenant", &t]).status.code() == Some(1)).then_some(())
    });
    assert!(
        gone.is_some(),
        "the tenant was not deleted after the transfer"
    );
    assert!(subs.get(&s).await.is_ok(), "the subscription is kept");
    wait_phase(&client, &heir, TenantPhase::Active, WAIT).await;

    // The force annotation deletes a tenant despite its licence.
    let forced = unique_name("forced");
    create_tenant(&client, &forced, &[ESG], 10).await;
    let fs = unique_name("forced-esg");
    create_subscription(&client, &fs, &forced, ESG, in_secs(86_400), 50).await;
    wait_tenant(&client, &forced, WAIT, "finalizer", |tn| {
        tn.metadata.finalizers.is_some()
    })
    .await;
    tenants
        .patch(
            &forced,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mailsec.io/force-delete": "true"}}}),
            ),
        )
        .await
        .expect("annotate");
    tenants
        .delete(&forced, &DeleteParams::default())
        .await
        .expect("delete");
    let gone = common::eventually(WAIT, || {
        (cluster().kubectl(&["get", "tenant", &forced]).status.code() == Some(1)).then_some(())
    });
    assert!(gone.is_some(), "the forced deletion did not finish");
    assert!(subs.get(&fs).await.is_ok(), "the subscription is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_references_become_conditions() {
    shared_operator();
    let client = cluster().client().await;
    let s = unique_name("orphan");
    create_subscription(&client, &s, "no-such-tenant", ESG, in_secs(86_400), 5).await;
    let subs: Api<Subscription> = Api::all(client.clone());
    let cond = common::eventually(WAIT, || {
        let out = cluster().kubectl(&[
            "get",
            "subscription",
            &s,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason}"#,
        ]);
        let reason = String::from_utf8_lossy(&out.stdout).to_string();
        (reason == "TenantNotFound").then_some(reason)
    });
    assert!(
        cond.is_some(),
        "{:#?}",
        subs.get(&s).await.ok().and_then(|s| s.status)
    );
    expect_events(&client, "Subscription", &s, "TenantNotFound", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_licence_applied_twice_is_flagged() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("dup");
    create_tenant(&client, &t, &[ESG], 10).await;
    let end = in_secs(86_400);
    let (a, b) = (unique_name("dup-a"), unique_name("dup-b"));
    let start = rfc3339(Utc::now() - TimeDelta::days(1));
    for name in [&a, &b] {
        create(
            &client,
            fixtures::subscription(name, &t, ESG, &start, &rfc3339(end), 50),
        )
        .await;
    }
    for (name, other) in [(&a, &b), (&b, &a)] {
        let seen = common::eventually(WAIT, || {
            let out = cluster().kubectl(&["get", "subscription", name, "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason} {.status.conditions[?(@.type=="Ready")].message}"#]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.starts_with("DuplicateSubscription").then_some(text)
        });
        let text = seen.unwrap_or_else(|| panic!("{name} is not flagged as a duplicate"));
        assert!(text.contains(other.as_str()), "{text}");
    }
    wait_phase(&client, &t, TenantPhase::Active, WAIT).await;
}
