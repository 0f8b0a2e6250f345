//! Name fields with schemas the API server can check cheaply (bounded length, CEL with a message).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The DNS-label shape Kubernetes uses for namespace names and this API for tenant and product ids.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

fn dns_label_schema(what: &str) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{DNS_LABEL}')"),
            "message": format!("must be {what}: lower-case letters, digits and '-', starting and ending with a letter or digit"),
        }],
    })
}

/// The name of a Tenant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantName(pub String);

impl JsonSchema for TenantName {
    fn schema_name() -> Cow<'static, str> {
        "TenantName".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        dns_label_schema("a Tenant name")
    }
}

/// The name of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NamespaceName(pub String);

impl JsonSchema for NamespaceName {
    fn schema_name() -> Cow<'static, str> {
        "NamespaceName".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        dns_label_schema("a namespace name")
    }
}

impl std::ops::Deref for TenantName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for NamespaceName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TenantName {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<&str> for NamespaceName {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}
