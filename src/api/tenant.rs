//! The `Tenant` resource: one customer account of the email-security service.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::names::NamespaceName;

/// One customer account of the email-security service: the products it uses with their settings,
/// its users (counted against subscription seats) and the administrators who are notified.
/// The operator sets its status from the Subscriptions that cover it: `Warning` when one of them is
/// ending, missing or a trial; `ReadOnly` (settings frozen, mail still filtered) once the base
/// service has lapsed; `Suspended` (filtering workloads scaled to zero) after the grace period.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailsec.io",
    version = "v1alpha1",
    kind = "Tenant",
    doc = "One customer account of the email-security service. The operator sets its status from the Subscriptions that cover it: Warning, then ReadOnly (settings frozen, mail still filtered), then Suspended (filtering workloads scaled to zero).",
    plural = "tenants",
    singular = "tenant",
    shortname = "mten",
    category = "mailsec",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why the tenant is warned","jsonPath":".status.conditions[?(@.type==\"Warning\")].reason"}"#,
    printcolumn = r#"{"name":"ReadOnly","type":"string","jsonPath":".status.conditions[?(@.type==\"ReadOnly\")].status"}"#,
    printcolumn = r#"{"name":"Suspended","type":"string","jsonPath":".status.conditions[?(@.type==\"Suspended\")].status"}"#,
    printcolumn = r#"{"name":"Next","type":"string","description":"When the phase changes next (UTC)","jsonPath":".status.nextTransitionAt"}"#,
    printcolumn = r#"{"name":"Users","type":"integer","priority":1,"jsonPath":".spec.users"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label (lower-case letters, digits and '-', at most 63 characters): it is used as the mailsec.io/tenant label value"),
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The customer's name as shown to people, e.g. in notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,

    /// The products this tenant uses, each with its own settings. The base product (by default
    /// `email-safeguard`) is always evaluated, even when it is not listed here.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["product"], "maxItems" = 32))]
    pub services: Vec<ServiceSpec>,

    /// Number of users in use, counted against the `seats` of the subscriptions covering the
    /// tenant (at most 1,000,000,000).
    #[serde(default)]
    #[schemars(range(max = 1_000_000_000i64))]
    #[x_kube(validation = Rule::new("self >= 0").message("users must not be negative"))]
    pub users: i64,

    /// Administrators who receive the milestone notifications (30 days before expiry, on the
    /// expiry day, at suspension, on renewal and transfer).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["email"], "maxItems" = 64))]
    pub admins: Vec<Admin>,

    /// Language of the notifications: `en` (default) or `ja`.
    #[serde(default)]
    pub locale: Locale,

    /// Namespaces where the tenant's filtering workloads run and its settings ConfigMap is
    /// written. Only those the platform assigned to the tenant are used: the Namespace must carry
    /// the label `mailsec.io/tenant=<tenant name>` (others are reported in the SettingsApplied
    /// condition). Workloads are found by the same label, in assigned namespaces only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "maxItems" = 32))]
    pub workload_namespaces: Vec<NamespaceName>,
}

/// One product used by the tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Product id from the catalogue, e.g. `email-safeguard`, `email-threat-detection-response`,
    /// `email-threat-isolation`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("product must be a lower-case id like email-safeguard (letters, digits and '-')"))]
    #[schemars(length(min = 1, max = 63))]
    pub product: super::Word,

    /// The product's settings: free-form JSON values. Frozen while the service or the whole
    /// tenant is read-only: changes are refused until the subscription is renewed. Bounded, so
    /// that no tenant can stop the operator for the others: at most 64 settings; a setting's
    /// value may hold objects and lists nested 3 levels deep (only plain values at the 4th
    /// level), with at most 32 keys per object, 32 items per list and 1024 characters per string.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::bounds::settings_schema")]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A tenant administrator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Admin {
    /// E-mail address that receives notifications.
    #[x_kube(validation = Rule::new("self.matches('^[^@\\\\s]+@[^@\\\\s]+\\\\.[^@\\\\s]+$')").message("admins[].email must be an e-mail address such as admin@example.com"))]
    #[schemars(length(min = 3, max = 254))]
    pub email: String,
    /// Name used in the greeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub name: Option<String>,
}

