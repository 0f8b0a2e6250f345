//! Status writes: server-side apply on the status subresource, and only when something changed.

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FIELD_MANAGER;
use crate::api::CacheForm;

/// Applies `desired` as the status of `name` unless `current` (cached: see [`CacheForm`])
/// already says the same.
/// Returns the object as written, or `None` when nothing was written.
pub async fn apply_if_changed<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    desired: &S,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq + Clone + CacheForm,
{
    apply_if_unchanged_since(api, name, current, desired, None).await
}

/// [`apply_if_changed`], and with `resource_version` only if the object is still at that
/// version: a status computed from a stale read is refused (HTTP 409) instead of written.
pub async fn apply_if_unchanged_since<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    desired: &S,
    resource_version: Option<&str>,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq + Clone + CacheForm,
{
    if current.is_some_and(|current| desired.same_as_cached(current)) {
        return Ok(None);
    }
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({ "name": name, "resourceVersion": rv });
    }
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    // `mailsec_status_writes_total{kind,result}`.
    crate::metrics::STATUS_WRITES.record(&K::kind(&()), written.is_ok());
    written.map(Some)
}
