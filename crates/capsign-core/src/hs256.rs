//! HS256 JWTs (RFC 7515/7519 compact form) with the HMAC key prepared once.
//!
//! capsign signs every Ably JWT and, with `CAPSIGN_SESSION_SECRET`, verifies every session JWT
//! with one fixed HS256 key. `jsonwebtoken` sets the HMAC key up and serializes the header on
//! each call; here the keyed HMAC state and the encoded header are computed once at start-up
//! and cloned per request. Asymmetric algorithms and JWKS stay with `jsonwebtoken`.
//!
//! Verification checks the MAC (constant time) before it decodes anything else, so no byte
//! of an unverified token is parsed; then the header must be UTF-8 JSON, name `HS256`, carry
//! no `crit` extension (capsign understands none) and name no member twice (RFC 7515 §4 lets a
//! parser refuse duplicates or take the last; refusing leaves two readers nothing to disagree
//! on). The claims are returned as signed, for the caller to read and check.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use serde::Serialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use smallvec::SmallVec;

use crate::crypto::{HmacSha256, keyed_hmac};
use crate::json::JsonStr;

/// Base64url length (no padding) of a SHA-256 MAC.
const SIG_B64_LEN: usize = 43;
/// Decoded headers up to this many bytes are decoded on the stack.
const SMALL_HEADER: usize = 384;

/// Why an HS256 token was refused. The messages name the check, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Hs256Error {
    /// Not three base64url parts separated by dots.
    #[error("not a compact JWS (three base64url parts)")]
    Shape,
    /// The signature does not verify with the key.
    #[error("signature does not verify")]
    Signature,
    /// The (verified) header is not a UTF-8 JSON object naming HS256, without `crit` and
    /// without a repeated member.
    #[error("header must be a JSON object with alg HS256, no crit and no repeated member")]
    Header,
}

/// One HS256 key: signs with a fixed header and verifies tokens.
#[derive(Clone)]
pub(crate) struct Hs256Key {
    mac: HmacSha256,
    /// `mac` with the fixed `header_b64.` prefix of every token it signs already absorbed.
    signing: HmacSha256,
    header_b64: String,
}

impl fmt::Debug for Hs256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hs256Key { key: <redacted> }")
    }
}

impl Hs256Key {
    /// A key for `secret`'s bytes as they are. Tokens it signs carry the header
    /// `{"typ":"JWT","alg":"HS256"}`, plus `"kid"` when given (in that order).
    pub(crate) fn new(secret: &[u8], kid: Option<&str>) -> Hs256Key {
        #[derive(Serialize)]
        struct Header<'a> {
            typ: &'a str,
            alg: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<&'a str>,
        }
        let header = Header {
            typ: "JWT",
            alg: "HS256",
            kid,
        };
        // A struct of strings always serializes: serde_json fails only on maps with non-string
        // keys and on a `Serialize` impl that errors, and this struct has neither.
        #[allow(clippy::expect_used)]
        let json = serde_json::to_vec(&header).expect("a struct of strings serializes");
        let header_b64 = URL_SAFE_NO_PAD.encode(json);
        let mac = keyed_hmac(secret);
        let mut signing = mac.clone();
        signing.update(header_b64.as_bytes());
        signing.update(b".");
        Hs256Key {
            mac,
            signing,
            header_b64,
        }
    }

    /// The compact JWS of `claims` (JSON text) under this key's header.
    pub(crate) fn sign(&self, claims: &[u8]) -> String {
        // Exactly: a string whose capacity is its length becomes a response body without a
        // copy or another allocation.
        let claims_b64 = base64::encoded_len(claims.len(), false).unwrap_or(0);
        let mut out = String::with_capacity(self.header_b64.len() + 2 + claims_b64 + SIG_B64_LEN);
        out.push_str(&self.header_b64);
        out.push('.');
        let claims_at = out.len();
        URL_SAFE_NO_PAD.encode_string(claims, &mut out);
        let mut mac = self.signing.clone();
        // `claims_at` was the length before the claims were appended.
        mac.update(out.as_bytes().split_at(claims_at).1);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut out);
        out
    }

    /// Verifies `token` and returns its claims as they were signed (JSON text, which the
    /// caller reads).
    ///
    /// # Errors
    ///
    /// See [`Hs256Error`]; the checks run in the order listed there.
    pub(crate) fn verify(&self, token: &str) -> Result<Vec<u8>, Hs256Error> {
        let (signed, sig) = token.rsplit_once('.').ok_or(Hs256Error::Shape)?;
        let (header, claims) = signed.split_once('.').ok_or(Hs256Error::Shape)?;
        if sig.len() != SIG_B64_LEN || claims.contains('.') {
            return Err(Hs256Error::Shape);
        }
        let mut tag = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(sig, &mut tag) {
            Ok(32) => {}
            _ => return Err(Hs256Error::Shape),
        }
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag).map_err(|_| Hs256Error::Signature)?;

        // Only verified bytes from here on. The usual headers are known by their encoding;
        // another of the usual size is decoded on the stack.
        if header == self.header_b64 || USUAL_HEADERS.contains(&header) {
            return URL_SAFE_NO_PAD
                .decode(claims)
                .map_err(|_| Hs256Error::Shape);
        }
        let mut small = [0u8; SMALL_HEADER];
        let header = if header.len() <= SMALL_HEADER / 3 * 4 {
            let n = (URL_SAFE_NO_PAD.decode_slice(header, &mut small))
                .map_err(|_| Hs256Error::Shape)?;
            // `decode_slice` writes at most the slice's length.
            Cow::Borrowed(small.split_at(n).0)
        } else {
            Cow::Owned((URL_SAFE_NO_PAD.decode(header)).map_err(|_| Hs256Error::Shape)?)
        };
        if !header_acceptable(&header) {
            return Err(Hs256Error::Header);
        }
        URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| Hs256Error::Shape)
    }
}