/// Notification language.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Locale {
    /// English.
    #[default]
    #[serde(rename = "en")]
    En,
    /// Japanese.
    #[serde(rename = "ja")]
    Ja,
}

/// The tenant as a whole.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum TenantPhase {
    /// Every service is covered and nothing needs attention.
    Active,
    /// Something needs attention: a subscription ends soon, has ended or is missing for an add-on,
    /// a trial is in use, or a seat limit is exceeded. Nothing is restricted yet for the base service.
    Warning,
    /// The base service's subscription has ended or is missing: settings are frozen, mail is still
    /// filtered, for the grace period.
    ReadOnly,
    /// The grace period is over: the filtering workloads are scaled to zero. No data is deleted.
    Suspended,
}

/// One product of the tenant.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum ServicePhase {
    /// Covered, more than the warning period before the end of coverage.
    Active,
    /// Covered, but coverage ends within the warning period.
    ExpiringSoon,
    /// Coverage ended (or no subscription): settings frozen for the grace period.
    ReadOnly,
    /// Grace period over: the service's workloads are stopped.
    Suspended,
}

/// What the operator computed for the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// `Active`, `Warning`, `ReadOnly` or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,
    /// One entry per product: the base product and every product in `spec.services`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["product"], "maxItems" = 33))]
    pub services: Vec<ServiceStatus>,
    /// The next instant at which the tenant's status changes by itself; absent when nothing is due.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub next_transition_at: Option<DateTime<Utc>>,
    /// `Ready`, `Warning`, `ReadOnly`, `Suspended`, `SettingsApplied` (once the tenant lists
    /// workload namespaces), `PossibleDuplicate`, and `Stalled` (only while the operator can not
    /// read the object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"], "maxItems" = 16))]
    pub conditions: Vec<Condition>,
    /// Milestones already announced (Events, notifications), so none is announced twice, also
    /// across operator restarts. Most recent last; at most 128 (those reached now, then the
    /// most recent earlier ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"], "maxItems" = 128))]
    pub milestones: Vec<MilestoneRecord>,
    /// The `.metadata.generation` whose service settings the workloads see. It lags behind
    /// `observedGeneration` while changed settings are held back because a service is read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9_007_199_254_740_991i64))]
    pub settings_applied_generation: Option<i64>,
    /// SHA-256 of the settings the workloads see (the settings ConfigMap's content). While a
    /// change is held back, the operator keeps the last applied settings from a ConfigMap copy
    /// that still matches it: a copy edited by hand does not, and is put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub settings_digest: Option<String>,
    /// The settings the workloads see, as JSON, while they fit in 8 KiB: where the last applied
    /// settings of frozen services are kept, out of reach of whoever edits the Tenant or its
    /// ConfigMaps. Larger settings are recognised by `settingsDigest` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub settings_in_effect: Option<String>,
    /// The notifier's outbox: one entry per milestone, channel and recipient, recorded before
    /// each delivery attempt and after it, so that every notification is delivered once, also
    /// across operator restarts and mail or webhook outages. Written only by the notifier
    /// (field manager `mailsec-operator-notifier`); delivered entries are kept while their
    /// milestone is recorded and recent. At most 128 entries: further ones are created as
    /// delivered entries are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"], "maxItems" = 128))]
    pub notifications: Vec<NotificationRecord>,
    /// Subscriptions this tenant owns that are not expired and not shared with another tenant:
    /// deleting the tenant would orphan them, so deletion is refused while any is listed
    /// (transfer them with `spec.tenantRef` first, or let them expire). At most 16 are listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "maxItems" = 16), inner(length(max = 253)))]
    pub licences_held: Vec<String>,
    /// Other tenants that list one of this tenant's administrator addresses and are not linked
    /// to it on purpose (by a subscription shared between them, or the annotation
    /// `mailsec.io/not-duplicate-of`): possibly a second tenant left by a late renewal. See the
    /// `PossibleDuplicate` condition for what to do. At most 8, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["tenant"], "maxItems" = 8))]
    pub possible_duplicates: Vec<PossibleDuplicate>,
    /// The `.metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9_007_199_254_740_991i64))]
    pub observed_generation: Option<i64>,
}

