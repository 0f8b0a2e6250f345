//! The kinds of milestone: typed here, a string (`status.milestones[].kind`) on the wire, so
//! that a record written by another version of the operator still reads back.

/// The kinds of milestone announced to a tenant's administrators and as Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MilestoneKind {
    /// The warning period started (E − W).
    ExpiringSoon,
    /// Coverage ended (E): read-only for the grace period.
    ReadOnly,
    /// The grace period ended (E + G): suspended.
    Suspended,
    /// A product has no started subscription.
    SubscriptionMissing,
    /// A service came back because of a new or longer subscription.
    Renewed,
    /// A product is covered only by trials.
    TrialLicense,
    /// A subscription covering the tenant has more users than seats.
    SeatLimitExceeded,
    /// A subscription was transferred to this tenant.
    TransferredIn,
    /// A subscription was transferred from this tenant to another.
    TransferredOut,
    /// Another tenant shares an administrator address with this one (a late renewal can leave
    /// a second tenant holding the contract): see [`crate::engine::duplicates`].
    PossibleDuplicate,
}

impl MilestoneKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ExpiringSoon => "ExpiringSoon",
            Self::ReadOnly => "ReadOnly",
            Self::Suspended => "Suspended",
            Self::SubscriptionMissing => "SubscriptionMissing",
            Self::Renewed => "Renewed",
            Self::TrialLicense => "TrialLicense",
            Self::SeatLimitExceeded => "SeatLimitExceeded",
            Self::TransferredIn => "TransferredIn",
            Self::TransferredOut => "TransferredOut",
            Self::PossibleDuplicate => "PossibleDuplicate",
        }
    }

    /// Every kind, in the order above.
    pub const ALL: [MilestoneKind; 10] = [
        Self::ExpiringSoon,
        Self::ReadOnly,
        Self::Suspended,
        Self::SubscriptionMissing,
        Self::Renewed,
        Self::TrialLicense,
        Self::SeatLimitExceeded,
        Self::TransferredIn,
        Self::TransferredOut,
        Self::PossibleDuplicate,
    ];

    /// The kind named `name` (as written in `status.milestones[].kind`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The place of a lifecycle milestone in a service's lapse (warning, read-only, suspended);
    /// `None` for the others.
    pub fn lifecycle_stage(self) -> Option<u8> {
        match self {
            Self::ExpiringSoon => Some(0),
            Self::ReadOnly => Some(1),
            Self::Suspended => Some(2),
            _ => None,
        }
    }

    /// Milestones that restrict or warn, as opposed to good news.
    pub fn is_warning(self) -> bool {
        !matches!(
            self,
            Self::Renewed | Self::TransferredIn | Self::TransferredOut
        )
    }

    /// Transfers: recorded by the Subscription controller in the subscription's status; on the
    /// tenants, milestones whose Events are `SubscriptionTransferredIn/Out`.
    pub fn is_transfer(self) -> bool {
        matches!(self, Self::TransferredIn | Self::TransferredOut)
    }
}
