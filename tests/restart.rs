//! The operator killed (SIGKILL) and restarted in the middle of the lifecycle: the same final
//! state, every deadline recomputed from spec and status, and no milestone Event twice.

mod common;

use mailsec_operator::api::ConditionType;
use std::time::Duration;

use common::operator::*;
use common::{cluster, unique_name};
use mailsec_operator::api::TenantPhase;
use mailsec_operator::fixtures::ESG;

#[tokio::test(flavor = "multi_thread")]
async fn killed_and_restarted_operator_reaches_the_same_state_without_repeating_events() {
    let client = cluster().client().await;
    // Four tenants whose subscriptions end at staggered instants, so kills land between,
    // before and after their milestones.
    let mut tenants = Vec::new();
    for (i, end_in) in [3, 5, 7, 9].into_iter().enumerate() {
        let t = unique_name(&format!("restart{i}"));
        subscribe(&client, "restart-esg", &t, ESG, end_in, 50).await;
        create_tenant(&client, &t, &[ESG], 10).await;
        tenants.push(t);
    }

    let mut operator = OperatorProcess::spawn(&[]);
    // Kill and restart at several moments across the 12 s the lifecycle takes.
    for pause_ms in [900, 1700, 600, 2300, 1300, 400, 2100] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        operator.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        operator = OperatorProcess::spawn(&[]);
    }
    for t in &tenants {
        wait_phase(&client, t, TenantPhase::Suspended, Duration::from_secs(30)).await;
    }
    // Let the last operator settle, then compare.
    tokio::time::sleep(Duration::from_secs(2)).await;
    operator.kill();

    for t in &tenants {
        let tn = tenant(&client, t).await;
        assert_eq!(
            tenant_condition(&tn, ConditionType::Suspended),
            Some((true, "SubscriptionExpired".into())),
            "{t}"
        );
        let events = events_about(&client, "Tenant", t).await;
        for reason in ["ExpiringSoon", "ReadOnly", "Suspended"] {
            let n = events.iter().filter(|(r, _)| r == reason).count();
            // A kill between the status write and the Event can lose an Event (they are
            // best-effort; notifications have their own outbox), but never repeat one.
            assert!(n <= 1, "{t}: {reason} announced {n} times: {events:#?}");
        }
        let recorded: Vec<String> = tn
            .status
            .as_ref()
            .map(|s| s.milestones.iter().map(|m| m.kind.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(
            recorded,
            ["ExpiringSoon", "ReadOnly", "Suspended"],
            "{t}: every milestone recorded once, in order"
        );
    }
}

/// SIGTERM stops the operator also when its API server is unreachable: reconciles that wait
/// for caches that can never fill do not hold the shutdown for ever (it waits at most 10 s).
#[test]
fn sigterm_stops_the_operator_while_the_api_server_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: u}}\ncurrent-context: gone\n"
        ),
    )
    .expect("write kubeconfig");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailsec-operator"))
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the operator binary");
    // Running, retrying its lists.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let asked = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if asked.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let status = status.expect("the operator did not stop within 30 s of SIGTERM");
    assert!(status.success(), "{status}");
    eprintln!("stopped {:?} after SIGTERM", asked.elapsed());
}
