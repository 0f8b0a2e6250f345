//! The standard `metav1.Condition` shape, with chrono time for the engine.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A word from a short list that every object repeats: a condition's type or reason, a product
/// id, a milestone's kind. Those the operator writes are `'static` and take no allocation; one
/// read from the API server is owned until its cache form ([`super::CacheForm`]) shares the
/// static word again (a word the operator does not know stays owned).
pub type Word = std::borrow::Cow<'static, str>;

/// One aspect of the object's current state, in the standard Kubernetes condition shape, so that
/// `kubectl wait --for=condition=TYPE`, kstatus, Argo CD and Flux read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase, e.g. `Ready`, `Warning`, `ReadOnly`, `Suspended`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: Word,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase word naming the cause of the last transition, e.g. `SubscriptionExpired`.
    #[schemars(length(max = 1024))]
    pub reason: Word,
    /// What happened, to which subscription and product, and what to do about it (at most
    /// 4096 bytes: longer messages are cut).
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub message: String,
    /// When the condition last changed from one status to another.
    #[serde(with = "super::date::rfc3339")]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub last_transition_time: DateTime<Utc>,
    /// The `.metadata.generation` the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9_007_199_254_740_991i64))]
    pub observed_generation: Option<i64>,
}

/// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn from_bool(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }

    /// Whether this is the condition of type `type_` (an unknown type on the wire is none).
    pub fn is(&self, type_: ConditionType) -> bool {
        self.type_ == type_.as_str()
    }
}

/// Finds a condition by type.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.is(type_))
}

/// The condition types the operator writes. On the wire a type stays a string (`type_`), so
/// that objects stored by any version read back; this is the set the operator itself produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionType {
    /// Tenant: always true once evaluated, false while deletion is held back. Subscription:
    /// false while the subscription has a problem (no such tenant, unknown product, ...).
    Ready,
    /// Tenant: something needs attention (expiry, missing subscription, trial, seats).
    Warning,
    /// Tenant: the base service's settings are frozen.
    ReadOnly,
    /// Tenant: the base service is scaled to zero.
    Suspended,
    /// Tenant: whether the workloads see the settings of the current generation.
    SettingsApplied,
    /// Tenant: another tenant lists one of its administrator addresses.
    PossibleDuplicate,
    /// Subscription: the licence is in force now.
    InForce,
    /// Subscription: its tenants use more seats than it licenses.
    SeatLimitExceeded,
    /// Either kind: the object can not be evaluated until it is changed (a date that does not
    /// parse, an object the operator can not decode).
    Stalled,
}

impl ConditionType {
    /// The type as written in `status.conditions[].type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Warning => "Warning",
            Self::ReadOnly => "ReadOnly",
            Self::Suspended => "Suspended",
            Self::SettingsApplied => "SettingsApplied",
            Self::PossibleDuplicate => "PossibleDuplicate",
            Self::InForce => "InForce",
            Self::SeatLimitExceeded => "SeatLimitExceeded",
            Self::Stalled => "Stalled",
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every condition type a Tenant can get, in the order its CRD documents them.
pub const TENANT_CONDITIONS: &[ConditionType] = &[
    ConditionType::Ready,
    ConditionType::Warning,
    ConditionType::ReadOnly,
    ConditionType::Suspended,
    ConditionType::SettingsApplied,
    ConditionType::PossibleDuplicate,
    ConditionType::Stalled,
];

/// Every condition type a Subscription can get, in the order its CRD documents them.
pub const SUBSCRIPTION_CONDITIONS: &[ConditionType] = &[
    ConditionType::Ready,
    ConditionType::InForce,
    ConditionType::SeatLimitExceeded,
    ConditionType::Stalled,
];

/// The reasons the operator writes into conditions (`status.conditions[].reason`), one CamelCase
/// word each. Several condition types share some (`SubscriptionExpired`, `InvalidDate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Tenant `Ready`.
    Reconciled,
    DeletionBlocked,
    // Tenant `Warning`, `ReadOnly`, `Suspended` (the most severe cause), and Subscription
    // `InForce` for the expiry ones.
    SubscriptionsActive,
    ExpiringSoon,
    SubscriptionExpired,
    SubscriptionMissing,
    TrialLicense,
    SeatLimitExceeded,
    NotReadOnly,
    NotSuspended,
    // Tenant `PossibleDuplicate`.
    SharesAdmins,
    NoDuplicate,
    // Tenant `SettingsApplied`.
    Applied,
    SettingsFrozen,
    SettingsTampered,
    ProjectionFailed,
    ConfigMapNotOwned,
    NamespaceNotAssigned,
    // Subscription `Ready`, `InForce`, `SeatLimitExceeded`, `Stalled`.
    Evaluated,
    TenantNotFound,
    SharedTenantNotFound,
    UnknownProduct,
    DuplicateSubscription,
    InvalidDate,
    NotStarted,
    Active,
    WithinSeatLimit,
    // `Stalled` on either kind, written when the object can not be decoded.
    InvalidObject,
}

