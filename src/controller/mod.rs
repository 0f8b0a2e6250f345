//! The controllers: they read the cluster (through one cache per kind), call the engine and
//! apply its answer through the effects. No lifecycle logic lives here.

pub mod api_counter;
pub mod clock;
pub mod context;
pub mod feed;
pub mod late_events;
pub mod leader;
pub mod lenient;
pub mod notifier;
pub mod relevance;
pub mod runtime;
pub mod subscription;
pub mod tenant;
pub mod wakeups;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

use crate::api::{Subscription, Tenant};
use crate::engine::Policy;
use crate::metrics::Metrics;
use crate::workloads;
pub use clock::Clock;
use context::{Caches, Context, WorkloadStores};
use feed::{Feed, Opener, Outlet, feed};
use futures::channel::mpsc::UnboundedReceiver;
use runtime::{Budget, Runner, Spec};
pub use runtime::{Error, MAX_REQUEUE, Next, reconcile_span, requeue_at, requeue_wait};

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
    /// What keeps a tenant that holds licences from being deleted.
    pub deletion_guard: DeletionGuard,
}

/// What keeps a tenant that is frozen or holds licences from being deleted.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionGuard {
    /// A finalizer on every tenant (one metadata write per tenant), lifted by the operator once
    /// the tenant owns no licence in force or is annotated `mailsec.io/force-delete=true`.
    /// Works without anything else installed.
    #[default]
    Finalizer,
    /// The `mailsec-tenant-deletion` ValidatingAdmissionPolicy refuses the deletion at the API
    /// server (the chart installs it with `licenceGuard.enabled`): no write per tenant, and
    /// members of the licence-admin groups may delete anyway. Finalizers added earlier are
    /// still honoured and lifted as with `finalizer`.
    Admission,
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
    let feeds = watch(&client, settings.notifier.is_some());
    let ctx = context(client, &settings, &feeds, metrics);
    let Feeds {
        tenants,
        subscriptions,
        deployments,
        statefulsets,
        configmaps,
        namespaces,
        ..
    } = feeds;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let runner = Runner::new(settings.concurrency, stop);
    // The tenant and the subscription controllers share their reconciles in flight; the
    // notifier, which waits on mail servers, has its own.
    let lifecycle = Budget::new(2, settings.concurrency);

    let tenant_controller = tenant_controller(
        &ctx,
        &runner,
        metrics,
        lifecycle.clone(),
        TenantTriggers {
            tenants: tenants.outlets.tenant,
            cotenants: tenants.outlets.cotenants,
            subscriptions: subscriptions.outlets.tenants,
            deployments: deployments.outlets.tenants,
            statefulsets: statefulsets.outlets.tenants,
            configmaps: configmaps.outlets,
            namespaces: namespaces.outlets.tenants,
            departed_namespaces: namespaces.outlets.departures,
        },
    );

    let late_events = publish_late_events(&ctx, metrics, lifecycle.clone(), stop_tx.subscribe());

    let subscription_controller = subscription_controller(
        &ctx,
        &runner,
        metrics,
        lifecycle,
        subscriptions.outlets.subscription,
        tenants.outlets.subscriptions,
    );

    let notifier_controller = notifier_controller(
        &ctx,
        &runner,
        settings.notifier.clone(),
        metrics,
        tenants.outlets.notifier,
    );

    let orphans = workloads::release::release_orphans(
        ctx.client.clone(),
        ctx.recorder.clone(),
        deployments.outlets.departures,
        statefulsets.outlets.departures,
    );
    let reporters = report_undecodable(
        &ctx,
        metrics,
        Reports {
            tenants: tenants.reports,
            subscriptions: subscriptions.reports,
            deployments: deployments.reports,
            statefulsets: statefulsets.reports,
            configmaps: configmaps.reports,
            namespaces: namespaces.reports,
        },
    );
    let drivers = futures::future::join(
        futures::future::join5(
            tenants.driver,
            subscriptions.driver,
            deployments.driver,
            statefulsets.driver,
            configmaps.driver,
        ),
        futures::future::join(namespaces.driver, reporters),
    );
    tokio::select! {
        _ = drivers => tracing::error!("watches ended unexpectedly"),
        _ = orphans => tracing::error!("workload release loop ended unexpectedly"),
        _ = futures::future::join4(tenant_controller, subscription_controller, notifier_controller, late_events) => {},
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

/// Publishes the late milestone Events the tenant controller queues, with the lifecycle
/// controllers' spare capacity, until the controllers stop.
fn publish_late_events(
    ctx: &Arc<Context>,
    metrics: &Arc<Metrics>,
    budget: Budget,
    stop: tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let ctx = ctx.clone();
    let metrics = metrics.clone();
    async move {
        let publish = |event: late_events::LateEvent| {
            let ctx = ctx.clone();
            async move { tenant::publish_late_event(&ctx, event).await }
        };
        ctx.late_events
            .publish(&budget, publish, stop, |n| metrics.set_late_events(n))
            .await;
    }
}

/// The notifier: its own controller over the same Tenant cache (no second watch), with its own
/// queue, so slow mail servers never hold up the lifecycle. Resolves at once when it is off.
fn notifier_controller(
    ctx: &Arc<Context>,
    runner: &Runner,
    config: Option<crate::notifications::NotifierConfig>,
    metrics: &Arc<Metrics>,
    outlet: Option<Outlet<Tenant>>,
) -> futures::future::BoxFuture<'static, ()> {
    let (Some(config), Some(outlet)) = (config, outlet) else {
        return futures::future::ready(()).boxed();
    };
    let n = Arc::new(notifier::Notifier {
        ctx: ctx.clone(),
        config,
        metrics: metrics.clone(),
    });
    runner
        .run(
            ctx.tenants.clone(),
            themselves(outlet),
            Spec {
                name: "notifier",
                reconcile: notifier::reconcile,
                // `mailsec_reconcile_total` counts the lifecycle controllers only.
                metrics: None,
                budget: None,
            },
            n,
        )
        .boxed()
}

