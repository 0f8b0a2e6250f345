//! Once converged, the operator costs the API server nothing: no writes while nothing changes.

mod common;

use std::time::Duration;

use common::operator::*;
use common::{cluster, unique_name};
use mailsec_operator::fixtures::{ESG, ETDR};

#[tokio::test(flavor = "multi_thread")]
async fn converged_operator_sends_no_writes() {
    let client = cluster().client().await;
    // A mix of phases that stay put for the length of the test: active, expiring within a day
    // (warning period 3 s, so active here), missing add-on (read-only for 3 s, then suspended),
    // and long expired (suspended).
    let mut names = Vec::new();
    for i in 0..12 {
        let t = unique_name(&format!("steady{i}"));
        let end = match i % 3 {
            0 => in_secs(86_400),
            1 => in_secs(3_600),
            _ => in_secs(-3_600),
        };
        create_subscription(&client, &unique_name("steady-esg"), &t, ESG, end, 50).await;
        let products: &[&str] = if i % 4 == 0 { &[ESG, ETDR] } else { &[ESG] };
        create_tenant(&client, &t, products, 10).await;
        names.push(t);
    }

    let (_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let counters = start_in_process(stop_rx);
    // Converged: every tenant has a status for its generation, and the missing add-ons have
    // passed their 3 s grace period.
    for t in &names {
        wait_tenant(&client, t, Duration::from_secs(30), "a status", |tn| {
            tn.status.as_ref().is_some_and(|s| {
                s.observed_generation == tn.metadata.generation && s.phase.is_some()
            })
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(PERIOD_SECS as u64 + 2)).await;

    let (writes, reads) = (counters.writes(), counters.reads());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (writes_after, reads_after) = (counters.writes(), counters.reads());
    assert_eq!(
        writes_after - writes,
        0,
        "the converged operator wrote {} times in 10 s",
        writes_after - writes
    );
    eprintln!(
        "steady state over 10 s: {} writes, {} reads (after {writes} writes and {reads} reads to converge)",
        writes_after - writes,
        reads_after - reads
    );
    assert!(
        counters.watches() >= 2,
        "the operator watches tenants and subscriptions"
    );
}