impl TenantStatus {
    /// Equal but for the notifier's outbox (`notifications`): what the Tenant controller
    /// writes and reads.
    pub fn same_verdict(&self, other: &TenantStatus) -> bool {
        // Destructured in full, so that a new field must be placed on one side or the other.
        let TenantStatus {
            phase,
            services,
            next_transition_at,
            conditions,
            milestones,
            settings_applied_generation,
            settings_digest,
            settings_in_effect,
            notifications: _,
            licences_held,
            possible_duplicates,
            observed_generation,
        } = self;
        *phase == other.phase
            && *services == other.services
            && *next_transition_at == other.next_transition_at
            && *conditions == other.conditions
            && *milestones == other.milestones
            && *settings_applied_generation == other.settings_applied_generation
            && *settings_digest == other.settings_digest
            && *settings_in_effect == other.settings_in_effect
            && *licences_held == other.licences_held
            && *possible_duplicates == other.possible_duplicates
            && *observed_generation == other.observed_generation
    }
}

/// Status of one product of the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Product id.
    #[schemars(length(max = 63))]
    pub product: super::Word,
    /// True for the base product, whose lapse makes the whole tenant read-only, then suspended.
    #[serde(default)]
    pub base: bool,
    /// `Active`, `ExpiringSoon`, `ReadOnly` or `Suspended`.
    pub phase: ServicePhase,
    /// The subscription that covers the service longest (names the one to renew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub subscription: Option<String>,
    /// Plan of the subscription(s) in force now: `Trial` when only trials cover the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<super::subscription::Plan>,
    /// End of continuous coverage by this tenant's subscriptions (with extensions and renewals
    /// that follow on without a gap).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub effective_end_at: Option<DateTime<Utc>>,
    /// When the warning period starts or started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub expiring_soon_at: Option<DateTime<Utc>>,
    /// Since when the service's settings are frozen.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub read_only_since: Option<DateTime<Utc>>,
    /// When the service is (or was) suspended unless renewed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub suspends_at: Option<DateTime<Utc>>,
    /// Since when the operator sees no started subscription for this product.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub missing_since: Option<DateTime<Utc>>,
}

/// A milestone the operator has announced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MilestoneRecord {
    /// Stable id: kind, product and the instant it is about, e.g. `ReadOnly/email-safeguard/2027-01-01T00:00:00Z`.
    #[schemars(length(max = 384))]
    pub id: String,
    /// `ExpiringSoon`, `ReadOnly`, `Suspended`, `SubscriptionMissing`, `Renewed`, `TrialLicense`,
    /// `SeatLimitExceeded`, `TransferredIn`, `TransferredOut`, `PossibleDuplicate`.
    #[schemars(length(max = 32))]
    pub kind: super::Word,
    /// The product it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub product: Option<super::Word>,
    /// When the milestone was due.
    #[serde(with = "super::date::rfc3339")]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub due_at: DateTime<Utc>,
    /// When the operator announced it (later than `dueAt` when the operator was not running then).
    #[serde(with = "super::date::rfc3339")]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub announced_at: DateTime<Utc>,
    /// The subscription it is about (the one to renew), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub subscription: Option<String>,
    /// For a transfer: the other tenant (where the subscription came from, or went to); for a
    /// possible duplicate: the other tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub peer: Option<String>,
    /// Announced by an Event only, not notified: a possible duplicate is notified to the
    /// administrators of the tenant in use, not to those of the other one; and a service's
    /// milestone that was already due at first sight together with a later one of the same
    /// service (the later one is notified).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub event_only: bool,
    /// Already due when the operator first saw the tenant, together with others of which at
    /// least one was late (an operator installed on a running fleet, or a tenant created after
    /// its licence lapsed): announced with them in one `MilestonesAlreadyDue` Event on the
    /// tenant, not in an Event of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_due: bool,
    /// The end of coverage the milestone is about.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub effective_end_at: Option<DateTime<Utc>>,
    /// When the service is (or was) suspended unless renewed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub suspends_at: Option<DateTime<Utc>>,
}

