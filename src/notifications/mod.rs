//! Notifications: milestones delivered to a tenant's administrators by e-mail (SMTP) and to an
//! optional webhook, exactly once per milestone, channel and recipient.
//!
//! - [`text`]: what the messages say, in English and Japanese;
//! - [`outbox`]: the pure planning of `status.notifications` (what to send, when to retry);
//! - [`smtp`] and [`webhook`]: the two channels;
//! - [`record`]: the write of `status.notifications`.
//!
//! The controller that ties them to the cluster is [`crate::controller::notifier`].

pub mod outbox;
pub mod record;
pub mod smtp;
pub mod text;
pub mod webhook;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::TimeDelta;
use lettre::message::Mailbox;

use crate::api::NotificationChannel;
use crate::engine::MilestoneKind;
pub use outbox::Retry;

/// The field manager of the notifier's writes: it owns `status.notifications` and nothing else.
pub const FIELD_MANAGER: &str = "mailsec-operator-notifier";

/// The milestone kinds notified unless configured otherwise.
pub const DEFAULT_KINDS: [MilestoneKind; 6] = [
    MilestoneKind::ExpiringSoon,
    MilestoneKind::ReadOnly,
    MilestoneKind::Suspended,
    MilestoneKind::Renewed,
    MilestoneKind::TransferredIn,
    MilestoneKind::TransferredOut,
];

/// Why a notification setting was refused, or a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Config(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("webhook: {0}")]
    Webhook(String),
    #[error("bad e-mail address: {0}")]
    Address(String),
}

/// Parses `ExpiringSoon,ReadOnly,...` (the names in `status.milestones[].kind`).
pub fn parse_kinds(list: &str) -> Result<BTreeSet<MilestoneKind>, NotifyError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            MilestoneKind::parse(s).ok_or_else(|| {
                NotifyError::Config(format!(
                    "--notify-milestones: unknown milestone {s:?}; known: {}",
                    MilestoneKind::ALL.map(|k| k.as_str()).join(", ")
                ))
            })
        })
        .collect()
}

/// Delivery counters, for the metrics endpoint (read them with [`NotifierStats::snapshot`]).
#[derive(Debug, Default)]
pub struct NotifierStats {
    /// E-mails accepted by the SMTP server.
    pub emails_delivered: AtomicU64,
    /// Webhook calls answered with 2xx.
    pub webhooks_delivered: AtomicU64,
    /// Deliveries of milestones that were announced late.
    pub late_delivered: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub attempts_failed: AtomicU64,
    /// Entries marked `Failed` (once each).
    pub marked_failed: AtomicU64,
    /// Attempts repeated because the previous attempt's outcome was never recorded (the
    /// operator stopped between sending and recording): the receiver may see the same
    /// Message-ID twice.
    pub repeated_after_interruption: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub emails_delivered: u64,
    pub webhooks_delivered: u64,
    pub late_delivered: u64,
    pub attempts_failed: u64,
    pub marked_failed: u64,
    pub repeated_after_interruption: u64,
}

impl NotifierStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            emails_delivered: get(&self.emails_delivered),
            webhooks_delivered: get(&self.webhooks_delivered),
            late_delivered: get(&self.late_delivered),
            attempts_failed: get(&self.attempts_failed),
            marked_failed: get(&self.marked_failed),
            repeated_after_interruption: get(&self.repeated_after_interruption),
        }
    }

    pub(crate) fn delivered(&self, channel: NotificationChannel, late: bool) {
        match channel {
            NotificationChannel::Email => &self.emails_delivered,
            NotificationChannel::Webhook => &self.webhooks_delivered,
        }
        .fetch_add(1, Ordering::Relaxed);
        if late {
            self.late_delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The e-mail channel: a mailer and the sender.
#[derive(Clone)]
pub struct EmailChannel {
    pub mailer: smtp::Mailer,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
}

impl EmailChannel {
    /// `server`, sending as `from` (`Name <address>` or `address`), answers to `reply_to`.
    pub fn new(
        server: &smtp::SmtpServer,
        from: &str,
        reply_to: Option<&str>,
    ) -> Result<Self, NotifyError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| NotifyError::Config(format!("--smtp-from {from:?}: {e}")))?;
        let reply_to = reply_to
            .map(|r| {
                r.parse::<Mailbox>()
                    .map_err(|e| NotifyError::Config(format!("--smtp-reply-to {r:?}: {e}")))
            })
            .transpose()?;
        Ok(Self {
            mailer: smtp::Mailer::new(server)?,
            from,
            reply_to,
        })
    }

    /// The domain of the `Message-ID`s: the sender's.
    pub fn domain(&self) -> String {
        self.from.email.domain().to_string()
    }
}

/// Everything the notifier needs: channels, what to notify, how to retry, counters.
#[derive(Clone)]
pub struct NotifierConfig {
    pub email: Option<EmailChannel>,
    pub webhook: Option<webhook::Webhook>,
    /// The milestone kinds that are notified.
    pub kinds: BTreeSet<MilestoneKind>,
    pub retry: Retry,
    /// Milestones announced longer ago are not notified (e.g. the history of a cluster where
    /// the notifier is switched on for the first time); delivered entries are kept this long.
    pub max_age: TimeDelta,
    /// Deliveries in flight at once per tenant.
    pub parallel: usize,
    pub stats: Arc<NotifierStats>,
}

impl std::fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierConfig")
            .field(
                "email_from",
                &self.email.as_ref().map(|e| e.from.to_string()),
            )
            .field("webhook", &self.webhook)
            .field("kinds", &self.kinds)
            .field("retry", &self.retry)
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl NotifierConfig {
    /// A notifier with these channels, the default kinds, retry and max age.
    pub fn new(email: Option<EmailChannel>, webhook: Option<webhook::Webhook>) -> Self {
        Self {
            email,
            webhook,
            kinds: DEFAULT_KINDS.into_iter().collect(),
            retry: Retry::default(),
            max_age: TimeDelta::days(7),
            parallel: 4,
            stats: Arc::new(NotifierStats::default()),
        }
    }

    /// The domain of `Message-ID`s.
    pub fn domain(&self) -> String {
        self.email
            .as_ref()
            .map(EmailChannel::domain)
            .unwrap_or_else(|| "mailsec-operator.invalid".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestone_lists() {
        let kinds =
            parse_kinds("ExpiringSoon, ReadOnly,Suspended,Renewed,TransferredIn,TransferredOut")
                .unwrap();
        assert_eq!(kinds, DEFAULT_KINDS.into_iter().collect());
        assert!(parse_kinds("").unwrap().is_empty());
        let err = parse_kinds("ExpiringSoon,Expired").unwrap_err().to_string();
        assert!(
            err.contains("\"Expired\"") && err.contains("SeatLimitExceeded"),
            "{err}"
        );
    }
}
