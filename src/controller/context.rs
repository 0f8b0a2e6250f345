//! What every reconcile shares: the client, the caches, the policy, the event recorder, and the
//! per-object error backoff.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

use super::clock::Clock;
use super::feed::AllSynced;
use super::runtime::BackoffKey;
use crate::api::{Subscription, Tenant};
use crate::engine::duplicates::MAX_TENANTS_PER_ADDRESS;
use crate::engine::{Policy, TenantUsers};
use crate::workloads::apply as workloads;

/// The shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub policy: Policy,
    pub tenants: Store<Tenant>,
    pub subscriptions: Store<Subscription>,
    /// Tenant name → the subscriptions that name it, maintained from the subscriptions' watch.
    pub subscription_index: SubscriptionIndex,
    /// Administrator address → the tenants that list it, maintained from the tenants' watch.
    pub admin_index: AdminIndex,
    /// Repeatable notices (folded into Event series).
    pub recorder: Recorder,
    /// Who publishes Events; once-only announcements use it without the Recorder's cache
    /// (see [`crate::effects::events::announce`]).
    pub reporter: Reporter,
    pub workloads: WorkloadStores,
    /// Whether every cache above holds a full list.
    pub synced: AllSynced,
    failures: Mutex<HashMap<BackoffKey, u32>>,
    /// The statuses this process wrote (its cache may lag behind those writes, and their
    /// echoes need not trigger anything).
    pub own_writes: super::relevance::OwnWrites,
    /// Where [`Context::now`] reads the time; requeues turn its instants into real sleeps.
    pub clock: Clock,
    /// Whether the tenant controller puts its finalizer on tenants.
    pub deletion_guard: super::DeletionGuard,
    /// The milestone Events this process knows to exist.
    pub milestone_events: crate::effects::events::MilestoneEvents,
    /// The Events of milestones already due at first sight, published with spare capacity.
    pub late_events: super::late_events::LateEvents,
    /// Workloads labelled for a tenant in a namespace not assigned to it, already reported
    /// (`tenant kind namespace/name`): reported once per process, not on every reconcile.
    ignored_reported: Mutex<HashSet<String>>,
}

/// Caches of the workloads labelled `mailsec.io/tenant`, of the operator's settings ConfigMaps,
/// and of the namespaces assigned to tenants.
#[derive(Clone)]
pub struct WorkloadStores {
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub configmaps: Store<ConfigMap>,
    /// Namespaces the platform assigned to a tenant (labelled `mailsec.io/tenant=<tenant>`).
    pub namespaces: Store<Namespace>,
}

/// The caches the controllers read, as [`Context::new`] takes them.
pub struct Caches {
    pub tenants: Store<Tenant>,
    pub subscriptions: Store<Subscription>,
    pub subscription_index: SubscriptionIndex,
    pub admin_index: AdminIndex,
    pub workloads: WorkloadStores,
    pub synced: AllSynced,
    /// Shared with the feeds, which leave out the echoes of these writes.
    pub own_writes: super::relevance::OwnWrites,
}

