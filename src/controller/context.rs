//! What every reconcile shares: the client, the caches, the policy, the event recorder, and the
//! per-object error backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;

use crate::api::{Subscription, Tenant};
use crate::engine::{Policy, TenantUsers};

/// The shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub policy: Policy,
    pub tenants: Store<Tenant>,
    pub subscriptions: Store<Subscription>,
    pub recorder: Recorder,
    pub workloads: WorkloadStores,
    failures: Mutex<HashMap<String, u32>>,
}

/// Caches of the workloads labelled `mailsec.io/tenant`, and of the operator's settings ConfigMaps.
#[derive(Clone)]
pub struct WorkloadStores {
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub configmaps: Store<ConfigMap>,
}

impl Context {
    pub fn new(
        client: Client,
        policy: Policy,
        tenants: Store<Tenant>,
        subscriptions: Store<Subscription>,
        workloads: WorkloadStores,
        recorder: Recorder,
    ) -> Self {
        Self {
            client,
            policy,
            tenants,
            subscriptions,
            recorder,
            workloads,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until every cache holds a full list: evaluating a tenant before the subscriptions
    /// are known would see them all missing.
    pub async fn caches_ready(&self) {
        let _ = self.tenants.wait_until_ready().await;
        let _ = self.subscriptions.wait_until_ready().await;
        let _ = self.workloads.deployments.wait_until_ready().await;
        let _ = self.workloads.statefulsets.wait_until_ready().await;
        let _ = self.workloads.configmaps.wait_until_ready().await;
    }

    /// The controllers' clock. The engine itself never reads it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Subscriptions owned by or shared with `tenant`, or transferred to or from it, from the
    /// cache.
    pub fn subscriptions_of(&self, tenant: &str) -> Vec<Arc<Subscription>> {
        let mut subs: Vec<Arc<Subscription>> = self
            .subscriptions
            .state()
            .into_iter()
            .filter(|s| s.concerns(tenant) || s.transferred_with(tenant))
            .collect();
        subs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        subs
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

    /// Forgets the failures of an object after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}
