//! Reading Tenant and Subscription manifests from files, directories or standard input, as people
//! keep them in Git: multi-document YAML (or JSON), `List` objects, other kinds mixed in.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::api::{GROUP, Subscription, Tenant};
use crate::engine::World;

mod block_yaml;

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
    /// The original documents, in the order of `world.tenants` (empty when not kept, see
    /// [`read_paths_with`]).
    pub tenant_documents: Vec<Value>,
    /// The original documents, in the order of `world.subscriptions` (empty when not kept).
    pub subscription_documents: Vec<Value>,
    /// Where each object came from, for the message about a second definition: (kind, name) →
    /// (index in `paths`, document). A map, as a list searched per object is quadratic in a
    /// fleet's 300,000 objects.
    sources: HashMap<(Kind, String), (usize, usize)>,
    /// The paths of the texts read, for `sources`.
    paths: Vec<String>,
}

/// Reads every `.yaml`, `.yml` and `.json` file under each path (recursively, in name order);
/// `-` reads standard input.
///
/// Files are parsed on every core at once (parsing is most of the time over a fleet's manifests)
/// and then added in the order above, so the objects, and the first error reported, are the same
/// as when reading them one by one.
pub fn read_paths(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    read_paths_with(paths, true)
}

/// [`read_paths`]; with `documents: false` the original documents are not kept (outputs that do
/// not show them: a fleet's documents take more memory than its objects).
pub fn read_paths_with(paths: &[PathBuf], documents: bool) -> Result<Manifests, ManifestError> {
    let (sources, stopped) = list_sources(paths);
    let parsed = parse_all(&sources, documents);
    let mut out = Manifests::default();
    out.reserve(&parsed);
    for (path, read) in parsed {
        let (objects, error) = read?;
        out.add_parsed(&path, objects)?;
        if let Some(error) = error {
            return Err(error);
        }
    }
    match stopped {
        Some(error) => Err(error),
        None => Ok(out),
    }
}

/// A text to read: a file (read by the thread that parses it), or standard input, read first.
enum Source {
    File(PathBuf),
    Text { path: String, text: String },
}

/// The texts to read, in order; and the error that stopped the listing, if any (reported after
/// the texts before it, as they would be read first).
fn list_sources(paths: &[PathBuf]) -> (Vec<Source>, Option<ManifestError>) {
    let mut sources = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            if let Err(source) = std::io::stdin().read_to_string(&mut text) {
                let path = "-".into();
                return (sources, Some(ManifestError::Io { path, source }));
            }
            let path = "<stdin>".to_string();
            sources.push(Source::Text { path, text });
            continue;
        }
        match files_under(path) {
            Ok(files) => sources.extend(files.into_iter().map(Source::File)),
            Err(error) => return (sources, Some(error)),
        }
    }
    (sources, None)
}

/// One source read and parsed: its path for messages, and what it holds, or why it could not be
/// read.
type SourceRead = (String, Result<Parsed, ManifestError>);

/// Reads and parses one source; a file's text is dropped as soon as it is parsed, so a fleet's
/// texts are never held at once.
fn read_source(source: &Source, documents: bool) -> SourceRead {
    match source {
        Source::Text { path, text } => (path.clone(), Ok(parse_text(path, text, documents))),
        Source::File(file) => {
            let path = file.display().to_string();
            let read = match std::fs::read_to_string(file) {
                Ok(text) => Ok(parse_text(&path, &text, documents)),
                Err(source) => Err(ManifestError::Io {
                    path: path.clone(),
                    source,
                }),
            };
            (path, read)
        }
    }
}

