//! Ably's REST API, for the calls capsign makes itself: `POST /keys/{keyName}/requestToken`
//! (the `format=token` flow: capsign obtains the Ably token and hands the client its
//! TokenDetails), `GET /time` (an optional clock correction at start-up, for hosts whose
//! clock is off; Ably refuses TokenRequests more than about two minutes away from its time),
//! and `POST /keys/{keyName}/revokeTokens` (`capsign revoke`, with Basic auth).
//!
//! The base URL is configurable (`CAPSIGN_ABLY_REST_URL`) so tests point it at a local fake.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::client::{ClientError, HttpClient, USER_AGENT};

/// Largest answer read from Ably (TokenDetails are a few KB).
pub(crate) const MAX_RESPONSE: usize = 256 * 1024;

/// Why an Ably call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AblyError {
    /// Ably could not be reached, or did not answer in time.
    #[error("Ably unreachable: {0}")]
    Unreachable(#[from] ClientError),
    /// Ably answered with an error; passed on to the client with its code.
    #[error("Ably refused: {message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// Ably's error code.
        code: u32,
        /// Ably's message.
        message: String,
    },
    /// Ably's answer was not what its API promises.
    #[error("unexpected answer from Ably: {0}")]
    Malformed(String),
}

impl AblyError {
    /// The kind of failure, for metrics: `timeout`, `network`, `too_large`, `refused` or
    /// `malformed`.
    pub fn kind(&self) -> &'static str {
        match self {
            AblyError::Unreachable(e) => e.kind(),
            AblyError::Refused { .. } => "refused",
            AblyError::Malformed(_) => "malformed",
        }
    }
}

/// One target's answer to `revokeTokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked: tokens issued before `issued_before` (ms) are refused from `applies_at` (ms).
    Done {
        /// The target (`clientId:alice`).
        target: String,
        /// Tokens issued before this time are revoked.
        issued_before: u64,
        /// From this time (later than now with `allowReauthMargin`).
        applies_at: u64,
    },
    /// Ably refused this target.
    Failed {
        /// The target.
        target: String,
        /// Ably's error code.
        code: u32,
        /// Ably's message.
        message: String,
    },
}

/// A client of Ably's REST API.
#[derive(Debug, Clone)]
pub struct AblyRest {
    base: Uri,
    timeout: Duration,
    client: HttpClient,
}

impl AblyRest {
    /// A client for the API at `base` (no trailing path).
    pub fn new(base: Uri, timeout: Duration, client: HttpClient) -> AblyRest {
        AblyRest {
            base,
            timeout,
            client,
        }
    }

    fn url(&self, path: &str) -> Result<Uri, AblyError> {
        let base = self.base.to_string();
        format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| AblyError::Malformed(format!("bad URL: {e}")))
    }

    /// Exchanges a signed TokenRequest (its JSON) for TokenDetails, returned as Ably sent them.
    ///
    /// # Errors
    ///
    /// See [`AblyError`].
    pub async fn request_token(
        &self,
        key_name: &str,
        token_request: String,
        request_id: &str,
    ) -> Result<Bytes, AblyError> {
        let path = format!(
            "/keys/{}/requestToken",
            utf8_percent_encode(key_name, NON_ALPHANUMERIC)
        );
        let header = (crate::client::REQUEST_ID, request_id.to_owned());
        let resp = self.post_json(&path, token_request, header).await?;
        let details: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| AblyError::Malformed(format!("TokenDetails: {e}")))?;
        if !details.get("token").is_some_and(Value::is_string) {
            return Err(AblyError::Malformed("TokenDetails without a token".into()));
        }
        Ok(resp.body)
    }

    /// Revokes the tokens of `targets` (`clientId:…`, `revocationKey:…`, `channel:…`) issued
    /// before `issued_before_ms`, authenticated with the key itself (Basic auth, as Ably
    /// requires). Returns Ably's answer per target.
    ///
    /// # Errors
    ///
    /// Ably refused the whole request (a key without revocable tokens, a bad target) or
    /// could not be reached, or answered something else than its batch result.
    pub async fn revoke_tokens(
        &self,
        key: &crate::settings::AblyApiKey,
        targets: &[String],
        issued_before_ms: u64,
        allow_reauth_margin: bool,
    ) -> Result<Vec<Revoked>, AblyError> {
        use base64::Engine as _;
        let path = format!(
            "/keys/{}/revokeTokens",
            utf8_percent_encode(&key.name, NON_ALPHANUMERIC)
        );
        let body = serde_json::json!({
            "targets": targets,
            "issuedBefore": issued_before_ms,
            "allowReauthMargin": allow_reauth_margin,
        });
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            key.name,
            key.secret.expose()
        ));
        let header = (
            http::header::AUTHORIZATION.as_str(),
            format!("Basic {basic}"),
        );
        let resp = self.post_json(&path, body.to_string(), header).await?;
        let v: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| AblyError::Malformed(format!("revokeTokens: {e}")))?;
        // A batch result (`{successCount, failureCount, results}`), or its results alone.
        let results = v
            .get("results")
            .unwrap_or(&v)
            .as_array()
            .ok_or_else(|| AblyError::Malformed("revokeTokens: no results".into()))?;
        results.iter().map(revoked).collect()
    }

    /// `POST path` with a JSON body and one more header; Ably's answer when it is a 2xx.
    async fn post_json(
        &self,
        path: &str,
        body: String,
        (name, value): (&'static str, String),
    ) -> Result<crate::client::Fetched, AblyError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url(path)?)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(name, value)
            .body(Bytes::from(body))
            .map_err(|e| AblyError::Malformed(e.to_string()))?;
        let resp = self.client.send(req, self.timeout, MAX_RESPONSE).await?;
        if !resp.status.is_success() {
            return Err(refusal(resp.status, &resp.body));
        }
        Ok(resp)
    }

    /// Ably's time, in ms since the epoch.
    ///
    /// # Errors
    ///
    /// See [`AblyError`].
    pub async fn time(&self) -> Result<u64, AblyError> {
        let resp = self
            .client
            .get(&self.url("/time")?, self.timeout, 1024)
            .await?;
        if !resp.status.is_success() {
            return Err(refusal(resp.status, &resp.body));
        }
        let v: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| AblyError::Malformed(format!("/time: {e}")))?;
        v.get(0)
            .and_then(Value::as_u64)
            .ok_or_else(|| AblyError::Malformed("/time is not [ms]".into()))
    }
}

/// One result of a `revokeTokens` batch.
fn revoked(r: &Value) -> Result<Revoked, AblyError> {
    let target = r
        .get("target")
        .and_then(Value::as_str)
        .ok_or_else(|| AblyError::Malformed("revokeTokens: a result without target".into()))?
        .to_owned();
    if let Some(error) = r.get("error") {
        return Ok(Revoked::Failed {
            target,
            code: error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("refused")
                .chars()
                .take(300)
                .collect(),
        });
    }
    let time = |name: &str| {
        r.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| AblyError::Malformed(format!("revokeTokens: {target} has no {name}")))
    };
    Ok(Revoked::Done {
        issued_before: time("issuedBefore")?,
        applies_at: time("appliesAt")?,
        target,
    })
}

/// Ably's error envelope, or a generic refusal for its status.
fn refusal(status: StatusCode, body: &[u8]) -> AblyError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error");
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(u32::from(status.as_u16()) * 100);
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(
            || format!("Ably answered {status}"),
            |m| m.chars().take(300).collect(),
        );
    AblyError::Refused {
        status,
        code,
        message,
    }
}
