//! Who is asking: the clientId (and claims) from the app's own login.
//!
//! This module owns the identity modes of DESIGN.md: `jwt` (the app's session JWT, from
//! `Authorization: Bearer` or a named cookie) and `demo` (a user name in a signed cookie, for
//! trying capsign on loopback). It reads request headers but knows nothing of grants.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::grants::keyed_hmac;

/// The longest clientId capsign accepts, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 256;

/// The longest app-session JWT capsign will look at, in bytes.
pub const MAX_SESSION_TOKEN_LEN: usize = 8 * 1024;

/// The demo session cookie's name.
pub const DEMO_COOKIE: &str = "capsign-demo-session";

/// Seconds of clock difference tolerated on `exp` and `nbf` of session JWTs.
pub const DEFAULT_LEEWAY_S: u64 = 30;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The Ably clientId: who the credential is for.
    pub client_id: String,
    /// The session's claims, for `{claims.NAME}` templates (empty in demo mode).
    pub claims: Map<String, Value>,
}

impl Identity {
    /// An identity; the caller has checked the clientId.
    pub fn new(client_id: String, claims: Map<String, Value>) -> Identity {
        Identity { client_id, claims }
    }
}

/// Why a request has no identity. Each becomes `401`/40101, so the client retries after the
/// app refreshes its session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No session credential at all; says where capsign looked.
    #[error("no session: {0}")]
    Missing(String),
    /// The session token is longer than [`MAX_SESSION_TOKEN_LEN`].
    #[error("session token longer than {MAX_SESSION_TOKEN_LEN} bytes")]
    TooLong,
    /// The session token did not verify.
    #[error("session token rejected: {0}")]
    Invalid(String),
    /// The session has expired.
    #[error("session token expired")]
    Expired,
    /// The session is not valid yet.
    #[error("session token not valid yet (nbf)")]
    NotYetValid,
    /// The clientId claim is missing or not a string.
    #[error("session token has no string claim {0:?} to use as clientId")]
    NoClientId(String),
    /// The clientId is not acceptable.
    #[error("invalid clientId: {0}")]
    BadClientId(&'static str),
}

/// Checks a clientId: non-empty, at most [`MAX_CLIENT_ID_LEN`] bytes, no control characters,
/// and not `*` (Ably's wildcard clientId, which would let the holder act as anyone).
///
/// # Errors
///
/// What is wrong with it.
pub fn check_client_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("empty")
    } else if id.len() > MAX_CLIENT_ID_LEN {
        Err("longer than 256 bytes")
    } else if id == "*" {
        Err("\"*\" is Ably's wildcard, not an identity")
    } else if id.chars().any(char::is_control) {
        Err("contains a control character")
    } else {
        Ok(())
    }
}

/// How this deployment establishes identity.
#[derive(Debug)]
pub enum IdentityConfig {
    /// The app's session JWT.
    Jwt(JwtIdentity),
    /// A user name in a signed cookie; loopback only.
    Demo(DemoIdentity),
}

/// Verifies the app's session JWTs.
pub struct JwtIdentity {
    key: DecodingKey,
    validation: Validation,
    cookie: Option<String>,
    claim: String,
    leeway: u64,
}

impl fmt::Debug for JwtIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtIdentity")
            .field("key", &"<redacted>")
            .field("algorithms", &self.validation.algorithms)
            .field("cookie", &self.cookie)
            .field("claim", &self.claim)
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .finish()
    }
}

/// The key that verifies session JWTs.
pub enum SessionKey<'a> {
    /// An HS256 shared secret.
    Secret(&'a [u8]),
    /// A PEM public key: RSA (RS256/384/512), EC (ES256/384) or Ed25519 (EdDSA).
    Pem(&'a [u8]),
}

impl JwtIdentity {
    /// Prepares verification.
    ///
    /// # Errors
    ///
    /// A PEM that is none of the supported public key kinds.
    pub fn new(
        key: SessionKey<'_>,
        cookie: Option<String>,
        claim: String,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<JwtIdentity, String> {
        let (key, first, algorithms) = match key {
            SessionKey::Secret(s) => (DecodingKey::from_secret(s), Algorithm::HS256, vec![]),
            SessionKey::Pem(pem) => {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                    (
                        k,
                        Algorithm::RS256,
                        vec![Algorithm::RS384, Algorithm::RS512],
                    )
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                    (k, Algorithm::ES256, vec![Algorithm::ES384])
                } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
                    (k, Algorithm::EdDSA, vec![])
                } else {
                    return Err("not a PEM RSA, EC or Ed25519 public key".into());
                }
            }
        };
        // The library checks signature, algorithm, iss and aud; exp and nbf are checked
        // against capsign's own clock below, so tests can move time.
        // The allow-list holds only algorithms of the key's own family: no `none`, and no
        // HS256 "signed" with a public key.
        let mut validation = Validation::new(first);
        validation.algorithms.extend(algorithms);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
        }
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(JwtIdentity {
            key,
            validation,
            cookie,
            claim,
            leeway: DEFAULT_LEEWAY_S,
        })
    }

    fn identify<'a>(
        &self,
        bearer: Option<&'a str>,
        cookie: impl Fn(&str) -> Option<&'a str>,
        now: u64,
    ) -> Result<Identity, IdentityError> {
        let token = bearer
            .or_else(|| self.cookie.as_deref().and_then(&cookie))
            .ok_or_else(|| {
                IdentityError::Missing(match &self.cookie {
                    Some(c) => format!(
                        "send the app session JWT as Authorization: Bearer or in cookie {c}"
                    ),
                    None => "send the app session JWT as Authorization: Bearer <JWT>".into(),
                })
            })?;
        if token.len() > MAX_SESSION_TOKEN_LEN {
            return Err(IdentityError::TooLong);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| IdentityError::Invalid("no numeric exp claim".into()))?;
        if exp.saturating_add(self.leeway) <= now {
            return Err(IdentityError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_u64()
                .ok_or_else(|| IdentityError::Invalid("nbf is not a number".into()))?;
            if nbf > now.saturating_add(self.leeway) {
                return Err(IdentityError::NotYetValid);
            }
        }
        let client_id = claims
            .get(&self.claim)
            .and_then(Value::as_str)
            .ok_or_else(|| IdentityError::NoClientId(self.claim.clone()))?
            .to_owned();
        check_client_id(&client_id).map_err(IdentityError::BadClientId)?;
        Ok(Identity::new(client_id, claims))
    }
}