/// Each feed's reports of objects that can not be decoded.
struct Reports {
    tenants: UnboundedReceiver<lenient::Report>,
    subscriptions: UnboundedReceiver<lenient::Report>,
    deployments: UnboundedReceiver<lenient::Report>,
    statefulsets: UnboundedReceiver<lenient::Report>,
    configmaps: UnboundedReceiver<lenient::Report>,
    namespaces: UnboundedReceiver<lenient::Report>,
}

/// Objects that can not be decoded: skipped, reported and looked at again when they change.
async fn report_undecodable(ctx: &Context, metrics: &Arc<Metrics>, reports: Reports) {
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
            reporter::<Tenant>(ctx, metrics, Condition::Write).run(reports.tenants),
            reporter::<Subscription>(ctx, metrics, Condition::Write).run(reports.subscriptions),
            reporter::<Deployment>(ctx, metrics, Condition::None).run(reports.deployments),
            reporter::<StatefulSet>(ctx, metrics, Condition::None).run(reports.statefulsets),
            reporter::<ConfigMap>(ctx, metrics, Condition::None).run(reports.configmaps),
        ),
        reporter::<Namespace>(ctx, metrics, Condition::None).run(reports.namespaces),
    )
    .await;
}

/// The watches the controllers run on, one per kind, each with the streams its consumers read.
struct Feeds {
    tenants: Feed<Tenant, TenantOutlets>,
    subscriptions: Feed<Subscription, SubscriptionOutlets>,
    deployments: Feed<Deployment, LabelledOutlets<Deployment>>,
    statefulsets: Feed<StatefulSet, LabelledOutlets<StatefulSet>>,
    /// The operator's settings ConfigMaps: the tenant controller.
    configmaps: Feed<ConfigMap, Outlet<ConfigMap>>,
    namespaces: Feed<Namespace, LabelledOutlets<Namespace>>,
    /// Administrator address → tenants, kept by the Tenant feed.
    admin_index: context::AdminIndex,
    /// Tenant name → subscriptions, kept by the Subscription feed.
    subscription_index: context::SubscriptionIndex,
    /// The statuses the controllers wrote, whose echoes the feeds leave out.
    own_writes: relevance::OwnWrites,
}

/// Who reads the Tenant feed.
struct TenantOutlets {
    tenant: Outlet<Tenant>,
    /// The tenant controller again: the tenants a tenant's change concerns.
    cotenants: Outlet<Tenant>,
    subscriptions: Outlet<Tenant>,
    /// None when the notifier is off.
    notifier: Option<Outlet<Tenant>>,
}

/// Who reads the Subscription feed.
struct SubscriptionOutlets {
    subscription: Outlet<Subscription>,
    tenants: Outlet<Subscription>,
}

