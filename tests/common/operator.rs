//! Running the operator against the test cluster, and reading what it did.

use mailsec_operator::api::ConditionType;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::client::ClientBuilder;
use mailsec_operator::api::{Subscription, Tenant, TenantPhase};
use mailsec_operator::controller::api_counter::{ApiCounters, CountingLayer};
use mailsec_operator::controller::{self, DeletionGuard, Settings};
use mailsec_operator::engine::Policy;
use mailsec_operator::fixtures;
use mailsec_operator::metrics::Metrics;
use mailsec_operator::notifications::NotifierConfig;

use super::{cluster, unique_name};

/// Compressed time for the tests: warned 3 s before the end, suspended 3 s after it.
pub const PERIOD_SECS: i64 = 3;

/// The policy the operators of the tests run with.
pub fn policy() -> Policy {
    Policy {
        warning_period: TimeDelta::seconds(PERIOD_SECS),
        grace_period: TimeDelta::seconds(PERIOD_SECS),
        ..Policy::default()
    }
}

/// A client for the test cluster that counts the requests it sends, and records them (the
/// notification tests measure the notifier's writes).
pub async fn counting_client() -> (kube::Client, Arc<ApiCounters>) {
    let config = cluster().config().await;
    let counters = Arc::new(ApiCounters::recording());
    let client = ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&CountingLayer {
            counters: counters.clone(),
        })
        .build();
    (client, counters)
}

/// The one operator of this test binary, started in process on the first call and never
/// stopped (it dies with the test process).
pub fn shared_operator() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        cluster();
        start_unstopped(None);
    });
}

/// An operator running in this test process, with `notifier`, never stopped (it dies with the
/// test process). Returns its request counters.
pub fn start_unstopped(notifier: Option<NotifierConfig>) -> Arc<ApiCounters> {
    let metrics = Arc::new(Metrics::default());
    spawn_in_process(notifier, metrics, std::future::pending()).1
}

/// An operator running in this test process on its own thread and runtime, until `stop` is
/// dropped or sent to. Returns its request counters.
pub fn start_in_process(stop: tokio::sync::oneshot::Receiver<()>) -> Arc<ApiCounters> {
    start_with_notifier(stop, None)
}

/// The same, with a notifier.
pub fn start_with_notifier(
    stop: tokio::sync::oneshot::Receiver<()>,
    notifier: Option<NotifierConfig>,
) -> Arc<ApiCounters> {
    let stopped = async move {
        let _ = stop.await;
    };
    spawn_in_process(notifier, Arc::new(Metrics::default()), stopped).1
}

/// An operator with `notifier`, reporting to `metrics`, running in this test process on its own
/// thread and runtime until `stop` completes. Returns the thread and the operator's request
/// counters once it has its client.
pub fn spawn_in_process(
    notifier: Option<NotifierConfig>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, Arc<ApiCounters>) {
    spawn_guarded_by(DeletionGuard::default(), notifier, metrics, stop)
}

/// [`spawn_in_process`], guarding tenant deletion with `deletion_guard`.
pub fn spawn_guarded_by(
    deletion_guard: DeletionGuard,
    notifier: Option<NotifierConfig>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, Arc<ApiCounters>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        // As the binary runs it (`--worker-threads` 1).
        let runtime = mailsec_operator::cli::run::runtime(1).expect("operator runtime");
        // RUST_LOG=mailsec_operator=debug shows what the operator does during a test.
        if std::env::var_os("RUST_LOG").is_some() {
            mailsec_operator::telemetry::init(mailsec_operator::telemetry::LogFormat::Text);
        }
        runtime.block_on(async move {
            let (client, counters) = counting_client().await;
            let _ = tx.send(counters);
            let settings = Settings {
                policy: policy(),
                concurrency: 16,
                instance: Some("tests".into()),
                notifier,
                clock: Default::default(),
                deletion_guard,
            };
            controller::run_observed(client, settings, metrics, stop).await;
        });
    });
    let counters = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the operator started");
    (thread, counters)
}

/// The operator binary, `run` against the test cluster with compressed periods ([`PERIOD_SECS`])
/// and text logs, then `extra`; its metrics on any free loopback port unless `extra` names
/// `--metrics-addr`. With `RUST_LOG` set its log goes to the test's stderr at that level;
/// otherwise it logs warnings only, to nowhere (callers may redirect `stderr` to a file).
pub fn operator_command(extra: &[&str]) -> Command {
    let period = format!("{PERIOD_SECS}s");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailsec-operator"));
    cmd.args([
        "run",
        "--warning-period",
        &period,
        "--grace-period",
        &period,
        "--log-format",
        "text",
    ]);
    if !extra.contains(&"--metrics-addr") {
        cmd.args(["--metrics-addr", "127.0.0.1:0"]);
    }
    cmd.args(extra)
        .env("KUBECONFIG", cluster().kubeconfig())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
    }
    cmd
}

