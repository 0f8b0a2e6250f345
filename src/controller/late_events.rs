//! Milestone Events that are late news: the one `MilestonesAlreadyDue` Event of the milestones
//! already due when a tenant was first seen. They tell of the past, and nothing waits on them
//! (the status already records the milestones, the notifier mails them), so they are published
//! with capacity no reconcile is asking for: on a cold start, after the statuses.
//!
//! Measured on a cold start of 30,000 objects: the same writes with these Events among the
//! status writes took 1.16–1.33 × the statuses alone, and with the Events after them, 1.09–1.10 ×
//! (`docs/design/performance.md`). An Event that waits longer than [`PATIENCE`] takes its turn in
//! the reconciles' line, so under a load that never ends it is late, never lost.
//!
//! A process that stops with Events still queued leaves them to the next one: their milestones
//! are recorded in the tenants' statuses, and the next process publishes what it does not find
//! (within the republish window).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::runtime::Budget;
use crate::effects::events::REPUBLISH_WINDOW;

/// How long a late Event waits for spare capacity before it queues with the reconciles.
pub const PATIENCE: Duration = Duration::from_secs(300);
/// How often the queue looks for spare capacity while Events wait.
const POLL: Duration = Duration::from_millis(50);
/// How soon an Event the API server refused or did not answer is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How soon an Event whose milestones the cache does not hold yet is tried again.
const SOON: Duration = Duration::from_millis(200);

/// What became of one publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The Event exists (published now, or found).
    Published,
    /// The tenant's cached status does not record these milestones yet (the watch has not
    /// brought the write that recorded them): tried again in a moment.
    NotYet,
    /// Nothing to announce any more (the tenant is gone, or no longer records them).
    Moot,
}

/// One Event to publish: the `MilestonesAlreadyDue` Event of the milestones `tenant` recorded
/// as already due at `announced_at`. Only the key is queued; what the Event says is read from
/// the cached tenant when it is published (a note of up to 1 KiB per tenant, queued for a fleet,
/// took 4–5 MiB more at the peak of a cold start).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LateEvent {
    pub tenant: String,
    pub announced_at: DateTime<Utc>,
}

/// An Event in the queue: when it was queued (its patience, how long it is retried).
struct Queued {
    event: LateEvent,
    since: Instant,
}

#[derive(Default)]
struct Queue {
    /// In the order queued.
    fresh: VecDeque<Queued>,
    /// Ones to try again, each with when (in that order).
    retries: VecDeque<(Instant, Queued)>,
    /// The Events queued or being published.
    keys: HashSet<LateEvent>,
}

impl Queue {
    /// How long the next Event ready to go has waited.
    fn ready(&self, now: Instant) -> Option<Duration> {
        let retry = self
            .retries
            .front()
            .filter(|(at, _)| *at <= now)
            .map(|(_, q)| q);
        retry
            .or(self.fresh.front())
            .map(|q| now.saturating_duration_since(q.since))
    }

    fn pop_ready(&mut self, now: Instant) -> Option<Queued> {
        if self.retries.front().is_some_and(|(at, _)| *at <= now) {
            return self.retries.pop_front().map(|(_, q)| q);
        }
        self.fresh.pop_front()
    }
}

/// The queue of late Events, filled by the tenant controller, emptied by [`LateEvents::publish`].
#[derive(Default)]
pub struct LateEvents {
    queue: Mutex<Queue>,
    queued: tokio::sync::Notify,
}

/// How a publication got its turn.
enum Turn {
    /// A permit nobody was waiting for.
    Spare(OwnedSemaphorePermit),
    /// In line with the reconciles (its patience ran out).
    InLine(Budget),
}

impl LateEvents {
    /// Queues `event`, unless it is queued or being published already.
    pub fn defer(&self, event: LateEvent) {
        let mut queue = self.lock();
        if queue.keys.insert(event.clone()) {
            queue.fresh.push_back(Queued {
                event,
                since: Instant::now(),
            });
            drop(queue);
            self.queued.notify_one();
        }
    }