/// Who reads a feed of objects labelled for a tenant: the tenant controller, and whoever hears
/// of those that leave the watch (label removed, object deleted).
struct LabelledOutlets<K> {
    tenants: Outlet<K>,
    departures: futures::channel::mpsc::Receiver<K>,
}

impl<K> LabelledOutlets<K> {
    fn open(o: &mut Opener<K>) -> Self {
        Self {
            tenants: o.outlet(),
            departures: o.departures(),
        }
    }
}

/// How the Tenants and Subscriptions, a fleet's worth each, are listed: in pages (kube-runtime's
/// 500 objects), which an API server of 1.33 or later serves from its watch cache. A list at
/// "any" resource version is served whole instead: one response with every object, decoded at
/// once beside the cache it fills.
fn big_list() -> watcher::Config {
    watcher::Config::default()
}

/// Starts nothing: builds the watches (their drivers run in [`run_controllers`]).
fn watch(client: &Client, notifier: bool) -> Feeds {
    let own_writes = relevance::OwnWrites::default();
    let admin_index = context::AdminIndex::default();
    let tenants = {
        let index = admin_index.clone();
        feed::feed_indexed(
            client.clone(),
            big_list(),
            |o| TenantOutlets {
                tenant: o.outlet_when(relevance::tenant_for_itself(own_writes.clone())),
                cotenants: o.outlet_when(relevance::tenant_for_cotenants),
                subscriptions: o.outlet_when(relevance::tenant_for_subscriptions),
                notifier: notifier.then(|| o.outlet()),
            },
            move |event: &watcher::Event<Tenant>| index.observe(event),
        )
    };
    let subscription_index = context::SubscriptionIndex::default();
    let subscriptions = {
        let index = subscription_index.clone();
        feed::feed_indexed(
            client.clone(),
            big_list(),
            |o| SubscriptionOutlets {
                subscription: o.outlet_when(relevance::subscription_for_itself(own_writes.clone())),
                tenants: o.outlet_when(relevance::subscription_for_tenants),
            },
            move |event: &watcher::Event<Subscription>| index.observe(event),
        )
    };
    // Workloads that leave the watch (label removed) are handed back by `release_orphans`.
    let labelled = || {
        watcher::Config::default()
            .labels(crate::api::labels::TENANT_LABEL)
            .any_semantic()
    };
    let managed = format!(
        "{}={}",
        crate::api::labels::MANAGED_BY.0,
        crate::api::labels::MANAGED_BY.1
    );
    Feeds {
        tenants,
        subscriptions,
        admin_index,
        subscription_index,
        own_writes,
        deployments: feed(client.clone(), labelled(), LabelledOutlets::open),
        statefulsets: feed(client.clone(), labelled(), LabelledOutlets::open),
        configmaps: feed(
            client.clone(),
            watcher::Config::default().labels(&managed).any_semantic(),
            Opener::outlet,
        ),
        // Namespaces the platform assigned to a tenant (label `mailsec.io/tenant=<tenant>`).
        // Those that leave the watch (label removed, namespace deleted) are departures, which
        // also trigger the tenant they were assigned to.
        namespaces: feed(client.clone(), labelled(), LabelledOutlets::open),
    }
}

/// The controllers' shared state over the caches of `feeds`, which `metrics` reads too.
fn context(client: Client, settings: &Settings, feeds: &Feeds, metrics: &Metrics) -> Arc<Context> {
    let synced = feed::AllSynced::new([
        feeds.tenants.synced.clone(),
        feeds.subscriptions.synced.clone(),
        feeds.deployments.synced.clone(),
        feeds.statefulsets.synced.clone(),
        feeds.configmaps.synced.clone(),
        feeds.namespaces.synced.clone(),
    ]);
    metrics.attach_caches(
        feeds.tenants.store.clone(),
        feeds.subscriptions.store.clone(),
        synced.clone(),
        settings.policy.clone(),
    );
    let reporter = Reporter {
        controller: "mailsec-operator".into(),
        instance: settings.instance.clone(),
    };
    Arc::new(Context::new(
        client,
        settings.policy.clone(),
        Caches {
            tenants: feeds.tenants.store.clone(),
            subscriptions: feeds.subscriptions.store.clone(),
            subscription_index: feeds.subscription_index.clone(),
            admin_index: feeds.admin_index.clone(),
            workloads: WorkloadStores {
                deployments: feeds.deployments.store.clone(),
                statefulsets: feeds.statefulsets.store.clone(),
                configmaps: feeds.configmaps.store.clone(),
                namespaces: feeds.namespaces.store.clone(),
            },
            synced,
            own_writes: feeds.own_writes.clone(),
        },
        reporter,
        settings.clock.clone(),
        settings.deletion_guard,
    ))
}

