//! The Subscription controller: evaluate, write status, announce changes on the subscription and
//! on the tenants concerned.

use std::sync::Arc;

use kube::{Client, Resource, ResourceExt};

use super::context::Context;
use super::relevance::OwnWrites;
use super::{Error, Next, requeue_at};
use crate::api::ConditionType;
use crate::api::{Condition, Subscription, condition::find};
use crate::effects::events::{
    Notice, extension_notice, problem_notice, publish, renewal_notice, sharing_notice,
    transfer_notice,
};
use crate::effects::status::apply_if_unchanged_since;
use crate::engine::SubscriptionChange;
use crate::engine::subscription::{SubscriptionEvaluation, evaluate_subscription_among};

pub async fn reconcile(sub: Arc<Subscription>, ctx: Arc<Context>) -> Result<Next, Error> {
    let name = sub.name_any();
    ctx.caches_ready().await;
    let now = ctx.now();
    let users = ctx.users_of([sub.as_ref()]);
    let siblings = ctx.subscriptions_of(&sub.spec.tenant_ref);
    let siblings: Vec<&Subscription> = siblings.iter().map(|s| s.as_ref()).collect();
    let eval = evaluate_subscription_among(&sub, &siblings, &users, &ctx.policy, now);
    if !write_status(&ctx.client, &sub, &eval, &ctx.own_writes).await? {
        // The cache is behind the stored subscription (this controller's own last write, or a
        // change): its watch event brings the newer one, and another reconcile.
        tracing::debug!(subscription = %name, "stale read: status not written, nothing announced");
        return Ok(Next::After(STALE_RETRY));
    }

    // Announce after the status is written, so a retry never announces twice.
    for change in &eval.changes {
        announce(&ctx, &sub, change).await;
    }
    warn_on_problems(&ctx, &sub, &eval).await;
    tracing::debug!(phase = ?eval.status.phase, next = ?eval.next_transition, "subscription reconciled");
    Ok(requeue_at(eval.next_transition, now, &ctx.clock))
}

/// Announces one change of `sub`, on the subscription and on the tenants concerned.
async fn announce(ctx: &Context, sub: &Subscription, change: &SubscriptionChange) {
    let name = sub.name_any();
    let regarding = sub.object_ref(&());
    let owner = &sub.spec.tenant_ref;
    let product = &sub.spec.product;
    match change {
        SubscriptionChange::Transferred { from, to } => {
            let notice = transfer_notice(&name, product, from, to);
            publish(&ctx.recorder, &regarding, &notice).await;
            // On the two tenants, the Tenant controller announces the transfer as the
            // milestones TransferredOut and TransferredIn (Events SubscriptionTransferredOut
            // and SubscriptionTransferredIn), once each, also across restarts.
        }
        SubscriptionChange::Extended { from, until } => {
            let why = sub
                .spec
                .extension
                .as_ref()
                .and_then(|e| e.reason.as_deref());
            let (on_sub, on_tenant) = extension_notice(&name, product, *from, *until, why);
            publish(&ctx.recorder, &regarding, &on_sub).await;
            tell_tenant(ctx, owner, on_tenant).await;
        }
        SubscriptionChange::Renewed { from, until } => {
            let (on_sub, on_tenant) = renewal_notice(&name, product, *from, *until);
            publish(&ctx.recorder, &regarding, &on_sub).await;
            tell_tenant(ctx, owner, on_tenant).await;
        }
        SubscriptionChange::SharingChanged { added, removed } => {
            announce_sharing(ctx, sub, added, removed).await;
        }
    }
}

/// Announces a change of whom `sub` is shared with, on it and on the tenants added or removed.
async fn announce_sharing(ctx: &Context, sub: &Subscription, added: &[String], removed: &[String]) {
    let shared_with: Vec<&str> = sub.spec.shared_with.iter().map(|t| t.0.as_str()).collect();
    let (on_sub, on_tenants) = sharing_notice(
        &sub.name_any(),
        &sub.spec.product,
        &sub.spec.tenant_ref,
        &shared_with,
        added,
        removed,
        sub.spec.seats,
    );
    publish(&ctx.recorder, &sub.object_ref(&()), &on_sub).await;
    for (t, notice) in on_tenants {
        tell_tenant(ctx, &t, notice).await;
    }
}

/// Problems become Warning events when their condition turns on.
async fn warn_on_problems(ctx: &Context, sub: &Subscription, eval: &SubscriptionEvaluation) {
    let regarding = sub.object_ref(&());
    let previous = sub
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for c in &eval.status.conditions {
        if turned_on(previous, c, ConditionType::SeatLimitExceeded, true)
            || turned_on(previous, c, ConditionType::Ready, false)
            || turned_on(previous, c, ConditionType::Stalled, true)
        {
            if c.is(ConditionType::Stalled) {
                continue; // reported through Ready
            }
            publish(&ctx.recorder, &regarding, &problem_notice(c)).await;
        }
    }
}

/// How soon a reconcile that found its read stale runs again, should no watch event come.
const STALE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Writes `eval` as the status of `sub` when it changed. A status that records something (a
/// transfer with its time, a renewal, an extension, a change of sharing; each announced by an
/// Event) is written only if the stored subscription is still the one evaluated: the read's
/// resourceVersion is the write's precondition. The cache can lag behind this controller's own
/// last write, and a status computed from it would record the same transfer again, with a new
/// time (a second confirmation). Returns false when the read was stale (HTTP 409): nothing was
/// written, and nothing must be announced.
pub async fn write_status(
    client: &Client,
    sub: &Subscription,
    eval: &SubscriptionEvaluation,
    own_writes: &OwnWrites,
) -> Result<bool, Error> {
    let precondition = if eval.changes.is_empty() {
        None
    } else {
        sub.resource_version()
    };
    match apply_if_unchanged_since::<Subscription, _>(
        client,
        &sub.name_any(),
        sub.status.as_ref(),
        &eval.status,
        precondition.as_deref(),
    )
    .await
    {
        Ok(written) => {
            if let Some(written) = written {
                own_writes.record::<Subscription>(&sub.name_any(), written.resource_version());
            }
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 && precondition.is_some() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// True when condition `c` of `type_` now has the "problem" status and did not before.
fn turned_on(
    previous: &[Condition],
    c: &Condition,
    type_: ConditionType,
    problem_when_true: bool,
) -> bool {
    if !c.is(type_) || c.is_true() != problem_when_true {
        return false;
    }
    find(previous, type_).is_none_or(|p| p.is_true() != problem_when_true || p.reason != c.reason)
}

async fn tell_tenant(ctx: &Context, tenant: &str, notice: Notice) {
    if let Some(t) = ctx.tenant(tenant) {
        publish(&ctx.recorder, &t.object_ref(&()), &notice).await;
    }
}
