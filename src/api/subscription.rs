//! The `Subscription` resource: one licence for one product, owned by one tenant.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::date::LicenseDate;
use super::names::TenantName;

/// A licence for one product of the email-security service, owned by one tenant and optionally
/// shared with others. The operator computes from it when the tenant is warned, made read-only and
/// suspended. Renew by raising `endDate` or by applying a new Subscription for the same product.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailsec.io",
    version = "v1alpha1",
    kind = "Subscription",
    doc = "A licence for one product of the email-security service, owned by one Tenant (spec.tenantRef) and optionally shared with others. Its end date drives the tenant's warning, read-only and suspended phases.",
    plural = "subscriptions",
    singular = "subscription",
    // Not `sub`/`subs`: OLM's Subscription (operators.coreos.com) has those short names. The
    // plural `subscriptions` is shared with OLM's all the same (see the README).
    shortname = "msub",
    category = "mailsec",
    status = "SubscriptionStatus",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenantRef"}"#,
    printcolumn = r#"{"name":"Product","type":"string","jsonPath":".spec.product"}"#,
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.plan"}"#,
    printcolumn = r#"{"name":"End","type":"string","description":"Effective end (endDate or extension)","jsonPath":".status.effectiveEndAt"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Seats","type":"string","priority":1,"jsonPath":".spec.seats"}"#,
    printcolumn = r#"{"name":"Used","type":"string","priority":1,"jsonPath":".status.seatsUsed"}"#,
    printcolumn = r#"{"name":"Next","type":"string","priority":1,"description":"When the phase changes next (UTC)","jsonPath":".status.nextTransitionAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.sharedWith) || !self.sharedWith.exists(t, t == self.tenantRef)")
        .message("sharedWith must not list the owner (tenantRef) itself")
        .field_path(".sharedWith"),
    validation = Rule::new(super::cel::ends_after("self.endDate", "self.startDate", false))
        .message("endDate must be after startDate")
        .field_path(".endDate"),
    validation = Rule::new(format!("!has(self.extension) || {}", super::cel::ends_after("self.extension.until", "self.endDate", true)))
        .message("extension.until must be after endDate: an extension can only lengthen a subscription")
        .field_path(".extension.until"),
)]
pub struct SubscriptionSpec {
    /// Name of the Tenant that owns this subscription. Change it to transfer the subscription to
    /// another tenant: coverage moves at once and the transfer is recorded in status.
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", super::names::DNS_LABEL)).message("tenantRef must be a Tenant name: lower-case letters, digits and '-', starting and ending with a letter or digit"))]
    #[schemars(length(min = 1, max = 63))]
    pub tenant_ref: String,

    /// Product id from the operator's product catalogue, e.g. `email-safeguard` (the base service),
    /// `email-threat-detection-response` or `email-threat-isolation` (add-ons).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("product must be a lower-case id like email-safeguard (letters, digits and '-')"))]
    #[schemars(length(min = 1, max = 63))]
    pub product: super::Word,

    /// `Paid` for a bought licence, `Trial` for a trial. A tenant covered only by a trial is warned.
    #[serde(default)]
    pub plan: Plan,

    /// First day of the licence: `YYYY-MM-DD` (from 00:00 UTC) or an RFC 3339 time.
    #[x_kube(validation = Rule::new(super::cel::date_field_is_valid()).message("startDate must be a real calendar date YYYY-MM-DD or an RFC 3339 time"))]
    pub start_date: LicenseDate,

    /// Last day of the licence: `YYYY-MM-DD` ends at the end of that day (UTC); an RFC 3339 time
    /// ends at that instant. Warning starts `warningPeriod` (30 days) before, read-only at the end,
    /// suspension `gracePeriod` (30 days) after.
    #[x_kube(validation = Rule::new(super::cel::date_field_is_valid()).message("endDate must be a real calendar date YYYY-MM-DD or an RFC 3339 time"))]
    pub end_date: LicenseDate,

