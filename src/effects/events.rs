//! Kubernetes Events for milestones and changes (`events.k8s.io/v1`): repeatable notices
//! through the one shared Recorder, milestone announcements through [`announce_milestone`]:
//! one Event per milestone, under a name derived from the milestone, so that publishing it
//! again is refused by the API server (409 AlreadyExists) instead of making a second Event.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use sha2::{Digest, Sha256};

use crate::api::labels::{
    MILESTONE_ANNOTATION, MILESTONE_EVENT_LABEL, SUSPENDED_REPLICAS_ANNOTATION, TENANT_LABEL,
};
use crate::api::{Condition, EventReason, MilestoneRecord, NotificationRecord};
use crate::engine::plan::WorkloadChange;
use crate::engine::{Milestone, MilestoneKind, human};
use crate::notifications::text::sanitize;
use crate::workloads::plan::Workload;

/// One Event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    /// CamelCase reason, shown by `kubectl describe`.
    pub reason: String,
    /// What happened and what to do.
    pub note: String,
    /// Distinguishes notices of the same reason (e.g. per product) so they are not folded
    /// into one event series by the recorder.
    pub action: String,
}

impl Notice {
    pub fn normal(reason: EventReason, action: &str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason: reason.as_str().into(),
            note: note.into(),
            action: action.into(),
        }
    }

    pub fn warning(reason: EventReason, action: &str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason: reason.as_str().into(),
            note: note.into(),
            action: action.into(),
        }
    }
}

/// The Event announcing a milestone.
pub fn milestone_notice(m: &Milestone) -> Notice {
    let note = if m.late {
        format!(
            "{} (announced late: it was due at {})",
            m.message,
            crate::engine::human_from(m.due_at)
        )
    } else {
        m.message.clone()
    };
    Notice {
        warning: m.kind.is_warning(),
        reason: milestone_reason(m.kind).as_str().to_string(),
        note,
        action: truncate(&m.id, 128),
    }
}

/// The reason of a milestone's Event: its kind, except for transfers, whose Events keep the
/// reasons they had when the Subscription controller published them.
pub fn milestone_reason(kind: MilestoneKind) -> EventReason {
    match kind {
        MilestoneKind::TransferredIn => EventReason::SubscriptionTransferredIn,
        MilestoneKind::TransferredOut => EventReason::SubscriptionTransferredOut,
        other => EventReason::Milestone(other),
    }
}

/// The id under which the milestones already due at first sight (recorded `alreadyDue` at
/// `announced_at`) are announced together: their Event's name derives from it.
pub fn already_due_id(announced_at: DateTime<Utc>) -> String {
    format!(
        "{}/{}",
        EventReason::MilestonesAlreadyDue,
        crate::api::date::format_instant(announced_at)
    )
}

/// The one Event of the milestones already due when the operator first saw a tenant
/// (`records`, in the order they were due): per service, what was due and when, and which
/// subscription to renew. Folded into one note of at most 1 KiB (the API server's limit).
pub fn already_due_notice(records: &[&MilestoneRecord]) -> Notice {
    let mut products: Vec<&str> = Vec::new();
    for r in records {
        let p = r.product.as_deref().unwrap_or("");
        if !products.contains(&p) {
            products.push(p);
        }
    }
    let services: Vec<String> = products
        .iter()
        .map(|&p| {
            let of_product: Vec<&&MilestoneRecord> = records
                .iter()
                .filter(|r| r.product.as_deref().unwrap_or("") == p)
                .collect();
            let reached: Vec<String> = of_product
                .iter()
                .map(|r| format!("{} since {}", r.kind, crate::engine::human_from(r.due_at)))
                .collect();
            let subscription = of_product
                .iter()
                .rev()
                .find_map(|r| r.subscription.as_deref())
                .map(|s| format!(", subscription {}", sanitize(s)))
                .unwrap_or_default();
            format!("{}: {}{subscription}", sanitize(p), reached.join(", "))
        })
        .collect();
    let note = format!(
        concat!(
            "First seen by the operator with {} milestones already due, announced together: {}. ",
            "The state of each service is in status.services; its administrators are notified ",
            "of its latest milestone."
        ),
        records.len(),
        services.join("; ")
    );
    let warning = records
        .iter()
        .any(|r| r.milestone_kind().is_none_or(MilestoneKind::is_warning));
    let reason = EventReason::MilestonesAlreadyDue;
    let mut notice = if warning {
        Notice::warning(reason, reason.as_str(), note)
    } else {
        Notice::normal(reason, reason.as_str(), note)
    };
    notice.note = truncate(&notice.note, 1024);
    notice
}

