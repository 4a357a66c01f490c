//! Who is asking: the clientId (and claims) from the app's own login.
//!
//! This module owns the identity modes of DESIGN.md: `jwt` (the app's session JWT, from
//! `Authorization: Bearer` or a named cookie, verified with a secret, a PEM public key or a
//! JWKS document), `header` (a header set by a trusted front proxy, believed only from its
//! addresses) and `demo` (a user name in a signed cookie, for trying capsign on loopback). It
//! reads request headers but knows nothing of grants.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::capability::JsonStr;
use crate::grants::keyed_hmac;
use crate::hs256::Hs256Key;
use crate::jwks::JwksState;

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
    claims: Claims,
}

impl Identity {
    /// An identity; the caller has checked the clientId.
    pub fn new(client_id: String, claims: Map<String, Value>) -> Identity {
        Identity {
            client_id,
            claims: Claims {
                text: None,
                parsed: OnceLock::from(claims),
            },
        }
    }

    /// An identity whose claims are the verified JSON object `text`, parsed on first use.
    fn with_claims_text(client_id: String, text: Box<str>) -> Identity {
        Identity {
            client_id,
            claims: Claims {
                text: Some(text),
                parsed: OnceLock::new(),
            },
        }
    }

    /// The session's claims, for `{claims.NAME}` templates and the webhook (empty in demo and
    /// header modes).
    pub fn claims(&self) -> &Map<String, Value> {
        self.claims.parsed.get_or_init(|| {
            // The text was read as a JSON object when the session was checked.
            self.claims
                .text
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default()
        })
    }
}

/// A session's claims: most requests need none of them beyond the few checked at once
/// (`exp`, `nbf`, `iss`, `aud`, the clientId), so the whole object is parsed only when a rule
/// template or the webhook asks.
#[derive(Debug, Clone)]
struct Claims {
    text: Option<Box<str>>,
    parsed: OnceLock<Map<String, Value>>,
}

impl PartialEq for Claims {
    fn eq(&self, other: &Claims) -> bool {
        let (a, b) = (self.parsed.get(), other.parsed.get());
        match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => {
                let parse = |c: &Claims| -> Map<String, Value> {
                    c.parsed.get().cloned().unwrap_or_else(|| {
                        c.text
                            .as_deref()
                            .and_then(|t| serde_json::from_str(t).ok())
                            .unwrap_or_default()
                    })
                };
                parse(self) == parse(other)
            }
        }
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
    /// `header` mode, and the request did not come from a trusted proxy.
    #[error("the {0} header is only believed from CAPSIGN_TRUSTED_PROXIES")]
    UntrustedPeer(String),
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
    /// The app's session JWT, verified with a secret or a PEM public key.
    Jwt(JwtIdentity),
    /// The app's session JWT, verified with the keys of a JWKS document.
    Jwks(JwksIdentity),
    /// A header set by a trusted front proxy.
    Header(HeaderIdentity),
    /// A user name in a signed cookie; loopback only.
    Demo(DemoIdentity),
}

/// What a request presents to be identified.
pub struct Presenting<'a> {
    /// The token of an `Authorization: Bearer` header.
    pub bearer: Option<&'a str>,
    /// Looks a request cookie up by name.
    pub cookie: &'a (dyn Fn(&str) -> Option<&'a str> + Sync),
    /// All request headers (for `header` mode).
    pub headers: &'a http::HeaderMap,
    /// The address of the peer that sent the request, when the transport knows it.
    pub peer: Option<IpAddr>,
}

/// How a session JWT's claims become an [`Identity`], whatever verified it.
#[derive(Debug, Clone)]
pub struct SessionClaims {
    /// Also take the token from this cookie.
    pub cookie: Option<String>,
    /// The claim holding the clientId.
    pub claim: String,
    /// Seconds of tolerance on `exp` and `nbf`.
    pub leeway: u64,
}

