//! Status writes: server-side apply on the status subresource, and only when something changed.

use kube::api::{Patch, PatchParams};
use kube::core::ClusterResourceScope;
use kube::{Client, Resource};
use serde::{Deserialize, Serialize};

use super::FIELD_MANAGER;
use crate::api::CacheForm;

/// What a status write leaves to know: the version it made. The API server answers with the
/// whole object (its `managedFields` included, half of a Tenant's bytes), and the callers keep
/// only this, so the answer is read for this alone: the rest is skipped, never built.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Written {
    #[serde(default)]
    metadata: WrittenMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
struct WrittenMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

impl Written {
    /// The object's resourceVersion after the write.
    pub fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

/// The apply body, serialized straight from the borrowed status (no JSON tree in between).
#[derive(Serialize)]
struct StatusApply<'a, S> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Precondition<'a>>,
    status: &'a S,
}

/// `metadata` of an apply that must find the object still at `resource_version`.
#[derive(Serialize)]
struct Precondition<'a> {
    name: &'a str,
    #[serde(rename = "resourceVersion")]
    resource_version: &'a str,
}

/// Applies `desired` as the status of `name` unless `current` (cached: see [`CacheForm`])
/// already says the same.
/// Returns what the write made, or `None` when nothing was written.
pub async fn apply_if_changed<K, S>(
    client: &Client,
    name: &str,
    current: Option<&S>,
    desired: &S,
) -> Result<Option<Written>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>,
    S: Serialize + PartialEq + Clone + CacheForm,
{
    apply_if_unchanged_since::<K, S>(client, name, current, desired, None).await
}

/// [`apply_if_changed`], and with `resource_version` only if the object is still at that
/// version: a status computed from a stale read is refused (HTTP 409) instead of written.
pub async fn apply_if_unchanged_since<K, S>(
    client: &Client,
    name: &str,
    current: Option<&S>,
    desired: &S,
    resource_version: Option<&str>,
) -> Result<Option<Written>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>,
    S: Serialize + PartialEq + Clone + CacheForm,
{
    if current.is_some_and(|current| desired.same_as_cached(current)) {
        return Ok(None);
    }
    let (api_version, kind) = (K::api_version(&()), K::kind(&()));
    let body = StatusApply {
        api_version: &api_version,
        kind: &kind,
        metadata: resource_version.map(|resource_version| Precondition {
            name,
            resource_version,
        }),
        status: desired,
    };
    let written = send::<K, _>(client, name, &Patch::Apply(&body)).await;
    // `mailsec_status_writes_total{kind,result}`.
    crate::metrics::STATUS_WRITES.record(&kind, written.is_ok());
    written.map(Some)
}

/// `PATCH …/{name}/status` as `Api::patch_status` sends it, its answer read as [`Written`].
async fn send<K, P>(client: &Client, name: &str, patch: &Patch<P>) -> Result<Written, kube::Error>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>,
    P: Serialize,
{
    let mut request = kube::core::Request::new(K::url_path(&(), None))
        .patch_subresource(
            "status",
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            patch,
        )
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("patch_status");
    client.request::<Written>(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_read_for_its_version_alone() {
        let answer = r#"{"apiVersion":"mailsec.io/v1alpha1","kind":"Tenant",
            "metadata":{"name":"acme","resourceVersion":"4711",
              "managedFields":[{"manager":"mailsec-operator","fieldsV1":{"f:status":{"f:phase":{}}}}]},
            "spec":{"displayName":"Acme"},"status":{"phase":"Active"}}"#;
        let written: Written = serde_json::from_str(answer).expect("decodes");
        assert_eq!(written.resource_version(), Some("4711"));
        let bare: Written = serde_json::from_str("{}").expect("decodes");
        assert_eq!(bare.resource_version(), None);
    }

    #[test]
    fn the_body_is_the_status_with_its_precondition_when_there_is_one() {
        let status = serde_json::json!({"phase": "Active"});
        let plain = StatusApply {
            api_version: "mailsec.io/v1alpha1",
            kind: "Tenant",
            metadata: None,
            status: &status,
        };
        assert_eq!(
            serde_json::to_value(&plain).expect("serializes"),
            serde_json::json!({"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "status": {"phase": "Active"}})
        );
        let guarded = StatusApply {
            metadata: Some(Precondition {
                name: "acme",
                resource_version: "12",
            }),
            ..plain
        };
        assert_eq!(
            serde_json::to_value(&guarded).expect("serializes")["metadata"],
            serde_json::json!({"name": "acme", "resourceVersion": "12"})
        );
    }
}
