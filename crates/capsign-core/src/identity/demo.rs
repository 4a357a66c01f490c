//! The `demo` identity mode: a user name in a signed session cookie, set by `POST /login`
//! (routed by `http`, which calls [`DemoIdentity::login_cookie`]) for trying capsign on
//! loopback.
//!
//! The session cookie is `base64url(user) "." base64url(HMAC-SHA256(K, "capsign-demo-session-v1"
//! 0x00 ‖ user))`, where `K = HKDF-SHA256(salt "capsign", the grant cookie's signing secret,
//! "capsign demo session v1 hmac-sha256")`: a key of its own, so a demo session can never be
//! taken for a grant cookie or the other way round.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use serde_json::Map;

use super::{ClientId, Identity, IdentityError};
use crate::crypto::{HmacSha256, hkdf, keyed_hmac};
use crate::set_cookie::CookieSpec;
use crate::settings::SameSite;

/// The demo session cookie's name.
pub const DEMO_COOKIE: &str = "capsign-demo-session";

const HKDF_SALT: &[u8] = b"capsign";
const HKDF_INFO: &[u8] = b"capsign demo session v1 hmac-sha256";

/// Signs and verifies demo session cookies.
pub struct DemoIdentity {
    mac: HmacSha256,
}

impl fmt::Debug for DemoIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DemoIdentity { key: <redacted> }")
    }
}

const DEMO_DOMAIN: &[u8] = b"capsign-demo-session-v1\0";

impl DemoIdentity {
    /// A demo identity keyed by `key` (derived from the cookie key with its own label).
    pub fn new(key: &[u8]) -> DemoIdentity {
        DemoIdentity {
            mac: keyed_hmac(key),
        }
    }

    /// The demo identity keyed from the grant cookie's signing secret.
    pub fn from_cookie_key(cookie_secret: &[u8]) -> DemoIdentity {
        DemoIdentity::new(&hkdf(HKDF_SALT, cookie_secret, HKDF_INFO))
    }

    /// The demo session cookie: `HttpOnly; SameSite=Lax; Path=/`, not `Secure` (the demo
    /// runs on plain HTTP on loopback), a browser-session cookie unless `max_age_s`.
    fn cookie(max_age_s: Option<u64>) -> CookieSpec {
        CookieSpec {
            name: DEMO_COOKIE.into(),
            same_site: SameSite::Lax,
            secure: false,
            max_age_s,
        }
    }

    /// The `Set-Cookie` value that logs `user` in.
    pub fn login_cookie(&self, user: &ClientId) -> String {
        Self::cookie(None)
            .with_value(&self.session_value(user))
            .into_header()
    }

    /// The `Set-Cookie` value that logs out.
    pub fn logout_cookie() -> String {
        Self::cookie(Some(0)).with_value("").into_header()
    }

    fn tag(&self, user: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(DEMO_DOMAIN);
        mac.update(user.as_bytes());
        mac
    }

    /// The cookie value that logs `user` in.
    pub fn session_value(&self, user: &str) -> String {
        let tag = self.tag(user).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(user),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    pub(super) fn identify(&self, value: Option<&str>) -> Result<Identity, IdentityError> {
        let value = value.ok_or_else(|| {
            IdentityError::Missing(format!(
                " (demo mode: log in at / to get cookie {DEMO_COOKIE})"
            ))
        })?;
        let invalid = || IdentityError::Invalid("demo session cookie does not verify".into());
        let (user, tag) = value.split_once('.').ok_or_else(invalid)?;
        let user = URL_SAFE_NO_PAD.decode(user).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        let user = String::from_utf8(user).map_err(|_| invalid())?;
        self.tag(&user).verify_slice(&tag).map_err(|_| invalid())?;
        Ok(Identity::new(ClientId::try_from(user)?, Map::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_cookie_round_trip() {
        let d = DemoIdentity::new(&[9u8; 32]);
        let v = d.session_value("carol");
        assert_eq!(d.identify(Some(&v)).unwrap().client_id, "carol");
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("mallory"),
            v.split_once('.').unwrap().1
        );
        assert!(d.identify(Some(&forged)).is_err());
        assert!(!format!("{d:?}").contains('9'));
    }
}
