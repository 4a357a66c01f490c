//! What capsign needs from the runtime it runs in, and its outbound HTTP: the policy webhook,
//! a JWKS URL, and Ably's REST API.
//!
//! The core never opens a socket, starts a task or reads a file by itself: it asks a
//! [`Platform`], which each runtime implements once (hyper and tokio for the server and
//! Lambda, `fetch` in a Cloudflare Worker). The clock and randomness need no trait: they come
//! from crates that pick the runtime's own source per target (`web-time`: the system clock, or
//! `Date.now()` under WebAssembly; `getrandom`: the OS, or `crypto.getRandomValues`).
//!
//! [`HttpClient`] is the handle the services hold: one per app, cheap to clone. Nothing here
//! retries: the caller decides what a failure means.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};

/// The header that carries the request id to the policy webhook and to Ably, so their logs
/// and capsign's meet.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// The `User-Agent` of capsign's outbound calls.
pub const USER_AGENT: &str = concat!("capsign/", env!("CARGO_PKG_VERSION"));

/// A boxed future: `Send` on native targets (a multi-threaded server moves requests between
/// threads), not under WebAssembly, where a runtime's futures (a Worker's `fetch`) are
/// single-threaded.
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed future: `Send` on native targets (a multi-threaded server moves requests between
/// threads), not under WebAssembly, where a runtime's futures (a Worker's `fetch`) are
/// single-threaded.
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What the core needs from its runtime. Implemented once per runtime.
pub trait Platform: Send + Sync + 'static {
    /// Sends `req` and reads the whole answer within `timeout` (connect, request and body),
    /// refusing a body over `max_body` bytes.
    fn send(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
        max_body: usize,
    ) -> BoxFuture<'static, Result<Fetched, ClientError>>;

    /// Runs `task` in the background and returns `true`, or returns `false` when this runtime
    /// cannot (an instance frozen between requests, as in AWS Lambda, or a Worker): the caller
    /// then does the work in the request. The default cannot.
    fn spawn(&self, task: BoxFuture<'static, ()>) -> bool {
        drop(task);
        false
    }

    /// Reads a file named by a setting (the rules file, a PEM key, a JWKS file), at start-up
    /// only. The default reads the file system; a runtime without one maps paths to what it
    /// has (a Worker's text bindings).
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

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

/// The app's handle on its [`Platform`]: cheap to clone, one per app.
#[derive(Clone)]
pub struct HttpClient {
    platform: Arc<dyn Platform>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// The handle on `platform`.
    pub fn new(platform: Arc<dyn Platform>) -> HttpClient {
        HttpClient { platform }
    }

    /// Sends `req` and reads the answer within `timeout`, refusing bodies over `max_body`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn send(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Fetched, ClientError> {
        self.platform.send(req, timeout, max_body).await
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
            .body(Bytes::new())
            .map_err(|e| ClientError::Network(e.to_string()))?;
        self.send(req, timeout, max_body).await
    }

    /// Runs the work `make` builds in the background when the runtime can, else awaits it
    /// here: a runtime frozen between requests (Lambda, a Worker) does it in the request that
    /// found it due. The one policy of the JWKS and revocation-list refreshes.
    pub(crate) async fn in_background_or_here(&self, make: impl Fn() -> BoxFuture<'static, ()>) {
        if !self.platform.spawn(make()) {
            make().await;
        }
    }

    /// Reads a file named by a setting; see [`Platform::read_file`].
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    pub fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.platform.read_file(path)
    }
}

/// Holds a "refresh in progress" flag (a JWKS URL, the revocation list); clears it when
/// dropped, also when the request that started the refresh is dropped mid-fetch.
pub(crate) struct RefreshGuard<'a>(&'a AtomicBool);

impl<'a> RefreshGuard<'a> {
    /// Sets `flag` and returns its guard, or `None` when it was already set.
    pub(crate) fn take(flag: &'a AtomicBool) -> Option<RefreshGuard<'a>> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| RefreshGuard(flag))
    }
}

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A runtime that cannot call out: every outbound call fails at once. For a build that needs
/// none (rules only, no `format=token`, no JWKS URL), the tests, and the benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

impl Platform for Offline {
    fn send(
        &self,
        req: Request<Bytes>,
        _: Duration,
        _: usize,
    ) -> BoxFuture<'static, Result<Fetched, ClientError>> {
        let uri = req.uri().to_string();
        Box::pin(async move { Err(ClientError::Network(format!("offline: cannot reach {uri}"))) })
    }
}
