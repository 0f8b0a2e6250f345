//! The notifier: a controller over the Tenant cache that delivers the milestones recorded in
//! `status.milestones` through the outbox in `status.notifications`.
//!
//! For each tenant: plan the outbox from the cache; when something is due or the outbox must
//! change, read the tenant fresh from the API server (the cache may not hold our own last write
//! yet), plan again, *claim* the due entries (attempts + 1, next attempt scheduled) with a write
//! that fails if the tenant changed since it was read, send, and record each outcome. A crash
//! between sending and recording leaves the entry claimed: it is sent again when its retry is
//! due, with the same Message-ID / delivery id, so the receiver can tell it is the same message.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::runtime::{Error, Next, Shared, requeue_at};
use crate::api::{
    MilestoneRecord, NotificationChannel, NotificationRecord, NotificationState, Tenant,
};
use crate::effects::events::{notification_failed_notice, publish};
use crate::notifications::outbox::{self, Recipient, Recorded};
use crate::notifications::record::{patch_outbox, with_entry};
use crate::notifications::smtp::{Envelope, build_message};
use crate::notifications::text::{self, Facts};
use crate::notifications::webhook::{Payload, PayloadMilestone, PayloadNextStep, PayloadTenant};
use crate::notifications::{NotifierConfig, NotifierStats, NotifyError};

/// What the notifier's reconciles share.
pub struct Notifier {
    pub ctx: Arc<Context>,
    pub config: NotifierConfig,
    /// `mailsec_notifications_total{channel,result}`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Shared for Notifier {
    fn context(&self) -> &Context {
        &self.ctx
    }
}

impl Notifier {
    /// The controllers' clock (real time or a time lapse), in whole milliseconds as the outbox
    /// records instants.
    fn now_ms(&self) -> DateTime<Utc> {
        let now = self.ctx.now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }

    /// When to look at the tenant again: right after the clock reads `next`.
    fn requeue(&self, next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Next {
        requeue_at(next, now, &self.ctx.clock)
    }
}

impl Notifier {
    /// Where this tenant's notifications go.
    fn recipients(&self, tenant: &Tenant) -> Vec<Recipient> {
        let mut out = Vec::new();
        if self.config.email.is_some() {
            out.extend(
                tenant
                    .spec
                    .admins
                    .iter()
                    .map(|a| Recipient::email(&a.email)),
            );
        }
        if self.config.webhook.is_some() {
            out.push(Recipient::webhook());
        }
        out
    }

    fn plan(&self, tenant: &Tenant, now: DateTime<Utc>) -> outbox::Plan {
        let status = tenant.status.clone().unwrap_or_default();
        let recipients = self.recipients(tenant);
        let name = tenant.name_any();
        let domain = self.config.domain();
        outbox::plan(&outbox::Input {
            tenant: &name,
            milestones: &status.milestones,
            existing: &status.notifications,
            recipients: &recipients,
            kinds: &self.config.kinds,
            domain: &domain,
            max_age: self.config.max_age,
            late_after: self.ctx.policy.late_after,
            now,
        })
    }

    /// What a milestone is about, with dates from its record (or, for records written before
    /// they carried dates, from the service's status).
    fn facts(&self, tenant: &Tenant, m: &MilestoneRecord) -> Option<Facts> {
        let kind = m.milestone_kind()?;
        let policy = &self.ctx.policy;
        let product = m
            .product
            .as_deref()
            .map_or_else(|| policy.catalogue.base.clone(), str::to_string);
        let service = tenant
            .status
            .as_ref()
            .and_then(|s| s.services.iter().find(|s| s.product == product));
        let name = tenant.name_any();
        Some(Facts {
            kind,
            milestone_id: m.id.clone(),
            // Without control characters: it is also the webhook's `tenant.displayName`.
            display_name: tenant
                .spec
                .display_name
                .as_deref()
                .map(text::sanitize)
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| name.clone()),
            tenant: name,
            base: policy.catalogue.is_base(&product),
            subscription: m
                .subscription
                .clone()
                .or_else(|| service.and_then(|s| s.subscription.clone())),
            due_at: m.due_at,
            effective_end_at: m
                .effective_end_at
                .or_else(|| service.and_then(|s| s.effective_end_at)),
            suspends_at: m
                .suspends_at
                .or_else(|| service.and_then(|s| s.suspends_at)),
            late: outbox::is_late(m, policy.late_after),
            peer: m.peer.clone(),
            product,
        })
    }

