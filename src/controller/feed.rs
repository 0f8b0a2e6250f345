//! One watch per kind, one cache per kind, fanned out to every controller that reacts to it.
//!
//! The cache is updated before any controller hears of a change, so a reconcile triggered by an
//! object always reads a cache that already holds that object (two independent watches of the
//! same kind could disagree for a moment, and a reconcile would then act on stale data).

use std::fmt::Debug;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::lenient::{Lenient, Report, key_of};
use crate::api::CacheForm;

/// Buffered changes per consumer before the watch waits for it.
const BUFFER: usize = 1024;

/// Whether a feed's cache holds a full list yet; any number of tasks may wait on it.
///
/// Why not `Store::wait_until_ready`: it polls one shared oneshot receiver, which keeps only the
/// waker of the *last* task that polled it. With several reconciles waiting at once (a cold start
/// where one cache fills long after another: 16 tenant reconciles waiting for 20,000
/// subscriptions), all but one were never woken, and the tenant controller stalled for good.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// A gate and the sender that opens it (`send_replace(true)`).
    pub fn pair() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// True once the first full list is in the cache (it stays true through re-lists).
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until [`Synced::is_synced`]; also returns if the feed has stopped (shutdown).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|synced| *synced).await;
    }
}

/// Several feeds' [`Synced`] together: synced when every one is.
#[derive(Clone, Debug, Default)]
pub struct AllSynced(Vec<Synced>);

impl AllSynced {
    pub fn new(feeds: impl IntoIterator<Item = Synced>) -> Self {
        Self(feeds.into_iter().collect())
    }

    pub fn is_synced(&self) -> bool {
        self.0.iter().all(Synced::is_synced)
    }

    pub async fn wait(&self) {
        for feed in &self.0 {
            feed.wait().await;
        }
    }
}

impl crate::metrics::CachesSynced for AllSynced {
    fn is_synced(&self) -> bool {
        AllSynced::is_synced(self)
    }
}

/// One consumer's stream of changed objects, shared (`Arc`) so that buffered changes cost one
/// copy.
pub type Outlet<K> = mpsc::Receiver<Arc<K>>;

/// A shared watch: its cache, the streams its consumers asked for (`O`, see [`Opener`]), and
/// the future that drives the watch (spawn it).
pub struct Feed<K: Resource + 'static, O>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    pub store: Store<K>,
    pub outlets: O,
    /// Set once the cache holds the first full list.
    pub synced: Synced,
    /// Objects that could not be decoded, and those that decode again (see [`super::lenient`]).
    pub reports: mpsc::UnboundedReceiver<Report>,
    pub driver: futures::future::BoxFuture<'static, ()>,
}

/// Whether a change matters to a consumer, from the cached version before it (`None`: an
/// object new to the cache) and the new version.
pub type Relevance<K> = Box<dyn Fn(Option<&K>, &K) -> bool + Send + Sync>;

/// One consumer's stream, and what it wants to hear of (`None`: every change).
type Consumer<K> = (mpsc::Sender<Arc<K>>, Option<Relevance<K>>);

/// Opens the streams of a feed for its consumers, which name them in a struct of their own:
/// a consumer without its stream does not compile.
pub struct Opener<K> {
    changes: Vec<Consumer<K>>,
    departures: Vec<mpsc::Sender<K>>,
}

impl<K> Opener<K> {
    /// Every change, for one consumer.
    pub fn outlet(&mut self) -> Outlet<K> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.changes.push((tx, None));
        rx
    }

    /// The changes `relevant` says matter, for one consumer (the objects of a list, and
    /// deletions, always do). See [`super::relevance`].
    pub fn outlet_when(
        &mut self,
        relevant: impl Fn(Option<&K>, &K) -> bool + Send + Sync + 'static,
    ) -> Outlet<K> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.changes.push((tx, Some(Box::new(relevant))));
        rx
    }

    /// The objects that leave the watch (deleted, or no longer matching its label selector).
    pub fn departures(&mut self) -> mpsc::Receiver<K> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.departures.push(tx);
        rx
    }
}

/// Watches every object of kind `K` (list + watch with backoff on errors) into one cache and
/// the streams `open` opens.
pub fn feed<K, O>(
    client: Client,
    config: watcher::Config,
    open: impl FnOnce(&mut Opener<K>) -> O,
) -> Feed<K, O>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K: CacheForm,
{
    feed_indexed(client, config, open, |_: &watcher::Event<K>| {})
}

