//! The hyper server: accepts connections and hands each request to [`crate::http::handle`].
//!
//! This module owns the transport limits: how long a client may take to send its headers
//! (`CAPSIGN_HEADER_TIMEOUT`) and how large they may be; how long a response may take to be
//! written (`CAPSIGN_WRITE_TIMEOUT`: a client that pipelines requests and never reads its
//! answers is cut off); how many connections may be open at once (`CAPSIGN_MAX_CONNECTIONS`:
//! past it, new connections get a `503` and are closed, so a flood cannot exhaust file
//! descriptors); the lingering close of a request body that was refused before it was read
//! (as nginx does, so the client reads the `413` instead of a reset); and graceful shutdown.
//! It has no opinion about requests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

use crate::app::App;
use crate::http::BodyTimedOut;
use crate::metrics::{Exposition, ShedReason};

/// The connection read buffer, which bounds the size of a request's headers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most headers one request may carry.
pub const MAX_HEADERS: usize = 64;
/// How long the rest of a refused request body is read and discarded before the connection
/// closes (nginx's `lingering_timeout` is 5 s).
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much of a refused request body is read and discarded at most.
pub const LINGER_BYTES: usize = 8 * 1024 * 1024;
/// How long a shed connection's request is read and discarded before it is closed.
const SHED_LINGER: Duration = Duration::from_secs(1);
/// The most shed connections lingering at once.
const MAX_SHEDDING: usize = 64;

/// What a shed connection that asks `GET /healthz` is told: the process is alive. Liveness
/// must not fail because the instance is busy (a probe would restart it for being loaded);
/// `/readyz` and everything else still get the `503`.
const SHED_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
    cache-control: no-store, private\r\nconnection: close\r\ncontent-length: 3\r\n\r\nok\n";

/// How long a shed connection may take to send the start of its request line.
const SHED_READ: Duration = Duration::from_millis(250);

/// Rate-limits the shedding warning to a line a second, counting what it did not write.
#[derive(Default)]
struct ShedLog {
    last_second: std::sync::atomic::AtomicU64,
    unlogged: std::sync::atomic::AtomicU64,
}

impl ShedLog {
    /// [`ShedLog::shed`] at the system clock's second.
    fn shed_now(&self) -> Option<u64> {
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.shed(now_s)
    }

    /// Counts one shed connection; `Some(n)`: write a line now, for `n` shed connections.
    fn shed(&self, now_s: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.unlogged.fetch_add(1, Relaxed) + 1;
        let last = self.last_second.load(Relaxed);
        if now_s <= last
            || self
                .last_second
                .compare_exchange(last, now_s, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.unlogged.swap(0, Relaxed).max(n))
    }
}

/// Open connections by peer, for `CAPSIGN_MAX_CONNECTIONS_PER_PEER`: one client opening idle
/// connections cannot take every slot. An IPv6 peer counts by its /64 (a client has a whole
/// prefix to pick addresses from); trusted proxies (a load balancer carries everyone's
/// connections) are exempt. The map holds only peers with a connection open, so it is
/// bounded by `CAPSIGN_MAX_CONNECTIONS`.
struct PeerSlots {
    limit: usize,
    trusted: Vec<ipnet::IpNet>,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in [`PeerSlots`], given back when dropped.
struct PeerSlot {
    slots: Arc<PeerSlots>,
    key: std::net::IpAddr,
}

impl PeerSlots {
    fn new(limit: usize, trusted: Vec<ipnet::IpNet>) -> Arc<PeerSlots> {
        Arc::new(PeerSlots {
            limit,
            trusted,
            open: std::sync::Mutex::default(),
        })
    }

    /// A place for a connection from `peer`: `Ok(None)` when it is exempt, `Err` when it
    /// already has `limit` open.
    fn take(self: &Arc<Self>, peer: std::net::IpAddr) -> Result<Option<PeerSlot>, ()> {
        let peer = peer.to_canonical();
        if self.trusted.iter().any(|n| n.contains(&peer)) {
            return Ok(None);
        }
        let key = match peer {
            std::net::IpAddr::V6(v6) => {
                std::net::IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into())
            }
            v4 => v4,
        };
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return Err(());
        }
        *n += 1;
        Ok(Some(PeerSlot {
            slots: Arc::clone(self),
            key,
        }))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish (for at most `CAPSIGN_SHUTDOWN_GRACE`; idle connections are
/// closed at once). The caller's `shutdown` future holds the drain (`/readyz` 503 while still
/// serving, for `CAPSIGN_SHUTDOWN_DELAY`).
///
/// # Errors
///
/// None today; accept errors (such as running out of file descriptors) are logged and retried.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Drained> {
    run_until(listener, app, shutdown, std::future::pending()).await
}

/// Reads the revocation list every `CAPSIGN_REVOCATIONS_REFRESH` while the server runs, so an
/// instance that gets no requests holds a list as fresh as a busy one's: its next request
/// already sees a revocation published a refresh interval ago. Stops with the server.
fn keep_revocations_fresh(app: &Arc<App>) -> Option<AbortOnDrop> {
    let revocations = Arc::clone(app.flow.revocations.as_ref()?);
    let every = app.settings.revocation.refresh;
    let app = Arc::downgrade(app);
    Some(AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(app) = app.upgrade() else {
                return;
            };
            let now = app.clock.now_ms();
            drop(app);
            revocations.refresh_unless_running(now).await;
        }
    })))
}

