//! GitOps: status follows the kstatus conventions (checked on the real API server with the
//! operator running), and the Argo CD health checks shipped in
//! charts/mailsec-operator/docs/argocd/ (Lua, run with a real Lua interpreter from the `lupa`
//! wheel) read the example statuses, live objects and edge cases as documented.

mod common;

use std::time::Duration;

use common::operator::*;
use common::tools::{chart_dir, run_python};
use common::{cluster, describe, kubectl, repo_dir, unique_name};
use kube::api::{Api, Patch, PatchParams};
use mailsec_operator::api::{Subscription, Tenant, TenantPhase};
use mailsec_operator::engine::{Policy, evaluate_world};
use mailsec_operator::fixtures::ESG;
use mailsec_operator::manifests::read_paths;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// Argo CD's view of `objects`: (kind/name, status, message).
fn argocd_health(objects: &[Value]) -> Vec<(String, String, String)> {
    let lua_dir = chart_dir().join("docs/argocd");
    let out = run_python(
        "argocd_health.py",
        &[lua_dir.to_str().expect("path")],
        &Value::Array(objects.to_vec()).to_string(),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    results
        .into_iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap_or_default(),
                    r["name"].as_str().unwrap_or_default()
                ),
                r["status"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// kstatus: status.observedGeneration and every condition's observedGeneration equal
/// metadata.generation, Ready is True, and Stalled is not True.
fn kstatus_current(obj: &Value) -> bool {
    let generation = &obj["metadata"]["generation"];
    let status = &obj["status"];
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    status["observedGeneration"] == *generation
        && conditions
            .iter()
            .all(|c| c["observedGeneration"] == *generation)
        && conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
        && !conditions
            .iter()
            .any(|c| c["type"] == "Stalled" && c["status"] == "True")
}

fn get_json(kind: &str, name: &str) -> Value {
    let out = kubectl(&["get", kind, name, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_kstatus_current_after_every_spec_change() {
    let (_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    start_in_process(stop_rx);
    let client = cluster().client().await;
    let t = unique_name("kstatus");
    let s = unique_name("kstatus-esg");
    create_subscription(&client, &s, &t, ESG, in_secs(86_400), 50).await;
    create_tenant(&client, &t, &[ESG], 5).await;
    wait_phase(&client, &t, TenantPhase::Active, WAIT).await;
    let current = |kind: &str, name: &str| {
        common::eventually(WAIT, || {
            let obj = get_json(kind, name);
            kstatus_current(&obj).then_some(obj)
        })
        .unwrap_or_else(|| panic!("{kind}/{name} not current: {:#}", get_json(kind, name)))
    };
    let tenant = current("tenant", &t);
    assert_eq!(tenant["metadata"]["generation"], 1);
    current("subscription", &s);

    // A spec change bumps the generation; the operator catches up, Ready stays True.
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .patch(
            &t,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"users": 7}})),
        )
        .await
        .expect("patch tenant");
    let subs: Api<Subscription> = Api::all(client.clone());
    subs.patch(
        &s,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"seats": 60}})),
    )
    .await
    .expect("patch subscription");
    let tenant = current("tenant", &t);
    assert_eq!(tenant["metadata"]["generation"], 2);
    let sub = current("subscription", &s);
    assert_eq!(sub["metadata"]["generation"], 2);
    assert_eq!(sub["status"]["seatsUsed"], 7);

    // A reference the schema can not check: Ready=False with the reason, still current.
    let orphan = unique_name("kstatus-orphan");
    create_subscription(
        &client,
        &orphan,
        &unique_name("nobody"),
        ESG,
        in_secs(86_400),
        5,
    )
    .await;
    let obj = common::eventually(WAIT, || {
        let obj = get_json("subscription", &orphan);
        (obj["status"]["observedGeneration"] == 1).then_some(obj)
    })
    .expect("orphan evaluated");
    let ready = obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .expect("Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("TenantNotFound"))
    );

    // Argo CD reads the live objects like the documentation says.
    let live = [get_json("tenant", &t), get_json("subscription", &s), obj];
    let health = argocd_health(&live);
    assert_eq!(health[0].1, "Healthy", "{health:?}");
    assert_eq!(health[1].1, "Healthy", "{health:?}");
    assert_eq!(health[2].1, "Degraded", "{health:?}");
    assert!(health[2].2.starts_with("TenantNotFound"), "{health:?}");
    let _ = kubectl(&["delete", "subscription", &orphan, "--wait=false"]);
}

