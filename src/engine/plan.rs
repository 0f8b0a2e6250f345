//! The complete plan for one tenant: its evaluation, and what the controller is to do with it
//! (the status to write, with the settings records and the deletion guard's `Ready`; the
//! desired state of each workload; the settings to project and where; the deletion verdict).
//! Facts only known once a write has run are fed back through [`settings_written`].

use chrono::{DateTime, Utc};

use super::{TenantEvaluation, human, whole_seconds};
use crate::api::labels::{FORCE_DELETE_ANNOTATION, TENANT_LABEL};
use crate::api::{ConditionStatus, ConditionType, NamespaceName, Reason, Tenant, TenantStatus};
use crate::settings::plan::{self as settings, ProductSettings};
use crate::workloads::plan::{Workload, WorkloadState, desired_state};

/// What the plan needs from the cluster besides the evaluation's input, gathered by the
/// controller.
#[derive(Clone, Copy, Debug)]
pub struct ClusterFacts<'a> {
    /// The workloads labelled for the tenant in namespaces assigned to it.
    pub workloads: &'a [Workload],
    /// The tenant's `workloadNamespaces`, as the platform assigned them.
    pub namespaces: &'a ListedNamespaces,
}

/// The tenant's `workloadNamespaces`: those assigned to it, with the settings its ConfigMaps
/// there hold now, and those that are not.
#[derive(Clone, Debug, Default)]
pub struct ListedNamespaces {
    pub assigned: Vec<NamespaceName>,
    /// The settings of every copy of the tenant's ConfigMap found in the assigned namespaces.
    pub copies: Vec<ProductSettings>,
    pub unassigned: Vec<Unassigned>,
}

/// A listed namespace not assigned to the tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unassigned {
    pub name: String,
    /// The tenant it is assigned to instead.
    pub other: Option<String>,
}

/// The engine's complete answer for one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantPlan {
    /// The status to write (with the settings records and, while deletion is refused, `Ready`),
    /// the milestones to announce and the next instant.
    pub evaluation: TenantEvaluation,
    /// The desired state of each workload, in the order found; empty while the tenant is being
    /// deleted (nothing is scaled then).
    pub workloads: Vec<WorkloadPlan>,
    /// The settings to project.
    pub settings: Projection,
    /// `None` unless the tenant is being deleted.
    pub deletion: Option<Deletion>,
}

/// One workload and the state it should be in.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadPlan {
    pub workload: Workload,
    pub state: WorkloadState,
    pub change: WorkloadChange,
}

/// What a workload's desired state changes, for the Events that announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadChange {
    /// Nothing worth announcing.
    None,
    /// Scaled to zero; it had `was` replicas.
    Suspended { was: i32 },
    /// Given its replicas back.
    Restored { to: i32 },
    /// Scaled up by someone while suspended, and scaled back to zero.
    ScaledBack { was: i32 },
}

/// The settings projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    /// Nothing to do: no workload namespaces, or the tenant is being deleted.
    Nothing,
    /// The settings in effect are not known: nothing is written (the status says why).
    Withheld,
    /// Write `data` into the tenant's ConfigMap in each of `namespaces`.
    Write {
        data: ProductSettings,
        namespaces: Vec<NamespaceName>,
        unassigned: Vec<Unassigned>,
    },
}

/// The verdict on a tenant being deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Let it go; `forced_over` names the licences held that the force annotation overrode.
    Allowed { forced_over: Vec<String> },
    /// Held back while it owns licences in force.
    Refused {
        /// Why, and the way out (the `Ready` condition and the Event).
        message: String,
        /// False when the stored `Ready` already says so (the Event was published).
        announce: bool,
        /// When to look again: the next transition, or when the last licence held lapses.
        recheck_at: Option<DateTime<Utc>>,
    },
}

/// How the settings writes went, in the controller's words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcomes {
    /// "namespace N: error", for each namespace where the write failed.
    pub failures: Vec<String>,
    /// Namespaces holding a ConfigMap of that name that the operator did not create.
    pub not_ours: Vec<String>,
}

/// Whether the settings reached every workload namespace, or the projection is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectionOutcome {
    Done,
    Retry,
}

