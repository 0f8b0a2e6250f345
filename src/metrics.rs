//! Prometheus metrics and the operator's readiness, served by [`crate::server`].
//!
//! What a scrape shows:
//! - `mailsec_subscription_expiration_timestamp_seconds{subscription,tenant,product,plan}` and
//!   `mailsec_subscription_grace_expiration_timestamp_seconds{...}`: unix time of the effective
//!   end (the later of `endDate` and `extension.until`) and of the end of the grace period
//!   (suspension), named like cert-manager's `certmanager_certificate_expiration_timestamp_seconds`.
//!   Computed **at scrape time** from the watch cache (the spec and the operator's policy, through
//!   the engine's timeline), so they are right even for a subscription no reconcile has written
//!   yet. Alert with e.g. `mailsec_subscription_expiration_timestamp_seconds - time() < 14 * 86400`.
//! - `mailsec_tenants{phase}`: tenants per `status.phase` in the cache (`Unknown` before the
//!   first evaluation); `mailsec_tenant_phase{tenant,phase}`: 1 for the tenant's phase, 0 for the
//!   others (like kube-state-metrics' `kube_pod_status_phase`).
//! - `mailsec_tenants_possible_duplicate`: tenants whose status lists possible duplicates.
//! - `mailsec_notifications_undelivered{tenant,channel,state}`: entries of `status.notifications`
//!   still `Pending` or `Failed` (a series only while there is at least one).
//! - `mailsec_reconcile_total{controller,result}` and `mailsec_reconcile_duration_seconds{controller}`.
//! - `mailsec_status_writes_total{kind,result}`: status writes of the Tenant and Subscription
//!   controllers (see [`STATUS_WRITES`]).
//! - `mailsec_api_requests_total{verb}`: requests sent to the API server (from the client's
//!   [`ApiCounters`]).
//! - `mailsec_leader`: 1 while this instance runs the controllers.
//! - `mailsec_clock_speed`: 1, or the speed of a time lapse (`--time-lapse-from`).
//! - `mailsec_notifications_total{channel,result}`: the hook for the notifier (see
//!   [`Metrics::notification`]).
//! - `mailsec_build_info{version}`: always 1.
//! - `process_*`: CPU, memory, file descriptors, threads and start time of the process, read from
//!   `/proc` at scrape time on Linux (the names and meanings of the Prometheus client libraries'
//!   process collectors).
//!
//! The cache-based series exist only on the instance that runs the controllers (the leader): a
//! standby has no cache, so each subscription and tenant is exported once per installation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::{NotificationState, Plan, Subscription, Tenant, TenantPhase};
use crate::engine::Policy;
use crate::engine::subscription::Timeline;

type Labels = Vec<(String, String)>;

/// The tenant phases as labels, in the order they are exported (`Unknown`: no status yet).
const PHASES: [&str; 5] = ["Active", "Warning", "ReadOnly", "Suspended", "Unknown"];

/// Status writes of this process by kind (`Tenant`, `Subscription`) and result, counted where
/// they are made ([`crate::effects::status::apply_if_changed`]) and exported as
/// `mailsec_status_writes_total{kind,result}`. Per process, like the process metrics.
pub static STATUS_WRITES: StatusWrites = StatusWrites::new();

/// Counters of status writes, see [`STATUS_WRITES`].
#[derive(Debug)]
pub struct StatusWrites(Mutex<BTreeMap<(String, bool), u64>>);

impl StatusWrites {
    const fn new() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }

    /// Counts one status write of an object of `kind`, successful or not.
    pub fn record(&self, kind: &str, ok: bool) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((kind.to_string(), ok)).or_insert(0) += 1;
    }

    /// (kind, result, count), `Tenant` and `Subscription` with both results always included.
    fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for kind in ["Subscription", "Tenant"] {
            for ok in [true, false] {
                counts.entry((kind.to_string(), ok)).or_insert(0);
            }
        }
        counts
            .into_iter()
            .map(|((kind, ok), n)| (kind, if ok { "success" } else { "error" }, n))
            .collect()
    }
}

/// What this instance does, for `mailsec_leader` and `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starting: not connected to the API server yet.
    Starting = 0,
    /// Leader election on, another instance leads: this one waits to take over.
    Standby = 1,
    /// Running the controllers (the leader, or the only instance without leader election).
    Leading = 2,
}

