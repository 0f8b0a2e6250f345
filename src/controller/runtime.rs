//! What every controller (tenant, subscription, notifier) runs with: one configuration, one
//! reconcile wrapper (span, metrics), one error policy, one result handler and one requeue
//! helper. The debounce and the requeue that compensates it live side by side here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kube::api::DynamicObject;
use kube::runtime::controller::{self, Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::clock::Clock;
use super::context::Context;
use super::wakeups::Wakeups;
use crate::metrics::Metrics;

/// Re-evaluate at least this often even when nothing is scheduled (clock drift, missed events).
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// See [`config`].
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
    #[error("notification outbox write failed: {0}")]
    Outbox(#[from] crate::notifications::record::WriteError),
    /// The status write failed (counted in `mailsec_status_writes_total{result="error"}`). Retried with
    /// backoff, but never later than `next_transition`: workloads are scaled by the reconcile
    /// whether or not its status write succeeds, so it must run at the instant they change.
    #[error("status write failed: {source}")]
    StatusWrite {
        source: kube::Error,
        next_transition: Option<DateTime<Utc>>,
    },
}

/// Every controller's configuration.
///
/// A short debounce lets a Tenant and its Subscriptions applied together (one `kubectl apply`,
/// one GitOps sync) be evaluated together, instead of the tenant first looking uncovered.
/// It delays every reconcile by that much, scheduled transitions included: [`requeue_wait`]
/// asks that much earlier.
fn config(concurrency: u16) -> ControllerConfig {
    ControllerConfig::default()
        .concurrency(concurrency)
        .debounce(DEBOUNCE)
}

/// When a controller looks at an object again of its own accord (any change to the object, or
/// to what its reconcile reads, is looked at anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// After this much real time.
    After(Duration),
    /// Only when something changes.
    OnChange,
}

/// The next reconcile right after the clock reads `next` (or after [`MAX_REQUEUE`]); `now` is
/// the clock's time (see [`requeue_wait`]).
pub fn requeue_at(next: Option<DateTime<Utc>>, now: DateTime<Utc>, clock: &Clock) -> Next {
    Next::After(requeue_wait(next, now, clock))
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

/// An object as one controller sees it: the key of its error backoff. The same object has a
/// backoff in each controller that reconciles it (a Tenant in the tenant controller and in the
/// notifier).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackoffKey {
    controller: &'static str,
    object: ObjectRef<DynamicObject>,
}

impl BackoffKey {
    pub fn new<K: Resource<DynamicType = ()>>(
        controller: &'static str,
        object: ObjectRef<K>,
    ) -> Self {
        Self {
            controller,
            object: object.erase(),
        }
    }
}

impl std::fmt::Display for BackoffKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.object)
    }
}

/// The shared state a controller's reconciles get, from which the runtime reads the clock and
/// the backoff.
pub trait Shared: Send + Sync + 'static {
    fn context(&self) -> &Context;
}

impl Shared for Context {
    fn context(&self) -> &Context {
        self
    }
}

