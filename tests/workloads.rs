//! Effects on the tenant's filtering workloads and settings, against a real API server with
//! compressed time (W = G = 3 s): scale to zero at suspension, exact restore on renewal, add-on
//! workloads alone, workloads created during suspension, GitOps re-applies, removed labels, the
//! settings ConfigMap frozen while read-only — and nothing ever deleted.
//!
//! The read-only admission policy is NOT installed here (tests/admission.rs has it), so these
//! tests can show the controller's own second line of defence for settings.

mod common;

use mailsec_operator::api::ConditionType;
use std::time::Duration;

use common::operator::*;
use common::{cluster, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mailsec_operator::api::{Tenant, TenantPhase};
use mailsec_operator::fixtures::{ESG, ETI};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn count_objects(client: &kube::Client, ns: &str) -> (usize, usize) {
    let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let c: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    (
        d.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        c.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn suspension_scales_to_zero_and_renewal_restores_the_exact_count() {
    shared_operator();
    let client = cluster().client().await;
    let ns = unique_name("mail");
    let t = unique_name("scale");
    create_namespace(&client, &ns, &t).await;
    kubectl_apply(&deployment_manifest(&ns, "filter", &t, None, 3));
    kubectl_apply(&deployment_manifest(&ns, "isolation", &t, Some(ETI), 2));
    subscribe(&client, "scale-esg", &t, ESG, 1, 50).await;
    subscribe(&client, "scale-eti", &t, ETI, 86_400, 50).await;
    create_tenant(&client, &t, &[ESG, ETI], 10).await;

    wait_replicas(&client, &ns, "filter", 3, WAIT).await;
    let suspend = wait_phase(&client, &t, TenantPhase::Suspended, WAIT).await;
    let (replicas, remembered, phase_label) = wait_replicas(&client, &ns, "filter", 0, WAIT).await;
    assert!(
        chrono::Utc::now() - suspend < chrono::TimeDelta::seconds(2),
        "scaled down promptly"
    );
    assert_eq!(
        (replicas, remembered.as_deref(), phase_label.as_deref()),
        (Some(0), Some("3"), Some("Suspended"))
    );
    // The whole tenant is suspended (base lapsed): the add-on's workload stops too.
    let (_, remembered, _) = wait_replicas(&client, &ns, "isolation", 0, WAIT).await;
    assert_eq!(remembered.as_deref(), Some("2"));
    expect_events(&client, "Tenant", &t, "WorkloadsSuspended", 1).await;
    let events = events_about(&client, "Tenant", &t).await;
    assert!(
        events.iter().any(|(r, n)| r == "WorkloadsSuspended"
            && n.contains(&format!("{ns}/filter"))
            && n.contains("was 3")),
        "{events:#?}"
    );

    // Renewal: back to exactly 3 and 2, annotations gone.
    subscribe(&client, "scale-renew", &t, ESG, 86_400, 50).await;
    let (replicas, remembered, phase_label) = wait_replicas(&client, &ns, "filter", 3, WAIT).await;
    assert_eq!(
        (replicas, remembered, phase_label.as_deref()),
        (Some(3), None, Some("Active"))
    );
    let (_, remembered, _) = wait_replicas(&client, &ns, "isolation", 2, WAIT).await;
    assert_eq!(remembered, None);
    expect_events(&client, "Tenant", &t, "WorkloadsRestored", 1).await;
    assert_eq!(count_objects(&client, &ns).await.0, 2, "nothing deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lapsed_add_on_stops() {
    shared_operator();
    let client = cluster().client().await;
    let ns = unique_name("mail");
    let t = unique_name("addon-wl");
    create_namespace(&client, &ns, &t).await;
    kubectl_apply(&deployment_manifest(&ns, "filter", &t, None, 2));
    kubectl_apply(&deployment_manifest(&ns, "isolation", &t, Some(ETI), 4));
    subscribe(&client, "addon-wl-esg", &t, ESG, 86_400, 50).await;
    subscribe(&client, "addon-wl-eti", &t, ETI, 1, 50).await;
    create_tenant(&client, &t, &[ESG, ETI], 10).await;
    let (_, remembered, phase) = wait_replicas(&client, &ns, "isolation", 0, WAIT).await;
    assert_eq!(
        (remembered.as_deref(), phase.as_deref()),
        (Some("4"), Some("Suspended"))
    );
    let (replicas, remembered, phase) = deployment_state(&client, &ns, "filter").await;
    assert_eq!(
        (replicas, remembered, phase.as_deref()),
        (Some(2), None, Some("Active")),
        "the base service keeps running"
    );
    assert_eq!(
        tenant(&client, &t).await.status.and_then(|s| s.phase),
        Some(TenantPhase::Warning)
    );
}

/// Every product the tenant holds a subscription for, or runs labelled workloads for, is one of
/// its services, listed in `spec.services` or not: an unlisted add-on whose subscription lapsed
/// is warned about and its workloads stop after the grace period; so do the workloads of a
/// product nobody bought.
#[tokio::test(flavor = "multi_thread")]
async fn an_unlisted_add_on_is_enforced_like_a_listed_one() {
    shared_operator();
    let client = cluster().client().await;
    let ns = unique_name("mail");
    let t = unique_name("unlisted");
    create_namespace(&client, &ns, &t).await;
    kubectl_apply(&deployment_manifest(&ns, "filter", &t, None, 2));
    kubectl_apply(&deployment_manifest(&ns, "isolation", &t, Some(ETI), 3));
    kubectl_apply(&deployment_manifest(
        &ns,
        "response",
        &t,
        Some("email-threat-detection-response"),
        1,
    ));
    subscribe(&client, "unlisted-esg", &t, ESG, 86_400, 50).await;
    subscribe(&client, "unlisted-eti", &t, ETI, 1, 50).await;
    // Only the base product is listed.
    create_tenant(&client, &t, &[ESG], 10).await;
    let (_, remembered, _) = wait_replicas(&client, &ns, "isolation", 0, WAIT).await;
    assert_eq!(remembered.as_deref(), Some("3"));
    let (_, remembered, _) = wait_replicas(&client, &ns, "response", 0, WAIT).await;
    assert_eq!(remembered.as_deref(), Some("1"), "no subscription at all");
    let (replicas, _, phase) = deployment_state(&client, &ns, "filter").await;
    assert_eq!((replicas, phase.as_deref()), (Some(2), Some("Active")));
    let st = tenant(&client, &t).await.status.expect("status");
    assert_eq!(st.phase, Some(TenantPhase::Warning));
    let products: Vec<&str> = st.services.iter().map(|s| s.product.as_ref()).collect();
    assert_eq!(
        products,
        [ESG, "email-threat-detection-response", ETI],
        "the unlisted products are services"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_created_during_suspension_is_suspended_and_reapplies_are_put_back() {
    shared_operator();
    let client = cluster().client().await;
    let ns = unique_name("mail");
    let t = unique_name("late-wl");
    create_namespace(&client, &ns, &t).await;
    subscribe(&client, "late-wl-esg", &t, ESG, -86_400, 50).await;
    create_tenant(&client, &t, &[ESG], 10).await;
    wait_phase(&client, &t, TenantPhase::Suspended, WAIT).await;

    let manifest = deployment_manifest(&ns, "filter", &t, None, 5);
    kubectl_apply(&manifest);
    let (_, remembered, _) = wait_replicas(&client, &ns, "filter", 0, WAIT).await;
    assert_eq!(remembered.as_deref(), Some("5"));

    // A GitOps tool (another field manager) re-applies the original manifest: the operator
    // puts the workload back to zero and keeps the count to restore.
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubectl_apply(&manifest);
    let reapplied = deployment_state(&client, &ns, "filter").await;
    let (_, remembered, _) = wait_replicas(&client, &ns, "filter", 0, WAIT).await;
    assert_eq!(
        remembered.as_deref(),
        Some("5"),
        "re-applied state was {reapplied:?}"
    );
    // Server-side apply by another manager, forcing conflicts (as Argo CD's SSA sync can).
    let ssa = PatchParams::apply("argocd-controller").force();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    api.patch("filter", &ssa, &Patch::Apply(&manifest))
        .await
        .expect("ssa re-apply");
    let (_, remembered, _) = wait_replicas(&client, &ns, "filter", 0, WAIT).await;
    assert_eq!(remembered.as_deref(), Some("5"));
    let scaled_back = common::eventually_async(WAIT, || async {
        events_about(&client, "Tenant", &t)
            .await
            .iter()
            .any(|(r, _)| r == "WorkloadsScaledBack")
            .then_some(())
    })
    .await;
    assert!(scaled_back.is_some(), "a WorkloadsScaledBack Event");

    // Renewal restores the count remembered at the first suspension.
    subscribe(&client, "late-wl-new", &t, ESG, 86_400, 50).await;
    wait_replicas(&client, &ns, "filter", 5, WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_the_tenant_label_hands_the_workload_back() {
    shared_operator();
    let client = cluster().client().await;
    let ns = unique_name("mail");
    let t = unique_name("unlabel");
    create_namespace(&client, &ns, &t).await;
    subscribe(&client, "unlabel-esg", &t, ESG, -86_400, 50).await;
    create_tenant(&client, &t, &[ESG], 10).await;
    kubectl_apply(&deployment_manifest(&ns, "filter", &t, None, 3));
    wait_replicas(&client, &ns, "filter", 0, WAIT).await;
    let out = cluster().kubectl(&[
        "label",
        "deployment",
        "filter",
        "-n",
        &ns,
        "mailsec.io/tenant-",
    ]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let (_, remembered, phase) = wait_replicas(&client, &ns, "filter", 3, WAIT).await;
    assert_eq!(
        (remembered, phase),
        (None, None),
        "the operator's annotation and label are gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_are_projected_and_frozen_while_read_only() {
    shared_operator();
    let client = cluster().client().await;
    let ns = unique_name("mail");
    let t = unique_name("settings");
    create_namespace(&client, &ns, &t).await;
    let s = unique_name("settings-esg");
    create_subscription(&client, &s, &t, ESG, in_secs(2), 50).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .create(&Default::default(), &tenant_with_settings(&t, &[&ns]))
        .await
        .expect("create tenant");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm_name = format!("mailsec-settings-{t}");
    let read = || async {
        cms.get_opt(&cm_name)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data)
            .and_then(|d| d.get("email-safeguard.json").cloned())
    };
    let text = common::eventually_async(WAIT, || async { read().await })
        .await
        .expect("the ConfigMap is written");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).expect("json"),
        json!({"spamThreshold": 5})
    );
    let cm = cms.get(&cm_name).await.expect("cm");
    let owner = cm.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| (o.kind.as_str(), o.name.as_str())),
        Some(("Tenant", t.as_str())),
        "owned by the Tenant"
    );

    // Read-only: the change is held back, the applied generation lags, a condition says why.
    wait_phase(&client, &t, TenantPhase::ReadOnly, WAIT).await;
    tenants
        .patch(
            &t,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"services": [{"product": ESG, "settings": {"spamThreshold": 9}}]}}),
            ),
        )
        .await
        .expect("settings change (no admission policy in this test binary)");
    wait_tenant(&client, &t, WAIT, "SettingsFrozen", |tn| {
        tenant_condition(tn, ConditionType::SettingsApplied)
            == Some((false, "SettingsFrozen".into()))
    })
    .await;
    let st = tenant(&client, &t).await;
    let status = st.status.expect("status");
    assert!(
        status.settings_applied_generation < st.metadata.generation,
        "applied generation lags: {status:?}"
    );
    let text = read().await.expect("cm");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).expect("json"),
        json!({"spamThreshold": 5}),
        "frozen"
    );
    // Whoever may edit the ConfigMap can not unfreeze the settings either: the operator keeps
    // the settings in effect in the status (operator-only) and puts the copy back.
    assert_eq!(
        status.settings_in_effect.as_deref(),
        Some(r#"{"email-safeguard":{"spamThreshold":5}}"#)
    );
    cms.patch(
        &cm_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"email-safeguard.json": "{\"spamThreshold\": 1}"}})),
    )
    .await
    .expect("edit the ConfigMap by hand");
    let restored = common::eventually_async(WAIT, || async {
        read().await.filter(|t| {
            serde_json::from_str::<serde_json::Value>(t).ok() == Some(json!({"spamThreshold": 5}))
        })
    })
    .await;
    assert!(restored.is_some(), "the frozen settings are put back");

    // Renewal applies the change.
    subscribe(&client, "settings-renew", &t, ESG, 86_400, 50).await;
    let applied = common::eventually_async(WAIT, || async {
        read().await.filter(|t| {
            serde_json::from_str::<serde_json::Value>(t).ok() == Some(json!({"spamThreshold": 9}))
        })
    })
    .await;
    assert!(
        applied.is_some(),
        "the change reached the ConfigMap after renewal"
    );
    wait_tenant(&client, &t, WAIT, "SettingsApplied", |tn| {
        tenant_condition(tn, ConditionType::SettingsApplied) == Some((true, "Applied".into()))
            && tn
                .status
                .as_ref()
                .and_then(|s| s.settings_applied_generation)
                == tn.metadata.generation
    })
    .await;
    assert_eq!(
        count_objects(&client, &ns).await.1,
        1,
        "one ConfigMap, nothing deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_workload_namespace_is_a_condition_not_a_stuck_tenant() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("nons");
    subscribe(&client, "nons-esg", &t, ESG, 86_400, 50).await;
    let tn = tenant_in(&t, &[&unique_name("absent")]);
    Api::<Tenant>::all(client.clone())
        .create(&Default::default(), &tn)
        .await
        .expect("create");
    // A namespace that does not exist is not assigned to the tenant either.
    wait_tenant(&client, &t, WAIT, "NamespaceNotAssigned", |tn| {
        tn.status.as_ref().and_then(|s| s.phase) == Some(TenantPhase::Active)
            && tenant_condition(tn, ConditionType::SettingsApplied)
                == Some((false, "NamespaceNotAssigned".into()))
    })
    .await;
}