/// The arguments that make the operator mail through the SMTP server on `port` of loopback,
/// retrying failed deliveries after 1 s, then every 2 s.
pub fn smtp_args(port: u16) -> Vec<String> {
    [
        "--smtp-url",
        &format!("smtp://127.0.0.1:{port}"),
        "--smtp-from",
        "licensing@ops.example",
        "--notify-retry-base",
        "1s",
        "--notify-retry-cap",
        "2s",
    ]
    .map(str::to_string)
    .to_vec()
}

/// [`operator_command`] for the replica `instance` (`POD_NAME`, which names it in its Events
/// and its Lease holder), outside any namespace.
pub fn instance_command(instance: &str, extra: &[&str]) -> Command {
    let mut cmd = operator_command(extra);
    cmd.env("POD_NAME", instance).env_remove("POD_NAMESPACE");
    cmd
}

/// A running operator process. Dropping it kills (SIGKILL) and reaps it, so no operator
/// outlives a failed test.
pub struct OperatorProcess(Option<Child>);

impl OperatorProcess {
    /// Starts `mailsec-operator run` ([`operator_command`] with `extra`).
    pub fn spawn(extra: &[&str]) -> Self {
        Self::spawn_command(operator_command(extra))
    }

    /// Starts the replica `instance` with its metrics on `port` of loopback
    /// ([`instance_command`] with `extra`).
    pub fn spawn_instance(instance: &str, port: u16, extra: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--metrics-addr", addr.as_str()];
        args.extend_from_slice(extra);
        Self::spawn_command(instance_command(instance, &args))
    }

    /// Starts a command made with [`operator_command`] (and changed, e.g. its stderr).
    pub fn spawn_command(mut cmd: Command) -> Self {
        Self(Some(cmd.spawn().expect("start the operator binary")))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or_default()
    }

    /// The process, while this guard still holds it.
    pub fn child(&self) -> &Child {
        self.0.as_ref().expect("running")
    }

    /// The process, which the caller now stops and reaps itself.
    pub fn take(&mut self) -> Child {
        self.0.take().expect("running")
    }

    /// The exit status, if the process has exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, then reap: no graceful shutdown, exactly like a crashed or evicted pod. Returns
    /// the exit status when the process had already exited by itself.
    pub fn kill(mut self) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        let before = child.try_wait().ok().flatten();
        let _ = child.kill();
        let _ = child.wait();
        before
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An instant `secs` seconds from now, on a whole second (so RFC 3339 text reads it exactly).
pub fn in_secs(secs: i64) -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp() + 1 + secs, 0).expect("valid instant")
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub async fn create_tenant(
    client: &kube::Client,
    name: &str,
    products: &[&str],
    users: i64,
) -> Tenant {
    let api: Api<Tenant> = Api::all(client.clone());
    let mut t = fixtures::tenant(name, products, users);
    t.metadata.generation = None;
    api.create(&PostParams::default(), &t)
        .await
        .unwrap_or_else(|e| panic!("create tenant {name}: {e}"))
}

/// Creates a subscription of `tenant` for `product` from a day ago until `end`.
pub async fn create_subscription(
    client: &kube::Client,
    name: &str,
    tenant: &str,
    product: &str,
    end: DateTime<Utc>,
    seats: i64,
) -> Subscription {
    let start = rfc3339(Utc::now() - TimeDelta::days(1));
    let sub = fixtures::subscription(name, tenant, product, &start, &rfc3339(end), seats);
    create(client, sub).await
}

/// [`create_subscription`] under a fresh name made from `prefix`, ending `secs` from now.
pub async fn subscribe(
    client: &kube::Client,
    prefix: &str,
    tenant: &str,
    product: &str,
    secs: i64,
    seats: i64,
) -> Subscription {
    let name = unique_name(prefix);
    create_subscription(client, &name, tenant, product, in_secs(secs), seats).await
}

/// A Tenant as its editor writes it (no generation): `name` using the base product for 10
/// users, its workloads in `namespaces`.
pub fn tenant_in(name: &str, namespaces: &[&str]) -> Tenant {
    let mut t = fixtures::tenant(name, &[fixtures::ESG], 10);
    t.metadata.generation = None;
    t.spec.workload_namespaces = namespaces.iter().map(|n| (*n).into()).collect();
    t
}

/// [`tenant_in`], with a setting for the operator to project (`spamThreshold: 5`).
pub fn tenant_with_settings(name: &str, namespaces: &[&str]) -> Tenant {
    let mut t = tenant_in(name, namespaces);
    t.spec.services[0].settings = [("spamThreshold".to_string(), serde_json::json!(5))].into();
    t
}

pub async fn create(client: &kube::Client, mut sub: Subscription) -> Subscription {
    let api: Api<Subscription> = Api::all(client.clone());
    sub.metadata.generation = None;
    let name = sub.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &sub)
        .await
        .unwrap_or_else(|e| panic!("create subscription {name}: {e}"))
}

pub async fn tenant(client: &kube::Client, name: &str) -> Tenant {
    let api: Api<Tenant> = Api::all(client.clone());
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("get tenant {name}: {e}"))
}

pub async fn subscription(client: &kube::Client, name: &str) -> Subscription {
    let api: Api<Subscription> = Api::all(client.clone());
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("get subscription {name}: {e}"))
}