/// Signs and verifies demo session cookies.
pub struct DemoIdentity {
    mac: Hmac<Sha256>,
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

    fn tag(&self, user: &str) -> Hmac<Sha256> {
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

    fn identify(&self, value: Option<&str>) -> Result<Identity, IdentityError> {
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
        check_client_id(&user).map_err(IdentityError::BadClientId)?;
        Ok(Identity::new(user, Map::new()))
    }
}

impl IdentityConfig {
    /// Establishes who is asking.
    ///
    /// `bearer` is the token of an `Authorization: Bearer` header, `cookie` looks a request
    /// cookie up by name, and `now` is Unix seconds.
    ///
    /// # Errors
    ///
    /// No credential, or one that does not verify.
    pub fn identify<'a>(
        &self,
        bearer: Option<&'a str>,
        cookie: impl Fn(&str) -> Option<&'a str>,
        now: u64,
    ) -> Result<Identity, IdentityError> {
        match self {
            IdentityConfig::Jwt(j) => j.identify(bearer, cookie, now),
            IdentityConfig::Demo(d) => d.identify(cookie(DEMO_COOKIE)),
        }
    }

    /// Whether this is the demo mode.
    pub fn is_demo(&self) -> bool {
        matches!(self, IdentityConfig::Demo(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn hs(secret: &[u8]) -> JwtIdentity {
        JwtIdentity::new(SessionKey::Secret(secret), None, "sub".into(), None, None).unwrap()
    }

    fn token(secret: &[u8], claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn hs256_session() {
        let id = hs(b"s3cret");
        let t = token(b"s3cret", json!({"sub":"alice","exp":2000,"team":"red"}));
        let who = id.identify(Some(&t), |_| None, 1000).unwrap();
        assert_eq!(who.client_id, "alice");
        assert_eq!(who.claims["team"], "red");
    }

    #[test]
    fn rejected_sessions() {
        let id = hs(b"s3cret");
        let ok = |c: Value| token(b"s3cret", c);
        let e = |t: &str, now| id.identify(Some(t), |_| None, now).unwrap_err();
        assert!(matches!(
            e(&token(b"other", json!({"sub":"a","exp":2000})), 1000),
            IdentityError::Invalid(_)
        ));
        assert_eq!(
            e(&ok(json!({"sub":"a","exp":2000})), 2031),
            IdentityError::Expired
        );
        assert_eq!(
            e(&ok(json!({"sub":"a","exp":3000,"nbf":1500})), 1000),
            IdentityError::NotYetValid
        );
        assert!(matches!(
            e(&ok(json!({"sub":"a"})), 1000),
            IdentityError::Invalid(_)
        ));
        assert_eq!(
            e(&ok(json!({"exp":2000})), 1000),
            IdentityError::NoClientId("sub".into())
        );
        assert!(matches!(
            e(&ok(json!({"sub":"*","exp":2000})), 1000),
            IdentityError::BadClientId(_)
        ));
        assert!(matches!(
            e(&ok(json!({"sub":"a\nb","exp":2000})), 1000),
            IdentityError::BadClientId(_)
        ));
        assert!(matches!(e("not.a.jwt", 1000), IdentityError::Invalid(_)));
        assert_eq!(e(&"a".repeat(9000), 1000), IdentityError::TooLong);
        assert!(matches!(
            id.identify(None, |_| None, 1000),
            Err(IdentityError::Missing(_))
        ));
        // alg "none" is refused by the allow-list.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"a","exp":2000}"#)
        );
        assert!(matches!(e(&none, 1000), IdentityError::Invalid(_)));
    }

    #[test]
    fn session_from_cookie() {
        let id = JwtIdentity::new(
            SessionKey::Secret(b"k"),
            Some("session".into()),
            "uid".into(),
            None,
            None,
        )
        .unwrap();
        let t = token(b"k", json!({"uid":"bob","exp":2000}));
        let who = id
            .identify(None, |n| (n == "session").then_some(t.as_str()), 1000)
            .unwrap();
        assert_eq!(who.client_id, "bob");
    }

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
