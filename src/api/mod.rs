//! The API types: `Tenant` and `Subscription` (`mailsec.io/v1alpha1`, cluster-scoped).
//! Their doc comments are what `kubectl explain` shows.

pub mod bounds;
pub mod cache_form;
pub mod cel;
pub mod condition;
pub mod date;
pub mod events;
pub mod labels;
pub mod milestone;
pub mod names;
pub mod subscription;
pub mod tenant;
pub mod workload;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    JSONSchemaPropsOrStringArray,
};

pub use cache_form::{CacheForm, product_word};
pub use condition::{Condition, ConditionStatus, ConditionType, Reason, Word};
pub use date::LicenseDate;
pub use events::EventReason;
pub use milestone::MilestoneKind;
pub use names::{NamespaceName, TenantName};
pub use subscription::{
    Extension, Plan, Subscription, SubscriptionPhase, SubscriptionSpec, SubscriptionStatus,
    Transfer,
};
pub use tenant::{
    Admin, Locale, MilestoneRecord, NotificationChannel, NotificationRecord, NotificationState,
    PossibleDuplicate, ServicePhase, ServiceSpec, ServiceStatus, Tenant, TenantPhase, TenantSpec,
    TenantStatus,
};
pub use workload::WorkloadKind;

/// The API group of both resources.
pub const GROUP: &str = "mailsec.io";

/// The product ids of the default catalogue, the base service first (the operator's
/// `--base-product` and `--add-ons` change the catalogue; these are shared as static words in
/// its caches either way).
pub const DEFAULT_CATALOGUE: [&str; 3] = [
    "email-safeguard",
    "email-threat-detection-response",
    "email-threat-isolation",
];

/// The CRDs as one multi-document YAML stream, as `mailsec-operator crd` prints it and `crds/` holds it.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// Both CRDs, with only the schema `format`s Kubernetes knows (see [`known_formats_only`]).
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt;
    let mut crds = vec![Tenant::crd(), Subscription::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                known_formats_only(schema);
            }
        }
    }
    crds
}

