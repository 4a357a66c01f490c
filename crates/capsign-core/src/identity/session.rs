//! The `jwt` identity mode: the app's session JWT, verified with an HS256 secret, a PEM public
//! key ([`JwtIdentity`]) or the keys of a JWKS document ([`JwksIdentity`]), and its claims
//! read into an [`Identity`] ([`SessionClaims`]).

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::jwks::JwksState;
use super::{ClientId, Identity, IdentityError, MAX_SESSION_TOKEN_LEN, Presenting};
use crate::hs256::Hs256Key;
use crate::json::{Checked, JsonStr};
use crate::settings::SessionSettings;

/// Seconds of clock difference tolerated on `exp` and `nbf` of session JWTs.
pub(crate) const DEFAULT_LEEWAY_S: u64 = 30;

/// How a session JWT's claims become an [`Identity`], whatever verified its signature: every
/// verifier (HS256, a PEM public key, a JWKS key) hands the signed claims text to
/// `SessionClaims::identity`, which makes every claim check (`exp`, `nbf`, `iss`, `aud`, the
/// clientId) the same way for all of them.
#[derive(Debug, Clone)]
pub struct SessionClaims {
    /// Also take the token from this cookie.
    pub cookie: Option<String>,
    /// The claim holding the clientId.
    pub claim: String,
    /// Seconds of tolerance on `exp` and `nbf`.
    pub leeway: u64,
    /// The `iss` a session must have, when set.
    pub issuer: Option<String>,
    /// An audience the session's `aud` (a string or an array of strings) must name, when set.
    pub audience: Option<String>,
    /// Keep every claim in the [`Identity`] (read into a map as the session is verified).
    /// Set when something the app is configured with reads claims; otherwise the claims are
    /// still read whole and checked (a session whose claims do not parse is refused either
    /// way), but only the clientId and the registered claims are kept.
    pub keep: bool,
}

impl SessionClaims {
    /// The claim reading of the session settings, with the default leeway.
    pub fn new(settings: &SessionSettings, keep: bool) -> SessionClaims {
        SessionClaims {
            cookie: settings.cookie.clone(),
            claim: settings.client_id_claim.clone(),
            leeway: DEFAULT_LEEWAY_S,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            keep,
        }
    }

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

    /// Reads the verified claims object `text` whole, once ([`read_claims`]: a lone surrogate,
    /// a number out of range, nesting past the parser's depth or a claim named twice refuses
    /// the session), then checks `iss` and `aud` (when configured), `exp` (required) and `nbf`
    /// against `now`, and takes the clientId.
    fn identity(&self, text: &str, now: u64) -> Result<Identity, IdentityError> {
        let read = read_claims(text, self)
            .map_err(|e| IdentityError::Invalid(format!("claims are not a JSON object: {e}")))?;
        self.check_iss_aud(read.iss.as_ref(), read.aud.as_ref())?;
        let exp = read
            .exp
            .as_ref()
            .and_then(Value::as_u64)
            .ok_or_else(|| IdentityError::Invalid("no numeric exp claim".into()))?;
        if exp.saturating_add(self.leeway) <= now {
            return Err(IdentityError::Expired);
        }
        if let Some(nbf) = &read.nbf {
            let nbf = nbf
                .as_u64()
                .ok_or_else(|| IdentityError::Invalid("nbf is not a number".into()))?;
            if nbf > now.saturating_add(self.leeway) {
                return Err(IdentityError::NotYetValid);
            }
        }
        let Some(Value::String(client_id)) = read.client_id else {
            return Err(IdentityError::NoClientId(self.claim.clone()));
        };
        let mut who = Identity::new(ClientId::try_from(client_id)?, read.all);
        who.session_expires_at = Some(exp);
        Ok(who)
    }

    /// `iss` must be the configured issuer; `aud` (a string or an array of strings) must name
    /// the configured audience. A missing claim fails the check it is needed for. (The JWT
    /// library's own `iss`/`aud` checks are off for every verifier: these are the only ones.)
    fn check_iss_aud(&self, iss: Option<&Value>, aud: Option<&Value>) -> Result<(), IdentityError> {
        if let Some(issuer) = &self.issuer {
            if iss.and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(IdentityError::Invalid("InvalidIssuer".into()));
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match aud {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(IdentityError::Invalid("InvalidAudience".into()));
            }
        }
        Ok(())
    }
}

/// The claims read from a session: the ones every request checks, and (when kept) all of them.
#[derive(Default)]
struct ReadClaims {
    exp: Option<Value>,
    nbf: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    client_id: Option<Value>,
    /// Every claim, when they are kept.
    all: Map<String, Value>,
}

