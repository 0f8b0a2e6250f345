//! Counts the requests the operator sends to the API server, by verb: the proof that a converged
//! operator writes nothing, the "API requests per reconcile" figure and the
//! `mailsec_api_requests_total{verb}` metric. It can also record what each request asked for
//! in the terms RBAC rules use (verb, API group, resource, subresource, namespace), which the
//! chart's RBAC test checks against the ClusterRole and Role the chart ships, and every write
//! with the size of its body, which the notification tests measure (the recording is test
//! support, left out of the released binary).

#[cfg(any(test, feature = "test-support"))]
use std::collections::BTreeMap;
use std::sync::Arc;
#[cfg(any(test, feature = "test-support"))]
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request, Uri};
use tower::{Layer, Service};

/// The verbs of the Kubernetes API, as RBAC rules name them.
pub const VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "other",
];

/// Request counters, shared by every clone of the client.
#[derive(Debug, Default)]
pub struct ApiCounters {
    pub reads: AtomicU64,
    pub watches: AtomicU64,
    pub writes: AtomicU64,
    by_verb: [AtomicU64; VERBS.len()],
    /// When recording: every distinct request (name left out) and how often it was sent.
    #[cfg(any(test, feature = "test-support"))]
    log: Option<Mutex<BTreeMap<ApiRequest, u64>>>,
    /// When recording: every write, in the order sent.
    #[cfg(any(test, feature = "test-support"))]
    sent: Option<Mutex<Vec<SentWrite>>>,
}

/// One write request as sent (recorded by [`ApiCounters::recording`]).
#[cfg(any(test, feature = "test-support"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentWrite {
    pub method: Method,
    /// The path, with the object's name (`/apis/mailsec.io/v1alpha1/tenants/a/status`).
    pub path: String,
    /// The query (`fieldManager=...`), empty if none.
    pub query: String,
    /// The size of the request body, as sent.
    pub body_bytes: u64,
}

impl ApiCounters {
    /// Counters that also record every distinct request (see [`ApiCounters::recorded`]).
    #[cfg(any(test, feature = "test-support"))]
    pub fn recording() -> Self {
        Self {
            log: Some(Mutex::new(BTreeMap::new())),
            sent: Some(Mutex::new(Vec::new())),
            ..Self::default()
        }
    }

