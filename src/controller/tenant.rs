//! The Tenant controller: evaluate, write status, announce milestones, guard deletion.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::late_events::{LateEvent, Outcome};
use super::{DeletionGuard, Error, Next, requeue_at, requeue_wait};
use crate::api::labels::FINALIZER;
use crate::api::{MilestoneRecord, Subscription, Tenant, TenantStatus};
use crate::effects::events::{
    REPUBLISH_WINDOW, already_due_id, already_due_notice, announce_milestone,
    deletion_blocked_notice, milestone_event_name, milestone_notice, namespace_not_assigned_notice,
    publish, record_notice, status_write_failed_notice, workloads_notice,
};
use crate::effects::status::apply_if_changed;
use crate::engine::plan::{
    ClusterFacts, Deletion, ListedNamespaces, Projection, ProjectionOutcome, TenantPlan,
    Unassigned, WorkloadPlan, WriteOutcomes, plan_tenant, settings_written,
};
use crate::engine::{Milestone, Neighbour, TenantInput, evaluate_tenant};
use crate::settings::apply as settings_map;
use crate::workloads::apply as workloads;
use crate::workloads::plan::Workload;

pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Next, Error> {
    let name = tenant.name_any();
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    ctx.caches_ready().await;
    let now = ctx.now();
    let subs = ctx.subscriptions_of(&name);
    let refs: Vec<&Subscription> = subs.iter().map(|s| s.as_ref()).collect();
    let users = ctx.users_of(refs.iter().copied());
    let gathered = ctx.neighbours_of(&tenant);
    let neighbour_subs: Vec<Vec<&Subscription>> = gathered
        .iter()
        .map(|(_, subs)| subs.iter().map(|s| s.as_ref()).collect())
        .collect();
    let neighbours: Vec<Neighbour<'_>> = gathered
        .iter()
        .zip(&neighbour_subs)
        .map(|((t, _), subs)| Neighbour {
            tenant: t,
            subscriptions: subs,
        })
        .collect();
    let super::context::TenantWorkloads {
        assigned: workloads,
        ignored,
    } = ctx.workloads_of(&name);
    report_ignored(&name, &ignored, &ctx).await;
    let workload_products =
        crate::workloads::plan::products(&workloads, &ctx.policy.catalogue.base);
    let evaluate = |tenant: &Tenant| {
        let input = TenantInput {
            tenant,
            subscriptions: &refs,
            neighbours: &neighbours,
            workload_products: &workload_products,
            users: &users,
        };
        evaluate_tenant(&input, &ctx.policy, now)
    };
    let mut eval = evaluate(&tenant);
    // A milestone is announced (Event) when the status does not record it yet. The cached tenant
    // can be older than this controller's own last status write: a reconcile triggered by a
    // workload or subscription change may run before the watch brings that write back, and
    // would announce the same milestones a second time. So check new milestones against the
    // stored tenant: one read, only when there are some and this process has written this
    // tenant's status before (a cache filled by a list after start-up already holds the writes
    // of earlier processes, so a cold start reads nothing).
    let mut tenant = tenant;
    if !eval.milestones.is_empty()
        && let Some(stored) = stored_if_newer(&api, &tenant, &ctx).await?
    {
        tenant = stored;
        eval = evaluate(&tenant);
    }

    let namespaces = listed_namespaces(&tenant, &ctx);
    let cluster = ClusterFacts {
        workloads: &workloads,
        namespaces: &namespaces.listed,
    };
    let mut plan = plan_tenant(&tenant, eval, &cluster, &ctx.policy.catalogue.base, now);
    if let Some(deletion) = plan.deletion.take() {
        return guard_deletion(&api, &tenant, plan, deletion, &ctx, now).await;
    }
    // Workloads first, and whatever becomes of the status write: suspension must not depend on
    // a status the API server may refuse (an object at the size limit, an admission policy).
    let scaled = scale_workloads(&tenant, &plan.workloads, &ctx).await;
    // The deletion guard and the status are independent requests (metadata and the status
    // subresource): sent together, a new tenant costs one round trip, not two.
    let guard = async {
        if ctx.deletion_guard == DeletionGuard::Admission
            || tenant.finalizers().iter().any(|f| f == FINALIZER)
        {
            Ok(())
        } else {
            add_finalizer(&api, &tenant).await
        }
    };
    let mut eval = plan.evaluation;
    let next_transition = eval.next_transition;
    let status = &mut eval.status;
    let write_status = async {
        let projection = project_settings(
            &tenant,
            status,
            &plan.settings,
            &namespaces.current,
            &ctx,
            now,
        )
        .await;
        let written = match apply_if_changed::<Tenant, _>(
            &ctx.client,
            &name,
            owned_status(&tenant).as_ref(),
            status,
        )
        .await
        {
            Ok(written) => written,
            Err(err) => {
                status_write_failed(&tenant, &err, &ctx).await;
                return Err(Error::StatusWrite {
                    source: err,
                    next_transition,
                });
            }
        };
        Ok::<_, Error>((projection, written))
    };
    let ((), (projection, written)) = match tokio::try_join!(guard, write_status) {
        Ok(done) => done,
        Err(err) => {
            scaled?;
            return Err(err);
        }
    };
    if let Some(written) = &written {
        ctx.own_writes
            .record::<Tenant>(&name, written.resource_version());
    }
    // Announced once the status records them; one after the other, so their Events are in the
    // order the milestones were due. Each Event has a name of its own, so a second publication
    // is refused (409); and the recent ones whose Event a process that died after the status
    // write never published are published now.
    let fresh = std::mem::take(&mut eval.milestones);
    let again = |ids: &[&str]| {
        // The engine describes only milestones it does not find recorded: ask it about these
        // as if they were not.
        let mut t = (*tenant).clone();
        if let Some(s) = t.status.as_mut() {
            s.milestones.retain(|r| !ids.contains(&r.id.as_str()));
        }
        evaluate(&t).milestones
    };
    let events_published =
        announce_milestones(&ctx, &tenant, &eval.status.milestones, fresh, again, now).await;
    scaled?;
    tracing::debug!(tenant = %name, phase = ?eval.status.phase, next = ?eval.next_transition, "tenant reconciled");
    // Retries are real time (a time lapse does not make the API server answer sooner).
    let mut wait = requeue_wait(eval.next_transition, now, &ctx.clock);
    if matches!(projection, ProjectionOutcome::Retry) {
        wait = wait.min(PROJECTION_RETRY);
    }
    if !events_published {
        wait = wait.min(EVENT_RETRY);
    }
    Ok(Next::After(wait))
}