/// A background task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a server's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Drained {
    /// Connections still open when the drain ended (at `CAPSIGN_SHUTDOWN_GRACE`, or at
    /// `abort`), closed without an answer to what they were sending.
    pub cut: usize,
}

/// [`run`], and when `abort` completes during the drain (a second SIGTERM), the drain ends
/// at once.
///
/// # Errors
///
/// None today; accept errors are logged and retried.
pub async fn run_until(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    abort: impl Future<Output = ()>,
) -> std::io::Result<Drained> {
    let limits = app.server_settings().clone();
    let _fresh = keep_revocations_fresh(&app);
    let mut builder = http1::Builder::new();
    // Without the timer, hyper's header_read_timeout is silently off.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peer_slots = PeerSlots::new(
        limits.max_connections_per_peer,
        limits.trusted_proxies.clone(),
    );
    let peer_shed_log = ShedLog::default();
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    let shed_response: Arc<[u8]> = crate::http::overloaded_http1().into();
    let shed_log = ShedLog::default();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    if let Some(n) = shed_log.shed_now() {
                        tracing::warn!(
                            shed = n,
                            "connection limit (CAPSIGN_MAX_CONNECTIONS) reached: shedding new \
                             connections with 503 ({n} since the last line; at most a line a second)"
                        );
                    }
                    app.metrics.connection_shed(ShedReason::MaxConnections);
                    shed(stream, &shedding, &shed_response);
                    continue;
                };
                let Ok(peer_slot) = peer_slots.take(peer.ip()) else {
                    if let Some(n) = peer_shed_log.shed_now() {
                        tracing::warn!(
                            shed = n,
                            peer = %peer.ip(),
                            "connection limit per peer (CAPSIGN_MAX_CONNECTIONS_PER_PEER={}) \
                             reached by this peer: shedding its new connections with 503 ({n} \
                             since the last line; at most a line a second); a load balancer in \
                             front belongs in CAPSIGN_TRUSTED_PROXIES",
                            limits.max_connections_per_peer,
                        );
                    }
                    drop(slot);
                    app.metrics.connection_shed(ShedReason::PerPeer);
                    shed(stream, &shedding, &shed_response);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let mut stream = TimeoutStream::new(stream);
                stream.set_write_timeout(Some(limits.write_timeout));
                let served = Arc::clone(&app);
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let app = Arc::clone(&served);
                    let timeout = app.http_settings().body_timeout;
                    let req = req.map(|body| LingeringBody::new(body, timeout));
                    async move {
                        Ok::<_, Infallible>(crate::http::handle_from(&app, req, Some(peer.ip())).await)
                    }
                });
                let io = TokioIo::new(Box::pin(stream));
                let conn = graceful.watch(builder.serve_connection(io, service));
                app.metrics.connections_open_by(1);
                let open = Arc::clone(&app);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    drop(slot);
                    drop(peer_slot);
                    open.metrics.connections_open_by(-1);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    let cut = tokio::select! {
        // Done when nothing is left, whatever else is ready.
        biased;
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(grace) => {
            let cut = slots_in_use(&slots, limits.max_connections);
            tracing::warn!("{cut} connection(s) still open after {grace:?} (CAPSIGN_SHUTDOWN_GRACE); closing them");
            cut
        }
        () = abort => {
            let cut = slots_in_use(&slots, limits.max_connections);
            tracing::warn!("drain ended by a second signal; closing {cut} open connection(s)");
            cut
        }
    };
    Ok(Drained { cut })
}