/// Requests sent to the API server, as the client counts them (`mailsec_api_requests_total`).
pub trait RequestCounts: Send + Sync {
    /// Requests sent so far, per verb.
    fn by_verb(&self) -> Vec<(&'static str, u64)>;
}

/// Whether the controllers' caches hold a full list (`/readyz`).
pub trait CachesSynced: Send + Sync {
    fn is_synced(&self) -> bool;
}

/// The caches the controllers run on, with the policy they evaluate with.
#[derive(Clone)]
struct Caches {
    tenants: Store<Tenant>,
    subscriptions: Store<Subscription>,
    synced: Arc<dyn CachesSynced>,
    policy: Policy,
}

/// The operator's metrics and readiness state, shared by the controllers, the leader election
/// and the HTTP server.
pub struct Metrics {
    /// Every metric but the fleet's series: small, and written under the families' locks.
    registry: Registry,
    /// The series read from the caches (one or more per object), written without a lock.
    fleet: Registry,
    shared: Arc<Shared>,
    reconciles: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    notifications: Family<Labels, Counter>,
    leader: Gauge,
    clock_speed: Gauge,
    undecodable: Family<Labels, Gauge>,
    late_events: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// State the scrape-time collector reads.
#[derive(Default)]
struct Shared {
    caches: RwLock<Option<Caches>>,
    api: Option<Arc<dyn RequestCounts>>,
    role: AtomicU8,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    /// A registry with every metric; `api` are the counters of the operator's client.
    pub fn new(api: Option<Arc<dyn RequestCounts>>) -> Self {
        let shared = Arc::new(Shared {
            api,
            ..Shared::default()
        });
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "mailsec_reconcile",
            "Reconciles run, by controller (tenant, subscription) and result (success, error)",
            reconciles.clone(),
        );
        let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "mailsec_reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            durations.clone(),
        );
        let notifications = Family::<Labels, Counter>::default();
        registry.register(
            "mailsec_notifications",
            "Milestone notifications by channel (email, webhook) and result (delivered, failed)",
            notifications.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "mailsec_leader",
            "1 while this instance runs the controllers (the leader), else 0",
            leader.clone(),
        );
        let clock_speed = Gauge::default();
        clock_speed.set(1);
        registry.register(
            "mailsec_clock_speed",
            "Seconds of the controllers' clock per real second: 1, or the speed of a time lapse (--time-lapse-from; demos and staging only)",
            clock_speed.clone(),
        );
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "mailsec_build_info",
            "Always 1; the labels say which build of the operator runs",
            build_info.clone(),
        );
        build_info
            .get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
        let undecodable = Family::<Labels, Gauge>::default();
        registry.register(
            "mailsec_undecodable_objects",
            "Objects skipped because the operator can not decode them, by kind (each also has a Warning Event InvalidObject)",
            undecodable.clone(),
        );
        let late_events = Gauge::default();
        registry.register(
            "mailsec_late_milestone_events",
            "MilestonesAlreadyDue Events (milestones already due when the operator first saw a tenant) queued for capacity no reconcile needs, or being published",
            late_events.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        let mut fleet = Registry::default();
        fleet.register_collector(Box::new(CacheCollector(shared.clone())));
        Self {
            registry,
            fleet,
            shared,
            reconciles,
            durations,
            notifications,
            leader,
            clock_speed,
            undecodable,
            late_events,
        }
    }

    /// Sets `mailsec_clock_speed` (1 for real time).
    pub fn set_clock_speed(&self, speed: u32) {
        self.clock_speed.set(i64::from(speed));
    }

