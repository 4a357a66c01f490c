//! The one error table: every refusal capsign answers, as a status, an Ably error code and a
//! message, written in Ably's error envelope.
//!
//! Every refusal is a variant of [`Reject`] (flow and identity errors convert into it with
//! `From`, so handlers use `?`); its one `match` ([`Reject::parts`]) is the only place where a
//! status, a code or a client's message is chosen, for requests, for the transport's own
//! refusals (`refused_by_transport`), for connections the server sheds ([`overloaded_http1`])
//! and for the metrics listener's 404. Client mistakes are
//! logged at most at `debug`; internal failures go to `warn!`/`error!` in full, and the client
//! gets a generic message. Ably's codes are those of its error table (`docs/ably-protocol.md`
//! §6); capsign uses the 5xx ones for its own upstreams.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::{insert, no_store};
use crate::ably::AblyError;
use crate::flow::FlowError;
use crate::identity::{BadClientId, IdentityError};

const X_ABLY_ERRORCODE: HeaderName = HeaderName::from_static("x-ably-errorcode");
const X_ABLY_ERRORMESSAGE: HeaderName = HeaderName::from_static("x-ably-errormessage");

/// Ably's error codes, by name.
pub(crate) mod code {
    /// Bad request: a malformed parameter, capability or body.
    pub(crate) const BAD_REQUEST: u32 = 40000;
    /// Invalid `ttl`.
    pub(crate) const INVALID_TTL: u32 = 40003;
    /// Invalid `clientId`.
    pub(crate) const INVALID_CLIENT_ID: u32 = 40012;
    /// No valid credentials (here: no valid app session); ably-js retries after a refresh.
    pub(crate) const UNAUTHORIZED: u32 = 40101;
    /// The `clientId` asked for is not the authenticated one.
    pub(crate) const CLIENT_ID_MISMATCH: u32 = 40102;
    /// The operation is not permitted with the credential's capability.
    pub(crate) const CAPABILITY_DENIED: u32 = 40160;
    /// Forbidden (here: a cross-site request).
    pub(crate) const FORBIDDEN: u32 = 40300;
    /// No such endpoint.
    pub(crate) const NOT_FOUND: u32 = 40400;
    /// The method is not allowed on this endpoint.
    pub(crate) const METHOD_NOT_ALLOWED: u32 = 40500;
    /// An internal error.
    pub(crate) const INTERNAL: u32 = 50000;
    /// An upstream (Ably) failed or could not be reached.
    pub(crate) const BAD_GATEWAY: u32 = 50200;
    /// A service capsign depends on (the policy webhook) is unavailable.
    pub(crate) const UNAVAILABLE: u32 = 50300;

    /// Every code above.
    pub(crate) const ALL: [u32; 12] = [
        BAD_REQUEST,
        INVALID_TTL,
        INVALID_CLIENT_ID,
        UNAUTHORIZED,
        CLIENT_ID_MISMATCH,
        CAPABILITY_DENIED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        INTERNAL,
        BAD_GATEWAY,
        UNAVAILABLE,
    ];
}

/// Every refusal capsign answers, as one enum: handlers return it (with `?` from identity and
/// flow errors), and [`Reject::into_response`] renders it; the `match` in [`Reject::parts`] is
/// the only place a status, an Ably code and a client message are chosen.
#[derive(Debug)]
pub(crate) enum Reject {
    /// A malformed parameter, capability or body (400/40000).
    BadRequest(String),
    /// `ttl` is not a positive whole number of milliseconds (400/40003).
    InvalidTtl,
    /// A clientId asked for, or a demo user name, that is not acceptable (400/40012).
    InvalidClientId {
        /// What was refused: "clientId" or "user name".
        what: &'static str,
        /// Why.
        why: BadClientId,
    },
    /// A request body over the limit (413/40000).
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A request body not received in time (408/40000).
    BodyTimeout,
    /// A request body that is neither a form nor JSON (415/40000).
    UnsupportedMediaType(Option<String>),
    /// A cross-site request (403/40300), saying what gave it away and how to allow it.
    CrossSite(String),
    /// A CORS preflight from an origin not in `CAPSIGN_CORS_ORIGINS` (403/40300).
    OriginNotListed,
    /// A `Host` not in `CAPSIGN_ALLOWED_HOSTS` (421/40000).
    MisdirectedHost(String),
    /// No such endpoint (404/40400).
    NotFound(String),
    /// A method the endpoint does not answer (405/40500).
    MethodNotAllowed {
        /// The method.
        method: http::Method,
        /// The endpoint.
        path: String,
    },
    /// `/readyz` while starting or draining (503/50300).
    NotReady(String),
    /// A connection over the server's limits (503/50300; see `server`).
    Overloaded,
    /// A runtime that builds the app on its first request (a Worker) could not: its settings
    /// or files are wrong (500/50000; the log says why, the answer does not).
    NotConfigured,
    /// A request its transport refused before it reached the handler (a Lambda event that is
    /// not a valid HTTP request, say): a 4xx status of the transport's choosing, 40000.
    Transport {
        /// The status (a 4xx).
        status: StatusCode,
        /// What is wrong.
        message: String,
    },
    /// No identity (401/40101, so the client retries after the app refreshes its session).
    Identity(IdentityError),
    /// The flow refused (see [`Reject::parts`]).
    Flow(FlowError),
}

