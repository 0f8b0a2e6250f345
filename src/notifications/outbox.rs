//! The outbox, as pure functions: which notifications a tenant's milestones call for, which are
//! due now, and how an attempt's outcome is recorded. The notifier controller writes what these
//! return to `status.notifications`; nothing here reads a clock or does I/O.
//!
//! One entry per milestone × channel × recipient, id `<milestone id>/<channel>/<recipient>`.
//! The life of an entry:
//! - created `Pending` (attempts 0, due now) when a milestone of an enabled kind is recorded in
//!   `status.milestones` and was announced less than `max_age` ago;
//! - before each attempt it is *claimed*: attempts + 1, `lastAttemptAt`, and `nextAttemptAt` set
//!   to when a retry is due should nothing be recorded after the attempt (a crash);
//! - after the attempt: `Delivered` (with `deliveredAt`), or the error in `lastError`, and
//!   `Failed` once `failed_after` attempts have failed (still retried, at the longest interval);
//! - removed once its milestone is no longer recorded, or, delivered, once the milestone was
//!   announced more than `max_age` ago (so the outbox stays small). Entries that were not
//!   delivered to a recipient who is no longer configured (an admin removed) are dropped too.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use crate::api::{MilestoneRecord, NotificationChannel, NotificationRecord, NotificationState};
use crate::engine::MilestoneKind;

/// Where notifications go: one e-mail address, or the webhook.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Recipient {
    pub channel: NotificationChannel,
    /// The e-mail address, or [`WEBHOOK_RECIPIENT`].
    pub address: String,
}

/// The recipient name of webhook entries.
pub const WEBHOOK_RECIPIENT: &str = "webhook";

impl Recipient {
    pub fn email(address: &str) -> Self {
        Self {
            channel: NotificationChannel::Email,
            address: address.to_string(),
        }
    }

    pub fn webhook() -> Self {
        Self {
            channel: NotificationChannel::Webhook,
            address: WEBHOOK_RECIPIENT.to_string(),
        }
    }
}

/// When failed attempts are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Wait after the first failed attempt; doubled after each further one.
    pub base: TimeDelta,
    /// The longest wait (also the interval of `Failed` entries).
    pub cap: TimeDelta,
    /// After this many failed attempts an entry is marked `Failed` (and still retried).
    pub failed_after: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            base: TimeDelta::seconds(10),
            cap: TimeDelta::minutes(10),
            failed_after: 8,
        }
    }
}

impl Retry {
    /// The wait before the next attempt once `attempts` attempts have been made:
    /// base, 2 × base, 4 × base, ... up to the cap.
    pub fn delay(&self, attempts: u32) -> TimeDelta {
        let doublings = attempts.saturating_sub(1).min(30);
        self.base
            .checked_mul(1i32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// What [`plan`] looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The tenant's name (part of every delivery id).
    pub tenant: &'a str,
    /// `status.milestones`.
    pub milestones: &'a [MilestoneRecord],
    /// `status.notifications`.
    pub existing: &'a [NotificationRecord],
    /// Where this tenant's notifications go (admins × configured channels).
    pub recipients: &'a [Recipient],
    /// The milestone kinds that are notified.
    pub kinds: &'a BTreeSet<MilestoneKind>,
    /// The domain of `Message-ID`s (the sender's domain).
    pub domain: &'a str,
    /// Milestones announced longer ago are not notified any more (and delivered entries of them
    /// are dropped).
    pub max_age: TimeDelta,
    /// A milestone announced this long after it was due is marked late.
    pub late_after: TimeDelta,
    pub now: DateTime<Utc>,
}

/// What [`plan`] answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The outbox as it should be stored (existing entries kept in order, new ones appended).
    pub entries: Vec<NotificationRecord>,
    /// Ids of the entries to attempt now.
    pub due: Vec<String>,
    /// Entries dropped before they were delivered (their milestone is gone or their recipient
    /// is no longer configured), for the log.
    pub dropped_undelivered: Vec<String>,
    /// When something is due next (a retry, or a delivered entry to forget).
    pub next_wake: Option<DateTime<Utc>>,
}

impl Plan {
    /// True when `entries` differ from what is stored.
    pub fn changes(&self, existing: &[NotificationRecord]) -> bool {
        self.entries.as_slice() != existing
    }
}

/// The id of an entry.
pub fn entry_id(milestone: &str, recipient: &Recipient) -> String {
    format!(
        "{milestone}/{}/{}",
        recipient.channel.as_str(),
        recipient.address
    )
}

/// The stable delivery id of a milestone to a recipient: an e-mail `Message-ID`
/// (`<hex@domain>`), or the webhook's `X-Mailsec-Delivery` (`hex`). The same tenant, milestone
/// and recipient always give the same id, so a repeated delivery can be recognised.
pub fn delivery_id(tenant: &str, milestone: &str, recipient: &Recipient, domain: &str) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(milestone.as_bytes());
    h.update([0]);
    h.update(recipient.channel.as_str().as_bytes());
    h.update([0]);
    h.update(recipient.address.to_ascii_lowercase().as_bytes());
    let hex = hex::encode(&h.finalize()[..16]);
    match recipient.channel {
        NotificationChannel::Email => format!("<mailsec.{hex}@{domain}>"),
        NotificationChannel::Webhook => format!("mailsec.{hex}"),
    }
}

