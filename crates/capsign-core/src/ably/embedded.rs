//! `format=embedded`: the app's own JWT with the Ably credential in its `x-ably-token` header
//! (`docs/ably-protocol.md` §4.4).
//!
//! Ably accepts "a JWT of any structure that contains an Ably token": it reads the credential in
//! the `x-ably-token` JOSE header (an Ably JWT, or a native Ably token) and cannot check the outer
//! signature, which is the app's own (so the app's API can accept the same token from its
//! clients). The outer `exp` must not be later than the inner credential's expiry; capsign sets it
//! to exactly that.
//!
//! The outer token: header `{"typ":"JWT","alg":"HS256","x-ably-token":"…"}`, claims
//! `{"iat":…,"exp":…,"sub":"…"}` followed by the configured claims in their configured order,
//! HS256 under `CAPSIGN_EMBEDDED_SECRET`'s UTF-8 bytes. Serialized by hand in this fixed order,
//! so the vector of docs/http.md reproduces byte for byte.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;

use crate::crypto::{HmacSha256, keyed_hmac};
use crate::json::push_json_string;
use crate::settings::{EmbeddedInner, EmbeddedSettings};

/// Signs outer JWTs around Ably credentials.
#[derive(Clone)]
pub struct EmbeddedJwt {
    mac: HmacSha256,
    /// The configured claims, serialized once: `,"name":value` for each.
    extra_claims: String,
    /// The Ably credential inside.
    pub inner: EmbeddedInner,
}

impl fmt::Debug for EmbeddedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedJwt")
            .field("secret", &"<redacted>")
            .field("extra_claims", &self.extra_claims)
            .field("inner", &self.inner)
            .finish()
    }
}

impl EmbeddedJwt {
    /// The signer of `settings`.
    pub fn new(settings: &EmbeddedSettings) -> EmbeddedJwt {
        let mut extra_claims = String::new();
        for (name, value) in settings.claims.claims() {
            extra_claims.push(',');
            push_json_string(&mut extra_claims, name);
            extra_claims.push(':');
            extra_claims.push_str(&value.to_string());
        }
        EmbeddedJwt {
            mac: keyed_hmac(settings.secret.expose().as_bytes()),
            extra_claims,
            inner: settings.inner,
        }
    }

    /// The outer JWT around `inner` (an Ably JWT or a native Ably token) for the session's
    /// `sub`, issued at `iat` and expiring at `exp` (Unix seconds; the inner credential's
    /// expiry, or earlier).
    pub fn wrap(&self, inner: &str, sub: &str, iat: u64, exp: u64) -> String {
        let mut header = String::with_capacity(inner.len() + 48);
        header.push_str("{\"typ\":\"JWT\",\"alg\":\"HS256\",\"x-ably-token\":");
        push_json_string(&mut header, inner);
        header.push('}');
        let mut claims = String::with_capacity(64 + sub.len() + self.extra_claims.len());
        let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
        for part in [
            "{\"iat\":",
            a.format(iat),
            ",\"exp\":",
            b.format(exp),
            ",\"sub\":",
        ] {
            claims.push_str(part);
        }
        push_json_string(&mut claims, sub);
        claims.push_str(&self.extra_claims);
        claims.push('}');
        let mut out = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 48);
        URL_SAFE_NO_PAD.encode_string(header, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut out);
        let mut mac = self.mac.clone();
        mac.update(out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{EmbeddedClaims, Secret};

    /// The known-answer vector of docs/http.md: J1b (`docs/ably-protocol.md` §4.6) embedded under the
    /// secret `app-secret-0123456789abcdef0123456789`, checked with Python's `hmac`.
    const VECTOR: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiIsIngtYWJseS10b2tlbiI6ImV5SjBlWEFpT2lKS1YxUWlMQ0poYkdjaU9pSklVekkxTmlJc0ltdHBaQ0k2SW5oV1RIbElkeTV0UkZsdVJrRWlmUS5leUpwWVhRaU9qRTNNREF3TURBd01EQXNJbVY0Y0NJNk1UY3dNREF3TXpZd01Dd2llQzFoWW14NUxXTmhjR0ZpYVd4cGRIa2lPaUo3WENJcVhDSTZXMXdpS2x3aVhYMGlMQ0o0TFdGaWJIa3RZMnhwWlc1MFNXUWlPaUoxYzJWeUxURXlNeUo5LmJLYjlQeFF3Y3h0RFZGa1paS1FDRld5VTJRMGFsejM3dmc4eUY0N1YzRUEifQ.eyJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwic3ViIjoidXNlci0xMjMiLCJpc3MiOiJodHRwczovL2FwcC5leGFtcGxlLmNvbSJ9.INGirmo-VltytGEeCFxmt3j72UdkxGxjbfpHCzzuT_Y";

    #[test]
    fn the_readme_vector_reproduces() {
        let claims = EmbeddedClaims::parse(r#"{"iss":"https://app.example.com"}"#).unwrap();
        let e = EmbeddedJwt::new(&EmbeddedSettings {
            secret: Secret::new("app-secret-0123456789abcdef0123456789".to_owned()),
            inner: EmbeddedInner::Jwt,
            claims,
        });
        let j1b = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiIsImtpZCI6InhWTHlIdy5tRFluRkEifQ.eyJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwieC1hYmx5LWNhcGFiaWxpdHkiOiJ7XCIqXCI6W1wiKlwiXX0iLCJ4LWFibHktY2xpZW50SWQiOiJ1c2VyLTEyMyJ9.bKb9PxQwcxtDVFkZZKQCFWyU2Q0alz37vg8yF47V3EA";
        let token = e.wrap(j1b, "user-123", 1_700_000_000, 1_700_003_600);
        assert_eq!(token, VECTOR);
    }
}
