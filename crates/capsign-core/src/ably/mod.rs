//! Ably: the API key, Ably JWTs and signed TokenRequests, and (`rest`) the two REST calls
//! capsign makes itself.
//!
//! This module owns the wire formats of `docs/ably-protocol.md` (§1 TokenRequests, §4 Ably
//! JWTs), byte for byte. It takes every time as an argument and reads no clock, so the
//! vectors reproduce in tests. What to put in a credential (capability, clientId, ttl) is
//! decided by the flow.

pub(crate) mod embedded;
pub(crate) mod rest;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac as _;
use rand::Rng as _;
use serde::Serialize;

use crate::capability::CapabilitySet;
use crate::client::HttpClient;
use crate::crypto::{HmacSha256, keyed_hmac};
use crate::hs256::Hs256Key;
use crate::json::push_json_string;
use crate::settings::{AblyApiKey, AblySettings};

pub use embedded::EmbeddedJwt;
pub use rest::{AblyError, AblyRest, Revoked};

/// Length of the nonces capsign generates (Ably requires at least 16).
pub const NONCE_LEN: usize = 32;

/// What the flow needs of Ably: the key that signs, the key's own capability, and the REST
/// API for `format=token`.
#[derive(Debug)]
pub struct Ably {
    /// Signs every credential.
    pub key: AblyKey,
    /// The key's own capability, when configured: minted sets are intersected with it.
    pub key_capability: Option<CapabilitySet>,
    /// Ably's REST API.
    pub rest: AblyRest,
    /// Wraps credentials for `format=embedded`, when configured.
    pub embedded: Option<EmbeddedJwt>,
}

impl Ably {
    /// The Ably service of `settings`, calling out through `client`.
    pub fn new(settings: &AblySettings, client: HttpClient) -> Ably {
        Ably {
            key: AblyKey::new(&settings.key),
            key_capability: settings.key_capability.clone(),
            rest: AblyRest::new(settings.rest_url.clone(), settings.timeout, client),
            embedded: settings.embedded.as_ref().map(EmbeddedJwt::new),
        }
    }
}

