//! One watch per kind, one cache per kind, fanned out to every controller that reacts to it.
//!
//! The cache is updated before any controller hears of a change, so a reconcile triggered by an
//! object always reads a cache that already holds that object (two independent watches of the
//! same kind could disagree for a moment, and a reconcile would then act on stale data).

use std::fmt::Debug;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

/// Buffered changes per consumer before the watch waits for it.
const BUFFER: usize = 1024;

/// A shared watch: its cache, the streams of changed objects for each consumer, optionally the
/// stream of objects that left the watch (deleted, or no longer matching its label selector),
/// and the future that drives the watch (spawn it).
pub struct Feed<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    pub store: Store<K>,
    pub outlets: Vec<mpsc::Receiver<K>>,
    pub departures: Option<mpsc::Receiver<K>>,
    pub driver: futures::future::BoxFuture<'static, ()>,
}

/// Watches `api` (list + watch with backoff on errors) into one cache and `consumers` streams;
/// with `track_departures`, objects that leave the watch are also sent to `departures`.
pub fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
    consumers: usize,
    track_departures: bool,
) -> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    feed_indexed(
        api,
        config,
        consumers,
        track_departures,
        |_: &watcher::Event<K>| {},
    )
}

/// [`feed`], calling `index` with every watch event once the cache holds it and before any
/// consumer hears of it, so that an index maintained there is never behind the cache for a
/// reconcile the event triggers.
///
/// `metadata.managedFields` is dropped before objects enter the cache: nothing reads it, and it
/// is often the largest part of an object (every field manager lists every field it owns).
pub fn feed_indexed<K>(
    api: Api<K>,
    config: watcher::Config,
    consumers: usize,
    track_departures: bool,
    mut index: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let (senders, outlets): (Vec<_>, Vec<_>) =
        (0..consumers).map(|_| mpsc::channel::<K>(BUFFER)).unzip();
    let (departed_tx, departures) = if track_departures {
        let (tx, rx) = mpsc::channel::<K>(BUFFER);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let kind = K::kind(&()).to_string();
    let cache = store.clone();
    let driver = async move {
        let mut senders = senders;
        let mut departed_tx = departed_tx;
        let events = reflector::reflector(
            writer,
            watcher(api, config)
                .default_backoff()
                .modify(|obj: &mut K| obj.meta_mut().managed_fields = None),
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
                    for obj in cache.state() {
                        for tx in &mut senders {
                            let _ = tx.send(obj.as_ref().clone()).await;
                        }
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(kind = %kind, error = %err, "watch failed; retrying with backoff");
                    continue;
                }
            };
            if departed && let Some(tx) = departed_tx.as_mut() {
                let _ = tx.send(obj.clone()).await;
            }
            for tx in &mut senders {
                // A consumer that has stopped (shutdown) is simply skipped.
                let _ = tx.send(obj.clone()).await;
            }
        }
    };
    Feed {
        store,
        outlets,
        departures,
        driver: Box::pin(driver),
    }
}

/// A consumer stream in the shape kube-runtime's controllers take.
pub fn trigger<K>(
    outlet: mpsc::Receiver<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
{
    outlet.map(Ok)
}
