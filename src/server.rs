//! The hyper server: accepts connections and hands each request to [`crate::http::handle`].
//!
//! This module owns the transport limits: how long a client may take to send its headers
//! (`CAPSIGN_HEADER_TIMEOUT`), how large they may be, and graceful shutdown. It has no opinion
//! about requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;

/// The connection read buffer, which bounds the size of a request's headers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most headers one request may carry.
pub const MAX_HEADERS: usize = 64;
/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests finish
/// (for at most [`SHUTDOWN_GRACE`]).
///
/// # Errors
///
/// None today; accept errors (such as running out of file descriptors) are logged and retried.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    // Without the timer, hyper's header_read_timeout is silently off.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.server_settings().header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
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
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let wants_peer = app.identity.wants_peer();
                let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let app = Arc::clone(&app);
                    if wants_peer {
                        req.extensions_mut().insert(crate::http::PeerAddr(peer));
                    }
                    async move { Ok::<_, Infallible>(crate::http::handle(&app, req).await) }
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}