/// Why a credential could not be minted. Only a bug or a broken crypto backend gets here.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A field that would make the TokenRequest sign text ambiguous.
    #[error("{0} contains a line feed")]
    LineFeed(&'static str),
    /// JSON serialization failed.
    #[error("serializing the TokenRequest failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// An Ably API key, parsed once at start-up with its signing state prepared.
#[derive(Clone)]
pub struct AblyKey {
    key_name: String,
    jwt: Hs256Key,
    mac: HmacSha256,
}

impl AblyKey {
    /// The signing state of a checked key.
    pub fn new(key: &AblyApiKey) -> AblyKey {
        AblyKey::from_parts(&key.name, key.secret.expose())
    }

    /// A key from its name and secret as they are, without [`AblyApiKey::parse`]'s checks of
    /// the name's shape (published vectors use names such as `a_key_name`).
    pub fn from_parts(key_name: &str, secret: &str) -> AblyKey {
        AblyKey {
            key_name: key_name.to_owned(),
            // Ably signs with the secret's UTF-8 bytes as they are, never base64-decoded.
            jwt: Hs256Key::new(secret.as_bytes(), Some(key_name)),
            mac: keyed_hmac(secret.as_bytes()),
        }
    }

    /// `appId.keyId`, the public part.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// Mints an Ably JWT: header `typ, alg, kid`; claims `iat`, `exp` (seconds),
    /// `x-ably-capability` (the canonical JSON text) and `x-ably-clientId` when given.
    pub fn jwt(
        &self,
        capability: &CapabilitySet,
        client_id: Option<&str>,
        iat: u64,
        exp: u64,
    ) -> String {
        self.jwt_with_claims(capability, client_id, iat, exp, &[])
    }

    /// [`AblyKey::jwt`] with more claims after the others, each a JSON string: user claims
    /// (`ably.room.…`, `ably.channel.…`).
    pub fn jwt_with_claims(
        &self,
        capability: &CapabilitySet,
        client_id: Option<&str>,
        iat: u64,
        exp: u64,
        claims: &[(String, String)],
    ) -> String {
        // The claims in serde_json's order and bytes, written into the thread's scratch buffer.
        crate::scratch::with_text(|json| {
            let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
            for part in ["{\"iat\":", a.format(iat), ",\"exp\":", b.format(exp)] {
                json.push_str(part);
            }
            json.push_str(",\"x-ably-capability\":");
            capability.push_json_literal(json);
            if let Some(id) = client_id {
                json.push_str(",\"x-ably-clientId\":");
                push_json_string(json, id);
            }
            for (name, value) in claims {
                json.push(',');
                push_json_string(json, name);
                json.push(':');
                push_json_string(json, value);
            }
            json.push('}');
            self.jwt.sign(json.as_bytes())
        })
    }

    /// Signs a TokenRequest (`docs/ably-protocol.md` §1) and returns its JSON: the seven fields,
    /// with an absent `ttl`, `capability` or `clientId` left out of the JSON and written as
    /// an empty line in the sign text. capsign itself always sets `ttl` and `capability`.
    ///
    /// # Errors
    ///
    /// A line feed in `client_id` or `nonce`, which would make the sign text ambiguous.
    pub fn token_request(
        &self,
        ttl_ms: Option<u64>,
        capability: Option<&str>,
        client_id: Option<&str>,
        timestamp_ms: u64,
        nonce: &str,
    ) -> Result<String, TokenError> {
        if client_id.is_some_and(|c| c.contains('\n')) {
            return Err(TokenError::LineFeed("clientId"));
        }
        if nonce.contains('\n') {
            return Err(TokenError::LineFeed("nonce"));
        }
        let mut ttl_buf = itoa::Buffer::new();
        let mut ts_buf = itoa::Buffer::new();
        let mut mac = self.mac.clone();
        for field in [
            self.key_name.as_str(),
            ttl_ms.map_or("", |t| ttl_buf.format(t)),
            capability.unwrap_or(""),
            client_id.unwrap_or(""),
            ts_buf.format(timestamp_ms),
            nonce,
        ] {
            mac.update(field.as_bytes());
            mac.update(b"\n");
        }
        let mac = STANDARD.encode(mac.finalize().into_bytes());

        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct TokenRequest<'a> {
            key_name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            ttl: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            capability: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_id: Option<&'a str>,
            timestamp: u64,
            nonce: &'a str,
            mac: &'a str,
        }
        Ok(serde_json::to_string(&TokenRequest {
            key_name: &self.key_name,
            ttl: ttl_ms,
            capability,
            client_id,
            timestamp: timestamp_ms,
            nonce,
            mac: &mac,
        })?)
    }
}

impl fmt::Debug for AblyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AblyKey {{ key_name: {:?}, secret: <redacted> }}",
            self.key_name
        )
    }
}

/// A fresh nonce: [`NONCE_LEN`] alphanumerics from the thread's CSPRNG (ChaCha, seeded and
/// reseeded from the operating system).
pub fn nonce() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(NONCE_LEN)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AblyKey {
        AblyKey::new(&AblyApiKey::parse("xVLyHw.mDYnFA:FAKESECRETfakesecret").unwrap())
    }

    #[test]
    fn parse_rejects_malformed_keys() {
        for bad in [
            "", "nocolon", "a.b:", ":s", "ab:s", "a.:s", ".b:s", "a.b.c:s", "a b.c:s",
        ] {
            assert!(AblyApiKey::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{:?}", key()).contains("FAKESECRET"));
    }

    #[test]
    fn nonce_is_long_random_alphanumeric() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn line_feeds_refused() {
        let k = key();
        assert!(
            k.token_request(Some(1), None, Some("a\nb"), 1, "n")
                .is_err()
        );
        assert!(k.token_request(Some(1), None, None, 1, "n\n").is_err());
    }
}