/// What makes the tenant controller look at a tenant.
struct TenantTriggers {
    tenants: Outlet<Tenant>,
    cotenants: Outlet<Tenant>,
    subscriptions: Outlet<Subscription>,
    deployments: Outlet<Deployment>,
    statefulsets: Outlet<StatefulSet>,
    configmaps: Outlet<ConfigMap>,
    namespaces: Outlet<Namespace>,
    departed_namespaces: futures::channel::mpsc::Receiver<Namespace>,
}

/// The tenant controller: a tenant, and every change that concerns it.
fn tenant_controller(
    ctx: &Arc<Context>,
    runner: &Runner,
    metrics: &Arc<Metrics>,
    budget: Budget,
    triggers: TenantTriggers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let for_subscription = ctx.clone();
    let for_cotenants = ctx.clone();
    let for_namespace = ctx.clone();
    // The tenant each namespace was last seen assigned to: a label moved from one tenant to
    // another concerns both.
    let last_assigned = std::sync::Mutex::new(std::collections::HashMap::<String, String>::new());
    let namespace_changes = futures::stream::select(
        triggers.namespaces,
        triggers.departed_namespaces.map(Arc::new),
    );
    // Shared streams: the controllers get the feeds' `Arc`s, never a deep copy of an object.
    let triggers = futures::stream::select_all([
        themselves(triggers.tenants),
        related(triggers.subscriptions, move |sub: Arc<Subscription>| {
            tenants_of_subscription(&for_subscription, &sub)
        }),
        related(triggers.cotenants, move |t: Arc<Tenant>| {
            cotenants_of(&for_cotenants, &t)
        }),
        // A workload or settings ConfigMap belongs to the tenant named by its label.
        related(triggers.deployments, |d: Arc<Deployment>| {
            by_tenant_label(d.labels())
        }),
        related(triggers.statefulsets, |s: Arc<StatefulSet>| {
            by_tenant_label(s.labels())
        }),
        related(triggers.configmaps, |c: Arc<ConfigMap>| {
            by_tenant_label(c.labels())
        }),
        related(namespace_changes, move |ns: Arc<Namespace>| {
            tenants_of_namespace(&for_namespace, &last_assigned, &ns)
        }),
    ]);
    let spec = Spec {
        name: "tenant",
        reconcile: tenant::reconcile,
        metrics: Some(metrics.clone()),
        budget: Some(budget),
    };
    runner.run(ctx.tenants.clone(), triggers.boxed(), spec, ctx.clone())
}

/// Each object of `objects`, to be reconciled itself.
fn themselves<K>(objects: Outlet<K>) -> BoxStream<'static, ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Send + Sync + 'static,
{
    objects
        .map(|o| {
            let reference = ObjectRef::new(&o.name_any());
            match o.meta().namespace.as_deref() {
                Some(ns) => reference.within(ns),
                None => reference,
            }
        })
        .boxed()
}

/// The objects `related` names for each object of `objects`, to be reconciled.
fn related<O, K, I>(
    objects: impl futures::Stream<Item = Arc<O>> + Send + 'static,
    related: impl Fn(Arc<O>) -> I + Send + 'static,
) -> BoxStream<'static, ObjectRef<K>>
where
    K: kube::Resource + 'static,
    I: IntoIterator<Item = ObjectRef<K>>,
    I::IntoIter: Send + 'static,
{
    objects
        .flat_map(move |o| futures::stream::iter(related(o)))
        .boxed()
}

/// The tenant a workload or settings ConfigMap is labelled for.
fn by_tenant_label(labels: &std::collections::BTreeMap<String, String>) -> Vec<ObjectRef<Tenant>> {
    workloads::apply::tenant_of(labels)
        .map(ObjectRef::<Tenant>::new)
        .into_iter()
        .collect()
}

