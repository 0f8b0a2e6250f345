//! The Tenant controller: evaluate, write status, announce milestones, guard deletion.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::{Error, requeue_at};
use crate::api::{ConditionStatus, Subscription, SubscriptionPhase, Tenant, TenantStatus};
use crate::effects::events::{Notice, milestone_notice, publish};
use crate::effects::status::apply_if_changed;
use crate::engine::{TenantEvaluation, evaluate_tenant};

/// Held on every Tenant so that deleting one that still owns a licence in force is stopped.
pub const FINALIZER: &str = "mailsec.io/licence-guard";
/// Set to "true" on a Tenant to delete it although it owns a licence in force.
pub const FORCE_DELETE_ANNOTATION: &str = "mailsec.io/force-delete";

pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = tenant.name_any();
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    ctx.caches_ready().await;
    let now = ctx.now();
    let subs = ctx.subscriptions_of(&name);
    let refs: Vec<&Subscription> = subs.iter().map(|s| s.as_ref()).collect();
    let users = ctx.users_of(refs.iter().copied());
    let mut eval = evaluate_tenant(&tenant, &refs, &users, &ctx.policy, now);

    if tenant.meta().deletion_timestamp.is_some() {
        return guard_deletion(&api, &tenant, &refs, eval, &ctx, now).await;
    }
    if !tenant.finalizers().iter().any(|f| f == FINALIZER) {
        add_finalizer(&api, &tenant).await?;
    }

    apply_if_changed(&api, &name, owned_status(&tenant).as_ref(), &eval.status).await?;
    let regarding = tenant.object_ref(&());
    for m in std::mem::take(&mut eval.milestones) {
        if m.kind.is_transfer() {
            continue; // announced on both tenants by the Subscription controller
        }
        publish(&ctx.recorder, &regarding, &milestone_notice(&m)).await;
    }
    tracing::debug!(tenant = %name, phase = ?eval.status.phase, next = ?eval.next_transition, "tenant reconciled");
    Ok(requeue_at(eval.next_transition, now))
}

/// The part of the stored status this controller writes: everything but `notifications`, which
/// the notifier owns (its own field manager). Comparing the whole status would see a difference
/// after every delivery and write forever; applying it would take the outbox over.
pub fn owned_status(tenant: &Tenant) -> Option<TenantStatus> {
    tenant.status.clone().map(|mut s| {
        s.notifications.clear();
        s
    })
}

async fn add_finalizer(api: &Api<Tenant>, tenant: &Tenant) -> Result<(), Error> {
    // A JSON patch that fails if someone else changed the finalizers meanwhile.
    let patch = if tenant.meta().finalizers.is_none() {
        json!([{ "op": "test", "path": "/metadata/finalizers", "value": null }, { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }])
    } else {
        json!([{ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER }])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    api.patch(
        &tenant.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

/// Subscriptions this tenant owns that are still in use and would be orphaned by deleting it:
/// not expired, and not shared with anyone (a shared one keeps serving the other tenants).
pub fn licences_held(
    tenant: &str,
    subs: &[&Subscription],
    eval: &TenantEvaluation,
) -> Vec<(String, Option<DateTime<Utc>>)> {
    subs.iter()
        .filter(|s| s.spec.tenant_ref == tenant && s.spec.shared_with.is_empty())
        .filter_map(|s| {
            let name = s.metadata.name.clone()?;
            let e = eval.subscriptions.get(&name)?;
            let in_use = matches!(e.status.phase, Some(p) if p != SubscriptionPhase::Expired);
            in_use.then(|| (name, e.timeline.map(|t| t.grace_ends_at)))
        })
        .collect()
}

async fn guard_deletion(
    api: &Api<Tenant>,
    tenant: &Tenant,
    subs: &[&Subscription],
    mut eval: TenantEvaluation,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let name = tenant.name_any();
    let Some(index) = tenant.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(Action::await_change());
    };
    let held = licences_held(&name, subs, &eval);
    let forced = tenant
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    if held.is_empty() || forced {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER },
            { "op": "remove", "path": format!("/metadata/finalizers/{index}") },
        ]))?;
        api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await?;
        if forced && !held.is_empty() {
            let names: Vec<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
            tracing::warn!(tenant = %name, subscriptions = ?names, "tenant deleted by force while owning licences in force");
        }
        tracing::info!(tenant = %name, "deletion allowed: finalizer removed (subscriptions and workloads are left in place)");
        return Ok(Action::await_change());
    }

    let list: Vec<String> = held
        .iter()
        .map(|(n, until)| match until {
            Some(t) => format!(
                "{n} (in use until {})",
                crate::api::date::format_instant(*t)
            ),
            None => n.clone(),
        })
        .collect();
    let message = format!(
        "Deletion is held back: this tenant owns subscription(s) still in use: {}. Transfer them (set spec.tenantRef to the tenant that should keep them), or annotate the tenant {FORCE_DELETE_ANNOTATION}=true to delete it anyway. Subscriptions and workloads are never deleted with a tenant.",
        list.join(", ")
    );
    let previous = tenant
        .status
        .as_ref()
        .and_then(|s| crate::api::condition::find(&s.conditions, "Ready"));
    let announced = previous.is_some_and(|c| c.reason == "DeletionBlocked");
    if let Some(ready) = eval
        .status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready")
    {
        if ready.status != ConditionStatus::False {
            ready.last_transition_time = crate::engine::whole_seconds(now);
        }
        ready.status = ConditionStatus::False;
        ready.reason = "DeletionBlocked".into();
        ready.message = message.clone();
        if let Some(prev) = previous.filter(|c| c.status == ConditionStatus::False) {
            ready.last_transition_time = prev.last_transition_time;
        }
    }
    apply_if_changed(api, &name, owned_status(tenant).as_ref(), &eval.status).await?;
    if !announced {
        publish(
            &ctx.recorder,
            &tenant.object_ref(&()),
            &Notice::warning("DeletionBlocked", "GuardDeletion", message),
        )
        .await;
    }
    // The guard lifts by itself once the held subscriptions have expired.
    let lifts = held.iter().filter_map(|(_, t)| *t).max();
    Ok(requeue_at(
        eval.next_transition
            .into_iter()
            .chain(lifts)
            .filter(|t| *t > now)
            .min(),
        now,
    ))
}