impl SessionClaims {
    /// The session token of a request.
    fn token<'a>(&self, p: &Presenting<'a>) -> Result<&'a str, IdentityError> {
        let token = p
            .bearer
            .or_else(|| self.cookie.as_deref().and_then(|c| (p.cookie)(c)))
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
        Ok(token)
    }

    /// Reads the verified claims object `text`: checks `exp` (required) and `nbf` against
    /// `now`, and `iss`/`aud` when `iss_aud` is given (the JWT library checked them otherwise),
    /// and takes the clientId. Only those claims are parsed here.
    fn identity(
        &self,
        text: &str,
        now: u64,
        iss_aud: Option<&Validation>,
    ) -> Result<Identity, IdentityError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let picked = serde::de::DeserializeSeed::deserialize(Pick { claim: &self.claim }, &mut de)
            .and_then(|p| de.end().map(|()| p))
            .map_err(|_| IdentityError::Invalid("claims are not a JSON object".into()))?;
        if let Some(validation) = iss_aud {
            check_iss_aud(picked.iss.as_ref(), picked.aud.as_ref(), validation)?;
        }
        let exp = picked
            .exp
            .as_ref()
            .and_then(Value::as_u64)
            .ok_or_else(|| IdentityError::Invalid("no numeric exp claim".into()))?;
        if exp.saturating_add(self.leeway) <= now {
            return Err(IdentityError::Expired);
        }
        if let Some(nbf) = &picked.nbf {
            let nbf = nbf
                .as_u64()
                .ok_or_else(|| IdentityError::Invalid("nbf is not a number".into()))?;
            if nbf > now.saturating_add(self.leeway) {
                return Err(IdentityError::NotYetValid);
            }
        }
        let Some(Value::String(client_id)) = picked.client_id else {
            return Err(IdentityError::NoClientId(self.claim.clone()));
        };
        check_client_id(&client_id).map_err(IdentityError::BadClientId)?;
        Ok(Identity::with_claims_text(client_id, text.into()))
    }
}

/// The claims [`SessionClaims::identity`] checks. A claim given twice counts once, with its
/// last value, as in a `serde_json` map.
#[derive(Default)]
struct Picked {
    exp: Option<Value>,
    nbf: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    client_id: Option<Value>,
}

/// Reads a claims object, keeping the values of [`Picked`]'s claims and skipping (while still
/// checking the syntax of) the rest.
struct Pick<'a> {
    claim: &'a str,
}

impl<'de> serde::de::DeserializeSeed<'de> for Pick<'_> {
    type Value = Picked;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Picked, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Pick<'_> {
    type Value = Picked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Picked, A::Error> {
        let mut picked = Picked::default();
        while let Some(JsonStr(key)) = map.next_key::<JsonStr<'de>>()? {
            let standard = matches!(&*key, "exp" | "nbf" | "iss" | "aud");
            if !standard && *key != *self.claim {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let value: Value = map.next_value()?;
            if *key == *self.claim {
                picked.client_id = Some(value.clone());
            }
            match &*key {
                "exp" => picked.exp = Some(value),
                "nbf" => picked.nbf = Some(value),
                "iss" => picked.iss = Some(value),
                "aud" => picked.aud = Some(value),
                _ => {}
            }
        }
        Ok(picked)
    }
}

/// The library checks signature, algorithm, `iss` and `aud`; `exp` and `nbf` are checked
/// against capsign's own clock ([`SessionClaims::identity`]), so tests can move time.
fn base_validation(alg: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(alg);
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
    validation
}