    /// Delivers one entry. The error text is what `lastError` shows.
    async fn deliver(&self, tenant: &Tenant, entry: &NotificationRecord) -> Result<(), String> {
        let status = tenant.status.as_ref();
        let record = status
            .and_then(|s| s.milestones.iter().find(|m| m.id == entry.milestone))
            .ok_or_else(|| format!("milestone {} is no longer recorded", entry.milestone))?;
        let facts = self
            .facts(tenant, record)
            .ok_or_else(|| format!("unknown milestone kind {}", record.kind))?;
        let locale = tenant.spec.locale;
        let delivery_id = entry.delivery_id.clone().unwrap_or_else(|| {
            outbox::delivery_id(
                &facts.tenant,
                &entry.milestone,
                &Recipient {
                    channel: entry.channel,
                    address: entry.recipient.clone(),
                },
                &self.config.domain(),
            )
        });
        match entry.channel {
            NotificationChannel::Email => {
                let email = self
                    .config
                    .email
                    .as_ref()
                    .ok_or("e-mail is not configured (--smtp-url)")?;
                let admin = tenant
                    .spec
                    .admins
                    .iter()
                    .find(|a| a.email == entry.recipient);
                let name = admin
                    .and_then(|a| a.name.as_deref())
                    .map(text::sanitize)
                    .filter(|n| !n.is_empty());
                let name = name.as_deref();
                let text = text::render(locale, &facts, name);
                let message = build_message(
                    &Envelope {
                        from: &email.from,
                        reply_to: email.reply_to.as_ref(),
                        to_address: &entry.recipient,
                        to_name: name,
                        message_id: &delivery_id,
                        tenant: &facts.tenant,
                        milestone: &entry.milestone,
                    },
                    &text,
                )
                .map_err(|e| e.to_string())?;
                email.mailer.send(message).await.map_err(|e| e.to_string())
            }
            NotificationChannel::Webhook => {
                let hook = self
                    .config
                    .webhook
                    .as_ref()
                    .ok_or("the webhook is not configured (--webhook-url)")?;
                let text = text::render(locale, &facts, None);
                let payload = Payload {
                    api_version: "mailsec.io/v1alpha1",
                    kind: "MilestoneNotification",
                    delivery_id,
                    tenant: PayloadTenant {
                        name: facts.tenant.clone(),
                        display_name: facts.display_name.clone(),
                        locale,
                    },
                    milestone: PayloadMilestone {
                        id: record.id.clone(),
                        kind: record.kind.to_string(),
                        product: facts.product.clone(),
                        product_name: text::product_name(&facts.product),
                        base: facts.base,
                        subscription: facts.subscription.clone(),
                        due_at: record.due_at,
                        announced_at: record.announced_at,
                        late: facts.late,
                        effective_end_at: facts.effective_end_at,
                        suspends_at: facts.suspends_at,
                    },
                    next_step: text::next_step(&facts).map(PayloadNextStep::from_step),
                    hint: String::new(),
                    subject: String::new(),
                    text: String::new(),
                    admins: tenant.spec.admins.iter().map(|a| a.email.clone()).collect(),
                }
                .with_text(&text);
                hook.send(&payload)
                    .await
                    .map_err(|e: NotifyError| e.to_string())
            }
        }
    }
}

/// The earliest retry among entries not delivered, and `also`.
fn next_wake(
    entries: &[NotificationRecord],
    also: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    entries
        .iter()
        .filter(|e| e.state != NotificationState::Delivered)
        .filter_map(|e| e.next_attempt_at)
        .chain(also)
        .filter(|t| *t > now)
        .min()
}

