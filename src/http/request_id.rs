//! The request id: chosen for each request, echoed in its response, sent to the policy webhook
//! and Ably, and carried by every log line written while the request is answered.
//!
//! Why not a `tracing` span: a span per request costs the JSON log formatter a map of its
//! fields at creation and every layer a call at each poll; `bench/run --observe` measured the
//! acquire at 0.84 of its rate without logs with a span (0.96 without one). The id is instead
//! held in a thread-local while the request's future is polled ([`Carrying`]), and the log
//! formatter of the binaries (`src/logging.rs`) adds it to any line written then. Nothing is
//! done per request beyond copying the id in and out at each poll.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue};

use super::X_REQUEST_ID;

/// The longest request id taken from a client.
const MAX_LEN: usize = 128;

thread_local! {
    /// The id of the request being polled on this thread; empty when none is.
    static CURRENT: RefCell<String> = RefCell::new(String::with_capacity(MAX_LEN));
}

/// The request id: the client's or proxy's `X-Request-Id` when it is 1 to 128 characters of
/// letters, digits and `-_.:/+=` (so it needs no escaping in a log line or a header), else a
/// new random one (32 hex digits).
pub(super) fn choose(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(id)
            if (1..=MAX_LEN).contains(&id.len()) && id.as_bytes().iter().all(|b| allowed(*b)) =>
        {
            id.clone()
        }
        _ => {
            let mut hex = [0u8; 32];
            // 16 bytes always fit 32 hex digits.
            let _ = hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut hex);
            HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b)
}

/// Runs `f` with the id of the request being answered on this thread, if any (for the log
/// formatter).
pub fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    CURRENT.with(|current| match current.try_borrow() {
        Ok(id) if !id.is_empty() => f(Some(&id)),
        _ => f(None),
    })
}

/// A future that makes `id` the current request id while it is polled.
pub(super) struct Carrying<'a, F> {
    pub(super) id: &'a str,
    pub(super) inner: Pin<&'a mut F>,
}

impl<F: Future> Future for Carrying<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _current = Current::set(self.id);
        self.inner.as_mut().poll(cx)
    }
}

/// Holds the thread's current request id until dropped (also when the poll panics).
struct Current;

impl Current {
    fn set(id: &str) -> Current {
        CURRENT.with(|current| {
            if let Ok(mut current) = current.try_borrow_mut() {
                current.clear();
                current.push_str(id);
            }
        });
        Current
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.with(|current| {
            if let Ok(mut current) = current.try_borrow_mut() {
                current.clear();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_client_id_is_kept_and_anything_else_replaced() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_str(v).unwrap());
            choose(&h)
        };
        assert_eq!(with("support-case-4711"), "support-case-4711");
        for bad in ["", "a b", "a\"b", &"x".repeat(129)] {
            let id = with(bad);
            assert_eq!(id.len(), 32, "{bad:?}");
        }
        assert_eq!(choose(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn the_id_is_current_only_while_its_future_is_polled() {
        let mut inner = std::pin::pin!(async { with_current(|id| id.map(str::to_owned)) });
        let carrying = Carrying {
            id: "abc",
            inner: inner.as_mut(),
        };
        let mut carrying = std::pin::pin!(carrying);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(
            carrying.as_mut().poll(&mut cx),
            Poll::Ready(Some("abc".to_owned()))
        );
        assert_eq!(with_current(|id| id.map(str::to_owned)), None);
    }
}