/// The `iss` and `aud` checks of `validation`, as the JWT library makes them: `iss` must be one
/// of the allowed issuers; `aud` (a string or an array of strings) must name an allowed
/// audience. A missing claim fails the check it is needed for.
fn check_iss_aud(
    iss: Option<&Value>,
    aud: Option<&Value>,
    validation: &Validation,
) -> Result<(), IdentityError> {
    if let Some(allowed) = &validation.iss {
        let ok = iss
            .and_then(Value::as_str)
            .is_some_and(|iss| allowed.contains(iss));
        if !ok {
            return Err(IdentityError::Invalid("InvalidIssuer".into()));
        }
    }
    if validation.validate_aud {
        if let Some(allowed) = &validation.aud {
            let ok = match aud {
                Some(Value::String(a)) => allowed.contains(a.as_str()),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| allowed.contains(a)),
                _ => false,
            };
            if !ok {
                return Err(IdentityError::Invalid("InvalidAudience".into()));
            }
        }
    }
    Ok(())
}

/// Verifies the app's session JWTs with one secret or public key.
pub struct JwtIdentity {
    verifier: Verifier,
    validation: Validation,
    session: SessionClaims,
}

/// What checks a session JWT's signature: HS256 with the key prepared once, or the JWT
/// library for public keys.
enum Verifier {
    Secret(Box<Hs256Key>),
    Public(Box<DecodingKey>),
}

impl fmt::Debug for JwtIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtIdentity")
            .field("key", &"<redacted>")
            .field("algorithms", &self.validation.algorithms)
            .field("session", &self.session)
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
        session: SessionClaims,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<JwtIdentity, String> {
        let (verifier, first, algorithms) = match key {
            SessionKey::Secret(s) => (
                Verifier::Secret(Box::new(Hs256Key::new(s, None))),
                Algorithm::HS256,
                vec![],
            ),
            SessionKey::Pem(pem) => {
                let (k, first, more) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
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
                };
                (Verifier::Public(Box::new(k)), first, more)
            }
        };
        // The allow-list holds only algorithms of the key's own family: no `none`, and no
        // HS256 "signed" with a public key.
        let mut validation = base_validation(first, issuer, audience);
        validation.algorithms.extend(algorithms);
        Ok(JwtIdentity {
            verifier,
            validation,
            session,
        })
    }

    fn identify(&self, p: &Presenting<'_>, now: u64) -> Result<Identity, IdentityError> {
        let token = self.session.token(p)?;
        match &self.verifier {
            Verifier::Secret(key) => {
                let claims = key
                    .verify(token)
                    .map_err(|e| IdentityError::Invalid(e.to_string()))?;
                let text = std::str::from_utf8(&claims)
                    .map_err(|_| IdentityError::Invalid("claims are not UTF-8".into()))?;
                self.session.identity(text, now, Some(&self.validation))
            }
            Verifier::Public(key) => {
                let claims = jsonwebtoken::decode::<Box<RawValue>>(token, key, &self.validation)
                    .map_err(|e| IdentityError::Invalid(e.to_string()))?
                    .claims;
                self.session.identity(claims.get(), now, None)
            }
        }
    }
}

/// Verifies the app's session JWTs with the keys of a JWKS document, chosen by `kid`.
#[derive(Debug)]
pub struct JwksIdentity {
    state: Arc<JwksState>,
    issuer: Option<String>,
    audience: Option<String>,
    session: SessionClaims,
}

impl JwksIdentity {
    /// Verification with the keys of `state`.
    pub fn new(
        state: JwksState,
        session: SessionClaims,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> JwksIdentity {
        JwksIdentity {
            state: Arc::new(state),
            issuer,
            audience,
            session,
        }
    }

    /// The key set, for the start-up fetch.
    pub fn state(&self) -> &JwksState {
        &self.state
    }

    async fn identify(&self, p: &Presenting<'_>, now_ms: u64) -> Result<Identity, IdentityError> {
        let token = self.session.token(p)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        self.state.maybe_refresh_in_background(now_ms);
        let mut keys = self.state.current();
        if let Some(kid) = header.kid.as_deref() {
            if !keys.has_kid(kid) && self.state.refresh_for_unknown_kid(now_ms).await {
                keys = self.state.current();
            }
        }
        let key = keys
            .find(header.kid.as_deref(), header.alg)
            .ok_or_else(|| {
                IdentityError::Invalid(match &header.kid {
                    Some(kid) => format!("no key {kid:?} for {:?} in the JWKS", header.alg),
                    None => format!("no kid, and no single key for {:?} in the JWKS", header.alg),
                })
            })?;
        let validation =
            base_validation(header.alg, self.issuer.as_deref(), self.audience.as_deref());
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, key, &validation)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        self.session
            .identity(data.claims.get(), now_ms / 1000, None)
    }
}