/// [`read_source`] of every source, on as many threads as there are cores, results in input
/// order.
fn parse_all(sources: &[Source], documents: bool) -> Vec<SourceRead> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(sources.len());
    if threads <= 1 {
        return sources.iter().map(|s| read_source(s, documents)).collect();
    }
    // Files differ in size: threads take the next file when done, rather than a fixed share.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, SourceRead)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(source) = sources.get(i) else {
                            return mine;
                        };
                        mine.push((i, read_source(source, documents)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(mine) => mine,
                // A panic in the parser is a bug: pass it on as if parsing on this thread.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, read)| read).collect()
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

/// One of our objects, read from a document and checked on its own; whether it is defined twice
/// is only known when it is added.
#[derive(Debug)]
struct Object {
    document: usize,
    kind: Kind,
    name: String,
    /// The document, when kept.
    value: Option<Value>,
    /// The typed object, or why the document is not one.
    typed: Result<Typed, ManifestError>,
}

/// The two kinds read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Tenant,
    Subscription,
}

impl Kind {
    fn from_name(kind: &str) -> Option<Kind> {
        match kind {
            "Tenant" => Some(Kind::Tenant),
            "Subscription" => Some(Kind::Subscription),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "Tenant",
            Kind::Subscription => "Subscription",
        }
    }
}

#[derive(Debug)]
enum Typed {
    Tenant(Box<Tenant>),
    Subscription(Box<Subscription>),
}

/// What one text holds: the objects up to the first error, and that error.
type Parsed = (Vec<Object>, Option<ManifestError>);

/// Reads the documents of one YAML (or JSON) text: our objects, until the first error.
fn parse_text(path: &str, text: &str, documents: bool) -> Parsed {
    parse_json(path, text, documents)
        .or_else(|| parse_block_yaml(path, text, documents))
        .unwrap_or_else(|| parse_yaml(path, text, documents))
}

/// The documents of a YAML text in the subset [`block_yaml`] reads (nearly every manifest),
/// each read as JSON: the same objects and errors as [`parse_yaml`], several times faster.
/// `None` for a text outside that subset.
fn parse_block_yaml(path: &str, text: &str, documents: bool) -> Option<Parsed> {
    let mut objects = Vec::new();
    for (index, json) in block_yaml::to_json(text)?.iter().enumerate() {
        let header = serde_json::from_str::<Header>(json).ok();
        let read = parse_json_document(path, index + 1, json, header, documents, &mut objects);
        if let Err(error) = read {
            return Some((objects, Some(error)));
        }
    }
    Some((objects, None))
}

/// Reads the documents of one YAML text.
fn parse_yaml(path: &str, text: &str, documents: bool) -> Parsed {
    let mut objects = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value = match Value::deserialize(doc) {
            Ok(value) => value,
            Err(e) => {
                let message = e.to_string();
                let path = path.to_string();
                let error = ManifestError::Yaml {
                    path,
                    document,
                    message,
                };
                return (objects, Some(error));
            }
        };
        if let Err(error) = parse_value(path, document, value, documents, &mut objects) {
            return (objects, Some(error));
        }
    }
    (objects, None)
}

/// A text that is one JSON value (what `kubectl get -o json` writes) is read by serde_json, an
/// order of magnitude faster than the YAML reader, with the same result (JSON is YAML). `None`
/// when the text is not JSON: it is then read as YAML, which also words the error of a broken
/// JSON text.
fn parse_json(path: &str, text: &str, documents: bool) -> Option<Parsed> {
    if !text.trim_start().starts_with(['{', '[']) {
        return None;
    }
    let header = serde_json::from_str::<Header>(text).ok();
    if header.is_none() && serde_json::from_str::<IgnoredAny>(text).is_err() {
        return None;
    }
    let mut objects = Vec::new();
    let error = parse_json_document(path, 1, text, header, documents, &mut objects).err();
    Some((objects, error))
}

/// What is read of a JSON document before deciding what it is; the rest is skipped unread.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metadata: Option<HeaderMetadata<'a>>,
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct HeaderMetadata<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// [`parse_value`] of one valid JSON document, read straight into its typed object: a fleet's
/// objects are then never built as generic values (most of the reading time, and memory, when
/// they were). Anything this does not read as the generic reader would (a document that keeps
/// its original, a field twice or of an unexpected type, which leaves no `header`, an invalid
/// object, whose message must be the generic reader's) is handed to [`parse_value`].
fn parse_json_document(
    path: &str,
    document: usize,
    json: &str,
    header: Option<Header<'_>>,
    documents: bool,
    objects: &mut Vec<Object>,
) -> Result<(), ManifestError> {
    let generic = |objects: &mut Vec<Object>| match serde_json::from_str::<Value>(json) {
        Ok(value) => parse_value(path, document, value, documents, objects),
        // Unreachable for a document of a text that was read as JSON; no object then.
        Err(_) => Ok(()),
    };
    let header = match header {
        Some(header) if !documents => header,
        _ => return generic(objects),
    };
    let kind = header.kind.as_deref().unwrap_or_default();
    if kind == "List" || kind.ends_with("List") && header.items.is_some() {
        let items = header.items.unwrap_or_default();
        objects.reserve(items.len());
        for item in items {
            let header = serde_json::from_str::<Header>(item.get()).ok();
            parse_json_document(path, document, item.get(), header, documents, objects)?;
        }
        return Ok(());
    }
    let name = header
        .metadata
        .as_ref()
        .and_then(|m| m.name.as_deref())
        .unwrap_or_default();
    let served = header
        .api_version
        .as_deref()
        .and_then(|v| v.strip_prefix(GROUP)?.strip_prefix('/'))
        == Some("v1alpha1");
    let typed = match Kind::from_name(kind) {
        _ if !served || name.is_empty() => None,
        Some(Kind::Tenant) => serde_json::from_str(json)
            .ok()
            .map(|t| (Kind::Tenant, Typed::Tenant(Box::new(t)))),
        Some(Kind::Subscription) => serde_json::from_str(json)
            .ok()
            .map(|s| (Kind::Subscription, Typed::Subscription(Box::new(s)))),
        None => None,
    };
    match typed {
        Some((kind, typed)) => {
            objects.push(Object {
                document,
                kind,
                name: name.to_string(),
                value: None,
                typed: Ok(typed),
            });
            Ok(())
        }
        // Not ours (skipped the same way), or ours with something to say about it.
        None => generic(objects),
    }
}