    /// The Events queued or being published.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publishes the queued Events with `publish`, each with a permit of `budget` that no
    /// reconcile waits for (or in line, after [`PATIENCE`]), until `stop` turns true. One that
    /// fails is tried again every [`RETRY`] while its milestones are within the republish window.
    /// `pending` is told how many are queued or in flight after each change.
    pub async fn publish<P, Fut>(
        &self,
        budget: &Budget,
        publish: P,
        mut stop: tokio::sync::watch::Receiver<bool>,
        pending: impl Fn(usize),
    ) where
        P: Fn(LateEvent) -> Fut,
        Fut: Future<Output = Result<Outcome, kube::Error>>,
    {
        let mut in_flight = FuturesUnordered::new();
        // At most one Event waits in the reconciles' line at a time.
        let mut in_line = false;
        loop {
            let now = Instant::now();
            loop {
                let Some(waited) = self.lock().ready(now) else {
                    break;
                };
                let turn = match budget.spare() {
                    Some(permit) => Turn::Spare(permit),
                    None if waited >= PATIENCE && !in_line => {
                        in_line = true;
                        Turn::InLine(budget.clone())
                    }
                    None => break,
                };
                let Some(queued) = self.lock().pop_ready(now) else {
                    break;
                };
                let event = queued.event.clone();
                let sent = publish(event);
                in_flight.push(async move {
                    let (_permit, was_in_line) = match turn {
                        Turn::Spare(permit) => (Some(permit), false),
                        Turn::InLine(budget) => (budget.in_line().await, true),
                    };
                    let result = sent.await;
                    (queued, result, was_in_line)
                });
            }
            let waiting = {
                let queue = self.lock();
                pending(queue.keys.len());
                !queue.fresh.is_empty() || !queue.retries.is_empty()
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                Some((queued, result, was_in_line)) = in_flight.next(), if !in_flight.is_empty() => {
                    in_line &= !was_in_line;
                    self.done(queued, result);
                }
                _ = self.queued.notified() => {}
                _ = tokio::time::sleep(POLL), if waiting => {}
            }
        }
        let left = self.len();
        if left > 0 {
            tracing::info!(
                events = left,
                "stopping with late milestone Events unpublished; the next leader publishes them"
            );
        }
    }