impl Context {
    pub fn new(
        client: Client,
        policy: Policy,
        caches: Caches,
        reporter: Reporter,
        clock: Clock,
        deletion_guard: super::DeletionGuard,
    ) -> Self {
        let Caches {
            tenants,
            subscriptions,
            subscription_index,
            admin_index,
            workloads,
            synced,
            own_writes,
        } = caches;
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            policy,
            tenants,
            subscriptions,
            subscription_index,
            admin_index,
            reporter,
            workloads,
            synced,
            failures: Mutex::new(HashMap::new()),
            own_writes,
            clock,
            deletion_guard,
            milestone_events: Default::default(),
            late_events: Default::default(),
            ignored_reported: Mutex::new(HashSet::new()),
        }
    }

    /// Waits until every cache holds a full list: evaluating a tenant before the subscriptions
    /// are known would see them all missing.
    /// (Not `Store::wait_until_ready`: see [`super::feed::Synced`].)
    pub async fn caches_ready(&self) {
        self.synced.wait().await;
    }

    /// The controllers' clock (real time, or a time lapse). The engine itself never reads it.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Subscriptions that name `tenant` (see [`crate::engine::subscription::tenants_named`]),
    /// from the cache, by name.
    pub fn subscriptions_of(&self, tenant: &str) -> Vec<Arc<Subscription>> {
        self.subscription_index
            .subscriptions(&self.subscriptions, tenant, |s| {
                crate::engine::subscription::names_tenant(s, tenant)
            })
    }

    /// The other tenants that share an administrator address with `tenant`, from the cache, each
    /// with the subscriptions that concern it (for the possible-duplicate check).
    pub fn neighbours_of(&self, tenant: &Tenant) -> Vec<(Arc<Tenant>, Vec<Arc<Subscription>>)> {
        self.admin_index
            .neighbours_of(tenant)
            .into_iter()
            .filter_map(|n| {
                let t = self.tenant(&n)?;
                let subs = self
                    .subscription_index
                    .subscriptions(&self.subscriptions, &n, |s| s.concerns(&n));
                Some((t, subs))
            })
            .collect()
    }

    /// Whether the platform assigned `namespace` to `tenant`: the Namespace carries the label
    /// `mailsec.io/tenant=<tenant>`, which a Tenant editor can not set. The operator writes and
    /// scales only there.
    pub fn namespace_assigned(&self, tenant: &str, namespace: &str) -> bool {
        self.namespace_tenant(namespace).as_deref() == Some(tenant)
    }

    /// The tenant `namespace` is assigned to, if any.
    pub fn namespace_tenant(&self, namespace: &str) -> Option<String> {
        use kube::ResourceExt;
        let ns = self.workloads.namespaces.get(&ObjectRef::new(namespace))?;
        crate::workloads::apply::tenant_of(ns.labels()).map(str::to_string)
    }

    /// The workloads labelled for `tenant`, from the caches, sorted by namespace, name and kind:
    /// those in namespaces assigned to it, and those elsewhere (never acted on).
    pub fn workloads_of(&self, tenant: &str) -> TenantWorkloads {
        use kube::ResourceExt;
        let stores = &self.workloads;
        let mut found: Vec<_> = stores
            .deployments
            .state()
            .iter()
            .filter(|d| workloads::tenant_of(d.labels()) == Some(tenant))
            .map(|d| workloads::deployment_facts(d))
            .collect();
        found.extend(
            stores
                .statefulsets
                .state()
                .iter()
                .filter(|s| workloads::tenant_of(s.labels()) == Some(tenant))
                .map(|s| workloads::statefulset_facts(s)),
        );
        found.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.kind).cmp(&(&b.namespace, &b.name, &b.kind))
        });
        let (assigned, ignored) = found
            .into_iter()
            .partition(|w| self.namespace_assigned(tenant, &w.namespace));
        TenantWorkloads { assigned, ignored }
    }

    /// Of the `ignored` workloads of `tenant`, those not reported yet by this process (each is
    /// then taken as reported).
    pub fn not_yet_reported<'a>(
        &self,
        tenant: &str,
        ignored: &'a [crate::workloads::plan::Workload],
    ) -> Vec<&'a crate::workloads::plan::Workload> {
        let mut reported = self
            .ignored_reported
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ignored
            .iter()
            .filter(|w| reported.insert(format!("{tenant} {} {}", w.kind, w.id())))
            .collect()
    }

    /// `spec.users` of the tenants these subscriptions name (which also tells which exist).
    pub fn users_of<'a>(&self, subs: impl IntoIterator<Item = &'a Subscription>) -> TenantUsers {
        let mut users = TenantUsers::new();
        for sub in subs {
            for name in sub.tenants() {
                if users.contains_key(name) {
                    continue;
                }
                if let Some(t) = self.tenant(name) {
                    users.insert(name.to_string(), t.spec.users);
                }
            }
        }
        users
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants
            .get(&kube::runtime::reflector::ObjectRef::new(name))
    }

    /// Exponential backoff per object: 1 s, 2 s, 4 s, ... up to 5 minutes.
    pub fn backoff(&self, key: &BackoffKey) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300))
    }

    /// Forgets the failures of an object after a successful reconcile.
    pub fn succeeded(&self, key: &BackoffKey) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

/// A tenant's labelled workloads: in the namespaces assigned to it, and elsewhere.
pub struct TenantWorkloads {
    pub assigned: Vec<crate::workloads::plan::Workload>,
    pub ignored: Vec<crate::workloads::plan::Workload>,
}

/// An index from keys to the names of the cached objects that carry them, kept from the
/// objects' watch events (see `feed::feed_indexed`), so that a reconcile finds related objects
/// without scanning a whole cache.
///
/// - [`SubscriptionIndex`]: tenant name → the subscriptions that name it (as owner or sharer, in
///   spec or in last status, or as a party to a recorded transfer); scanning the subscription
///   cache for every tenant made a cold start O(tenants × subscriptions).
/// - [`AdminIndex`]: lower-case administrator address → the tenants that list it (possible
///   duplicates).
///
/// An object is listed under every key its cached version has; readers check the cached object
/// for what they need.
pub struct NameIndex<K> {
    inner: Arc<RwLock<IndexState>>,
    keys: fn(&K) -> Vec<String>,
}

impl<K> Clone for NameIndex<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keys: self.keys,
        }
    }
}

