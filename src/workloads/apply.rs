//! Scaling the tenant's filtering workloads (Deployments, StatefulSets): server-side apply of the
//! few fields the operator owns — `spec.replicas`, the phase label and the remembered-replicas
//! annotation — under its own field manager. Nothing is ever deleted.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};

use crate::api::WorkloadKind;
use crate::api::labels::{PHASE_LABEL, PRODUCT_LABEL, SUSPENDED_REPLICAS_ANNOTATION, TENANT_LABEL};
use crate::effects::FIELD_MANAGER;
use crate::workloads::plan::{Workload, WorkloadState};

/// Reads what the engine needs to know about a Deployment.
pub fn deployment_facts(d: &Deployment) -> Workload {
    facts(
        WorkloadKind::Deployment,
        d.namespace(),
        d.name_any(),
        d.labels(),
        d.annotations(),
        d.spec.as_ref().and_then(|s| s.replicas),
    )
}

/// Reads what the engine needs to know about a StatefulSet.
pub fn statefulset_facts(s: &StatefulSet) -> Workload {
    facts(
        WorkloadKind::StatefulSet,
        s.namespace(),
        s.name_any(),
        s.labels(),
        s.annotations(),
        s.spec.as_ref().and_then(|s| s.replicas),
    )
}

fn facts(
    kind: WorkloadKind,
    namespace: Option<String>,
    name: String,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
    replicas: Option<i32>,
) -> Workload {
    Workload {
        kind,
        namespace: namespace.unwrap_or_default(),
        name,
        product: labels.get(PRODUCT_LABEL).cloned(),
        replicas,
        remembered: annotations
            .get(SUSPENDED_REPLICAS_ANNOTATION)
            .and_then(|v| v.trim().parse().ok()),
        phase_label: labels.get(PHASE_LABEL).cloned(),
    }
}

/// The tenant a workload is labelled for.
pub fn tenant_of(labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    labels.get(TENANT_LABEL).map(String::as_str)
}

/// Applies `state` to the workload. The whole set of fields the operator owns is sent each time,
/// so a field left out (the annotation after a restore) is removed by server-side apply.
pub async fn apply(
    client: &Client,
    w: &Workload,
    state: &WorkloadState,
) -> Result<(), kube::Error> {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(w.name));
    metadata.insert("namespace".into(), json!(w.namespace));
    metadata.insert("labels".into(), json!({ PHASE_LABEL: state.phase }));
    if let Some(n) = state.remembered {
        metadata.insert(
            "annotations".into(),
            json!({ SUSPENDED_REPLICAS_ANNOTATION: n.to_string() }),
        );
    }
    let mut body = json!({ "apiVersion": "apps/v1", "kind": w.kind.as_str(), "metadata": Value::Object(metadata) });
    match (state.replicas, state.remembered) {
        // A restore: the count is given back by a merge patch (an update, not an apply), so the
        // operator's applied set no longer holds `spec.replicas`. Were it applied, a later apply
        // that leaves it out (a phase label change) would remove the field, and the API server
        // would default it to 1.
        (Some(r), None) => {
            // One write: the count, the annotation gone and the phase label together.
            let merge = json!({
                "metadata": {
                    "annotations": { SUSPENDED_REPLICAS_ANNOTATION: null },
                    "labels": { PHASE_LABEL: state.phase },
                },
                "spec": { "replicas": r },
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            if w.kind == WorkloadKind::StatefulSet {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), &w.namespace);
                api.patch(&w.name, &params, &Patch::Merge(&merge)).await?;
            } else {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &w.namespace);
                api.patch(&w.name, &params, &Patch::Merge(&merge)).await?;
            }
        }
        (Some(r), Some(_)) => body["spec"] = json!({ "replicas": r }),
        (None, _) => {}
    }
    patch(client, w, &body).await
}

/// Hands a workload back when its `mailsec.io/tenant` label was removed: restores the remembered
/// replica count and drops the operator's label and annotation. Returns the count restored.
pub async fn release(client: &Client, w: &Workload) -> Result<Option<i32>, kube::Error> {
    let Some(n) = w.remembered else {
        return Ok(None);
    };
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": w.kind.as_str(),
        "metadata": { "name": w.name, "namespace": w.namespace },
        "spec": { "replicas": n },
    });
    patch(client, w, &body).await?;
    Ok(Some(n))
}

async fn patch(client: &Client, w: &Workload, body: &Value) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if w.kind == WorkloadKind::StatefulSet {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &w.namespace);
        api.patch(&w.name, &params, &Patch::Apply(body)).await?;
    } else {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &w.namespace);
        api.patch(&w.name, &params, &Patch::Apply(body)).await?;
    }
    Ok(())
}