/// Reads a claims object whole, the one reader of session claims: every member is checked as
/// `serde_json::Value` would read it (see [`Checked`]); the registered claims and the clientId
/// are kept, and, when `keep`, every claim. A member named twice refuses the claims, as a
/// header's does (`hs256`): readers that keep the first and readers that keep the last (the
/// app's own, the webhook's) would otherwise see two different sessions.
fn read_claims(text: &str, how: &SessionClaims) -> Result<ReadClaims, serde_json::Error> {
    struct Reader<'a> {
        client_id: &'a str,
        keep: bool,
        iss: bool,
        aud: bool,
    }
    impl<'de> Visitor<'de> for Reader<'_> {
        type Value = ReadClaims;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object of claims")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReadClaims, A::Error> {
            let mut read = ReadClaims::default();
            let mut seen: SmallVec<[std::borrow::Cow<'de, str>; 16]> = SmallVec::new();
            while let Some(JsonStr(name)) = map.next_key::<JsonStr<'de>>()? {
                if seen.contains(&name) {
                    return Err(serde::de::Error::custom(format_args!(
                        "the claim {name:?} appears twice"
                    )));
                }
                if self.keep {
                    let value = map.next_value::<Value>()?;
                    read.all.insert(name.clone().into_owned(), value);
                    seen.push(name);
                    continue;
                }
                // The clientId claim may be configured as one of the others' names.
                let is_client_id = *name == *self.client_id;
                let slot = match &*name {
                    "exp" => Some(&mut read.exp),
                    "nbf" => Some(&mut read.nbf),
                    "iss" if self.iss => Some(&mut read.iss),
                    "aud" if self.aud => Some(&mut read.aud),
                    _ => None,
                };
                match (slot, is_client_id) {
                    (None, false) => {
                        map.next_value::<Checked>()?;
                    }
                    (None, true) => read.client_id = Some(map.next_value::<Value>()?),
                    (Some(slot), false) => *slot = Some(map.next_value::<Value>()?),
                    (Some(slot), true) => {
                        let value = map.next_value::<Value>()?;
                        read.client_id = Some(value.clone());
                        *slot = Some(value);
                    }
                }
                seen.push(name);
            }
            if self.keep {
                let get = |name: &str| read.all.get(name).cloned();
                (read.exp, read.nbf, read.iss, read.aud) =
                    (get("exp"), get("nbf"), get("iss"), get("aud"));
                read.client_id = get(self.client_id);
            }
            Ok(read)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let reader = Reader {
        client_id: &how.claim,
        keep: how.keep,
        iss: how.issuer.is_some(),
        aud: how.audience.is_some(),
    };
    let read = serde::Deserializer::deserialize_map(&mut de, reader)?;
    de.end()?;
    Ok(read)
}

/// The header of a session JWT verified with a public key, refused when it names `crit`
/// extensions: capsign understands none, and refuses them in every mode (the HS256 path does
/// too, see `hs256`), as RFC 7515 §4.1.11 requires of a recipient that does not.
fn header_without_crit(token: &str) -> Result<jsonwebtoken::Header, IdentityError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| IdentityError::Invalid(e.to_string()))?;
    if header.crit.is_some() {
        return Err(IdentityError::Invalid(
            "the header names crit extensions, which capsign does not understand".into(),
        ));
    }
    Ok(header)
}

/// What the JWT library checks: the signature and the algorithm only. Every claim is checked
/// by [`SessionClaims::identity`], the same way whichever key verified the session (`exp` and
/// `nbf` against capsign's own clock, so tests can move time).
fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
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
            .finish()
    }
}

/// A PEM that is none of the supported public key kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a PEM RSA, EC or Ed25519 public key")]
pub struct NotAPublicKey;

impl JwtIdentity {
    /// Verification with an HS256 shared secret (its bytes as they are).
    pub fn hs256(secret: &[u8], session: SessionClaims) -> JwtIdentity {
        JwtIdentity {
            verifier: Verifier::Secret(Box::new(Hs256Key::new(secret, None))),
            validation: signature_only(Algorithm::HS256),
            session,
        }
    }

