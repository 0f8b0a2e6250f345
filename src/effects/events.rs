//! Kubernetes Events for milestones and changes (`events.k8s.io/v1`): repeatable notices
//! through the one shared Recorder, once-only milestone announcements through [`announce`].

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::engine::Milestone;

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
    pub fn normal(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            note: note.into(),
            action: action.into(),
        }
    }

    pub fn warning(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason: reason.into(),
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
        reason: m.kind.as_str().to_string(),
        note,
        action: truncate(&m.id, 128),
    }
}

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

/// Publishes a notice that is announced once by design (a milestone: recorded in status before
/// it is published, so it never repeats). Not through the shared Recorder: its series cache
/// keeps every Event it published for six minutes, in a hash table that never shrinks; on a
/// cold start of 4,000 tenants that table was 35 of the operator's 79 MiB of heap, for Events
/// that never join a series. A Recorder of its own, dropped at once, builds the same Event.
pub async fn announce(
    client: &kube::Client,
    reporter: &Reporter,
    regarding: &ObjectReference,
    notice: &Notice,
) {
    publish(
        &Recorder::new(client.clone(), reporter.clone()),
        regarding,
        notice,
    )
    .await
}

fn event_of(notice: &Notice) -> Event {
    Event {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.clone(),
        note: Some(truncate(&notice.note, 1024)),
        action: notice.action.clone(),
        secondary: None,
    }
}
