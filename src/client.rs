//! capsign's outbound HTTP: the policy webhook, a JWKS URL, and Ably's REST API.
//!
//! One [`HttpClient`] per process, built at start-up: HTTP/1.1 over plain TCP or rustls (webpki
//! roots, ring), pooled connections, and for each call a deadline covering connect, request
//! and the whole response body, plus a cap on the body's size. Nothing here retries: the
//! caller decides what a failure means.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The header that carries the request id to the policy webhook and to Ably, so their logs
/// and capsign's meet.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Why an outbound call failed. The message never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No complete answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, TLS failure and the like.
    #[error("request failed: {0}")]
    Network(String),
    /// The body was larger than allowed.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl ClientError {
    /// The kind of failure, for metrics: `timeout`, `network` or `too_large`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Timeout(_) => "timeout",
            ClientError::Network(_) => "network",
            ClientError::TooLarge(_) => "too_large",
        }
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The shared outbound client. Built on first use: a deployment that never calls out (rules
/// only, no `format=token`) never loads the TLS roots, which keeps start-up and memory small.
#[derive(Clone, Default)]
pub struct HttpClient {
    inner: std::sync::Arc<std::sync::OnceLock<Inner>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client for `http` and `https` URLs, trusting the webpki roots.
    pub fn new() -> HttpClient {
        HttpClient::default()
    }

    fn inner(&self) -> &Inner {
        self.inner.get_or_init(HttpClient::build)
    }

    fn build() -> Inner {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(https)
    }

    /// Sends `req` and reads the answer within `timeout`, refusing bodies over `max_body`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Fetched, ClientError> {
        let call = async {
            let resp = self
                .inner()
                .request(req)
                .await
                .map_err(|e| ClientError::Network(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            if let Some(len) = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                if len > max_body as u64 {
                    return Err(ClientError::TooLarge(max_body));
                }
            }
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ClientError::TooLarge(max_body)
                    } else {
                        ClientError::Network(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Fetched {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// `GET url`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn get(
        &self,
        url: &Uri,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Fetched, ClientError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Network(e.to_string()))?;
        self.send(req, timeout, max_body).await
    }
}

/// The `User-Agent` of capsign's outbound calls.
pub(crate) const USER_AGENT: &str = concat!("capsign/", env!("CARGO_PKG_VERSION"));

/// The error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