/// The `format`s the API server validates or passes on without a warning: the string formats of
/// apiextensions-apiserver (`validation/formats.go`) and the OpenAPI number formats.
pub const KNOWN_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// Replaces the `format`s schemars writes for Rust integer types that OpenAPI does not know
/// (`uint32`, `uint8`, `int16`, `uint64`, `uint`, ...), which `kubectl apply` reports as
/// `Warning: unrecognized format "uint32"`: the type's range becomes `minimum`/`maximum` (kept
/// where the schema already sets them) and the format `int32` or `int64`. Any other unknown format
/// is dropped. Applied to every nested schema.
pub fn known_formats_only(schema: &mut JSONSchemaProps) {
    if let Some(format) = schema.format.take() {
        let range: Option<(i64, i64, &str)> = match format.as_str() {
            "int8" => Some((i8::MIN.into(), i8::MAX.into(), "int32")),
            "uint8" => Some((0, u8::MAX.into(), "int32")),
            "int16" => Some((i16::MIN.into(), i16::MAX.into(), "int32")),
            "uint16" => Some((0, u16::MAX.into(), "int32")),
            "uint32" => Some((0, u32::MAX.into(), "int64")),
            // Kubernetes stores integers as int64: larger values can not be written anyway.
            "uint64" | "uint" | "uint128" => Some((0, i64::MAX, "int64")),
            "int" | "int128" => Some((i64::MIN, i64::MAX, "int64")),
            _ => None,
        };
        match range {
            Some((min, max, known)) => {
                // The bounds as JSON numbers (f64): i64's ends round to ±2^63, which the API
                // server takes as it is (it compares them as floats).
                schema.minimum = Some(schema.minimum.map_or(min as f64, |m| m.max(min as f64)));
                schema.maximum = Some(schema.maximum.map_or(max as f64, |m| m.min(max as f64)));
                schema.format = Some(known.to_string());
            }
            None if KNOWN_FORMATS.contains(&format.as_str()) => schema.format = Some(format),
            None => {}
        }
    }
    let nested = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(
            schema
                .pattern_properties
                .iter_mut()
                .flat_map(|p| p.values_mut()),
        )
        .chain(schema.definitions.iter_mut().flat_map(|p| p.values_mut()))
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    for child in nested {
        known_formats_only(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(s)) => known_formats_only(s),
        Some(JSONSchemaPropsOrArray::Schemas(list)) => list.iter_mut().for_each(known_formats_only),
        None => {}
    }
    for extra in [
        schema.additional_properties.as_mut(),
        schema.additional_items.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let JSONSchemaPropsOrBool::Schema(s) = extra {
            known_formats_only(s);
        }
    }
    for dependency in schema.dependencies.iter_mut().flat_map(|d| d.values_mut()) {
        if let JSONSchemaPropsOrStringArray::Schema(s) = dependency {
            known_formats_only(s);
        }
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    fn formats(schema: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        match schema {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == "format" {
                        if let Some(f) = v.as_str() {
                            out.push((path.to_string(), f.to_string()));
                        }
                    } else {
                        formats(v, &format!("{path}.{k}"), out);
                    }
                }
            }
            serde_json::Value::Array(list) => {
                for (i, v) in list.iter().enumerate() {
                    formats(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_crds_use_only_formats_kubernetes_knows() {
        for crd in crds() {
            let doc = serde_json::to_value(&crd).expect("CRD as JSON");
            let mut found = Vec::new();
            formats(&doc, "", &mut found);
            assert!(
                !found.is_empty(),
                "the schemas have formats (date-time, int64)"
            );
            for (path, format) in &found {
                assert!(
                    KNOWN_FORMATS.contains(&format.as_str()),
                    "{}: format {format:?} at {path} is unknown to Kubernetes",
                    crd.metadata.name.as_deref().unwrap_or_default()
                );
            }
        }
    }

    /// The names that the description of the schema at `path` (under `openAPIV3Schema`) of
    /// `kind`'s CRD quotes in backticks.
    fn documented_names(kind: &str, path: &[&str]) -> Vec<String> {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap_or_else(|| panic!("the {kind} CRD"));
        let doc = serde_json::to_value(&crd).expect("CRD as JSON");
        let schema = path.iter().fold(
            &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            |schema, key| &schema[*key],
        );
        let description = schema["description"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}: {} has a description", path.join(".")))
            .to_string();
        description
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn crd_docs_list_exactly_the_conditions_of_each_kind() {
        use condition::{SUBSCRIPTION_CONDITIONS, TENANT_CONDITIONS};
        for (kind, types) in [
            ("Tenant", TENANT_CONDITIONS),
            ("Subscription", SUBSCRIPTION_CONDITIONS),
        ] {
            let expected: Vec<String> = types.iter().map(|t| t.as_str().to_string()).collect();
            let path = ["properties", "status", "properties", "conditions"];
            assert_eq!(documented_names(kind, &path), expected, "{kind}");
        }
    }

    #[test]
    fn crd_docs_list_every_milestone_kind() {
        let path = [
            "properties",
            "status",
            "properties",
            "milestones",
            "items",
            "properties",
            "kind",
        ];
        let expected: Vec<String> = MilestoneKind::ALL
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        assert_eq!(documented_names("Tenant", &path), expected);
    }

    #[test]
    fn unsigned_counters_keep_their_bounds() {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "Tenant")
            .expect("the Tenant CRD");
        let doc = serde_json::to_value(&crd).expect("CRD as JSON");
        let attempts = &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["notifications"]["items"]["properties"]["attempts"];
        assert_eq!(attempts["type"], "integer", "{attempts}");
        assert_eq!(attempts["format"], "int64", "{attempts}");
        assert_eq!(attempts["minimum"], 0.0, "{attempts}");
        assert_eq!(attempts["maximum"], f64::from(u32::MAX), "{attempts}");
    }

    #[test]
    fn integer_formats_become_ranges() {
        let mut schema: JSONSchemaProps = serde_json::from_value(serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "uint8"},
                "b": {"type": "integer", "format": "int16", "minimum": -5.0},
                "c": {"type": "array", "items": {"type": "integer", "format": "uint32"}},
                "d": {"type": "object", "additionalProperties": {"type": "string", "format": "bogus"}},
                "e": {"type": "string", "format": "date-time"},
            }
        }))
        .expect("schema");
        known_formats_only(&mut schema);
        let v = serde_json::to_value(&schema).expect("json");
        let p = &v["properties"];
        assert_eq!(p["a"]["format"], "int32");
        assert_eq!(
            (p["a"]["minimum"].as_f64(), p["a"]["maximum"].as_f64()),
            (Some(0.0), Some(255.0))
        );
        assert_eq!(
            p["b"]["minimum"].as_f64(),
            Some(-5.0),
            "a tighter bound is kept"
        );
        assert_eq!(p["b"]["maximum"].as_f64(), Some(32767.0));
        assert_eq!(p["c"]["items"]["format"], "int64");
        assert_eq!(p["c"]["items"]["maximum"].as_f64(), Some(4294967295.0));
        assert!(
            p["d"]["additionalProperties"].get("format").is_none(),
            "{v}"
        );
        assert_eq!(p["e"]["format"], "date-time");
    }
}
