//! The controllers: they read the cluster (through one cache per kind), call the engine and
//! apply its answer through the effects. No lifecycle logic lives here.

pub mod api_counter;
pub mod clock;
pub mod context;
pub mod feed;
pub mod leader;
pub mod lenient;
pub mod subscription;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::Instrument;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

use crate::api::{Subscription, Tenant};
use crate::effects::events::{Notice, publish};
use crate::engine::Policy;
use crate::metrics::Metrics;
use crate::settings::apply as settings_map;
use crate::workloads::apply as workloads;
pub use clock::Clock;
use context::{Caches, Context, WorkloadStores};
use feed::{feed, trigger};

/// Re-evaluate at least this often even when nothing is scheduled (clock drift, missed events).
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// See the controller configuration in [`run`].
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Wake this long after a transition instant, so the engine sees it as reached.
const AFTER_TRANSITION: Duration = Duration::from_millis(5);
/// How long a shutdown waits for the reconciles in flight. A reconcile can wait without end (for
/// caches that can not fill while the API server is unreachable): the process must stop anyway.
/// What is cut short is redone by the next instance (a notification claimed but not recorded is
/// sent again with the same id).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a reconcile failed; it is retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not build a patch: {0}")]
    Patch(#[from] serde_json::Error),
    /// The status write failed (counted in `mailsec_status_writes_total{result="error"}`). Retried with
    /// backoff, but never later than `next_transition`: workloads are scaled by the reconcile
    /// whether or not its status write succeeds, so it must run at the instant they change.
    #[error("status write failed: {source}")]
    StatusWrite {
        source: kube::Error,
        next_transition: Option<DateTime<Utc>>,
    },
}

/// Requeue so the next reconcile runs right after the clock reads `next` (or after
/// [`MAX_REQUEUE`]); `now` is the clock's time (see [`requeue_wait`]).
pub fn requeue_at(next: Option<DateTime<Utc>>, now: DateTime<Utc>, clock: &Clock) -> Action {
    Action::requeue(requeue_wait(next, now, clock))
}

/// The real time to wait until the clock reads `next`, as [`requeue_at`] asks for it: under a
/// time lapse the clock span is divided by its speed.
pub fn requeue_wait(next: Option<DateTime<Utc>>, now: DateTime<Utc>, clock: &Clock) -> Duration {
    // The controller's debounce delays every scheduled reconcile by DEBOUNCE: ask that much
    // earlier, so the reconcile runs just after the instant (never before: see AFTER_TRANSITION).
    next.filter(|t| *t >= now)
        .map(|t| {
            (clock.real_until(t, now) + AFTER_TRANSITION)
                .saturating_sub(DEBOUNCE)
                .min(MAX_REQUEUE)
        })
        .unwrap_or(MAX_REQUEUE)
}

/// The span a reconcile runs in, so that its log lines name the object (`object.ref`, as
/// kube-runtime's own span, and `object.kind`/`object.name`).
pub fn reconcile_span<K: kube::Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        controller,
        "object.ref" = %ObjectRef::from_obj(obj),
        "object.kind" = %K::kind(&()),
        "object.name" = %obj.name_any(),
    )
}

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: Policy,
    /// Reconciles in flight at once, per controller.
    pub concurrency: u16,
    /// Name of this instance in Events (the pod name in a cluster).
    pub instance: Option<String>,
    /// The notifier (e-mail and webhook deliveries of milestones); None: off.
    pub notifier: Option<crate::notifications::NotifierConfig>,
    /// Where the controllers and the notifier read the time: real time, or a time lapse.
    pub clock: Clock,
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = format!("{}/{}", K::kind(&()), obj.name_any());
    let mut wait = ctx.backoff(&key);
    if let Error::StatusWrite {
        next_transition: Some(next),
        ..
    } = err
    {
        let now = ctx.now();
        let due = (*next - now).to_std().unwrap_or_default() + AFTER_TRANSITION;
        wait = wait.min(due.saturating_sub(DEBOUNCE).max(AFTER_TRANSITION));
    }
    tracing::warn!(object = %key, error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// A reconcile function that also records its result and duration in `metrics`.
fn timed<K, F, Fut>(
    controller: &'static str,
    metrics: &Arc<Metrics>,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> futures::future::BoxFuture<'static, Result<Action, Error>>
where
    K: kube::Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    let metrics = metrics.clone();
    move |obj, ctx| {
        let metrics = metrics.clone();
        let span = reconcile_span(controller, obj.as_ref());
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let result = reconcile(obj, ctx).await;
                metrics.reconciled(controller, result.is_ok(), started.elapsed());
                result
            }
            .instrument(span),
        )
    }
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    run_observed(client, settings, Arc::new(Metrics::default()), shutdown).await
}

