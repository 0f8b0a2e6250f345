//! Counts the requests the operator sends to the API server, by verb: the proof that a converged
//! operator writes nothing, and the "API requests per reconcile" figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request};
use tower::{Layer, Service};

/// Request counters, shared by every clone of the client.
#[derive(Debug, Default)]
pub struct ApiCounters {
    pub reads: AtomicU64,
    pub watches: AtomicU64,
    pub writes: AtomicU64,
}

impl ApiCounters {
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
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let counter = match *req.method() {
            Method::GET
                if req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1")) =>
            {
                &self.counters.watches
            }
            Method::GET | Method::HEAD | Method::OPTIONS => &self.counters.reads,
            _ => &self.counters.writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner.call(req)
    }
}
