//! The chart's RBAC is exactly what the operator calls.
//!
//! The operator runs in this process (`cli::run::serve`, the code path of `mailsec-operator run`,
//! with leader election on) with a client that records every request it sends as
//! (verb, API group, resource/subresource, namespace), through every code path that talks to
//! the API server: watches, finalizer, status writes, Events created and then patched as a
//! series, the deletion guard, the leader Lease (created, renewed, released at shutdown). Each
//! recorded request must be allowed by the ClusterRole or the lease Role that the chart renders
//! (namespaced ones only in their namespace), and each verb of each rule must have been used.
//!
//! The test API server does not enforce RBAC (AlwaysAllow), so it could not show a forbidden
//! request by itself: this test is what checks the rules.

mod common;

use mailsec_operator::api::ConditionType;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::operator::*;
use common::tools::{find, objects, render};
use common::{cluster, describe, kubectl, unique_name};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::client::ClientBuilder;
use mailsec_operator::api::{Subscription, Tenant, TenantPhase};
use mailsec_operator::cli::run::{Operator, serve};
use mailsec_operator::controller::Settings;
use mailsec_operator::controller::api_counter::{ApiCounters, ApiRequest, CountingLayer};
use mailsec_operator::controller::leader::{LeaderElection, identity};
use mailsec_operator::fixtures::ESG;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// One RBAC rule, flattened: (group, resource with subresource, verb).
type Grant = (String, String, String);

fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        for g in strings("apiGroups") {
            for r in strings("resources") {
                for v in strings("verbs") {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

fn grant_of(req: &ApiRequest) -> Grant {
    let resource = match &req.subresource {
        Some(sub) => format!("{}/{sub}", req.resource),
        None => req.resource.clone(),
    };
    (req.group.clone(), resource, req.verb.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_the_operator_sends_is_granted_by_the_chart_and_every_grant_is_used() {
    let client = cluster().client().await;
    let ns = unique_name("rbac");
    let out = kubectl(&["create", "namespace", &ns]);
    assert!(out.status.success(), "{}", describe(&out));
    let lease_name = unique_name("lease");

    // The operator, with a recording client, leader election in `ns` like the chart sets it up.
    let counters = Arc::new(ApiCounters::recording());
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cluster().kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let recording = ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&CountingLayer {
            counters: counters.clone(),
        })
        .build();
    let operator = Operator {
        settings: Settings {
            policy: policy(),
            concurrency: 4,
            instance: Some("rbac-test".into()),
            notifier: None,
            clock: Default::default(),
            deletion_guard: Default::default(),
        },
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        leader_election: Some(LeaderElection {
            lease_name: lease_name.clone(),
            lease_namespace: ns.clone(),
            identity: identity(Some("rbac-test")),
            lease_duration: Duration::from_secs(4),
        }),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(serve(recording, counters.clone(), operator, async move {
        let _ = stop_rx.await;
    }));

    // Every path: finalizer, status, milestone Events, transfers (the second Transferred Event
    // of the same subscription is a patch of the first: an Event series), deletion guard.
    let (a, b) = (unique_name("rbac-a"), unique_name("rbac-b"));
    let sub = unique_name("rbac-esg");
    create_tenant(&client, &a, &[ESG], 5).await;
    create_tenant(&client, &b, &[ESG], 5).await;
    create_subscription(&client, &sub, &a, ESG, in_secs(2), 50).await;
    wait_phase(&client, &a, TenantPhase::Warning, WAIT).await;
    let subs: Api<Subscription> = Api::all(client.clone());
    for owner in [&b, &a, &b] {
        subs.patch(
            &sub,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tenantRef": owner}})),
        )
        .await
        .expect("transfer");
        // Each transfer processed on its own (status.tenant is the owner last seen).
        let seen = common::eventually(WAIT, || {
            let out = kubectl(&[
                "get",
                "subscription",
                &sub,
                "-o",
                "jsonpath={.status.tenant}",
            ]);
            (String::from_utf8_lossy(&out.stdout) == owner.as_str()).then_some(())
        });
        assert!(seen.is_some(), "transfer of {sub} to {owner} processed");
    }
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&b, &DeleteParams::default())
        .await
        .expect("delete b");
    wait_tenant(&client, &b, WAIT, "DeletionBlocked", |t| {
        tenant_condition(t, ConditionType::Ready)
            .is_some_and(|(ok, reason)| !ok && reason == "DeletionBlocked")
    })
    .await;
    tenants
        .patch(
            &b,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mailsec.io/force-delete": "true"}}}),
            ),
        )
        .await
        .expect("force");
    let gone = common::eventually(WAIT, || {
        let out = kubectl(&["get", "tenant", &b, "--ignore-not-found", "-o", "name"]);
        out.stdout.is_empty().then_some(())
    });
    assert!(gone.is_some(), "tenant {b} deleted once forced");

    // Workloads and settings, in namespaces assigned to the tenant (the Namespaces are watched):
    // a suspended tenant's Deployment and StatefulSet scaled down, its settings ConfigMap
    // created, a Deployment whose label is removed handed back (a get, then a patch), then a
    // renewal restoring the StatefulSet, then a settings change (the ConfigMap patched).
    let wns = unique_name("rbac-wl");
    let c = unique_name("rbac-c");
    create_namespace(&client, &wns, &c).await;
    // A second assigned namespace already holds a ConfigMap of the settings' name that the
    // operator did not create: its create is refused, it reads it (get) and leaves it alone.
    let squatted = unique_name("rbac-sq");
    create_namespace(&client, &squatted, &c).await;
    kubectl_apply(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("mailsec-settings-{c}"), "namespace": squatted},
        "data": {"theirs": "yes"},
    }));
    subscribe(&client, "rbac-c-old", &c, ESG, -3_600, 50).await;
    let mut tc = mailsec_operator::fixtures::tenant(&c, &[ESG], 5);
    tc.metadata.generation = None;
    tc.spec.workload_namespaces = vec![wns.as_str().into(), squatted.as_str().into()];
    tenants
        .create(&Default::default(), &tc)
        .await
        .expect("create c");
    kubectl_apply(&deployment_manifest(&wns, "filter", &c, None, 2));
    kubectl_apply(&deployment_manifest(&wns, "filter2", &c, None, 3));
    let mut sts = deployment_manifest(&wns, "archive", &c, None, 1);
    sts["kind"] = json!("StatefulSet");
    sts["spec"]["serviceName"] = json!("archive");
    kubectl_apply(&sts);
    let replicas = |kind: &str, name: &str| {
        let out = kubectl(&[
            "get",
            kind,
            name,
            "-n",
            &wns,
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_replicas(&client, &wns, "filter", 0, WAIT).await;
    wait_replicas(&client, &wns, "filter2", 0, WAIT).await;
    let down = common::eventually(WAIT, || {
        (replicas("statefulset", "archive") == "0").then_some(())
    });
    assert!(down.is_some(), "the StatefulSet is scaled down");
    for kind in ["deployment", "statefulset"] {
        let name = if kind == "deployment" {
            "filter"
        } else {
            "archive"
        };
        let out = kubectl(&["label", kind, name, "-n", &wns, "mailsec.io/tenant-"]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    wait_replicas(&client, &wns, "filter", 2, WAIT).await;
    let back = common::eventually(WAIT, || {
        (replicas("statefulset", "archive") == "1").then_some(())
    });
    assert!(back.is_some(), "the unlabelled StatefulSet is handed back");
    subscribe(&client, "rbac-c-new", &c, ESG, 86_400, 50).await;
    wait_phase(&client, &c, TenantPhase::Active, WAIT).await;
    wait_replicas(&client, &wns, "filter2", 3, WAIT).await;
    // A settings change: the operator's own ConfigMap is updated by server-side apply (patch).
    tenants
        .patch(
            &c,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"services": [{"product": ESG, "settings": {"spamThreshold": 7}}]}}),
            ),
        )
        .await
        .expect("settings change");
    let updated = common::eventually(WAIT, || {
        let out = kubectl(&[
            "get",
            "configmap",
            &format!("mailsec-settings-{c}"),
            "-n",
            &wns,
            "-o",
            "jsonpath={.data.email-safeguard\\.json}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .contains("7")
            .then_some(())
    });
    assert!(updated.is_some(), "the settings ConfigMap is updated");

    // Wait for an Event series (a patch of an Event), then a lease renewal, then stop: the
    // shutdown releases the Lease.
    let events_patched = common::eventually(WAIT, || {
        counters
            .recorded()
            .keys()
            .any(|r| r.resource == "events" && r.verb == "patch")
            .then_some(())
    });
    assert!(events_patched.is_some(), "{:#?}", counters.recorded());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the operator stops")
        .expect("join")
        .expect("serve");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get(&lease_name).await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "released at shutdown"
    );

    // Check every request against the chart's rules.
    let rendered = render(&json!({}), "mailsec-operator", &ns).expect("render");
    let objs = objects(&rendered);
    // The operator's own ClusterRole (the chart also ships unbound roles for people).
    let operator_role = find(&objs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "mailsec-operator")
        .expect("the operator's ClusterRole");
    let cluster_grants = grants(operator_role);
    let role = find(&objs, "Role")[0];
    assert_eq!(role["metadata"]["namespace"], ns.as_str());
    let role_grants = grants(role);

    let recorded: BTreeMap<ApiRequest, u64> = counters.recorded();
    let mut used = BTreeSet::new();
    let mut denied = Vec::new();
    for (req, n) in &recorded {
        let g = grant_of(req);
        let allowed = req.non_resource_url.is_none()
            && (cluster_grants.contains(&g)
                || (req.namespace.as_deref() == Some(ns.as_str()) && role_grants.contains(&g)));
        if allowed {
            used.insert(g);
        } else {
            denied.push(format!("{req} ({n}×)"));
        }
    }
    let report: Vec<String> = recorded.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    eprintln!(
        "requests the operator sent ({} kinds, at {}):\n  {}",
        recorded.len(),
        Utc::now(),
        report.join("\n  ")
    );
    assert!(
        denied.is_empty(),
        "requests the chart's RBAC does not grant:\n  {}",
        denied.join("\n  ")
    );
    let unused: Vec<&Grant> = cluster_grants
        .iter()
        .chain(&role_grants)
        .filter(|g| !used.contains(*g))
        .collect();
    assert!(
        unused.is_empty(),
        "rules the operator never needed (least privilege: remove them, or exercise the code \
         path that needs them): {unused:?}"
    );
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