/// The stored tenant, when this process has written its status before and the stored version
/// is newer than `tenant` (the cached one).
async fn stored_if_newer(
    api: &Api<Tenant>,
    tenant: &Tenant,
    ctx: &Context,
) -> Result<Option<Arc<Tenant>>, Error> {
    let name = tenant.name_any();
    if !ctx.own_writes.wrote::<Tenant>(&name) {
        return Ok(None);
    }
    match api.get(&name).await {
        Ok(stored) => {
            Ok((stored.resource_version() != tenant.resource_version()).then(|| Arc::new(stored)))
        }
        // The stored version can not be decoded (the feed reports it): go on with the
        // cached one, the last version that could be read, rather than stop enforcing.
        Err(kube::Error::SerdeError(err)) => {
            tracing::debug!(tenant = %name, error = %err, "stored tenant can not be decoded; using the cached version");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// How soon milestone Events that could not be published are tried again.
const EVENT_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes the Event of every milestone recorded in `records` within the last
/// [`REPUBLISH_WINDOW`] that this process does not know to exist: the `fresh` ones (just
/// recorded, with their messages), and those a previous process recorded but died before
/// publishing (described again by `again`, or from the record). Costs nothing when every Event
/// is known (at rest). Returns false when one could not be published (retried later).
async fn announce_milestones(
    ctx: &Context,
    tenant: &Tenant,
    records: &[MilestoneRecord],
    fresh: Vec<Milestone>,
    again: impl FnOnce(&[&str]) -> Vec<Milestone>,
    now: DateTime<Utc>,
) -> bool {
    let name = tenant.name_any();
    let recent: Vec<(&MilestoneRecord, String)> = records
        .iter()
        .filter(|r| now - r.announced_at <= REPUBLISH_WINDOW || fresh.iter().any(|m| m.id == r.id))
        .map(|r| (r, milestone_event_name(&name, &event_id(r))))
        .collect();
    if recent.is_empty() && fresh.is_empty() {
        return true;
    }
    let mut wanted: Vec<String> = recent.iter().map(|(_, n)| n.clone()).collect();
    wanted.sort();
    wanted.dedup();
    let unknown = ctx
        .milestone_events
        .unconfirmed(&ctx.client, &name, &wanted, now)
        .await;
    if unknown.is_empty() {
        return true;
    }
    let missing: Vec<&(&MilestoneRecord, String)> =
        recent.iter().filter(|(_, n)| unknown.contains(n)).collect();
    let lost: Vec<&str> = missing
        .iter()
        .filter(|(r, _)| !r.already_due)
        .map(|(r, _)| r.id.as_str())
        .filter(|id| !fresh.iter().any(|m| m.id == *id))
        .collect();
    let described = if lost.is_empty() {
        Vec::new()
    } else {
        tracing::info!(tenant = %name, milestones = ?lost, "publishing milestone Events that may have been lost");
        again(&lost)
    };
    let regarding = tenant.object_ref(&());
    let mut all_published = true;
    let mut groups_done: Vec<&str> = Vec::new();
    for (record, event_name) in missing {
        if record.already_due {
            // One Event for the whole group, queued with its first record: late news, published
            // with capacity no reconcile asks for (see `late_events`).
            if groups_done.contains(&event_name.as_str()) {
                continue;
            }
            groups_done.push(event_name);
            ctx.late_events.defer(LateEvent {
                tenant: name.clone(),
                announced_at: record.announced_at,
            });
            continue;
        }
        let notice = match fresh.iter().find(|m| m.id == record.id) {
            Some(m) => milestone_notice(m),
            None => match described.iter().find(|m| m.id == record.id) {
                Some(m) => milestone_notice(&Milestone {
                    late: crate::notifications::outbox::is_late(record, ctx.policy.late_after),
                    ..m.clone()
                }),
                None => record_notice(record),
            },
        };
        let id = &record.id;
        match announce_milestone(&ctx.client, &ctx.reporter, &regarding, id, &notice).await {
            Ok(()) => ctx.milestone_events.confirm(&name, event_name),
            Err(err) => {
                all_published = false;
                tracing::warn!(tenant = %name, milestone = %id, error = %err, "could not publish the milestone Event; retried");
            }
        }
    }
    all_published
}

/// Publishes the `MilestonesAlreadyDue` Event of `event`, as the cached tenant records its
/// milestones (see [`super::late_events`]).
pub async fn publish_late_event(ctx: &Context, event: LateEvent) -> Result<Outcome, kube::Error> {
    let Some(tenant) = ctx.tenants.get(&ObjectRef::new(&event.tenant)) else {
        return Ok(Outcome::Moot);
    };
    let records = tenant.status.as_ref().map_or(&[][..], |s| &s.milestones);
    let group: Vec<&MilestoneRecord> = records
        .iter()
        .filter(|r| r.already_due && r.announced_at == event.announced_at)
        .collect();
    if group.is_empty() {
        return Ok(if ctx.own_writes.is_behind(tenant.as_ref()) {
            Outcome::NotYet
        } else {
            Outcome::Moot
        });
    }
    let id = already_due_id(event.announced_at);
    let notice = already_due_notice(&group);
    let regarding = tenant.object_ref(&());
    announce_milestone(&ctx.client, &ctx.reporter, &regarding, &id, &notice).await?;
    ctx.milestone_events
        .confirm(&event.tenant, &milestone_event_name(&event.tenant, &id));
    Ok(Outcome::Published)
}

/// The id a milestone's Event is named after: its own, or its group's when it was already due
/// at first sight (see [`already_due_notice`]).
fn event_id(record: &MilestoneRecord) -> String {
    if record.already_due {
        already_due_id(record.announced_at)
    } else {
        record.id.clone()
    }
}

/// Reports a status write the API server refused (or that failed): a Warning Event (repeats are
/// folded into one Event series) and the log; the metric is counted by the caller from
/// [`Error::StatusWrite`], and the reconcile is retried with backoff. Workloads were scaled before.
async fn status_write_failed(tenant: &Tenant, err: &kube::Error, ctx: &Context) {
    let reason = match err {
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    };
    tracing::warn!(tenant = %tenant.name_any(), error = %reason, "status write failed; workloads were scaled anyway; retrying with backoff");
    publish(
        &ctx.recorder,
        &tenant.object_ref(&()),
        &status_write_failed_notice(&reason),
    )
    .await;
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

/// Applies the engine's verdict on a tenant being deleted: lifts the guard, or writes the
/// refusal into the status and announces it.
async fn guard_deletion(
    api: &Api<Tenant>,
    tenant: &Tenant,
    plan: TenantPlan,
    deletion: Deletion,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Next, Error> {
    let name = tenant.name_any();
    let Some(index) = tenant.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(Next::OnChange);
    };
    match deletion {
        Deletion::Allowed { forced_over } => {
            let patch: json_patch::Patch = serde_json::from_value(json!([
                { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER },
                { "op": "remove", "path": format!("/metadata/finalizers/{index}") },
            ]))?;
            api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await?;
            if !forced_over.is_empty() {
                tracing::warn!(tenant = %name, subscriptions = ?forced_over, "tenant deleted by force while owning licences in force");
            }
            tracing::info!(tenant = %name, "deletion allowed: finalizer removed (subscriptions and workloads are left in place)");
            Ok(Next::OnChange)
        }
        Deletion::Refused {
            message,
            announce,
            recheck_at,
        } => {
            let status = &plan.evaluation.status;
            if let Some(written) = apply_if_changed::<Tenant, _>(
                &ctx.client,
                &name,
                owned_status(tenant).as_ref(),
                status,
            )
            .await?
            {
                ctx.own_writes
                    .record::<Tenant>(&name, written.resource_version());
            }
            if announce {
                publish(
                    &ctx.recorder,
                    &tenant.object_ref(&()),
                    &deletion_blocked_notice(message),
                )
                .await;
            }
            Ok(requeue_at(recheck_at, now, &ctx.clock))
        }
    }
}

/// Writes the planned settings into the tenant's ConfigMaps (`current`: the cached copy in each
/// namespace of the plan), and has the engine record how it went in `status`.
async fn project_settings(
    tenant: &Tenant,
    status: &mut TenantStatus,
    projection: &Projection,
    current: &[Option<Arc<ConfigMap>>],
    ctx: &Context,
    now: DateTime<Utc>,
) -> ProjectionOutcome {
    let Projection::Write {
        data,
        namespaces,
        unassigned,
    } = projection
    else {
        return ProjectionOutcome::Done;
    };
    let data = settings_map::render(data);
    let mut outcomes = WriteOutcomes::default();
    for (ns, cm) in namespaces.iter().zip(current) {
        match settings_map::apply(&ctx.client, tenant, ns, &data, cm.as_deref()).await {
            Ok(settings_map::Applied::NotOurs) => outcomes.not_ours.push(ns.0.clone()),
            Ok(_) => {}
            Err(err) => {
                outcomes
                    .failures
                    .push(format!("namespace {}: {}", ns.0, short_error(&err)))
            }
        }
    }
    settings_written(status, tenant, unassigned, &outcomes, now)
}

/// The tenant's `workloadNamespaces` as the platform assigned them (see
/// [`Context::namespace_assigned`]), with the cached copy of its settings ConfigMap in each
/// assigned one (in the order of `listed.assigned`).
struct Namespaces {
    listed: ListedNamespaces,
    current: Vec<Option<Arc<ConfigMap>>>,
}

fn listed_namespaces(tenant: &Tenant, ctx: &Context) -> Namespaces {
    let name = tenant.name_any();
    let (assigned, unassigned): (Vec<_>, Vec<_>) = tenant
        .spec
        .workload_namespaces
        .iter()
        .cloned()
        .partition(|ns| ctx.namespace_assigned(&name, &ns.0));
    let unassigned = unassigned
        .into_iter()
        .map(|ns| Unassigned {
            other: ctx.namespace_tenant(&ns.0),
            name: ns.0,
        })
        .collect();
    let configmap = settings_map::configmap_name(&name);
    let current: Vec<Option<Arc<ConfigMap>>> = assigned
        .iter()
        .map(|ns| {
            ctx.workloads
                .configmaps
                .get(&kube::runtime::reflector::ObjectRef::new(&configmap).within(ns))
        })
        .collect();
    let copies = current
        .iter()
        .flatten()
        .map(|cm| settings_map::read(cm))
        .collect();
    Namespaces {
        listed: ListedNamespaces {
            assigned,
            copies,
            unassigned,
        },
        current,
    }
}

/// Reports, once per process, workloads labelled for `tenant` in namespaces not assigned to it:
/// they are never scaled. A Warning Event on the workload and a log line.
async fn report_ignored(tenant: &str, ignored: &[Workload], ctx: &Context) {
    for w in ctx.not_yet_reported(tenant, ignored) {
        tracing::warn!(tenant = %tenant, workload = %w.id(), kind = %w.kind, "workload labelled for a tenant in a namespace not assigned to it: ignored");
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(w.kind.to_string()),
            name: Some(w.name.clone()),
            namespace: Some(w.namespace.clone()),
            ..Default::default()
        };
        publish(
            &ctx.recorder,
            &reference,
            &namespace_not_assigned_notice(tenant, w),
        )
        .await;
    }
}

/// How soon a failed settings projection is tried again.
const PROJECTION_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

fn short_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(e) if e.code == 404 => "not found".to_string(),
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    }
}

/// Brings the tenant's workloads to their planned state, and announces what changed.
async fn scale_workloads(
    tenant: &Tenant,
    planned: &[WorkloadPlan],
    ctx: &Context,
) -> Result<(), Error> {
    let mut changes = Vec::new();
    for WorkloadPlan {
        workload: w,
        state,
        change,
    } in planned
    {
        workloads::apply(&ctx.client, w, state).await?;
        changes.push((w, *change));
    }
    let regarding = tenant.object_ref(&());
    for notice in workloads_notice(&changes) {
        publish(&ctx.recorder, &regarding, &notice).await;
    }
    Ok(())
}
