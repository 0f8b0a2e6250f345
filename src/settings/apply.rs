//! The settings ConfigMap the filtering workloads mount: one per tenant in each of its
//! `workloadNamespaces` that the platform assigned to it (see `controller::context`), one key
//! per product (`<product>.json`), owned by the Tenant. Created by the operator, never taken
//! over: a ConfigMap of that name that it did not create is left alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::Tenant;
use crate::api::labels::{MANAGED_BY, TENANT_LABEL};
use crate::effects::FIELD_MANAGER;
use crate::settings::plan::ProductSettings;

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

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The ConfigMap already held the data.
    Unchanged,
    /// Created or updated.
    Written,
    /// A ConfigMap of that name exists that the operator did not create: left alone.
    NotOurs,
}

/// Whether `cm` is the settings ConfigMap the operator created for `tenant` (its labels).
pub fn is_ours(cm: &ConfigMap, tenant: &str) -> bool {
    let labels = cm.labels();
    labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        && labels.get(TENANT_LABEL).map(String::as_str) == Some(tenant)
}

/// Writes the ConfigMap into `namespace` unless `current` (the cached copy, if any) already
/// holds `data`. A ConfigMap that is not in the cache is created (POST), never taken over: if
/// one of that name exists and does not carry the operator's labels, it is left alone
/// ([`Applied::NotOurs`]). Only the operator's own ConfigMap is updated, by server-side apply
/// that takes back the fields someone else edited.
pub async fn apply(
    client: &Client,
    tenant: &Tenant,
    namespace: &str,
    data: &BTreeMap<String, String>,
    current: Option<&ConfigMap>,
) -> Result<Applied, kube::Error> {
    let tenant_name = tenant.name_any();
    let name = configmap_name(&tenant_name);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match current {
        Some(cm) if !is_ours(cm, &tenant_name) => return Ok(Applied::NotOurs),
        Some(cm) if cm.data.as_ref() == Some(data) => return Ok(Applied::Unchanged),
        Some(_) => {}
        None => {
            let new = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(
                        [
                            (TENANT_LABEL.to_string(), tenant_name.clone()),
                            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                        ]
                        .into(),
                    ),
                    owner_references: tenant.controller_owner_ref(&()).map(|o| vec![o]),
                    ..Default::default()
                },
                data: Some(data.clone()),
                ..Default::default()
            };
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            match api.create(&params, &new).await {
                Ok(_) => return Ok(Applied::Written),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // Exists: ours when the cache lags behind our own creation, else someone
                    // else's.
                    let existing = api.get(&name).await?;
                    if !is_ours(&existing, &tenant_name) {
                        return Ok(Applied::NotOurs);
                    }
                    if existing.data.as_ref() == Some(data) {
                        return Ok(Applied::Unchanged);
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }
    let owner = tenant.controller_owner_ref(&());
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { TENANT_LABEL: tenant_name, MANAGED_BY.0: MANAGED_BY.1 },
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "data": data,
    });
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(Applied::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configmap(labels: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(configmap_name("acme")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_a_configmap_labelled_as_the_operators_for_this_tenant_is_ours() {
        let ours = [(MANAGED_BY.0, MANAGED_BY.1), (TENANT_LABEL, "acme")];
        assert!(is_ours(&configmap(&ours), "acme"));
        assert!(!is_ours(&configmap(&ours), "globex"), "another tenant's");
        assert!(
            !is_ours(&configmap(&[(TENANT_LABEL, "acme")]), "acme"),
            "someone else's, labelled for the tenant"
        );
        assert!(
            !is_ours(
                &configmap(&[(MANAGED_BY.0, "helm"), (TENANT_LABEL, "acme")]),
                "acme"
            ),
            "managed by another tool"
        );
        assert!(!is_ours(&configmap(&[]), "acme"), "unlabelled");
    }
}