/// [`run`], reporting to `metrics`: the caches (read at scrape time and for readiness) and each
/// reconcile's result and duration. The caches are detached again when the controllers stop.
pub async fn run_observed(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    run_controllers(client, settings, &metrics, shutdown).await;
    metrics.detach_caches();
}

async fn run_controllers(
    client: Client,
    settings: Settings,
    metrics: &Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    // Tenants feed: the tenant controller, its co-tenant trigger, the subscription controller,
    // and the notifier when it runs.
    let consumers = if settings.notifier.is_some() { 4 } else { 3 };
    let admin_index = context::AdminIndex::default();
    let tenants = {
        let index = admin_index.clone();
        feed::feed_indexed(
            client.clone(),
            watcher::Config::default().any_semantic(),
            consumers,
            false,
            move |event: &watcher::Event<Tenant>| index.observe(event),
        )
    };
    // Subscriptions feed: the subscription controller, the tenant controller.
    let subscription_index = context::SubscriptionIndex::default();
    let subs = {
        let index = subscription_index.clone();
        feed::feed_indexed(
            client.clone(),
            watcher::Config::default().any_semantic(),
            2,
            false,
            move |event: &watcher::Event<Subscription>| index.observe(event),
        )
    };
    // Workloads labelled for a tenant, and the operator's settings ConfigMaps: the tenant controller.
    // Workloads that leave the watch (label removed) are handed back by `release_orphans`.
    let labelled = || {
        watcher::Config::default()
            .labels(crate::workloads::plan::TENANT_LABEL)
            .any_semantic()
    };
    let deployments = feed::<Deployment>(client.clone(), labelled(), 1, true);
    let statefulsets = feed::<StatefulSet>(client.clone(), labelled(), 1, true);
    let managed = format!(
        "{}={}",
        settings_map::MANAGED_BY.0,
        settings_map::MANAGED_BY.1
    );
    let configmaps = feed::<ConfigMap>(
        client.clone(),
        watcher::Config::default().labels(&managed).any_semantic(),
        1,
        false,
    );
    // Namespaces the platform assigned to a tenant (label `mailsec.io/tenant=<tenant>`): the
    // tenant controller. Those that leave the watch (label removed, namespace deleted) are
    // departures, which also trigger the tenant they were assigned to.
    let namespaces = feed::<Namespace>(client.clone(), labelled(), 1, true);

    let reporter = Reporter {
        controller: "mailsec-operator".into(),
        instance: settings.instance.clone(),
    };
    let synced = feed::AllSynced::new([
        tenants.synced.clone(),
        subs.synced.clone(),
        deployments.synced.clone(),
        statefulsets.synced.clone(),
        configmaps.synced.clone(),
        namespaces.synced.clone(),
    ]);
    metrics.attach_caches(
        tenants.store.clone(),
        subs.store.clone(),
        synced.clone(),
        settings.policy.clone(),
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.policy.clone(),
        Caches {
            tenants: tenants.store.clone(),
            subscriptions: subs.store.clone(),
            subscription_index: subscription_index.clone(),
            admin_index: admin_index.clone(),
            workloads: WorkloadStores {
                deployments: deployments.store.clone(),
                statefulsets: statefulsets.store.clone(),
                configmaps: configmaps.store.clone(),
                namespaces: namespaces.store.clone(),
            },
            synced,
        },
        reporter,
        settings.clock.clone(),
    ));
    let by_tenant_label = |labels: &std::collections::BTreeMap<String, String>| {
        workloads::tenant_of(labels)
            .map(ObjectRef::<Tenant>::new)
            .into_iter()
            .collect::<Vec<_>>()
    };

    let mut tenant_outlets = tenants.outlets.into_iter();
    let mut sub_outlets = subs.outlets.into_iter();
    let (Some(t_main), Some(t_cotenants), Some(t_for_subs)) = (
        tenant_outlets.next(),
        tenant_outlets.next(),
        tenant_outlets.next(),
    ) else {
        return;
    };
    let (Some(s_main), Some(s_for_tenants)) = (sub_outlets.next(), sub_outlets.next()) else {
        return;
    };
    let (Some(d_for_tenants), Some(st_for_tenants), Some(cm_for_tenants)) = (
        deployments.outlets.into_iter().next(),
        statefulsets.outlets.into_iter().next(),
        configmaps.outlets.into_iter().next(),
    ) else {
        return;
    };
    let t_notify = tenant_outlets.next();
    let Some(ns_for_tenants) = namespaces.outlets.into_iter().next() else {
        return;
    };
    let ns_changes = {
        let departed = namespaces
            .departures
            .map(|rx| rx.map(Ok).boxed())
            .unwrap_or_else(|| futures::stream::pending().boxed());
        futures::stream::select(trigger(ns_for_tenants), departed)
    };
    // The tenant each namespace was last seen assigned to: a label moved from one tenant to
    // another concerns both.
    let last_assigned = std::sync::Mutex::new(std::collections::HashMap::<String, String>::new());
    let tenants_for_ns = tenants.store.clone();

    // A short debounce lets a Tenant and its Subscriptions applied together (one `kubectl apply`,
    // one GitOps sync) be evaluated together, instead of the tenant first looking uncovered.
    // It delays every reconcile by that much, scheduled transitions included.
    let config = ControllerConfig::default()
        .concurrency(settings.concurrency)
        .debounce(DEBOUNCE);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (sub_store, sub_index) = (subs.store.clone(), subscription_index.clone());
    let (tenant_store, admins) = (tenants.store.clone(), admin_index.clone());
    let admins_for_subs = admin_index.clone();
    let tenant_controller = Controller::for_stream(trigger(t_main), tenants.store.clone())
        .with_config(config.clone())
        // A subscription concerns the tenants it names (see `tenants_named`); and, through the
        // possible-duplicate hints that name it, the tenants that share administrators with them.
        .watches_stream(trigger(s_for_tenants), move |sub: Subscription| {
            let mut names: Vec<String> = crate::engine::subscription::tenants_named(&sub)
                .map(str::to_string)
                .collect();
            let paired: Vec<String> = names
                .iter()
                .filter_map(|n| tenant_store.get(&ObjectRef::new(n)))
                .flat_map(|t| admins_for_subs.neighbours_of(&t))
                .collect();
            names.extend(paired);
            names.sort();
            names.dedup();
            names.into_iter().map(|n| ObjectRef::<Tenant>::new(&n))
        })
        // A tenant's users count against subscriptions it shares with others: re-evaluate them.
        // Its administrators, users and settings decide whether it and the tenants it shares an
        // address with are possible duplicates: re-evaluate those it pairs with now (the index
        // is already up to date) and those it was paired with before (its last status).
        .watches_stream(trigger(t_cotenants), move |t: Tenant| {
            let name = t.name_any();
            let mut names: Vec<String> = sub_index
                .subscriptions(&sub_store, &name, |s| s.concerns(&name))
                .iter()
                .flat_map(|s| s.tenants().map(str::to_string).collect::<Vec<_>>())
                .filter(|n| *n != name)
                .collect();
            names.extend(admins.neighbours_of(&t));
            names.extend(
                t.status
                    .iter()
                    .flat_map(|s| s.possible_duplicates.iter().map(|d| d.tenant.clone())),
            );
            names.sort();
            names.dedup();
            names.into_iter().map(|n| ObjectRef::<Tenant>::new(&n))
        })
        // A workload or settings ConfigMap belongs to the tenant named by its label.
        .watches_stream(trigger(d_for_tenants), move |d: Deployment| {
            by_tenant_label(d.labels())
        })
        .watches_stream(trigger(st_for_tenants), move |s: StatefulSet| {
            by_tenant_label(s.labels())
        })
        .watches_stream(trigger(cm_for_tenants), move |c: ConfigMap| {
            by_tenant_label(c.labels())
        })
        // A namespace assigned to a tenant, or no longer (label changed or removed): the
        // tenant it is assigned to, the one it was, and those that list it (their
        // SettingsApplied condition). Namespace changes are rare: scanning the tenants is cheap.
        .watches_stream(ns_changes, move |ns: Namespace| {
            let name = ns.name_any();
            let now = workloads::tenant_of(ns.labels()).map(str::to_string);
            let before = {
                let mut last = last_assigned.lock().unwrap_or_else(|p| p.into_inner());
                match &now {
                    Some(t) => last.insert(name.clone(), t.clone()),
                    None => last.remove(&name),
                }
            };
            let listing = tenants_for_ns
                .state()
                .into_iter()
                .filter(|t| t.spec.workload_namespaces.iter().any(|n| n.0 == name))
                .map(|t| t.name_any());
            let mut names: Vec<String> = now.into_iter().chain(before).chain(listing).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|t| ObjectRef::<Tenant>::new(&t))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            timed("tenant", metrics, tenant::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    Ok((obj, _)) => ctx.succeeded(&format!("Tenant/{}", obj.name)),
                    Err(err) => tracing::debug!(error = %err, "tenant controller"),
                }
            }
        });

    let subs_store_for_map = subs.store.clone();
    let subscription_controller = Controller::for_stream(trigger(s_main), subs.store.clone())
        .with_config(config)
        // A tenant's existence and users decide its subscriptions' seat counts and references.
        .watches_stream(trigger(t_for_subs), move |t: Tenant| {
            let name = t.name_any();
            subscription_index
                .subscriptions(&subs_store_for_map, &name, |s| {
                    s.concerns(&name)
                        || s.status
                            .as_ref()
                            .is_some_and(|st| st.tenant.as_deref() == Some(name.as_str()))
                })
                .iter()
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            timed("subscription", metrics, subscription::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    Ok((obj, _)) => ctx.succeeded(&format!("Subscription/{}", obj.name)),
                    Err(err) => tracing::debug!(error = %err, "subscription controller"),
                }
            }
        });

    // The notifier: its own controller over the same Tenant cache (no second watch), with its
    // own queue, so slow mail servers never hold up the lifecycle.
    let notifier_controller = match (settings.notifier.clone(), t_notify) {
        (Some(config), Some(outlet)) => {
            let n = Arc::new(crate::notifications::deliver::Notifier {
                ctx: ctx.clone(),
                config,
                metrics: metrics.clone(),
            });
            Controller::for_stream(trigger(outlet), tenants.store.clone())
                .with_config(
                    ControllerConfig::default()
                        .concurrency(settings.concurrency)
                        .debounce(DEBOUNCE),
                )
                .graceful_shutdown_on(stopped(stop_rx.clone()))
                .run(
                    |tenant: Arc<Tenant>, n: Arc<crate::notifications::deliver::Notifier>| {
                        let span = reconcile_span("notifier", tenant.as_ref());
                        crate::notifications::deliver::reconcile(tenant, n).instrument(span)
                    },
                    crate::notifications::deliver::error_policy,
                    n.clone(),
                )
                .for_each(move |result| {
                    let n = n.clone();
                    async move {
                        match result {
                            Ok((obj, _)) => n.ctx.succeeded(&format!("Notifier/{}", obj.name)),
                            Err(err) => tracing::debug!(error = %err, "notifier"),
                        }
                    }
                })
                .boxed()
        }
        _ => futures::future::ready(()).boxed(),
    };

    let orphans = release_orphans(ctx.clone(), deployments.departures, statefulsets.departures);
    // Objects that can not be decoded: skipped, reported and looked at again when they change.
    let reporters = {
        use lenient::{Condition, Reporter};
        fn reporter<K>(ctx: &Context, metrics: &Arc<Metrics>, condition: Condition) -> Reporter<K> {
            Reporter {
                client: ctx.client.clone(),
                recorder: ctx.recorder.clone(),
                metrics: metrics.clone(),
                condition,
                _kind: std::marker::PhantomData,
            }
        }
        futures::future::join(
            futures::future::join5(
                reporter::<Tenant>(&ctx, metrics, Condition::Write).run(tenants.reports),
                reporter::<Subscription>(&ctx, metrics, Condition::Write).run(subs.reports),
                reporter::<Deployment>(&ctx, metrics, Condition::None).run(deployments.reports),
                reporter::<StatefulSet>(&ctx, metrics, Condition::None).run(statefulsets.reports),
                reporter::<ConfigMap>(&ctx, metrics, Condition::None).run(configmaps.reports),
            ),
            reporter::<Namespace>(&ctx, metrics, Condition::None).run(namespaces.reports),
        )
    };
    let feeds = futures::future::join(
        futures::future::join5(
            tenants.driver,
            subs.driver,
            deployments.driver,
            statefulsets.driver,
            configmaps.driver,
        ),
        futures::future::join(namespaces.driver, reporters),
    );
    tokio::select! {
        _ = feeds => tracing::error!("watches ended unexpectedly"),
        _ = orphans => tracing::error!("workload release loop ended unexpectedly"),
        _ = futures::future::join3(tenant_controller, subscription_controller, notifier_controller) => {},
        _ = async {
            shutdown.await;
            tracing::info!("shutting down: finishing reconciles in flight");
            let _ = stop_tx.send(true);
            // Give the controllers their graceful shutdown, then return, but not after the grace.
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still in flight after the shutdown grace: stopping anyway");
        } => {},
    }
}

