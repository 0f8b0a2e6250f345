//! Chaos: many tenants go through every phase under compressed time while the
//! operator binary is SIGKILLed again and again and the API server is restarted; afterwards one
//! last operator settles and the cluster must look exactly as if nothing had happened.
//!
//! The scenario:
//! - `CHAOS_TENANTS` tenants (one base service, one admin each), each with one subscription; the
//!   subscriptions end staggered over the chaos window, so with warning and grace periods of 3 s
//!   every tenant is warned, read-only and suspended while the chaos goes on;
//! - every tenant has a labelled Deployment (`mailsec.io/tenant`) with a distinctive replica count
//!   (1..=7), created through the API;
//! - every fourth tenant is renewed once it is seen Suspended: half by a new subscription, half by
//!   moving its subscription's `endDate` a day later; its Deployment must come back to exactly
//!   its count;
//! - notifications go to a real SMTP server (aiosmtpd) that records every message;
//! - meanwhile the operator is SIGKILLed `CHAOS_KILLS` times at random moments (it runs 100-900 ms
//!   after each restart, and stays dead 0-300 ms), and the API server is SIGKILLed and restarted
//!   `CHAOS_APISERVER_RESTARTS` times (down 0.2-2 s, etcd stays up) while an operator runs.
//!
//! Then one last operator runs until everything has converged, and the test checks:
//! 1. every tenant's phase, conditions and services, and every subscription's phase, equal what
//!    `engine::evaluate_world` computes for the final objects now (a tenant whose next transition
//!    is less than 2 s away would be read again later; in this scenario none is);
//! 2. every Deployment has exactly the expected replicas: 0 with the `suspended-replicas`
//!    annotation holding its count while suspended, its count and no annotation once renewed;
//! 3. every tenant's `status.milestones` holds ExpiringSoon, ReadOnly, Suspended (and Renewed)
//!    once each, in that order, and each has exactly one Event: none lost (a process killed
//!    between the status write and the Event leaves it to the next one), none twice;
//! 4. at the SMTP server: no notification lost (every (tenant, milestone, admin) got a mail) and
//!    none duplicated (all the mails of one (tenant, milestone, admin) carry one Message-ID). A
//!    message accepted by the server but not yet recorded as delivered when the operator died (or
//!    when the API server was down) is sent again with the same Message-ID: such re-sends are
//!    counted and printed, not failed.
//!
//! Sizes: the CI size (the default) is 48 tenants, 50 kills, 3 API-server restarts, about 50 s on
//! a 2-core machine. The documented full size is
//! `CHAOS_TENANTS=200 CHAOS_KILLS=60 cargo test --test chaos -- --nocapture`. `CHAOS_SEED=N`
//! repeats the random choices of a run (the seed is printed); `RUST_LOG` changes the level of
//! the operators' log, which goes to a file whose tail is printed when the test fails;
//! `CHAOS_KEEP=1` keeps that log and the mails of a passing run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::operator::*;
use common::sinks::{Sink, field};
use common::{cluster, unique_name};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mailsec_operator::api::{NotificationState, Subscription, Tenant, TenantPhase};
use mailsec_operator::engine::{World, evaluate_world};
use mailsec_operator::fixtures::{self, ESG};
use serde_json::{Value, json};

/// The milestone kinds a tenant that is not renewed goes through, in order.
const LIFECYCLE: [&str; 3] = ["ExpiringSoon", "ReadOnly", "Suspended"];

/// xorshift64*: enough randomness for choosing moments, and repeatable from the printed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi` (milliseconds, counts).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        Err(_) => default,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Renewal {
    NewSubscription,
    LaterEndDate,
}

struct Plan {
    name: String,
    subscription: String,
    end: DateTime<Utc>,
    replicas: i32,
    renewal: Option<Renewal>,
}

/// What an operator run left in its log file: the last lines, for failure messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An operator whose log (warnings, or `RUST_LOG`) is appended to `log`; `instance` names it
/// in the Events it publishes.
fn start_operator(smtp_port: u16, log: &Path, instance: &str) -> OperatorProcess {
    let args = smtp_args(smtp_port);
    let mut cmd = instance_command(
        instance,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("operator log file");
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    )
    .stderr(Stdio::from(file));
    OperatorProcess::spawn_command(cmd)
}

