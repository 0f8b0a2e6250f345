//! The operator writes and scales only in namespaces the platform assigned to a tenant (the
//! Namespace labelled `mailsec.io/tenant=<tenant>`), and never takes over an object it did not
//! create, whatever a Tenant editor lists in `spec.workloadNamespaces` or whatever another team
//! labels its workloads with. Against a real API server; the Tenants are created as an
//! impersonated editor (`--as=jane@customer.example --as-group=mailsec:tenant-editors`).

mod common;

use mailsec_operator::api::ConditionType;
use std::time::Duration;

use common::operator::*;
use common::{EDITOR, cluster, describe, unique_name};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use mailsec_operator::api::{Tenant, TenantPhase};
use mailsec_operator::fixtures::ESG;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Creates the Tenant as the editor, listing `namespaces`, with a setting to project.
fn editor_creates_tenant(name: &str, namespaces: &[&str]) {
    let manifest = serde_json::to_value(tenant_with_settings(name, namespaces)).expect("tenant");
    let out = common::kubectl_stdin(
        &[EDITOR[0], EDITOR[1], "create", "-f", "-"],
        &manifest.to_string(),
    );
    assert!(out.status.success(), "{}", describe(&out));
}

async fn settings_configmap(client: &kube::Client, ns: &str, tenant: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&format!("mailsec-settings-{tenant}"))
        .await
        .expect("get configmap")
}

