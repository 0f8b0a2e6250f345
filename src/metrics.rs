//! Prometheus metrics and the operator's readiness, served by [`crate::server`].
//!
//! What a scrape shows:
//! - `mailsec_subscription_effective_end_seconds{subscription,tenant,product,plan}` and
//!   `mailsec_subscription_grace_end_seconds{...}`: unix time of the effective end (the later of
//!   `endDate` and `extension.until`) and of the end of the grace period (suspension), like
//!   cert-manager's `certmanager_certificate_expiration_timestamp_seconds`. Computed **at scrape
//!   time** from the watch cache (the spec and the operator's policy, through the engine's
//!   timeline), so they are right even for a subscription no reconcile has written yet. Alert with
//!   e.g. `mailsec_subscription_effective_end_seconds - time() < 14 * 86400`.
//! - `mailsec_tenants{phase}`: tenants per `status.phase` in the cache (`Unknown` before the
//!   first evaluation).
//! - `mailsec_reconcile_total{controller,result}` and `mailsec_reconcile_duration_seconds{controller}`.
//! - `mailsec_api_requests_total{verb}`: requests sent to the API server (from the client's
//!   [`ApiCounters`]).
//! - `mailsec_leader`: 1 while this instance runs the controllers.
//! - `mailsec_notifications_total{channel,result}`: the hook for the notifier (see
//!   [`Metrics::notification`]).
//!
//! The cache-based series exist only on the instance that runs the controllers (the leader): a
//! standby has no cache, so each subscription is exported once per installation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::{Subscription, Tenant, TenantPhase};
use crate::controller::api_counter::ApiCounters;
use crate::controller::feed::AllSynced;
use crate::engine::Policy;
use crate::engine::subscription::Timeline;

type Labels = Vec<(String, String)>;

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

/// The caches the controllers run on, with the policy they evaluate with.
#[derive(Clone)]
struct Caches {
    tenants: Store<Tenant>,
    subscriptions: Store<Subscription>,
    synced: AllSynced,
    policy: Policy,
}

/// The operator's metrics and readiness state, shared by the controllers, the leader election
/// and the HTTP server.
pub struct Metrics {
    registry: Registry,
    shared: Arc<Shared>,
    reconciles: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    notifications: Family<Labels, Counter>,
    leader: Gauge,
    undecodable: Family<Labels, Gauge>,
    status_write_failures: Family<Labels, Counter>,
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
    api: Option<Arc<ApiCounters>>,
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
    pub fn new(api: Option<Arc<ApiCounters>>) -> Self {
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
        let undecodable = Family::<Labels, Gauge>::default();
        registry.register(
            "mailsec_undecodable_objects",
            "Objects skipped because the operator can not decode them, by kind (each also has a Warning Event InvalidObject)",
            undecodable.clone(),
        );
        let status_write_failures = Family::<Labels, Counter>::default();
        registry.register(
            "mailsec_status_write_failures",
            "Status writes the API server refused or that failed, by controller (the reconcile is retried with backoff; workloads are scaled anyway)",
            status_write_failures.clone(),
        );
        registry.register_collector(Box::new(CacheCollector(shared.clone())));
        Self {
            registry,
            shared,
            reconciles,
            durations,
            notifications,
            leader,
            undecodable,
            status_write_failures,
        }
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

    /// Counts one failed status write of `controller` (`tenant`).
    pub fn status_write_failed(&self, controller: &str) {
        self.status_write_failures
            .get_or_create(&vec![("controller".into(), controller.into())])
            .inc();
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
        synced: AllSynced,
        policy: Policy,
    ) {
        *self
            .shared
            .caches
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Caches {
            tenants,
            subscriptions,
            synced,
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

    /// The Prometheus text format (0.0.4).
    pub fn encode_text(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The OpenMetrics text format (1.0.0).
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the caches and the request counters on each scrape.
#[derive(Debug)]
struct CacheCollector(Arc<Shared>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(api) = &self.0.api {
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
        }

        let caches = self
            .0
            .caches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(caches) = caches else {
            return Ok(());
        };

        let mut per_phase: Vec<(String, i64)> = ["Active", "Warning", "ReadOnly", "Suspended"]
            .into_iter()
            .map(|p| (p.to_string(), 0))
            .chain(std::iter::once(("Unknown".to_string(), 0)))
            .collect();
        for t in caches.tenants.state() {
            let phase = match t.status.as_ref().and_then(|s| s.phase) {
                Some(TenantPhase::Active) => "Active",
                Some(TenantPhase::Warning) => "Warning",
                Some(TenantPhase::ReadOnly) => "ReadOnly",
                Some(TenantPhase::Suspended) => "Suspended",
                None => "Unknown",
            };
            if let Some(entry) = per_phase.iter_mut().find(|(p, _)| p == phase) {
                entry.1 += 1;
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
            for (phase, n) in &per_phase {
                let labels = [("phase", phase.as_str())];
                ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut subs = caches.subscriptions.state();
        subs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let timelines: Vec<(Labels, Timeline)> = subs
            .iter()
            .filter_map(|s| {
                // A date the schema let through but the engine can not read has no timeline;
                // the subscription's Ready condition reports it.
                let timeline = Timeline::of(s, &caches.policy).ok()?;
                let mut plan = String::new();
                let _ = write!(plan, "{:?}", s.spec.plan);
                let labels = vec![
                    (
                        "subscription".to_string(),
                        s.metadata.name.clone().unwrap_or_default(),
                    ),
                    ("tenant".to_string(), s.spec.tenant_ref.clone()),
                    ("product".to_string(), s.spec.product.clone()),
                    ("plan".to_string(), plan),
                ];
                Some((labels, timeline))
            })
            .collect();
        for (name, help, pick) in [
            (
                "mailsec_subscription_effective_end_seconds",
                "Unix time the subscription ends: the later of endDate and extension.until",
                (|t: &Timeline| t.effective_end_at) as fn(&Timeline) -> _,
            ),
            (
                "mailsec_subscription_grace_end_seconds",
                "Unix time the grace period after the effective end ends and the service is suspended",
                |t: &Timeline| t.grace_ends_at,
            ),
        ] {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for (labels, timeline) in &timelines {
                ConstGauge::new(pick(timeline).timestamp())
                    .encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;

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
                "mailsec_subscription_effective_end_seconds{subscription=\"acme-esg\",tenant=\"acme\",product=\"email-safeguard\",plan=\"Paid\"} 1798761600"
            ),
            "{text}"
        );
        assert!(text.contains("mailsec_subscription_grace_end_seconds{subscription=\"acme-esg\",tenant=\"acme\",product=\"email-safeguard\",plan=\"Paid\"} 1801353600"), "{text}");
        assert!(
            text.contains("mailsec_tenants{phase=\"Unknown\"} 1"),
            "{text}"
        );
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
