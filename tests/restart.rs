//! The operator killed (SIGKILL) and restarted in the middle of the lifecycle: the same final
//! state, every deadline recomputed from spec and status, and no milestone Event twice.

mod common;

use std::time::Duration;

use common::operator::*;
use common::{cluster, unique_name};
use mailsec_operator::api::TenantPhase;

const ESG: &str = "email-safeguard";

#[tokio::test(flavor = "multi_thread")]
async fn killed_and_restarted_operator_reaches_the_same_state_without_repeating_events() {
    let client = cluster().client().await;
    // Four tenants whose subscriptions end at staggered instants, so kills land between,
    // before and after their milestones.
    let mut tenants = Vec::new();
    for (i, end_in) in [3, 5, 7, 9].into_iter().enumerate() {
        let t = unique_name(&format!("restart{i}"));
        create_subscription(
            &client,
            &unique_name("restart-esg"),
            &t,
            ESG,
            in_secs(end_in),
            50,
        )
        .await;
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
            tenant_condition(&tn, "Suspended"),
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
            .map(|s| s.milestones.iter().map(|m| m.kind.clone()).collect())
            .unwrap_or_default();
        assert_eq!(
            recorded,
            ["ExpiringSoon", "ReadOnly", "Suspended"],
            "{t}: every milestone recorded once, in order"
        );
    }
}
