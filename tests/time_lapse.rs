//! The operator on a time-lapse clock (`--time-lapse-from`, `--time-lapse-speed`), on the real
//! API server: a tenant moves through its phases at the lapsed instants, with the real 30-day
//! warning period, and the operator says loudly that its clock is not real time.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::operator::{OperatorProcess, create_tenant, expect_events, tenant, wait_phase};
use common::{cluster, unique_name};
use kube::api::{Api, PostParams};
use mailsec_operator::api::{Subscription, TenantPhase};
use mailsec_operator::fixtures::{self, ESG};

/// One lapsed day per real second.
const SPEED: u32 = 86_400;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn condition_message(t: &mailsec_operator::api::Tenant, type_: &str) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_lives_through_its_lifecycle_on_a_time_lapse_clock() {
    if cluster().is_external() {
        // An operator on a lapsed clock would move every tenant of that cluster into the future.
        eprintln!(
            "skipped on an existing cluster: a time-lapse operator would rewrite its tenants"
        );
        return;
    }
    let client = cluster().client().await;
    // The lapse starts on 1 Jun 2030; the subscription ends with that day + 9 (endDate
    // 2030-06-10, so at 2030-06-11T00:00Z): 10 lapsed days, 10 real seconds. Real 30-day warning;
    // a 10-day grace period, so suspension follows 10 real seconds later.
    let from = at("2030-06-01T00:00:00Z");
    let end = at("2030-06-11T00:00:00Z");
    let suspend = end + TimeDelta::days(10);

    let t = unique_name("lapse");
    let s = unique_name("lapse-esg");
    create_tenant(&client, &t, &[ESG], 5).await;
    let sub = fixtures::subscription(&s, &t, ESG, "2030-01-01", "2030-06-10", 10);
    let subs: Api<Subscription> = Api::all(client.clone());
    subs.create(&PostParams::default(), &sub)
        .await
        .expect("create the subscription");

    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailsec-operator"));
    cmd.args([
        "run",
        "--time-lapse-from",
        "2030-06-01",
        "--time-lapse-speed",
        &SPEED.to_string(),
        "--grace-period",
        "10d",
        "--log-format",
        "text",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .env("KUBECONFIG", cluster().kubeconfig())
    .env("RUST_LOG", "info,mailsec_operator=debug")
    .env("NO_COLOR", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log.reopen().expect("reopen the log file"));
    let started = Instant::now();
    let operator = OperatorProcess::spawn_command(cmd);

    // At once: within the 30-day warning period of the lapsed clock (real time would say
    // the subscription has years to run).
    wait_phase(&client, &t, TenantPhase::Warning, Duration::from_secs(8)).await;
    let warned = tenant(&client, &t).await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "warned late: {:?}",
        started.elapsed()
    );
    let service = &warned.status.as_ref().expect("status").services[0];
    assert_eq!(service.effective_end_at, Some(end));
    assert_eq!(service.suspends_at, Some(suspend));
    let message = condition_message(&warned, "Warning");
    assert!(
        message.contains("until the end of 10 Jun 2030 (UTC)"),
        "the warning names the last day: {message}"
    );

    // ReadOnly when the lapsed clock reaches the end: 10 real seconds after the clock started.
    wait_phase(&client, &t, TenantPhase::ReadOnly, Duration::from_secs(25)).await;
    let read_only_after = started.elapsed();
    assert!(
        read_only_after >= Duration::from_secs(10) - Duration::from_millis(100),
        "read-only before the lapsed end: after {read_only_after:?}"
    );
    assert!(
        read_only_after < Duration::from_secs(16),
        "read-only late: after {read_only_after:?}"
    );
    let ro = tenant(&client, &t).await;
    let status = ro.status.as_ref().expect("status");
    assert_eq!(status.services[0].read_only_since, Some(end));
    let milestone = status
        .milestones
        .iter()
        .find(|m| m.kind == "ReadOnly")
        .expect("the ReadOnly milestone is recorded");
    assert_eq!(milestone.due_at, end, "{milestone:?}");
    // Announced on the lapsed clock too: moments (real) after it was due, so not late.
    let announced = milestone.announced_at;
    assert!(
        announced >= end && announced - end < TimeDelta::days(4),
        "announced at {announced} on the lapsed clock, due {end}"
    );

    // Suspended when the 10-day grace period has passed on the lapsed clock.
    wait_phase(&client, &t, TenantPhase::Suspended, Duration::from_secs(20)).await;
    let suspended_after = started.elapsed();
    assert!(
        suspended_after >= Duration::from_secs(20) - Duration::from_millis(100),
        "suspended before the lapsed grace end: after {suspended_after:?}"
    );
    for want in ["ExpiringSoon", "ReadOnly", "Suspended"] {
        expect_events(&client, "Tenant", &t, want, 1).await;
    }
    drop(operator);

    // Said loudly, and every reconcile's log lines name their object.
    let text = std::fs::read_to_string(log.path()).expect("read the operator log");
    let lapse_warning = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("TIME LAPSE"))
        .unwrap_or_else(|| panic!("no TIME LAPSE warning in the log:\n{text}"));
    assert!(
        lapse_warning.contains("time_lapse_from=2030-06-01T00:00:00Z")
            && lapse_warning.contains("time_lapse_speed=86400"),
        "{lapse_warning}"
    );
    assert!(
        text.lines().any(|l| l.contains("tenant reconciled")
            && l.contains(&format!("object.name={t}"))
            && l.contains("object.kind=Tenant")),
        "the tenant's reconcile log lines carry its name:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("reconcile{")
            && l.contains("object.kind=Subscription")
            && l.contains(&format!("object.name={s}"))),
        "the subscription's reconcile log lines carry its name:\n{text}"
    );
    assert!(from < end);
}
