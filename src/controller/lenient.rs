//! Decoding one object at a time, so that no single stored object stops a whole watch.
//!
//! kube-runtime's watcher decodes a list page (`ObjectList<K>`) or a watch event in one serde
//! pass: one object the Rust type can not hold (settings nested deeper than serde_json's
//! recursion limit of 128, an integer out of the field's range, an object stored before a
//! schema rule existed) fails the whole page, the cache never fills and no object of that kind
//! is reconciled (kube-rs/kube#774 describes the same for a changed field type). Here the
//! watcher's type is [`Lenient<K>`]: each item is first captured as raw JSON text
//! ([`serde_json::value::RawValue`]; serde_json skips a value iteratively, without a recursion
//! limit: a unit test below checks it), then decoded as `K` on its own. An item that does not
//! decode becomes [`Lenient::Bad`] with its metadata (read leniently) and the error, and the
//! feed ([`super::feed`]) keeps it out of the cache, reports it ([`Reporter`]: log, metric,
//! Event and a `Stalled` condition on the object) and looks at it again whenever it changes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

use crate::effects::events::{Notice, unreadable_notice};
use crate::metrics::Metrics;

/// Field manager of the `Stalled` condition written on an object the operator can not read (its
/// own manager, so the controllers' status applies neither take it over nor remove it by accident).
pub const FIELD_MANAGER: &str = "mailsec-operator-lenient";
/// Reason of the Event and of the `Stalled` condition.
pub const REASON: &str = crate::api::Reason::InvalidObject.as_str();

/// An object of kind `K` as it came from the API server: decoded, or not decodable.
#[derive(Clone, Debug)]
pub enum Lenient<K> {
    Good(K),
    Bad(Box<Undecodable>),
}

/// An object that could not be decoded as its Rust type.
#[derive(Clone, Debug, PartialEq)]
pub struct Undecodable {
    /// Its metadata, decoded on its own (empty if even that failed).
    pub meta: ObjectMeta,
    /// Why it could not be decoded, without serde's `at line L column C` (the position moves
    /// whenever metadata changes, so it would make every change look like a new problem).
    pub error: String,
}

impl<K: DeserializeOwned> Lenient<K> {
    /// Decodes one object from its JSON text, without its `metadata.managedFields`.
    pub fn decode(text: &str) -> Self {
        let text = without_managed_fields(text);
        match serde_json::from_str::<K>(&text) {
            Ok(k) => Self::Good(k),
            Err(err) => Self::Bad(Box::new(Undecodable {
                meta: metadata_of(&text),
                error: without_position(&err),
            })),
        }
    }
}

/// `text` with the value of `metadata.managedFields` replaced by `null`, or `text` itself if it
/// has none (or is not an object with a readable `metadata`: the decoder then says what is wrong).
///
/// Nothing the operator or its commands do reads `managedFields`: the caches drop it, and it is
/// often the largest part of an object (every field manager lists every field it owns, the
/// operator's own status manager every condition, milestone and service). Decoded, it is a
/// tree of maps, one allocation per field; skipped, it costs one scan of the text and one copy.
/// It is also as deep as the object's deepest field plus a few levels, so an object whose own
/// fields decode is no longer refused for the depth of its `managedFields`.
fn without_managed_fields(text: &str) -> Cow<'_, str> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        metadata: Option<Fields<'a>>,
    }
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(borrow, default, rename = "managedFields")]
        managed_fields: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(Head {
        metadata: Some(Fields {
            managed_fields: Some(raw),
        }),
    }) = serde_json::from_str::<Head>(text)
    else {
        return Cow::Borrowed(text);
    };
    // `raw` borrows from `text`: its place in `text` is the distance between the two.
    let value = raw.get();
    let start = (value.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let end = start.saturating_add(value.len());
    let (Some(before), Some(after)) = (text.get(..start), text.get(end..)) else {
        return Cow::Borrowed(text);
    };
    let mut slim = String::with_capacity(before.len() + 4 + after.len());
    slim.push_str(before);
    slim.push_str("null");
    slim.push_str(after);
    Cow::Owned(slim)
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Capturing the raw text only scans it (iteratively: no recursion limit), so a page
        // decodes whatever its items hold; each item is then decoded on its own.
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Self::decode(raw.get()))
    }
}

/// Reads the identity of an object from its `metadata`; every other field is skipped
/// (`IgnoredAny`, iterative). Not the whole `ObjectMeta`: `managedFields` mirrors the object's
/// field tree (`f:settings: {f:a: {f:k: ...}}`), so it is exactly as deep as the object.
fn metadata_of(text: &str) -> ObjectMeta {
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Identity {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        generation: Option<i64>,
    }
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        metadata: Identity,
    }
    let id = serde_json::from_str::<Head>(text)
        .map(|h| h.metadata)
        .unwrap_or_default();
    ObjectMeta {
        name: id.name,
        namespace: id.namespace,
        uid: id.uid,
        resource_version: id.resource_version,
        generation: id.generation,
        ..Default::default()
    }
}

fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) if err.line() > 0 => text[..i].to_string(),
        _ => text,
    }
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Good(k) => k.meta(),
            Self::Bad(u) => &u.meta,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Good(k) => k.meta_mut(),
            Self::Bad(u) => &mut u.meta,
        }
    }
}

/// The cache key of an object: `namespace/name`, or `name` for a cluster-scoped one.
pub fn key_of(meta: &ObjectMeta) -> String {
    key(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The key of the object `name` in `namespace` (see [`key_of`]; names never hold a `/`).
pub fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// What a feed tells its [`Reporter`].
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// The object (key) can not be decoded.
    Bad(String, Box<Undecodable>),
    /// The object (key) decodes again.
    Fixed(String),
    /// The object (key) is gone (deleted, or absent from a re-list).
    Gone(String),
}

/// Whether the reporter writes a `Stalled` condition into the object's status (the operator's
/// own CRDs, whose status has `conditions`), or only logs, counts and publishes an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Write,
    None,
}

/// Reports the undecodable objects of one kind: a warning in the log, the gauge
/// `mailsec_undecodable_objects{kind}`, a Warning Event `InvalidObject` on the object and,
/// for the operator's own kinds, a `Stalled` condition (reason `InvalidObject`) in its status,
/// removed again once it decodes. A report that could not be written is retried with backoff
/// (1 s doubling to 5 minutes); each problem is reported once per distinct error.
pub struct Reporter<K> {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub condition: Condition,
    pub _kind: std::marker::PhantomData<fn() -> K>,
}

/// The longest wait between two attempts to report an object.
const MAX_RETRY: Duration = Duration::from_secs(300);