    /// Verification with a PEM public key: RSA (RS256/384/512), EC (ES256/384) or Ed25519
    /// (EdDSA). The allow-list holds only algorithms of the key's own family: no `none`, and
    /// no HS256 "signed" with a public key.
    ///
    /// # Errors
    ///
    /// A PEM that is none of the supported public key kinds.
    pub fn public_key(pem: &[u8], session: SessionClaims) -> Result<JwtIdentity, NotAPublicKey> {
        let (key, first, more) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
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
            return Err(NotAPublicKey);
        };
        let mut validation = signature_only(first);
        validation.algorithms.extend(more);
        Ok(JwtIdentity {
            verifier: Verifier::Public(Box::new(key)),
            validation,
            session,
        })
    }

    pub(super) fn identify(
        &self,
        p: &Presenting<'_>,
        now_ms: u64,
    ) -> Result<Identity, IdentityError> {
        let now = now_ms / 1000;
        let token = self.session.token(p)?;
        match &self.verifier {
            Verifier::Secret(key) => {
                let claims = key
                    .verify(token)
                    .map_err(|e| IdentityError::Invalid(e.to_string()))?;
                let text = String::from_utf8(claims)
                    .map_err(|_| IdentityError::Invalid("claims are not UTF-8".into()))?;
                self.session.identity(&text, now)
            }
            Verifier::Public(key) => {
                header_without_crit(token)?;
                let claims = jsonwebtoken::decode::<Box<RawValue>>(token, key, &self.validation)
                    .map_err(|e| IdentityError::Invalid(e.to_string()))?
                    .claims;
                self.session.identity(claims.get(), now)
            }
        }
    }
}

/// Verifies the app's session JWTs with the keys of a JWKS document, chosen by `kid`.
#[derive(Debug)]
pub struct JwksIdentity {
    state: Arc<JwksState>,
    session: SessionClaims,
}

impl JwksIdentity {
    /// Verification with the keys of `state`.
    pub fn new(state: JwksState, session: SessionClaims) -> JwksIdentity {
        JwksIdentity {
            state: Arc::new(state),
            session,
        }
    }

    /// The key set, for the start-up fetch.
    pub fn state(&self) -> &JwksState {
        &self.state
    }