/// [`feed`], calling `index` with every watch event once the cache holds it and before any
/// consumer hears of it, so that an index maintained there is never behind the cache for a
/// reconcile the event triggers.
///
/// `metadata.managedFields` is not even decoded ([`Lenient::decode`]), the last-applied
/// annotation is dropped before objects enter the cache (see [`slim`]), and condition messages
/// are replaced by their digest ([`CacheForm`]).
///
/// Objects are decoded one by one ([`Lenient`]): one that can not be decoded is kept out of the
/// cache (or, if the cache holds an earlier version that could be read, that version stays, also
/// across re-lists, so the operator keeps acting on it) and sent to [`Feed::reports`]; every
/// other object is cached and announced as usual.
pub fn feed_indexed<K, O>(
    client: Client,
    config: watcher::Config,
    open: impl FnOnce(&mut Opener<K>) -> O,
    mut index: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Feed<K, O>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K: CacheForm,
{
    let (store, writer) = reflector::store();
    let mut opener = Opener {
        changes: Vec::new(),
        departures: Vec::new(),
    };
    let outlets = open(&mut opener);
    let Opener {
        changes: mut senders,
        departures: mut departed_tx,
    } = opener;
    let (synced_tx, synced) = Synced::pair();
    let (reports_tx, reports) = mpsc::unbounded();
    let kind = K::kind(&()).to_string();
    let cache = store.clone();
    let api: Api<Lenient<K>> = Api::all(client);
    let mut sorter = Sorter {
        cache: store.clone(),
        reports: reports_tx,
        bad: Default::default(),
        listed: Default::default(),
    };
    // The cached version an update replaces, kept aside for the consumers' relevance checks
    // just before the cache takes the update (one event at a time: the stream is pulled by
    // the loop below, which takes it out again).
    let replaced: Arc<std::sync::Mutex<Option<Arc<K>>>> = Default::default();
    let keep_replaced = {
        let (cache, replaced) = (store.clone(), replaced.clone());
        move |event: Result<watcher::Event<K>, watcher::Error>| {
            if let Ok(watcher::Event::Apply(obj)) = &event {
                *replaced.lock().unwrap_or_else(|p| p.into_inner()) =
                    cache.get(&ObjectRef::from_obj(obj));
            }
            event
        }
    };
    let driver = async move {
        let events = reflector::reflector(
            writer,
            watcher(api, config)
                .default_backoff()
                .filter_map(move |event| std::future::ready(sorter.sort(event)))
                .modify(|obj: &mut K| {
                    slim(obj.meta_mut());
                    obj.to_cache_form();
                })
                .map(keep_replaced),
        );
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            if let Ok(event) = &event {
                index(event);
            }
            let (obj, departed) = match event {
                Ok(watcher::Event::Apply(obj)) => (obj, false),
                Ok(watcher::Event::Delete(obj)) => (obj, true),
                // The objects of a (re-)list enter the cache together, when the list is
                // complete: only then are they announced, all of them, so that no reconcile
                // looks for an object the cache does not hold yet (and drops it).
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(watcher::Event::InitDone) => {
                    synced_tx.send_replace(true);
                    for obj in cache.state() {
                        for (tx, _) in &mut senders {
                            let _ = tx.send(obj.clone()).await;
                        }
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(kind = %kind, error = %err, "watch failed; retrying with backoff");
                    continue;
                }
            };
            if departed {
                for tx in &mut departed_tx {
                    let _ = tx.send(obj.clone()).await;
                }
            }
            let before = if departed {
                None
            } else {
                replaced.lock().unwrap_or_else(|p| p.into_inner()).take()
            };
            let obj = Arc::new(obj);
            for (tx, relevant) in &mut senders {
                if departed || relevant.as_ref().is_none_or(|r| r(before.as_deref(), &obj)) {
                    // A consumer that has stopped (shutdown) is simply skipped.
                    let _ = tx.send(obj.clone()).await;
                }
            }
        }
    };
    Feed {
        store,
        outlets,
        synced,
        reports,
        driver: Box::pin(driver),
    }
}

/// Turns the watch events of [`Lenient`] objects into events of the objects that decode, and
/// reports the others.
struct Sorter<K: Resource<DynamicType = ()> + 'static> {
    cache: Store<K>,
    reports: mpsc::UnboundedSender<Report>,
    /// Keys of the objects that do not decode now.
    bad: std::collections::BTreeSet<String>,
    /// Keys of the undecodable objects seen in the re-list under way.
    listed: std::collections::BTreeSet<String>,
}

