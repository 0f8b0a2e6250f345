//! Load harness against a real API server (../shared/envtest), with its baseline in the same run.
//!
//! ```sh
//! cargo bench --bench load -- --tenants 1000      # quick (about a minute)
//! cargo bench --bench load                        # full size: 10,000 tenants
//! ```
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing: it is a benchmark,
//! not a test.
//!
//! It starts a private kube-apiserver + etcd (`envtest.sh start` with its own ENVTEST_RUN_DIR,
//! stopped on exit), installs `crds/`, creates N tenants and 2N subscriptions in mixed phases,
//! and then measures, in order:
//! 1. baseline A: a bare kube client applying the statuses the engine computes (server-side
//!    apply on /status, `2 × concurrency` in flight: the operator runs two controllers of
//!    `concurrency` each), timed until the same watch as in (2) has observed every status (the
//!    watch's own cost on the API server then weighs on both; the client's own time is reported
//!    too), then the rest of the operator's write mix (its Events); then that API server is
//!    stopped and a fresh one gets the same population, so that the cold start, like A, runs on
//!    objects written once (created);
//! 2. cold-start convergence of the operator as it ships (the release binary, `mailsec-operator
//!    run`, in a process of its own, read through its metrics port) until every object's
//!    `status.observedGeneration` equals its generation, the ratio to (1); then until its
//!    queue of late milestone Events is empty, the ratio to (1) with the rest of the write mix,
//!    and the writes per object;
//! 3. steady state, the same process: writes per minute and API requests per reconcile over a
//!    short window;
//! 4. deadline precision: subscriptions ending at spread instants, the delay until their tenants
//!    are seen `ReadOnly` through a watch; then the operator is left until it has written
//!    nothing for 5 s, and stopped;
//! 5. warm restart: the release binary `mailsec-operator run` started on the converged objects:
//!    time until `/readyz`, writes (none expected), peak RSS (VmHWM);
//! 6. take-over: two release binaries with leader election, the leader SIGKILLed, the time until
//!    the standby's first reconcile and how late a transition due 5 s after the kill lands;
//! 7. baseline A again, every operator stopped, on a third server with the same population: A
//!    before and after bracket the cold start, so that how the machine's speed drifts over a
//!    run shows beside the ratio (see `baseline_again`).
//!
//! Each timed step also reports the CPU seconds it took: the machine's, the API server's,
//! etcd's, this process's (the bare client, with the convergence watch) and the operator's.
//! `--baseline-watched` adds a pass of (1) during which the client also holds the operator's
//! watches.
//!
//! `--memory-only` skips all but the objects, then measures the cold start (2) on them (time,
//! requests, writes, peak RSS) and a second process's warm restart (5).
//! `LOAD_OPERATOR_WRAPPER=heaptrack` (or another profiler) runs the operator under it, in steps 2
//! to 5; it gets the binary's path first, so a script that drops it can run another build.
//!
//! Not run in CI: this is a benchmark.

// The tests' probes, shared; this benchmark uses only some of them.
#[allow(dead_code)]
#[path = "../tests/common/probe.rs"]
mod probe;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use mailsec_operator::api::{Subscription, Tenant, TenantPhase};
use mailsec_operator::engine::{Policy, World, WorldEvaluation, evaluate_world};
use mailsec_operator::fixtures::{ESG, ETDR};
use mailsec_operator::fixtures::{subscription, tenant};
use probe::sample_sum;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Tenants to create (each with 2 subscriptions).
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Reconciles in flight per controller (the operator's `--concurrency`).
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// The operator's runtime threads (its `--worker-threads`; 1: tokio's current-thread
    /// runtime).
    #[arg(long, default_value_t = 1)]
    worker_threads: u16,
    /// Requests in flight while creating objects.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// Length of the steady-state window.
    #[arg(long, default_value_t = 30)]
    steady_secs: u64,
    /// Subscriptions (each with its own tenant) ending at spread instants.
    #[arg(long, default_value_t = 1000)]
    deadline_subs: usize,
    /// Over how many seconds their ends are spread.
    #[arg(long, default_value_t = 30)]
    deadline_spread_secs: u64,
    /// After baseline A, apply the statuses once more while the same client also holds the
    /// operator's watches: what serving them costs the API server, measured on its own. The
    /// cold start then comes two writes per object later than the baseline after the run assumes.
    #[arg(long)]
    baseline_watched: bool,
    /// Create the write mix's Events before baseline A's status applies instead of after: A
    /// then runs on a server that already holds them, as the cold start's later writes do.
    #[arg(long)]
    baseline_events_first: bool,
    /// Baseline A with the write mix's Events among its status applies, and each tenant's
    /// status beside its subscriptions', as the operator's cold start sends them (the same
    /// requests; A alone again at the end).
    #[arg(long)]
    baseline_interleaved: bool,
    /// Skip the warm restart and the take-over (steps 5 and 6).
    #[arg(long)]
    skip_memory: bool,
    /// Only create the objects and measure the peak RSS of the operator binary during its cold
    /// start on them (until every status is written), then 15 s more.
    #[arg(long)]
    memory_only: bool,
    /// Passed by `cargo bench`; without it (`cargo test`) nothing is run.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// Tenants and subscriptions of the population.
    fn objects(&self) -> usize {
        3 * self.tenants
    }

    /// Status applies and writes the baseline keeps in flight: the operator runs two
    /// controllers of `concurrency` each.
    fn in_flight(&self) -> usize {
        2 * usize::from(self.concurrency)
    }
}

/// A private envtest server, stopped when dropped.
struct Envtest {
    script: PathBuf,
    run_dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Envtest {
    fn start() -> anyhow::Result<Self> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = std::env::var_os("ENVTEST_SH")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("../shared/envtest/envtest.sh"));
        let run_dir = std::env::temp_dir().join(format!("mailsec-load.{}", std::process::id()));
        let out = Command::new(&script)
            .arg("start")
            .env("ENVTEST_RUN_DIR", &run_dir)
            .stdin(Stdio::null())
            .output()?;
        let mut env = Self {
            script,
            run_dir: run_dir.clone(),
            kubeconfig: PathBuf::new(),
        };
        anyhow::ensure!(
            out.status.success(),
            "envtest start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(run_dir.join("env"))?;
        let kubeconfig = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
            .map(|v| PathBuf::from(v.trim_matches(['"', '\''])))
            .next()
            .ok_or_else(|| anyhow::anyhow!("no KUBECONFIG in the envtest env file"))?;
        env.kubeconfig = kubeconfig;
        Ok(env)
    }

    fn kubectl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A client of this server.
    async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(Client::try_from(config)?)
    }
}