    pub(super) async fn identify(
        &self,
        p: &Presenting<'_>,
        now_ms: u64,
    ) -> Result<Identity, IdentityError> {
        let token = self.session.token(p)?;
        let header = header_without_crit(token)?;
        self.state.refresh_when_due(now_ms).await;
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
        let validation = signature_only(header.alg);
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, key, &validation)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        self.session.identity(data.claims.get(), now_ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn claims(cookie: Option<&str>, claim: &str) -> SessionClaims {
        SessionClaims {
            cookie: cookie.map(str::to_owned),
            claim: claim.to_owned(),
            leeway: DEFAULT_LEEWAY_S,
            issuer: None,
            audience: None,
            keep: true,
        }
    }

    fn hs(secret: &[u8]) -> JwtIdentity {
        JwtIdentity::hs256(secret, claims(None, "sub"))
    }

    /// Identifies a bearer token (or none) at `now` (Unix seconds).
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
            now * 1000,
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
    fn the_client_id_claim_may_be_a_registered_one() {
        // An odd configuration, read as a map would be: `aud` is both checked and the clientId.
        let id = JwtIdentity::hs256(
            b"s3cret",
            SessionClaims {
                audience: Some("alice".into()),
                ..claims(None, "aud")
            },
        );
        let t = token(b"s3cret", json!({"aud": "alice", "exp": 2000}));
        let who = with_bearer(&id, Some(&t), 1000).unwrap();
        assert_eq!(who.client_id, "alice");
        let t = token(b"s3cret", json!({"aud": "bob", "exp": 2000}));
        assert!(
            with_bearer(&id, Some(&t), 1000).is_err(),
            "aud is still checked"
        );
    }

    #[test]
    fn claims_read_as_a_json_map_would_be() {
        let id = hs(b"s3cret");
        let raw = |text: &str| Hs256Key::new(b"s3cret", None).sign(text.as_bytes());
        let who = |text: &str| with_bearer(&id, Some(&raw(text)), 1000);
        // Escaped names, nested values skipped but kept (a repeated claim is refused: see
        // a_claim_named_twice_refuses_the_session).
        let w = who(r#"{"s\u0075b":"bob","exp":2000,"x":{"y":[1,{"z":null}]}}"#).unwrap();
        assert_eq!(w.client_id, "bob");
        assert_eq!(w.claims()["x"], json!({"y": [1, {"z": null}]}));
        let mut expected = Identity::new(
            ClientId::new("bob").unwrap(),
            json!({"sub": "bob", "exp": 2000, "x": {"y": [1, {"z": null}]}})
                .as_object()
                .unwrap()
                .clone(),
        );
        expected.session_expires_at = Some(2000);
        assert_eq!(w, expected);
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

    /// Issue 16 (3): claims the full reader refuses (a lone surrogate, which Node's and
    /// Python's JSON encoders write; a number out of range; nesting past the parser's depth)
    /// used to verify, and the claims then fell back to `{}`: a webhook or a `{claims.X}` rule
    /// saw nothing, so a webhook that denies on a claim approved. Such a session is refused.
    #[test]
    fn claims_that_do_not_fully_parse_refuse_the_session() {
        let id = hs(b"s3cret");
        let raw = |text: &str| Hs256Key::new(b"s3cret", None).sign(text.as_bytes());
        let deep = format!(
            r#"{{"sub":"a","exp":2000,"x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for bad in [
            r#"{"sub":"a","exp":2000,"banned":true,"note":"\ud800"}"#,
            r#"{"sub":"a","exp":2000,"banned":true,"n":1e400}"#,
            deep.as_str(),
        ] {
            let r = with_bearer(&id, Some(&raw(bad)), 1000);
            assert!(matches!(r, Err(IdentityError::Invalid(_))), "{bad}: {r:?}");
        }
        // What parses is kept whole: the claim a webhook denies on is there.
        let ok = with_bearer(
            &id,
            Some(&raw(r#"{"sub":"a","exp":2000,"banned":true}"#)),
            1000,
        );
        assert_eq!(ok.unwrap().claims()["banned"], true);
    }

    /// Issue 27 (5): a claim named twice refuses the session (as a header member named twice
    /// does): the app's reader may keep the first where capsign's and the webhook's keep the
    /// last, so `"role":"user","role":"admin"` would be two sessions at once.
    #[test]
    fn a_claim_named_twice_refuses_the_session() {
        let id = hs(b"s3cret");
        let raw = |text: &str| Hs256Key::new(b"s3cret", None).sign(text.as_bytes());
        for bad in [
            r#"{"sub":"a","exp":2000,"role":"user","role":"admin"}"#,
            r#"{"sub":"a","sub":"b","exp":2000}"#,
            r#"{"sub":"a","exp":2000,"exp":9999}"#,
            r#"{"sub":"a","exp":2000,"r\u006fle":1,"role":2}"#,
        ] {
            let r = with_bearer(&id, Some(&raw(bad)), 1000);
            assert!(
                matches!(&r, Err(IdentityError::Invalid(m)) if m.contains("twice")),
                "{bad}: {r:?}"
            );
        }
        assert!(
            with_bearer(
                &id,
                Some(&raw(r#"{"sub":"a","exp":2000,"role":"user"}"#)),
                1000
            )
            .is_ok()
        );
    }

    /// Issue 26: claims are read once, as the session is verified, whether or not they are
    /// kept: a session whose claims do not parse is refused in both modes, and only a session
    /// whose claims something reads keeps them (no map made and then left unused, no empty map
    /// standing in for claims that failed to parse).
    #[test]
    fn claims_are_read_once_whether_kept_or_not() {
        let raw = |text: &str| Hs256Key::new(b"s3cret", None).sign(text.as_bytes());
        for keep in [true, false] {
            let id = JwtIdentity::hs256(
                b"s3cret",
                SessionClaims {
                    keep,
                    ..claims(None, "sub")
                },
            );
            for bad in [
                r#"{"sub":"a","exp":2000,"note":"\ud800"}"#,
                r#"{"sub":"a","exp":2000,"n":1e400}"#,
                r#"{"sub":"a","exp":2000,"r":1,"r":2}"#,
                r#"{"sub":"a","exp":2000,"x":[}"#,
            ] {
                let r = with_bearer(&id, Some(&raw(bad)), 1000);
                assert!(
                    matches!(r, Err(IdentityError::Invalid(_))),
                    "{keep} {bad}: {r:?}"
                );
            }
            let who = with_bearer(
                &id,
                Some(&raw(r#"{"sub":"a","exp":2000,"team":"red"}"#)),
                1000,
            )
            .unwrap();
            assert_eq!(who.client_id, "a");
            assert_eq!(who.session_expires_at, Some(2000));
            assert_eq!(who.claims().get("team").is_some(), keep, "keep = {keep}");
        }
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
        let id = JwtIdentity::hs256(b"k", claims(Some("session"), "uid"));
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
                1_000_000,
            )
            .unwrap();
        assert_eq!(who.client_id, "bob");
    }
}