/// Whether a milestone was announced late.
pub fn is_late(m: &MilestoneRecord, late_after: TimeDelta) -> bool {
    m.announced_at - m.due_at > late_after
}

/// Computes the outbox for a tenant.
pub fn plan(input: &Input<'_>) -> Plan {
    let now = input.now;
    let horizon = now - input.max_age;
    let milestones: BTreeMap<&str, &MilestoneRecord> = input
        .milestones
        .iter()
        .map(|m| (m.id.as_str(), m))
        .collect();
    let configured: BTreeSet<(NotificationChannel, &str)> = input
        .recipients
        .iter()
        .map(|r| (r.channel, r.address.as_str()))
        .collect();

    let mut out = Plan::default();
    let mut wake: Vec<DateTime<Utc>> = Vec::new();
    let mut known: BTreeSet<String> = BTreeSet::new();

    // Bounded (`api::bounds::MAX_NOTIFICATIONS`): entries beyond it (only in an outbox written
    // before the bound) are not kept, and new ones wait until delivered entries are dropped.
    let max = crate::api::bounds::MAX_NOTIFICATIONS;
    for e in input.existing.iter().take(max) {
        known.insert(e.id.clone());
        let milestone = milestones.get(e.milestone.as_str());
        let delivered = e.state == NotificationState::Delivered;
        let recipient_known = configured.contains(&(e.channel, e.recipient.as_str()));
        let keep = match milestone {
            None => false,
            Some(_) if !delivered => recipient_known,
            Some(m) => m.announced_at >= horizon,
        };
        if !keep {
            if !delivered {
                out.dropped_undelivered.push(e.id.clone());
            }
            continue;
        }
        if delivered {
            if let Some(m) = milestone {
                wake.push(m.announced_at + input.max_age);
            }
        } else {
            match e.next_attempt_at {
                Some(t) if t > now => wake.push(t),
                _ => out.due.push(e.id.clone()),
            }
        }
        out.entries.push(e.clone());
    }

    for m in input.milestones {
        let Some(kind) = m.milestone_kind() else {
            continue;
        };
        if !input.kinds.contains(&kind) || m.event_only || m.announced_at < horizon {
            continue;
        }
        for r in input.recipients {
            let id = entry_id(&m.id, r);
            if known.contains(&id) || out.entries.len() >= max {
                continue;
            }
            known.insert(id.clone());
            out.due.push(id.clone());
            out.entries.push(NotificationRecord {
                late: is_late(m, input.late_after),
                delivery_id: Some(delivery_id(input.tenant, &m.id, r, input.domain)),
                ..NotificationRecord::pending(id, &m.id, r.channel, &r.address)
            });
        }
    }
    out.next_wake = wake.into_iter().filter(|t| *t > now).min();
    out
}

