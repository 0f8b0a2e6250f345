//! Which objects a controller is to look at, and when: a compact queue in front of
//! kube-runtime's scheduler.
//!
//! kube-runtime's scheduler keeps every request it holds as a whole reconcile request (an
//! `ObjectRef` with name, namespace, resourceVersion and uid, cloned) in a hash map and a delay
//! queue, and, once due while every reconcile slot is taken, in a hash set as well; none of them
//! ever shrinks. Fed directly, it held every object of a fleet at once: all of them when a list
//! completes, and every object's next wake (its next transition, or the hourly re-evaluation)
//! for good. At 12,000 objects that was a quarter of the operator's heap.
//!
//! Here each controller keeps one entry per object: its key (`namespace/name`) and the instant
//! it is due. Only due objects are handed to kube-runtime, and no more than [`IN_HAND`] at a
//! time that have not started yet; its scheduler still debounces them and holds one back while
//! a reconcile of the same object runs.
//!
//! The rules are kube-runtime's: an object is due at the earliest instant asked for it, and a
//! reconcile that starts covers whatever was asked before it (its result asks for the next one).

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Due objects handed to kube-runtime and not started yet, at most. Each waits out the
/// scheduler's debounce (150 ms) before it can start, so this caps a controller at about 6,800
/// reconciles a second (a warm restart runs about 3,000 a second at 30,000 objects; with 256 it
/// took 14.6 s instead of 4.2 s), and it is small beside a fleet.
pub const IN_HAND: usize = 1024;

/// How long a handed object that never starts (deleted before its turn: kube-runtime drops it)
/// counts against [`IN_HAND`].
const IN_HAND_AT_MOST: Duration = Duration::from_secs(30);

/// One controller's queue of objects to look at (cheap to clone: shared).
pub struct Wakeups<K> {
    shared: Arc<Shared>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Wakeups<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> Default for Wakeups<K> {
    fn default() -> Self {
        Self {
            shared: Arc::default(),
            _kind: PhantomData,
        }
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// An earlier wake, or room in hand: the pump looks again.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// When each object is due (one entry per object, its key shared with `by_time`).
    due: HashMap<Arc<str>, Instant>,
    /// The same entries, in the order they fall due.
    by_time: BTreeSet<(Instant, Arc<str>)>,
    /// Handed to kube-runtime and not started yet, with when.
    in_hand: HashMap<Arc<str>, Instant>,
    /// When the oldest of `in_hand` expires, as last looked up (it may have started since).
    expiry: Option<Instant>,
}

/// What the pump is to do next.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    Hand(Arc<str>),
    /// Nothing to hand before this instant (None: until something changes).
    Wait(Option<Instant>),
}

impl State {
    /// Due at `at`, unless already due earlier. Whether it is now the first to fall due.
    fn wake(&mut self, key: &str, at: Instant) -> bool {
        let key = match self.due.get_key_value(key) {
            Some((_, earlier)) if *earlier <= at => return false,
            Some((key, earlier)) => {
                let key = key.clone();
                self.by_time.remove(&(*earlier, key.clone()));
                key
            }
            None => Arc::from(key),
        };
        self.due.insert(key.clone(), at);
        self.by_time.insert((at, key.clone()));
        self.by_time.first().is_some_and(|(_, first)| *first == key)
    }

    /// A reconcile of `key` starts: it covers what was due, and frees its place in hand.
    /// Whether a place in hand was freed.
    fn started(&mut self, key: &str) -> bool {
        if let Some((key, at)) = self.due.remove_entry(key) {
            self.by_time.remove(&(at, key));
        }
        self.in_hand.remove(key).is_some()
    }

    /// The next object to hand over at `now`, or how long to wait.
    fn turn(&mut self, now: Instant) -> Turn {
        let Some((at, key)) = self.by_time.first() else {
            return Turn::Wait(None);
        };
        if *at > now {
            return Turn::Wait(Some(*at));
        }
        if self.in_hand.len() >= IN_HAND && !self.in_hand.contains_key(key) {
            // Full. Looked through only when its oldest may have expired, not on every turn.
            if self.expiry.is_none_or(|t| t <= now) {
                self.in_hand
                    .retain(|_, handed| now.duration_since(*handed) < IN_HAND_AT_MOST);
                self.expiry = self.in_hand.values().min().map(|t| *t + IN_HAND_AT_MOST);
            }
            if self.in_hand.len() >= IN_HAND {
                return Turn::Wait(self.expiry);
            }
        }
        let Some((_, key)) = self.by_time.pop_first() else {
            return Turn::Wait(None);
        };
        self.due.remove(&key);
        self.in_hand.insert(key.clone(), now);
        Turn::Hand(key)
    }
}

/// The queue's key of an object: its cache key ([`super::lenient::key`]).
fn key_of<K: Resource>(reference: &ObjectRef<K>) -> String {
    super::lenient::key(reference.namespace.as_deref(), &reference.name)
}

/// The reference kube-runtime is handed for `key`: name and namespace only.
fn reference_of<K: Resource<DynamicType = ()>>(key: &str) -> ObjectRef<K> {
    match key.split_once('/') {
        Some((ns, name)) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(key),
    }
}

impl<K: Resource<DynamicType = ()>> Wakeups<K> {
    /// Look at `object` at `at`, or earlier if asked.
    pub fn wake_at(&self, object: &ObjectRef<K>, at: Instant) {
        let first = self.lock().wake(&key_of(object), at);
        if first {
            self.shared.changed.notify_one();
        }
    }

