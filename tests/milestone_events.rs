//! Told once, never twice and never not at all (every milestone exactly once):
//! - a milestone recorded in status by a process that died before publishing its Event gets its
//!   Event from the next process, exactly once, under the name derived from the milestone; the
//!   milestones already due when the tenant was first seen, likewise, in their one shared Event;
//! - a Subscription status computed from a stale read can not record a transfer a second time
//!   (with a new time, which would be a second confirmation).

mod common;

use std::time::Duration;

use chrono::Utc;
use common::operator::*;
use common::{cluster, unique_name};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams};
use mailsec_operator::api::{Subscription, Tenant, TenantStatus};
use mailsec_operator::controller::subscription::write_status;
use mailsec_operator::effects::events::{already_due_id, milestone_event_name};
use mailsec_operator::effects::status::apply_if_changed;
use mailsec_operator::engine::subscription::evaluate_subscription;
use mailsec_operator::engine::{TenantInput, TenantUsers, evaluate_tenant};
use mailsec_operator::fixtures::ESG;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// The tests share one API server; the operators of the first must be gone before the second.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An operator in this process, like `start_in_process`, that [`Running::stop`] stops and waits
/// for.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    counters: std::sync::Arc<mailsec_operator::controller::api_counter::ApiCounters>,
}

impl Running {
    fn start() -> Self {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = rx.await;
        };
        let (thread, counters) = spawn_in_process(None, Default::default(), stopped);
        Running {
            stop,
            thread,
            counters,
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_milestone_event_lost_in_a_crash_is_published_by_the_next_process_once() {
    lost_events_are_published_once(Seen::Before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_of_milestones_already_due_lost_in_a_crash_is_published_once() {
    lost_events_are_published_once(Seen::First).await;
}

/// Whether an operator had written the tenant's status before its milestones were reached.
#[derive(Clone, Copy, PartialEq)]
enum Seen {
    /// Yes (it was down when they came due): one Event per milestone, marked late.
    Before,
    /// No (first sight): one `MilestonesAlreadyDue` Event for all of them.
    First,
}

async fn lost_events_are_published_once(seen: Seen) {
    let _turn = SERIAL.lock().await;
    let client = cluster().client().await;
    let t = unique_name("lost");
    let s = unique_name("lost-esg");
    // Ended two hours ago: ExpiringSoon, ReadOnly and Suspended are all reached, and late.
    let sub = create_subscription(&client, &s, &t, ESG, in_secs(-7_200), 50).await;
    let mut tenant = create_tenant(&client, &t, &[ESG], 10).await;
    if seen == Seen::Before {
        tenant.status = Some(TenantStatus {
            observed_generation: tenant.metadata.generation,
            ..Default::default()
        });
    }

    // What an operator killed right after its status write leaves: the milestones recorded in
    // status (written as the operator writes it), and no Event.
    let users: TenantUsers = [(t.clone(), 10)].into();
    let subs = [&sub];
    let eval = evaluate_tenant(
        &TenantInput::new(&tenant, &subs, &users),
        &policy(),
        Utc::now(),
    );
    let records = &eval.status.milestones;
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.already_due == (seen == Seen::First))
    );
    // (Event name, the id it is announced under, its reason.)
    let expected: Vec<(String, String, &str)> = match seen {
        Seen::Before => records
            .iter()
            .map(|r| {
                (
                    milestone_event_name(&t, &r.id),
                    r.id.clone(),
                    r.kind.as_ref(),
                )
            })
            .collect(),
        Seen::First => {
            let id = already_due_id(records[0].announced_at);
            vec![(milestone_event_name(&t, &id), id, "MilestonesAlreadyDue")]
        }
    };
    apply_if_changed::<Tenant, _>(&client, &t, None, &eval.status)
        .await
        .expect("write the status");
    for (_, _, reason) in &expected {
        assert_eq!(count_events(&client, "Tenant", &t, reason).await, 0);
    }

    // The next process publishes them, under their own names.
    let first = Running::start();
    for (_, _, reason) in &expected {
        expect_events(&client, "Tenant", &t, reason, 1).await;
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    for (name, id, _) in &expected {
        let e = events
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("the Event {name} of {id}: {e}"));
        assert_eq!(
            e.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("mailsec.io/milestone")),
            Some(id)
        );
        assert!(
            e.note.as_deref().is_some_and(|n| n.contains(&s)),
            "the note names the subscription: {:?}",
            e.note
        );
    }
    tokio::task::spawn_blocking(|| first.stop())
        .await
        .expect("stop");

    // And a process after that publishes nothing: it finds them (one list) and creates none.
    let second = Running::start();
    wait_tenant(&client, &t, WAIT, "reconciled", |tn| {
        tn.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == tn.metadata.generation)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (_, _, reason) in &expected {
        assert_eq!(
            count_events(&client, "Tenant", &t, reason).await,
            1,
            "{reason}"
        );
    }
    if seen == Seen::First {
        for reason in ["ExpiringSoon", "ReadOnly", "Suspended"] {
            assert_eq!(
                count_events(&client, "Tenant", &t, reason).await,
                0,
                "no Event of its own: {reason}"
            );
        }
    }
    let verbs = second.counters.by_verb();
    let creates = verbs
        .iter()
        .find(|(v, _)| *v == "create")
        .map_or(0, |(_, n)| *n);
    eprintln!("requests of the process after: {verbs:?}");
    assert_eq!(creates, 0, "the next process created something: {verbs:?}");
    tokio::task::spawn_blocking(|| second.stop())
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_is_not_recorded_again_from_a_stale_read() {
    let _turn = SERIAL.lock().await;
    let client = cluster().client().await;
    let (a, b) = (unique_name("stale-a"), unique_name("stale-b"));
    let s = unique_name("stale-esg");
    create_subscription(&client, &s, &a, ESG, in_secs(86_400), 50).await;
    let api: Api<Subscription> = Api::all(client.clone());
    let users: TenantUsers = [(a.clone(), 1), (b.clone(), 1)].into();
    let evaluate = |sub: &Subscription| evaluate_subscription(sub, &users, &policy(), Utc::now());

    // Seen on a.
    let read = api.get(&s).await.expect("read");
    assert!(
        write_status(&client, &read, &evaluate(&read), &Default::default())
            .await
            .expect("first status")
    );
    // Transferred to b; the controller records it.
    api.patch(
        &s,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tenantRef": b}})),
    )
    .await
    .expect("transfer");
    let read = api.get(&s).await.expect("read");
    let eval = evaluate(&read);
    assert_eq!(eval.changes.len(), 1, "{:?}", eval.changes);
    assert!(
        write_status(&client, &read, &eval, &Default::default())
            .await
            .expect("record the transfer"),
        "written"
    );
    let recorded = api.get(&s).await.expect("read").status.unwrap_or_default();
    assert_eq!(recorded.transfers.len(), 1, "{:?}", recorded.transfers);
    assert_eq!(recorded.tenant.as_deref(), Some(b.as_str()));

    // A second later, a reconcile on the same (now stale) read: it would record the transfer
    // again with a new time; the API server refuses the write.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = evaluate(&read);
    assert_ne!(
        again.status.transfers, recorded.transfers,
        "a second record"
    );
    let written = write_status(&client, &read, &again, &Default::default())
        .await
        .expect("status from a stale read");
    assert!(!written, "a status from a stale read is not written");
    let after = api.get(&s).await.expect("read").status.unwrap_or_default();
    assert_eq!(
        after.transfers, recorded.transfers,
        "the transfer was recorded again"
    );
}
