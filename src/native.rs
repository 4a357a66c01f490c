//! The native runtime's [`Platform`]: outbound HTTP with hyper (the policy webhook, a JWKS
//! URL, Ably's REST API), background tasks on tokio, files from the file system.
//!
//! One [`Native`] per process: HTTP/1.1 over plain TCP or rustls (webpki roots, ring), pooled
//! connections, and for each call a deadline covering connect, request and the whole response
//! body, plus a cap on the body's size. Nothing here retries: the caller decides what a
//! failure means.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capsign_core::client::{BoxFuture, ClientError, Fetched, Platform};
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The native runtime. Its client is built on first use: a deployment that never calls out
/// (rules only, no `format=token`) never loads the TLS roots, which keeps start-up and memory
/// small.
#[derive(Default)]
pub struct Native {
    inner: std::sync::OnceLock<Inner>,
    background: bool,
}

impl std::fmt::Debug for Native {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Native")
    }
}

/// The platform of a server: outbound calls for `http` and `https` URLs (trusting the webpki
/// roots), background tasks on the current tokio runtime.
pub fn server() -> Arc<dyn Platform> {
    Arc::new(Native {
        inner: std::sync::OnceLock::new(),
        background: true,
    })
}

/// The platform of an instance frozen between requests (AWS Lambda): the same outbound
/// calls, but no background tasks, since one would stop mid-fetch.
pub fn frozen_between_requests() -> Arc<dyn Platform> {
    Arc::new(Native::default())
}

impl Platform for Native {
    fn send(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
        max_body: usize,
    ) -> BoxFuture<'static, Result<Fetched, ClientError>> {
        let call = self.inner().request(req.map(Full::new));
        Box::pin(read_answer(call, timeout, max_body))
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) -> bool {
        if !self.background {
            return false;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(task);
                true
            }
            Err(_) => false,
        }
    }
}

impl Native {
    fn inner(&self) -> &Inner {
        self.inner.get_or_init(Native::build)
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
}

/// Awaits `call`'s answer and reads its body, within `timeout`, refusing bodies over
/// `max_body`.
async fn read_answer(
    call: hyper_util::client::legacy::ResponseFuture,
    timeout: Duration,
    max_body: usize,
) -> Result<Fetched, ClientError> {
    let read = async {
        let resp = call
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
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

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