/// Plans what to do with `evaluation`, the evaluation of `tenant` at `now`.
pub fn plan_tenant(
    tenant: &Tenant,
    mut evaluation: TenantEvaluation,
    cluster: &ClusterFacts<'_>,
    base_product: &str,
    now: DateTime<Utc>,
) -> TenantPlan {
    if tenant.metadata.deletion_timestamp.is_some() {
        let deletion = deletion_verdict(tenant, &mut evaluation, now);
        return TenantPlan {
            evaluation,
            workloads: Vec::new(),
            settings: Projection::Nothing,
            deletion: Some(deletion),
        };
    }
    let workloads = workload_plans(cluster.workloads, &evaluation.status, base_product);
    let settings = projection(tenant, &mut evaluation.status, cluster.namespaces, now);
    TenantPlan {
        evaluation,
        workloads,
        settings,
        deletion: None,
    }
}

/// Each workload's desired state under `status`, and what it changes.
pub fn workload_plans(
    found: &[Workload],
    status: &TenantStatus,
    base_product: &str,
) -> Vec<WorkloadPlan> {
    found
        .iter()
        .filter_map(|w| {
            let state = desired_state(w, status, base_product)?;
            let change = match (w.is_suspended(), state.suspended) {
                (false, true) => WorkloadChange::Suspended {
                    was: state.remembered.unwrap_or_default(),
                },
                (true, false) => WorkloadChange::Restored {
                    to: state.replicas.unwrap_or_default(),
                },
                (true, true) if w.replicas != Some(0) => WorkloadChange::ScaledBack {
                    was: w.replicas.unwrap_or(1),
                },
                _ => WorkloadChange::None,
            };
            Some(WorkloadPlan {
                workload: w.clone(),
                state,
                change,
            })
        })
        .collect()
}

/// Plans the settings projection, holding back changes to frozen services, and records it in
/// `status` as if every write succeeds ([`settings_written`] amends that).
fn projection(
    tenant: &Tenant,
    status: &mut TenantStatus,
    namespaces: &ListedNamespaces,
    now: DateTime<Utc>,
) -> Projection {
    if tenant.spec.workload_namespaces.is_empty() {
        return Projection::Nothing;
    }
    // The settings in effect come from a source a tenant editor can not forge (a copy edited
    // by hand does not match the digest in status): see `settings::in_effect`.
    let applied = match settings::in_effect(tenant, &namespaces.copies) {
        settings::InEffect::Spec => None,
        settings::InEffect::Known(settings) => Some(settings),
        settings::InEffect::Unknown => {
            settings::record_unknown(status, tenant, tenant.status.as_ref(), now);
            return Projection::Withheld;
        }
    };
    let plan = settings::plan(tenant, status, applied.as_ref());
    settings::record_in_effect(status, &plan.data);
    settings::record(status, tenant, &plan, tenant.status.as_ref(), now);
    Projection::Write {
        data: plan.data,
        namespaces: namespaces.assigned.clone(),
        unassigned: namespaces.unassigned.clone(),
    }
}

/// Amends `status` with how the settings writes went: a failure (a namespace that does not
/// exist yet must not keep the status from being written) or a namespace where nothing was
/// written becomes the `SettingsApplied` condition. Returns whether to try again soon.
pub fn settings_written(
    status: &mut TenantStatus,
    tenant: &Tenant,
    unassigned: &[Unassigned],
    outcomes: &WriteOutcomes,
    now: DateTime<Utc>,
) -> ProjectionOutcome {
    if !outcomes.failures.is_empty() {
        settings::record_failures(
            status,
            tenant,
            &outcomes.failures,
            tenant.status.as_ref(),
            now,
        );
        return ProjectionOutcome::Retry;
    }
    let Some((reason, message)) = not_written(tenant, unassigned, &outcomes.not_ours) else {
        return ProjectionOutcome::Done;
    };
    settings::record_not_written(status, tenant, reason, message, tenant.status.as_ref(), now);
    if outcomes.not_ours.is_empty() {
        // A namespace's label change triggers a reconcile.
        ProjectionOutcome::Done
    } else {
        ProjectionOutcome::Retry
    }
}