impl Reject {
    /// 400/40000.
    pub(crate) fn bad(message: impl Into<String>) -> Reject {
        Reject::BadRequest(message.into())
    }

    /// The status, Ably's code and the client's message. Internal failures are logged here in
    /// full (`warn!`/`error!`); the client gets a generic message.
    fn parts(self) -> (StatusCode, u32, String) {
        match self {
            Reject::BadRequest(m) => (StatusCode::BAD_REQUEST, code::BAD_REQUEST, m),
            Reject::InvalidTtl => (
                StatusCode::BAD_REQUEST,
                code::INVALID_TTL,
                "ttl must be a positive whole number of milliseconds".into(),
            ),
            Reject::InvalidClientId { what, why } => (
                StatusCode::BAD_REQUEST,
                code::INVALID_CLIENT_ID,
                format!("invalid {what}: {why}"),
            ),
            Reject::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                code::BAD_REQUEST,
                format!("request body over {limit} bytes"),
            ),
            Reject::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                code::BAD_REQUEST,
                "request body not received in time".into(),
            ),
            Reject::UnsupportedMediaType(media) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code::BAD_REQUEST,
                format!(
                    "Content-Type {} not supported; send a form or JSON body",
                    media.as_deref().unwrap_or("(none)")
                ),
            ),
            Reject::CrossSite(what) => (
                StatusCode::FORBIDDEN,
                code::FORBIDDEN,
                format!(
                    "cross-site request refused ({what}); serve capsign from the app's own \
                     origin or list the calling origin in CAPSIGN_CORS_ORIGINS"
                ),
            ),
            Reject::OriginNotListed => (
                StatusCode::FORBIDDEN,
                code::FORBIDDEN,
                "cross-origin request refused: the origin is not in CAPSIGN_CORS_ORIGINS".into(),
            ),
            Reject::MisdirectedHost(host) => (
                StatusCode::MISDIRECTED_REQUEST,
                code::BAD_REQUEST,
                format!("host {host:?} is not served here; it is not in CAPSIGN_ALLOWED_HOSTS"),
            ),
            Reject::NotFound(path) => (
                StatusCode::NOT_FOUND,
                code::NOT_FOUND,
                format!("no such endpoint {path}"),
            ),
            Reject::MethodNotAllowed { method, path } => (
                StatusCode::METHOD_NOT_ALLOWED,
                code::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed on {path}"),
            ),
            Reject::NotReady(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                format!("not ready: {why}"),
            ),
            Reject::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                "too many connections; try again".into(),
            ),
            Reject::NotConfigured => (
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                "capsign is not configured; its log says why".into(),
            ),
            Reject::Transport { status, message } => (status, code::BAD_REQUEST, message),
            Reject::Identity(e) => (StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, e.to_string()),
            Reject::Flow(e) => flow_parts(e),
        }
    }

    /// The status and Ably code, and Ably's error envelope with the headers ably-js reads.
    pub(crate) fn into_response(self) -> (StatusCode, u32, Response<Full<Bytes>>) {
        let (status, code, message) = self.parts();
        (status, code, envelope(status, code, &message))
    }

    /// [`Reject::into_response`] for a request's refusal, with a `debug` line saying why (a
    /// client's mistake is never logged louder).
    pub(crate) fn into_logged_response(self) -> (StatusCode, u32, Response<Full<Bytes>>) {
        let (status, code, message) = self.parts();
        tracing::debug!(%status, code, "{message}");
        (status, code, envelope(status, code, &message))
    }
}

impl From<IdentityError> for Reject {
    fn from(e: IdentityError) -> Reject {
        Reject::Identity(e)
    }
}

impl From<FlowError> for Reject {
    fn from(e: FlowError) -> Reject {
        Reject::Flow(e)
    }
}