impl<K> Sorter<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn sort(
        &mut self,
        event: Result<watcher::Event<Lenient<K>>, watcher::Error>,
    ) -> Option<Result<watcher::Event<K>, watcher::Error>> {
        use watcher::Event as E;
        let event = match event {
            Ok(event) => event,
            Err(err) => return Some(Err(err)),
        };
        Some(Ok(match event {
            E::Init => {
                self.listed.clear();
                E::Init
            }
            E::InitApply(Lenient::Good(k)) => {
                self.fixed(key_of(k.meta()));
                E::InitApply(k)
            }
            E::InitApply(Lenient::Bad(u)) => {
                let key = key_of(&u.meta);
                self.listed.insert(key.clone());
                let earlier = self.cached(&u.meta);
                self.broken(key, u);
                // The cache is replaced by the list at InitDone: keep the readable version.
                E::InitApply(earlier?)
            }
            E::InitDone => {
                // Undecodable objects absent from the new list are gone.
                let gone: Vec<String> = self.bad.difference(&self.listed).cloned().collect();
                for key in gone {
                    self.bad.remove(&key);
                    let _ = self.reports.unbounded_send(Report::Gone(key));
                }
                E::InitDone
            }
            E::Apply(Lenient::Good(k)) => {
                self.fixed(key_of(k.meta()));
                E::Apply(k)
            }
            E::Apply(Lenient::Bad(u)) => {
                // The cache keeps the last version that could be read, if any.
                self.broken(key_of(&u.meta), u);
                return None;
            }
            E::Delete(Lenient::Good(k)) => {
                self.gone(key_of(k.meta()));
                E::Delete(k)
            }
            E::Delete(Lenient::Bad(u)) => {
                self.gone(key_of(&u.meta));
                E::Delete(self.cached(&u.meta)?)
            }
        }))
    }

    fn cached(&self, meta: &kube::api::ObjectMeta) -> Option<K> {
        let name = meta.name.as_deref()?;
        let mut reference = ObjectRef::<K>::new(name);
        if let Some(ns) = &meta.namespace {
            reference = reference.within(ns);
        }
        self.cache.get(&reference).map(Arc::unwrap_or_clone)
    }

    fn broken(&mut self, key: String, problem: Box<super::lenient::Undecodable>) {
        self.bad.insert(key.clone());
        let _ = self.reports.unbounded_send(Report::Bad(key, problem));
    }

    fn fixed(&mut self, key: String) {
        if self.bad.remove(&key) {
            let _ = self.reports.unbounded_send(Report::Fixed(key));
        }
    }

    fn gone(&mut self, key: String) {
        if self.bad.remove(&key) {
            let _ = self.reports.unbounded_send(Report::Gone(key));
        }
    }
}

/// Set by a client-side `kubectl apply` (and Argo CD's default sync): a full JSON copy of the
/// applied manifest, as large as the object's spec again. Nothing in the operator reads it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no controller reads from an object before it enters a cache: the last-applied
/// annotation (a second copy of an object applied client-side by kubectl or Argo CD), and
/// `managedFields` should an object come with them ([`Lenient::decode`] leaves them out).
fn slim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every one of many tasks waiting at once is released when the cache fills (with
    /// `Store::wait_until_ready` only the last one to poll was: see [`Synced`]).
    #[tokio::test]
    async fn every_concurrent_waiter_is_released() {
        let (tenants_tx, tenants) = Synced::pair();
        let (subs_tx, subs) = Synced::pair();
        let all = AllSynced::new([tenants, subs]);
        assert!(!all.is_synced());
        let waiters: Vec<_> = (0..32)
            .map(|_| {
                let all = all.clone();
                tokio::spawn(async move { all.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        tenants_tx.send_replace(true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!all.is_synced(), "one cache is still listing");
        subs_tx.send_replace(true);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("every waiter is released")
                .expect("the waiter did not panic");
        }
        assert!(all.is_synced());
    }

    #[test]
    fn slim_keeps_every_annotation_but_the_last_applied_copy() {
        let mut meta = kube::api::ObjectMeta {
            annotations: Some(
                [
                    (LAST_APPLIED.to_string(), "{\"big\": true}".to_string()),
                    ("mailsec.io/suspended-replicas".to_string(), "3".to_string()),
                ]
                .into(),
            ),
            managed_fields: Some(vec![Default::default()]),
            ..Default::default()
        };
        slim(&mut meta);
        assert_eq!(meta.managed_fields, None);
        let kept: Vec<_> = meta.annotations.unwrap_or_default().into_keys().collect();
        assert_eq!(kept, ["mailsec.io/suspended-replicas"]);
    }

    /// A feed that stopped (shutdown) releases its waiters instead of holding them forever.
    #[tokio::test]
    async fn a_stopped_feed_releases_its_waiters() {
        let (tx, synced) = Synced::pair();
        let waiter = tokio::spawn(async move { synced.wait().await });
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .expect("no panic");
    }
}