/// The Event of a milestone whose message is no longer at hand (it is no longer reached, so
/// the engine does not describe it again): what the record says.
pub fn record_notice(r: &MilestoneRecord) -> Notice {
    let kind = r.milestone_kind();
    let mut note = format!("{} reached", r.kind);
    if let Some(p) = &r.product {
        note.push_str(&format!(" for {p}"));
    }
    if let Some(s) = &r.subscription {
        note.push_str(&format!(" (subscription {s})"));
    }
    if let Some(peer) = &r.peer {
        note.push_str(&format!(", other tenant {peer}"));
    }
    note.push_str(&format!(
        ", due {}",
        crate::api::date::format_instant(r.due_at)
    ));
    Notice {
        warning: kind.is_none_or(MilestoneKind::is_warning),
        reason: kind.map_or_else(
            || r.kind.to_string(),
            |k| milestone_reason(k).as_str().to_string(),
        ),
        note,
        action: truncate(&r.id, 128),
    }
}

/// The Event of a subscription transferred from tenant `from` to tenant `to`, on the
/// subscription (on the tenants, the milestones TransferredOut and TransferredIn tell).
pub fn transfer_notice(subscription: &str, product: &str, from: &str, to: &str) -> Notice {
    Notice::normal(
        EventReason::Transferred,
        "Transfer",
        format!(
            "Subscription {subscription} ({product}) was transferred from tenant {from} to tenant {to}"
        ),
    )
}

/// The Events of a subscription extended from `from` until `until`: on the subscription, and
/// on its tenant. `why` is the reason the extension gives, if any.
pub fn extension_notice(
    subscription: &str,
    product: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    why: Option<&str>,
) -> (Notice, Notice) {
    let why = why.map(|r| format!(" ({r})")).unwrap_or_default();
    let note = format!(
        "Subscription {subscription} ({product}) extended from {} until {}{why}",
        human(from),
        human(until)
    );
    (
        Notice::normal(EventReason::Extended, "Extend", &note),
        Notice::normal(
            EventReason::SubscriptionExtended,
            &format!("Extend/{subscription}"),
            note,
        ),
    )
}