pub async fn reconcile(tenant: Arc<Tenant>, n: Arc<Notifier>) -> Result<Next, Error> {
    let name = tenant.name_any();
    let now = n.now_ms();
    let cached = n.plan(&tenant, now);
    let existing = tenant
        .status
        .as_ref()
        .map(|s| s.notifications.as_slice())
        .unwrap_or_default();
    if cached.due.is_empty() && !cached.changes(existing) {
        return Ok(n.requeue(cached.next_wake, now));
    }

    // Something to do: act on the tenant as stored, not on a cache that may lag behind our own
    // last write (which would send again what was just delivered).
    let api: Api<Tenant> = Api::all(n.ctx.client.clone());
    let Some(fresh) = api.get_opt(&name).await? else {
        return Ok(Next::OnChange);
    };
    let now = n.now_ms();
    let plan = n.plan(&fresh, now);
    for id in &plan.dropped_undelivered {
        tracing::warn!(tenant = %name, notification = %id, "dropping a notification that was not delivered: its milestone is no longer recorded or its recipient is no longer an admin");
    }
    let existing = fresh
        .status
        .as_ref()
        .map(|s| s.notifications.as_slice())
        .unwrap_or_default();
    let read_version = fresh.resource_version();
    if plan.due.is_empty() {
        if plan.changes(existing) {
            patch_outbox(
                &api,
                &name,
                existing,
                &plan.entries,
                read_version.as_deref(),
            )
            .await?;
        }
        return Ok(n.requeue(next_wake(&plan.entries, plan.next_wake, now), now));
    }

    // Claim: recorded before anything is sent.
    let retry = n.config.retry;
    let mut entries = plan.entries.clone();
    for e in entries.iter().filter(|e| plan.due.contains(&e.id)) {
        if e.attempts > 0 && e.last_error.is_none() {
            NotifierStats::add(&n.config.stats.repeated_after_interruption);
            tracing::warn!(tenant = %name, notification = %e.id, delivery_id = ?e.delivery_id, attempts = e.attempts, "the previous attempt's outcome was never recorded (the operator stopped while sending): sending again with the same id");
        }
    }
    outbox::claim(&mut entries, &plan.due, now, &retry);
    // A claim always changes the entries it claims, so it is always written; the fallback only
    // keeps the types honest.
    let claimed = patch_outbox(&api, &name, existing, &entries, read_version.as_deref())
        .await?
        .unwrap_or_else(|| fresh.clone());
    // The list as last written: outcomes are recorded entry by entry against it.
    let mut stored: Vec<NotificationRecord> = claimed
        .status
        .as_ref()
        .map(|s| s.notifications.clone())
        .unwrap_or_default();

    // Send (a few at a time), recording each outcome as it comes.
    let tenant_now = Arc::new(claimed);
    let jobs: Vec<NotificationRecord> = entries
        .iter()
        .filter(|e| plan.due.contains(&e.id))
        .cloned()
        .collect();
    let mut results = futures::stream::iter(jobs)
        .map(|entry| {
            let n = n.clone();
            let t = tenant_now.clone();
            async move {
                let outcome = n.deliver(&t, &entry).await;
                (entry.id, outcome)
            }
        })
        .buffer_unordered(n.config.parallel.max(1));
    let regarding = tenant.object_ref(&());
    let mut failed_events = Vec::new();
    let mut write_error = None;
    while let Some((id, outcome)) = results.next().await {
        let Some(entry) = entries.iter_mut().find(|e| e.id == id) else {
            continue;
        };
        let stats = &n.config.stats;
        match &outcome {
            Ok(()) => {
                stats.delivered(entry.channel, entry.late);
                n.metrics
                    .notification(&entry.channel.as_str().to_lowercase(), "delivered");
                tracing::info!(tenant = %name, notification = %id, delivery_id = ?entry.delivery_id, attempts = entry.attempts, late = entry.late, "notification delivered");
            }
            Err(e) => {
                NotifierStats::add(&stats.attempts_failed);
                n.metrics
                    .notification(&entry.channel.as_str().to_lowercase(), "failed");
                tracing::warn!(tenant = %name, notification = %id, attempts = entry.attempts, error = %e, "notification attempt failed");
            }
        }
        let recorded = outbox::record(entry, outcome, n.now_ms(), &retry);
        if recorded == Recorded::NewlyFailed {
            NotifierStats::add(&n.config.stats.marked_failed);
            failed_events.push(entry.clone());
        }
        // Record at once, so a crash later loses as little as possible.
        if let Err(e) = record_outcome(&api, &name, &mut stored, entry).await {
            write_error = Some(e);
        }
    }
    // Events after the state is stored: one per entry, when it first fails.
    for e in failed_events {
        publish(
            &n.ctx.recorder,
            &regarding,
            &notification_failed_notice(&e, retry.cap),
        )
        .await;
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    let now = n.now_ms();
    Ok(n.requeue(next_wake(&entries, plan.next_wake, now), now))
}

/// Records one entry's outcome: a write of that entry only, against `stored` (the list as last
/// written, kept up to date here). Retried a little, reading the list again in between in case it
/// changed (another notifier after a leader change): a lost record means the message is sent
/// again (with the same id).
async fn record_outcome(
    api: &Api<Tenant>,
    name: &str,
    stored: &mut Vec<NotificationRecord>,
    entry: &NotificationRecord,
) -> Result<(), Error> {
    let mut wait = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        if !stored.iter().any(|s| s.id == entry.id) {
            tracing::warn!(tenant = %name, notification = %entry.id, "the entry is no longer in the outbox: its outcome is not recorded");
            return Ok(());
        }
        let desired = with_entry(stored, entry);
        match patch_outbox(api, name, stored, &desired, None).await {
            Ok(written) => {
                if let Some(t) = written {
                    *stored = t.status.map(|s| s.notifications).unwrap_or_default();
                }
                return Ok(());
            }
            Err(e) if tries < 4 => {
                tracing::warn!(tenant = %name, error = %e, "could not record a notification outcome; retrying");
                tries += 1;
                tokio::time::sleep(wait).await;
                wait *= 2;
                match api.get_opt(name).await {
                    Ok(Some(t)) => {
                        *stored = t.status.map(|s| s.notifications).unwrap_or_default();
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(tenant = %name, error = %e, "could not read the tenant again")
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