/// Takes the clientId from a header that a trusted front proxy sets (oauth2-proxy's
/// `X-Forwarded-User`, say), and only on requests whose peer is one of those proxies: anyone
/// else could set the header themselves.
#[derive(Debug)]
pub struct HeaderIdentity {
    header: http::HeaderName,
    trusted: Vec<ipnet::IpNet>,
}

impl HeaderIdentity {
    /// Identity from `header`, believed only from peers within `trusted`.
    pub fn new(header: http::HeaderName, trusted: Vec<ipnet::IpNet>) -> HeaderIdentity {
        HeaderIdentity { header, trusted }
    }

    fn identify(&self, p: &Presenting<'_>) -> Result<Identity, IdentityError> {
        let trusted = p
            .peer
            .is_some_and(|ip| self.trusted.iter().any(|net| net.contains(&ip)));
        if !trusted {
            return Err(IdentityError::UntrustedPeer(self.header.to_string()));
        }
        let mut values = p.headers.get_all(&self.header).iter();
        let value = values.next().ok_or_else(|| {
            IdentityError::Missing(format!("no {} header from the proxy", self.header))
        })?;
        if values.next().is_some() {
            return Err(IdentityError::Invalid(format!(
                "more than one {} header",
                self.header
            )));
        }
        let user = value
            .to_str()
            .map_err(|_| IdentityError::Invalid(format!("{} is not visible ASCII", self.header)))?;
        check_client_id(user).map_err(IdentityError::BadClientId)?;
        Ok(Identity::new(user.to_owned(), Map::new()))
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
    /// Establishes who is asking; `now_ms` is the current time in ms since the epoch.
    ///
    /// # Errors
    ///
    /// No credential, or one that does not verify.
    pub async fn identify(
        &self,
        p: &Presenting<'_>,
        now_ms: u64,
    ) -> Result<Identity, IdentityError> {
        match self {
            IdentityConfig::Jwt(j) => j.identify(p, now_ms / 1000),
            IdentityConfig::Jwks(j) => j.identify(p, now_ms).await,
            IdentityConfig::Header(h) => h.identify(p),
            IdentityConfig::Demo(d) => d.identify((p.cookie)(DEMO_COOKIE)),
        }
    }

    /// Whether identification needs the peer's address (`header` mode), so the transport
    /// only records it then.
    pub fn wants_peer(&self) -> bool {
        matches!(self, IdentityConfig::Header(_))
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

    fn claims(cookie: Option<&str>, claim: &str) -> SessionClaims {
        SessionClaims {
            cookie: cookie.map(str::to_owned),
            claim: claim.to_owned(),
            leeway: DEFAULT_LEEWAY_S,
        }
    }

    fn hs(secret: &[u8]) -> JwtIdentity {
        JwtIdentity::new(SessionKey::Secret(secret), claims(None, "sub"), None, None).unwrap()
    }

    /// Identifies a bearer token (or none) at `now`.
    fn with_bearer(
        id: &JwtIdentity,
        bearer: Option<&str>,
        now: u64,
    ) -> Result<Identity, IdentityError> {
        let headers = http::HeaderMap::new();
        let no_cookie = |_: &str| None;
        id.identify(
            &Presenting {
                bearer,
                cookie: &no_cookie,
                headers: &headers,
                peer: None,
            },
            now,
        )
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
        let who = with_bearer(&id, Some(&t), 1000).unwrap();
        assert_eq!(who.client_id, "alice");
        assert_eq!(who.claims()["team"], "red");
    }

    #[test]
    fn claims_read_as_a_json_map_would_be() {
        let id = hs(b"s3cret");
        let raw = |text: &str| Hs256Key::new(b"s3cret", None).sign(text.as_bytes());
        let who = |text: &str| with_bearer(&id, Some(&raw(text)), 1000);
        // Escaped names, a repeated claim (the last one counts), nested values skipped but kept.
        let w =
            who(r#"{"s\u0075b":"first","exp":2000,"sub":"bob","x":{"y":[1,{"z":null}]}}"#).unwrap();
        assert_eq!(w.client_id, "bob");
        assert_eq!(w.claims()["x"], json!({"y": [1, {"z": null}]}));
        assert_eq!(
            w,
            Identity::new(
                "bob".into(),
                json!({"sub": "bob", "exp": 2000, "x": {"y": [1, {"z": null}]}})
                    .as_object()
                    .unwrap()
                    .clone()
            )
        );
        for bad in [
            r#"["sub","exp"]"#,
            r#"{"sub":"a","exp":2000"#,
            r#"{"sub":"a","exp":2000,"x":[}"#,
            r#"{"sub":"a","exp":2000.5}"#,
            r#"{"sub":"a","exp":"2000"}"#,
            r#"{"sub":"a","exp":2000} trailing"#,
        ] {
            assert!(
                matches!(who(bad), Err(IdentityError::Invalid(_))),
                "{bad}: {:?}",
                who(bad)
            );
        }
        assert_eq!(
            who(r#"{"sub":7,"exp":2000}"#),
            Err(IdentityError::NoClientId("sub".into()))
        );
    }

    #[test]
    fn rejected_sessions() {
        let id = hs(b"s3cret");
        let ok = |c: Value| token(b"s3cret", c);
        let e = |t: &str, now| with_bearer(&id, Some(t), now).unwrap_err();
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
            with_bearer(&id, None, 1000),
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
            claims(Some("session"), "uid"),
            None,
            None,
        )
        .unwrap();
        let t = token(b"k", json!({"uid":"bob","exp":2000}));
        let jar = |n: &str| (n == "session").then_some(t.as_str());
        let headers = http::HeaderMap::new();
        let who = id
            .identify(
                &Presenting {
                    bearer: None,
                    cookie: &jar,
                    headers: &headers,
                    peer: None,
                },
                1000,
            )
            .unwrap();
        assert_eq!(who.client_id, "bob");
    }

    #[test]
    fn header_identity_only_from_trusted_peers() {
        let h = HeaderIdentity::new(
            http::HeaderName::from_static("x-forwarded-user"),
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-user", "dave".parse().unwrap());
        let at = |peer: Option<&str>, headers: &http::HeaderMap| {
            let no_cookie = |_: &str| None;
            h.identify(&Presenting {
                bearer: None,
                cookie: &no_cookie,
                headers,
                peer: peer.map(|p| p.parse().unwrap()),
            })
        };
        assert_eq!(at(Some("10.1.2.3"), &headers).unwrap().client_id, "dave");
        assert_eq!(at(Some("::1"), &headers).unwrap().client_id, "dave");
        assert!(matches!(
            at(Some("192.168.0.1"), &headers),
            Err(IdentityError::UntrustedPeer(_))
        ));
        assert!(matches!(
            at(None, &headers),
            Err(IdentityError::UntrustedPeer(_))
        ));
        assert!(matches!(
            at(Some("10.0.0.1"), &http::HeaderMap::new()),
            Err(IdentityError::Missing(_))
        ));
        headers.append("x-forwarded-user", "eve".parse().unwrap());
        assert!(matches!(
            at(Some("10.0.0.1"), &headers),
            Err(IdentityError::Invalid(_))
        ));
        let mut star = http::HeaderMap::new();
        star.insert("x-forwarded-user", "*".parse().unwrap());
        assert!(matches!(
            at(Some("10.0.0.1"), &star),
            Err(IdentityError::BadClientId(_))
        ));
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
