//! The labels and annotations the operator reads or writes, and what each means to a user.
//! The YAML under `deploy/` and `charts/` spells the same names.

/// Prefix of the operator's own labels and annotations.
pub const PREFIX: &str = "mailsec.io/";

/// Label on a Deployment or StatefulSet naming the tenant it serves (required for the operator
/// to scale it). Its value is the Tenant's name.
pub const TENANT_LABEL: &str = "mailsec.io/tenant";
/// Label on a workload naming the product it serves (optional; absent = the base product).
pub const PRODUCT_LABEL: &str = "mailsec.io/product";
/// Label the operator sets on a workload to the phase of the service it serves.
pub const PHASE_LABEL: &str = "mailsec.io/phase";
/// Annotation the operator sets on a suspended workload: the replica count it restores when the
/// service is running again.
pub const SUSPENDED_REPLICAS_ANNOTATION: &str = "mailsec.io/suspended-replicas";

/// Annotation on a Tenant: set to `"true"` to delete it although it owns a licence in force.
pub const FORCE_DELETE_ANNOTATION: &str = "mailsec.io/force-delete";
/// Annotation on a Tenant: the names of tenants (comma-separated) that share administrators with
/// it on purpose and are not duplicates of it. Set on either tenant of a pair, it clears the pair.
pub const NOT_DUPLICATE_ANNOTATION: &str = "mailsec.io/not-duplicate-of";
/// Finalizer held on every Tenant, so that deleting one that still owns a licence in force is
/// stopped until the licence ends or [`FORCE_DELETE_ANNOTATION`] is set.
pub const FINALIZER: &str = "mailsec.io/licence-guard";

/// Label on every milestone Event (value `"true"`), so that they can be listed.
pub const MILESTONE_EVENT_LABEL: &str = "mailsec.io/milestone-event";
/// Annotation on a milestone Event: the milestone's id.
pub const MILESTONE_ANNOTATION: &str = "mailsec.io/milestone";

/// Label (name, value) on every object the operator creates (the settings ConfigMaps).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "mailsec-operator");