/// A subscription concerns the tenants it names (see `tenants_named`); and, through the
/// possible-duplicate hints that name it, the tenants that share administrators with them.
fn tenants_of_subscription(ctx: &Context, sub: &Subscription) -> Vec<ObjectRef<Tenant>> {
    let mut names: Vec<String> = crate::engine::subscription::tenants_named(sub)
        .map(str::to_string)
        .collect();
    let paired: Vec<String> = names
        .iter()
        .filter_map(|n| ctx.tenants.get(&ObjectRef::new(n)))
        .flat_map(|t| ctx.admin_index.neighbours_of(&t))
        .collect();
    names.extend(paired);
    names.sort();
    names.dedup();
    names.into_iter().map(|n| ObjectRef::new(&n)).collect()
}

/// A tenant's users count against subscriptions it shares with others: re-evaluate them. Its
/// administrators, users and settings decide whether it and the tenants it shares an address
/// with are possible duplicates: re-evaluate those it pairs with now (the index is already up
/// to date) and those it was paired with before (its last status).
fn cotenants_of(ctx: &Context, t: &Tenant) -> Vec<ObjectRef<Tenant>> {
    let name = t.name_any();
    let mut names: Vec<String> = ctx
        .subscription_index
        .subscriptions(&ctx.subscriptions, &name, |s| s.concerns(&name))
        .iter()
        .flat_map(|s| s.tenants().map(str::to_string).collect::<Vec<_>>())
        .filter(|n| *n != name)
        .collect();
    names.extend(ctx.admin_index.neighbours_of(t));
    names.extend(
        t.status
            .iter()
            .flat_map(|s| s.possible_duplicates.iter().map(|d| d.tenant.clone())),
    );
    names.sort();
    names.dedup();
    names.into_iter().map(|n| ObjectRef::new(&n)).collect()
}

/// A namespace assigned to a tenant, or no longer (label changed or removed): the tenant it is
/// assigned to, the one it was (`last_assigned`), and those that list it (their
/// SettingsApplied condition). Namespace changes are rare: scanning the tenants is cheap.
fn tenants_of_namespace(
    ctx: &Context,
    last_assigned: &std::sync::Mutex<std::collections::HashMap<String, String>>,
    ns: &Namespace,
) -> Vec<ObjectRef<Tenant>> {
    let name = ns.name_any();
    let now = workloads::apply::tenant_of(ns.labels()).map(str::to_string);
    let before = {
        let mut last = last_assigned.lock().unwrap_or_else(|p| p.into_inner());
        match &now {
            Some(t) => last.insert(name.clone(), t.clone()),
            None => last.remove(&name),
        }
    };
    let listing = ctx
        .tenants
        .state()
        .into_iter()
        .filter(|t| t.spec.workload_namespaces.iter().any(|n| n.0 == name))
        .map(|t| t.name_any());
    let mut names: Vec<String> = now.into_iter().chain(before).chain(listing).collect();
    names.sort();
    names.dedup();
    names.into_iter().map(|t| ObjectRef::new(&t)).collect()
}

/// The subscription controller: a subscription, and the tenants it concerns.
fn subscription_controller(
    ctx: &Arc<Context>,
    runner: &Runner,
    metrics: &Arc<Metrics>,
    budget: Budget,
    subscriptions: Outlet<Subscription>,
    tenants: Outlet<Tenant>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let for_tenant = ctx.clone();
    let triggers = futures::stream::select(
        themselves(subscriptions),
        // A tenant's existence and users decide its subscriptions' seat counts and references.
        related(tenants, move |t: Arc<Tenant>| {
            subscriptions_of_tenant(&for_tenant, &t)
        }),
    );
    let spec = Spec {
        name: "subscription",
        reconcile: subscription::reconcile,
        metrics: Some(metrics.clone()),
        budget: Some(budget),
    };
    runner.run(
        ctx.subscriptions.clone(),
        triggers.boxed(),
        spec,
        ctx.clone(),
    )
}

/// The subscriptions that name `t`, or that it held when last evaluated.
fn subscriptions_of_tenant(ctx: &Context, t: &Tenant) -> Vec<ObjectRef<Subscription>> {
    let name = t.name_any();
    ctx.subscription_index
        .subscriptions(&ctx.subscriptions, &name, |s| {
            s.concerns(&name)
                || s.status
                    .as_ref()
                    .is_some_and(|st| st.tenant.as_deref() == Some(name.as_str()))
        })
        .iter()
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}
