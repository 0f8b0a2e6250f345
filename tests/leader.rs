//! Leader election with operator processes (the binary) against the real API server:
//! one leader reconciles and writes while the other stands by; SIGKILL of the leader → the
//! standby takes over within the lease duration (plus slack) and reconciles a new tenant;
//! SIGTERM → the Lease is released at once and the standby takes over within a retry period.

mod common;

use std::time::{Duration, Instant};

use common::operator::*;
use common::probe::{http_get, sample};
use common::tools::signal;
use common::{cluster, describe, free_port, kubectl, unique_name};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use mailsec_operator::api::TenantPhase;
use mailsec_operator::fixtures::ESG;

/// The lease duration the operators run with in this test.
const LEASE_SECS: u64 = 4;

struct Instance {
    name: String,
    port: u16,
    process: OperatorProcess,
}

fn start(name: &str, ns: &str, lease: &str) -> Instance {
    let port = free_port();
    let duration = format!("{LEASE_SECS}s");
    let process = OperatorProcess::spawn_instance(
        name,
        port,
        &[
            "--leader-election",
            "--lease-name",
            lease,
            "--lease-namespace",
            ns,
            "--lease-duration",
            &duration,
        ],
    );
    Instance {
        name: name.to_string(),
        port,
        process,
    }
}

