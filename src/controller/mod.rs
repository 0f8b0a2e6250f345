//! The controllers: they read the cluster (through one cache per kind), call the engine and
//! apply its answer through the effects. No lifecycle logic lives here.

pub mod api_counter;
pub mod clock;
pub mod context;
pub mod feed;
pub mod leader;
pub mod lenient;
pub mod runtime;
pub mod subscription;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

use crate::api::{Subscription, Tenant};
use crate::engine::Policy;
use crate::metrics::Metrics;
use crate::settings::apply as settings_map;
use crate::workloads;
pub use clock::Clock;
use context::{Caches, Context, WorkloadStores};
use feed::{feed, trigger};
use runtime::Spec;
pub use runtime::{Error, MAX_REQUEUE, reconcile_span, requeue_at, requeue_wait};

/// How long a shutdown waits for the reconciles in flight. A reconcile can wait without end (for
/// caches that can not fill while the API server is unreachable): the process must stop anyway.
/// What is cut short is redone by the next instance (a notification claimed but not recorded is
/// sent again with the same id).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
        workloads::apply::tenant_of(labels)
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

    let config = runtime::config(settings.concurrency);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (sub_store, sub_index) = (subs.store.clone(), subscription_index.clone());
    let (tenant_store, admins) = (tenants.store.clone(), admin_index.clone());
    let admins_for_subs = admin_index.clone();
    let tenant_controller = Controller::for_stream(trigger(t_main), tenants.store.clone())
        .with_config(config.clone())
        // A subscription concerns its owner, the tenants it is shared with, and the owner and
        // sharers it was last seen with (after a transfer or un-sharing); and, through the
        // possible-duplicate hints that name it, the tenants that share administrators with them.
        .watches_stream(trigger(s_for_tenants), move |sub: Subscription| {
            let mut names: Vec<String> = sub.tenants().map(str::to_string).collect();
            if let Some(status) = &sub.status {
                names.extend(status.tenant.iter().cloned());
                names.extend(status.shared_with.iter().cloned());
                // Both parties of the latest transfer (its confirmation milestones).
                if let Some(t) = status.transfers.last() {
                    names.push(t.from.clone());
                    names.push(t.to.clone());
                }
            }
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
            let now = workloads::apply::tenant_of(ns.labels()).map(str::to_string);
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
        .graceful_shutdown_on(stopped(stop_rx.clone()));
    let tenant_controller = runtime::run(
        tenant_controller,
        Spec {
            name: "tenant",
            reconcile: tenant::reconcile,
            metrics: Some(metrics.clone()),
        },
        ctx.clone(),
    );

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
        .graceful_shutdown_on(stopped(stop_rx.clone()));
    let subscription_controller = runtime::run(
        subscription_controller,
        Spec {
            name: "subscription",
            reconcile: subscription::reconcile,
            metrics: Some(metrics.clone()),
        },
        ctx.clone(),
    );

    // The notifier: its own controller over the same Tenant cache (no second watch), with its
    // own queue, so slow mail servers never hold up the lifecycle.
    let notifier_controller = match (settings.notifier.clone(), t_notify) {
        (Some(config), Some(outlet)) => {
            let n = Arc::new(crate::notifications::deliver::Notifier {
                ctx: ctx.clone(),
                config,
                metrics: metrics.clone(),
            });
            let notifier = Controller::for_stream(trigger(outlet), tenants.store.clone())
                .with_config(runtime::config(settings.concurrency))
                .graceful_shutdown_on(stopped(stop_rx.clone()));
            runtime::run(
                notifier,
                Spec {
                    name: "notifier",
                    reconcile: crate::notifications::deliver::reconcile,
                    // `mailsec_reconcile_total` counts the lifecycle controllers only.
                    metrics: None,
                },
                n,
            )
            .boxed()
        }
        _ => futures::future::ready(()).boxed(),
    };

    let orphans = workloads::release::release_orphans(
        ctx.client.clone(),
        ctx.recorder.clone(),
        deployments.departures,
        statefulsets.departures,
    );
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
