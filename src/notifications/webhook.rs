//! The webhook: a signed JSON POST per milestone.
//!
//! Body: [`Payload`]. Headers: `Content-Type: application/json`,
//! `X-Mailsec-Timestamp: <Unix time of the attempt, seconds>`,
//! `X-Mailsec-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the shared
//! secret>` (the Stripe/Slack scheme: the signature covers the time, so a captured request can
//! not be replayed later; receivers reject timestamps more than [`TOLERANCE`] away from their
//! clock, see [`verify`]), `X-Mailsec-Delivery: <stable id>` (the same on every retry:
//! receivers drop repeats), `X-Mailsec-Milestone-Kind: <kind>`. Any 2xx answer is a delivery;
//! anything else is retried.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use sha2::Sha256;

use super::NotifyError;
use super::text::{NextStep, Text};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Mailsec-Signature";
/// The timestamp header: Unix time (seconds) of the attempt, covered by the signature.
pub const TIMESTAMP_HEADER: &str = "X-Mailsec-Timestamp";
/// How far from the receiver's clock a timestamp may be: older (or newer) requests are
/// rejected as replays. Each attempt is signed anew, so a retry is never too old.
pub const TOLERANCE: Duration = Duration::from_secs(300);
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "X-Mailsec-Delivery";

/// The JSON body of a webhook call.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// `mailsec.io/v1alpha1`.
    pub api_version: &'static str,
    /// `MilestoneNotification`.
    pub kind: &'static str,
    /// The stable delivery id (also in `X-Mailsec-Delivery`).
    pub delivery_id: String,
    pub tenant: PayloadTenant,
    pub milestone: PayloadMilestone,
    /// The next thing that happens unless someone acts, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<PayloadNextStep>,
    /// What to do, in the tenant's language.
    pub hint: String,
    /// The e-mail subject and text, in the tenant's language.
    pub subject: String,
    pub text: String,
    /// The tenant's administrators (the e-mail recipients).
    pub admins: Vec<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PayloadTenant {
    pub name: String,
    pub display_name: String,
    pub locale: crate::api::Locale,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PayloadMilestone {
    pub id: String,
    pub kind: String,
    pub product: String,
    pub product_name: String,
    /// The base service (the whole tenant is concerned) rather than an add-on.
    pub base: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    pub due_at: DateTime<Utc>,
    pub announced_at: DateTime<Utc>,
    pub late: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_end_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspends_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PayloadNextStep {
    /// `ReadOnly`, `Suspended` or `TrialEnds`.
    pub kind: &'static str,
    pub at: DateTime<Utc>,
}

impl PayloadNextStep {
    pub fn from_step(step: NextStep) -> Self {
        Self {
            kind: step.kind(),
            at: step.at(),
        }
    }
}

impl Payload {
    /// The body's text and hint come from the rendered notification.
    pub fn with_text(mut self, text: &Text) -> Self {
        self.subject = text.subject.clone();
        self.text = text.body.clone();
        self.hint = text.hint.clone();
        self
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `<timestamp>.<body>` with `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a receiver must reject a webhook call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{TIMESTAMP_HEADER} is missing or not a Unix time")]
    BadTimestamp,
    #[error("{SIGNATURE_HEADER} is missing or not sha256=<hex>")]
    BadSignature,
    #[error("the signature does not match the timestamp and body")]
    Mismatch,
    #[error("the timestamp is {0} s away from now, more than the tolerance: a replay?")]
    Stale(i64),
}

/// What a receiver checks, in order: the timestamp is within `tolerance` of `now` (Unix
/// seconds), and the signature is that of `<timestamp>.<raw body>` (compared in constant time).
/// A receiver that also drops a `X-Mailsec-Delivery` it has already accepted is safe against
/// replays inside the tolerance too.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let hex_sig = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::BadSignature)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::BadSignature)?;
    let off = now.saturating_sub(ts);
    if off.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::Stale(off));
    }
    mac(secret, ts, body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// A webhook endpoint and its secret.
#[derive(Clone)]
pub struct Webhook {
    uri: Uri,
    secret: Arc<Vec<u8>>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("uri", &self.uri).finish()
    }
}

impl Webhook {
    pub fn new(url: &str, secret: Vec<u8>, timeout: Duration) -> Result<Self, NotifyError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| NotifyError::Config(format!("--webhook-url {url:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(NotifyError::Config(format!(
                    "--webhook-url {url:?}: must start with https:// (or http://)"
                )));
            }
        };
        if secret.is_empty() {
            return Err(NotifyError::Config(
                "the webhook secret is empty: set --webhook-secret-file or MAILSEC_WEBHOOK_SECRET"
                    .into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(e) if https => {
                return Err(NotifyError::Config(format!(
                    "--webhook-url {url:?}: no CA certificates to check the server with: {e}"
                )));
            }
            // Plain HTTP needs no roots (e.g. an image without a CA bundle).
            Err(_) => {
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| NotifyError::Config(format!("TLS: {e}")))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(Self {
            uri,
            secret: Arc::new(secret),
            timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// POSTs `payload`, signed with the time now; Ok on a 2xx answer.
    pub async fn send(&self, payload: &Payload) -> Result<(), NotifyError> {
        self.send_at(payload, Utc::now().timestamp()).await
    }

    /// POSTs `payload` signed with `timestamp` (Unix seconds): [`Webhook::send`], and for tests
    /// of receivers (a request as captured earlier).
    pub async fn send_at(&self, payload: &Payload, timestamp: i64) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(payload).map_err(|e| NotifyError::Webhook(e.to_string()))?;
        let request = Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("mailsec-operator/", env!("CARGO_PKG_VERSION")),
            )
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sign(&self.secret, timestamp, &body))
            .header(DELIVERY_HEADER, &payload.delivery_id)
            .header("X-Mailsec-Milestone-Kind", &payload.milestone.kind)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| NotifyError::Webhook(e.to_string()))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                NotifyError::Webhook(format!("{e}: {:?}", std::error::Error::source(&e)))
            })?;
            let status = response.status();
            // Read the answer (bounded by the timeout) so the connection can be reused.
            let answer = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
                Err(NotifyError::Webhook(format!(
                    "HTTP {status}: {}",
                    text.trim()
                )))
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(NotifyError::Webhook(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hmac_sha256_of_the_timestamp_and_the_body() {
        // Python: hmac.new(b"Jefe", b"1700000000.what do ya want for nothing?", sha256).
        let body = b"what do ya want for nothing?";
        let sig = sign(b"Jefe", 1_700_000_000, body);
        assert_eq!(
            sig,
            "sha256=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
        let now = 1_700_000_000 + 60;
        assert_eq!(
            verify(b"Jefe", "1700000000", &sig, body, now, TOLERANCE),
            Ok(())
        );
        // Another time with the same signature, or another body: refused.
        assert_eq!(
            verify(b"Jefe", "1700000001", &sig, body, now, TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"Jefe", "1700000000", &sig, b"{}", now, TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "1700000000", &sig, body, now, TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        // A captured request replayed ten minutes later, or dated in the future: refused.
        assert_eq!(
            verify(b"Jefe", "1700000000", &sig, body, now + 540, TOLERANCE),
            Err(SignatureError::Stale(600))
        );
        assert_eq!(
            verify(
                b"Jefe",
                "1700000000",
                &sig,
                body,
                1_700_000_000 - 301,
                TOLERANCE
            ),
            Err(SignatureError::Stale(-301))
        );
        // The old scheme (body only) and malformed headers: refused.
        for (ts, sig) in [
            ("", sig.as_str()),
            ("soon", sig.as_str()),
            ("1700000000", "5bdcc146"),
            ("1700000000", "sha256=zz"),
        ] {
            assert!(
                verify(b"Jefe", ts, sig, body, now, TOLERANCE).is_err(),
                "{ts} {sig}"
            );
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        for (url, secret) in [("ftp://x", "s"), ("not a url", "s"), ("http://x", "")] {
            assert!(
                Webhook::new(url, secret.as_bytes().to_vec(), Duration::from_secs(1)).is_err(),
                "{url}"
            );
        }
        assert!(
            Webhook::new(
                "http://127.0.0.1:1/hook",
                b"s".to_vec(),
                Duration::from_secs(1)
            )
            .is_ok()
        );
    }
}