    /// Licensed users. The owner's and the sharing tenants' `spec.users` together must not exceed it.
    #[schemars(range(min = 1))]
    pub seats: i64,

    /// Other tenants (by name) that may use this subscription, e.g. after a merger. They share the
    /// seat limit with the owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "maxItems" = 64))]
    pub shared_with: Vec<TenantName>,

    /// A temporary extension of service granted while a renewal is processed. The effective end
    /// is the later of `endDate` and `extension.until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
}

/// A temporary extension of service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    /// New end of service: `YYYY-MM-DD` (end of that day, UTC) or an RFC 3339 time; after `endDate`.
    #[x_kube(validation = Rule::new(super::cel::date_field_is_valid()).message("extension.until must be a real calendar date YYYY-MM-DD or an RFC 3339 time"))]
    pub until: LicenseDate,
    /// Why the extension was granted, e.g. the renewal order number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// Kind of licence.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Plan {
    /// A bought licence.
    #[default]
    Paid,
    /// A trial licence: the tenant is warned while only trials cover a product.
    Trial,
}

/// Where a subscription is in its life, at the time of the last evaluation.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum SubscriptionPhase {
    /// Not started yet (before `startDate`).
    Pending,
    /// In force, more than the warning period before its end.
    Active,
    /// In force, within the warning period before its end.
    ExpiringSoon,
    /// Ended; the tenant is read-only for the grace period.
    GracePeriod,
    /// Grace period over; the service it covered is suspended.
    Expired,
}

/// What the operator observed of this subscription.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    /// `Pending`, `Active`, `ExpiringSoon`, `GracePeriod` or `Expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SubscriptionPhase>,
    /// When the licence starts (from `startDate`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub starts_at: Option<DateTime<Utc>>,
    /// When the licence ends: the later of `endDate` and `extension.until`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub effective_end_at: Option<DateTime<Utc>>,
    /// When the warning period starts (`effectiveEndAt` minus the warning period).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub expiring_soon_at: Option<DateTime<Utc>>,
    /// When the grace period ends and what it covers is suspended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// The next instant at which `phase` changes; absent when nothing more is scheduled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub next_transition_at: Option<DateTime<Utc>>,
    /// Users counted against `seats`: the owner's and the sharing tenants' `spec.users`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9_007_199_254_740_991i64))]
    pub seats_used: Option<i64>,
    /// The owning tenant as last seen by the operator; differs from `spec.tenantRef` only until a
    /// transfer is processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub tenant: Option<String>,
    /// The tenants the subscription was last seen shared with (`spec.sharedWith` as processed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic", "maxItems" = 64), inner(length(max = 63)))]
    pub shared_with: Vec<String>,
    /// The most recent transfers between tenants, oldest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic", "maxItems" = 10))]
    pub transfers: Vec<Transfer>,
    /// `Ready`, `InForce`, `SeatLimitExceeded`, and `Stalled` (while a date is invalid, or the
    /// operator can not read the object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"], "maxItems" = 16))]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9_007_199_254_740_991i64))]
    pub observed_generation: Option<i64>,
}

/// One transfer of a subscription from one tenant to another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// The previous owner.
    #[schemars(length(max = 63))]
    pub from: String,
    /// The new owner.
    #[schemars(length(max = 63))]
    pub to: String,
    /// When the operator processed the transfer.
    #[serde(with = "super::date::rfc3339")]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub at: DateTime<Utc>,
}

impl Subscription {
    /// True when `tenant` owns this subscription or it is shared with `tenant`.
    pub fn concerns(&self, tenant: &str) -> bool {
        self.spec.tenant_ref == tenant || self.spec.shared_with.iter().any(|t| t.0 == tenant)
    }

    /// The tenants this subscription covers: the owner first, then those it is shared with.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.spec.tenant_ref.as_str())
            .chain(self.spec.shared_with.iter().map(|t| t.0.as_str()))
    }
}