#[test]
fn argocd_health_of_the_example_statuses() {
    // The examples with the status the operator sets on 2026-12-15, as stored objects
    // (generation 1, observed).
    let mut manifests = read_paths(&[repo_dir().join("examples")]).expect("examples");
    for t in &mut manifests.world.tenants {
        t.metadata.generation = Some(1);
    }
    for s in &mut manifests.world.subscriptions {
        s.metadata.generation = Some(1);
    }
    let at = mailsec_operator::cli::evaluate::parse_at("2026-12-15").expect("date");
    let eval = evaluate_world(&manifests.world, &Policy::default(), at);
    let mut objects = Vec::new();
    let mut expected = Vec::new();
    for (t, e) in manifests.world.tenants.iter().zip(&eval.tenants) {
        let mut t = t.clone();
        t.status = Some(e.status.clone());
        let phase = e.status.phase.expect("phase");
        expected.push(match phase {
            TenantPhase::Active | TenantPhase::Warning => "Healthy",
            TenantPhase::ReadOnly | TenantPhase::Suspended => "Degraded",
        });
        objects.push(serde_json::to_value(&t).expect("json"));
    }
    for (s, e) in manifests
        .world
        .subscriptions
        .iter()
        .zip(&eval.subscriptions)
    {
        let mut s = s.clone();
        s.status = Some(e.status.clone());
        // Every example subscription references existing tenants and a known product.
        expected.push("Healthy");
        objects.push(serde_json::to_value(&s).expect("json"));
    }
    let health = argocd_health(&objects);
    let got: Vec<&str> = health.iter().map(|h| h.1.as_str()).collect();
    assert_eq!(got, expected, "{health:#?}");
    let by_name = |n: &str| health.iter().find(|h| h.0 == n).cloned().expect(n);
    assert_eq!(by_name("Tenant/acme").1, "Healthy");
    let globex = by_name("Tenant/globex");
    assert!(globex.2.starts_with("Warning: ExpiringSoon"), "{globex:?}");
    assert!(
        by_name("Tenant/initech").2.starts_with("Read-only"),
        "{health:#?}"
    );
    assert!(
        by_name("Tenant/umbrella").2.starts_with("Suspended"),
        "{health:#?}"
    );
    let expired = by_name("Subscription/soylent-esg-2025");
    assert!(
        expired.2.starts_with("Expired"),
        "an expired, renewed subscription stays Healthy: {expired:?}"
    );
    let shared = by_name("Subscription/wayne-esg-2026");
    assert!(shared.2.contains("SeatLimitExceeded"), "{shared:?}");
}

#[test]
fn argocd_health_edge_cases() {
    let cond =
        |t: &str, s: &str, r: &str| json!({"type": t, "status": s, "reason": r, "message": "m"});
    let tenant = |generation: i64, status: Value| json!({"kind": "Tenant", "metadata": {"name": format!("t{generation}"), "generation": generation}, "status": status});
    let objects = [
        json!({"kind": "Tenant", "metadata": {"name": "new", "generation": 1}}),
        tenant(
            2,
            json!({"observedGeneration": 1, "phase": "Active", "conditions": [cond("Ready", "True", "Reconciled")]}),
        ),
        tenant(
            3,
            json!({"observedGeneration": 3, "phase": "Active", "conditions": [cond("Ready", "False", "DeletionBlocked")]}),
        ),
        tenant(
            4,
            json!({"observedGeneration": 4, "phase": "Suspended", "conditions": [cond("Ready", "True", "Reconciled"), cond("Suspended", "True", "SubscriptionExpired")]}),
        ),
        json!({"kind": "Subscription", "metadata": {"name": "s", "generation": 1}, "status": {"observedGeneration": 1, "phase": "Active", "conditions": [cond("Ready", "False", "InvalidDate"), cond("Stalled", "True", "InvalidDate")]}}),
        json!({"kind": "Subscription", "metadata": {"name": "g", "generation": 1}, "status": {"observedGeneration": 1, "phase": "GracePeriod", "conditions": [cond("Ready", "True", "Reconciled")]}}),
    ];
    let got: Vec<String> = argocd_health(&objects).into_iter().map(|h| h.1).collect();
    assert_eq!(
        got,
        [
            "Progressing",
            "Progressing",
            "Degraded",
            "Degraded",
            "Degraded",
            "Healthy"
        ]
    );
}

#[test]
fn argocd_cm_snippet_matches_the_lua_files() {
    let dir = chart_dir().join("docs/argocd");
    let cm: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("argocd-cm.yaml")).expect("argocd-cm.yaml"),
    )
    .expect("yaml");
    for (key, file) in [
        (
            "resource.customizations.health.mailsec.io_Tenant",
            "tenant.lua",
        ),
        (
            "resource.customizations.health.mailsec.io_Subscription",
            "subscription.lua",
        ),
    ] {
        let lua = std::fs::read_to_string(dir.join(file)).expect("lua");
        assert_eq!(
            cm["data"][key].as_str(),
            Some(lua.as_str()),
            "{key} differs from {file}"
        );
    }
}
