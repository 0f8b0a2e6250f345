//! The controllers: they read the cluster (through one cache per kind), call the engine and
//! apply its answer through the effects. No lifecycle logic lives here.

pub mod api_counter;
pub mod context;
pub mod feed;
pub mod notifier;
pub mod subscription;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::api::{Subscription, Tenant};
use crate::engine::Policy;
use context::Context;
use feed::{feed, trigger};

/// Re-evaluate at least this often even when nothing is scheduled (clock drift, missed events).
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// See the controller configuration in [`run`].
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Wake this long after a transition instant, so the engine sees it as reached.
const AFTER_TRANSITION: Duration = Duration::from_millis(5);

/// Why a reconcile failed; it is retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not build a patch: {0}")]
    Patch(#[from] serde_json::Error),
}

/// Requeue so the next reconcile runs right after `next` (or after [`MAX_REQUEUE`]).
pub fn requeue_at(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Action {
    let wait = next
        .and_then(|t| (t - now).to_std().ok())
        .map(|d| (d + AFTER_TRANSITION).min(MAX_REQUEUE))
        .unwrap_or(MAX_REQUEUE);
    Action::requeue(wait)
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
    pub notifier: Option<crate::notify::NotifierConfig>,
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = format!("{}/{}", K::kind(&()), obj.name_any());
    let wait = ctx.backoff(&key);
    tracing::warn!(object = %key, error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let tenants_api: Api<Tenant> = Api::all(client.clone());
    let subs_api: Api<Subscription> = Api::all(client.clone());
    // Tenants feed: the tenant controller, its co-tenant trigger, the subscription controller,
    // and the notifier when it runs.
    let consumers = if settings.notifier.is_some() { 4 } else { 3 };
    let tenants = feed(
        tenants_api,
        watcher::Config::default().any_semantic(),
        consumers,
    );
    // Subscriptions feed: the subscription controller, the tenant controller.
    let subs = feed(subs_api, watcher::Config::default().any_semantic(), 2);

    let reporter = Reporter {
        controller: "mailsec-operator".into(),
        instance: settings.instance.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.policy.clone(),
        tenants.store.clone(),
        subs.store.clone(),
        Recorder::new(client.clone(), reporter),
    ));

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
    let t_notify = tenant_outlets.next();

    // A short debounce lets a Tenant and its Subscriptions applied together (one `kubectl apply`,
    // one GitOps sync) be evaluated together, instead of the tenant first looking uncovered.
    // Scheduled transitions are not delayed by it.
    let config = ControllerConfig::default()
        .concurrency(settings.concurrency)
        .debounce(DEBOUNCE);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let sub_store = subs.store.clone();
    let tenant_controller = Controller::for_stream(trigger(t_main), tenants.store.clone())
        .with_config(config.clone())
        // A subscription concerns its owner, the tenants it is shared with, and the owner and
        // sharers it was last seen with (after a transfer or un-sharing).
        .watches_stream(trigger(s_for_tenants), |sub: Subscription| {
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
            names.sort();
            names.dedup();
            names.into_iter().map(|n| ObjectRef::<Tenant>::new(&n))
        })
        // A tenant's users count against subscriptions it shares with others: re-evaluate them.
        .watches_stream(trigger(t_cotenants), move |t: Tenant| {
            let name = t.name_any();
            let mut names: Vec<String> = sub_store
                .state()
                .iter()
                .filter(|s| s.concerns(&name))
                .flat_map(|s| s.tenants().map(str::to_string).collect::<Vec<_>>())
                .filter(|n| *n != name)
                .collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| ObjectRef::<Tenant>::new(&n))
        })
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(tenant::reconcile, error_policy, ctx.clone())
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
            subs_store_for_map
                .state()
                .iter()
                .filter(|s| {
                    s.concerns(&name)
                        || s.status
                            .as_ref()
                            .is_some_and(|st| st.tenant.as_deref() == Some(name.as_str()))
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(subscription::reconcile, error_policy, ctx.clone())
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
            let n = Arc::new(notifier::Notifier {
                ctx: ctx.clone(),
                config,
            });
            Controller::for_stream(trigger(outlet), tenants.store.clone())
                .with_config(
                    ControllerConfig::default()
                        .concurrency(settings.concurrency)
                        .debounce(DEBOUNCE),
                )
                .graceful_shutdown_on(stopped(stop_rx.clone()))
                .run(notifier::reconcile, notifier::error_policy, n.clone())
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

    let feeds = futures::future::join(tenants.driver, subs.driver);
    tokio::select! {
        _ = feeds => tracing::error!("watches ended unexpectedly"),
        _ = futures::future::join3(tenant_controller, subscription_controller, notifier_controller) => {},
        _ = async {
            shutdown.await;
            tracing::info!("shutting down: finishing reconciles in flight");
            let _ = stop_tx.send(true);
            // Give the controllers their graceful shutdown, then return.
            std::future::pending::<()>().await;
        } => {},
    }
}
