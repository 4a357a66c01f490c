//! The request id: chosen for each request, echoed in its response, sent to the policy webhook
//! and Ably (`X-Request-Id`), and carried by every log line written while the request is
//! answered (the `request` span of [`super::handle_from`]).

use http::{HeaderMap, HeaderValue};

use super::X_REQUEST_ID;

/// The longest request id taken from a client.
const MAX_LEN: usize = 128;

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
}