/// Tenant name → subscriptions that name it.
pub type SubscriptionIndex = NameIndex<Subscription>;
/// Lower-case administrator address → tenants that list it.
pub type AdminIndex = NameIndex<Tenant>;

impl Default for SubscriptionIndex {
    fn default() -> Self {
        Self::new(named_tenants)
    }
}

impl Default for AdminIndex {
    fn default() -> Self {
        Self::new(|t| {
            crate::engine::duplicates::admin_addresses(t)
                .into_iter()
                .collect()
        })
    }
}

/// Names are shared (`Arc<str>`): an object's name is stored once however many keys it has,
/// and a key once however many objects carry it; lists are short vectors (sorted when read).
/// With a `BTreeSet` of `String`s per key and copies of both in each direction, the two
/// indexes weighed about 470 bytes per cached object.
#[derive(Default)]
struct IndexState {
    /// Key → the objects indexed under it, in no order.
    by_key: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// The keys each object was indexed under.
    of_object: HashMap<Arc<str>, Box<[Arc<str>]>>,
    /// Objects seen during a re-list; the index is rebuilt from them when it completes.
    relist: Option<Vec<(String, Vec<String>)>>,
}

fn named_tenants(sub: &Subscription) -> Vec<String> {
    crate::engine::subscription::tenants_named(sub)
        .map(str::to_string)
        .collect()
}

impl IndexState {
    fn insert(&mut self, object: &str, mut keys: Vec<String>) {
        self.remove(object);
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return;
        }
        let object: Arc<str> = Arc::from(object);
        let keys: Box<[Arc<str>]> = keys
            .into_iter()
            .map(|k| match self.by_key.get_key_value(k.as_str()) {
                Some((shared, _)) => shared.clone(),
                None => Arc::from(k),
            })
            .collect();
        for k in &keys {
            let objects = self.by_key.entry(k.clone()).or_default();
            // Most keys hold one or two objects: room for those alone (a first push makes room
            // for four, 48 bytes more per key).
            objects.reserve_exact(1);
            objects.push(object.clone());
        }
        self.of_object.insert(object, keys);
    }

    fn remove(&mut self, object: &str) {
        let Some(keys) = self.of_object.remove(object) else {
            return;
        };
        for k in &keys {
            if let Some(names) = self.by_key.get_mut(k) {
                if let Some(i) = names.iter().position(|n| **n == *object) {
                    names.swap_remove(i);
                }
                if names.is_empty() {
                    self.by_key.remove(k);
                }
            }
        }
    }

    /// The objects indexed under `key`, sorted by name.
    fn sorted(&self, key: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .by_key
            .get(key)
            .map(|names| names.iter().map(|n| &**n).collect())
            .unwrap_or_default();
        names.sort_unstable();
        names
    }
}

impl<K: kube::Resource> NameIndex<K> {
    fn new(keys: fn(&K) -> Vec<String>) -> Self {
        Self {
            inner: Arc::default(),
            keys,
        }
    }

    /// Updates the index with one watch event.
    pub fn observe(&self, event: &watcher::Event<K>) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let name = |o: &K| o.meta().name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => state.relist = Some(Vec::new()),
            watcher::Event::InitApply(o) => {
                let entry = (name(o), (self.keys)(o));
                match state.relist.as_mut() {
                    Some(list) => list.push(entry),
                    None => state.insert(&entry.0, entry.1),
                }
            }
            watcher::Event::InitDone => {
                // The cache now holds exactly the re-listed objects: so does the index.
                let list = state.relist.take().unwrap_or_default();
                state.by_key.clear();
                state.of_object.clear();
                for (object, keys) in list {
                    state.insert(&object, keys);
                }
            }
            watcher::Event::Apply(o) => state.insert(&name(o), (self.keys)(o)),
            watcher::Event::Delete(o) => state.remove(&name(o)),
        }
    }

    /// Names of the objects indexed under `key`, sorted.
    pub fn names(&self, key: &str) -> Vec<String> {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        state.sorted(key).into_iter().map(str::to_string).collect()
    }
}

impl<K> NameIndex<K>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    /// The cached objects indexed under `key` that satisfy `keep`, sorted by name.
    pub fn objects(&self, store: &Store<K>, key: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        // Sorted by name.
        self.names(key)
            .into_iter()
            .filter_map(|n| store.get(&ObjectRef::new(&n)))
            .filter(|o| keep(o))
            .collect()
    }
}

impl SubscriptionIndex {
    /// The cached subscriptions indexed under `tenant` that satisfy `keep`, sorted by name.
    pub fn subscriptions(
        &self,
        store: &Store<Subscription>,
        tenant: &str,
        keep: impl Fn(&Subscription) -> bool,
    ) -> Vec<Arc<Subscription>> {
        self.objects(store, tenant, keep)
    }
}

