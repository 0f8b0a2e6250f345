//! The operator binary SIGKILLed while it sends notifications, and restarted: nothing is lost,
//! a message whose delivery was recorded is never sent again, and the one message that was
//! accepted by the SMTP server but not yet recorded when the process died is sent again with
//! the same Message-ID (so mail systems can drop the copy).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::operator::*;
use common::sinks::{Sink, field};
use common::{cluster, free_port, unique_name};
use kube::api::{Api, PostParams};
use mailsec_operator::api::{NotificationState, Tenant, TenantPhase};
use mailsec_operator::fixtures::{self, ESG};
use serde_json::Value;

/// The operator with its notifier mailing through the SMTP server on `smtp_port`; a long SMTP
/// timeout, so that the held message keeps it waiting until it is killed.
fn start_operator(smtp_port: u16) -> OperatorProcess {
    let mut args = smtp_args(smtp_port);
    args.extend(["--smtp-timeout".to_string(), "120s".to_string()]);
    OperatorProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn rcpt(mail: &Value) -> String {
    mail["rcpt_tos"][0].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_sending_the_operator_sends_nothing_twice_except_the_unrecorded_message_with_its_message_id()
 {
    let client = cluster().client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // The SMTP server stores the first message it gets, then keeps the sender waiting for its
    // answer (60 s): the sender is killed meanwhile, having sent without knowing it.
    let sink = Sink::mail(
        port,
        dir.path(),
        &["--hold-first", "1", "--hold-secs", "60"],
    );

    let t = unique_name("notify-kill");
    let admins = ["first@hooli.example", "second@hooli.example"];
    let api: Api<Tenant> = Api::all(client.clone());
    let mut tn = fixtures::tenant(&t, &[ESG], 10);
    tn.metadata.generation = None;
    tn.spec.display_name = Some("Hooli".into());
    let tn = fixtures::with_admins(tn, &admins);
    api.create(&PostParams::default(), &tn)
        .await
        .expect("create tenant");
    let end = in_secs(6);
    create_subscription(&client, &format!("{t}-esg"), &t, ESG, end, 50).await;

    let operator = start_operator(port);
    // ExpiringSoon (due at E - 3 s) goes to both admins, at once. The server holds the answer
    // to the first message it gets; the second is accepted and recorded Delivered. Then the
    // operator is killed, while it is still waiting for the answer to the first.
    let first = loop {
        if let Some(m) = sink.received().first().cloned() {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let held_to = rcpt(&first);
    let held_id = field(&first, "message_id").to_string();
    wait_tenant(
        &client,
        &t,
        Duration::from_secs(20),
        "the other ExpiringSoon e-mail recorded as delivered",
        |tn| {
            tn.status.as_ref().is_some_and(|s| {
                s.notifications.iter().any(|e| {
                    e.milestone.starts_with("ExpiringSoon/")
                        && e.recipient != held_to
                        && e.state == NotificationState::Delivered
                })
            })
        },
    )
    .await;
    operator.kill();

    // What the outbox says now: the held message claimed (attempt 1 recorded before sending)
    // but its outcome not recorded.
    let status = tenant(&client, &t).await.status.unwrap_or_default();
    let held = status
        .notifications
        .iter()
        .find(|e| e.recipient == held_to && e.milestone.starts_with("ExpiringSoon/"))
        .unwrap_or_else(|| panic!("claimed before sending: {:#?}", status.notifications));
    assert_eq!(held.state, NotificationState::Pending, "{held:#?}");
    assert_eq!(held.attempts, 1, "{held:#?}");
    assert_eq!(held.last_error, None, "{held:#?}");
    assert_eq!(held.delivery_id.as_deref(), Some(held_id.as_str()));

    // Restart; then kill and restart a few more times across ReadOnly (E) and Suspended (E + 3 s).
    let mut operator = start_operator(port);
    let mut kills = 1;
    for pause_ms in [1500, 2200, 1300] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        operator.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        operator = start_operator(port);
    }
    wait_phase(&client, &t, TenantPhase::Suspended, Duration::from_secs(30)).await;
    // Everything delivered (3 milestones x 2 admins), then a quiet period: no late repeats.
    let delivered = |tn: &Tenant| {
        tn.status.as_ref().is_some_and(|s| {
            s.notifications.len() == 6
                && s.notifications
                    .iter()
                    .all(|e| e.state == NotificationState::Delivered)
        })
    };
    wait_tenant(
        &client,
        &t,
        Duration::from_secs(30),
        "6 delivered",
        delivered,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    operator.kill();

    let mails = sink.received();
    let status = tenant(&client, &t).await.status.unwrap_or_default();
    let mut copies: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for m in &mails {
        copies
            .entry((field(m, "milestone").to_string(), rcpt(m)))
            .or_default()
            .push(field(m, "message_id").to_string());
    }
    // None lost: every milestone reached every admin.
    assert_eq!(copies.len(), 6, "{copies:#?}");
    for ((milestone, to), ids) in &copies {
        let entry = status
            .notifications
            .iter()
            .find(|e| &e.milestone == milestone && &e.recipient == to)
            .unwrap_or_else(|| panic!("no entry for {milestone} to {to}"));
        // Every copy of a message carries the same, recorded Message-ID ...
        assert!(
            ids.iter()
                .all(|id| Some(id.as_str()) == entry.delivery_id.as_deref()),
            "{milestone} to {to}: {ids:?} vs {entry:#?}"
        );
        // ... and a message came twice only when an attempt was cut short by a kill.
        if ids.len() > 1 {
            assert!(entry.attempts as usize >= ids.len(), "{entry:#?}");
        }
    }
    // The held message: sent again after the restart, with the same Message-ID.
    let held_copies = &copies[&(held.milestone.clone(), held_to.clone())];
    assert_eq!(held_copies.len(), 2, "{copies:#?}");
    assert!(held_copies.iter().all(|id| *id == held_id));
    // The other ExpiringSoon message was delivered and recorded before the kill: not resent.
    let other = admins
        .iter()
        .find(|a| **a != held_to)
        .expect("the other admin");
    assert_eq!(
        copies[&(held.milestone.clone(), other.to_string())].len(),
        1
    );
    let repeats = mails.len() - copies.len();
    assert!(
        repeats <= kills,
        "{repeats} repeated messages for {kills} kills: {copies:#?}"
    );
    eprintln!(
        "{} messages for 6 notifications over {kills} kills; repeats: {repeats}",
        mails.len()
    );
}