    /// Requests that change something (POST, PUT, PATCH, DELETE).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// GET requests, watches excluded.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Watch requests (each one long-lived).
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::Relaxed)
    }

    /// Requests sent so far per verb (every verb of [`VERBS`], zeros included).
    pub fn by_verb(&self) -> Vec<(&'static str, u64)> {
        VERBS
            .iter()
            .zip(&self.by_verb)
            .map(|(v, n)| (*v, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The distinct requests recorded so far with their counts (empty unless built with
    /// [`ApiCounters::recording`]).
    #[cfg(any(test, feature = "test-support"))]
    pub fn recorded(&self) -> BTreeMap<ApiRequest, u64> {
        self.log
            .as_ref()
            .map(|log| log.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The writes sent so far, in order (empty unless built with [`ApiCounters::recording`]).
    #[cfg(any(test, feature = "test-support"))]
    pub fn sent_writes(&self) -> Vec<SentWrite> {
        self.sent
            .as_ref()
            .map(|sent| sent.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    #[cfg(any(test, feature = "test-support"))]
    fn record_write(&self, method: &Method, uri: &Uri, body_bytes: u64) {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return;
        }
        if let Some(sent) = &self.sent {
            sent.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(SentWrite {
                    method: method.clone(),
                    path: uri.path().to_string(),
                    query: uri.query().unwrap_or_default().to_string(),
                    body_bytes,
                });
        }
    }

    fn count(&self, method: &Method, uri: &Uri) {
        let request = ApiRequest::parse(method, uri);
        let counter = match request.verb.as_str() {
            "watch" => &self.watches,
            "get" | "list" => &self.reads,
            _ if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) => &self.reads,
            _ => &self.writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let index = VERBS
            .iter()
            .position(|v| *v == request.verb)
            .unwrap_or(VERBS.len() - 1);
        self.by_verb[index].fetch_add(1, Ordering::Relaxed);
        #[cfg(any(test, feature = "test-support"))]
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            *log.entry(request).or_insert(0) += 1;
        }
    }
}

/// What one request asks of the API server, in the terms of an RBAC rule. The object name is
/// left out (the operator's rules never restrict names).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for a
    /// non-resource URL the lower-case HTTP method.
    pub verb: String,
    /// API group; `""` for the core group.
    pub group: String,
    /// Resource (plural), e.g. `tenants`; for a non-resource URL, empty.
    pub resource: String,
    /// Subresource, e.g. `status`.
    pub subresource: Option<String>,
    /// Namespace of a namespaced request.
    pub namespace: Option<String>,
    /// The path of a non-resource URL (`/version`, `/apis`, ...).
    pub non_resource_url: Option<String>,
}

impl ApiRequest {
    /// Reads a request the way the API server does (its `RequestInfoFactory`): `/api/v1/...`
    /// is the core group, `/apis/GROUP/VERSION/...` a named group; `namespaces/NS/` scopes it.
    pub fn parse(method: &Method, uri: &Uri) -> Self {
        let parts: Vec<&str> = uri.path().split('/').filter(|p| !p.is_empty()).collect();
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => (
                "",
                &[][..], // a non-resource URL
            ),
        };
        if rest.is_empty() {
            return Self {
                verb: method.as_str().to_ascii_lowercase(),
                group: String::new(),
                resource: String::new(),
                subresource: None,
                namespace: None,
                non_resource_url: Some(uri.path().to_string()),
            };
        }
        let mut rest = rest;
        let mut namespace = None;
        if rest[0] == "namespaces" && rest.len() > 1 {
            namespace = Some(rest[1].to_string());
            // `namespaces/NS/status` and `namespaces/NS/finalize` are subresources of the
            // namespace itself; anything else is a resource inside it.
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        let resource = rest[0].to_string();
        let name = rest.get(1);
        let subresource = rest.get(2).map(|s| s.to_string());
        let watching = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let verb = match *method {
            Method::GET | Method::HEAD if watching => "watch",
            Method::GET | Method::HEAD if name.is_none() => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if name.is_none() => "deletecollection",
            Method::DELETE => "delete",
            _ => "other",
        };
        // `namespaces/NS[/status]` is the (cluster-scoped) namespace object, not a scope.
        if resource == "namespaces" {
            namespace = None;
        }
        Self {
            verb: verb.to_string(),
            group: group.to_string(),
            resource,
            subresource,
            namespace,
            non_resource_url: None,
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(url) = &self.non_resource_url {
            return write!(f, "{} {url}", self.verb);
        }
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(sub) = &self.subresource {
            write!(f, "/{sub}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " (all namespaces or cluster-scoped)"),
        }
    }
}

/// A tower layer that counts requests into [`ApiCounters`].
#[derive(Clone, Debug, Default)]
pub struct CountingLayer {
    pub counters: Arc<ApiCounters>,
}

impl<S> Layer<S> for CountingLayer {
    type Service = Counting<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Counting {
            inner,
            counters: self.counters.clone(),
        }
    }
}

/// The service made by [`CountingLayer`].
#[derive(Clone, Debug)]
pub struct Counting<S> {
    inner: S,
    counters: Arc<ApiCounters>,
}

impl<S, B> Service<Request<B>> for Counting<S>
where
    S: Service<Request<B>>,
    B: http_body::Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.counters.count(req.method(), req.uri());
        // The client's bodies are whole buffers, so their size is known before they are sent.
        #[cfg(any(test, feature = "test-support"))]
        self.counters.record_write(
            req.method(),
            req.uri(),
            req.body().size_hint().exact().unwrap_or_default(),
        );
        self.inner.call(req)
    }
}

impl crate::metrics::RequestCounts for ApiCounters {
    fn by_verb(&self) -> Vec<(&'static str, u64)> {
        ApiCounters::by_verb(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, uri: &str) -> String {
        ApiRequest::parse(&method, &uri.parse().expect("uri")).to_string()
    }

    #[test]
    fn requests_read_like_rbac_rules() {
        assert_eq!(
            parse(
                Method::GET,
                "/apis/mailsec.io/v1alpha1/tenants?&watch=true&timeoutSeconds=290"
            ),
            "watch mailsec.io/tenants (all namespaces or cluster-scoped)"
        );
        assert_eq!(
            parse(Method::GET, "/apis/mailsec.io/v1alpha1/tenants?limit=500"),
            "list mailsec.io/tenants (all namespaces or cluster-scoped)"
        );
        assert_eq!(
            parse(
                Method::PATCH,
                "/apis/mailsec.io/v1alpha1/subscriptions/a/status?fieldManager=x&force=true"
            ),
            "patch mailsec.io/subscriptions/status (all namespaces or cluster-scoped)"
        );
        assert_eq!(
            parse(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events"
            ),
            "create events.k8s.io/events in namespace default"
        );
        assert_eq!(
            parse(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/mailsec-operator"
            ),
            "get coordination.k8s.io/leases in namespace ops"
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/namespaces/default"),
            "get core/namespaces (all namespaces or cluster-scoped)"
        );
        assert_eq!(
            parse(Method::DELETE, "/api/v1/namespaces/x/configmaps"),
            "deletecollection core/configmaps in namespace x"
        );
        assert_eq!(parse(Method::GET, "/version"), "get /version");
    }

    #[test]
    fn counts_by_verb_and_records_when_asked() {
        let counters = ApiCounters::recording();
        let uri: Uri = "/apis/mailsec.io/v1alpha1/tenants/a".parse().expect("uri");
        counters.count(&Method::GET, &uri);
        counters.count(&Method::GET, &uri);
        counters.count(&Method::PATCH, &uri);
        assert_eq!((counters.reads(), counters.writes()), (2, 1));
        let verbs: BTreeMap<_, _> = counters.by_verb().into_iter().collect();
        assert_eq!((verbs["get"], verbs["patch"], verbs["list"]), (2, 1, 0));
        let recorded = counters.recorded();
        assert_eq!(recorded.len(), 2);
        assert_eq!(recorded.values().sum::<u64>(), 3);
        assert!(ApiCounters::default().recorded().is_empty());
    }
}