/// Adds the object of one document (or each item of a `List`) to `objects`; other kinds are
/// skipped.
fn parse_value(
    path: &str,
    document: usize,
    mut value: Value,
    documents: bool,
    objects: &mut Vec<Object>,
) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(()); // an empty document, e.g. a trailing `---`
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
        if let Some(Value::Array(items)) = value.get_mut("items").map(Value::take) {
            for item in items {
                parse_value(path, document, item, documents, objects)?;
            }
        }
        return Ok(());
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ours = api_version.split('/').next() == Some(GROUP);
    let Some(kind) = Kind::from_name(&kind).filter(|_| ours) else {
        return Ok(()); // other objects (Deployments, Namespaces, ...) are not evaluated
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let invalid = |message: String| ManifestError::Invalid {
        path: path.to_string(),
        document,
        kind: kind.as_str().to_string(),
        name: name.clone(),
        message,
    };
    if api_version
        .strip_prefix(GROUP)
        .and_then(|v| v.strip_prefix('/'))
        != Some("v1alpha1")
    {
        return Err(invalid(format!(
            "apiVersion {api_version:?} is not served; use {GROUP}/v1alpha1"
        )));
    }
    if name.is_empty() {
        return Err(invalid("metadata.name is required".to_string()));
    }
    // A kept document is read from a borrow; otherwise by value, which moves its strings into
    // the object instead of copying them.
    fn typed<'a, D: serde::Deserializer<'a>>(kind: Kind, from: D) -> Result<Typed, D::Error> {
        Ok(match kind {
            Kind::Tenant => Typed::Tenant(Box::new(Tenant::deserialize(from)?)),
            Kind::Subscription => Typed::Subscription(Box::new(Subscription::deserialize(from)?)),
        })
    }
    let (typed, value) = if documents {
        (typed(kind, &value), Some(value))
    } else {
        (typed(kind, value), None)
    };
    let typed = typed.map_err(|e| invalid(e.to_string()));
    objects.push(Object {
        document,
        kind,
        name,
        value,
        typed,
    });
    Ok(())
}

impl Manifests {
    /// Adds every document of one YAML (or JSON) text.
    pub fn add_text(&mut self, path: &str, text: &str) -> Result<(), ManifestError> {
        let (objects, error) = parse_text(path, text, true);
        self.add_parsed(path, objects)?;
        error.map_or(Ok(()), Err)
    }

    /// Makes room for every object read, at once: a fleet's hundreds of thousands of objects
    /// are then never moved to a larger allocation.
    fn reserve(&mut self, parsed: &[SourceRead]) {
        let (mut tenants, mut subscriptions) = (0, 0);
        for (_, read) in parsed {
            for object in read.iter().flat_map(|(objects, _)| objects) {
                match object.typed {
                    Ok(Typed::Tenant(_)) => tenants += 1,
                    Ok(Typed::Subscription(_)) => subscriptions += 1,
                    Err(_) => {}
                }
            }
        }
        self.world.tenants.reserve(tenants);
        self.world.subscriptions.reserve(subscriptions);
        self.sources.reserve(tenants + subscriptions);
    }

