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
use k8s_openapi::api::core::v1::ConfigMap;

use super::clock::Clock;
use super::feed::AllSynced;
use crate::api::{Subscription, Tenant};
use crate::engine::{Policy, TenantUsers};

/// The shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub policy: Policy,
    pub tenants: Store<Tenant>,
    pub subscriptions: Store<Subscription>,
    /// Tenant name → the subscriptions that name it, maintained from the subscriptions' watch.
    pub subscription_index: SubscriptionIndex,
    /// Repeatable notices (folded into Event series).
    pub recorder: Recorder,
    /// Who publishes Events; once-only announcements use it without the Recorder's cache
    /// (see [`crate::effects::events::announce`]).
    pub reporter: Reporter,
    pub workloads: WorkloadStores,
    /// Whether every cache above holds a full list.
    pub synced: AllSynced,
    failures: Mutex<HashMap<String, u32>>,
    /// Tenants whose status this process has written (its cache may lag behind those writes).
    written: Mutex<HashSet<String>>,
    /// Where [`Context::now`] reads the time; requeues turn its instants into real sleeps.
    pub clock: Clock,
}

/// Caches of the workloads labelled `mailsec.io/tenant`, and of the operator's settings ConfigMaps.
#[derive(Clone)]
pub struct WorkloadStores {
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub configmaps: Store<ConfigMap>,
}

/// The caches the controllers read, as [`Context::new`] takes them.
pub struct Caches {
    pub tenants: Store<Tenant>,
    pub subscriptions: Store<Subscription>,
    pub subscription_index: SubscriptionIndex,
    pub workloads: WorkloadStores,
    pub synced: AllSynced,
}

impl Context {
    pub fn new(
        client: Client,
        policy: Policy,
        caches: Caches,
        reporter: Reporter,
        clock: Clock,
    ) -> Self {
        let Caches {
            tenants,
            subscriptions,
            subscription_index,
            workloads,
            synced,
        } = caches;
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            policy,
            tenants,
            subscriptions,
            subscription_index,
            reporter,
            workloads,
            synced,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashSet::new()),
            clock,
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

    /// Subscriptions owned by or shared with `tenant`, or transferred to or from it, from the
    /// cache, by name.
    pub fn subscriptions_of(&self, tenant: &str) -> Vec<Arc<Subscription>> {
        self.subscription_index
            .subscriptions(&self.subscriptions, tenant, |s| {
                s.concerns(tenant) || s.transferred_with(tenant)
            })
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
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300))
    }

    /// Notes that this process wrote the status of `tenant`.
    pub fn status_written(&self, tenant: &str) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if !written.contains(tenant) {
            written.insert(tenant.to_string());
        }
    }

    /// Whether this process has written the status of `tenant` (so its cached copy may be older
    /// than that write).
    pub fn wrote_status_of(&self, tenant: &str) -> bool {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written.contains(tenant)
    }

    /// Forgets the failures of an object after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

/// Which subscriptions name a tenant (as owner or sharer, in spec or in last status), kept from the
/// subscriptions' watch events, so that finding a tenant's subscriptions does not scan the whole
/// cache (that made a cold start O(tenants × subscriptions)).
///
/// The index names every subscription whose cached version names the tenant (in spec, or in
/// status as the last seen owner or sharer); readers check the cached object for what they need.
#[derive(Clone, Default)]
pub struct SubscriptionIndex {
    inner: Arc<RwLock<IndexState>>,
}

#[derive(Default)]
struct IndexState {
    by_tenant: HashMap<String, BTreeSet<String>>,
    /// The tenants each subscription was indexed under.
    of_subscription: HashMap<String, Vec<String>>,
    /// Objects seen during a re-list; the index is rebuilt from them when it completes.
    relist: Option<Vec<(String, Vec<String>)>>,
}

fn named_tenants(sub: &Subscription) -> Vec<String> {
    let mut names: Vec<String> = sub.tenants().map(str::to_string).collect();
    if let Some(status) = &sub.status {
        names.extend(status.tenant.iter().cloned());
        names.extend(status.shared_with.iter().cloned());
        // The parties of recorded transfers get their transfer confirmations.
        names.extend(
            status
                .transfers
                .iter()
                .flat_map(|t| [t.from.clone(), t.to.clone()]),
        );
    }
    names.sort();
    names.dedup();
    names
}

impl IndexState {
    fn insert(&mut self, sub: String, tenants: Vec<String>) {
        self.remove(&sub);
        for t in &tenants {
            self.by_tenant
                .entry(t.clone())
                .or_default()
                .insert(sub.clone());
        }
        self.of_subscription.insert(sub, tenants);
    }

    fn remove(&mut self, sub: &str) {
        for t in self.of_subscription.remove(sub).unwrap_or_default() {
            if let Some(set) = self.by_tenant.get_mut(&t) {
                set.remove(sub);
                if set.is_empty() {
                    self.by_tenant.remove(&t);
                }
            }
        }
    }
}

impl SubscriptionIndex {
    /// Updates the index with one watch event (see `feed::feed_indexed`).
    pub fn observe(&self, event: &watcher::Event<Subscription>) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = |s: &Subscription| s.metadata.name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => state.relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => {
                let entry = (key(s), named_tenants(s));
                match state.relist.as_mut() {
                    Some(list) => list.push(entry),
                    None => state.insert(entry.0, entry.1),
                }
            }
            watcher::Event::InitDone => {
                // The cache now holds exactly the re-listed objects: so does the index.
                let list = state.relist.take().unwrap_or_default();
                state.by_tenant.clear();
                state.of_subscription.clear();
                for (sub, tenants) in list {
                    state.insert(sub, tenants);
                }
            }
            watcher::Event::Apply(s) => state.insert(key(s), named_tenants(s)),
            watcher::Event::Delete(s) => state.remove(&key(s)),
        }
    }

    /// Names of the subscriptions indexed under `tenant`.
    pub fn names(&self, tenant: &str) -> Vec<String> {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        state
            .by_tenant
            .get(tenant)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The cached subscriptions indexed under `tenant` that satisfy `keep`, sorted by name.
    pub fn subscriptions(
        &self,
        store: &Store<Subscription>,
        tenant: &str,
        keep: impl Fn(&Subscription) -> bool,
    ) -> Vec<Arc<Subscription>> {
        // BTreeSet order: already sorted by name.
        self.names(tenant)
            .into_iter()
            .filter_map(|n| store.get(&ObjectRef::new(&n)))
            .filter(|s| keep(s))
            .collect()
    }
}