/// Another tenant that is possibly the same customer's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PossibleDuplicate {
    /// The other tenant's name.
    #[schemars(length(max = 63))]
    pub tenant: String,
    /// Administrator addresses both tenants list (lower-case; at most 4 are named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 4), inner(length(max = 254)))]
    pub shared_admins: Vec<String>,
    /// The tenant the hint assumes is the one in use: the one with users and settings (else the
    /// older one, else the first by name).
    #[schemars(length(max = 63))]
    pub tenant_in_use: String,
    /// Subscriptions of the other (unused) tenant, not ended, that would cover the tenant in use
    /// longer than it is covered now: move them with `spec.tenantRef`. At most 8 are named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 8), inner(length(max = 253)))]
    pub subscriptions_to_move: Vec<String>,
}

/// One notification of a milestone to one recipient over one channel (an outbox entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// `<milestone id>/<channel>/<recipient>`, e.g.
    /// `ReadOnly/email-safeguard/2027-01-01T00:00:00Z/Email/admin@example.com`.
    #[schemars(length(max = 704))]
    pub id: String,
    /// The milestone delivered (`status.milestones[].id`).
    #[schemars(length(max = 384))]
    pub milestone: String,
    /// `Email` or `Webhook`.
    pub channel: NotificationChannel,
    /// The administrator's e-mail address, or `webhook`.
    #[schemars(length(max = 254))]
    pub recipient: String,
    /// `Pending` (not delivered yet, retried), `Delivered`, or `Failed` (still retried, at the
    /// longest retry interval; the error is in `lastError`).
    pub state: NotificationState,
    /// Delivery attempts started so far.
    #[serde(default)]
    #[schemars(range(max = 4_294_967_295u32))]
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub last_error: Option<String>,
    /// When the last attempt started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (absent once delivered).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the recipient's server accepted it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::date::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::api::date::instant_schema")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The milestone was announced late (the operator was not running when it was due).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    /// The `Message-ID` of the e-mail, or the `X-Mailsec-Delivery` id of the webhook call: the
    /// same on every attempt, so receivers can drop a repeated delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 320))]
    pub delivery_id: Option<String>,
}

impl NotificationRecord {
    /// A new entry of `milestone` to `recipient` over `channel`: not attempted yet.
    pub fn pending(
        id: String,
        milestone: &str,
        channel: NotificationChannel,
        recipient: &str,
    ) -> Self {
        Self {
            id,
            milestone: milestone.to_string(),
            channel,
            recipient: recipient.to_string(),
            state: NotificationState::Pending,
            attempts: 0,
            last_error: None,
            last_attempt_at: None,
            next_attempt_at: None,
            delivered_at: None,
            late: false,
            delivery_id: None,
        }
    }
}

/// How a notification is delivered.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum NotificationChannel {
    /// E-mail to an administrator over SMTP.
    Email,
    /// An HTTP POST to the operator's webhook.
    Webhook,
}

impl MilestoneRecord {
    /// The record's kind, typed; `None` for a kind this version does not know (a record written
    /// by another version of the operator).
    pub fn milestone_kind(&self) -> Option<super::MilestoneKind> {
        super::MilestoneKind::parse(&self.kind)
    }
}

impl NotificationChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "Email",
            Self::Webhook => "Webhook",
        }
    }
}

/// Where a notification is in its delivery.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum NotificationState {
    /// Not delivered yet; retried with backoff.
    Pending,
    /// Accepted by the mail server or webhook.
    Delivered,
    /// Still not delivered after many attempts; retried at the longest interval until it is.
    Failed,
}