/// Hands back workloads that left the watch because their `mailsec.io/tenant` label was removed
/// while the operator had them scaled down: they get their replica count back.
async fn release_orphans(
    ctx: Arc<Context>,
    deployments: Option<futures::channel::mpsc::Receiver<Deployment>>,
    statefulsets: Option<futures::channel::mpsc::Receiver<StatefulSet>>,
) {
    let (Some(deployments), Some(statefulsets)) = (deployments, statefulsets) else {
        return std::future::pending().await;
    };
    let departed = futures::stream::select(
        deployments.map(|d| workloads::deployment_facts(&d)),
        statefulsets.map(|s| workloads::statefulset_facts(&s)),
    );
    futures::pin_mut!(departed);
    while let Some(last_seen) = departed.next().await {
        if !last_seen.is_suspended() {
            continue;
        }
        // Deleted objects are gone; only one that still exists, unlabelled, is handed back.
        let (exists, labelled, current) = match current_workload(&ctx.client, &last_seen).await {
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
        match workloads::release(&ctx.client, &facts).await {
            Ok(Some(n)) => {
                tracing::info!(workload = %facts.id(), replicas = n, "restored a workload whose mailsec.io/tenant label was removed");
                let note = format!(
                    "The mailsec.io/tenant label was removed while the workload was suspended: restored to {n} replicas and handed back"
                );
                publish(
                    &ctx.recorder,
                    &reference,
                    &Notice::normal("Released", "Release", note),
                )
                .await;
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
    w: &crate::workloads::plan::Workload,
) -> Result<
    Option<(
        crate::workloads::plan::Workload,
        bool,
        k8s_openapi::api::core::v1::ObjectReference,
    )>,
    kube::Error,
> {
    use kube::Resource;
    if w.kind == "StatefulSet" {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &w.namespace);
        Ok(api.get_opt(&w.name).await?.map(|s| {
            (
                workloads::statefulset_facts(&s),
                workloads::tenant_of(s.labels()).is_some(),
                s.object_ref(&()),
            )
        }))
    } else {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &w.namespace);
        Ok(api.get_opt(&w.name).await?.map(|d| {
            (
                workloads::deployment_facts(&d),
                workloads::tenant_of(d.labels()).is_some(),
                d.object_ref(&()),
            )
        }))
    }
}