fn settings_message(t: &Tenant) -> String {
    t.status
        .as_ref()
        .and_then(|s| {
            mailsec_operator::api::condition::find(&s.conditions, ConditionType::SettingsApplied)
        })
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editor_listing_kube_system_or_another_teams_namespace_gets_nothing_written_there() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("ns-editor");
    let other_team = unique_name("team-b");
    create_unassigned_namespace(&client, &other_team).await;
    // Another tenant's namespace.
    let neighbour = unique_name("ns-neighbour");
    create_namespace(&client, &neighbour, "someone-else").await;
    subscribe(&client, "ns-editor-esg", &t, ESG, 86_400, 50).await;
    editor_creates_tenant(&t, &["kube-system", &other_team, &neighbour]);

    let seen = wait_tenant(&client, &t, WAIT, "NamespaceNotAssigned", |tn| {
        tenant_condition(tn, ConditionType::SettingsApplied)
            == Some((false, "NamespaceNotAssigned".into()))
    })
    .await;
    let tn = tenant(&client, &t).await;
    let message = settings_message(&tn);
    for ns in ["kube-system", other_team.as_str()] {
        assert!(
            message.contains(&format!(
                "kubectl label namespace {ns} mailsec.io/tenant={t};"
            )),
            "the condition says how to assign {ns}: {message}"
        );
    }
    assert!(
        message.contains(&format!("{neighbour} (assigned to tenant someone-else)"))
            && message.contains(&format!(
                "kubectl label namespace {neighbour} mailsec.io/tenant={t} --overwrite"
            )),
        "the condition names the tenant a namespace is assigned to: {message}"
    );
    assert_eq!(
        tn.status.as_ref().and_then(|s| s.phase),
        Some(TenantPhase::Active),
        "the tenant is served"
    );
    // Some time for a (wrong) write to land, then: nothing in either namespace.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = seen;
    for ns in ["kube-system", other_team.as_str(), neighbour.as_str()] {
        assert!(
            settings_configmap(&client, ns, &t).await.is_none(),
            "nothing written into {ns}"
        );
    }

    // The platform assigns the other team's namespace to the tenant: the settings follow (the
    // namespace's label change is watched), kube-system stays untouched and reported.
    let out = cluster().kubectl(&[
        "label",
        "namespace",
        &other_team,
        &format!("mailsec.io/tenant={t}"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let written = common::eventually_async(WAIT, || async {
        settings_configmap(&client, &other_team, &t).await
    })
    .await;
    assert!(
        written.is_some(),
        "the ConfigMap is written once the namespace is assigned"
    );
    let tn = tenant(&client, &t).await;
    let message = settings_message(&tn);
    assert!(
        message.contains("kube-system") && !message.contains(&other_team),
        "{message}"
    );
    assert!(
        settings_configmap(&client, "kube-system", &t)
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_teams_deployment_labelled_with_the_tenant_name_is_never_scaled() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("ns-victim");
    let own = unique_name("ns-own");
    let other_team = unique_name("team-c");
    create_namespace(&client, &own, &t).await;
    create_unassigned_namespace(&client, &other_team).await;
    // The other team's Deployment carries the tenant's name (by accident or planted by whoever
    // chose the tenant name); the tenant's own one is in its assigned namespace.
    kubectl_apply(&deployment_manifest(&other_team, "payments", &t, None, 2));
    kubectl_apply(&deployment_manifest(&own, "filter", &t, None, 3));
    subscribe(&client, "ns-victim-esg", &t, ESG, -86_400, 50).await;
    editor_creates_tenant(&t, &[&own]);

    wait_phase(&client, &t, TenantPhase::Suspended, WAIT).await;
    // The tenant's own workload is scaled down: the reconcile ran.
    wait_replicas(&client, &own, "filter", 0, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        deployment_state(&client, &other_team, "payments").await,
        (Some(2), None, None),
        "the other team's Deployment is left as it was"
    );
    // A Warning Event on that Deployment says why it is ignored.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &other_team);
    let warned = common::eventually_async(WAIT, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("NamespaceNotAssigned")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("payments")
            })
    })
    .await;
    let note = warned.and_then(|e| e.note).unwrap_or_default();
    assert!(note.contains("not assigned"), "a Warning Event: {note:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_of_that_name_the_operator_did_not_create_is_left_alone() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("ns-squat");
    let ns = unique_name("ns-squat");
    create_namespace(&client, &ns, &t).await;
    let name = format!("mailsec-settings-{t}");
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "theirs"}},
        "data": {"email-safeguard.json": "{\"mine\": true}", "other": "kept"},
    }))
    .expect("configmap");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &theirs)
        .await
        .expect("create their ConfigMap");
    subscribe(&client, "ns-squat-esg", &t, ESG, 86_400, 50).await;
    editor_creates_tenant(&t, &[&ns]);

    wait_tenant(&client, &t, WAIT, "ConfigMapNotOwned", |tn| {
        tenant_condition(tn, ConditionType::SettingsApplied)
            == Some((false, "ConfigMapNotOwned".into()))
    })
    .await;
    let message = settings_message(&tenant(&client, &t).await);
    assert!(
        message.contains(&name) && message.contains(&ns),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cm = cms.get(&name).await.expect("their ConfigMap");
    assert_eq!(cm.data, theirs.data, "their data is untouched");
    assert_eq!(cm.metadata.labels, theirs.metadata.labels, "their labels");
    assert!(
        cm.metadata.owner_references.unwrap_or_default().is_empty(),
        "not adopted by the Tenant"
    );
    let managers: Vec<String> = cm
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        !managers.iter().any(|m| m == "mailsec-operator"),
        "no field of theirs taken over: {managers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_taken_from_a_tenant_is_reported_at_once() {
    shared_operator();
    let client = cluster().client().await;
    let t = unique_name("ns-moved");
    let ns = unique_name("ns-moved");
    create_namespace(&client, &ns, &t).await;
    subscribe(&client, "ns-moved-esg", &t, ESG, 86_400, 50).await;
    editor_creates_tenant(&t, &[&ns]);
    wait_tenant(&client, &t, WAIT, "Applied", |tn| {
        tenant_condition(tn, ConditionType::SettingsApplied) == Some((true, "Applied".into()))
    })
    .await;

    // The platform gives the namespace to another tenant: this one is told (its condition
    // names the new owner) without waiting for a periodic reconcile.
    let label = |value: &str| {
        let out = cluster().kubectl(&[
            "label",
            "namespace",
            &ns,
            "--overwrite",
            &format!("mailsec.io/tenant{value}"),
        ]);
        assert!(out.status.success(), "{}", describe(&out));
    };
    label("=someone-else");
    wait_tenant(&client, &t, WAIT, "moved to someone-else", |tn| {
        tenant_condition(tn, ConditionType::SettingsApplied)
            == Some((false, "NamespaceNotAssigned".into()))
            && settings_message(tn).contains("(assigned to tenant someone-else)")
    })
    .await;
    // Then, once the tenant is at rest, unassigned altogether (the namespace leaves the
    // operator's watch).
    tokio::time::sleep(Duration::from_secs(2)).await;
    label("-");
    wait_tenant(&client, &t, WAIT, "unassigned", |tn| {
        tenant_condition(tn, ConditionType::SettingsApplied)
            == Some((false, "NamespaceNotAssigned".into()))
            && !settings_message(tn).contains("someone-else")
    })
    .await;
}
