//! `/metrics` exposes the expiry timestamps of the example subscriptions (computed from the
//! cache at scrape time), tenants by phase (in total and per tenant), reconciles, status writes,
//! API requests, the build and the process; `/healthz` and `/readyz` answer. The operator binary runs against the real API server with `examples/`
//! applied.

mod common;

use std::time::Duration;

use common::operator::OperatorProcess;
use common::probe::{http_get, sample};
use common::{cluster, describe, free_port, kubectl, repo_dir};
use mailsec_operator::engine::Policy;
use mailsec_operator::engine::subscription::Timeline;
use mailsec_operator::manifests::read_paths;

#[test]
fn metrics_expose_the_expiry_of_every_example_subscription() {
    if cluster().is_external() {
        eprintln!("skipped on an external cluster: it applies examples/ with their fixed names");
        return;
    }
    let examples = repo_dir().join("examples");
    let out = kubectl(&[
        "apply",
        "--server-side",
        "-f",
        examples.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));

    let port = free_port();
    let _operator = OperatorProcess::spawn_instance("metrics-test", port, &[]);
    let ready = common::eventually(Duration::from_secs(30), || {
        (http_get(port, "/readyz")?.0 == 200).then_some(())
    });
    assert!(ready.is_some(), "/readyz: {:?}", http_get(port, "/readyz"));
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/nope").map(|r| r.0), Some(404));

    // Every example subscription, with its effective end and grace end as the engine computes
    // them (the operator runs with 3 s periods: grace end = effective end + 3 s).
    let manifests = read_paths(&[examples]).expect("examples");
    let policy = Policy {
        warning_period: chrono::TimeDelta::seconds(3),
        grace_period: chrono::TimeDelta::seconds(3),
        ..Policy::default()
    };
    let expected: Vec<(String, i64, i64)> = manifests
        .world
        .subscriptions
        .iter()
        .map(|s| {
            let t = Timeline::of(s, &policy).expect("timeline");
            let labels = format!(
                "{{subscription=\"{}\",tenant=\"{}\",product=\"{}\",plan=\"{:?}\"}}",
                s.metadata.name.as_deref().unwrap_or_default(),
                s.spec.tenant_ref,
                s.spec.product,
                s.spec.plan
            );
            (
                labels,
                t.effective_end_at.timestamp(),
                t.grace_ends_at.timestamp(),
            )
        })
        .collect();
    assert!(expected.len() >= 10, "{expected:?}");
    let tenants = manifests.world.tenants.len() as f64;

    let scrape = common::eventually(Duration::from_secs(30), || {
        let (status, body) = http_get(port, "/metrics")?;
        assert_eq!(status, 200);
        let reconciled = ["Active", "Warning", "ReadOnly", "Suspended"]
            .iter()
            .filter_map(|p| sample(&body, &format!("mailsec_tenants{{phase=\"{p}\"}}")))
            .sum::<f64>();
        (reconciled == tenants).then_some(body)
    })
    .expect("every example tenant has a phase");

    for (labels, end, grace) in &expected {
        assert_eq!(
            sample(
                &scrape,
                &format!("mailsec_subscription_expiration_timestamp_seconds{labels}")
            ),
            Some(*end as f64),
            "{labels}\n{scrape}"
        );
        assert_eq!(
            sample(
                &scrape,
                &format!("mailsec_subscription_grace_expiration_timestamp_seconds{labels}")
            ),
            Some(*grace as f64),
            "{labels}"
        );
    }
    // Two by hand: endDate 2026-12-31 ends at 2027-01-01T00:00:00Z; the extension of cyberdyne
    // (until 2027-01-31) ends at 2027-02-01T00:00:00Z.
    assert_eq!(
        sample(
            &scrape,
            "mailsec_subscription_expiration_timestamp_seconds{subscription=\"globex-esg-2026\",tenant=\"globex\",product=\"email-safeguard\",plan=\"Paid\"}"
        ),
        Some(1_798_761_600.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "mailsec_subscription_expiration_timestamp_seconds{subscription=\"cyberdyne-esg-2026\",tenant=\"cyberdyne\",product=\"email-safeguard\",plan=\"Paid\"}"
        ),
        Some(1_801_440_000.0)
    );
    assert_eq!(sample(&scrape, "mailsec_leader"), Some(1.0));
    assert_eq!(
        sample(&scrape, "mailsec_clock_speed"),
        Some(1.0),
        "real time unless --time-lapse-from"
    );
    assert!(
        sample(
            &scrape,
            "mailsec_reconcile_total{controller=\"subscription\",result=\"success\"}"
        )
        .is_some_and(|n| n >= expected.len() as f64),
        "{scrape}"
    );
    assert!(
        sample(&scrape, "mailsec_api_requests_total{verb=\"watch\"}").is_some_and(|n| n >= 2.0)
    );
    assert!(
        sample(&scrape, "mailsec_late_milestone_events").is_some(),
        "the late Events' queue is exposed: {scrape}"
    );
    assert!(scrape.contains("# TYPE mailsec_reconcile_duration_seconds histogram"));
    // One phase series per tenant and phase, 1 for the tenant's phase.
    for t in &manifests.world.tenants {
        let name = t.metadata.name.as_deref().unwrap_or_default();
        let ones: f64 = ["Active", "Warning", "ReadOnly", "Suspended", "Unknown"]
            .iter()
            .map(|p| {
                sample(
                    &scrape,
                    &format!("mailsec_tenant_phase{{tenant=\"{name}\",phase=\"{p}\"}}"),
                )
                .unwrap_or_else(|| panic!("mailsec_tenant_phase of {name} {p}:\n{scrape}"))
            })
            .sum();
        assert_eq!(ones, 1.0, "{name}");
    }
    assert!(
        sample(
            &scrape,
            "mailsec_status_writes_total{kind=\"Subscription\",result=\"success\"}"
        )
        .is_some_and(|n| n >= expected.len() as f64),
        "{scrape}"
    );
    assert!(
        sample(
            &scrape,
            "mailsec_status_writes_total{kind=\"Tenant\",result=\"error\"}"
        )
        .is_some(),
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            &format!(
                "mailsec_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            sample(&scrape, name).is_some_and(|v| v > 0.0),
            "{name}:\n{scrape}"
        );
    }
    eprintln!(
        "scrape: {} bytes, {} subscription series",
        scrape.len(),
        scrape
            .lines()
            .filter(|l| l.starts_with("mailsec_subscription_"))
            .count()
    );
}
