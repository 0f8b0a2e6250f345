//! The notifier's writes: `status.notifications` only, by server-side apply under its own field
//! manager, so that it and the Tenant controller (which applies the rest of the status) never
//! take each other's fields. The list is a map keyed by `id`, so the two appliers merge.

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::{NotificationRecord, Tenant};
use crate::notifications::FIELD_MANAGER;

/// Applies `entries` as the whole of `status.notifications` of tenant `name` (entries left out
/// are removed). With `resource_version` the write only succeeds if the tenant has not changed
/// since it was read (HTTP 409 otherwise): used to claim entries before sending, so that two
/// notifiers (a leader change) can never both claim the same attempt.
pub async fn apply_outbox(
    api: &Api<Tenant>,
    name: &str,
    entries: &[NotificationRecord],
    resource_version: Option<&str>,
) -> Result<Tenant, kube::Error> {
    let mut patch = json!({
        "apiVersion": "mailsec.io/v1alpha1",
        "kind": "Tenant",
        "metadata": { "name": name },
        "status": { "notifications": entries },
    });
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}
