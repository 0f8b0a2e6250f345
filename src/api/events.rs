//! The reasons of the Events the operator publishes (`reason` of an `events.k8s.io/v1` Event,
//! shown by `kubectl describe` and `kubectl get events`): typed here, a string on the wire.

use super::{MilestoneKind, Reason};

/// The reason of an Event, one CamelCase word. Where an Event reports the same cause as a
/// condition or a milestone, its reason is that one's, so the two read alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventReason {
    /// A milestone announced on its tenant.
    Milestone(MilestoneKind),
    /// The milestones already due when the operator first saw a tenant, announced together.
    MilestonesAlreadyDue,
    // Subscription: the milestones TransferredIn/Out on the two tenants keep these reasons.
    SubscriptionTransferredIn,
    SubscriptionTransferredOut,
    // Subscription changes, on the subscription.
    Transferred,
    Extended,
    EndDateMoved,
    SharingChanged,
    // Subscription changes, on the tenants concerned.
    SubscriptionExtended,
    SubscriptionRenewed,
    SubscriptionShared,
    SubscriptionUnshared,
    // Tenant.
    DeletionBlocked,
    StatusWriteFailed,
    WorkloadsSuspended,
    WorkloadsRestored,
    WorkloadsScaledBack,
    NotificationFailed,
    // Workloads.
    NamespaceNotAssigned,
    Released,
    // Either kind, when the object can not be decoded.
    InvalidObject,
}

impl EventReason {
    /// The reason as written in the Event.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Milestone(kind) => kind.as_str(),
            Self::MilestonesAlreadyDue => "MilestonesAlreadyDue",
            Self::SubscriptionTransferredIn => "SubscriptionTransferredIn",
            Self::SubscriptionTransferredOut => "SubscriptionTransferredOut",
            Self::Transferred => "Transferred",
            Self::Extended => "Extended",
            Self::EndDateMoved => "EndDateMoved",
            Self::SharingChanged => "SharingChanged",
            Self::SubscriptionExtended => "SubscriptionExtended",
            Self::SubscriptionRenewed => "SubscriptionRenewed",
            Self::SubscriptionShared => "SubscriptionShared",
            Self::SubscriptionUnshared => "SubscriptionUnshared",
            Self::DeletionBlocked => Reason::DeletionBlocked.as_str(),
            Self::StatusWriteFailed => "StatusWriteFailed",
            Self::WorkloadsSuspended => "WorkloadsSuspended",
            Self::WorkloadsRestored => "WorkloadsRestored",
            Self::WorkloadsScaledBack => "WorkloadsScaledBack",
            Self::NotificationFailed => "NotificationFailed",
            Self::NamespaceNotAssigned => Reason::NamespaceNotAssigned.as_str(),
            Self::Released => "Released",
            Self::InvalidObject => Reason::InvalidObject.as_str(),
        }
    }
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_like_the_condition_or_milestone_they_report() {
        let cases = [
            (EventReason::Milestone(MilestoneKind::ReadOnly), "ReadOnly"),
            (
                EventReason::Milestone(MilestoneKind::SubscriptionMissing),
                "SubscriptionMissing",
            ),
            (EventReason::DeletionBlocked, "DeletionBlocked"),
            (EventReason::NamespaceNotAssigned, "NamespaceNotAssigned"),
            (EventReason::InvalidObject, "InvalidObject"),
            (
                EventReason::SubscriptionTransferredIn,
                "SubscriptionTransferredIn",
            ),
            (EventReason::WorkloadsScaledBack, "WorkloadsScaledBack"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.as_str(), text);
            assert_eq!(reason.to_string(), text);
        }
    }
}