/// Polls (every 20 ms) until `check` holds for the tenant; returns when it was first seen.
pub async fn wait_tenant(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Tenant) -> bool,
) -> DateTime<Utc> {
    let api: Api<Tenant> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(t) = api.get(name).await {
            if check(&t) {
                return Utc::now();
            }
            last = Some(t);
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "tenant {name}: timed out waiting for {what}; last seen: {:#?}",
                last.and_then(|t| t.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the tenant's phase, returning when it was first seen.
pub async fn wait_phase(
    client: &kube::Client,
    name: &str,
    phase: TenantPhase,
    timeout: Duration,
) -> DateTime<Utc> {
    wait_tenant(client, name, timeout, &format!("phase {phase:?}"), |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(phase)
    })
    .await
}

/// Asserts that a transition due at `due` was seen at `seen`, not before and within a second.
pub fn assert_on_time(what: &str, due: DateTime<Utc>, seen: DateTime<Utc>) {
    let late = seen - due;
    eprintln!(
        "{what}: observed {} ms after it was due",
        late.num_milliseconds()
    );
    assert!(
        late >= TimeDelta::zero(),
        "{what}: seen {late} BEFORE it was due at {due}"
    );
    assert!(
        late <= TimeDelta::seconds(1),
        "{what}: seen {late} after it was due at {due} (more than 1 s)"
    );
}

/// The `events.k8s.io/v1` Events about an object, as (reason, note), oldest first. An event the
/// recorder published again (a series) appears as many times as it was published.
pub async fn events_about(client: &kube::Client, kind: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
        .into_iter()
        .flat_map(|e| {
            let times = e
                .series
                .as_ref()
                .map(|s| s.count.max(1) as usize)
                .unwrap_or(1);
            std::iter::repeat_n(
                (e.reason.unwrap_or_default(), e.note.unwrap_or_default()),
                times,
            )
        })
        .collect()
}

/// How many Events with `reason` exist about an object.
pub async fn count_events(client: &kube::Client, kind: &str, name: &str, reason: &str) -> usize {
    events_about(client, kind, name)
        .await
        .iter()
        .filter(|(r, _)| r == reason)
        .count()
}

/// The status and reason of a tenant condition.
pub fn tenant_condition(t: &Tenant, type_: ConditionType) -> Option<(bool, String)> {
    let c = mailsec_operator::api::condition::find(&t.status.as_ref()?.conditions, type_)?;
    Some((c.is_true(), c.reason.to_string()))
}

/// Creates a namespace.
pub async fn create_namespace(client: &kube::Client, name: &str, tenant: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"mailsec.io/tenant": tenant}}
    }))
    .expect("namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// Creates namespace `name` without assigning it to any tenant (another team's namespace).
pub async fn create_unassigned_namespace(client: &kube::Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// A filtering Deployment of `tenant` (and `product`, when given) with `replicas`, as a user or a
/// GitOps tool would apply it.
pub fn deployment_manifest(
    ns: &str,
    name: &str,
    tenant: &str,
    product: Option<&str>,
    replicas: i32,
) -> serde_json::Value {
    let mut labels = serde_json::json!({"app": name, "mailsec.io/tenant": tenant});
    if let Some(p) = product {
        labels["mailsec.io/product"] = serde_json::json!(p);
    }
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "filter", "image": "registry.example/mail-filter:1.0"}]}
            }
        }
    })
}

/// Applies a manifest the way `kubectl apply` (client-side) does, as another field manager.
pub fn kubectl_apply(manifest: &serde_json::Value) {
    let out = super::kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string());
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        super::describe(&out)
    );
}

/// `spec.replicas` and the remembered-replicas annotation of a Deployment.
pub async fn deployment_state(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> (Option<i32>, Option<String>, Option<String>) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let d = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get deployment {ns}/{name}: {e}"));
    let annotation = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("mailsec.io/suspended-replicas").cloned());
    let phase = d
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("mailsec.io/phase").cloned());
    (d.spec.and_then(|s| s.replicas), annotation, phase)
}

/// Waits until the Deployment has `replicas`; returns its state then.
pub async fn wait_replicas(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    timeout: Duration,
) -> (Option<i32>, Option<String>, Option<String>) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = deployment_state(client, ns, name).await;
        if state.0 == Some(replicas) {
            return state;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "deployment {ns}/{name}: timed out waiting for {replicas} replicas; last seen {state:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until exactly `n` Events with `reason` exist about an object (Events are published just
/// after the status write the test observes), then checks that no more arrive for a moment.
pub async fn expect_events(client: &kube::Client, kind: &str, name: &str, reason: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let count = count_events(client, kind, name, reason).await;
        if count == n {
            break;
        }
        if count > n || tokio::time::Instant::now() > deadline {
            panic!(
                "{kind} {name}: {count} {reason} Events, expected {n}: {:#?}",
                events_about(client, kind, name).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = count_events(client, kind, name, reason).await;
    assert_eq!(count, n, "{kind} {name}: {reason} Events kept coming");
}
