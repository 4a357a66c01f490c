//! The one error table: every refusal capsign answers, as a status, an Ably error code and a
//! message, written in Ably's error envelope.
//!
//! Flow and identity errors convert into a [`Reject`] with `From`, so handlers use `?`; the
//! `match`es below are the only place where a status or a code is chosen. Client mistakes are
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
use crate::identity::IdentityError;

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

/// A refusal: the status, Ably's code and the message the client sees.
#[derive(Debug)]
pub(crate) struct Reject {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// Ably's error code.
    pub(crate) code: u32,
    /// What is wrong, for the client: never a secret, never internal detail.
    pub(crate) message: String,
}

impl Reject {
    /// A refusal with these parts.
    pub(crate) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Reject {
        Reject {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400/40000.
    pub(crate) fn bad(message: impl Into<String>) -> Reject {
        Reject::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message)
    }

    /// 403/40300.
    pub(crate) fn forbidden(message: impl Into<String>) -> Reject {
        Reject::new(StatusCode::FORBIDDEN, code::FORBIDDEN, message)
    }

    /// 404/40400 for `path`.
    pub(crate) fn not_found(path: &str) -> Reject {
        Reject::new(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            format!("no such endpoint {path}"),
        )
    }

    /// Ably's error envelope, with the headers ably-js reads.
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        envelope(self.status, self.code, &self.message)
    }
}

impl From<IdentityError> for Reject {
    /// Every identity failure is 401/40101, so the client retries after the app refreshes
    /// its session.
    fn from(e: IdentityError) -> Reject {
        Reject::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, e.to_string())
    }
}

impl From<FlowError> for Reject {
    fn from(e: FlowError) -> Reject {
        match e {
            FlowError::ClientIdMismatch { .. } => Reject::new(
                StatusCode::FORBIDDEN,
                code::CLIENT_ID_MISMATCH,
                e.to_string(),
            ),
            FlowError::Denied(_) | FlowError::NothingGranted => Reject::new(
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
            | FlowError::EmbeddedNotConfigured => Reject::bad(e.to_string()),
            FlowError::PolicyUnavailable(inner) => {
                tracing::warn!("{inner}");
                Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::UNAVAILABLE,
                    "the policy service is unavailable; try again",
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
                Reject::new(
                    StatusCode::BAD_GATEWAY,
                    code::BAD_GATEWAY,
                    format!("Ably refused capsign's token request ({ably_code}: {message})"),
                )
            }
            FlowError::Ably(inner) => {
                tracing::warn!("{inner}");
                Reject::new(
                    StatusCode::BAD_GATEWAY,
                    code::BAD_GATEWAY,
                    "Ably could not be reached to obtain a token; try again",
                )
            }
            FlowError::Mint(inner) => {
                tracing::error!("minting failed: {inner}");
                Reject::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::INTERNAL,
                    "internal error while signing",
                )
            }
        }
    }
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

    #[test]
    fn error_envelope_shape() {
        let r = Reject::new(
            StatusCode::FORBIDDEN,
            code::CAPABILITY_DENIED,
            "denied: é\n",
        )
        .into_response();
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()["x-ably-errorcode"], "40160");
        assert_eq!(r.headers()["x-ably-errormessage"], "denied: ??");
    }
}