/// Claims the entries `due` for an attempt at `now`: attempts + 1, `lastAttemptAt`, and the
/// next attempt scheduled as if this one will fail (so a crash during it is retried then).
pub fn claim(
    entries: &mut [NotificationRecord],
    due: &[String],
    now: DateTime<Utc>,
    retry: &Retry,
) {
    for e in entries.iter_mut().filter(|e| due.contains(&e.id)) {
        e.attempts = e.attempts.saturating_add(1);
        e.last_attempt_at = Some(now);
        let wait = if e.state == NotificationState::Failed {
            retry.cap
        } else {
            retry.delay(e.attempts)
        };
        e.next_attempt_at = Some(now + wait);
    }
}

/// What became of an entry after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Delivered,
    /// Failed again, still `Pending`.
    Retrying,
    /// Failed, and now marked `Failed` for the first time (tell people once).
    NewlyFailed,
    /// Failed, and was already `Failed`.
    StillFailed,
}

/// Records the outcome of the attempt claimed at `claimed_at`.
pub fn record(
    entry: &mut NotificationRecord,
    outcome: Result<(), String>,
    now: DateTime<Utc>,
    retry: &Retry,
) -> Recorded {
    match outcome {
        Ok(()) => {
            entry.state = NotificationState::Delivered;
            entry.delivered_at = Some(now);
            entry.next_attempt_at = None;
            entry.last_error = None;
            Recorded::Delivered
        }
        Err(error) => {
            // Cut to 512 bytes as stored JSON (the schema's bound; docs/size-budget.md).
            entry.last_error = Some(crate::api::bounds::truncate_json(&error, 512));
            let was_failed = entry.state == NotificationState::Failed;
            if was_failed || entry.attempts >= retry.failed_after {
                entry.state = NotificationState::Failed;
                // Keep trying at the longest interval: an outage must end in delivery.
                let from = entry.last_attempt_at.unwrap_or(now);
                entry.next_attempt_at = Some(from + retry.cap);
                if was_failed {
                    Recorded::StillFailed
                } else {
                    Recorded::NewlyFailed
                }
            } else {
                Recorded::Retrying
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn milestone(kind: &str, due: i64, announced: i64) -> MilestoneRecord {
        MilestoneRecord {
            id: format!("{kind}/email-safeguard/{due}"),
            kind: kind.to_string().into(),
            product: Some("email-safeguard".into()),
            due_at: t(due),
            announced_at: t(announced),
            subscription: Some("s".into()),
            peer: None,
            event_only: false,
            already_due: false,
            effective_end_at: None,
            suspends_at: None,
        }
    }

    fn default_kinds() -> BTreeSet<MilestoneKind> {
        [
            MilestoneKind::ExpiringSoon,
            MilestoneKind::ReadOnly,
            MilestoneKind::Suspended,
            MilestoneKind::Renewed,
        ]
        .into_iter()
        .collect()
    }

    fn input<'a>(
        milestones: &'a [MilestoneRecord],
        existing: &'a [NotificationRecord],
        recipients: &'a [Recipient],
        kinds: &'a BTreeSet<MilestoneKind>,
        now: i64,
    ) -> Input<'a> {
        Input {
            tenant: "globex",
            milestones,
            existing,
            recipients,
            kinds,
            domain: "ops.example",
            max_age: TimeDelta::days(7),
            late_after: TimeDelta::hours(1),
            now: t(now),
        }
    }

    fn admins() -> Vec<Recipient> {
        vec![
            Recipient::email("a@globex.example"),
            Recipient::email("b@globex.example"),
            Recipient::webhook(),
        ]
    }

    /// 64 administrators and the webhook, 10 milestones at once: the outbox stays within its
    /// bound, and the rest is created as delivered entries are dropped.
    #[test]
    fn the_outbox_stays_within_its_bound() {
        let kinds = default_kinds();
        let mut recipients: Vec<Recipient> = (0..64)
            .map(|i| Recipient::email(&format!("admin{i}@globex.example")))
            .collect();
        recipients.push(Recipient::webhook());
        let milestones: Vec<MilestoneRecord> =
            (0..10).map(|i| milestone("ExpiringSoon", i, i)).collect();
        let first = plan(&input(&milestones, &[], &recipients, &kinds, 20));
        let max = crate::api::bounds::MAX_NOTIFICATIONS;
        assert_eq!(first.entries.len(), max);
        assert_eq!(first.due.len(), max);
        // The first milestones' entries are delivered and forgotten: the next ones come in.
        let later = plan(&input(
            &milestones[8..],
            &first.entries,
            &recipients,
            &kinds,
            30,
        ));
        assert_eq!(later.entries.len(), max);
        assert!(
            later
                .entries
                .iter()
                .any(|e| e.milestone == milestones[9].id)
        );
    }

    /// Table: given milestones, recipients, enabled kinds and stored entries → what is created,
    /// what is due, what is dropped.
    #[test]
    fn planning_table() {
        let kinds = default_kinds();
        let recipients = admins();
        let expiring = milestone("ExpiringSoon", 0, 0);
        let trial = milestone("TrialLicense", 0, 0);
        let late = milestone("ReadOnly", 0, 7200);
        let old = milestone("ExpiringSoon", -30 * 86_400, -30 * 86_400);
        let fresh = plan(&input(
            std::slice::from_ref(&expiring),
            &[],
            &recipients,
            &kinds,
            5,
        ));
        let delivered: Vec<NotificationRecord> = fresh
            .entries
            .iter()
            .cloned()
            .map(|mut e| {
                e.state = NotificationState::Delivered;
                e.attempts = 1;
                e.delivered_at = Some(t(6));
                e
            })
            .collect();
        let mut retrying = fresh.entries.clone();
        claim(&mut retrying, &fresh.due, t(5), &Retry::default());

        struct Case<'a> {
            what: &'a str,
            milestones: Vec<MilestoneRecord>,
            existing: Vec<NotificationRecord>,
            recipients: Vec<Recipient>,
            now: i64,
            entries: usize,
            due: usize,
            dropped: usize,
        }
        let cases = [
            Case {
                what: "a new milestone: one entry per admin and the webhook, all due",
                milestones: vec![expiring.clone()],
                existing: vec![],
                recipients: recipients.clone(),
                now: 5,
                entries: 3,
                due: 3,
                dropped: 0,
            },
            Case {
                what: "a kind that is not enabled: nothing",
                milestones: vec![trial.clone()],
                existing: vec![],
                recipients: recipients.clone(),
                now: 5,
                entries: 0,
                due: 0,
                dropped: 0,
            },
            Case {
                what: "announced longer ago than max_age (history when first enabled): nothing",
                milestones: vec![old.clone()],
                existing: vec![],
                recipients: recipients.clone(),
                now: 5,
                entries: 0,
                due: 0,
                dropped: 0,
            },
            Case {
                what: "already delivered: kept, nothing due",
                milestones: vec![expiring.clone()],
                existing: delivered.clone(),
                recipients: recipients.clone(),
                now: 60,
                entries: 3,
                due: 0,
                dropped: 0,
            },
            Case {
                what: "delivered, and the milestone is older than max_age: forgotten",
                milestones: vec![expiring.clone()],
                existing: delivered.clone(),
                recipients: recipients.clone(),
                now: 8 * 86_400,
                entries: 0,
                due: 0,
                dropped: 0,
            },
            Case {
                what: "delivered, and the milestone is no longer recorded: forgotten",
                milestones: vec![],
                existing: delivered.clone(),
                recipients: recipients.clone(),
                now: 60,
                entries: 0,
                due: 0,
                dropped: 0,
            },
            Case {
                what: "claimed, retry not due yet: nothing due",
                milestones: vec![expiring.clone()],
                existing: retrying.clone(),
                recipients: recipients.clone(),
                now: 6,
                entries: 3,
                due: 0,
                dropped: 0,
            },
            Case {
                what: "claimed, retry due (a crash, or a failure): due again",
                milestones: vec![expiring.clone()],
                existing: retrying.clone(),
                recipients: recipients.clone(),
                now: 16,
                entries: 3,
                due: 3,
                dropped: 0,
            },
            Case {
                what: "pending for an admin who was removed: dropped",
                milestones: vec![expiring.clone()],
                existing: retrying.clone(),
                recipients: vec![Recipient::email("a@globex.example")],
                now: 16,
                entries: 1,
                due: 1,
                dropped: 2,
            },
            Case {
                what: "a new admin: only they get the milestone now",
                milestones: vec![expiring.clone()],
                existing: delivered.clone(),
                recipients: {
                    let mut r = recipients.clone();
                    r.push(Recipient::email("c@globex.example"));
                    r
                },
                now: 60,
                entries: 4,
                due: 1,
                dropped: 0,
            },
            Case {
                what: "a milestone announced late (operator was down): due, marked late",
                milestones: vec![late.clone()],
                existing: vec![],
                recipients: recipients.clone(),
                now: 7201,
                entries: 3,
                due: 3,
                dropped: 0,
            },
        ];
        for c in cases {
            let p = plan(&input(
                &c.milestones,
                &c.existing,
                &c.recipients,
                &kinds,
                c.now,
            ));
            assert_eq!(
                p.entries.len(),
                c.entries,
                "{}: entries {:#?}",
                c.what,
                p.entries
            );
            assert_eq!(p.due.len(), c.due, "{}: due {:?}", c.what, p.due);
            assert_eq!(p.dropped_undelivered.len(), c.dropped, "{}", c.what);
            for id in &p.due {
                assert!(
                    p.entries.iter().any(|e| &e.id == id),
                    "{}: due {id} is kept",
                    c.what
                );
            }
        }
        let late_plan = plan(&input(
            std::slice::from_ref(&late),
            &[],
            &recipients,
            &kinds,
            7201,
        ));
        assert!(late_plan.entries.iter().all(|e| e.late));
        assert!(fresh.entries.iter().all(|e| !e.late));
    }

    /// A possible duplicate is notified by the tenant in use only: the other tenant records it
    /// `eventOnly`, and that record is never notified, even with the kind enabled.
    #[test]
    fn event_only_milestones_are_not_notified() {
        let kinds: BTreeSet<MilestoneKind> = [MilestoneKind::PossibleDuplicate].into();
        let recipients = admins();
        let notified = milestone("PossibleDuplicate", 0, 0);
        let mut quiet = notified.clone();
        quiet.event_only = true;
        let p = plan(&input(
            std::slice::from_ref(&notified),
            &[],
            &recipients,
            &kinds,
            5,
        ));
        assert_eq!(p.entries.len(), 3);
        let p = plan(&input(
            std::slice::from_ref(&quiet),
            &[],
            &recipients,
            &kinds,
            5,
        ));
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn ids_and_delivery_ids_are_stable_per_milestone_and_recipient() {
        let kinds = default_kinds();
        let recipients = admins();
        let m = [milestone("ReadOnly", 0, 0)];
        let a = plan(&input(&m, &[], &recipients, &kinds, 1));
        let b = plan(&input(&m, &[], &recipients, &kinds, 999));
        assert_eq!(
            a.entries, b.entries,
            "nothing in an entry depends on the time of planning"
        );
        let e = &a.entries[0];
        assert_eq!(e.id, "ReadOnly/email-safeguard/0/Email/a@globex.example");
        let mid = e.delivery_id.as_deref().unwrap();
        assert!(
            mid.starts_with("<mailsec.") && mid.ends_with("@ops.example>"),
            "{mid}"
        );
        assert_eq!(
            mid,
            delivery_id(
                "globex",
                "ReadOnly/email-safeguard/0",
                &recipients[0],
                "ops.example"
            )
        );
        let ids: BTreeSet<&str> = a
            .entries
            .iter()
            .filter_map(|e| e.delivery_id.as_deref())
            .collect();
        assert_eq!(ids.len(), 3, "one id per recipient");
        assert_ne!(
            delivery_id("globex", "ReadOnly/email-safeguard/0", &recipients[0], "x"),
            delivery_id("initech", "ReadOnly/email-safeguard/0", &recipients[0], "x"),
            "and per tenant"
        );
        assert_eq!(
            a.entries[2]
                .delivery_id
                .as_deref()
                .map(|d| d.starts_with("mailsec.")),
            Some(true)
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_then_failed_keeps_retrying_at_the_cap() {
        let retry = Retry {
            base: TimeDelta::seconds(10),
            cap: TimeDelta::seconds(60),
            failed_after: 4,
        };
        let delays: Vec<i64> = (1..=6).map(|n| retry.delay(n).num_seconds()).collect();
        assert_eq!(delays, [10, 20, 40, 60, 60, 60]);
        assert_eq!(retry.delay(u32::MAX), retry.cap);

        let kinds = default_kinds();
        let recipients = [Recipient::email("a@globex.example")];
        let m = [milestone("Suspended", 0, 0)];
        let mut entries = plan(&input(&m, &[], &recipients, &kinds, 0)).entries;
        let mut now = t(0);
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            let due = plan(&input(
                &m,
                &entries,
                &recipients,
                &kinds,
                (now - t(0)).num_seconds(),
            ))
            .due;
            assert_eq!(due.len(), 1, "due at {now}");
            claim(&mut entries, &due, now, &retry);
            outcomes.push(record(
                &mut entries[0],
                Err("connection refused".into()),
                now,
                &retry,
            ));
            now = entries[0].next_attempt_at.unwrap();
        }
        use Recorded::*;
        assert_eq!(
            outcomes,
            [
                Retrying,
                Retrying,
                Retrying,
                NewlyFailed,
                StillFailed,
                StillFailed
            ]
        );
        assert_eq!(entries[0].state, NotificationState::Failed);
        assert_eq!(entries[0].attempts, 6);
        assert_eq!(entries[0].last_error.as_deref(), Some("connection refused"));
        // The attempts were 10, 20, 40 then 60, 60 s apart.
        assert_eq!(now - t(0), TimeDelta::seconds(10 + 20 + 40 + 60 + 60 + 60));

        // The outage ends: delivered, and nothing due any more.
        let due = plan(&input(
            &m,
            &entries,
            &recipients,
            &kinds,
            (now - t(0)).num_seconds(),
        ))
        .due;
        claim(&mut entries, &due, now, &retry);
        assert_eq!(record(&mut entries[0], Ok(()), now, &retry), Delivered);
        assert_eq!(entries[0].state, NotificationState::Delivered);
        assert_eq!(entries[0].next_attempt_at, None);
        assert_eq!(entries[0].last_error, None);
        let p = plan(&input(
            &m,
            &entries,
            &recipients,
            &kinds,
            (now - t(0)).num_seconds() + 1,
        ));
        assert!(p.due.is_empty());
        assert!(!p.changes(&entries));
        assert_eq!(
            p.next_wake,
            Some(t(0) + TimeDelta::days(7)),
            "wakes to forget it"
        );
    }

    #[test]
    fn a_crash_after_the_claim_is_retried_with_the_same_delivery_id() {
        let kinds = default_kinds();
        let recipients = [Recipient::email("a@globex.example")];
        let m = [milestone("ExpiringSoon", 0, 0)];
        let retry = Retry::default();
        let mut entries = plan(&input(&m, &[], &recipients, &kinds, 0)).entries;
        let first_id = entries[0].delivery_id.clone();
        let id = entries[0].id.clone();
        claim(&mut entries, &[id], t(0), &retry);
        // ... the message is sent, and the process dies before recording it.
        let later = plan(&input(&m, &entries, &recipients, &kinds, 5));
        assert!(later.due.is_empty(), "not retried before the backoff");
        let retry_plan = plan(&input(&m, &entries, &recipients, &kinds, 10));
        assert_eq!(retry_plan.due.len(), 1);
        assert_eq!(retry_plan.entries[0].delivery_id, first_id);
        assert_eq!(retry_plan.entries[0].attempts, 1);
    }
}