/// Serves `GET /metrics` (the exposition of `app`'s metrics, OpenMetrics or the Prometheus
/// text format as the scraper's `Accept` asks, every known refusal code at 0 from the start) on `listener`, a
/// listener of its own (`CAPSIGN_METRICS_LISTEN`), until `shutdown` completes. Anything else
/// is a 404.
///
/// # Errors
///
/// None today; accept errors are logged and retried.
pub async fn run_metrics(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.server_settings().header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    app.metrics.known_refusals(crate::http::REFUSAL_CODES);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let app = Arc::clone(&app);
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(metrics_response(&app, &req)) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}

fn metrics_response<B>(
    app: &App,
    req: &hyper::Request<B>,
) -> hyper::Response<http_body_util::Full<Bytes>> {
    if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
        return crate::http::not_found(req.uri().path());
    }
    let mut resp = hyper::Response::new(http_body_util::Full::new(Bytes::new()));
    app.observe();
    // Prometheus asks for OpenMetrics; a scraper that does not gets the 0.0.4 text format.
    let format = Exposition::negotiate(
        req.headers()
            .get(hyper::header::ACCEPT)
            .and_then(|a| a.to_str().ok()),
    );
    *resp.body_mut() = http_body_util::Full::new(Bytes::from(app.metrics.encode_as(format)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(format.content_type()),
    );
    resp
}

/// Connections holding one of the `max` slots.
fn slots_in_use(slots: &Semaphore, max: usize) -> usize {
    max.saturating_sub(slots.available_permits())
}

/// Answers a connection over the limit and closes it: `200` to a liveness probe
/// (`GET /healthz`), else a `503`. The start of the request is read for at most
/// [`SHED_READ`], then the rest is read and discarded (for at most [`SHED_LINGER`]): closing a
/// socket with unread data sends a reset, which would lose the answer. At most
/// [`MAX_SHEDDING`] connections are handled so at a time; past that a connection is answered
/// `503` and closed at once.
fn shed(stream: TcpStream, shedding: &Arc<Semaphore>, response: &Arc<[u8]>) {
    let Ok(permit) = Arc::clone(shedding).try_acquire_owned() else {
        // One non-blocking write into a fresh socket's empty buffer.
        let _ = stream.try_write(response);
        return;
    };
    let response = Arc::clone(response);
    tokio::spawn(async move {
        let mut stream = stream;
        let handle = async {
            const PROBE: &[u8] = b"GET /healthz ";
            let mut head = [0u8; PROBE.len()];
            let mut got = 0;
            let read_head = async {
                while let Some(rest) = head.get_mut(got..).filter(|r| !r.is_empty()) {
                    match stream.read(rest).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            };
            let _ = tokio::time::timeout(SHED_READ, read_head).await;
            let answer: &[u8] = if head.get(..got) == Some(PROBE) {
                SHED_ALIVE
            } else {
                &response
            };
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let mut seen = 0usize;
            while seen < 64 * 1024 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        };
        let _ = tokio::time::timeout(SHED_LINGER + SHED_READ, handle).await;
        drop(permit);
    });
}

/// A request body that, when dropped before its end (the handler refused the request before
/// reading it, say a `413`), goes on reading and discarding the rest in the background for at
/// most [`LINGER_TIME`] and [`LINGER_BYTES`]. Closing a connection with unread data makes the
/// kernel send a reset, and a client still sending (Node's `fetch`) then sees "fetch failed"
/// instead of the answer.
///
/// Reading it is bounded in time too (`CAPSIGN_BODY_TIMEOUT`): a body still incomplete then
/// fails with [`BodyTimedOut`], which the handler answers with a `408`. The timer starts at
/// the first read, so a request whose body is never read (a `GET`) sets none.
struct LingeringBody {
    inner: Option<Incoming>,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LingeringBody {
    fn new(inner: Incoming, timeout: Duration) -> LingeringBody {
        LingeringBody {
            inner: Some(inner),
            timeout,
            deadline: None,
        }
    }
}

impl Body for LingeringBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for LingeringBody {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads and discards what is left of `body`, within the lingering bounds.
async fn drain(mut body: Incoming) {
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, read).await;
}

#[cfg(test)]
mod shed_log_tests {
    use super::ShedLog;

    /// Issue 27 (3): every shed connection wrote a WARN line; now a line a second at most,
    /// with the count of the connections shed since the last one.
    #[test]
    fn a_line_a_second_with_the_count() {
        let log = ShedLog::default();
        assert_eq!(log.shed(100), Some(1));
        assert_eq!(log.shed(100), None);
        assert_eq!(log.shed(100), None);
        assert_eq!(log.shed(100), None);
        assert_eq!(log.shed(101), Some(4));
        assert_eq!(log.shed(101), None);
        assert_eq!(log.shed(105), Some(2));
    }
}