    /// A reconcile of `object` starts (see [`State::started`]).
    pub fn started(&self, object: &ObjectRef<K>) {
        if self.lock().started(&key_of(object)) {
            self.shared.changed.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The objects to reconcile, as they fall due and as kube-runtime takes them; every object
    /// `triggers` names is due at once. Runs as long as it is polled.
    pub fn due(
        self,
        triggers: BoxStream<'static, ObjectRef<K>>,
    ) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K: 'static,
    {
        futures::stream::unfold(
            (self, triggers.fuse()),
            |(queue, mut triggers)| async move {
                loop {
                    let turn = queue.lock().turn(Instant::now());
                    let until = match turn {
                        Turn::Hand(key) => return Some((reference_of(&key), (queue, triggers))),
                        Turn::Wait(until) => until,
                    };
                    let sleep = async {
                        match until {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        Some(object) = triggers.next() => queue.wake_at(&object, Instant::now()),
                        () = sleep => {}
                        () = queue.shared.changed.notified() => {}
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Subscription, Tenant};

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn keys_name_the_object_and_nothing_else() {
        let plain = ObjectRef::<Tenant>::new("acme");
        assert_eq!(key_of(&plain), "acme");
        assert_eq!(reference_of::<Tenant>("acme"), plain);
        let namespaced = ObjectRef::<Subscription>::new("esg").within("team-a");
        assert_eq!(key_of(&namespaced), "team-a/esg");
        let back = reference_of::<Subscription>("team-a/esg");
        assert_eq!(back, namespaced);
        assert_eq!(back.extra.resource_version, None);
        assert_eq!(back.extra.uid, None);
    }

    #[test]
    fn an_object_is_due_at_the_earliest_instant_asked() {
        let base = Instant::now();
        let mut s = State::default();
        assert!(s.wake("a", at(base, 10)), "the only entry falls due first");
        assert!(!s.wake("a", at(base, 20)), "a later wake changes nothing");
        assert!(s.wake("b", at(base, 5)));
        assert!(s.wake("a", at(base, 1)), "an earlier wake moves it forward");
        assert_eq!(s.due.len(), 2, "one entry per object");
        assert_eq!(s.by_time.len(), 2);
        assert_eq!(s.turn(base), Turn::Wait(Some(at(base, 1))));
        assert_eq!(s.turn(at(base, 5)), Turn::Hand("a".into()));
        assert_eq!(s.turn(at(base, 5)), Turn::Hand("b".into()));
        assert_eq!(s.turn(at(base, 5)), Turn::Wait(None));
        assert!(s.due.is_empty());
    }

    #[test]
    fn a_reconcile_that_starts_covers_what_was_due() {
        let base = Instant::now();
        let mut s = State::default();
        s.wake("a", at(base, 60));
        s.wake("b", base);
        assert_eq!(s.turn(base), Turn::Hand("b".into()));
        assert!(s.started("b"), "its place in hand is freed");
        assert!(!s.started("a"), "a was not in hand");
        assert_eq!(
            s.turn(at(base, 120)),
            Turn::Wait(None),
            "a's wake was covered"
        );
        // Asked again while it runs: handed again (kube-runtime holds it until the run ends).
        s.wake("b", at(base, 1));
        assert_eq!(s.turn(at(base, 1)), Turn::Hand("b".into()));
    }

    #[test]
    fn no_more_than_in_hand_objects_wait_in_kube_runtime() {
        let base = Instant::now();
        let mut s = State::default();
        let keys: Vec<String> = (0..IN_HAND + 10).map(|i| format!("t{i:05}")).collect();
        for k in &keys {
            s.wake(k, base);
        }
        for k in &keys[..IN_HAND] {
            assert_eq!(s.turn(base), Turn::Hand(k.as_str().into()));
        }
        assert_eq!(
            s.turn(base),
            Turn::Wait(Some(base + IN_HAND_AT_MOST)),
            "full: nothing more until a reconcile starts"
        );
        // An object already in hand may be handed again: it takes no new place.
        s.wake(&keys[0], base);
        assert_eq!(s.turn(base), Turn::Hand(keys[0].as_str().into()));
        assert!(s.started(&keys[1]));
        assert_eq!(s.turn(base), Turn::Hand(keys[IN_HAND].as_str().into()));
        // Handed objects that never start (deleted in the meantime) free their place in time.
        let later = base + IN_HAND_AT_MOST;
        for k in &keys[IN_HAND + 1..] {
            assert_eq!(s.turn(later), Turn::Hand(k.as_str().into()));
        }
        assert_eq!(s.turn(later), Turn::Wait(None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_hands_over_triggers_at_once_and_wakes_at_their_instant() {
        let queue = Wakeups::<Tenant>::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut due = Box::pin(queue.clone().due(rx.boxed()));
        let start = Instant::now();
        queue.wake_at(&ObjectRef::new("later"), start + Duration::from_secs(3600));
        queue.wake_at(&ObjectRef::new("soon"), start + Duration::from_secs(5));
        tx.unbounded_send(ObjectRef::new("changed")).expect("open");
        assert_eq!(due.next().await, Some(ObjectRef::new("changed")));
        assert_eq!(Instant::now(), start, "a trigger is handed at once");
        assert_eq!(due.next().await, Some(ObjectRef::new("soon")));
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
        // An earlier wake asked while the stream waits is handed at its instant.
        let waiting = tokio::spawn(async move {
            let next = due.next().await;
            (next, Instant::now())
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        queue.wake_at(&ObjectRef::new("later"), start + Duration::from_secs(60));
        let (next, when) = waiting.await.expect("no panic");
        assert_eq!(next, Some(ObjectRef::new("later")));
        assert_eq!(when, start + Duration::from_secs(60));
    }
}