impl Reason {
    /// The reason as written in `status.conditions[].reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reconciled => "Reconciled",
            Self::DeletionBlocked => "DeletionBlocked",
            Self::SubscriptionsActive => "SubscriptionsActive",
            Self::ExpiringSoon => "ExpiringSoon",
            Self::SubscriptionExpired => "SubscriptionExpired",
            Self::SubscriptionMissing => "SubscriptionMissing",
            Self::TrialLicense => "TrialLicense",
            Self::SeatLimitExceeded => "SeatLimitExceeded",
            Self::NotReadOnly => "NotReadOnly",
            Self::NotSuspended => "NotSuspended",
            Self::SharesAdmins => "SharesAdmins",
            Self::NoDuplicate => "NoDuplicate",
            Self::Applied => "Applied",
            Self::SettingsFrozen => "SettingsFrozen",
            Self::SettingsTampered => "SettingsTampered",
            Self::ProjectionFailed => "ProjectionFailed",
            Self::ConfigMapNotOwned => "ConfigMapNotOwned",
            Self::NamespaceNotAssigned => "NamespaceNotAssigned",
            Self::Evaluated => "Evaluated",
            Self::TenantNotFound => "TenantNotFound",
            Self::SharedTenantNotFound => "SharedTenantNotFound",
            Self::UnknownProduct => "UnknownProduct",
            Self::DuplicateSubscription => "DuplicateSubscription",
            Self::InvalidDate => "InvalidDate",
            Self::NotStarted => "NotStarted",
            Self::Active => "Active",
            Self::WithinSeatLimit => "WithinSeatLimit",
            Self::InvalidObject => "InvalidObject",
        }
    }
}

impl Reason {
    /// Every reason, in the order above.
    pub const ALL: &[Reason] = &[
        Self::Reconciled,
        Self::DeletionBlocked,
        Self::SubscriptionsActive,
        Self::ExpiringSoon,
        Self::SubscriptionExpired,
        Self::SubscriptionMissing,
        Self::TrialLicense,
        Self::SeatLimitExceeded,
        Self::NotReadOnly,
        Self::NotSuspended,
        Self::SharesAdmins,
        Self::NoDuplicate,
        Self::Applied,
        Self::SettingsFrozen,
        Self::SettingsTampered,
        Self::ProjectionFailed,
        Self::ConfigMapNotOwned,
        Self::NamespaceNotAssigned,
        Self::Evaluated,
        Self::TenantNotFound,
        Self::SharedTenantNotFound,
        Self::UnknownProduct,
        Self::DuplicateSubscription,
        Self::InvalidDate,
        Self::NotStarted,
        Self::Active,
        Self::WithinSeatLimit,
        Self::InvalidObject,
    ];
}

/// The `'static` word equal to `word`, if it is a condition type or reason the operator writes.
pub fn known_word(word: &str) -> Option<&'static str> {
    TENANT_CONDITIONS
        .iter()
        .chain(SUBSCRIPTION_CONDITIONS)
        .map(|t| t.as_str())
        .chain(Reason::ALL.iter().map(|r| r.as_str()))
        .find(|known| *known == word)
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new reason must be added here (the match is exhaustive) and to `Reason::ALL`.
    #[test]
    fn every_reason_is_listed_once_and_known() {
        use Reason::*;
        let listed = |r: Reason| match r {
            Reconciled
            | DeletionBlocked
            | SubscriptionsActive
            | ExpiringSoon
            | SubscriptionExpired
            | SubscriptionMissing
            | TrialLicense
            | SeatLimitExceeded
            | NotReadOnly
            | NotSuspended
            | SharesAdmins
            | NoDuplicate
            | Applied
            | SettingsFrozen
            | SettingsTampered
            | ProjectionFailed
            | ConfigMapNotOwned
            | NamespaceNotAssigned
            | Evaluated
            | TenantNotFound
            | SharedTenantNotFound
            | UnknownProduct
            | DuplicateSubscription
            | InvalidDate
            | NotStarted
            | Active
            | WithinSeatLimit
            | InvalidObject => Reason::ALL.iter().filter(|a| **a == r).count(),
        };
        for r in Reason::ALL {
            assert_eq!(listed(*r), 1, "{r}");
            assert_eq!(known_word(r.as_str()), Some(r.as_str()));
        }
        assert_eq!(Reason::ALL.len(), 28);
        assert_eq!(known_word("Warning"), Some("Warning"));
        assert_eq!(known_word("SomethingElse"), None);
    }
}