    /// Records one reconcile of `controller` (`tenant`, `subscription`).
    pub fn reconciled(&self, controller: &str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&vec![
                ("controller".into(), controller.into()),
                ("result".into(), result.into()),
            ])
            .inc();
        self.durations
            .get_or_create(&vec![("controller".into(), controller.into())])
            .observe(took.as_secs_f64());
    }

    /// The hook for the notifier: counts one notification on `channel` (`email`, `webhook`)
    /// with `result` (`delivered`, `failed`).
    pub fn notification(&self, channel: &str, result: &str) {
        self.notifications
            .get_or_create(&vec![
                ("channel".into(), channel.into()),
                ("result".into(), result.into()),
            ])
            .inc();
    }

    /// The number of objects of `kind` that can not be decoded now.
    pub fn set_undecodable(&self, kind: &str, n: usize) {
        self.undecodable
            .get_or_create(&vec![("kind".into(), kind.into())])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The late milestone Events queued or being published now.
    pub fn set_late_events(&self, n: usize) {
        self.late_events.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets what this instance does (leader, standby).
    pub fn set_role(&self, role: Role) {
        self.shared.role.store(role as u8, Ordering::Relaxed);
        self.leader.set(i64::from(role == Role::Leading));
    }

    pub fn role(&self) -> Role {
        match self.shared.role.load(Ordering::Relaxed) {
            1 => Role::Standby,
            2 => Role::Leading,
            _ => Role::Starting,
        }
    }

    /// The controllers' caches, read at scrape time. Called when the controllers start.
    pub fn attach_caches(
        &self,
        tenants: Store<Tenant>,
        subscriptions: Store<Subscription>,
        synced: impl CachesSynced + 'static,
        policy: Policy,
    ) {
        *self
            .shared
            .caches
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Caches {
            tenants,
            subscriptions,
            synced: Arc::new(synced),
            policy,
        });
    }

    /// Forgets the caches (the controllers stopped, e.g. leadership was lost).
    pub fn detach_caches(&self) {
        *self
            .shared
            .caches
            .write()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// True once every cache holds a full list.
    pub fn caches_synced(&self) -> bool {
        let caches = self.shared.caches.read().unwrap_or_else(|p| p.into_inner());
        caches.as_ref().is_some_and(|c| c.synced.is_synced())
    }

    /// `/readyz`: the leader (or single instance) is ready once its caches are synced; a
    /// standby is ready once it takes part in the election (it has reached the API server), so
    /// that rollouts and disruption budgets count it.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        match self.role() {
            Role::Starting => Err("not connected to the API server yet"),
            Role::Standby => Ok("standby: waiting for the leader lease"),
            Role::Leading if self.caches_synced() => Ok("leading: caches synced"),
            Role::Leading => Err("leading: caches not synced yet"),
        }
    }

    /// The Prometheus text format (0.0.4), whole.
    pub fn encode_text(&self) -> Result<String, std::fmt::Error> {
        self.encode_whole(ScrapeFormat::Prometheus)
    }

    /// The OpenMetrics text format (1.0.0), whole.
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        self.encode_whole(ScrapeFormat::OpenMetrics)
    }

    fn encode_whole(&self, format: ScrapeFormat) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        self.encode_chunked(format, |chunk| {
            text.push_str(&chunk);
            true
        })?;
        Ok(text)
    }

    /// Writes the metrics in `format`, handing each [`SCRAPE_CHUNK`] bytes of text to `send` as
    /// soon as they are written: a scrape holds one chunk, not the whole text (about 330 bytes
    /// per cached object, megabytes for a fleet). When `send` returns false (the scraper has
    /// gone) the encoding stops with an error.
    ///
    /// `send` may wait for the scraper: it is only called while the fleet's series are written,
    /// which hold no lock. The other metrics are written first, whole, because their families
    /// are encoded under their locks, and a reconcile recording its metrics would wait with them.
    pub fn encode_chunked(
        &self,
        format: ScrapeFormat,
        send: impl FnMut(String) -> bool,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        use std::fmt::Write;
        let mut head = String::new();
        match format {
            ScrapeFormat::Prometheus => prometheus_text::encode(&mut head, &self.registry)?,
            ScrapeFormat::OpenMetrics => text::encode_registry(&mut head, &self.registry)?,
        }
        let mut out = Chunks::new(send);
        out.write_str(&head)?;
        drop(head);
        match format {
            ScrapeFormat::Prometheus => prometheus_text::encode(&mut out, &self.fleet)?,
            ScrapeFormat::OpenMetrics => {
                text::encode_registry(&mut out, &self.fleet)?;
                text::encode_eof(&mut out)?;
            }
        }
        out.finish()
    }
}

/// The text formats a scraper may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeFormat {
    /// Prometheus text 0.0.4.
    Prometheus,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
}

impl ScrapeFormat {
    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Bytes of text handed on at a time by [`Metrics::encode_chunked`].
pub const SCRAPE_CHUNK: usize = 64 * 1024;

/// A text written in chunks of about [`SCRAPE_CHUNK`] bytes, each handed to `send` when full.
struct Chunks<F> {
    chunk: String,
    send: F,
}

impl<F: FnMut(String) -> bool> Chunks<F> {
    fn new(send: F) -> Self {
        Self {
            chunk: String::with_capacity(SCRAPE_CHUNK),
            send,
        }
    }