impl AdminIndex {
    /// The names of the other tenants that list one of `tenant`'s administrator addresses,
    /// sorted. Addresses listed by more than [`MAX_TENANTS_PER_ADDRESS`] tenants are not
    /// compared (the engine's rule, which keeps this bounded).
    pub fn neighbours_of(&self, tenant: &Tenant) -> Vec<String> {
        let own = tenant.metadata.name.as_deref().unwrap_or_default();
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for address in (self.keys)(tenant) {
            let Some(listing) = state.by_key.get(address.as_str()) else {
                continue;
            };
            if listing.len() > MAX_TENANTS_PER_ADDRESS {
                continue;
            }
            names.extend(listing.iter().map(|n| &**n).filter(|n| *n != own));
        }
        names.into_iter().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ESG, shared, subscription, tenant};

    fn sub(name: &str, owner: &str, sharers: &[&str]) -> Subscription {
        shared(
            subscription(name, owner, ESG, "2026-01-01", "2026-12-31", 10),
            sharers,
        )
    }

    fn with_admins(name: &str, admins: &[&str]) -> Tenant {
        crate::fixtures::with_admins(tenant(name, &[ESG], 1), admins)
    }

    /// What the index answers for each of `keys`.
    fn listing<K: kube::Resource>(index: &NameIndex<K>, keys: &[&str]) -> Vec<Vec<String>> {
        keys.iter().map(|k| index.names(k)).collect()
    }

    #[test]
    fn the_subscription_index_follows_every_watch_event() {
        use watcher::Event as E;
        let index = SubscriptionIndex::default();
        let keys = ["acme", "globex", "initech"];
        // (event, what each key lists afterwards)
        let steps: Vec<(E<Subscription>, [&[&str]; 3])> = vec![
            (E::Apply(sub("s2", "acme", &[])), [&["s2"], &[], &[]]),
            (
                E::Apply(sub("s1", "acme", &["globex"])),
                [&["s1", "s2"], &["s1"], &[]],
            ),
            // Moved: listed under its new tenants only.
            (
                E::Apply(sub("s2", "initech", &["initech"])),
                [&["s1"], &["s1"], &["s2"]],
            ),
            (
                E::Delete(sub("s1", "acme", &["globex"])),
                [&[], &[], &["s2"]],
            ),
            // A re-list replaces everything once it completes.
            (E::Init, [&[], &[], &["s2"]]),
            (E::InitApply(sub("s3", "globex", &[])), [&[], &[], &["s2"]]),
            (
                E::InitApply(sub("s9", "globex", &["acme"])),
                [&[], &[], &["s2"]],
            ),
            (E::InitDone, [&["s9"], &["s3", "s9"], &[]]),
        ];
        for (i, (event, expected)) in steps.into_iter().enumerate() {
            index.observe(&event);
            let expected: Vec<Vec<String>> = expected
                .iter()
                .map(|names| names.iter().map(|n| n.to_string()).collect())
                .collect();
            assert_eq!(listing(&index, &keys), expected, "after step {i}");
        }
        let state = index.inner.read().expect("not poisoned");
        assert_eq!(state.of_object.len(), 2, "s3 and s9");
        assert_eq!(state.by_key.len(), 2, "keys no object carries are dropped");
    }

    #[test]
    fn names_and_keys_are_stored_once() {
        let index = AdminIndex::default();
        for (name, admins) in [
            ("acme", &["Ops@Shared.example", "a@acme.example"][..]),
            ("globex", &["ops@shared.example"][..]),
            (
                "initech",
                &["ops@shared.example", "ops@shared.example "][..],
            ),
        ] {
            index.observe(&watcher::Event::Apply(with_admins(name, admins)));
        }
        let state = index.inner.read().expect("not poisoned");
        let (shared_key, listing) = state
            .by_key
            .get_key_value("ops@shared.example")
            .expect("indexed");
        assert_eq!(listing.len(), 3, "initech's two spellings are one key");
        for (object, keys) in &state.of_object {
            assert!(
                keys.iter()
                    .filter(|k| ***k == *"ops@shared.example")
                    .all(|k| Arc::ptr_eq(k, shared_key)),
                "{object} shares the key"
            );
            for k in keys.iter() {
                let listed = state.by_key[k]
                    .iter()
                    .find(|n| ***n == **object)
                    .expect("listed");
                assert!(Arc::ptr_eq(listed, object), "{object} is stored once");
            }
        }
        drop(state);
        assert_eq!(
            index.neighbours_of(&with_admins("acme", &["ops@shared.example"])),
            ["globex", "initech"]
        );
    }
}