fn scrape(i: &Instance) -> String {
    http_get(i.port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get(name)
        .await
        .ok()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Waits until the Lease holder satisfies `check`; returns the holder and how long it took.
async fn wait_holder(
    leases: &Api<Lease>,
    name: &str,
    timeout: Duration,
    check: impl Fn(Option<&str>) -> bool,
) -> (Option<String>, Duration) {
    let started = Instant::now();
    loop {
        let h = holder(leases, name).await;
        if check(h.as_deref()) {
            return (h, started.elapsed());
        }
        assert!(
            started.elapsed() < timeout,
            "lease holder still {h:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which instance the holder identity belongs to (identities are `<POD_NAME>-<random>`).
fn owner(instances: &[Instance], holder: &str) -> usize {
    instances
        .iter()
        .position(|i| holder.starts_with(&format!("{}-", i.name)))
        .unwrap_or_else(|| panic!("no instance holds {holder}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_writes_a_standby_takes_over_on_kill_and_at_once_on_sigterm() {
    let client = cluster().client().await;
    let ns = unique_name("leader");
    let out = kubectl(&["create", "namespace", &ns]);
    assert!(out.status.success(), "{}", describe(&out));
    let lease = unique_name("lease");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    let mut instances = vec![start("op-a", &ns, &lease), start("op-b", &ns, &lease)];
    let (first, _) = wait_holder(&leases, &lease, Duration::from_secs(20), |h| h.is_some()).await;
    let first = first.expect("a holder");
    let (li, si) = match owner(&instances, &first) {
        0 => (0, 1),
        _ => (1, 0),
    };
    let (leader, standby) = (&instances[li], &instances[si]);

    // The leader reconciles; the standby runs no controller and writes nothing.
    let leading = common::eventually(Duration::from_secs(20), || {
        (http_get(leader.port, "/readyz").map(|r| r.0) == Some(200)).then_some(())
    });
    assert!(leading.is_some(), "the leader is ready (caches synced)");
    let t1 = unique_name("ha1");
    subscribe(&client, "ha1-esg", &t1, ESG, 2, 10).await;
    create_tenant(&client, &t1, &[ESG], 5).await;
    // Warned (or further along already, on a loaded machine: the warning lasts 3 s).
    wait_tenant(&client, &t1, Duration::from_secs(20), "warned", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p >= TenantPhase::Warning)
    })
    .await;
    // Its Events come from the leader alone. They are published just after the status write
    // the wait above saw, so give them a moment.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let reporters: Vec<Option<String>> = common::eventually_async(Duration::from_secs(10), || {
        let (events, t1) = (events.clone(), t1.clone());
        async move {
            let found: Vec<Option<String>> = events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(t1.as_str())
                })
                .map(|e| e.reporting_instance)
                .collect();
            (!found.is_empty()).then_some(found)
        }
    })
    .await
    .unwrap_or_default();
    assert!(!reporters.is_empty(), "the tenant's ExpiringSoon Event");
    assert!(
        reporters
            .iter()
            .all(|r| r.as_deref() == Some(leader.name.as_str())),
        "Events reported by {reporters:?}, the leader is {}",
        leader.name
    );
    // The Event is published during the reconcile, which is counted when it returns: wait for
    // the count too.
    let tenant_reconciled = |m: &str| {
        sample(
            m,
            "mailsec_reconcile_total{controller=\"tenant\",result=\"success\"}",
        )
        .is_some_and(|n| n >= 1.0)
    };
    let ready = common::eventually(Duration::from_secs(10), || {
        let (l, s) = (scrape(leader), scrape(standby));
        (sample(&l, "mailsec_leader") == Some(1.0)
            && sample(&s, "mailsec_leader") == Some(0.0)
            && tenant_reconciled(&l))
        .then_some((l, s))
    });
    let (_, standby_metrics) = ready.unwrap_or_else(|| {
        panic!(
            "mailsec_leader is 1 on the leader, 0 on the standby, and the leader counted a \
             tenant reconcile: {}",
            scrape(leader)
        )
    });
    assert!(
        !standby_metrics.contains("mailsec_reconcile_total{"),
        "the standby reconciled: {standby_metrics}"
    );
    // Its only possible write: one attempt at the free Lease at start-up, lost to the leader.
    assert!(
        sample(
            &standby_metrics,
            "mailsec_api_requests_total{verb=\"patch\"}"
        )
        .is_some_and(|n| n <= 1.0),
        "the standby wrote: {standby_metrics}"
    );
    for i in &instances {
        assert_eq!(http_get(i.port, "/healthz").map(|r| r.0), Some(200));
        assert_eq!(
            http_get(i.port, "/readyz").map(|r| r.0),
            Some(200),
            "{}",
            i.name
        );
    }

    // SIGKILL the leader: no release; the standby takes over once the Lease expires.
    let killed_at = Instant::now();
    let standby_name = standby.name.clone();
    let mut child = instances[li].process.take();
    let _ = child.kill();
    let _ = child.wait();
    let (second, _) = wait_holder(&leases, &lease, Duration::from_secs(LEASE_SECS + 6), |h| {
        h.is_some_and(|h| h != first)
    })
    .await;
    let takeover = killed_at.elapsed();
    let second = second.expect("a new holder");
    assert!(second.starts_with(&format!("{standby_name}-")), "{second}");
    // Within the lease duration, plus the crate's up-to-1 s jitter and scheduling slack.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECS + 3),
        "take-over after SIGKILL took {takeover:?}"
    );
    let t2 = unique_name("ha2");
    subscribe(&client, "ha2-esg", &t2, ESG, 86_400, 10).await;
    let created = Instant::now();
    create_tenant(&client, &t2, &[ESG], 5).await;
    wait_phase(&client, &t2, TenantPhase::Active, Duration::from_secs(20)).await;
    let reconciled = created.elapsed();

    // A third instance stands by; SIGTERM the current leader: it stops its controllers and
    // releases the Lease, and the standby takes it within a retry period.
    let c = start("op-c", &ns, &lease);
    let ready = common::eventually(Duration::from_secs(10), || {
        (http_get(c.port, "/readyz").map(|r| r.0) == Some(200)).then_some(())
    });
    assert!(ready.is_some(), "the new standby is ready");
    let terminated_at = Instant::now();
    signal(instances[si].process.child(), libc::SIGTERM);
    let (_, released) = wait_holder(&leases, &lease, Duration::from_secs(LEASE_SECS), |h| {
        h.is_none_or(|h| h != second)
    })
    .await;
    let (third, _) = wait_holder(&leases, &lease, Duration::from_secs(LEASE_SECS), |h| {
        h.is_some_and(|h| h.starts_with("op-c-"))
    })
    .await;
    let handover = terminated_at.elapsed();
    assert!(third.is_some());
    assert!(
        released <= Duration::from_secs(2),
        "SIGTERM released the lease after {released:?}"
    );
    // A released lease is taken within the retry period (1 s for a 4 s lease) plus slack,
    // instead of after the lease duration.
    assert!(
        handover < Duration::from_secs(LEASE_SECS),
        "hand-over after SIGTERM took {handover:?}"
    );
    let status = instances[si].process.take().wait().expect("wait");
    assert!(
        status.success(),
        "the operator exits cleanly on SIGTERM: {status}"
    );
    let t3 = unique_name("ha3");
    subscribe(&client, "ha3-esg", &t3, ESG, 86_400, 10).await;
    create_tenant(&client, &t3, &[ESG], 5).await;
    wait_phase(&client, &t3, TenantPhase::Active, Duration::from_secs(20)).await;

    eprintln!(
        "leader election (lease {LEASE_SECS} s): take-over after SIGKILL {takeover:?} \
         ({:.2} of the lease duration); new tenant reconciled {reconciled:?} after creation; \
         SIGTERM released the lease in {released:?} and the standby led after {handover:?} \
         ({:.2} of the lease duration)",
        takeover.as_secs_f64() / LEASE_SECS as f64,
        handover.as_secs_f64() / LEASE_SECS as f64,
    );
    drop(c);
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
