//! Reading Tenant and Subscription manifests from files, directories or standard input, as people
//! keep them in Git: multi-document YAML (or JSON), `List` objects, other kinds mixed in.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::api::{GROUP, Subscription, Tenant};
use crate::engine::World;

/// A manifest that could not be read, naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: document {document}: not valid YAML: {message}")]
    Yaml {
        path: String,
        document: usize,
        message: String,
    },
    #[error("{path}: document {document} ({kind} {name:?}): {message}")]
    Invalid {
        path: String,
        document: usize,
        kind: String,
        name: String,
        message: String,
    },
    #[error("{path}: document {document}: {kind} {name:?} is defined twice (first in {first})")]
    Duplicate {
        path: String,
        document: usize,
        kind: String,
        name: String,
        first: String,
    },
}

/// The objects read, each with the document it came from (kept verbatim for output).
#[derive(Debug, Default)]
pub struct Manifests {
    pub world: World,
    /// The original documents, in the order of `world.tenants`.
    pub tenant_documents: Vec<Value>,
    /// The original documents, in the order of `world.subscriptions`.
    pub subscription_documents: Vec<Value>,
    /// Where each object came from, for messages: (`kind/name`, `path#document`).
    sources: Vec<(String, String)>,
}

/// Reads every `.yaml`, `.yml` and `.json` file under each path (recursively, in name order);
/// `-` reads standard input.
pub fn read_paths(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Io {
                    path: "-".into(),
                    source,
                })?;
            out.add_text("<stdin>", &text)?;
        } else {
            for file in files_under(path)? {
                let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Io {
                    path: file.display().to_string(),
                    source,
                })?;
                out.add_text(&file.display().to_string(), &text)?;
            }
        }
    }
    Ok(out)
}

fn files_under(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(files_under(&entry)?);
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(entry);
        }
    }
    Ok(files)
}

impl Manifests {
    /// Adds every document of one YAML (or JSON) text.
    pub fn add_text(&mut self, path: &str, text: &str) -> Result<(), ManifestError> {
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let document = index + 1;
            let value = Value::deserialize(doc).map_err(|e| ManifestError::Yaml {
                path: path.to_string(),
                document,
                message: e.to_string(),
            })?;
            self.add_value(path, document, value)?;
        }
        Ok(())
    }

    fn add_value(
        &mut self,
        path: &str,
        document: usize,
        value: Value,
    ) -> Result<(), ManifestError> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if value.is_null() {
            return Ok(()); // an empty document, e.g. a trailing `---`
        }
        if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
            if let Some(items) = value.get("items").and_then(Value::as_array) {
                for item in items.clone() {
                    self.add_value(path, document, item)?;
                }
            }
            return Ok(());
        }
        let ours = api_version.split('/').next() == Some(GROUP);
        if !ours || !(kind == "Tenant" || kind == "Subscription") {
            return Ok(()); // other objects (Deployments, Namespaces, ...) are not evaluated
        }
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_string(),
            document,
            kind: kind.clone(),
            name: name.clone(),
            message,
        };
        if api_version != format!("{GROUP}/v1alpha1") {
            return Err(invalid(format!(
                "apiVersion {api_version:?} is not served; use {GROUP}/v1alpha1"
            )));
        }
        if name.is_empty() {
            return Err(invalid("metadata.name is required".to_string()));
        }
        let key = format!("{kind}/{name}");
        let here = format!("{path}#{document}");
        if let Some((_, first)) = self.sources.iter().find(|(k, _)| *k == key) {
            return Err(ManifestError::Duplicate {
                path: path.to_string(),
                document,
                kind,
                name,
                first: first.clone(),
            });
        }
        if kind == "Tenant" {
            let tenant: Tenant =
                serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            self.world.tenants.push(tenant);
            self.tenant_documents.push(value);
        } else {
            let sub: Subscription =
                serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            self.world.subscriptions.push(sub);
            self.subscription_documents.push(value);
        }
        self.sources.push((key, here));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
apiVersion: mailsec.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec: {users: 10}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: filter}
---
apiVersion: mailsec.io/v1alpha1
kind: Subscription
metadata: {name: acme-esg}
spec: {tenantRef: acme, product: email-safeguard, startDate: 2026-01-01, endDate: 2026-12-31, seats: 50}
---
"#;

    #[test]
    fn reads_our_kinds_and_skips_others() {
        let mut m = Manifests::default();
        m.add_text("two.yaml", TWO).unwrap();
        assert_eq!(m.world.tenants.len(), 1);
        assert_eq!(m.world.subscriptions.len(), 1);
        assert_eq!(m.world.subscriptions[0].spec.seats, 50);
    }

    #[test]
    fn errors_name_the_file_and_document() {
        let mut m = Manifests::default();
        // Documents are counted like `---` separators in an editor, empty ones included.
        let bad = "apiVersion: mailsec.io/v1alpha1\nkind: Subscription\nmetadata: {name: x}\nspec: {tenantRef: acme}\n";
        let err = m
            .add_text("bad.yaml", &format!("---\n{TWO}---\n{bad}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("bad.yaml: document 5 (Subscription \"x\"): missing field"),
            "{err}"
        );

        let err = Manifests::default()
            .add_text("y.yaml", "a: [")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("y.yaml: document 1: not valid YAML"),
            "{err}"
        );

        let err = Manifests::default()
            .add_text("d.yaml", &format!("{TWO}\n---\n{TWO}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Tenant \"acme\" is defined twice (first in d.yaml#1)"),
            "{err}"
        );

        let err = Manifests::default()
            .add_text(
                "v.yaml",
                "apiVersion: mailsec.io/v2\nkind: Tenant\nmetadata: {name: a}\nspec: {}\n",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("use mailsec.io/v1alpha1"), "{err}");
    }

    #[test]
    fn lists_are_expanded() {
        let list = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"mailsec.io/v1alpha1","kind":"Tenant","metadata":{"name":"a"},"spec":{}}]}"#;
        let mut m = Manifests::default();
        m.add_text("list.json", list).unwrap();
        assert_eq!(m.world.tenants.len(), 1);
    }
}
