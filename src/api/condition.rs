//! The standard `metav1.Condition` shape, with chrono time for the engine.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One aspect of the object's current state, in the standard Kubernetes condition shape, so that
/// `kubectl wait --for=condition=TYPE`, kstatus, Argo CD and Flux read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase, e.g. `Ready`, `Warning`, `ReadOnly`, `Suspended`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase word naming the cause of the last transition, e.g. `SubscriptionExpired`.
    #[schemars(length(max = 1024))]
    pub reason: String,
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
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
