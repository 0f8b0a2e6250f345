//! The operator's HTTP endpoint: `/metrics` (Prometheus text, or OpenMetrics when the scraper
//! asks for it), `/healthz` (liveness: the process serves requests) and `/readyz` (readiness, see
//! [`Metrics::readiness`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::{Metrics, ScrapeFormat};

/// The HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for /metrics, /healthz and /readyz: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// A bound, not yet serving, HTTP listener.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> Result<Self, BindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| BindError { addr, source })?;
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the future is dropped. Each connection runs on its own task.
    pub async fn serve(self, metrics: Arc<Metrics>) {
        let scrapes = Arc::new(Semaphore::new(SCRAPES_AT_ONCE));
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics server: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, scrapes) = (metrics.clone(), scrapes.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (metrics, scrapes) = (metrics.clone(), scrapes.clone());
                    async move { Ok::<_, Infallible>(respond(&metrics, &scrapes, &req)) }
                });
                if let Err(err) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %err, "metrics server: connection ended with an error");
                }
            });
        }
    }
}

/// A response body: a short text, or a scrape's chunks as they are written.
type Body = BoxBody<Bytes, ScrapeFailed>;

/// A scrape stopped part way (the metrics could not be encoded): the response ends with an
/// error instead of its last chunk, so the scraper records a failed scrape, not a short one.
#[derive(Debug, thiserror::Error)]
#[error("could not encode the metrics")]
pub struct ScrapeFailed;

fn with_type(
    mut response: Response<Body>,
    status: StatusCode,
    content_type: &str,
) -> Response<Body> {
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {});
    with_type(Response::new(body.boxed()), status, content_type)
}

/// Chunks of a scrape written ahead of the scraper's reading.
const CHUNKS_AHEAD: usize = 2;

/// Scrapes answered at once; more are refused (503) until one ends. Prometheus scrapes one
/// target once per interval: anything beyond a few is a client holding connections open.
pub const SCRAPES_AT_ONCE: usize = 4;

/// How long a scrape waits for the scraper to take its next chunk before it gives up, so a
/// client that asks and never reads holds a place for no longer than this.
pub const SCRAPER_WAIT: Duration = Duration::from_secs(30);

type Chunk = Result<Frame<Bytes>, ScrapeFailed>;

/// `/metrics`, streamed: the text is written on a blocking thread (it reads every cached
/// object) and sent a chunk at a time, so a scrape of a large fleet holds a few chunks, not
/// its whole text. A scraper that goes away, or stops reading for [`SCRAPER_WAIT`], stops the
/// writing; beyond [`SCRAPES_AT_ONCE`] scrapes at once, the answer is 503.
fn scrape(
    metrics: &Arc<Metrics>,
    scrapes: &Arc<Semaphore>,
    format: ScrapeFormat,
) -> Response<Body> {
    let Ok(place) = scrapes.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            format!("{SCRAPES_AT_ONCE} scrapes are being answered: try again\n"),
        );
    };
    let (tx, mut rx) = mpsc::channel(CHUNKS_AHEAD);
    let metrics = metrics.clone();
    tokio::task::spawn_blocking(move || {
        let _place = place;
        let mut send = sender(tx.clone(), SCRAPER_WAIT);
        let written =
            metrics.encode_chunked(format, |chunk| send(Ok(Frame::data(Bytes::from(chunk)))));
        if written.is_err() && !tx.is_closed() {
            tracing::warn!("could not encode the metrics, or the scraper stopped reading");
            // Waits for room like a chunk: with the channel full, a dropped error would leave
            // the scrape looking whole.
            send(Err(ScrapeFailed));
        }
    });
    let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let body = StreamBody::new(chunks).boxed();
    with_type(Response::new(body), StatusCode::OK, format.content_type())
}

/// Sends each chunk on `tx`, waiting at most `wait` for room; false once the scraper has gone
/// or kept no pace. Call on a blocking thread of the runtime.
fn sender(tx: mpsc::Sender<Chunk>, wait: Duration) -> impl FnMut(Chunk) -> bool {
    let runtime = tokio::runtime::Handle::current();
    move |chunk| {
        runtime
            .block_on(tokio::time::timeout(wait, tx.send(chunk)))
            .is_ok_and(|sent| sent.is_ok())
    }
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn respond(
    metrics: &Arc<Metrics>,
    scrapes: &Arc<Semaphore>,
    req: &Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let format = if openmetrics {
                ScrapeFormat::OpenMetrics
            } else {
                ScrapeFormat::Prometheus
            };
            scrape(metrics, scrapes, format)
        }
        "/healthz" | "/livez" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => match metrics.readiness() {
            Ok(why) => text(StatusCode::OK, PLAIN, format!("ok: {why}\n")),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    use super::*;
    use crate::metrics::{metrics_of_a_fleet, without_process_samples};

    async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (Response<()>, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut request = Request::get(format!("http://{addr}{path}"));
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = client
            .request(request.body(Empty::new()).expect("a request"))
            .await
            .expect("an answer");
        let (head, body) = response.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        let text = String::from_utf8(body.to_vec()).expect("UTF-8");
        (Response::from_parts(head, ()), text)
    }

    /// A scraper that takes no chunk for the time allowed is given up on: the writing stops
    /// and its place is freed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scraper_that_stops_reading_is_given_up_on() {
        let (tx, rx) = mpsc::channel(1);
        let sent = tokio::task::spawn_blocking(move || {
            let mut send = sender(tx, Duration::from_millis(50));
            let chunk = || Ok(Frame::data(Bytes::from_static(b"x")));
            (send(chunk()), send(chunk()))
        })
        .await
        .expect("the blocking task ends");
        assert_eq!(sent, (true, false), "room for one chunk, then nobody reads");
        drop(rx);
    }

    /// A fleet's scrape comes over HTTP in chunks (no length known in advance), whole, in the
    /// format asked for.
    #[tokio::test]
    async fn a_scrape_is_streamed_whole() {
        let metrics = Arc::new(metrics_of_a_fleet(1_000));
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("binds");
        let addr = server.local_addr();
        let serving = tokio::spawn(server.serve(metrics.clone()));

        let (response, text) = get(addr, "/metrics", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            ScrapeFormat::Prometheus.content_type()
        );
        assert_eq!(response.headers()[header::TRANSFER_ENCODING], "chunked");
        assert!(text.len() > 4 * crate::metrics::SCRAPE_CHUNK);
        assert_eq!(
            without_process_samples(&text),
            without_process_samples(&metrics.encode_text().expect("encodes"))
        );

        let (response, text) = get(
            addr,
            "/metrics",
            Some("application/openmetrics-text; version=1.0.0"),
        )
        .await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            ScrapeFormat::OpenMetrics.content_type()
        );
        assert!(text.ends_with("# EOF\n"), "{}", &text[text.len() - 100..]);

        // Every place taken: refused at once, not queued.
        let places = Arc::new(Semaphore::new(SCRAPES_AT_ONCE));
        let taken = places
            .clone()
            .acquire_many_owned(SCRAPES_AT_ONCE as u32)
            .await;
        let response = scrape(&metrics, &places, ScrapeFormat::Prometheus);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(taken);
        let response = scrape(&metrics, &places, ScrapeFormat::Prometheus);
        assert_eq!(response.status(), StatusCode::OK);

        let (response, text) = get(addr, "/readyz", None).await;
        assert_eq!(
            (response.status(), text.as_str()),
            (StatusCode::OK, "ok: leading: caches synced\n")
        );
        serving.abort();
    }
}
