//! The policy webhook: the app's own endpoint decides grants no rule matches.
//!
//! capsign `POST`s `{"clientId", "claims", "requested": {resource: [ops]}}` (all new and
//! re-checked grants of one request, in one call) and reads `{"granted": {resource: [ops]}}`,
//! or a `403` meaning "none". What comes back is cut to what was asked: a resource not asked
//! for, or operations beyond the asked ones, are dropped. Anything else (no answer within the
//! timeout, another status, a body over the cap, not that JSON) is a [`WebhookError`], which
//! the request answers with `503` and leaves the client's cookie as it was.
//!
//! # Telling the call is capsign's
//!
//! With a secret configured, each call carries
//! `X-Capsign-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The app
//! recomputes the HMAC over the timestamp, a `.`, and the raw body, compares in constant time,
//! and refuses timestamps more than a few minutes old (which stops replays).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use hmac::Mac as _;
use http::{Method, Request, StatusCode, Uri};
use serde_json::{Value, json};

use crate::capability::CapabilitySet;
use crate::client::{ClientError, HttpClient, REQUEST_ID, USER_AGENT};
use crate::crypto::{HmacSha256, keyed_hmac};
use crate::identity::Identity;
use crate::settings::WebhookSettings;

/// The signature header.
pub(crate) const SIGNATURE_HEADER: &str = "x-capsign-signature";
/// Why the webhook gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Unreachable, too slow, or too large.
    #[error("policy webhook: {0}")]
    Call(#[from] ClientError),
    /// A status other than 200 or 403.
    #[error("policy webhook answered {0}")]
    Status(StatusCode),
    /// Not `{"granted": {resource: [ops]}}`.
    #[error("policy webhook answered malformed JSON: {0}")]
    Malformed(String),
}

impl WebhookError {
    /// The kind of failure, for metrics: `timeout`, `network`, `too_large`, `status` or
    /// `malformed`.
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookError::Call(e) => e.kind(),
            WebhookError::Status(_) => "status",
            WebhookError::Malformed(_) => "malformed",
        }
    }
}

/// A configured webhook.
pub struct Webhook {
    url: Uri,
    secret: Option<HmacSha256>,
    timeout: Duration,
    max_response: usize,
    client: HttpClient,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_response", &self.max_response)
            .finish()
    }
}

impl Webhook {
    /// The webhook of `settings`, signing each call when a secret is given.
    pub fn new(settings: &WebhookSettings, client: HttpClient) -> Webhook {
        Webhook {
            url: settings.url.clone(),
            secret: settings
                .secret
                .as_ref()
                .map(|s| keyed_hmac(s.expose().as_bytes())),
            timeout: settings.timeout,
            max_response: settings.max_response,
            client,
        }
    }

    /// The request body for `requested`.
    fn body(who: &Identity, requested: &CapabilitySet) -> Vec<u8> {
        let requested: serde_json::Map<String, Value> = requested
            .iter()
            .map(|(r, ops)| {
                let ops: Vec<Value> = ops.names().map(|n| Value::String(n.into())).collect();
                (r.as_str().to_owned(), Value::Array(ops))
            })
            .collect();
        json!({
            "clientId": who.client_id,
            "claims": who.claims(),
            "requested": requested,
        })
        .to_string()
        .into_bytes()
    }

    /// The signature header value for `body` at `now` (Unix seconds).
    pub fn signature(&self, now: u64, body: &[u8]) -> Option<String> {
        let mut mac = self.secret.clone()?;
        mac.update(now.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        Some(format!(
            "t={now},v1={}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// Asks the webhook about `requested` (non-empty) for `who`; returns the granted part,
    /// never more than was asked. `request_id` goes along as `X-Request-Id`, so the webhook's
    /// logs and capsign's meet.
    ///
    /// # Errors
    ///
    /// See [`WebhookError`].
    pub async fn decide(
        &self,
        who: &Identity,
        requested: &CapabilitySet,
        now: u64,
        request_id: &str,
    ) -> Result<CapabilitySet, WebhookError> {
        let body = Webhook::body(who, requested);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(REQUEST_ID, request_id);
        if let Some(sig) = self.signature(now, &body) {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        let req = req
            .body(Bytes::from(body))
            .map_err(|e| WebhookError::Call(ClientError::Network(e.to_string())))?;
        let resp = self
            .client
            .send(req, self.timeout, self.max_response)
            .await?;
        match resp.status {
            StatusCode::OK => parse_answer(requested, &resp.body),
            StatusCode::FORBIDDEN => Ok(CapabilitySet::new()),
            other => Err(WebhookError::Status(other)),
        }
    }
}

/// Reads a `200` answer's body: `{"granted": {resource: [ops]}}`, cut to what was asked.
///
/// # Errors
///
/// Not that JSON, or an invalid capability in it.
pub(crate) fn parse_answer(
    requested: &CapabilitySet,
    body: &[u8],
) -> Result<CapabilitySet, WebhookError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let granted = value
        .get("granted")
        .ok_or_else(|| WebhookError::Malformed("no \"granted\" member".into()))?;
    let granted =
        CapabilitySet::from_value(granted).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    Ok(within(requested, &granted))
}

/// The part of `granted` that was asked: exact resources of `requested`, their operations
/// only. A wildcard the app returns instead of an asked channel is not a grant of that
/// channel; extra is dropped rather than trusted.
pub(crate) fn within(requested: &CapabilitySet, granted: &CapabilitySet) -> CapabilitySet {
    requested
        .iter()
        .filter_map(|(r, asked)| {
            let ops = granted.ops_for(r.as_str())?;
            Some((r.clone(), asked.intersection(ops)))
        })
        .filter(|(_, ops)| !ops.is_empty())
        .collect()
}
