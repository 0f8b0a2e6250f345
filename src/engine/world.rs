//! Evaluating a whole set of tenants and subscriptions at once (the `evaluate` CLI, tests).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::duplicates::{self, Neighbour};
use super::subscription::evaluate_subscription_among;
use super::{
    Policy, SubscriptionEvaluation, TenantEvaluation, TenantInput, TenantUsers, evaluate_tenant,
};
use crate::api::{Subscription, Tenant};

/// Every tenant and subscription known, as read from a cluster or from manifests.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub tenants: Vec<Tenant>,
    pub subscriptions: Vec<Subscription>,
}

/// The engine's answer for a [`World`], in input order.
#[derive(Clone, Debug)]
pub struct WorldEvaluation {
    pub tenants: Vec<TenantEvaluation>,
    pub subscriptions: Vec<SubscriptionEvaluation>,
}

impl World {
    /// `spec.users` of every tenant, by name.
    pub fn users(&self) -> TenantUsers {
        self.tenants
            .iter()
            .filter_map(|t| t.metadata.name.clone().map(|n| (n, t.spec.users)))
            .collect()
    }

    /// The subscriptions that name each tenant (see [`super::subscription::tenants_named`]), by
    /// tenant name.
    pub fn subscriptions_by_tenant(&self) -> BTreeMap<&str, Vec<&Subscription>> {
        let mut index: BTreeMap<&str, Vec<&Subscription>> = BTreeMap::new();
        for sub in &self.subscriptions {
            for tenant in super::subscription::tenants_named(sub) {
                let list = index.entry(tenant).or_default();
                // A tenant named twice (owner and sharedWith) counts the subscription once.
                if !list.iter().any(|s| std::ptr::eq(*s, sub)) {
                    list.push(sub);
                }
            }
        }
        index
    }
}

/// Tenants by lower-case administrator address: who might be whose duplicate.
fn tenants_by_admin(tenants: &[Tenant]) -> BTreeMap<String, Vec<&Tenant>> {
    let mut index: BTreeMap<String, Vec<&Tenant>> = BTreeMap::new();
    for t in tenants {
        for address in duplicates::admin_addresses(t) {
            index.entry(address).or_default().push(t);
        }
    }
    index
}

/// Evaluates every tenant and subscription of `world` at `now`.
pub fn evaluate_world(world: &World, policy: &Policy, now: DateTime<Utc>) -> WorldEvaluation {
    let users = world.users();
    let index = world.subscriptions_by_tenant();
    let by_admin = tenants_by_admin(&world.tenants);
    let subs_of = |t: &Tenant| -> &[&Subscription] {
        t.metadata
            .name
            .as_deref()
            .and_then(|n| index.get(n))
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let tenants = world
        .tenants
        .iter()
        .map(|t| {
            let mut neighbours: Vec<Neighbour<'_>> = Vec::new();
            for address in duplicates::admin_addresses(t) {
                let listed = by_admin
                    .get(&address)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if listed.len() > duplicates::MAX_TENANTS_PER_ADDRESS {
                    continue;
                }
                for other in listed {
                    if !std::ptr::eq(*other, t)
                        && !neighbours.iter().any(|n| std::ptr::eq(n.tenant, *other))
                    {
                        neighbours.push(Neighbour {
                            tenant: other,
                            subscriptions: subs_of(other),
                        });
                    }
                }
            }
            let input = TenantInput {
                neighbours: &neighbours,
                ..TenantInput::new(t, subs_of(t), &users)
            };
            evaluate_tenant(&input, policy, now)
        })
        .collect();
    let subscriptions = world
        .subscriptions
        .iter()
        .map(|s| {
            let siblings = index
                .get(s.spec.tenant_ref.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            evaluate_subscription_among(s, siblings, &users, policy, now)
        })
        .collect();
    WorldEvaluation {
        tenants,
        subscriptions,
    }
}