impl<K> Reporter<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::Scope: Send,
{
    /// Runs until the feed stops sending.
    pub async fn run(self, reports: mpsc::UnboundedReceiver<Report>) {
        let kind = K::kind(&()).to_string();
        // Per object: the problem, whether it is reported, and the retry state.
        let mut bad: BTreeMap<String, Pending> = BTreeMap::new();
        let (retry_tx, retry_rx) = mpsc::unbounded::<String>();
        let mut inputs =
            futures::stream::select(reports.map(Input::Report), retry_rx.map(Input::Retry));
        while let Some(input) = inputs.next().await {
            let key = match input {
                Input::Report(Report::Bad(key, problem)) => {
                    match bad.get_mut(&key) {
                        Some(p) if p.problem.error == problem.error => {
                            p.problem.meta = problem.meta; // newer resourceVersion
                            continue; // already reported (or being retried)
                        }
                        Some(p) => {
                            p.problem = problem;
                            p.reported = false;
                        }
                        None => {
                            bad.insert(
                                key.clone(),
                                Pending {
                                    problem,
                                    reported: false,
                                    failures: 0,
                                    retrying: false,
                                },
                            );
                        }
                    }
                    self.metrics.set_undecodable(&kind, bad.len());
                    key
                }
                Input::Report(Report::Fixed(key)) => {
                    if let Some(p) = bad.remove(&key) {
                        self.metrics.set_undecodable(&kind, bad.len());
                        tracing::info!(kind = %kind, object = %key, "object decodes again: reconciled as usual");
                        if self.condition == Condition::Write
                            && let Err(err) = self.clear_condition(&p.problem.meta).await
                        {
                            tracing::warn!(kind = %kind, object = %key, error = %err, "could not remove the Stalled condition");
                        }
                    }
                    continue;
                }
                Input::Report(Report::Gone(key)) => {
                    if bad.remove(&key).is_some() {
                        self.metrics.set_undecodable(&kind, bad.len());
                    }
                    continue;
                }
                Input::Retry(key) => {
                    if let Some(p) = bad.get_mut(&key) {
                        p.retrying = false;
                    }
                    key
                }
            };
            let Some(p) = bad.get_mut(&key) else { continue };
            if p.reported || p.retrying {
                continue;
            }
            tracing::warn!(kind = %kind, object = %key, error = %p.problem.error,
                "object can not be decoded: skipped (other objects are reconciled as usual) until it changes");
            match self.report(&p.problem).await {
                Ok(()) => {
                    p.reported = true;
                    p.failures = 0;
                }
                Err(err) => {
                    p.failures = p.failures.saturating_add(1);
                    let wait = Duration::from_secs(1u64 << (p.failures - 1).min(9)).min(MAX_RETRY);
                    tracing::warn!(kind = %kind, object = %key, error = %err, retry_in = ?wait, "could not report an undecodable object");
                    p.retrying = true;
                    let tx = retry_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = tx.unbounded_send(key);
                    });
                }
            }
        }
    }

    fn reference(meta: &ObjectMeta) -> ObjectReference {
        ObjectReference {
            api_version: Some(K::api_version(&()).to_string()),
            kind: Some(K::kind(&()).to_string()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..Default::default()
        }
    }

    /// The message people see, in the Event and the condition.
    pub fn message(problem: &Undecodable) -> String {
        Self::notice(problem).note
    }

    fn notice(problem: &Undecodable) -> Notice {
        unreadable_notice(&K::kind(&()), &problem.error)
    }

    async fn report(&self, problem: &Undecodable) -> Result<(), kube::Error> {
        let Notice {
            reason,
            note: message,
            action,
            ..
        } = Self::notice(problem);
        // Not through the shared Recorder's series cache: one Event per distinct problem. The
        // note is sent as built, so that it reads exactly like the condition's message.
        self.recorder
            .publish(
                &Event {
                    type_: EventType::Warning,
                    reason,
                    note: Some(message.clone()),
                    action,
                    secondary: None,
                },
                &Self::reference(&problem.meta),
            )
            .await?;
        if self.condition == Condition::Write {
            self.set_condition(&problem.meta, &message).await?;
        }
        Ok(())
    }

    /// Conditions are only written for the operator's own kinds, which are cluster-scoped.
    fn api(&self, _meta: &ObjectMeta) -> Api<Lenient<K>> {
        Api::all_with(self.client.clone(), &())
    }

    async fn set_condition(&self, meta: &ObjectMeta, message: &str) -> Result<(), kube::Error> {
        let Some(name) = meta.name.as_deref() else {
            return Ok(());
        };
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let status = serde_json::json!({ "conditions": [{
            "type": crate::api::ConditionType::Stalled.as_str(),
            "status": "True",
            "reason": REASON,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": meta.generation,
        }]});
        self.apply_status(meta, name, status).await
    }

    async fn clear_condition(&self, meta: &ObjectMeta) -> Result<(), kube::Error> {
        let Some(name) = meta.name.as_deref() else {
            return Ok(());
        };
        // Applying nothing under this field manager removes the condition it owned.
        self.apply_status(meta, name, serde_json::json!({})).await
    }

    /// Applies `status` as this field manager's whole share of the object's status.
    async fn apply_status(
        &self,
        meta: &ObjectMeta,
        name: &str,
        status: serde_json::Value,
    ) -> Result<(), kube::Error> {
        let patch = StatusPatch {
            api_version: K::api_version(&()).to_string(),
            kind: K::kind(&()).to_string(),
            status,
        };
        // The response is decoded as Lenient<K>: it can hold the same undecodable object.
        self.api(meta)
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
    }
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct StatusPatch {
    api_version: String,
    kind: String,
    status: serde_json::Value,
}

enum Input {
    Report(Report),
    Retry(String),
}

struct Pending {
    problem: Box<Undecodable>,
    reported: bool,
    failures: u32,
    retrying: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Tenant;
    use kube::core::ObjectList;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "{\"k\":".repeat(depth), "}".repeat(depth))
    }

    fn tenant_json(name: &str, settings: &str) -> String {
        format!(
            r#"{{"apiVersion":"mailsec.io/v1alpha1","kind":"Tenant","metadata":{{"name":"{name}","resourceVersion":"7","managedFields":[{{"manager":"kubectl","operation":"Apply","fieldsType":"FieldsV1","fieldsV1":{{"f:spec":{{"f:a":{settings}}}}}}}]}},"spec":{{"services":[{{"product":"email-safeguard","settings":{{"a":{settings}}}}}]}}}}"#
        )
    }

    /// The claim this module rests on: serde_json skips (and captures as raw text) a value
    /// nested far deeper than its recursion limit, while decoding it fails.
    #[test]
    fn skipping_and_raw_capture_have_no_recursion_limit() {
        let deep = nested(100_000);
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
        serde_json::from_str::<serde::de::IgnoredAny>(&deep).expect("skipped iteratively");
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_str(&deep).expect("captured iteratively");
        assert_eq!(raw.get().len(), deep.len());
    }

    /// `managedFields` is not decoded: an object decodes as it would without it, also one whose
    /// `managedFields` alone are too deep for the decoder, or malformed.
    #[test]
    fn managed_fields_are_not_decoded() {
        // What the object decodes to without its managedFields, written out again.
        let plain = |text: &str| -> serde_json::Value {
            let mut value: serde_json::Value = serde_json::from_str(text).expect("JSON");
            if let Some(meta) = value["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
            let tenant: Tenant = serde_json::from_value(value).expect("decodes");
            serde_json::to_value(tenant).expect("encodes")
        };
        let settings_100 = tenant_json("deep-fields", &nested(100));
        for (text, like) in [
            (tenant_json("shallow", "{\"b\":[true]}"), None),
            // Settings at depth 100, their managedFields entry deeper than the limit of 128.
            (
                settings_100.replace(
                    "\"fieldsV1\":{",
                    &format!("\"fieldsV1\":{{\"f:x\":{},", nested(200)),
                ),
                Some(settings_100.as_str()),
            ),
            (
                r#"{"metadata":{"name":"odd","managedFields":{"not":"a list"}},"spec":{}}"#.into(),
                None,
            ),
            (r#"{"metadata":{"name":"none"},"spec":{}}"#.into(), None),
            (
                r#"{"metadata":{"name":"null","managedFields":null},"spec":{}}"#.into(),
                None,
            ),
        ] {
            let Lenient::<Tenant>::Good(t) = Lenient::decode(&text) else {
                panic!("not decoded: {text}")
            };
            assert_eq!(t.metadata.managed_fields, None);
            let expected = plain(like.unwrap_or(&text));
            assert_eq!(serde_json::to_value(&t).ok(), Some(expected), "{text}");
        }
        // Whitespace and escapes around the value are kept as they are.
        let spaced =
            r#"{ "metadata" : { "managedFields" : [ {"manager":"a\"b"} ] , "name" : "s" } }"#;
        assert_eq!(
            without_managed_fields(spaced),
            r#"{ "metadata" : { "managedFields" : null , "name" : "s" } }"#
        );
        // Not an object, or no metadata: the text as it is, for the decoder to judge.
        for text in ["[1]", "{\"kind\":\"Tenant\"}", "{\"metadata\":7}", "{"] {
            assert!(matches!(without_managed_fields(text), Cow::Borrowed(t) if t == text));
        }
    }

    /// One undecodable item no longer fails the list page: the others decode.
    #[test]
    fn one_bad_item_does_not_fail_the_page() {
        let page = format!(
            r#"{{"apiVersion":"mailsec.io/v1alpha1","kind":"TenantList","metadata":{{"resourceVersion":"9"}},"items":[{},{},{}]}}"#,
            tenant_json("ok-1", "1"),
            tenant_json("deep", &nested(300)),
            tenant_json("ok-2", "{\"b\":[true]}"),
        );
        assert!(
            serde_json::from_str::<ObjectList<Tenant>>(&page)
                .unwrap_err()
                .to_string()
                .contains("recursion limit exceeded"),
            "what a plain watcher sees"
        );
        let list: ObjectList<Lenient<Tenant>> = serde_json::from_str(&page).expect("page decodes");
        let names: Vec<(String, bool)> = list
            .items
            .iter()
            .map(|l| (key_of(l.meta()), matches!(l, Lenient::Good(_))))
            .collect();
        assert_eq!(
            names,
            [
                ("ok-1".to_string(), true),
                ("deep".to_string(), false),
                ("ok-2".to_string(), true)
            ]
        );
        let Lenient::Bad(bad) = &list.items[1] else {
            unreachable!()
        };
        assert_eq!(bad.error, "recursion limit exceeded");
        assert_eq!(bad.meta.resource_version.as_deref(), Some("7"));
    }

    /// An integer out of the Rust field's range in status (attempts is a u32).
    #[test]
    fn an_out_of_range_status_integer_is_reported_with_its_cause() {
        let text = r#"{"apiVersion":"mailsec.io/v1alpha1","kind":"Tenant","metadata":{"name":"big"},"spec":{},"status":{"notifications":[{"id":"x","milestone":"m","channel":"Email","recipient":"a@b.c","state":"Pending","attempts":1099511627776}]}}"#;
        let Lenient::<Tenant>::Bad(bad) = Lenient::decode(text) else {
            panic!("decoded")
        };
        assert!(bad.error.contains("1099511627776"), "{}", bad.error);
        assert!(!bad.error.contains(" at line "), "{}", bad.error);
        assert_eq!(bad.meta.name.as_deref(), Some("big"));
    }

    /// A watch event (adjacently tagged, `type` first as the API server writes it) decodes too.
    #[test]
    fn a_bad_watch_event_decodes_as_bad() {
        let line = format!(
            r#"{{"type":"MODIFIED","object":{}}}"#,
            tenant_json("deep", &nested(300))
        );
        let event: kube::core::WatchEvent<Lenient<Tenant>> =
            serde_json::from_str(&line).expect("event decodes");
        assert!(matches!(
            event,
            kube::core::WatchEvent::Modified(Lenient::Bad(_))
        ));
    }
}