    /// What follows a publication: forgotten when published (or moot), else tried again, but
    /// given up once its milestones are out of the republish window (a later process would not
    /// publish it either).
    fn done(&self, queued: Queued, result: Result<Outcome, kube::Error>) {
        let mut queue = self.lock();
        let delay = match &result {
            Ok(Outcome::Published | Outcome::Moot) => {
                queue.keys.remove(&queued.event);
                return;
            }
            Ok(Outcome::NotYet) => SOON,
            Err(_) => RETRY,
        };
        let window = REPUBLISH_WINDOW.to_std().unwrap_or(Duration::ZERO);
        let event = &queued.event;
        if queued.since.elapsed() >= window {
            tracing::error!(tenant = %event.tenant, at = %event.announced_at, result = ?result, "could not publish the late milestone Event within the republish window; given up");
            queue.keys.remove(&queued.event);
            return;
        }
        if let Err(err) = &result {
            tracing::warn!(tenant = %event.tenant, at = %event.announced_at, error = %err, retry_in = ?RETRY, "could not publish the late milestone Event; retried");
        }
        // Behind the ones due sooner: the retries stay in the order they are due.
        let at = Instant::now() + delay;
        let i = queue.retries.partition_point(|(due, _)| *due <= at);
        queue.retries.insert(i, (at, queued));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn event(n: usize) -> LateEvent {
        LateEvent {
            tenant: format!("t{n}"),
            announced_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// Runs the queue until `done` says so, publishing into `published` (failing the first
    /// `failures` publications).
    async fn run_until(
        late: Arc<LateEvents>,
        budget: Budget,
        failures: usize,
        published: Arc<Mutex<Vec<String>>>,
        done: impl Future<Output = ()>,
    ) {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let publish = |e: LateEvent| {
            let published = published.clone();
            let tries = tries.clone();
            async move {
                if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < failures {
                    return Err(kube::Error::LinesCodecMaxLineLengthExceeded);
                }
                published.lock().expect("lock").push(e.tenant);
                Ok(Outcome::Published)
            }
        };
        let queue = late.clone();
        let run = async move { queue.publish(&budget, publish, stop, |_| {}).await };
        tokio::join!(run, async {
            done.await;
            let _ = stop_tx.send(true);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn late_events_wait_for_capacity_no_reconcile_asks_for() {
        let late = Arc::new(LateEvents::default());
        let budget = Budget::new(1, 2);
        let published = Arc::new(Mutex::new(Vec::new()));
        // Both permits held by reconciles for ten seconds.
        let held = (budget.spare(), budget.spare());
        assert!(held.0.is_some() && held.1.is_some());
        for n in 0..3 {
            late.defer(event(n));
        }
        late.defer(event(0));
        assert_eq!(late.len(), 3, "queued once each");
        let seen = published.clone();
        let watcher = late.clone();
        run_until(late.clone(), budget, 0, published.clone(), async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(seen.lock().expect("lock").is_empty(), "nothing while busy");
            drop(held);
            while !watcher.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        assert_eq!(
            *published.lock().expect("lock"),
            ["t0", "t1", "t2"],
            "in the order queued, once each"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_that_waited_out_its_patience_queues_with_the_reconciles() {
        let late = Arc::new(LateEvents::default());
        let budget = Budget::new(1, 1);
        let published = Arc::new(Mutex::new(Vec::new()));
        let held = budget.spare();
        late.defer(event(0));
        late.defer(event(1));
        let seen = published.clone();
        let watcher = late.clone();
        run_until(late.clone(), budget, 0, published.clone(), async move {
            tokio::time::sleep(PATIENCE + Duration::from_secs(1)).await;
            assert!(
                seen.lock().expect("lock").is_empty(),
                "in line, behind the holder"
            );
            drop(held);
            while !watcher.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        assert_eq!(published.lock().expect("lock").len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_the_cache_does_not_hold_yet_is_tried_again_soon_and_a_moot_one_dropped() {
        let late = Arc::new(LateEvents::default());
        let budget = Budget::new(1, 4);
        late.defer(event(0));
        late.defer(event(1));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let tries: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let seen = tries.clone();
        let publish = |e: LateEvent| {
            let tries = tries.clone();
            async move {
                let mut tries = tries.lock().expect("lock");
                let first = !tries.iter().any(|(t, _)| *t == e.tenant);
                tries.push((e.tenant.clone(), Instant::now()));
                Ok(match (e.tenant.as_str(), first) {
                    ("t0", true) => Outcome::NotYet,
                    ("t0", false) => Outcome::Published,
                    _ => Outcome::Moot,
                })
            }
        };
        let queue = late.clone();
        let started = Instant::now();
        tokio::join!(queue.publish(&budget, publish, stop, |_| {}), async {
            while !late.is_empty() {
                tokio::time::sleep(POLL).await;
            }
            let _ = stop_tx.send(true);
        });
        let tries = seen.lock().expect("lock");
        let t0: Vec<Duration> = tries
            .iter()
            .filter(|(t, _)| t == "t0")
            .map(|(_, at)| *at - started)
            .collect();
        assert_eq!(t0.len(), 2, "{tries:?}");
        assert!(t0[1] >= SOON && t0[1] < RETRY, "{t0:?}");
        assert_eq!(tries.iter().filter(|(t, _)| t == "t1").count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_publication_is_tried_again() {
        let late = Arc::new(LateEvents::default());
        let budget = Budget::new(1, 4);
        let published = Arc::new(Mutex::new(Vec::new()));
        late.defer(event(0));
        let watcher = late.clone();
        run_until(late.clone(), budget, 2, published.clone(), async move {
            while !watcher.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        assert_eq!(*published.lock().expect("lock"), ["t0"]);
    }
}
