//! Evaluating a whole set of tenants and subscriptions at once (the `evaluate` CLI, tests).

use std::collections::HashMap;

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
    pub fn subscriptions_by_tenant(&self) -> HashMap<&str, Vec<&Subscription>> {
        let mut index: HashMap<&str, Vec<&Subscription>> = HashMap::new();
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
fn tenants_by_admin(tenants: &[Tenant]) -> HashMap<String, Vec<&Tenant>> {
    let mut index: HashMap<String, Vec<&Tenant>> = HashMap::new();
    for t in tenants {
        for address in duplicates::admin_addresses(t) {
            index.entry(address).or_default().push(t);
        }
    }
    index
}

/// Evaluates every tenant and subscription of `world` at `now`.
pub fn evaluate_world(world: &World, policy: &Policy, now: DateTime<Utc>) -> WorldEvaluation {
    let (tenants, subscriptions) = evaluate_world_map(world, policy, now, |_, e| e, |_, e| e);
    WorldEvaluation {
        tenants,
        subscriptions,
    }
}

/// [`evaluate_world`], each evaluation handed to `tenant` or `subscription` with its object as
/// soon as it is made: callers that need a little of each (a table row) do not hold a fleet's
/// evaluations at once. Results in input order; the work is spread over the cores, as a fleet
/// is 100,000s of independent evaluations.
pub fn evaluate_world_map<T, S>(
    world: &World,
    policy: &Policy,
    now: DateTime<Utc>,
    tenant: impl Fn(&Tenant, TenantEvaluation) -> T + Sync,
    subscription: impl Fn(&Subscription, SubscriptionEvaluation) -> S + Sync,
) -> (Vec<T>, Vec<S>)
where
    T: Send,
    S: Send,
{
    evaluate_world_indexed(
        world,
        policy,
        now,
        |_, t, e| tenant(t, e),
        |_, s, e| subscription(s, e),
    )
}

/// [`evaluate_world_map`], each object handed with its index in `world.tenants` or
/// `world.subscriptions` (for callers that keep something beside each object, such as its
/// original document).
pub fn evaluate_world_indexed<T, S>(
    world: &World,
    policy: &Policy,
    now: DateTime<Utc>,
    tenant: impl Fn(usize, &Tenant, TenantEvaluation) -> T + Sync,
    subscription: impl Fn(usize, &Subscription, SubscriptionEvaluation) -> S + Sync,
) -> (Vec<T>, Vec<S>)
where
    T: Send,
    S: Send,
{
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
    let tenants = in_parallel(&world.tenants, |i, t| {
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
        tenant(i, t, evaluate_tenant(&input, policy, now))
    });
    let subscriptions = in_parallel(&world.subscriptions, |i, s| {
        let siblings = index
            .get(s.spec.tenant_ref.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        subscription(
            i,
            s,
            evaluate_subscription_among(s, siblings, &users, policy, now),
        )
    });
    (tenants, subscriptions)
}

/// Below this many items a thread costs more than it saves.
const PARALLEL_MIN: usize = 256;

/// `items.iter().enumerate().map(f).collect()`, in contiguous chunks on as many threads as there
/// are cores.
fn in_parallel<I: Sync, R: Send>(items: &[I], f: impl Fn(usize, &I) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads <= 1 || items.len() < PARALLEL_MIN {
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| f(i, item))
            .collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    let first = n * chunk;
                    part.iter()
                        .enumerate()
                        .map(|(i, item)| f(first + i, item))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for worker in workers {
            match worker.join() {
                Ok(part) => out.extend(part),
                // A panic in the engine is a bug: pass it on as if it ran on this thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