/// The base64url encodings of the headers most libraries write for HS256 without a kid
/// (PyJWT, Node's jsonwebtoken, jose: `{"alg":"HS256","typ":"JWT"}`; Rust's jsonwebtoken and
/// capsign: `{"typ":"JWT","alg":"HS256"}`), acceptable without reading them again (a test
/// decodes and checks them).
const USUAL_HEADERS: [&str; 2] = [
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
];

/// Whether a (verified) JOSE header is UTF-8 JSON throughout (RFC 8259; also in members
/// skipped here, which serde_json's `from_slice` would pass over unchecked), an object with
/// `alg` `HS256`, no `crit`, and no member named twice.
fn header_acceptable(header: &[u8]) -> bool {
    struct Check;
    impl<'de> Visitor<'de> for Check {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JOSE header object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut names: SmallVec<[Cow<'de, str>; 8]> = SmallVec::new();
            let (mut hs256, mut crit) = (false, false);
            while let Some(JsonStr(name)) = map.next_key::<JsonStr<'de>>()? {
                match &*name {
                    "alg" => hs256 = map.next_value::<JsonStr<'de>>()?.0 == "HS256",
                    "crit" => {
                        map.next_value::<IgnoredAny>()?;
                        crit = true;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                names.push(name);
            }
            names.sort_unstable();
            let repeated = names.windows(2).any(|w| w.first() == w.get(1));
            Ok(hs256 && !crit && !repeated)
        }
    }
    let Ok(text) = std::str::from_utf8(header) else {
        return false;
    };
    let mut de = serde_json::Deserializer::from_str(text);
    matches!(
        serde::Deserializer::deserialize_map(&mut de, Check),
        Ok(true)
    ) && de.end().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use serde_json::{Value, json};

    const SECRET: &[u8] = b"a session secret of some length";

    fn jwt_lib(header: &Header, claims: &Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn the_usual_headers_are_acceptable_and_what_they_say() {
        let texts: Vec<Vec<u8>> = USUAL_HEADERS
            .iter()
            .map(|h| URL_SAFE_NO_PAD.decode(h).unwrap())
            .collect();
        assert_eq!(texts[0], br#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(texts[1], br#"{"typ":"JWT","alg":"HS256"}"#);
        assert!(texts.iter().all(|t| header_acceptable(t)));
        // What Rust's jsonwebtoken writes for HS256 without a kid, and capsign's own key.
        let theirs = jwt_lib(&Header::new(Algorithm::HS256), &json!({}), SECRET);
        assert!(theirs.starts_with(&format!("{}.", USUAL_HEADERS[1])));
        let ours = Hs256Key::new(SECRET, None).sign(b"{}");
        assert!(ours.starts_with(&format!("{}.", USUAL_HEADERS[1])));
    }

    #[test]
    fn signs_what_jsonwebtoken_verifies() {
        let key = Hs256Key::new(SECRET, Some("app.key"));
        let token = key.sign(br#"{"sub":"u","exp":4000000000}"#);
        let mut v = Validation::new(Algorithm::HS256);
        v.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(SECRET), &v).unwrap();
        assert_eq!(data.claims, json!({"sub": "u", "exp": 4000000000u64}));
        assert_eq!(data.header.kid.as_deref(), Some("app.key"));
        // Same header bytes as jsonwebtoken writes for HS256 with a kid.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("app.key".into());
        let theirs = jwt_lib(&h, &json!({"sub": "u", "exp": 4000000000u64}), SECRET);
        assert_eq!(token.split('.').next(), theirs.split('.').next());
    }

    #[test]
    fn verifies_what_jsonwebtoken_signs() {
        let key = Hs256Key::new(SECRET, None);
        let claims = json!({"sub": "u", "n": [1, 2], "s": "\u{e9}\"x"});
        let token = jwt_lib(&Header::new(Algorithm::HS256), &claims, SECRET);
        let got: Value = serde_json::from_slice(&key.verify(&token).unwrap()).unwrap();
        assert_eq!(got, claims);
    }

    #[test]
    fn refuses_everything_else() {
        let key = Hs256Key::new(SECRET, None);
        let claims = json!({"sub": "u"});
        let good = jwt_lib(&Header::new(Algorithm::HS256), &claims, SECRET);
        let other_key = jwt_lib(&Header::new(Algorithm::HS256), &claims, b"another secret");
        assert_eq!(key.verify(&other_key), Err(Hs256Error::Signature));
        let hs384 = jwt_lib(&Header::new(Algorithm::HS384), &claims, SECRET);
        assert_eq!(key.verify(&hs384), Err(Hs256Error::Shape));

        // Correctly MAC'd with our key, but a header we must not accept.
        let forged = |header: &[u8], body: &str| {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(body)
            );
            let mut mac = keyed_hmac(SECRET);
            mac.update(signed.as_bytes());
            format!(
                "{signed}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            )
        };
        assert!(key.verify(&forged(br#"{"alg":"HS256"}"#, "{}")).is_ok());
        for header in [
            &br#"{"alg":"none"}"#[..],
            br#"{"alg":"hs256"}"#,
            br#"{"typ":"JWT"}"#,
            br#"{"alg":"HS256","crit":["exp"]}"#,
            br#"{"alg":"HS256","alg":"HS256"}"#,
            br#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
            br#"{"alg":"HS256"} {}"#,
            br#"{"alg":["HS256"]}"#,
            br#"["HS256"]"#,
            b"not json",
            // Found by the hs256 fuzz target: invalid UTF-8 in a member the check skips.
            b"{\"alg\":\"HS256\",\"typ\":\"\xff\"}",
        ] {
            assert_eq!(
                key.verify(&forged(header, "{}")),
                Err(Hs256Error::Header),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        // The claims come back as signed; reading them is the caller's business.
        assert_eq!(
            key.verify(&forged(br#"{"alg":"HS256"}"#, "not json")),
            Ok(b"not json".to_vec())
        );

        // Shape: parts, padding, extra dots, trailing bytes, flipped signature bits.
        let (signed, sig) = good.rsplit_once('.').unwrap();
        let mut flipped = sig.as_bytes().to_vec();
        flipped[5] ^= 0x01;
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{good}."),
            format!("{good}="),
            format!("{signed}.{sig}.x"),
            format!("{signed}.x.{sig}"),
            format!("{signed}.{}", &sig[..42]),
            format!("{signed}.{flipped}"),
            format!("{signed}x.{sig}"),
        ] {
            assert!(key.verify(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_redacts() {
        let key = Hs256Key::new(SECRET, Some("kid"));
        assert!(!format!("{key:?}").contains("secret"));
    }
}
