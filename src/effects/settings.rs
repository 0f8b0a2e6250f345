//! The settings ConfigMap the filtering workloads mount: one per tenant in each of its
//! `workloadNamespaces`, one key per product (`<product>.json`), owned by the Tenant.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::FIELD_MANAGER;
use crate::api::Tenant;
use crate::engine::settings::ProductSettings;
use crate::engine::workloads::TENANT_LABEL;

/// Label on every object the operator creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "mailsec-operator");

/// The ConfigMap's name for a tenant.
pub fn configmap_name(tenant: &str) -> String {
    format!("mailsec-settings-{tenant}")
}

/// The settings a ConfigMap holds now, per product (keys that are not valid JSON are skipped).
pub fn read(cm: &ConfigMap) -> ProductSettings {
    cm.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            Some((
                k.strip_suffix(".json")?.to_string(),
                serde_json::from_str(v).ok()?,
            ))
        })
        .collect()
}

/// The `data` of the ConfigMap for these settings (stable formatting, so equal settings give
/// equal text and no write).
pub fn render(settings: &ProductSettings) -> BTreeMap<String, String> {
    settings
        .iter()
        .map(|(p, v)| {
            (
                format!("{p}.json"),
                serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into()),
            )
        })
        .collect()
}

/// Writes the ConfigMap into `namespace` unless `current` already holds `data`.
pub async fn apply(
    client: &Client,
    tenant: &Tenant,
    namespace: &str,
    data: &BTreeMap<String, String>,
    current: Option<&ConfigMap>,
) -> Result<bool, kube::Error> {
    let tenant_name = tenant.name_any();
    if current.and_then(|c| c.data.as_ref()) == Some(data) {
        return Ok(false);
    }
    let owner = tenant.controller_owner_ref(&());
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(&tenant_name),
            "namespace": namespace,
            "labels": { TENANT_LABEL: tenant_name, MANAGED_BY.0: MANAGED_BY.1 },
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "data": data,
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.patch(
        &configmap_name(&tenant_name),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(true)
}