/// The Events of a subscription whose end moved from `from` to `until`: on the subscription,
/// and on its tenant.
pub fn renewal_notice(
    subscription: &str,
    product: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (Notice, Notice) {
    let note = format!(
        "Subscription {subscription} ({product}) now runs until {} instead of {}",
        human(until),
        human(from)
    );
    (
        Notice::normal(EventReason::EndDateMoved, "Renew", &note),
        Notice::normal(
            EventReason::SubscriptionRenewed,
            &format!("Renew/{subscription}"),
            note,
        ),
    )
}

/// The Events of a change of whom a subscription of tenant `owner` is shared with (now
/// `shared_with`): on the subscription, and for each tenant added or removed, that tenant with
/// its own.
pub fn sharing_notice(
    subscription: &str,
    product: &str,
    owner: &str,
    shared_with: &[&str],
    added: &[String],
    removed: &[String],
    seats: i64,
) -> (Notice, Vec<(String, Notice)>) {
    let note = format!(
        "Subscription {subscription} ({product}) of tenant {owner} is now shared with [{}] (added: [{}], removed: [{}]); the tenants share its {seats} seats",
        shared_with.join(", "),
        added.join(", "),
        removed.join(", "),
    );
    let action = format!("Share/{subscription}");
    let tenants = added
        .iter()
        .map(|t| {
            let n = Notice::normal(
                EventReason::SubscriptionShared,
                &action,
                format!("{note}: it now covers {t}"),
            );
            (t.clone(), n)
        })
        .chain(removed.iter().map(|t| {
            let n = Notice::normal(
                EventReason::SubscriptionUnshared,
                &action,
                format!("{note}: it no longer covers {t}"),
            );
            (t.clone(), n)
        }))
        .collect();
    (
        Notice::normal(EventReason::SharingChanged, "Share", note),
        tenants,
    )
}

/// The Warning Event of a tenant whose status could not be written (`error`: why).
pub fn status_write_failed_notice(error: &str) -> Notice {
    Notice::warning(
        EventReason::StatusWriteFailed,
        "WriteStatus",
        format!(
            "The operator could not write this tenant's status: {error}. Its workloads are still scaled to what its phase requires; the write is retried with backoff. If the object is near the API server's size limit, reduce spec.services[].settings (see docs/size-budget.md)."
        ),
    )
}

/// The Warning Event of a tenant whose deletion is held back; `message` is the engine's,
/// also written into the `Ready` condition.
pub fn deletion_blocked_notice(message: impl Into<String>) -> Notice {
    Notice::warning(EventReason::DeletionBlocked, "GuardDeletion", message)
}

/// The Warning Event on a workload labelled for `tenant` in a namespace not assigned to it.
pub fn namespace_not_assigned_notice(tenant: &str, w: &Workload) -> Notice {
    Notice::warning(
        EventReason::NamespaceNotAssigned,
        "Ignore",
        format!(
            "Labelled {TENANT_LABEL}={tenant}, but namespace {} is not assigned to tenant {tenant} (the Namespace has no label {TENANT_LABEL}={tenant}): the operator does not act on this {}",
            w.namespace, w.kind
        ),
    )
}

/// The Events on a tenant whose workloads were scaled: one each for those suspended, restored
/// and scaled back, in that order, for the kinds of change that occurred.
pub fn workloads_notice(changes: &[(&Workload, WorkloadChange)]) -> Vec<Notice> {
    let (mut suspended, mut restored, mut scaled_back) = (Vec::new(), Vec::new(), Vec::new());
    for (w, change) in changes {
        let what = format!("{} {}", w.kind, w.id());
        match *change {
            WorkloadChange::Suspended { was } => {
                suspended.push(format!("{what} (was {was} replicas)"))
            }
            WorkloadChange::Restored { to } => restored.push(format!("{what} (to {to} replicas)")),
            WorkloadChange::ScaledBack { was } => {
                scaled_back.push(format!("{what} (scaled to {was} while suspended)"))
            }
            WorkloadChange::None => {}
        }
    }
    let mut notices = Vec::new();
    if !suspended.is_empty() {
        notices.push(Notice::warning(
            EventReason::WorkloadsSuspended,
            "Suspend",
            format!(
                "Scaled to zero because the service is suspended (nothing deleted; the replica count is kept in the {SUSPENDED_REPLICAS_ANNOTATION} annotation): {}",
                suspended.join(", ")
            ),
        ));
    }
    if !restored.is_empty() {
        notices.push(Notice::normal(
            EventReason::WorkloadsRestored,
            "Restore",
            format!("Restored after renewal: {}", restored.join(", ")),
        ));
    }
    if !scaled_back.is_empty() {
        notices.push(Notice::warning(
            EventReason::WorkloadsScaledBack,
            "Suspend",
            format!(
                "Scaled back to zero: the service is suspended. If a GitOps tool re-applied these, tell it to ignore spec.replicas (see the README): {}",
                scaled_back.join(", ")
            ),
        ));
    }
    notices
}

/// The Warning Event of a notification that failed for the first time (`e`, as recorded),
/// retried every `retry_every`.
pub fn notification_failed_notice(e: &NotificationRecord, retry_every: TimeDelta) -> Notice {
    Notice::warning(
        EventReason::NotificationFailed,
        &truncate(&format!("Notify/{}", e.id), 128),
        format!(
            "Notification of milestone {} to {} ({}) failed {} times: {}. Still retrying every {}.",
            e.milestone,
            e.recipient,
            e.channel.as_str(),
            e.attempts,
            e.last_error.as_deref().unwrap_or("unknown error"),
            crate::engine::policy::format_period(retry_every)
        ),
    )
}

/// The Warning Event on an object of kind `kind` the operator can not decode (`error`: why);
/// its note is also the message of the object's `Stalled` condition.
pub fn unreadable_notice(kind: &str, error: &str) -> Notice {
    Notice::warning(
        EventReason::InvalidObject,
        "Decode",
        format!(
            "The operator can not read this {kind}: {error}. It is skipped until it is changed so that it can be read (other objects are not affected); if the operator read an earlier version, it keeps acting on that one. Objects stored before the CRD's validation bounds existed, or on a server without CEL validation, can be out of bounds: see docs/size-budget.md.",
            error = truncate(error, 512),
        ),
    )
}

/// The Event on a suspended workload whose tenant label was removed: given back its
/// `replicas`.
pub fn released_notice(replicas: i32) -> Notice {
    Notice::normal(
        EventReason::Released,
        "Release",
        format!(
            "The {TENANT_LABEL} label was removed while the workload was suspended: restored to {replicas} replicas and handed back"
        ),
    )
}

/// The Warning Event of a Subscription's problem condition that turned on: its reason is the
/// condition's (as stored, so also one written by another version).
pub fn problem_notice(c: &Condition) -> Notice {
    Notice {
        warning: true,
        reason: c.reason.to_string(),
        note: c.message.clone(),
        action: format!("Check/{}", c.type_),
    }
}

/// Namespace of the Events about cluster-scoped objects (Tenants).
pub const EVENT_NAMESPACE: &str = "default";

/// How long after a milestone was announced its Event is checked, and published again when
/// it is missing (the process died between the status write and the Event). Shorter than the
/// API server's Event time to live (`--event-ttl`, 1 h by default), so an Event that expired
/// is never published a second time.
pub const REPUBLISH_WINDOW: TimeDelta = TimeDelta::minutes(30);

/// The name of the Event of milestone `milestone_id` of `tenant`: `<tenant>.<24 hex digits of
/// the SHA-256 of the milestone id>` (the Recorder's names end in 16 hex digits of a time).
pub fn milestone_event_name(tenant: &str, milestone_id: &str) -> String {
    let digest = Sha256::digest(milestone_id.as_bytes());
    format!("{tenant}.{}", &hex::encode(digest)[..24])
}

/// Publishes the Event of a milestone under its own name ([`milestone_event_name`]) with a
/// plain create. Ok when it was created, and when it already exists (409): a milestone has
/// one Event, however often it is published.
pub async fn announce_milestone(
    client: &kube::Client,
    reporter: &Reporter,
    regarding: &ObjectReference,
    milestone_id: &str,
    notice: &Notice,
) -> Result<(), kube::Error> {
    let tenant = regarding.name.as_deref().unwrap_or_default();
    let mut event = k8s_event(reporter, regarding, notice);
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| EVENT_NAMESPACE.to_string());
    event.metadata = ObjectMeta {
        name: Some(milestone_event_name(tenant, milestone_id)),
        namespace: Some(namespace.clone()),
        labels: Some([(MILESTONE_EVENT_LABEL.to_string(), "true".to_string())].into()),
        annotations: Some([(MILESTONE_ANNOTATION.to_string(), milestone_id.to_string())].into()),
        ..Default::default()
    };
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The `events.k8s.io/v1` Event the Recorder would build for `notice` (without a name).
fn k8s_event(reporter: &Reporter, regarding: &ObjectReference, notice: &Notice) -> K8sEvent {
    let e = event_of(notice);
    K8sEvent {
        action: Some(e.action),
        reason: Some(e.reason),
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        regarding: Some(regarding.clone()),
        note: e.note,
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(if notice.warning { "Warning" } else { "Normal" }.to_string()),
        ..Default::default()
    }
}

/// Which milestone Events this process knows to exist, so that a reconcile checks (and
/// publishes) only those it does not know about: at rest, nothing.
///
/// Filled by the Events this process published (or found existing: 409), and, the first time a
/// process needs to know, by one list of the milestone Events (by label, metadata only, from
/// the API server's cache). An Event created by another process after that list is found by
/// its 409. Per tenant, only the Events of milestones announced within [`REPUBLISH_WINDOW`]
/// are kept.
#[derive(Default)]
pub struct MilestoneEvents {
    state: Mutex<KnownEvents>,
    listed: tokio::sync::OnceCell<()>,
}

/// The milestone Events known to exist, each name kept as 64 bits of its hash with keys drawn
/// for this process: names of 60-odd bytes took about 2 MB at 10,000 tenants, and a collision,
/// which nobody can aim for without the keys, would only take one Event for published.
#[derive(Default)]
struct KnownEvents {
    hasher: RandomState,
    /// Tenant → its milestone Events known to exist.
    by_tenant: HashMap<u64, Vec<u64>>,
    /// The Events the first list found, and when it was made; dropped once every milestone
    /// recorded before it is out of the window.
    listed: Option<(DateTime<Utc>, HashSet<u64>)>,
}

impl KnownEvents {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// Of `wanted` (the Events `tenant` should have), those not known to exist. Forgets what
    /// is no longer wanted.
    fn unknown(&mut self, tenant: &str, wanted: &[String], now: DateTime<Utc>) -> Vec<String> {
        if self
            .listed
            .as_ref()
            .is_some_and(|(at, _)| now - *at > REPUBLISH_WINDOW)
        {
            self.listed = None;
        }
        let tenant = self.hash(tenant);
        let wanted: Vec<(u64, &String)> = wanted.iter().map(|n| (self.hash(n), n)).collect();
        let mut known = self.by_tenant.remove(&tenant).unwrap_or_default();
        let mut unknown = Vec::new();
        for (hash, name) in &wanted {
            if known.contains(hash) {
                continue;
            }
            let found = self
                .listed
                .as_mut()
                .is_some_and(|(_, listed)| listed.remove(hash));
            if found {
                known.push(*hash);
            } else {
                unknown.push((*name).clone());
            }
        }
        known.retain(|h| wanted.iter().any(|(w, _)| w == h));
        if !known.is_empty() {
            known.shrink_to_fit();
            self.by_tenant.insert(tenant, known);
        }
        unknown
    }

    fn confirm(&mut self, tenant: &str, name: &str) {
        let (tenant, name) = (self.hash(tenant), self.hash(name));
        let known = self.by_tenant.entry(tenant).or_default();
        if !known.contains(&name) {
            known.reserve_exact(1);
            known.push(name);
        }
    }
}

impl MilestoneEvents {
    /// Of the milestone Events `tenant` should have (`wanted`, names), those not known to
    /// exist. The first call in a process that finds one it does not know lists the milestone
    /// Events once (when that list fails, the unknown ones are simply published: a 409 tells).
    pub async fn unconfirmed(
        &self,
        client: &kube::Client,
        tenant: &str,
        wanted: &[String],
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let unknown = self.lock().unknown(tenant, wanted, now);
        if unknown.is_empty() || self.listed.initialized() {
            return unknown;
        }
        let listed = self
            .listed
            .get_or_try_init(|| async {
                let api: Api<K8sEvent> = Api::namespaced(client.clone(), EVENT_NAMESPACE);
                // In pages: only the names are kept, and one list of a fleet's Events (with
                // their managedFields) decoded at once was the peak of a warm restart's memory.
                let mut params = ListParams::default()
                    .labels(&format!("{MILESTONE_EVENT_LABEL}=true"))
                    .limit(EVENT_LIST_PAGE);
                let mut names: HashSet<u64> = HashSet::new();
                loop {
                    let page = api.list_metadata(&params).await?;
                    let known = self.lock();
                    let found = page.items.iter().filter_map(|e| e.metadata.name.as_deref());
                    names.extend(found.map(|n| known.hash(n)));
                    drop(known);
                    match page.metadata.continue_ {
                        Some(token) if !token.is_empty() => {
                            params = params.continue_token(&token);
                        }
                        _ => break,
                    }
                }
                tracing::debug!(events = names.len(), "listed the milestone Events");
                self.lock().listed = Some((now, names));
                Ok::<_, kube::Error>(())
            })
            .await;
        if let Err(err) = listed {
            tracing::warn!(error = %err, "could not list the milestone Events");
            return unknown;
        }
        self.lock().unknown(tenant, wanted, now)
    }

    /// Notes that the Event `name` of `tenant` exists.
    pub fn confirm(&self, tenant: &str, name: &str) {
        self.lock().confirm(tenant, name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KnownEvents> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milestone Events read per request when listing them.
const EVENT_LIST_PAGE: u32 = 500;

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Publishes `notice` about `regarding` through the shared Recorder, which folds repeats of the
/// same notice into one Event series. Events are best-effort: a failure is logged, not retried
/// (the status already records what was announced; notifications have their own outbox).
pub async fn publish(recorder: &Recorder, regarding: &ObjectReference, notice: &Notice) {
    if let Err(err) = recorder.publish(&event_of(notice), regarding).await {
        tracing::warn!(reason = %notice.reason, object = ?regarding.name, error = %err, "could not publish event");
    }
}

fn event_of(notice: &Notice) -> Event {
    Event {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.clone(),
        note: Some(truncate(&sanitize(&notice.note), 1024)),
        action: notice.action.clone(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkloadKind;
    use chrono::TimeZone;

    /// A notice as `(warning, reason, action, note)`, to compare with a table row.
    type Parts<'a> = (bool, &'a str, &'a str, &'a str);

    fn parts(n: &Notice) -> Parts<'_> {
        (n.warning, &n.reason, &n.action, &n.note)
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn subscription_change_notices_keep_their_text() {
        let (from, until) = (at(2027, 1, 1, 0), at(2027, 3, 1, 12));
        let (ext, ext_tenant) = extension_notice(
            "globex-esg",
            "email-safeguard",
            from,
            until,
            Some("late PO"),
        );
        let (ext_plain, _) = extension_notice("globex-esg", "email-safeguard", from, until, None);
        let (renew, renew_tenant) = renewal_notice("globex-esg", "email-safeguard", from, until);
        let cases: &[(Notice, Parts)] = &[
            (
                transfer_notice("globex-esg", "email-safeguard", "globex", "initech"),
                (
                    false,
                    "Transferred",
                    "Transfer",
                    "Subscription globex-esg (email-safeguard) was transferred from tenant globex to tenant initech",
                ),
            ),
            (
                ext,
                (
                    false,
                    "Extended",
                    "Extend",
                    "Subscription globex-esg (email-safeguard) extended from the end of 31 Dec 2026 (UTC) until 2027-03-01 12:00 UTC (late PO)",
                ),
            ),
            (
                ext_tenant,
                (
                    false,
                    "SubscriptionExtended",
                    "Extend/globex-esg",
                    "Subscription globex-esg (email-safeguard) extended from the end of 31 Dec 2026 (UTC) until 2027-03-01 12:00 UTC (late PO)",
                ),
            ),
            (
                ext_plain,
                (
                    false,
                    "Extended",
                    "Extend",
                    "Subscription globex-esg (email-safeguard) extended from the end of 31 Dec 2026 (UTC) until 2027-03-01 12:00 UTC",
                ),
            ),
            (
                renew,
                (
                    false,
                    "EndDateMoved",
                    "Renew",
                    "Subscription globex-esg (email-safeguard) now runs until 2027-03-01 12:00 UTC instead of the end of 31 Dec 2026 (UTC)",
                ),
            ),
            (
                renew_tenant,
                (
                    false,
                    "SubscriptionRenewed",
                    "Renew/globex-esg",
                    "Subscription globex-esg (email-safeguard) now runs until 2027-03-01 12:00 UTC instead of the end of 31 Dec 2026 (UTC)",
                ),
            ),
        ];
        for (notice, want) in cases {
            assert_eq!(parts(notice), *want);
        }
    }

    #[test]
    fn sharing_notices_keep_their_text() {
        let note = "Subscription globex-esg (email-safeguard) of tenant globex is now shared with [initech, hooli] (added: [hooli], removed: [acme]); the tenants share its 50 seats";
        let (on_sub, on_tenants) = sharing_notice(
            "globex-esg",
            "email-safeguard",
            "globex",
            &["initech", "hooli"],
            &["hooli".to_string()],
            &["acme".to_string()],
            50,
        );
        assert_eq!(parts(&on_sub), (false, "SharingChanged", "Share", note));
        let cases = [
            (
                "hooli",
                "SubscriptionShared",
                format!("{note}: it now covers hooli"),
            ),
            (
                "acme",
                "SubscriptionUnshared",
                format!("{note}: it no longer covers acme"),
            ),
        ];
        assert_eq!(on_tenants.len(), cases.len());
        for ((tenant, notice), (want_tenant, reason, text)) in on_tenants.iter().zip(&cases) {
            assert_eq!(tenant, want_tenant);
            assert_eq!(
                parts(notice),
                (false, *reason, "Share/globex-esg", text.as_str())
            );
        }
    }

    fn workload(kind: WorkloadKind, namespace: &str, name: &str) -> Workload {
        Workload {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            product: None,
            replicas: Some(2),
            remembered: None,
            phase_label: None,
        }
    }

    #[test]
    fn tenant_notices_keep_their_text() {
        let filter = workload(WorkloadKind::Deployment, "globex-mail", "filter");
        let cases: &[(Notice, Parts)] = &[
            (
                status_write_failed_notice("request entity too large"),
                (
                    true,
                    "StatusWriteFailed",
                    "WriteStatus",
                    "The operator could not write this tenant's status: request entity too large. Its workloads are still scaled to what its phase requires; the write is retried with backoff. If the object is near the API server's size limit, reduce spec.services[].settings (see docs/size-budget.md).",
                ),
            ),
            (
                deletion_blocked_notice("Deletion refused: subscription globex-esg is in force"),
                (
                    true,
                    "DeletionBlocked",
                    "GuardDeletion",
                    "Deletion refused: subscription globex-esg is in force",
                ),
            ),
            (
                namespace_not_assigned_notice("globex", &filter),
                (
                    true,
                    "NamespaceNotAssigned",
                    "Ignore",
                    "Labelled mailsec.io/tenant=globex, but namespace globex-mail is not assigned to tenant globex (the Namespace has no label mailsec.io/tenant=globex): the operator does not act on this Deployment",
                ),
            ),
        ];
        for (notice, want) in cases {
            assert_eq!(parts(notice), *want);
        }
    }

    #[test]
    fn workload_notices_keep_their_text() {
        let a = workload(WorkloadKind::Deployment, "globex-mail", "filter");
        let b = workload(WorkloadKind::StatefulSet, "globex-mail", "quarantine");
        let suspended: Parts = (
            true,
            "WorkloadsSuspended",
            "Suspend",
            "Scaled to zero because the service is suspended (nothing deleted; the replica count is kept in the mailsec.io/suspended-replicas annotation): Deployment globex-mail/filter (was 2 replicas), StatefulSet globex-mail/quarantine (was 1 replicas)",
        );
        let restored: Parts = (
            false,
            "WorkloadsRestored",
            "Restore",
            "Restored after renewal: Deployment globex-mail/filter (to 3 replicas)",
        );
        let scaled_back: Parts = (
            true,
            "WorkloadsScaledBack",
            "Suspend",
            "Scaled back to zero: the service is suspended. If a GitOps tool re-applied these, tell it to ignore spec.replicas (see the README): StatefulSet globex-mail/quarantine (scaled to 4 while suspended)",
        );
        type Changes<'a> = Vec<(&'a Workload, WorkloadChange)>;
        let cases: &[(Changes, Vec<Parts>)] = &[
            (vec![], vec![]),
            (vec![(&a, WorkloadChange::None)], vec![]),
            (
                vec![
                    (&a, WorkloadChange::Suspended { was: 2 }),
                    (&b, WorkloadChange::Suspended { was: 1 }),
                ],
                vec![suspended],
            ),
            (
                vec![
                    (&b, WorkloadChange::ScaledBack { was: 4 }),
                    (&a, WorkloadChange::Restored { to: 3 }),
                ],
                vec![restored, scaled_back],
            ),
        ];
        for (changes, want) in cases {
            let notices = workloads_notice(changes);
            assert_eq!(notices.iter().map(parts).collect::<Vec<_>>(), *want);
        }
    }

    fn notification(id: &str, last_error: Option<&str>) -> NotificationRecord {
        NotificationRecord {
            id: id.into(),
            milestone: "ReadOnly/email-safeguard/2027-01-01T00:00:00Z".into(),
            channel: crate::api::NotificationChannel::Email,
            recipient: "admin@globex.example".into(),
            state: crate::api::NotificationState::Failed,
            attempts: 12,
            last_error: last_error.map(Into::into),
            last_attempt_at: None,
            next_attempt_at: None,
            delivered_at: None,
            late: false,
            delivery_id: None,
        }
    }

    #[test]
    fn notices_of_other_controllers_keep_their_text() {
        let long_id = "n".repeat(200);
        let long_action = format!("Notify/{}", "n".repeat(121));
        let cases: &[(Notice, Parts)] = &[
            (
                notification_failed_notice(
                    &notification("abc123", Some("550 mailbox unavailable")),
                    TimeDelta::minutes(10),
                ),
                (
                    true,
                    "NotificationFailed",
                    "Notify/abc123",
                    "Notification of milestone ReadOnly/email-safeguard/2027-01-01T00:00:00Z to admin@globex.example (Email) failed 12 times: 550 mailbox unavailable. Still retrying every 10m.",
                ),
            ),
            (
                notification_failed_notice(&notification(&long_id, None), TimeDelta::hours(36)),
                (
                    true,
                    "NotificationFailed",
                    &long_action,
                    "Notification of milestone ReadOnly/email-safeguard/2027-01-01T00:00:00Z to admin@globex.example (Email) failed 12 times: unknown error. Still retrying every 36h.",
                ),
            ),
            (
                unreadable_notice("Tenant", "spec.services: invalid type: string"),
                (
                    true,
                    "InvalidObject",
                    "Decode",
                    "The operator can not read this Tenant: spec.services: invalid type: string. It is skipped until it is changed so that it can be read (other objects are not affected); if the operator read an earlier version, it keeps acting on that one. Objects stored before the CRD's validation bounds existed, or on a server without CEL validation, can be out of bounds: see docs/size-budget.md.",
                ),
            ),
            (
                released_notice(3),
                (
                    false,
                    "Released",
                    "Release",
                    "The mailsec.io/tenant label was removed while the workload was suspended: restored to 3 replicas and handed back",
                ),
            ),
        ];
        for (notice, want) in cases {
            assert_eq!(parts(notice), *want);
        }
        // The decoder's error is cut, so the note stays within an Event's note.
        let long = unreadable_notice("Subscription", &"x".repeat(600));
        assert!(
            long.note
                .contains(&format!("{}. It is skipped", "x".repeat(512)))
        );
        assert!(!long.note.contains(&"x".repeat(513)));
    }

    #[test]
    fn problem_and_milestone_reasons_are_kept() {
        let c = Condition {
            type_: "Ready".into(),
            status: crate::api::ConditionStatus::False,
            reason: "TenantNotFound".into(),
            message: "Tenant globex does not exist".into(),
            last_transition_time: at(2027, 1, 1, 0),
            observed_generation: None,
        };
        assert_eq!(
            parts(&problem_notice(&c)),
            (
                true,
                "TenantNotFound",
                "Check/Ready",
                "Tenant globex does not exist"
            )
        );
        let cases = [
            (MilestoneKind::TransferredIn, "SubscriptionTransferredIn"),
            (MilestoneKind::TransferredOut, "SubscriptionTransferredOut"),
            (MilestoneKind::Suspended, "Suspended"),
            (MilestoneKind::PossibleDuplicate, "PossibleDuplicate"),
        ];
        for (kind, reason) in cases {
            assert_eq!(milestone_reason(kind).as_str(), reason);
        }
    }

    #[test]
    fn milestone_event_names_are_stable_valid_and_distinct() {
        let a = milestone_event_name("globex", "ReadOnly/email-safeguard/2027-01-01T00:00:00Z");
        assert_eq!(
            a,
            milestone_event_name("globex", "ReadOnly/email-safeguard/2027-01-01T00:00:00Z")
        );
        assert!(
            a.starts_with("globex.") && a.len() == "globex.".len() + 24,
            "{a}"
        );
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        );
        assert_ne!(
            a,
            milestone_event_name("globex", "Suspended/email-safeguard/2027-01-31T00:00:00Z")
        );
        // A 63-character tenant name still makes a valid object name (at most 253).
        assert!(milestone_event_name(&"t".repeat(63), "x").len() <= 253);
    }

    #[test]
    fn notes_carry_no_control_characters() {
        let e = event_of(&Notice::normal(
            EventReason::Extended,
            "Extend",
            "extended (reason: late PO\r\nBcc: x\u{202E}\0)",
        ));
        assert_eq!(e.note.as_deref(), Some("extended (reason: late PO Bcc: x)"));
    }

    #[test]
    fn milestones_already_due_are_one_notice_per_tenant_listing_each_service() {
        let t = |d: u32| Utc.with_ymd_and_hms(2027, 1, d, 0, 0, 0).unwrap();
        let record = |kind: &str, product: &str, due: u32, sub: &str| MilestoneRecord {
            id: format!("{kind}/{product}/{due}"),
            kind: kind.to_string().into(),
            product: Some(product.to_string().into()),
            due_at: t(due),
            announced_at: t(20),
            subscription: Some(sub.into()),
            peer: None,
            event_only: kind != "Suspended",
            already_due: true,
            effective_end_at: None,
            suspends_at: None,
        };
        let records = [
            record("ExpiringSoon", "email-safeguard", 1, "acme-esg"),
            record("ReadOnly", "email-safeguard", 2, "acme-esg"),
            record("Suspended", "email-safeguard", 3, "acme-esg"),
            record("ExpiringSoon", "email-archive", 4, "acme-arc"),
        ];
        let refs: Vec<&MilestoneRecord> = records.iter().collect();
        let n = already_due_notice(&refs);
        assert_eq!(n.reason, "MilestonesAlreadyDue");
        assert!(n.warning);
        assert_eq!(
            n.note,
            "First seen by the operator with 4 milestones already due, announced together: \
             email-safeguard: ExpiringSoon since the start of 1 Jan 2027 (UTC), ReadOnly since \
             the start of 2 Jan 2027 (UTC), Suspended since the start of 3 Jan 2027 (UTC), \
             subscription acme-esg; email-archive: ExpiringSoon since the start of 4 Jan 2027 \
             (UTC), subscription acme-arc. The state of each service is in status.services; \
             its administrators are notified of its latest milestone."
        );
        assert_eq!(
            already_due_id(t(20)),
            "MilestonesAlreadyDue/2027-01-20T00:00:00Z"
        );
        let many: Vec<MilestoneRecord> = (1..=28)
            .map(|d| {
                record(
                    "ReadOnly",
                    &format!("product-{d:02}-with-a-long-name"),
                    d,
                    "s",
                )
            })
            .collect();
        let refs: Vec<&MilestoneRecord> = many.iter().collect();
        assert!(already_due_notice(&refs).note.len() <= 1024);
    }

    #[test]
    fn a_lost_transfer_is_described_from_its_record() {
        let t = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let r = MilestoneRecord {
            id: "TransferredIn/globex-esg/2027-01-01T00:00:00Z".into(),
            kind: "TransferredIn".into(),
            product: Some("email-safeguard".into()),
            due_at: t,
            announced_at: t,
            subscription: Some("globex-esg".into()),
            peer: Some("initech".into()),
            event_only: false,
            already_due: false,
            effective_end_at: None,
            suspends_at: None,
        };
        let n = record_notice(&r);
        assert_eq!(n.reason, "SubscriptionTransferredIn");
        assert!(!n.warning);
        assert!(
            n.note.contains("globex-esg") && n.note.contains("initech"),
            "{}",
            n.note
        );
    }

    #[test]
    fn known_events_are_kept_per_tenant_within_the_window() {
        let now = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let mut k = KnownEvents::default();
        let wanted = vec!["t.a".to_string(), "t.b".to_string()];
        assert_eq!(k.unknown("t", &wanted, now), wanted, "nothing known yet");
        // The list found t.a; t.b is published.
        k.listed = Some((now, [k.hash("t.a")].into()));
        assert_eq!(k.unknown("t", &wanted, now), ["t.b"]);
        k.confirm("t", "t.b");
        assert!(
            k.unknown("t", &wanted, now).is_empty(),
            "at rest: nothing to do"
        );
        // t.a leaves the window: forgotten.
        assert!(k.unknown("t", &wanted[1..], now).is_empty());
        assert_eq!(k.by_tenant[&k.hash("t")].len(), 1);
        assert!(k.unknown("t", &[], now).is_empty());
        assert!(k.by_tenant.is_empty());
        // The list is dropped once everything it could tell is out of the window.
        k.listed = Some((now, [k.hash("u.a")].into()));
        let later = now + REPUBLISH_WINDOW + TimeDelta::seconds(1);
        assert_eq!(k.unknown("u", &["u.a".to_string()], later), ["u.a"]);
        assert!(k.listed.is_none());
    }
}