/// The flow's refusals: the client's mistakes and denials as 4xx, capsign's upstreams as 5xx.
fn flow_parts(e: FlowError) -> (StatusCode, u32, String) {
    match e {
        FlowError::ClientIdMismatch { .. } => (
            StatusCode::FORBIDDEN,
            code::CLIENT_ID_MISMATCH,
            e.to_string(),
        ),
        FlowError::Denied(_) | FlowError::NothingGranted => (
            StatusCode::FORBIDDEN,
            code::CAPABILITY_DENIED,
            e.to_string(),
        ),
        FlowError::TooManyNewGrants { .. }
        | FlowError::TooManyRequested { .. }
        | FlowError::TooManyGrants { .. }
        | FlowError::CookieFull { .. }
        | FlowError::ClaimsNeedJwt { .. }
        | FlowError::ClaimsTooLarge { .. }
        | FlowError::EmbeddedNotConfigured => {
            (StatusCode::BAD_REQUEST, code::BAD_REQUEST, e.to_string())
        }
        FlowError::PolicyUnavailable(inner) => {
            tracing::warn!("{inner}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                "the policy service is unavailable; try again".into(),
            )
        }
        FlowError::Ably(AblyError::Refused {
            status,
            code: ably_code,
            message,
        }) => {
            // Ably refused capsign's own TokenRequest (its key, its clock, a capability its
            // key cannot grant): capsign's fault, never the client's. Not a 401 (ably-js
            // would refresh the user's session and retry) nor a 403 (a Realtime connection
            // would fail): a 502 naming Ably's answer, and a WARN line for the operator.
            tracing::warn!(
                ably_status = status.as_u16(),
                ably_code,
                "Ably refused capsign's token request ({ably_code}: {message}); check ABLY_API_KEY, the clock and the key's capability"
            );
            (
                StatusCode::BAD_GATEWAY,
                code::BAD_GATEWAY,
                format!("Ably refused capsign's token request ({ably_code}: {message})"),
            )
        }
        FlowError::Ably(inner) => {
            tracing::warn!("{inner}");
            (
                StatusCode::BAD_GATEWAY,
                code::BAD_GATEWAY,
                "Ably could not be reached to obtain a token; try again".into(),
            )
        }
        FlowError::Mint(inner) => {
            tracing::error!("minting failed: {inner}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                "internal error while signing".into(),
            )
        }
    }
}

/// The table's 404 for `path` (for the metrics listener, which serves nothing else).
pub fn not_found(path: &str) -> Response<Full<Bytes>> {
    Reject::NotFound(path.to_owned()).into_response().2
}

/// The table's answer for a runtime whose app could not be built from its settings (the
/// reason is logged, not sent).
pub fn not_configured() -> Response<Full<Bytes>> {
    Reject::NotConfigured.into_logged_response().2
}

/// The table's `503` (as `/readyz` answers when not ready) for a runtime whose start-up work (a JWKS fetch) has not succeeded yet.
pub fn not_ready(why: &str) -> Response<Full<Bytes>> {
    Reject::NotReady(why.to_owned()).into_logged_response().2
}

/// The answer to a connection over the server's limits, as the raw HTTP/1.1 response the
/// server writes before closing it: `Reject::Overloaded` from the table, with
/// `Retry-After: 1` and `Connection: close`.
pub fn overloaded_http1() -> Vec<u8> {
    let (status, _, response) = Reject::Overloaded.into_response();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    let (parts, body) = response.into_parts();
    // `Full` holds no data for an empty body.
    let body = body.into_inner().unwrap_or_default();
    for (name, value) in &parts.headers {
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        out.push_str("\r\n");
    }
    out.push_str("retry-after: 1\r\nconnection: close\r\ncontent-length: ");
    out.push_str(itoa::Buffer::new().format(body.len()));
    out.push_str("\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Ably's error envelope, with the headers ably-js reads when it ignores the body.
fn envelope(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "statusCode": status.as_u16(),
            "message": message,
            "href": format!("https://help.ably.io/error/{code}"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(h);
    h.insert(X_ABLY_ERRORCODE, HeaderValue::from(code));
    // Header values must be visible ASCII; anything else becomes '?', and long messages are cut.
    let shown: String = message
        .chars()
        .take(300)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    insert(h, X_ABLY_ERRORMESSAGE, &shown);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_the_table_is_in_all() {
        // The codes are the `u32` constants of `code`; `ALL` lists each once.
        let source = include_str!("error.rs");
        let declared = source
            .lines()
            .filter(|l| l.trim_start().starts_with("pub(crate) const ") && l.contains(": u32 ="))
            .count();
        let mut all = code::ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), code::ALL.len(), "a code listed twice");
        assert_eq!(declared, code::ALL.len(), "a code missing from code::ALL");
    }

    /// The connection-shed answer is the table's 503, whole: it parses as HTTP/1.1, its body
    /// is the envelope its headers describe.
    #[test]
    fn the_overloaded_answer_is_the_tables_503() {
        let raw = overloaded_http1();
        let text = std::str::from_utf8(&raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
        let headers: Vec<(&str, &str)> = lines.map(|l| l.split_once(": ").unwrap()).collect();
        let header = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(header("x-ably-errorcode"), Some("50300"));
        assert_eq!(
            header("x-ably-errormessage"),
            Some("too many connections; try again")
        );
        assert_eq!(header("retry-after"), Some("1"));
        assert_eq!(header("connection"), Some("close"));
        assert_eq!(header("cache-control"), Some("no-store, private"));
        assert_eq!(
            header("content-length"),
            Some(body.len().to_string().as_str())
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], 50300);
        assert_eq!(body["error"]["statusCode"], 503);
    }

    #[test]
    fn error_envelope_shape() {
        let (status, ably_code, r) = Reject::Flow(FlowError::Denied(vec![])).into_response();
        assert_eq!(
            (status, ably_code),
            (StatusCode::FORBIDDEN, code::CAPABILITY_DENIED)
        );
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = envelope(
            StatusCode::FORBIDDEN,
            code::CAPABILITY_DENIED,
            "denied: é\n",
        );
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()["x-ably-errorcode"], "40160");
        assert_eq!(r.headers()["x-ably-errormessage"], "denied: ??");
    }
}