/// The reason and message of `SettingsApplied` for the listed namespaces where nothing was
/// written: not assigned to the tenant, or holding a ConfigMap of the tenant's ConfigMap's name
/// that the operator did not create. `None` when there are none.
fn not_written(
    tenant: &Tenant,
    unassigned: &[Unassigned],
    not_ours: &[String],
) -> Option<(Reason, String)> {
    let tenant_name = tenant.metadata.name.as_deref().unwrap_or_default();
    let mut parts = Vec::new();
    if !unassigned.is_empty() {
        let names: Vec<String> = unassigned
            .iter()
            .map(|ns| match &ns.other {
                Some(other) => format!("{} (assigned to tenant {other})", ns.name),
                None => ns.name.clone(),
            })
            .collect();
        let fix: Vec<String> = unassigned
            .iter()
            .map(|ns| {
                let overwrite = if ns.other.is_some() {
                    " --overwrite"
                } else {
                    ""
                };
                format!(
                    "kubectl label namespace {} {TENANT_LABEL}={tenant_name}{overwrite}",
                    ns.name
                )
            })
            .collect();
        parts.push(format!(
            "namespace(s) {} are not assigned to this tenant, so nothing is written or scaled there; a platform administrator assigns a namespace with: {}",
            names.join(", "),
            fix.join("; ")
        ));
    }
    if !not_ours.is_empty() {
        let configmap = crate::settings::apply::configmap_name(tenant_name);
        parts.push(format!(
            "a ConfigMap {configmap} that the operator did not create exists in namespace(s) {}: it is left alone; rename or remove it to let the operator create its own",
            not_ours.join(", ")
        ));
    }
    if parts.is_empty() {
        return None;
    }
    let reason = if unassigned.is_empty() {
        Reason::ConfigMapNotOwned
    } else {
        Reason::NamespaceNotAssigned
    };
    Some((
        reason,
        format!("Settings not written everywhere: {}", parts.join("; ")),
    ))
}

/// The licences the tenant holds (`status.licencesHeld`, as just evaluated) with the end of
/// their grace period, for the message that refuses deletion.
fn licences_held(eval: &TenantEvaluation) -> Vec<(String, Option<DateTime<Utc>>)> {
    eval.status
        .licences_held
        .iter()
        .map(|n| {
            let until = eval
                .subscriptions
                .get(n)
                .and_then(|e| e.timeline)
                .map(|t| t.grace_ends_at);
            (n.clone(), until)
        })
        .collect()
}

/// Whether a tenant being deleted may go: not while it holds licences in force, unless forced
/// by [`FORCE_DELETE_ANNOTATION`]. A refusal is also written into `Ready`.
fn deletion_verdict(tenant: &Tenant, eval: &mut TenantEvaluation, now: DateTime<Utc>) -> Deletion {
    let held = licences_held(eval);
    let forced = tenant
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FORCE_DELETE_ANNOTATION))
        .is_some_and(|v| v == "true");
    if held.is_empty() || forced {
        return Deletion::Allowed {
            forced_over: held.into_iter().map(|(n, _)| n).collect(),
        };
    }
    let list: Vec<String> = held
        .iter()
        .map(|(n, until)| match until {
            Some(t) => format!("{n} (in use until {})", human(*t)),
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
        .and_then(|s| crate::api::condition::find(&s.conditions, ConditionType::Ready));
    let announce = previous.is_none_or(|c| c.reason != Reason::DeletionBlocked.as_str());
    if let Some(ready) = eval
        .status
        .conditions
        .iter_mut()
        .find(|c| c.is(ConditionType::Ready))
    {
        if ready.status != ConditionStatus::False {
            ready.last_transition_time = whole_seconds(now);
        }
        ready.status = ConditionStatus::False;
        ready.reason = Reason::DeletionBlocked.as_str().into();
        ready.message = message.clone();
        if let Some(prev) = previous.filter(|c| c.status == ConditionStatus::False) {
            ready.last_transition_time = prev.last_transition_time;
        }
    }
    // The guard lifts by itself once the held subscriptions have expired.
    let lifts = held.iter().filter_map(|(_, t)| *t).max();
    let recheck_at = eval
        .next_transition
        .into_iter()
        .chain(lifts)
        .filter(|t| *t > now)
        .min();
    Deletion::Refused {
        message,
        announce,
        recheck_at,
    }
}