    /// Hands on the chunk written so far and starts the next.
    fn hand_on(&mut self) -> std::fmt::Result {
        let full = std::mem::replace(&mut self.chunk, String::with_capacity(SCRAPE_CHUNK));
        if (self.send)(full) {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }

    /// Hands on what is left.
    fn finish(mut self) -> std::fmt::Result {
        if self.chunk.is_empty() || (self.send)(self.chunk) {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }
}

impl<F: FnMut(String) -> bool> std::fmt::Write for Chunks<F> {
    /// Hands the chunk on before it would outgrow [`SCRAPE_CHUNK`] (a piece larger than
    /// that, which metrics never write, makes a chunk of its own).
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if !self.chunk.is_empty() && self.chunk.len() + s.len() > SCRAPE_CHUNK {
            self.hand_on()?;
        }
        self.chunk.push_str(s);
        Ok(())
    }
}

/// Reads the caches and the request counters on each scrape.
#[derive(Debug)]
struct CacheCollector(Arc<Shared>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(api) = &self.0.api {
            encode_api_requests(api.as_ref(), &mut encoder)?;
        }
        encode_status_writes(&mut encoder)?;
        let caches = self
            .0
            .caches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(caches) = caches else {
            return Ok(());
        };
        let mut tenants = caches.tenants.state();
        tenants.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        encode_tenants(&tenants, &mut encoder)?;
        encode_undelivered(&tenants, &mut encoder)?;
        let mut subs = caches.subscriptions.state();
        subs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        encode_subscriptions(&subs, &caches.policy, &mut encoder)
    }
}

/// `mailsec_api_requests_total{verb}`.
fn encode_api_requests(
    api: &dyn RequestCounts,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(
        "mailsec_api_requests",
        "Requests sent to the Kubernetes API server, by verb",
        None,
        counter.metric_type(),
    )?;
    for (verb, n) in api.by_verb() {
        let labels = [("verb", verb)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `mailsec_status_writes_total{kind,result}`.
fn encode_status_writes(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(
        "mailsec_status_writes",
        "Status writes (server-side apply of .status) by kind and result (success, error)",
        None,
        counter.metric_type(),
    )?;
    for (kind, result, n) in STATUS_WRITES.snapshot() {
        let labels = [("kind", kind.as_str()), ("result", result)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `mailsec_tenants{phase}`, `mailsec_tenants_possible_duplicate` and
/// `mailsec_tenant_phase{tenant,phase}`, from the cached `tenants` sorted by name.
fn encode_tenants(
    tenants: &[Arc<Tenant>],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let phase_of = |t: &Tenant| match t.status.as_ref().and_then(|s| s.phase) {
        Some(TenantPhase::Active) => "Active",
        Some(TenantPhase::Warning) => "Warning",
        Some(TenantPhase::ReadOnly) => "ReadOnly",
        Some(TenantPhase::Suspended) => "Suspended",
        None => "Unknown",
    };
    let mut per_phase = [0i64; PHASES.len()];
    for t in tenants {
        if let Some(i) = PHASES.iter().position(|p| *p == phase_of(t)) {
            per_phase[i] += 1;
        }
    }
    {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "mailsec_tenants",
            "Tenants by status.phase, from the operator's cache",
            None,
            gauge.metric_type(),
        )?;
        for (phase, n) in PHASES.iter().zip(per_phase) {
            let labels = [("phase", *phase)];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
    }
    {
        // Counted from status.possibleDuplicates, so no scrape compares tenants.
        let flagged = tenants
            .iter()
            .filter(|t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| !s.possible_duplicates.is_empty())
            })
            .count();
        let gauge = ConstGauge::new(i64::try_from(flagged).unwrap_or(i64::MAX));
        let metric_type = gauge.metric_type();
        gauge.encode(encoder.encode_descriptor(
            "mailsec_tenants_possible_duplicate",
            "Tenants flagged PossibleDuplicate (another tenant lists one of their \
             administrator addresses and is not linked to them on purpose)",
            None,
            metric_type,
        )?)?;
    }
    {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "mailsec_tenant_phase",
            "1 for the tenant's status.phase, 0 for the other phases (Unknown: no status yet)",
            None,
            gauge.metric_type(),
        )?;
        for t in tenants {
            let name = t.metadata.name.as_deref().unwrap_or_default();
            let current = phase_of(t);
            for phase in PHASES {
                let labels = [("tenant", name), ("phase", phase)];
                ConstGauge::new(i64::from(phase == current))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// `mailsec_notifications_undelivered{tenant,channel,state}`.
fn encode_undelivered(
    tenants: &[Arc<Tenant>],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(
        "mailsec_notifications_undelivered",
        "Entries of status.notifications not delivered yet, by tenant, channel and state \
         (Pending, Failed); no series while a tenant has none",
        None,
        gauge.metric_type(),
    )?;
    for t in tenants {
        let Some(status) = t.status.as_ref() else {
            continue;
        };
        let mut undelivered: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for n in &status.notifications {
            let state = match n.state {
                NotificationState::Pending => "Pending",
                NotificationState::Failed => "Failed",
                NotificationState::Delivered => continue,
            };
            *undelivered.entry((n.channel.as_str(), state)).or_insert(0) += 1;
        }
        let name = t.metadata.name.as_deref().unwrap_or_default();
        for ((channel, state), n) in undelivered {
            let channel = channel.to_ascii_lowercase();
            let labels = [
                ("tenant", name),
                ("channel", channel.as_str()),
                ("state", state),
            ];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The expiration timestamps of the cached subscriptions (sorted by name), through the
/// engine's timeline.
fn encode_subscriptions(
    subs: &[Arc<Subscription>],
    policy: &Policy,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    // Only the two instants of each subscription are held through the scrape, and the labels
    // are borrowed from the cached objects: a scrape of a large fleet held eight strings and a
    // timeline per subscription until its end (measured with `cargo bench --bench scrape`).
    // A date the schema let through but the engine can not read has no timeline (no series);
    // the subscription's Ready condition reports it.
    let instants: Vec<Option<[i64; 2]>> = subs
        .iter()
        .map(|s| {
            let t = Timeline::of(s, policy).ok()?;
            Some([t.effective_end_at.timestamp(), t.grace_ends_at.timestamp()])
        })
        .collect();
    for (which, name, help) in [
        (
            0,
            "mailsec_subscription_expiration_timestamp_seconds",
            "Unix time the subscription ends: the later of endDate and extension.until",
        ),
        (
            1,
            "mailsec_subscription_grace_expiration_timestamp_seconds",
            "Unix time the grace period after the effective end ends and the service is suspended",
        ),
    ] {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
        for (s, instants) in subs.iter().zip(&instants) {
            let Some(instants) = instants else {
                continue;
            };
            let plan = match s.spec.plan {
                Plan::Paid => "Paid",
                Plan::Trial => "Trial",
            };
            let labels = [
                (
                    "subscription",
                    s.metadata.name.as_deref().unwrap_or_default(),
                ),
                ("tenant", s.spec.tenant_ref.as_str()),
                ("product", s.spec.product.as_ref()),
                ("plan", plan),
            ];
            ConstGauge::new(instants[which]).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The process metrics of the Prometheus client libraries (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, ...), read from `/proc/self` at scrape time the way
/// client_golang's process collector does. Nothing is exported where `/proc` can not be read.
mod process {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;

    /// Scrape-time reader of `/proc/self`.
    #[derive(Debug)]
    pub struct ProcessCollector;

    /// One reading of the process.
    #[derive(Debug, Default, PartialEq)]
    pub struct Reading {
        pub cpu_seconds: f64,
        pub resident_memory_bytes: i64,
        pub virtual_memory_bytes: i64,
        pub threads: i64,
        pub start_time_seconds: f64,
        pub open_fds: Option<i64>,
        pub max_fds: Option<i64>,
    }

    /// `AT_PAGESZ` and `AT_CLKTCK` of the auxiliary vector the kernel gave this process: the
    /// page size and the clock ticks per second that `/proc/self/stat` counts in.
    fn page_size_and_clock_ticks(auxv: &[u8]) -> (u64, u64) {
        const AT_PAGESZ: usize = 6;
        const AT_CLKTCK: usize = 17;
        let word = std::mem::size_of::<usize>();
        let (mut page, mut ticks) = (4096, 100);
        for pair in auxv.chunks_exact(2 * word) {
            let (key, value) = pair.split_at(word);
            let read = |b: &[u8]| {
                b.try_into()
                    .map(usize::from_ne_bytes)
                    .ok()
                    .and_then(|v| u64::try_from(v).ok())
            };
            match (read(key), read(value)) {
                (Some(k), Some(v)) if k == AT_PAGESZ as u64 && v > 0 => page = v,
                (Some(k), Some(v)) if k == AT_CLKTCK as u64 && v > 0 => ticks = v,
                _ => {}
            }
        }
        (page, ticks)
    }

    /// Reads `/proc/self/stat` (with `/proc/stat`'s boot time, the page size and the clock
    /// ticks): None when a field is missing or malformed.
    pub fn parse(stat: &str, proc_stat: &str, page: u64, ticks: u64) -> Option<Reading> {
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the fields
        // start after the last ')'. Index 0 below is field 3 (state) of proc(5).
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let boot: u64 = proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
        let ticks_f = ticks as f64;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Some(Reading {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_f,
            threads: as_i64(field(20)?),
            start_time_seconds: boot as f64 + field(22)? as f64 / ticks_f,
            virtual_memory_bytes: as_i64(field(23)?),
            resident_memory_bytes: as_i64(field(24)?.saturating_mul(page)),
            open_fds: None,
            max_fds: None,
        })
    }

    /// The soft limit of open files in `/proc/self/limits` ("unlimited" → None).
    pub fn max_open_files(limits: &str) -> Option<i64> {
        limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    pub fn read() -> Option<Reading> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        let (page, ticks) = page_size_and_clock_ticks(&auxv);
        let mut reading = parse(&stat, &proc_stat, page, ticks)?;
        reading.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
        reading.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l));
        Some(reading)
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let Some(r) = read() else {
                return Ok(());
            };
            let cpu = ConstCounter::new(r.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let gauges: [(&str, &str, Option<f64>); 6] = [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    Some(r.resident_memory_bytes as f64),
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    Some(r.virtual_memory_bytes as f64),
                ),
                (
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    Some(r.start_time_seconds),
                ),
                (
                    "process_threads",
                    "Number of OS threads in the process",
                    Some(r.threads as f64),
                ),
                (
                    "process_open_fds",
                    "Number of open file descriptors",
                    r.open_fds.map(|n| n as f64),
                ),
                (
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    r.max_fds.map(|n| n as f64),
                ),
            ];
            for (name, help, value) in gauges {
                if let Some(v) = value {
                    let gauge = ConstGauge::new(v);
                    gauge.encode(encoder.encode_descriptor(
                        name,
                        help,
                        None,
                        gauge.metric_type(),
                    )?)?;
                }
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_proc_stat_like_client_golang() {
            // A comm with a space and a parenthesis; fields from proc(5).
            let stat = "4242 (mailsec op) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 150 0 0 20 0 \
                        7 0 360000 123456789 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                        1 0 0 0 0 0";
            let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
            let r = parse(stat, proc_stat, 4096, 100).expect("parse");
            assert_eq!(r.cpu_seconds, 4.0);
            assert_eq!(r.threads, 7);
            assert_eq!(r.start_time_seconds, 1_700_003_600.0);
            assert_eq!(r.virtual_memory_bytes, 123_456_789);
            assert_eq!(r.resident_memory_bytes, 5000 * 4096);
            assert!(parse("4242 (x) S 1", proc_stat, 4096, 100).is_none());
            assert!(parse(stat, "cpu 1\n", 4096, 100).is_none());

            let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                          Max open files            1024                 524288               files\n";
            assert_eq!(max_open_files(limits), Some(1024));
            assert_eq!(
                max_open_files(
                    "Max open files            unlimited            unlimited            files\n"
                ),
                None
            );

            let word = std::mem::size_of::<usize>();
            let mut auxv = Vec::new();
            for (k, v) in [(6usize, 16384usize), (17, 250), (0, 0)] {
                auxv.extend_from_slice(&k.to_ne_bytes());
                auxv.extend_from_slice(&v.to_ne_bytes());
            }
            assert_eq!(auxv.len(), 6 * word);
            assert_eq!(page_size_and_clock_ticks(&auxv), (16384, 250));
            assert_eq!(page_size_and_clock_ticks(&[]), (4096, 100));
        }

        #[cfg(target_os = "linux")]
        #[test]
        fn reads_this_process() {
            let r = read().expect("/proc/self on Linux");
            assert!(r.resident_memory_bytes > 0 && r.threads >= 1, "{r:?}");
            assert!(r.open_fds.is_some_and(|n| n >= 3), "{r:?}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            assert!(
                r.start_time_seconds <= now + 1.0 && r.start_time_seconds > now - 86400.0 * 365.0
            );
        }
    }
}

/// Metrics whose caches hold `tenants` tenants with two subscriptions each, synced.
#[cfg(test)]
pub(crate) fn metrics_of_a_fleet(tenants: usize) -> Metrics {
    use crate::fixtures::{ESG, ETDR, subscription, tenant};
    use kube::runtime::{reflector, watcher};
    let metrics = Metrics::new(None);
    metrics.set_role(Role::Leading);
    let (tenant_cache, mut tw) = reflector::store();
    let (subscription_cache, mut sw) = reflector::store();
    tw.apply_watcher_event(&watcher::Event::Init);
    sw.apply_watcher_event(&watcher::Event::Init);
    for i in 0..tenants {
        let name = format!("t-{i:05}");
        tw.apply_watcher_event(&watcher::Event::InitApply(tenant(&name, &[ESG, ETDR], 10)));
        for product in [ESG, ETDR] {
            let sub = subscription(
                &format!("{name}-{product}"),
                &name,
                product,
                "2026-01-01",
                "2026-12-31",
                50,
            );
            sw.apply_watcher_event(&watcher::Event::InitApply(sub));
        }
    }
    tw.apply_watcher_event(&watcher::Event::InitDone);
    sw.apply_watcher_event(&watcher::Event::InitDone);
    let (synced_tx, synced) = crate::controller::feed::Synced::pair();
    synced_tx.send_replace(true);
    metrics.attach_caches(
        tenant_cache,
        subscription_cache,
        crate::controller::feed::AllSynced::new([synced]),
        Policy::default(),
    );
    metrics
}

/// A scrape's text without the process's own samples, which change from one scrape to the next.
#[cfg(test)]
pub(crate) fn without_process_samples(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("process_"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::api_counter::ApiCounters;
    use crate::controller::feed::AllSynced;
    use kube::runtime::watcher;

    /// A fleet's scrape is handed on in chunks no larger than [`SCRAPE_CHUNK`] which, put
    /// together, are the whole text.
    #[test]
    fn a_scrape_is_handed_on_in_bounded_chunks() {
        let metrics = metrics_of_a_fleet(1_000);
        for format in [ScrapeFormat::Prometheus, ScrapeFormat::OpenMetrics] {
            let mut chunks = Vec::new();
            metrics
                .encode_chunked(format, |chunk| {
                    chunks.push(chunk);
                    true
                })
                .expect("encodes");
            assert!(chunks.len() > 4, "{} chunks", chunks.len());
            assert!(
                chunks
                    .iter()
                    .all(|c| !c.is_empty() && c.len() <= SCRAPE_CHUNK)
            );
            let whole = metrics.encode_whole(format).expect("encodes");
            assert_eq!(
                without_process_samples(&chunks.concat()),
                without_process_samples(&whole)
            );
            assert!(whole.contains("mailsec_subscription_expiration_timestamp_seconds{subscription=\"t-00999-email-safeguard\""));
        }
    }

    /// While a scrape waits for its scraper, it holds no lock of the metrics: a reconcile that
    /// records a series never seen before (which takes its family's write lock) is not held up.
    #[test]
    fn a_waiting_scrape_holds_no_lock() {
        let metrics = Arc::new(metrics_of_a_fleet(1_000));
        let (waiting_tx, waiting) = std::sync::mpsc::channel();
        let (scraper_tx, scraper) = std::sync::mpsc::channel::<()>();
        let scrape = std::thread::spawn({
            let metrics = metrics.clone();
            move || {
                metrics.encode_chunked(ScrapeFormat::OpenMetrics, |_| {
                    let _ = waiting_tx.send(());
                    scraper.recv().is_ok()
                })
            }
        });
        waiting.recv().expect("the scrape hands on a chunk");
        metrics.reconciled("a-controller-never-seen", false, Duration::from_millis(1));
        metrics.notification("email", "delivered");
        metrics.set_undecodable("Tenant", 1);
        drop(scraper_tx);
        assert!(
            scrape.join().expect("no panic").is_err(),
            "the scraper left"
        );
    }

    /// When the scraper has gone (`send` refuses a chunk), the encoding stops there.
    #[test]
    fn a_scrape_stops_when_its_chunks_are_refused() {
        let metrics = metrics_of_a_fleet(1_000);
        let mut offered = 0;
        let result = metrics.encode_chunked(ScrapeFormat::Prometheus, |_| {
            offered += 1;
            false
        });
        assert!(result.is_err());
        assert_eq!(offered, 1);
    }

    #[test]
    fn scrape_shows_cache_timestamps_and_counters() {
        let api = Arc::new(ApiCounters::default());
        let metrics = Metrics::new(Some(api));
        metrics.set_role(Role::Leading);
        assert!(metrics.readiness().is_err(), "no caches yet");

        let (tenants, mut tw) = kube::runtime::reflector::store::<Tenant>();
        let (subs, mut sw) = kube::runtime::reflector::store::<Subscription>();
        let sub = crate::fixtures::subscription(
            "acme-esg",
            "acme",
            "email-safeguard",
            "2026-01-01",
            "2026-12-31",
            10,
        );
        tw.apply_watcher_event(&watcher::Event::Init);
        tw.apply_watcher_event(&watcher::Event::InitApply(crate::fixtures::tenant(
            "acme",
            &["email-safeguard"],
            3,
        )));
        // A read-only tenant with two undelivered notifications and a delivered one.
        let mut globex = crate::fixtures::tenant("globex", &["email-safeguard"], 3);
        let entry = |id: &str, channel: &str, state: &str| {
            serde_json::json!({"id": id, "milestone": "m", "channel": channel,
                "recipient": "a@globex.example", "state": state})
        };
        globex.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "ReadOnly",
                "possibleDuplicates": [{"tenant": "globex-new", "tenantInUse": "globex"}],
                "notifications": [entry("1", "Email", "Failed"), entry("2", "Email", "Failed"),
                    entry("3", "Webhook", "Pending"), entry("4", "Email", "Delivered")],
            }))
            .expect("a tenant status"),
        );
        tw.apply_watcher_event(&watcher::Event::InitApply(globex));
        tw.apply_watcher_event(&watcher::Event::InitDone);
        sw.apply_watcher_event(&watcher::Event::Init);
        sw.apply_watcher_event(&watcher::Event::InitApply(sub));
        sw.apply_watcher_event(&watcher::Event::InitDone);
        let (synced_tx, synced) = crate::controller::feed::Synced::pair();
        metrics.attach_caches(tenants, subs, AllSynced::new([synced]), Policy::default());
        assert!(
            metrics.readiness().is_err(),
            "not ready before the list is in"
        );
        synced_tx.send_replace(true);
        assert_eq!(metrics.readiness(), Ok("leading: caches synced"));
        metrics.reconciled("tenant", true, Duration::from_millis(3));

        let text = metrics.encode_text().expect("encode");
        // 2026-12-31 ends at 2027-01-01T00:00:00Z; grace ends 30 days later.
        assert!(
            text.contains(
                "mailsec_subscription_expiration_timestamp_seconds{subscription=\"acme-esg\",tenant=\"acme\",product=\"email-safeguard\",plan=\"Paid\"} 1798761600"
            ),
            "{text}"
        );
        assert!(text.contains("mailsec_subscription_grace_expiration_timestamp_seconds{subscription=\"acme-esg\",tenant=\"acme\",product=\"email-safeguard\",plan=\"Paid\"} 1801353600"), "{text}");
        for line in [
            "mailsec_tenants{phase=\"Unknown\"} 1",
            "mailsec_tenants{phase=\"ReadOnly\"} 1",
            "mailsec_tenants{phase=\"Active\"} 0",
            "mailsec_tenants_possible_duplicate 1",
            "mailsec_tenant_phase{tenant=\"acme\",phase=\"Unknown\"} 1",
            "mailsec_tenant_phase{tenant=\"acme\",phase=\"Active\"} 0",
            "mailsec_tenant_phase{tenant=\"globex\",phase=\"ReadOnly\"} 1",
            "mailsec_tenant_phase{tenant=\"globex\",phase=\"Suspended\"} 0",
            "mailsec_notifications_undelivered{tenant=\"globex\",channel=\"email\",state=\"Failed\"} 2",
            "mailsec_notifications_undelivered{tenant=\"globex\",channel=\"webhook\",state=\"Pending\"} 1",
            "mailsec_build_info{version=\"0.1.0\"} 1",
            "mailsec_status_writes_total{kind=\"Tenant\",result=\"error\"} ",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(
            text.matches("mailsec_notifications_undelivered{").count(),
            2,
            "delivered entries and tenants without undelivered ones have no series: {text}"
        );
        assert_eq!(
            text.matches("mailsec_tenant_phase{").count(),
            2 * PHASES.len(),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
            "process_threads ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing: {text}"
            );
        }
        assert!(
            text.contains("mailsec_reconcile_total{controller=\"tenant\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailsec_api_requests_total{verb=\"patch\"} 0"),
            "{text}"
        );
        assert!(text.contains("mailsec_leader 1"), "{text}");
        assert!(
            text.contains(
                "mailsec_reconcile_duration_seconds_bucket{controller=\"tenant\",le=\"0.005\"} 1"
            ),
            "{text}"
        );

        metrics.detach_caches();
        metrics.set_role(Role::Standby);
        let text = metrics.encode_text().expect("encode");
        assert!(!text.contains("mailsec_subscription_"), "{text}");
        assert!(!text.contains("mailsec_tenant_phase{"), "{text}");
        assert!(text.contains("mailsec_build_info{"), "{text}");
        assert!(text.contains("mailsec_leader 0"), "{text}");
        assert!(metrics.readiness().is_ok());
        assert!(
            metrics
                .encode_openmetrics()
                .expect("encode")
                .ends_with("# EOF\n")
        );
    }
}
