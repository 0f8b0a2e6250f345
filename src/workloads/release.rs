//! Handing back workloads that leave the watch: one whose `mailsec.io/tenant` label is removed
//! while the operator has it scaled down gets its replica count back.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::runtime::events::Recorder;
use kube::{Client, Resource, ResourceExt};

use super::apply::{deployment_facts, release, statefulset_facts, tenant_of};
use super::plan::Workload;
use crate::api::WorkloadKind;
use crate::api::labels::TENANT_LABEL;
use crate::effects::events::{publish, released_notice};

/// Hands back workloads that left the watch because their `mailsec.io/tenant` label was removed
/// while the operator had them scaled down: they get their replica count back.
pub async fn release_orphans(
    client: Client,
    recorder: Recorder,
    deployments: futures::channel::mpsc::Receiver<Deployment>,
    statefulsets: futures::channel::mpsc::Receiver<StatefulSet>,
) {
    let departed = futures::stream::select(
        deployments.map(|d| deployment_facts(&d)),
        statefulsets.map(|s| statefulset_facts(&s)),
    );
    futures::pin_mut!(departed);
    while let Some(last_seen) = departed.next().await {
        if !last_seen.is_suspended() {
            continue;
        }
        // Deleted objects are gone; only one that still exists, unlabelled, is handed back.
        let (exists, labelled, current) = match current_workload(&client, &last_seen).await {
            Ok(Some((facts, labelled, reference))) => (true, labelled, Some((facts, reference))),
            Ok(None) => (false, false, None),
            Err(err) => {
                tracing::warn!(workload = %last_seen.id(), error = %err, "could not check a workload that left the watch");
                continue;
            }
        };
        let Some((facts, reference)) = current.filter(|_| exists && !labelled) else {
            continue;
        };
        match release(&client, &facts).await {
            Ok(Some(n)) => {
                tracing::info!(workload = %facts.id(), replicas = n, "restored a workload whose {TENANT_LABEL} label was removed");
                publish(&recorder, &reference, &released_notice(n)).await;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(workload = %facts.id(), error = %err, "could not restore a workload whose label was removed")
            }
        }
    }
}

/// The workload as it is now: its facts, whether it still carries the tenant label, and a
/// reference for Events; `None` when it no longer exists.
async fn current_workload(
    client: &Client,
    w: &Workload,
) -> Result<Option<(Workload, bool, ObjectReference)>, kube::Error> {
    if w.kind == WorkloadKind::StatefulSet {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &w.namespace);
        Ok(api.get_opt(&w.name).await?.map(|s| {
            (
                statefulset_facts(&s),
                tenant_of(s.labels()).is_some(),
                s.object_ref(&()),
            )
        }))
    } else {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &w.namespace);
        Ok(api.get_opt(&w.name).await?.map(|d| {
            (
                deployment_facts(&d),
                tenant_of(d.labels()).is_some(),
                d.object_ref(&()),
            )
        }))
    }
}