/// Retries an API call while the API server is away (restarting), up to `timeout`.
async fn retry<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Renews each tenant with a renewal planned once its status says Suspended; returns the names
/// renewed. Tolerates the API server being down; a create that reached the server before a
/// failed answer is found as AlreadyExists on the retry.
async fn renew_when_suspended(
    client: kube::Client,
    plans: Vec<(String, String, Renewal)>,
    renewed: Arc<Mutex<BTreeSet<String>>>,
) {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let subs: Api<Subscription> = Api::all(client.clone());
    let mut pending = plans;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (name, sub, how) in pending {
            let suspended = tenants
                .get(&name)
                .await
                .ok()
                .and_then(|t| t.status.and_then(|s| s.phase))
                == Some(TenantPhase::Suspended);
            if !suspended {
                still.push((name, sub, how));
                continue;
            }
            let until = rfc3339(Utc::now() + TimeDelta::days(1));
            let done = match how {
                Renewal::NewSubscription => {
                    let start = rfc3339(Utc::now() - TimeDelta::days(1));
                    let mut s = fixtures::subscription(
                        &format!("{sub}-renewal"),
                        &name,
                        ESG,
                        &start,
                        &until,
                        50,
                    );
                    s.metadata.generation = None;
                    match subs.create(&PostParams::default(), &s).await {
                        Ok(_) => true,
                        Err(kube::Error::Api(e)) if e.code == 409 => true,
                        Err(_) => false,
                    }
                }
                Renewal::LaterEndDate => subs
                    .patch(
                        &sub,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"endDate": until}})),
                    )
                    .await
                    .is_ok(),
            };
            if done {
                renewed.lock().expect("lock").insert(name);
            } else {
                still.push((name, sub, how));
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything the checks read, listed at one moment.
struct Snapshot {
    at: DateTime<Utc>,
    tenants: BTreeMap<String, Tenant>,
    world: World,
    deployments: BTreeMap<String, Deployment>,
    /// (tenant, reason) → one line per Event object: when, by whom, how many times (series).
    events: BTreeMap<(String, String), Vec<String>>,
    mails: Vec<Value>,
}

async fn snapshot(client: &kube::Client, ns: &str, sink: &Sink) -> Snapshot {
    let lp = ListParams::default();
    let t = Duration::from_secs(60);
    let (tenants_api, subs_api) = (
        Api::<Tenant>::all(client.clone()),
        Api::<Subscription>::all(client.clone()),
    );
    // One namespace per tenant, named after it (`<prefix>-NNN`).
    let deployments_api = Api::<Deployment>::all(client.clone());
    let events_api = Api::<Event>::namespaced(client.clone(), "default");
    let tenants = retry("list tenants", t, || tenants_api.list(&lp))
        .await
        .items;
    let subscriptions = retry("list subscriptions", t, || subs_api.list(&lp))
        .await
        .items;
    let prefix = format!("{ns}-");
    let deployments: Vec<Deployment> = retry("list deployments", t, || deployments_api.list(&lp))
        .await
        .items
        .into_iter()
        .filter(|d| {
            d.metadata
                .namespace
                .as_deref()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    let events = retry("list events", t, || events_api.list(&lp)).await.items;
    let mut counts = BTreeMap::new();
    for e in events {
        let Some(r) = e.regarding.as_ref() else {
            continue;
        };
        if r.kind.as_deref() != Some("Tenant") {
            continue;
        }
        let times = e.series.as_ref().map_or(1, |s| s.count.max(1) as usize);
        let line = format!(
            "{} at {:?} by {:?}, action {:?}",
            e.metadata.name.as_deref().unwrap_or_default(),
            e.event_time.as_ref().map(|t| t.0),
            e.reporting_instance,
            e.action
        );
        counts
            .entry((
                r.name.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
            ))
            .or_insert_with(Vec::new)
            .extend(std::iter::repeat_n(line, times));
    }
    Snapshot {
        at: Utc::now(),
        tenants: tenants
            .iter()
            .map(|t| (t.metadata.name.clone().unwrap_or_default(), t.clone()))
            .collect(),
        world: World {
            tenants,
            subscriptions,
        },
        deployments: deployments
            .into_iter()
            .map(|d| {
                let tenant = d
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("mailsec.io/tenant").cloned())
                    .unwrap_or_default();
                (tenant, d)
            })
            .collect(),
        events: counts,
        mails: sink.received(),
    }
}

/// The findings of the final checks.
#[derive(Default, Debug)]
struct Findings {
    /// Failed checks that can not heal (something announced or mailed twice), one line each.
    fatal: Vec<String>,
    /// Failed checks, one line each.
    problems: Vec<String>,
    /// Still converging: notifications not yet delivered, or a transition less than 2 s away.
    unsettled: Vec<String>,
    lost_events: usize,
    /// Milestone Events found, one per recorded milestone.
    milestone_events: usize,
    mails: usize,
    distinct_notifications: usize,
    resends: usize,
    /// The most copies (same Message-ID) one notification was mailed in.
    most_copies: usize,
}

fn check(plans: &[Plan], renewed: &BTreeSet<String>, snap: &Snapshot) -> Findings {
    let mut f = Findings::default();
    let eval = evaluate_world(&snap.world, &policy(), snap.at);
    let by_name: BTreeMap<&str, _> = snap
        .world
        .tenants
        .iter()
        .zip(&eval.tenants)
        .filter_map(|(t, e)| Some((t.metadata.name.as_deref()?, e)))
        .collect();
    let ours: BTreeSet<&str> = plans.iter().map(|p| p.name.as_str()).collect();

    // Mails by (tenant, milestone id, recipient) → Message-IDs.
    let mut mails: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for m in &snap.mails {
        let rcpt = m["rcpt_tos"][0].as_str().unwrap_or_default().to_string();
        mails
            .entry((
                field(m, "tenant").to_string(),
                field(m, "milestone").to_string(),
                rcpt,
            ))
            .or_default()
            .push(field(m, "message_id").to_string());
    }
    let mut expected_keys = BTreeSet::new();

    for plan in plans {
        let name = plan.name.as_str();
        let Some(t) = snap.tenants.get(name) else {
            f.problems.push(format!("{name}: tenant missing"));
            continue;
        };
        let Some(e) = by_name.get(name) else {
            f.problems.push(format!("{name}: not evaluated"));
            continue;
        };
        let status = t.status.clone().unwrap_or_default();
        let is_renewed = renewed.contains(name);

        // 1. The operator's status is the engine's answer for the final objects now.
        if e.next_transition
            .is_some_and(|n| n - snap.at < TimeDelta::seconds(2))
        {
            f.unsettled.push(format!(
                "{name}: next transition at {:?}",
                e.next_transition
            ));
            continue;
        }
        let want_phase = if is_renewed {
            TenantPhase::Active
        } else {
            TenantPhase::Suspended
        };
        if e.status.phase != Some(want_phase) {
            f.problems.push(format!(
                "{name}: the engine says {:?}, the scenario expects {want_phase:?}",
                e.status.phase
            ));
        }
        if status.phase != e.status.phase
            || status.conditions != e.status.conditions
            || status.services != e.status.services
            || status.observed_generation != t.metadata.generation
        {
            f.problems.push(format!(
                "{name}: status differs from evaluate_world: phase {:?} vs {:?}, conditions {:#?} vs {:#?}, services {:#?} vs {:#?}, observedGeneration {:?} vs generation {:?}",
                status.phase,
                e.status.phase,
                status.conditions,
                e.status.conditions,
                status.services,
                e.status.services,
                status.observed_generation,
                t.metadata.generation
            ));
        }

        // 2. The workload: scaled to zero while suspended, its count back once renewed.
        match snap.deployments.get(name) {
            None => f.problems.push(format!("{name}: deployment missing")),
            Some(d) => {
                let replicas = d.spec.as_ref().and_then(|s| s.replicas);
                let remembered = d
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("mailsec.io/suspended-replicas").cloned());
                let want = if status.phase == Some(TenantPhase::Suspended) {
                    (Some(0), Some(plan.replicas.to_string()))
                } else {
                    (Some(plan.replicas), None)
                };
                if (replicas, remembered.clone()) != want {
                    f.problems.push(format!(
                        "{name}: deployment replicas {replicas:?}, suspended-replicas {remembered:?}; expected {want:?} (original count {})",
                        plan.replicas
                    ));
                }
            }
        }

        // 3. Each milestone once, in order; no milestone Event twice.
        let kinds: Vec<&str> = status.milestones.iter().map(|m| m.kind.as_ref()).collect();
        let mut want_kinds = LIFECYCLE.to_vec();
        if is_renewed {
            want_kinds.push("Renewed");
        }
        if kinds != want_kinds {
            f.problems.push(format!(
                "{name}: milestones {kinds:?}, expected {want_kinds:?}"
            ));
        }
        let ids: BTreeSet<&str> = status.milestones.iter().map(|m| m.id.as_str()).collect();
        if ids.len() != status.milestones.len() {
            f.problems
                .push(format!("{name}: a milestone id recorded twice: {ids:?}"));
        }
        for kind in &want_kinds {
            let published = snap
                .events
                .get(&(name.to_string(), kind.to_string()))
                .cloned()
                .unwrap_or_default();
            f.milestone_events += published.len().min(1);
            match published.len() {
                0 => {
                    f.lost_events += 1;
                    f.unsettled.push(format!("{name}: no {kind} Event (yet)"));
                }
                1 => {}
                n => f.fatal.push(format!(
                    "{name}: {kind} Event published {n} times: {published:#?}"
                )),
            }
        }

        // 4. One notification per milestone and admin, delivered; at the SMTP server, at least
        // one mail for each, and one Message-ID for all the copies.
        let admins: Vec<String> = t.spec.admins.iter().map(|a| a.email.clone()).collect();
        for m in &status.milestones {
            for admin in &admins {
                expected_keys.insert((name.to_string(), m.id.clone(), admin.clone()));
                match status
                    .notifications
                    .iter()
                    .find(|n| n.milestone == m.id && &n.recipient == admin)
                {
                    Some(n) if n.state == NotificationState::Delivered => {}
                    Some(n) if n.state == NotificationState::Pending => f
                        .unsettled
                        .push(format!("{name}: {} to {admin} pending: {n:?}", m.id)),
                    Some(n) => f.fatal.push(format!("{name}: {} to {admin}: {n:?}", m.id)),
                    None => f
                        .unsettled
                        .push(format!("{name}: {} to {admin} not in the outbox", m.id)),
                }
            }
        }
    }
    for key in &expected_keys {
        match mails.get(key) {
            None => f.unsettled.push(format!("no mail for {key:?}")),
            Some(ids) => {
                let distinct: BTreeSet<&String> = ids.iter().collect();
                if distinct.len() > 1 {
                    f.fatal.push(format!(
                        "DUPLICATED: {key:?} mailed with {} Message-IDs: {ids:?}",
                        distinct.len()
                    ));
                }
            }
        }
    }
    for key in mails.keys() {
        if ours.contains(key.0.as_str()) && !expected_keys.contains(key) {
            f.problems
                .push(format!("a mail for no recorded milestone: {key:?}"));
        }
    }

    // The subscriptions' phases are the engine's too.
    for (s, e) in snap.world.subscriptions.iter().zip(&eval.subscriptions) {
        if !ours.contains(s.spec.tenant_ref.as_str()) {
            continue;
        }
        let phase = s.status.as_ref().and_then(|st| st.phase);
        if e.next_transition
            .is_some_and(|n| n - snap.at < TimeDelta::seconds(2))
        {
            continue;
        }
        if phase != e.status.phase {
            f.problems.push(format!(
                "subscription {}: phase {phase:?}, the engine says {:?}",
                s.metadata.name.as_deref().unwrap_or_default(),
                e.status.phase
            ));
        }
    }

    f.mails = snap.mails.len();
    f.distinct_notifications = mails.len();
    f.resends = snap.mails.len() - mails.len();
    f.most_copies = mails.values().map(Vec::len).max().unwrap_or(0);
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_killed_and_api_server_restarted_under_load_converges_exactly() {
    let began = Instant::now();
    let n = env_u64("CHAOS_TENANTS", 48) as usize;
    let kills = env_u64("CHAOS_KILLS", 50) as usize;
    let restarts = env_u64("CHAOS_APISERVER_RESTARTS", 3) as usize;
    let seed = env_u64(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    eprintln!(
        "chaos: {n} tenants, {kills} kills, {restarts} API-server restarts, seed {seed} \
         (CHAOS_SEED={seed} repeats the choices)"
    );
    let mut rng = Rng::new(seed);
    let cluster = cluster();
    // Someone else's API server (MAILSEC_TEST_KUBECONFIG) is not ours to restart.
    let restarts = if cluster.is_external() {
        eprintln!("chaos: external cluster: no API-server restarts");
        0
    } else {
        restarts
    };
    let client = cluster.client().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mail_dir = dir.path().join("mails");
    let log = dir.path().join("operator.log");
    let port = common::free_port();
    let sink = Sink::mail(port, &mail_dir, &[]);

    // The chaos window, estimated from the kill schedule (a kill cycle takes ~0.6 s on average,
    // a restart of the API server ~2.5 s): the subscriptions end across it, so that kills land
    // before, between and after every tenant's milestones.
    let window = Duration::from_secs_f64(kills as f64 * 0.6 + restarts as f64 * 2.5);
    let prefix = unique_name("chaos");
    let ns = prefix.clone();
    let mut plans: Vec<Plan> = (0..n)
        .map(|i| Plan {
            name: format!("{prefix}-{i:03}"),
            subscription: format!("{prefix}-{i:03}-esg"),
            end: Utc::now(),
            replicas: 1 + (i % 7) as i32,
            renewal: match i % 8 {
                1 => Some(Renewal::NewSubscription),
                5 => Some(Renewal::LaterEndDate),
                _ => None,
            },
        })
        .collect();

    // Workloads and tenants first (the operator is not running yet), then the subscriptions,
    // with their ends counted from when they are created.
    let created = Instant::now();
    futures::stream::iter(plans.iter())
        .map(|p| {
            let client = client.clone();
            async move {
                // Each tenant's workloads in a namespace assigned to it, named after it.
                create_namespace(&client, &p.name, &p.name).await;
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), &p.name);
                let d: Deployment = serde_json::from_value(deployment_manifest(
                    &p.name, &p.name, &p.name, None, p.replicas,
                ))
                .expect("deployment");
                deployments
                    .create(&PostParams::default(), &d)
                    .await
                    .map_err(|e| format!("create deployment {}: {e}", p.name))?;
                create_tenant(&client, &p.name, &[ESG], 10).await;
                Ok::<_, String>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await
        .expect("create the workloads and tenants");
    let t0 = Utc::now();
    let spread = window.as_secs_f64() - 10.0;
    for (i, p) in plans.iter_mut().enumerate() {
        let offset = 4.0 + spread.max(1.0) * i as f64 / n as f64;
        p.end =
            DateTime::from_timestamp(t0.timestamp() + offset.round() as i64, 0).expect("instant");
    }
    futures::stream::iter(plans.iter())
        .map(|p| {
            let client = client.clone();
            async move {
                create_subscription(&client, &p.subscription, &p.name, ESG, p.end, 50).await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    eprintln!(
        "chaos: created {n} tenants, subscriptions and deployments in {:.1} s; ends from +{} s to +{} s",
        created.elapsed().as_secs_f64(),
        (plans[0].end - t0).num_seconds(),
        (plans[n - 1].end - t0).num_seconds()
    );

    let renewed = Arc::new(Mutex::new(BTreeSet::new()));
    let renewer = tokio::spawn(renew_when_suspended(
        client.clone(),
        plans
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.subscription.clone(), p.renewal?)))
            .collect(),
        renewed.clone(),
    ));

    // The chaos: kills at random moments, API-server restarts at a few of them (spread over the
    // window, while an operator runs).
    let restart_at: BTreeSet<usize> = (1..=restarts)
        .map(|r| r * kills / (restarts + 1) + rng.range(0, 3) as usize)
        .collect();
    let chaos_began = Instant::now();
    let mut operator = start_operator(port, &log, "chaos-0");
    let mut exited_by_itself = Vec::new();
    let mut downtimes = Vec::new();
    for k in 1..=kills {
        tokio::time::sleep(Duration::from_millis(rng.range(100, 900))).await;
        if restart_at.contains(&k) {
            let down = Duration::from_millis(rng.range(200, 2000));
            let took = tokio::task::spawn_blocking(move || cluster.restart_apiserver(down))
                .await
                .expect("restart task")
                .unwrap_or_else(|e| panic!("restart the API server: {e}"));
            downtimes.push(took);
            tokio::time::sleep(Duration::from_millis(rng.range(100, 900))).await;
        }
        if let Some(status) = operator.kill() {
            exited_by_itself.push(status);
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        operator = start_operator(port, &log, &format!("chaos-{k}"));
    }
    let chaos = chaos_began.elapsed();
    eprintln!(
        "chaos: {kills} kills and {} API-server restarts (down {:?}) in {:.1} s; {} operators had exited by themselves",
        downtimes.len(),
        downtimes,
        chaos.as_secs_f64(),
        exited_by_itself.len()
    );

    // The last operator settles: renewals done, every tenant past its last transition, every
    // notification delivered; then the same checks after a quiet moment.
    let settle_began = Instant::now();
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = operator.exited() {
            panic!(
                "the last operator exited by itself ({status}); its log:\n{}",
                log_tail(&log, 40)
            );
        }
        if renewer.is_finished() {
            let renewed = renewed.lock().expect("lock").clone();
            let snap = snapshot(&client, &ns, &sink).await;
            let f = check(&plans, &renewed, &snap);
            if f.problems.is_empty() && f.unsettled.is_empty() && f.fatal.is_empty() {
                break;
            }
            assert!(
                f.fatal.is_empty(),
                "{} checks failed for good:\n{}",
                f.fatal.len(),
                f.fatal.join("\n")
            );
            last = Some(f);
        }
        if Instant::now() > deadline {
            let f = last.unwrap_or_default();
            panic!(
                "not converged 120 s after the chaos (renewals done: {}): {} problems, {} unsettled:\n{}\n{}\noperator log (last lines):\n{}",
                renewer.is_finished(),
                f.problems.len(),
                f.unsettled.len(),
                f.problems.join("\n"),
                f.unsettled
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n"),
                log_tail(&log, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = settle_began.elapsed();
    // Quiet: nothing more may happen (no late repeats of Events or mails).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let renewed = renewed.lock().expect("lock").clone();
    let snap = snapshot(&client, &ns, &sink).await;
    let f = check(&plans, &renewed, &snap);
    assert!(
        f.problems.is_empty() && f.unsettled.is_empty() && f.fatal.is_empty(),
        "after settling: {:#?}\noperator log:\n{}",
        f,
        log_tail(&log, 40)
    );
    assert_eq!(f.lost_events, 0, "milestone Events lost");
    let mut leftover = operator;
    if let Some(status) = leftover.exited() {
        panic!("the last operator exited by itself: {status}");
    }
    leftover.kill();
    let planned_renewals = plans.iter().filter(|p| p.renewal.is_some()).count();
    assert_eq!(
        renewed.len(),
        planned_renewals,
        "every planned renewal done"
    );

    let summary = format!(
        "chaos summary: {n} tenants ({} renewed), {kills} operator kills, {} API-server restarts, \
         {} mails for {} notifications (0 lost, 0 duplicated, {} re-sent with the same Message-ID, \
         at most {} copies of one), \
         {} milestone Events, each exactly once (0 lost, 0 duplicated), chaos {:.1} s, \
         settled in {:.1} s, total {:.1} s, seed {seed}",
        renewed.len(),
        downtimes.len(),
        f.mails,
        f.distinct_notifications,
        f.resends,
        f.most_copies,
        f.milestone_events,
        chaos.as_secs_f64(),
        settled.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    drop(sink);
    if std::env::var("CHAOS_KEEP").as_deref() == Ok("1") {
        eprintln!(
            "chaos: mails and operator log kept in {}",
            dir.keep().display()
        );
    }
}