    /// Adds the objects read from `path`, in order, until one is defined twice or invalid.
    fn add_parsed(&mut self, path: &str, objects: Vec<Object>) -> Result<(), ManifestError> {
        let path_index = self.paths.len();
        self.paths.push(path.to_string());
        for object in objects {
            let Object {
                document,
                kind,
                name,
                value,
                typed,
            } = object;
            // Checked before the object's own errors, as a second definition is the clearer
            // message.
            match self.sources.entry((kind, name)) {
                Entry::Occupied(first) => {
                    let (first_path, first_document) = *first.get();
                    let first_path = self.paths.get(first_path).map_or("", String::as_str);
                    return Err(ManifestError::Duplicate {
                        path: path.to_string(),
                        document,
                        kind: kind.as_str().to_string(),
                        name: first.key().1.clone(),
                        first: format!("{first_path}#{first_document}"),
                    });
                }
                Entry::Vacant(slot) => match typed? {
                    Typed::Tenant(tenant) => {
                        self.world.tenants.push(*tenant);
                        self.tenant_documents.extend(value);
                        slot.insert((path_index, document));
                    }
                    Typed::Subscription(sub) => {
                        self.world.subscriptions.push(*sub);
                        self.subscription_documents.extend(value);
                        slot.insert((path_index, document));
                    }
                },
            }
        }
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

    /// What a text reads as, comparable: each object's kind, name, typed form or error, and
    /// the error that stopped the reading.
    fn outcome((objects, error): Parsed) -> (Vec<String>, Option<String>) {
        let objects = objects
            .iter()
            .map(|o| format!("{} {:?} {} {:?}", o.document, o.kind, o.name, o.typed))
            .collect();
        (objects, error.map(|e| e.to_string()))
    }

    #[test]
    fn json_is_read_fast_and_as_the_yaml_reader_reads_it() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
             "spec": {"users": 10, "services": [{"product": "email-safeguard"}]}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "filter"}},
            {"apiVersion": "mailsec.io/v1alpha1", "kind": "Subscription", "metadata": {"name": "acme-esg"},
             "spec": {"tenantRef": "acme", "product": "email-safeguard", "startDate": "2026-01-01",
                      "endDate": "2026-12-31", "seats": 50, "plan": "Paid"}}]}"#;
        let texts = [
            list,
            // Invalid: the error names the object, as from YAML.
            r#"{"apiVersion": "mailsec.io/v1alpha1", "kind": "Subscription", "metadata": {"name": "x"}, "spec": {"tenantRef": "acme"}}"#,
            // A key twice: both readers keep the last.
            r#"{"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "a", "name": "b"}, "spec": {"users": 1}}"#,
            r#"[{"kind": "Tenant"}]"#,
            "{}",
            // What the typed reading hands back to the generic one: a field of another type, a
            // field twice at the top, an apiVersion not served, no name, an unknown field.
            r#"{"apiVersion": "mailsec.io/v1alpha1", "kind": 7, "metadata": {"name": "a"}}"#,
            r#"{"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "kind": "Subscription", "metadata": {"name": "a"}, "spec": {"users": 1}}"#,
            r#"{"apiVersion": "mailsec.io/v2", "kind": "Tenant", "metadata": {"name": "a"}, "spec": {}}"#,
            r#"{"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"labels": {}}, "spec": {}}"#,
            r#"{"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "a"}, "spec": {"users": 1.5}}"#,
            r#"{"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "a"}, "spec": {"users": 1, "colour": "red"}, "status": {}}"#,
            // Lists in lists, a list without items, another kind's list.
            r#"{"kind": "List", "items": [{"kind": "List", "items": [{"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "n"}, "spec": {}}]}]}"#,
            r#"{"kind": "List", "items": null}"#,
            r#"{"kind": "TenantList", "apiVersion": "mailsec.io/v1alpha1", "items": [{"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "l"}, "spec": {}}]}"#,
            r#"[null, {"kind": "List", "items": [null]}]"#,
        ];
        for text in texts {
            for documents in [true, false] {
                let fast = parse_json("f.json", text, documents).expect("read as JSON");
                assert_eq!(
                    outcome(fast),
                    outcome(parse_yaml("f.json", text, documents)),
                    "{text}"
                );
            }
        }
        let (objects, error) = parse_json("f.json", list, false).expect("JSON");
        assert_eq!((objects.len(), error.is_none()), (2, true));
        // Not JSON (YAML flow style, broken JSON): read as YAML, whose message names the fault.
        for text in ["{kind: Tenant}", r#"{"kind": "Tenant""#, "kind: Tenant"] {
            assert!(parse_json("f.json", text, true).is_none(), "{text}");
        }
        let (_, error) = parse_text("f.json", r#"{"kind": "Tenant""#, true);
        assert!(
            matches!(error, Some(ManifestError::Yaml { document: 1, .. })),
            "{error:?}"
        );
    }

    #[test]
    fn block_yaml_is_read_fast_and_as_the_yaml_reader_reads_it() {
        let tenant = |name: &str, spec: &str| {
            format!(
                "apiVersion: mailsec.io/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n{spec}"
            )
        };
        let valid = format!(
            "# a fleet\n---\n{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: filter\n---\n\
             apiVersion: mailsec.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: acme-esg\nspec:\n  \
             tenantRef: acme\n  product: email-safeguard\n  plan: Paid\n  startDate: 2026-01-01\n  \
             endDate: \"2026-12-31\"\n  seats: 50\n  sharedWith: [beta]\n---\n",
            tenant(
                "acme",
                "  users: 10\n  admins:\n  - email: a@acme.example\n  services:\n  - product: email-safeguard\n"
            )
        );
        let texts = [
            valid.clone(),
            // Empty documents count: the invalid object is named as document 4.
            format!(
                "{}---\n---\n# nothing\n---\n{}",
                tenant("a", "  users: 1\n"),
                tenant("b", "  users: ten\n")
            ),
            format!(
                "{}---\n{}",
                tenant("a", "  users: 1\n"),
                tenant("a", "  users: 2\n")
            ),
            tenant("a", "  users: 1\n  colour: red\n"),
            tenant("a", "  users: 1\n  users: 2\n"),
            tenant("a", "  users: -1\n").replace("v1alpha1", "v2"),
            tenant("", "  users: 1\n").replace("name: \n", "labels: {}\n"),
            format!(
                "apiVersion: v1\nkind: List\nitems:\n- {}",
                tenant("l", "    users: 3\n").replace('\n', "\n  ")
            ),
            "kind: TenantList\nitems: []\n".to_string(),
        ];
        for text in &texts {
            for documents in [true, false] {
                let fast = parse_block_yaml("f.yaml", text, documents).expect("read as block YAML");
                assert_eq!(
                    outcome(fast),
                    outcome(parse_yaml("f.yaml", text, documents)),
                    "{text}"
                );
            }
        }
        let (objects, error) = parse_block_yaml("f.yaml", &valid, false).expect("block YAML");
        assert_eq!((objects.len(), error.is_none()), (2, true));
        let (objects, _) = parse_block_yaml("f.yaml", &texts[1], false).expect("block YAML");
        assert!(
            matches!(
                objects[1].typed,
                Err(ManifestError::Invalid { document: 4, .. })
            ),
            "{:?}",
            objects[1]
        );
    }

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
    fn files_read_together_keep_their_order_and_first_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let tenant = |name: &str| {
            format!(
                "apiVersion: mailsec.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{}}\n---\n"
            )
        };
        // More files than cores, so that several threads parse them.
        for i in 0..12 {
            let text = format!(
                "{}{}",
                tenant(&format!("t{i:02}a")),
                tenant(&format!("t{i:02}b"))
            );
            std::fs::write(dir.path().join(format!("{i:02}.yaml")), text).expect("write");
        }
        let m = read_paths(&[dir.path().to_path_buf()]).expect("valid manifests");
        let names: Vec<_> = m
            .world
            .tenants
            .iter()
            .filter_map(|t| t.metadata.name.clone())
            .collect();
        let expected: Vec<_> = (0..12)
            .flat_map(|i| [format!("t{i:02}a"), format!("t{i:02}b")])
            .collect();
        assert_eq!(names, expected);
        assert_eq!(m.tenant_documents.len(), 24);
        assert!(
            read_paths_with(&[dir.path().to_path_buf()], false)
                .expect("valid manifests")
                .tenant_documents
                .is_empty()
        );

        // The first error in reading order wins, whichever thread found it first.
        std::fs::write(dir.path().join("03.yaml"), tenant("t00a")).expect("write");
        std::fs::write(dir.path().join("07.yaml"), "a: [").expect("write");
        let err = read_paths(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        let first = dir.path().join("00.yaml");
        let expected = format!(
            "03.yaml: document 1: Tenant \"t00a\" is defined twice (first in {}#1)",
            first.display()
        );
        assert!(err.ends_with(&expected), "{err}");

        // A file that can not be read is an error in its place too (files are read by the
        // threads that parse them): after 03's, before 07's.
        let dangling = dir.path().join("05b.yaml");
        std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).expect("symlink");
        let err = read_paths(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(&expected), "{err}");
        std::fs::write(dir.path().join("03.yaml"), tenant("t03c")).expect("write");
        let err = read_paths(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            matches!(&err, ManifestError::Io { path, .. } if path == &dangling.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn lists_are_expanded() {
        let list = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"mailsec.io/v1alpha1","kind":"Tenant","metadata":{"name":"a"},"spec":{}}]}"#;
        let mut m = Manifests::default();
        m.add_text("list.json", list).unwrap();
        assert_eq!(m.world.tenants.len(), 1);
    }
}