impl Drop for Envtest {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .env("ENVTEST_RUN_DIR", &self.run_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An Event like the ones the operator's Recorder creates for a milestone.
fn baseline_event(i: usize, tenant: &str, reason: &str) -> Event {
    Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{tenant}.baseline{i:x}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        action: Some("Evaluate".into()),
        reason: Some(reason.into()),
        note: Some(format!("baseline event for {tenant}: {reason}")),
        type_: Some("Normal".into()),
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        reporting_controller: Some("load-baseline".into()),
        reporting_instance: Some("load".into()),
        regarding: Some(ObjectReference {
            api_version: Some("mailsec.io/v1alpha1".into()),
            kind: Some("Tenant".into()),
            name: Some(tenant.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// N tenants with two services each and 2N subscriptions whose phases cycle through Pending,
/// Active, ExpiringSoon, GracePeriod and Expired (base and add-on on different cycles).
fn population(n: usize, now: DateTime<Utc>) -> World {
    let d = |days: i64| day(now + TimeDelta::days(days));
    let dates = |k: usize| match k % 5 {
        0 => (d(10), d(400)),   // Pending (the product is then missing)
        1 => (d(-100), d(365)), // Active
        2 => (d(-100), d(10)),  // ExpiringSoon
        3 => (d(-400), d(-10)), // GracePeriod
        _ => (d(-400), d(-60)), // Expired
    };
    let mut world = World::default();
    for i in 0..n {
        let name = format!("t-{i:05}");
        world.tenants.push(tenant(&name, &[ESG, ETDR], 10));
        // Mostly active base subscriptions, like a real population.
        let (s, e) = dates(if i % 2 == 0 { 1 } else { i / 2 });
        world
            .subscriptions
            .push(subscription(&format!("{name}-esg"), &name, ESG, &s, &e, 50));
        let (s, e) = dates(i / 3);
        world.subscriptions.push(subscription(
            &format!("{name}-etdr"),
            &name,
            ETDR,
            &s,
            &e,
            50,
        ));
    }
    world
}

fn for_create<K: kube::Resource>(mut obj: K) -> K {
    obj.meta_mut().generation = None;
    obj
}

async fn create_all<K>(api: &Api<K>, objs: Vec<K>, concurrency: usize) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let creates = objs
        .into_iter()
        .map(|o| async move { api.create(&PostParams::default(), &for_create(o)).await });
    all_of(creates, concurrency).await
}

/// Watches Tenants and Subscriptions until every one has a status for its generation.
/// Whether `o`'s status says it observed `o`'s current generation (`observed`: its
/// `status.observedGeneration`).
fn done<K: kube::Resource>(o: &K, observed: Option<i64>) -> bool {
    observed.is_some() && observed == o.meta().generation
}

async fn converged(client: Client, expected: usize, timeout: Duration) -> anyhow::Result<()> {
    let cfg = || watcher::Config::default().any_semantic();
    let tenants = watcher(Api::<Tenant>::all(client.clone()), cfg())
        .default_backoff()
        .applied_objects()
        .map_ok(|t| {
            let ok = done(&t, t.status.as_ref().and_then(|s| s.observed_generation));
            (format!("t/{}", t.name_any()), ok)
        });
    let subs = watcher(Api::<Subscription>::all(client), cfg())
        .default_backoff()
        .applied_objects()
        .map_ok(|s| {
            let ok = done(&s, s.status.as_ref().and_then(|s| s.observed_generation));
            (format!("s/{}", s.name_any()), ok)
        });
    let mut events = stream::select(tenants.boxed(), subs.boxed());
    let mut ok: HashSet<String> = HashSet::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while ok.len() < expected {
        tokio::select! {
            _ = &mut deadline => anyhow::bail!("not converged after {timeout:?}: {} of {expected}", ok.len()),
            ev = events.next() => match ev {
                Some(Ok((name, true))) => { ok.insert(name); }
                Some(Ok((name, false))) => { ok.remove(&name); }
                Some(Err(_)) => {}
                None => anyhow::bail!("watch ended"),
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn vm_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time, in seconds: the whole machine's busy time (all cores) and that of the processes
/// a step shares it with. Wall times move with the machine's load; these say where the work
/// went.
#[derive(Clone, Copy, Default, Debug)]
struct CpuUse {
    machine: f64,
    apiserver: f64,
    etcd: f64,
    /// This process: the bare client, and the convergence watch.
    harness: f64,
    /// The release binary, when a step runs it.
    operator: f64,
}

impl CpuUse {
    /// The CPU time used so far (`operator`: the release binary's pid, if it runs).
    fn now(env: &Envtest, operator: Option<u32>) -> Self {
        let pid_of = |name: &str| -> Option<u32> {
            std::fs::read_to_string(env.run_dir.join(format!("{name}.pid")))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let process = |pid: Option<u32>| pid.and_then(process_cpu).unwrap_or(0.0);
        Self {
            machine: machine_busy().unwrap_or(0.0),
            apiserver: process(pid_of("kube-apiserver")),
            etcd: process(pid_of("etcd")),
            harness: process(Some(std::process::id())),
            operator: process(operator),
        }
    }

    /// What was used between `start` and `self`.
    fn since(self, start: Self) -> Self {
        Self {
            machine: self.machine - start.machine,
            apiserver: self.apiserver - start.apiserver,
            etcd: self.etcd - start.etcd,
            harness: self.harness - start.harness,
            operator: self.operator - start.operator,
        }
    }

    /// One line, with the machine's busy share over `wall`.
    fn describe(&self, wall: Duration) -> String {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut line = format!(
            "CPU s: machine {:.1} ({:.0} % of {cores} cores busy), kube-apiserver {:.1}, etcd {:.1}, harness {:.1}",
            self.machine,
            100.0 * self.machine / (cores * wall.as_secs_f64()).max(f64::EPSILON),
            self.apiserver,
            self.etcd,
            self.harness,
        );
        if self.operator > 0.0 {
            line.push_str(&format!(", operator {:.1}", self.operator));
        }
        line
    }
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User + system CPU seconds of process `pid`.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Busy CPU seconds of the whole machine (all cores; idle and I/O wait left out).
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Some(busy / clock_ticks())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // On SIGINT/SIGTERM, return (so the API server is stopped by `Envtest`'s Drop).
    tokio::select! {
        result = harness() => result,
        _ = mailsec_operator::cli::run::shutdown_signal() => anyhow::bail!("interrupted"),
    }
}

async fn harness() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.bench {
        eprintln!("load: a benchmark; run it with `cargo bench --bench load [-- --tenants N]`");
        return Ok(());
    }
    let progress = Progress(Instant::now());
    let policy = Policy::default();
    // Step 1 on an API server of its own, stopped afterwards: the cold start then runs on a
    // second one where, as for the baseline, every object has been written once (created).
    let baseline = if args.memory_only {
        None
    } else {
        let first = Run::set_up(args.clone(), progress).await?;
        let baseline = baseline(&first, &policy).await?;
        drop(first);
        progress.log("its API server stopped");
        Some(baseline)
    };
    let run = Run::set_up(args.clone(), progress).await?;
    let Some(baseline) = baseline else {
        memory_only(&run).await?;
        if let Some(w) = warm_restart(&run, run.args.objects()).await? {
            println!(
                "== memory: warm restart on the same {} objects (every status right): ready after {:.2} s, every object reconciled after {}, {} writes; VmHWM {:.1} MiB, VmRSS {:.1} MiB ==",
                run.args.objects(),
                w.ready.as_secs_f64(),
                w.all_reconciled
                    .map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
                w.writes,
                w.hwm as f64 / 1024.0,
                w.rss as f64 / 1024.0
            );
        }
        return Ok(());
    };
    let (cold, operator) = cold_start(&run).await?;
    let wrong = phases_wrong(&run, &policy).await?;
    let steady = steady_state(&run, &operator).await;
    let deadlines = deadlines(&run).await?;
    settle(&run, &operator).await;
    let operator_hwm = operator.memory().0;
    let requests = requests_by_verb(&operator.stop().await);
    let (warm, takeover) = if args.skip_memory {
        (None, None)
    } else {
        let objects = run.args.objects() + 2 * args.deadline_subs;
        (warm_restart(&run, objects).await?, takeover(&run).await?)
    };
    drop(run);
    progress.log("the cold start's API server stopped");
    let again = Run::set_up(args.clone(), progress).await?;
    let after = baseline_again(&again, &policy).await?;
    drop(again);
    let results = Results {
        after,
        baseline,
        cold,
        wrong,
        steady,
        deadlines,
        requests,
        operator_hwm,
        warm,
        takeover,
    };
    report(&args, &results);
    Ok(())
}

/// Time since the start of the run, for the progress lines on stderr.
#[derive(Clone, Copy)]
struct Progress(Instant);

impl Progress {
    fn log(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

/// The population's Tenants and Subscriptions, through a bare client.
struct Apis {
    tenants: Api<Tenant>,
    subs: Api<Subscription>,
}

impl Apis {
    /// Patches the status of the Tenant (`is_tenant`) or the Subscription `name`.
    async fn patch_status(
        &self,
        is_tenant: bool,
        name: &str,
        pp: &PatchParams,
        patch: &Patch<&serde_json::Value>,
    ) -> kube::Result<()> {
        if is_tenant {
            self.tenants.patch_status(name, pp, patch).await.map(|_| ())
        } else {
            self.subs.patch_status(name, pp, patch).await.map(|_| ())
        }
    }
}

/// The API server with the population created on it.
struct Run {
    args: Args,
    progress: Progress,
    env: Envtest,
    client: Client,
    apis: Apis,
    world: World,
    now: DateTime<Utc>,
}

impl Run {
    /// Starts an API server, installs the CRDs and creates the population.
    async fn set_up(args: Args, progress: Progress) -> anyhow::Result<Self> {
        let env = Envtest::start()?;
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        env.kubectl(&["apply", "--server-side", "-f", &crds.display().to_string()])?;
        env.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])?;
        // The licence guard, as the chart installs it: the operator then guards deletion
        // without a finalizer, and every status write passes the status-writers policy.
        let guard = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/licence-guard-policy.yaml");
        env.kubectl(&["apply", "--server-side", "-f", &guard.display().to_string()])?;
        progress.log("API server up, CRDs and licence guard installed");

        let client = env.client().await?;
        let apis = Apis {
            tenants: Api::all(client.clone()),
            subs: Api::all(client.clone()),
        };
        let n = args.tenants;
        let now = Utc::now();
        let world = population(n, now);
        create_all(
            &apis.tenants,
            world.tenants.clone(),
            args.create_concurrency,
        )
        .await?;
        create_all(
            &apis.subs,
            world.subscriptions.clone(),
            args.create_concurrency,
        )
        .await?;
        progress.log(&format!("created {n} tenants and {} subscriptions", 2 * n));
        Ok(Self {
            args,
            progress,
            env,
            client,
            apis,
            world,
            now,
        })
    }

    fn log(&self, what: &str) {
        self.progress.log(what);
    }
}

/// Runs `requests`, `in_flight` at a time, until the first error.
async fn all_of<T>(
    requests: impl Iterator<Item = impl Future<Output = kube::Result<T>>>,
    in_flight: usize,
) -> anyhow::Result<()> {
    stream::iter(requests)
        .buffer_unordered(in_flight)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(())
}

/// One status write of the baseline: a Tenant (or else a Subscription), its name, the status.
type StatusPatch = (bool, String, serde_json::Value);

/// Sends `patch` (made from each status) to the status of each object of `patches`.
async fn patch_statuses<'a>(
    apis: &Apis,
    patches: &'a [StatusPatch],
    pp: &PatchParams,
    in_flight: usize,
    patch: impl Fn(&'a serde_json::Value) -> Patch<&'a serde_json::Value>,
) -> anyhow::Result<()> {
    let requests = patches.iter().map(|(is_tenant, name, body)| {
        let patch = patch(body);
        async move { apis.patch_status(*is_tenant, name, pp, &patch).await }
    });
    all_of(requests, in_flight).await
}

/// What the bare client took for the writes of a cold start.
struct Baseline {
    /// The status applies alone, until the convergence watch observed every status.
    statuses: Duration,
    /// The same, until the client had its last answer.
    applied: Duration,
    /// The status applies and the rest of the write mix.
    mix: Duration,
    /// Milestone Events created.
    milestones: usize,
    /// CPU used by the status applies (until observed).
    cpu: CpuUse,
    /// CPU used by the rest of the write mix.
    mix_cpu: CpuUse,
    /// The status applies again, the operator's watches held meanwhile (`--baseline-watched`).
    watched: Option<Applied>,
}

/// Step 1: the statuses the engine computes, applied by a bare client, and the rest of the
/// operator's write mix.
async fn baseline(run: &Run, policy: &Policy) -> anyhow::Result<Baseline> {
    let objects = run.args.objects();
    let eval = evaluate_world(&run.world, policy, run.now);
    let patches = status_patches(run, &eval);
    let events_first = if run.args.baseline_events_first {
        Some(rest_of_write_mix_timed(run, &eval).await?)
    } else {
        None
    };
    let events = if run.args.baseline_interleaved {
        milestone_events(run, &eval)
    } else {
        Vec::new()
    };
    let a = apply_statuses(run, &patches, &events, false).await?;
    run.log(&format!(
        "baseline: {objects} status applies and {} Events observed in {:.2?} (the client's last answer after {:.2?}); {}",
        events.len(),
        a.observed,
        a.answered,
        a.cpu.describe(a.observed)
    ));
    let (milestones, extra, mix_cpu) = match events_first {
        Some(mix) => mix,
        // The Events were written among the statuses.
        None if !events.is_empty() => (events.len(), Duration::ZERO, CpuUse::default()),
        None => rest_of_write_mix_timed(run, &eval).await?,
    };
    let watched = if run.args.baseline_watched {
        clear_statuses(run, &patches).await?;
        run.log("statuses cleared");
        let w = apply_statuses(run, &patches, &[], true).await?;
        run.log(&format!(
            "baseline with the operator's watches: observed in {:.2?}; {}",
            w.observed,
            w.cpu.describe(w.observed)
        ));
        Some(w)
    } else {
        None
    };
    Ok(Baseline {
        statuses: a.observed,
        applied: a.answered,
        mix: a.observed + extra,
        milestones,
        cpu: a.cpu,
        mix_cpu,
        watched,
    })
}

/// [`rest_of_write_mix`], timed: the Events, how long they took and the CPU they used.
async fn rest_of_write_mix_timed(
    run: &Run,
    eval: &WorldEvaluation,
) -> anyhow::Result<(usize, Duration, CpuUse)> {
    let t0 = Instant::now();
    let cpu0 = CpuUse::now(&run.env, None);
    let milestones = rest_of_write_mix(run, eval).await?;
    let took = t0.elapsed();
    let cpu = CpuUse::now(&run.env, None).since(cpu0);
    run.log(&format!(
        "baseline, the rest of the write mix: {milestones} Events in {took:.2?}; {}",
        cpu.describe(took)
    ));
    Ok((milestones, took, cpu))
}

/// The statuses the engine gives the population, as the bare client applies them.
fn status_patches(run: &Run, eval: &WorldEvaluation) -> Vec<StatusPatch> {
    let mut patches: Vec<StatusPatch> = Vec::with_capacity(run.args.objects());
    for (t, e) in run.world.tenants.iter().zip(&eval.tenants) {
        let body = serde_json::json!({"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "status": e.status});
        patches.push((true, t.name_any(), body));
    }
    for (s, e) in run.world.subscriptions.iter().zip(&eval.subscriptions) {
        let body = serde_json::json!({"apiVersion": "mailsec.io/v1alpha1", "kind": "Subscription", "status": e.status});
        patches.push((false, s.name_any(), body));
    }
    patches
}

/// Last step: baseline A again, on a server of its own with the same population, once every
/// operator has stopped.
///
/// The same pass on a fresh server, twice in one run, varies with the machine: this shared
/// 2-core machine's speed drifts over the minutes of a run, and the same 30,000 applies on the
/// cold start's server after the run took 1.05–1.42 × A (2026-12-06). A before and after the
/// cold start bracket it, so that a ratio to A is read beside how far A itself moved.
async fn baseline_again(run: &Run, policy: &Policy) -> anyhow::Result<Applied> {
    let patches = status_patches(run, &evaluate_world(&run.world, policy, run.now));
    let again = apply_statuses(run, &patches, &[], false).await?;
    run.log(&format!(
        "baseline A again: observed in {:.2?}; {}",
        again.observed,
        again.cpu.describe(again.observed)
    ));
    Ok(again)
}

/// What one pass of the bare client's status applies took.
struct Applied {
    /// Until the convergence watch observed every status.
    observed: Duration,
    /// Until the client had its last answer.
    answered: Duration,
    cpu: CpuUse,
}

/// Applies `patches` with the bare client, observed as the cold start is (step 2: the same
/// watch, started at the same moment). With `watched`, the client also holds the watches the
/// operator holds (every Tenant and every Subscription, listed then watched, each event
/// decoded), so that what a watch costs the API server shows on its own.
async fn apply_statuses(
    run: &Run,
    patches: &[StatusPatch],
    events: &[(String, String)],
    watched: bool,
) -> anyhow::Result<Applied> {
    let objects = run.args.objects();
    let t0 = Instant::now();
    let cpu0 = CpuUse::now(&run.env, None);
    let pp = PatchParams::apply("load-baseline").force();
    let observed = converged(run.client.clone(), objects, convergence_timeout(objects));
    let applied = async {
        if events.is_empty() {
            patch_statuses(&run.apis, patches, &pp, run.args.in_flight(), Patch::Apply).await?;
        } else {
            let api: Api<Event> = Api::namespaced(run.client.clone(), "default");
            let writes = interleaved(run.args.tenants, patches, events);
            let requests = writes.iter().map(|write| {
                let (api, pp) = (&api, &pp);
                async move {
                    match write {
                        Write::Status((is_tenant, name, body)) => {
                            let patch = Patch::Apply(body);
                            run.apis.patch_status(*is_tenant, name, pp, &patch).await
                        }
                        Write::Event(i, (tenant, reason)) => {
                            create_event(api, *i, tenant, reason).await
                        }
                    }
                }
            });
            all_of(requests, run.args.in_flight()).await?;
        }
        anyhow::Ok(t0.elapsed())
    };
    let operators_watches = async {
        if watched {
            converged(run.client.clone(), objects, convergence_timeout(objects)).await
        } else {
            Ok(())
        }
    };
    let (observed, answered, operators_watches) =
        tokio::join!(observed, applied, operators_watches);
    let answered = answered?;
    observed?;
    operators_watches?;
    Ok(Applied {
        observed: t0.elapsed(),
        answered,
        cpu: CpuUse::now(&run.env, None).since(cpu0),
    })
}

/// Clears every status `patches` wrote (not timed).
async fn clear_statuses(run: &Run, patches: &[StatusPatch]) -> anyhow::Result<()> {
    let clear = serde_json::json!({"status": null});
    let pp = PatchParams::default();
    patch_statuses(&run.apis, patches, &pp, run.args.create_concurrency, |_| {
        Patch::Merge(&clear)
    })
    .await
}

/// Step 1b: the rest of what a cold start must write, by the same bare client: the Events of
/// the milestones the engine says are due and not yet announced (one per tenant for those
/// already due at first sight, announced together). The deletion guard is the admission
/// policy: no metadata write. Status applies + these = the operator's write mix. Returns the
/// number of Events.
async fn rest_of_write_mix(run: &Run, eval: &WorldEvaluation) -> anyhow::Result<usize> {
    let regarding = milestone_events(run, eval);
    let api: Api<Event> = Api::namespaced(run.client.clone(), "default");
    let creates = regarding
        .iter()
        .enumerate()
        .map(|(i, (tenant, reason))| create_event(&api, i, tenant, reason));
    all_of(creates, run.args.in_flight()).await?;
    Ok(regarding.len())
}

/// Creates the `i`th Event of the write mix (see [`baseline_event`]).
async fn create_event(api: &Api<Event>, i: usize, tenant: &str, reason: &str) -> kube::Result<()> {
    let event = baseline_event(i, tenant, reason);
    api.create(&PostParams::default(), &event).await.map(|_| ())
}

/// The Events of a cold start (see [`rest_of_write_mix`]): each one's tenant and reason, in the
/// tenants' order.
fn milestone_events(run: &Run, eval: &WorldEvaluation) -> Vec<(String, String)> {
    run.world
        .tenants
        .iter()
        .zip(&eval.tenants)
        .flat_map(|(t, e)| {
            let already_due = e.status.milestones.iter().any(|r| r.already_due);
            let each: Vec<(String, String)> = if already_due {
                vec![(t.name_any(), "MilestonesAlreadyDue".to_string())]
            } else {
                e.milestones
                    .iter()
                    .filter(|m| !m.kind.is_transfer())
                    .map(|m| (t.name_any(), format!("{:?}", m.kind)))
                    .collect()
            };
            each
        })
        .collect()
}

/// One write of an interleaved baseline pass.
enum Write<'a> {
    Status(&'a StatusPatch),
    /// The Event's number (for its name), its tenant and reason.
    Event(usize, &'a (String, String)),
}

/// The writes of `patches` (tenants, then each tenant's two subscriptions, as
/// [`status_patches`] orders them), in the order of a cold start: each tenant's subscriptions
/// then the tenant, and `events` spread evenly among them.
fn interleaved<'a>(
    tenants: usize,
    patches: &'a [StatusPatch],
    events: &'a [(String, String)],
) -> Vec<Write<'a>> {
    let statuses = (0..tenants).flat_map(|i| [tenants + 2 * i, tenants + 2 * i + 1, i]);
    let (total, mut next) = (patches.len().max(1), 0);
    let mut writes = Vec::with_capacity(patches.len() + events.len());
    for (done, k) in statuses.enumerate() {
        writes.push(Write::Status(&patches[k]));
        // Event j goes after the first status whose number (from 1) exceeds j × total / events.
        while next < events.len() && next * total < (done + 1) * events.len() {
            writes.push(Write::Event(next, &events[next]));
            next += 1;
        }
    }
    writes.extend((next..events.len()).map(|j| Write::Event(j, &events[j])));
    writes
}

/// The release binary, `mailsec-operator run`, started for steps 2 to 4 (as the memory and
/// warm-restart steps run it), and read through its metrics port: the operator measured is the
/// one that ships, in a process of its own, not one sharing this process with the test
/// population and the convergence watch.
struct OperatorProcess {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
}

impl OperatorProcess {
    /// Starts it under `LOAD_OPERATOR_WRAPPER` (a profiler) if set; `LOAD_OPERATOR_LOG=<file>`
    /// keeps its log (`RUST_LOG` as set, else warn).
    fn spawn(env: &Envtest, args: &Args) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(env!("CARGO_BIN_EXE_mailsec-operator")).is_file(),
            "the operator binary is missing: build it with `cargo bench --bench load --no-run`"
        );
        let port = free_port()?;
        let child = release_operator(env, true, args, port)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(match std::env::var_os("LOAD_OPERATOR_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            })
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        Ok(Self { child, pid, port })
    }

    /// Its metrics now (empty if it does not answer).
    async fn scrape(&self) -> String {
        http_get(self.port, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Its requests, writes and reconciles so far.
    async fn counts(&self) -> Counts {
        Counts::of(&self.scrape().await)
    }

    /// Its peak and current RSS, in KiB.
    fn memory(&self) -> (u64, u64) {
        (
            vm_field(self.pid, "VmHWM:").unwrap_or(0),
            vm_field(self.pid, "VmRSS:").unwrap_or(0),
        )
    }

    /// Stops it; returns its last scrape.
    async fn stop(mut self) -> String {
        let scrape = self.scrape().await;
        stop(&mut self.child).await;
        scrape
    }
}

/// What the operator's metrics count: requests (watches aside), writes and reconciles.
#[derive(Clone, Copy, Default)]
struct Counts {
    reads: f64,
    writes: f64,
    reconciles: f64,
}

impl Counts {
    fn of(scrape: &str) -> Self {
        Self {
            reads: requests_in(scrape, "get") + requests_in(scrape, "list"),
            writes: writes_in(scrape),
            reconciles: sample_sum(scrape, "mailsec_reconcile_total", &[]),
        }
    }

    fn requests(&self) -> f64 {
        self.reads + self.writes
    }
}

/// The requests of a scrape (watches aside), by verb, then the status writes by kind.
fn requests_by_verb(scrape: &str) -> Vec<String> {
    let mut lines: Vec<String> = mailsec_operator::controller::api_counter::VERBS
        .iter()
        .filter(|verb| **verb != "watch")
        .filter_map(|verb| {
            let n = requests_in(scrape, verb);
            (n > 0.0).then(|| format!("{verb}: {n}"))
        })
        .collect();
    for kind in ["Tenant", "Subscription"] {
        let n = sample_sum(
            scrape,
            "mailsec_status_writes_total",
            &[&format!("kind=\"{kind}\"")],
        );
        lines.push(format!("{kind} status writes: {n}"));
    }
    lines
}

/// What the cold start took.
struct ColdStart {
    /// Until every status was observed.
    took: Duration,
    /// Until the late milestone Events, published with spare capacity, were all written too.
    written: Duration,
    cpu: CpuUse,
    /// When everything was written.
    counts: Counts,
    /// The operator's peak RSS (KiB) when every status was observed.
    hwm: u64,
}

/// Step 2: the operator's cold start (the release binary) until every object's status is
/// observed.
async fn cold_start(run: &Run) -> anyhow::Result<(ColdStart, OperatorProcess)> {
    let t0 = Instant::now();
    let operator = OperatorProcess::spawn(&run.env, &run.args)?;
    let cpu0 = CpuUse::now(&run.env, Some(operator.pid));
    let objects = run.args.objects();
    converged(run.client.clone(), objects, convergence_timeout(objects)).await?;
    let took = t0.elapsed();
    let cpu = CpuUse::now(&run.env, Some(operator.pid)).since(cpu0);
    let hwm = operator.memory().0;
    let written = late_events_written(&operator, t0).await;
    let cold = ColdStart {
        took,
        written,
        cpu,
        counts: operator.counts().await,
        hwm,
    };
    run.log(&format!(
        "converged in {:.2?}, late milestone Events written after {:.2?}; {}",
        cold.took,
        cold.written,
        cold.cpu.describe(cold.took)
    ));
    Ok((cold, operator))
}

/// The time since `t0` when the operator's queue of late milestone Events (published with
/// capacity no reconcile asks for) was found empty; read every 100 ms, for at most 10 minutes.
/// An operator without that queue (a build before it, run through `LOAD_OPERATOR_WRAPPER`)
/// published them with the statuses: at once.
async fn late_events_written(operator: &OperatorProcess, t0: Instant) -> Duration {
    let give_up = Instant::now() + Duration::from_secs(600);
    loop {
        let scrape = operator.scrape().await;
        let empty = scrape.contains("mailsec_build_info")
            && (!scrape.contains("mailsec_late_milestone_events")
                || sample_sum(&scrape, "mailsec_late_milestone_events", &[]) == 0.0);
        if empty || Instant::now() > give_up {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Correctness after the cold start: how many phases differ from what the engine says over the
/// final objects.
async fn phases_wrong(run: &Run, policy: &Policy) -> anyhow::Result<usize> {
    let (all_t, all_s) = (
        run.apis.tenants.list(&ListParams::default()).await?.items,
        run.apis.subs.list(&ListParams::default()).await?.items,
    );
    let check = evaluate_world(
        &World {
            tenants: all_t.clone(),
            subscriptions: all_s.clone(),
        },
        policy,
        Utc::now(),
    );
    let wrong = all_t
        .iter()
        .zip(&check.tenants)
        .filter(|(t, e)| t.status.as_ref().and_then(|s| s.phase) != e.status.phase)
        .count()
        + all_s
            .iter()
            .zip(&check.subscriptions)
            .filter(|(s, e)| s.status.as_ref().and_then(|s| s.phase) != e.status.phase)
            .count();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for t in &all_t {
        *phases
            .entry(format!("{:?}", t.status.as_ref().and_then(|s| s.phase)))
            .or_default() += 1;
    }
    run.log(&format!(
        "tenant phases {phases:?}; phases differing from the engine: {wrong}"
    ));
    Ok(wrong)
}

/// What the operator did in the steady-state window.
struct Steady {
    secs: u64,
    writes: f64,
    reads: f64,
    reconciles: f64,
}

/// Step 3: the converged operator's requests over the window (after 5 s to settle).
async fn steady_state(run: &Run, operator: &OperatorProcess) -> Steady {
    let secs = run.args.steady_secs;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = operator.counts().await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = operator.counts().await;
    let steady = Steady {
        secs,
        writes: after.writes - before.writes,
        reads: after.reads - before.reads,
        reconciles: after.reconciles - before.reconciles,
    };
    run.log(&format!(
        "steady: {} writes, {} reads, {} reconciles in {}s",
        steady.writes, steady.reads, steady.reconciles, secs
    ));
    steady
}

/// Waits until the operator has written nothing for 5 s (at most 60 s), and logs what it wrote
/// meanwhile. The deadline step ends as soon as the last tenant is seen read-only, when writes
/// of that instant (a subscription's own status) may still be queued; the warm restart after
/// it must find every status right.
async fn settle(run: &Run, operator: &OperatorProcess) {
    let first = operator.counts().await.writes;
    let (mut last, mut quiet_since, t0) = (first, Instant::now(), Instant::now());
    while quiet_since.elapsed() < Duration::from_secs(5) && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let writes = operator.counts().await.writes;
        if writes != last {
            (last, quiet_since) = (writes, Instant::now());
        }
    }
    run.log(&format!(
        "settled: {} writes after the deadline step, none in the last {:.1?}",
        last - first,
        quiet_since.elapsed()
    ));
}

/// Deadline subscriptions: when each is due, and the tenants and subscriptions to create.
struct DeadlinePopulation {
    due: Vec<DateTime<Utc>>,
    tenants: Vec<Tenant>,
    subs: Vec<Subscription>,
}

/// `m` subscriptions (each with its own tenant, labelled `load=deadline`) ending at instants
/// spread over `spread` seconds from `first_due`.
fn deadline_population(
    m: usize,
    spread: f64,
    first_due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DeadlinePopulation {
    let due: Vec<DateTime<Utc>> = (0..m)
        .map(|i| {
            let ms = (spread * 1000.0 * i as f64 / m as f64) as i64;
            first_due + TimeDelta::milliseconds(ms)
        })
        .collect();
    let mut tenants = Vec::new();
    let mut subs = Vec::new();
    for (i, end) in due.iter().enumerate() {
        let name = format!("dl-{i:04}");
        let mut t = tenant(&name, &[ESG], 10);
        t.metadata.labels = Some([("load".to_string(), "deadline".to_string())].into());
        tenants.push(t);
        let end = end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        subs.push(subscription(
            &name,
            &name,
            ESG,
            &day(now - TimeDelta::days(100)),
            &end,
            50,
        ));
    }
    DeadlinePopulation { due, tenants, subs }
}

/// How late the deadline transitions were seen.
struct Deadlines {
    /// Subscriptions with a deadline.
    subs: usize,
    /// Seen minus due, in seconds, sorted.
    lateness: Vec<f64>,
}

/// Step 4: subscriptions ending at spread instants, and the delay until their tenants are seen
/// `ReadOnly` through a watch.
async fn deadlines(run: &Run) -> anyhow::Result<Deadlines> {
    let args = &run.args;
    let m = args.deadline_subs;
    let first_due = Utc::now() + TimeDelta::seconds(20 + (m / 100) as i64);
    let spread = args.deadline_spread_secs as f64;
    let population = deadline_population(m, spread, first_due, run.now);
    let watch_cfg = watcher::Config::default().labels("load=deadline");
    let stream = watcher(run.apis.tenants.clone(), watch_cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    // Subscriptions first: a tenant evaluated before its subscription exists is read-only
    // (product missing), which is not the transition measured here.
    create_all(&run.apis.subs, population.subs, args.create_concurrency).await?;
    create_all(
        &run.apis.tenants,
        population.tenants,
        args.create_concurrency,
    )
    .await?;
    run.log(&format!(
        "created {m} deadline subscriptions, first due {first_due}"
    ));
    let until = tokio::time::Instant::now()
        + (first_due - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(args.deadline_spread_secs + 60);
    let seen = read_only_seen(stream, m, until).await;
    let mut lateness: Vec<f64> = seen
        .iter()
        .filter_map(|(name, at)| {
            let i: usize = name.strip_prefix("dl-")?.parse().ok()?;
            Some((*at - population.due[i]).num_microseconds()? as f64 / 1e6)
        })
        .collect();
    lateness.sort_by(f64::total_cmp);
    run.log(&format!("deadlines: {} of {m} seen", lateness.len()));
    Ok(Deadlines { subs: m, lateness })
}

/// When each tenant of `stream` was first seen read-only because its subscription ended (not
/// because it is missing), until `m` were or `until`.
async fn read_only_seen(
    mut stream: futures::stream::BoxStream<'_, Result<Tenant, watcher::Error>>,
    m: usize,
    until: tokio::time::Instant,
) -> BTreeMap<String, DateTime<Utc>> {
    let mut seen: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    while seen.len() < m {
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            ev = stream.next() => ev,
        };
        let Some(Ok(t)) = ev else { continue };
        let by_end = t.status.as_ref().is_some_and(|s| {
            s.phase == Some(TenantPhase::ReadOnly)
                && s.services
                    .first()
                    .is_some_and(|b| b.missing_since.is_none())
        });
        if by_end {
            seen.entry(t.name_any()).or_insert_with(Utc::now);
        }
    }
    seen
}

/// `mailsec-operator run` (the binary built with this benchmark) on the API server, with its
/// metrics on `port` (0: any free port); killed when dropped. With `profiled`, it runs under
/// `LOAD_OPERATOR_WRAPPER` (heaptrack or another profiler) if that is set.
fn release_operator(
    env: &Envtest,
    profiled: bool,
    args: &Args,
    port: u16,
) -> tokio::process::Command {
    let exe = env!("CARGO_BIN_EXE_mailsec-operator");
    let wrapper = std::env::var("LOAD_OPERATOR_WRAPPER")
        .ok()
        .filter(|w| profiled && !w.is_empty());
    let mut command = match wrapper {
        Some(wrapper) => {
            let mut c = tokio::process::Command::new(wrapper);
            c.arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    command
        .args(["run", "--deletion-guard", "admission", "--concurrency"])
        .arg(args.concurrency.to_string())
        .arg("--worker-threads")
        .arg(args.worker_threads.to_string())
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", &env.kubeconfig)
        .stdout(Stdio::null())
        // A group of its own, so that a wrapper and the operator under it are stopped together.
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// Sends `signal` to the process group of `child` (started by [`release_operator`]).
fn signal_group(child: &tokio::process::Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill only sends a signal, to the group made for this child.
        unsafe { libc::kill(-pid, signal) };
    }
}

/// Stops an operator started by [`release_operator`], and a wrapper it runs under (a profiler
/// then writes its file out): SIGTERM to the group, SIGKILL after 30 s.
async fn stop(child: &mut tokio::process::Child) {
    signal_group(child, libc::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        signal_group(child, libc::SIGKILL);
        let _ = child.kill().await;
    }
}

/// A port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(probe::try_free_port()?)
}

/// `GET path` on the operator's metrics port, off the async runtime: the status code and body.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || probe::http_get(port, &path))
        .await
        .ok()
        .flatten()
}

/// The verbs of `mailsec_api_requests_total` that write.
const WRITE_VERBS: [&str; 4] = ["create", "patch", "update", "delete"];

/// Writes (create, patch, update, delete requests) in a scrape of the operator's metrics.
fn writes_in(scrape: &str) -> f64 {
    WRITE_VERBS
        .iter()
        .map(|verb| requests_in(scrape, verb))
        .sum()
}

/// Requests of `verb` in a scrape of the operator's metrics.
fn requests_in(scrape: &str, verb: &str) -> f64 {
    sample_sum(
        scrape,
        "mailsec_api_requests_total",
        &[&format!("verb=\"{verb}\"")],
    )
}

/// What a restart of the release binary on a converged fleet cost.
struct Warm {
    /// From the start of the process until `/readyz` answers 200 (caches synced).
    ready: Duration,
    /// From the start until every object was reconciled once.
    all_reconciled: Option<Duration>,
    /// Writes in the whole window (every status is already right: 0 expected).
    writes: f64,
    /// Peak and current RSS (KiB) and how long the process was watched.
    hwm: u64,
    rss: u64,
    watched: Duration,
}

/// Step 5: a warm restart. The release binary on every object, all statuses already right,
/// watched until its peak RSS has not grown for 15 s (at least 20 s, at most 180 s). None when
/// the binary is missing.
async fn warm_restart(run: &Run, objects: usize) -> anyhow::Result<Option<Warm>> {
    if !Path::new(env!("CARGO_BIN_EXE_mailsec-operator")).is_file() {
        run.log("the operator binary is missing: warm restart skipped");
        return Ok(None);
    }
    let objects = objects as f64;
    let port = free_port()?;
    let t0 = Instant::now();
    let mut child = release_operator(&run.env, true, &run.args, port)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let (mut ready, mut all_reconciled) = (None, None);
    let (mut last, mut stable_since) = (0, Instant::now());
    let mut last_scrape = String::new();
    // Scraped every 2 s, no more: a scrape computes the expiry metrics of every object, and
    // scraping 10 times a second (no Prometheus does) would raise the peak it measures.
    let mut scraped_at = Instant::now();
    while t0.elapsed() < Duration::from_secs(180).max(convergence_timeout(objects as usize) / 10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ready.is_none()
            && http_get(port, "/readyz")
                .await
                .is_some_and(|(s, _)| s == 200)
        {
            ready = Some(t0.elapsed());
        }
        if scraped_at.elapsed() < Duration::from_secs(2) {
            continue;
        }
        scraped_at = Instant::now();
        if let Some((200, scrape)) = http_get(port, "/metrics").await {
            let reconciled = sample_sum(&scrape, "mailsec_reconcile_total", &[]);
            if all_reconciled.is_none() && reconciled >= objects {
                all_reconciled = Some(t0.elapsed());
            }
            last_scrape = scrape;
        }
        let hwm = vm_field(pid, "VmHWM:").unwrap_or(0);
        if hwm != last {
            (last, stable_since) = (hwm, Instant::now());
        } else if ready.is_some()
            && t0.elapsed() > Duration::from_secs(20)
            && stable_since.elapsed() > Duration::from_secs(15)
        {
            break;
        }
    }
    let rss = vm_field(pid, "VmRSS:").unwrap_or(0);
    stop(&mut child).await;
    let warm = Warm {
        ready: ready.unwrap_or(Duration::MAX),
        all_reconciled,
        writes: writes_in(&last_scrape),
        hwm: last,
        rss,
        watched: t0.elapsed(),
    };
    run.log(&format!(
        "warm restart: ready after {:.2?}, {} writes, VmHWM {:.1} MiB",
        warm.ready,
        warm.writes,
        warm.hwm as f64 / 1024.0
    ));
    if warm.writes > 0.0 {
        // Which ones: a write the operator before it left undone is caught up, not repeated.
        let writes = last_scrape.lines().filter(|l| {
            l.starts_with("mailsec_api_requests_total{")
                && WRITE_VERBS
                    .iter()
                    .any(|verb| l.contains(&format!("verb=\"{verb}\"")))
        });
        for line in writes {
            run.log(&format!("  {line}"));
        }
    }
    Ok(Some(warm))
}

/// How long a cold start on `objects` objects may take before the harness gives up: 15 minutes,
/// or 10 ms per object for large fleets (a 2-core machine wrote about 4 ms per object).
fn convergence_timeout(objects: usize) -> Duration {
    Duration::from_secs(900)
        .max(Duration::from_millis(10) * u32::try_from(objects).unwrap_or(u32::MAX))
}

/// What a leader's death cost.
struct Takeover {
    lease: Duration,
    /// From the SIGKILL of the leader until the standby's first reconcile.
    first_reconcile: Option<Duration>,
    /// The transition due 5 s after the kill, seen through a watch, minus its instant.
    late: Option<f64>,
    /// The standby's RSS (KiB) while it waited.
    standby_rss: u64,
}

/// Step 6: two release binaries with leader election on every object. Once the leader has
/// reconciled everything, a subscription ending 5 s later is added, the leader is killed
/// (SIGKILL), and the standby must take over: how long until its first reconcile, and how late
/// the transition lands.
async fn takeover(run: &Run) -> anyhow::Result<Option<Takeover>> {
    if !Path::new(env!("CARGO_BIN_EXE_mailsec-operator")).is_file() {
        return Ok(None);
    }
    let lease = Duration::from_secs(15);
    let objects = (run.args.objects() + 2 * run.args.deadline_subs) as f64;
    let start = |instance: &str, port: u16| {
        release_operator(&run.env, false, &run.args, port)
            .args(["--leader-election", "--lease-name", "load-takeover"])
            .args(["--lease-namespace", "default", "--lease-duration", "15s"])
            .args(["--instance", instance])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
    };
    let (port_a, port_b) = (free_port()?, free_port()?);
    let mut leader = start("load-a", port_a)?;
    let scrape = |port| async move { http_get(port, "/metrics").await.map(|(_, b)| b) };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(s) = scrape(port_a).await
            && sample_sum(&s, "mailsec_reconcile_total", &[]) >= objects
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the leader never reconciled everything"
        );
    }
    let mut standby = start("load-b", port_b)?;
    let standby_pid = standby.id().unwrap_or_default();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(s) = scrape(port_b).await
            && sample_sum(&s, "mailsec_leader", &[]) == 0.0
            && http_get(port_b, "/readyz")
                .await
                .is_some_and(|(s, _)| s == 200)
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the standby never stood by");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let standby_rss = vm_field(standby_pid, "VmRSS:").unwrap_or(0);

    // The transition: a subscription ending 5 s after the kill (written by the leader first).
    let due = Utc::now() + TimeDelta::seconds(8);
    let population = deadline_population(1, 0.0, due, run.now);
    let name = population.tenants[0].name_any().replace("dl-", "to-");
    let mut t = population.tenants[0].clone();
    t.metadata.name = Some(name.clone());
    t.metadata.labels = Some([("load".to_string(), "takeover".to_string())].into());
    let mut s = population.subs[0].clone();
    s.metadata.name = Some(name.clone());
    s.spec.tenant_ref = name.clone();
    let stream = watcher(
        run.apis.tenants.clone(),
        watcher::Config::default().labels("load=takeover"),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    create_all(&run.apis.subs, vec![s], 1).await?;
    create_all(&run.apis.tenants, vec![t], 1).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let written = run.apis.tenants.get(&name).await?.status.is_some_and(|st| {
            st.phase.is_some() && st.next_transition_at.is_some_and(|n| n <= due)
        });
        if written || Utc::now() + TimeDelta::seconds(5) >= due {
            break;
        }
    }
    let wait = (due - TimeDelta::seconds(5) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    signal_group(&leader, libc::SIGKILL);
    let killed = Instant::now();
    run.log("leader killed (SIGKILL)");
    let mut first_reconcile = None;
    let seen = {
        let watch = read_only_seen(
            stream,
            1,
            tokio::time::Instant::now() + lease + Duration::from_secs(60),
        );
        tokio::pin!(watch);
        loop {
            tokio::select! {
                seen = &mut watch => break seen,
                _ = tokio::time::sleep(Duration::from_millis(50)), if first_reconcile.is_none() => {
                    if let Some(s) = scrape(port_b).await
                        && sample_sum(&s, "mailsec_reconcile_total", &[]) > 0.0
                    {
                        first_reconcile = Some(killed.elapsed());
                    }
                }
            }
        }
    };
    let late = seen
        .get(&name)
        .and_then(|at| (*at - due).num_microseconds())
        .map(|us| us as f64 / 1e6);
    stop(&mut standby).await;
    let _ = leader.wait().await;
    let result = Takeover {
        lease,
        first_reconcile,
        late,
        standby_rss,
    };
    run.log(&format!(
        "take-over: first reconcile {:?} after the kill, transition {:?} s late",
        result.first_reconcile, result.late
    ));
    Ok(Some(result))
}

/// Everything measured, for the report.
struct Results {
    baseline: Baseline,
    /// Baseline A again, at the end of the run, on a fresh server.
    after: Applied,
    cold: ColdStart,
    wrong: usize,
    steady: Steady,
    deadlines: Deadlines,
    /// The operator's requests over steps 2 to 4 (watches aside), by verb.
    requests: Vec<String>,
    /// Its peak RSS (KiB) over steps 2 to 4.
    operator_hwm: u64,
    warm: Option<Warm>,
    takeover: Option<Takeover>,
}

/// Prints the results on stdout.
fn report(args: &Args, r: &Results) {
    let n = args.tenants;
    let objects = args.objects();
    let m = r.deadlines.subs;
    let (baseline, cold) = (r.baseline.statuses, r.cold.took);
    let milestones = r.baseline.milestones;
    let counts = &r.cold.counts;
    let (cold_reconciles, cold_writes, cold_requests) =
        (counts.reconciles, counts.writes, counts.requests());
    let wrong = r.wrong;
    let per_min = r.steady.writes * 60.0 / r.steady.secs as f64;
    let lat = &r.deadlines.lateness;
    let early = lat.iter().filter(|l| **l < 0.0).count();
    println!(
        "\n== mailsec-operator load harness: {n} tenants, {} subscriptions (+{m} tenants and subscriptions for deadlines) ==",
        2 * n
    );
    println!(
        "baseline: {objects} status applies (bare client, {} in flight{}): observed after {:.2} s (the client's last answer after {:.2} s)",
        args.in_flight(),
        if args.baseline_events_first {
            ", after the write mix's Events"
        } else if args.baseline_interleaved {
            ", the write mix's Events among them"
        } else {
            ""
        },
        baseline.as_secs_f64(),
        r.baseline.applied.as_secs_f64()
    );
    println!(
        "cold start: {:.2} s until all {objects} statuses observed -> ratio {:.2} (target <= 1.25; {:.2} to the client's last answer)",
        cold.as_secs_f64(),
        cold.as_secs_f64() / baseline.as_secs_f64(),
        cold.as_secs_f64() / r.baseline.applied.as_secs_f64()
    );
    let after = r.after.observed.as_secs_f64();
    let bracket = (baseline.as_secs_f64() + after) / 2.0;
    println!(
        "baseline A again at the end, on a fresh server of its own: {after:.2} s ({:.2} x A); the cold start -> ratio {:.2} to the mean of the two A\n  {}",
        after / baseline.as_secs_f64(),
        cold.as_secs_f64() / bracket,
        r.after.cpu.describe(r.after.observed)
    );
    println!(
        "baseline with the operator's write mix: + {milestones} Event creates (bare client): {:.2} s; the cold start until its late milestone Events were written too: {:.2} s -> ratio {:.2}",
        r.baseline.mix.as_secs_f64(),
        r.cold.written.as_secs_f64(),
        r.cold.written.as_secs_f64() / r.baseline.mix.as_secs_f64()
    );
    println!(
        "  baseline A: {}\n  the rest of the mix: {}\n  cold start: {}",
        r.baseline.cpu.describe(baseline),
        r.baseline.mix_cpu.describe(r.baseline.mix - baseline),
        r.cold.cpu.describe(cold)
    );
    if let Some(w) = &r.baseline.watched {
        println!(
            "baseline A again, the operator's watches held by the same client: observed after {:.2} s (ratio {:.2} to A)\n  {}",
            w.observed.as_secs_f64(),
            w.observed.as_secs_f64() / baseline.as_secs_f64(),
            w.cpu.describe(w.observed)
        );
    }
    println!(
        "  cold start: {cold_reconciles} reconciles, {cold_writes} writes ({:.3} per object, target <= 1.3), {cold_requests} requests ({:.2} per reconcile); phases wrong: {wrong}",
        cold_writes / objects as f64,
        cold_requests / cold_reconciles.max(1.0)
    );
    println!(
        "steady state ({} s): {per_min:.1} writes/min (target 0), {} reconciles, {:.2} requests per reconcile",
        r.steady.secs,
        r.steady.reconciles,
        (r.steady.writes + r.steady.reads) / r.steady.reconciles.max(1.0)
    );
    println!(
        "deadlines: {} of {m} seen; transition observed - due: p50 {:.3} s, p99 {:.3} s, max {:.3} s (target p99 <= 1 s); early: {early}",
        lat.len(),
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "operator requests (steps 2 to 4, watches aside): {}; its peak RSS {:.1} MiB (at convergence {:.1} MiB)",
        r.requests.join(", "),
        r.operator_hwm as f64 / 1024.0,
        r.cold.hwm as f64 / 1024.0
    );
    if let Some(w) = &r.warm {
        println!(
            "warm restart (release binary, {} objects, every status right): ready after {:.2} s, every object reconciled after {}, {} writes (target 0); VmHWM {:.1} MiB, VmRSS {:.1} MiB after {:.0} s (target <= 100 MiB)",
            objects + 2 * m,
            w.ready.as_secs_f64(),
            w.all_reconciled
                .map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
            w.writes,
            w.hwm as f64 / 1024.0,
            w.rss as f64 / 1024.0,
            w.watched.as_secs_f64()
        );
    }
    if let Some(t) = &r.takeover {
        println!(
            "take-over (lease {} s, leader SIGKILLed): standby's first reconcile {} after the kill; transition due 5 s after the kill seen {} late (target <= {} s); standby RSS while waiting {:.1} MiB",
            t.lease.as_secs(),
            t.first_reconcile
                .map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
            t.late.map_or("never".to_string(), |l| format!("{l:.2} s")),
            t.lease.as_secs() + 2,
            t.standby_rss as f64 / 1024.0
        );
    }
}

/// `--memory-only`: the cold start (step 2) alone, watched 15 s more after it converged: its
/// time, requests and peak RSS.
async fn memory_only(run: &Run) -> anyhow::Result<()> {
    let objects = run.args.objects();
    let (cold, operator) = cold_start(run).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (hwm, rss) = operator.memory();
    let scrape = operator.stop().await;
    let counts = Counts::of(&scrape);
    println!(
        "cold start, requests (watches aside): {}",
        requests_by_verb(&scrape).join(", ")
    );
    println!(
        "\n== memory: mailsec-operator run (release) cold start on {objects} objects: converged in {:.1} s (late milestone Events written after {:.1} s); {} requests to the API server, {} of them writes ({:.3} per object), {} reconciles; VmHWM {:.1} MiB, VmRSS {:.1} MiB (target <= 100 MiB at 30,000 objects) ==",
        cold.took.as_secs_f64(),
        cold.written.as_secs_f64(),
        counts.requests(),
        counts.writes,
        counts.writes / objects as f64,
        counts.reconciles,
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    println!("   until converged: {}", cold.cpu.describe(cold.took));
    Ok(())
}
