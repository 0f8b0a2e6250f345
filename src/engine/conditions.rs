//! Building conditions that keep their `lastTransitionTime` while their status holds.

use chrono::{DateTime, Utc};

use crate::api::{Condition, ConditionStatus, ConditionType, Reason};

/// Builds conditions against the previous ones: a condition whose status did not change keeps
/// its `lastTransitionTime`, so the status is stable (and not rewritten) while nothing changes.
pub struct ConditionSet<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
    out: Vec<Condition>,
}

impl<'a> ConditionSet<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>, now: DateTime<Utc>) -> Self {
        Self {
            previous,
            generation,
            now: super::whole_seconds(now),
            out: Vec::new(),
        }
    }

    pub fn set(
        &mut self,
        type_: ConditionType,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
    ) {
        let status = ConditionStatus::from_bool(status);
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.is(type_) && c.status == status)
            .map(|c| c.last_transition_time)
            .unwrap_or(self.now);
        let message = crate::api::bounds::truncate_json_owned(
            message.into(),
            crate::api::bounds::MAX_CONDITION_MESSAGE,
        );
        self.out.push(Condition {
            type_: type_.as_str().into(),
            status,
            reason: reason.as_str().into(),
            message,
            last_transition_time,
            observed_generation: self.generation,
        });
    }

    pub fn finish(self) -> Vec<Condition> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut first = ConditionSet::new(&[], Some(1), at("2026-01-01T00:00:00.750Z"));
        first.set(
            ConditionType::Warning,
            false,
            Reason::SubscriptionsActive,
            "ok",
        );
        let first = first.finish();
        assert_eq!(
            first[0].last_transition_time,
            at("2026-01-01T00:00:00Z"),
            "whole seconds, like metav1.Time"
        );

        let mut same = ConditionSet::new(&first, Some(2), at("2026-02-01T00:00:00Z"));
        same.set(
            ConditionType::Warning,
            false,
            Reason::SubscriptionsActive,
            "still ok",
        );
        let same = same.finish();
        assert_eq!(same[0].last_transition_time, at("2026-01-01T00:00:00Z"));
        assert_eq!(same[0].observed_generation, Some(2));

        let mut flipped = ConditionSet::new(&same, Some(2), at("2026-03-01T00:00:00Z"));
        flipped.set(ConditionType::Warning, true, Reason::ExpiringSoon, "renew");
        assert_eq!(
            flipped.finish()[0].last_transition_time,
            at("2026-03-01T00:00:00Z")
        );
    }
}