/// The span a reconcile runs in, so that its log lines name the object (`object.ref`, as
/// kube-runtime's own span, and `object.kind`/`object.name`).
pub fn reconcile_span<K: Resource<DynamicType = ()>>(
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

/// One controller as [`Runner::run`] drives it.
pub struct Spec<F> {
    /// Its name in spans, logs, metrics and backoff keys.
    pub name: &'static str,
    pub reconcile: F,
    /// Where its reconciles' results and durations are counted; None: not counted.
    pub metrics: Option<Arc<Metrics>>,
    /// The reconciles in flight it shares with other controllers; None: its own
    /// `--concurrency`.
    pub budget: Option<Budget>,
}

/// Reconciles in flight shared by several controllers: `concurrency` for each of them, lent to
/// whichever has work, taken in the order asked (FIFO). On a cold start the subscription
/// controller has twice the tenant controller's objects; without lending, the last third of it
/// ran with half the requests in flight that the API server could take (measured: 130.7 s
/// against 119.3 s with lending, 30,000 objects).
#[derive(Clone, Debug)]
pub struct Budget {
    permits: Arc<tokio::sync::Semaphore>,
    /// How many: any one controller may use them all.
    size: u16,
}

impl Budget {
    /// The budget of `controllers` controllers of `concurrency` reconciles in flight each.
    pub fn new(controllers: u16, concurrency: u16) -> Self {
        let size = controllers.max(1).saturating_mul(concurrency.max(1));
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(usize::from(size))),
            size,
        }
    }

    /// A permit nobody is waiting for, if there is one: capacity no reconcile asks for now.
    pub fn spare(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A permit in turn with the reconciles (FIFO); None only if the budget were closed, which
    /// it never is.
    pub async fn in_line(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// How every controller runs: its reconciles in flight, and the signal of a graceful shutdown.
pub struct Runner {
    /// Reconciles in flight per controller, for one that shares no [`Budget`].
    concurrency: u16,
    /// Turns true when the controllers are to finish their reconciles in flight and stop.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Runner {
    pub fn new(concurrency: u16, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { concurrency, stop }
    }

    /// Runs a controller over the objects of `store` until it shuts down: every object
    /// `triggers` names is reconciled, through a [`Wakeups`] queue that also holds each object's
    /// next reconcile. Configured by [`config`], each reconcile in its span and counted,
    /// failures retried by [`error_policy`], results handled by [`handle_result`].
    pub fn run<K, C, F, Fut>(
        &self,
        store: Store<K>,
        triggers: BoxStream<'static, ObjectRef<K>>,
        spec: Spec<F>,
        ctx: Arc<C>,
    ) -> impl Future<Output = ()> + Send + use<K, C, F, Fut>
    where
        K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
        K: Send + Sync + 'static,
        C: Shared,
        F: Fn(Arc<K>, Arc<C>) -> Fut + Copy + Send + 'static,
        Fut: Future<Output = Result<Next, Error>> + Send + 'static,
    {
        let name = spec.name;
        let results_ctx = ctx.clone();
        let concurrency = spec.budget.as_ref().map_or(self.concurrency, |b| b.size);
        let wakeups = Wakeups::<K>::default();
        // Everything reaches kube-runtime through the queue: its own trigger stream is empty.
        Controller::for_shared_stream(futures::stream::empty(), store)
            .reconcile_on(wakeups.clone().due(triggers))
            .with_config(config(concurrency))
            .graceful_shutdown_on(stopped(self.stop.clone()))
            .run(
                reconciler(spec, wakeups.clone()),
                error_policy(name, wakeups),
                ctx,
            )
            .for_each(move |result| {
                handle_result(name, results_ctx.context(), result);
                std::future::ready(())
            })
    }
}

/// Resolves once `stop` turns true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `spec.reconcile` within its budget if it shares one, in the span naming the object, its
/// result and duration (from when it had its turn) counted; the next reconcile it asks for is
/// queued in `wakeups` (kube-runtime is told to wait for a change).
fn reconciler<K, C, F, Fut>(
    spec: Spec<F>,
    wakeups: Wakeups<K>,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, Error>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    C: Shared,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Next, Error>> + Send + 'static,
{
    let Spec {
        name,
        reconcile,
        metrics,
        budget,
    } = spec;
    move |obj, ctx| {
        let metrics = metrics.clone();
        let budget = budget.clone();
        let span = reconcile_span(name, obj.as_ref());
        let reference = ObjectRef::from_obj(obj.as_ref());
        // This run covers whatever was queued for the object until now.
        wakeups.started(&reference);
        let wakeups = wakeups.clone();
        Box::pin(
            async move {
                let _turn = match budget {
                    Some(budget) => budget.in_line().await,
                    None => None,
                };
                let started = std::time::Instant::now();
                let result = reconcile(obj, ctx).await;
                if let Some(metrics) = metrics {
                    metrics.reconciled(name, result.is_ok(), started.elapsed());
                }
                if let Ok(Next::After(wait)) = &result {
                    wakeups.wake_at(&reference, tokio::time::Instant::now() + *wait);
                }
                result.map(|_| Action::await_change())
            }
            .instrument(span),
        )
    }
}

/// The error policy of every controller: exponential backoff per object, but a failed status
/// write is retried no later than the transition it scheduled. The retry is queued in
/// `wakeups`, as every other.
fn error_policy<K, C>(
    controller: &'static str,
    wakeups: Wakeups<K>,
) -> impl Fn(Arc<K>, &Error, Arc<C>) -> Action
where
    K: Resource<DynamicType = ()>,
    C: Shared,
{
    move |obj, err, ctx| {
        let ctx = ctx.context();
        let reference = ObjectRef::from_obj(obj.as_ref());
        let key = BackoffKey::new(controller, reference.clone());
        let mut wait = ctx.backoff(&key);
        if let Error::StatusWrite {
            next_transition: Some(next),
            ..
        } = err
        {
            wait = retry_before(wait, *next, ctx.now(), &ctx.clock);
        }
        tracing::warn!(controller, object = %key, error = %err, retry_in = ?wait, "reconcile failed");
        wakeups.wake_at(&reference, tokio::time::Instant::now() + wait);
        Action::await_change()
    }
}

/// A retry after `backoff`, but not later than just after the clock reads `next` (a transition
/// must land on time); under a time lapse the clock span until `next` is divided by its speed.
fn retry_before(
    backoff: Duration,
    next: DateTime<Utc>,
    now: DateTime<Utc>,
    clock: &Clock,
) -> Duration {
    let due = clock.real_until(next, now) + AFTER_TRANSITION;
    backoff.min(due.saturating_sub(DEBOUNCE).max(AFTER_TRANSITION))
}

/// What every controller does with a reconcile's result: a success forgets the object's
/// failures; a failure was already logged by [`error_policy`], anything else is logged here.
fn handle_result<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    ctx: &Context,
    result: Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>,
) {
    match result {
        Ok((obj, _)) => ctx.succeeded(&BackoffKey::new(controller, obj)),
        Err(err) => tracing::debug!(controller, error = %err, "controller error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Tenant;

    #[test]
    fn a_failed_status_write_is_retried_by_its_transition_in_the_clocks_time() {
        let now: DateTime<Utc> = "2026-11-30T00:00:00Z".parse().expect("instant");
        let backoff = Duration::from_secs(300);
        let in_an_hour = now + chrono::TimeDelta::hours(1);
        let in_a_minute = now + chrono::TimeDelta::minutes(1);
        let real = Clock::Real;
        assert_eq!(retry_before(backoff, in_an_hour, now, &real), backoff);
        assert_eq!(
            retry_before(backoff, in_a_minute, now, &real),
            Duration::from_secs(60) + AFTER_TRANSITION - DEBOUNCE
        );
        assert_eq!(
            retry_before(backoff, now - chrono::TimeDelta::minutes(1), now, &real),
            AFTER_TRANSITION,
            "a transition already passed: retried at once"
        );
        // 3600 times faster: an hour of the clock is one real second.
        let lapse = Clock::lapse(now, 3600).expect("a valid lapse");
        let lapse_now = lapse.now();
        let wait = retry_before(
            backoff,
            lapse_now + chrono::TimeDelta::hours(1),
            lapse_now,
            &lapse,
        );
        assert!(
            wait <= Duration::from_secs(1) + AFTER_TRANSITION,
            "under a time lapse the cap is in real time: {wait:?}"
        );
    }

    /// A context the reconcile under test never reads.
    struct Unread;
    impl Shared for Unread {
        fn context(&self) -> &Context {
            unreachable!("the reconciler hands the context on without reading it")
        }
    }

    static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static MOST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    async fn slow(_: Arc<Tenant>, _: Arc<Unread>) -> Result<Next, Error> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = IN_FLIGHT.fetch_add(1, SeqCst) + 1;
        MOST.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        IN_FLIGHT.fetch_sub(1, SeqCst);
        Ok(Next::OnChange)
    }

    #[tokio::test]
    async fn the_controllers_reconciles_share_one_budget() {
        use std::sync::atomic::Ordering::SeqCst;
        let budget = Budget::new(2, 2);
        assert_eq!(budget.size, 4, "either controller may use it all");
        let spec = |name, budget| Spec {
            name,
            reconcile: slow,
            metrics: None,
            budget,
        };
        let mut tenants = reconciler(spec("tenant", Some(budget.clone())), Wakeups::default());
        let mut subscriptions = reconciler(spec("subscription", Some(budget)), Wakeups::default());
        let object = || Arc::new(crate::fixtures::tenant("acme", &["email-safeguard"], 1));
        // Six of one controller's and two of the other's asked at once: four in flight at most.
        let mut turns: Vec<_> = (0..6)
            .map(|_| subscriptions(object(), Arc::new(Unread)))
            .collect();
        turns.extend((0..2).map(|_| tenants(object(), Arc::new(Unread))));
        for result in futures::future::join_all(turns).await {
            assert!(result.is_ok());
        }
        assert_eq!(MOST.load(SeqCst), 4);

        // A controller that shares no budget (the notifier) is not held by one.
        MOST.store(0, SeqCst);
        let mut notifier = reconciler(spec("notifier", None), Wakeups::default());
        let turns: Vec<_> = (0..6)
            .map(|_| notifier(object(), Arc::new(Unread)))
            .collect();
        for result in futures::future::join_all(turns).await {
            assert!(result.is_ok());
        }
        assert_eq!(MOST.load(SeqCst), 6);
    }

    #[test]
    fn backoff_keys_name_the_object_per_controller() {
        let from_cache = ObjectRef::<Tenant>::new("acme");
        let mut tenant = crate::fixtures::tenant("acme", &["email-safeguard"], 1);
        tenant.metadata.resource_version = Some("42".into());
        let from_object = ObjectRef::from_obj(&tenant);
        assert_eq!(
            BackoffKey::new("tenant", from_cache.clone()),
            BackoffKey::new("tenant", from_object),
            "the success path (a reference) and the error path (the object) find the same key"
        );
        assert_ne!(
            BackoffKey::new("tenant", from_cache.clone()),
            BackoffKey::new("notifier", from_cache)
        );
    }
}
