//! Property checks on arbitrary bytes, shared by the fuzz targets in `fuzz/` and by the
//! replay of their committed seeds and regressions in `cargo test` (`tests/it/fuzz_replay.rs`).
//!
//! Each function takes any input, must never panic on its own account, and panics (with a
//! message) only when a property of capsign is broken: that is how libFuzzer learns of it.
//! Not a public API.

// A broken property must panic, loudly: that is the whole point of this module.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::capability::{CapabilitySet, OpSet, Resource};
use crate::grants::{Grant, GrantKey, GrantKeys, GrantSet, OpenLimits, Purpose, SealError, Sealer};
use crate::identity::{ClientId, Identity};
use crate::policy::Rules;
use crate::testing::{self, ABLY_SECRET, SESSION_SECRET};

const NOW: u64 = 1_800_000_000;
const CLIENT: &str = "fuzz-user";
const COOKIE_NAME: &str = "__Host-capsign";

fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| {
        let keys = GrantKeys::new(
            GrantKey::derive(1, b"fuzz-cookie-key-0123456789abcdef"),
            vec![GrantKey::derive(2, b"fuzz-cookie-key-older-0123456789")],
        )
        .expect("two keys");
        Sealer::new(keys, COOKIE_NAME)
    })
}

fn limits() -> OpenLimits {
    OpenLimits {
        now: NOW,
        max_age: 86_400,
        future_skew: 60,
    }
}

/// A grant set drawn from `data`: resources from its printable runs, operations and ages from
/// its bytes. Deterministic, so a failing input reproduces.
fn grant_set_from(data: &[u8]) -> GrantSet {
    let mut set = GrantSet::new();
    for chunk in data.split(|b| *b == b'\n').take(400) {
        let (head, name) = chunk.split_at(chunk.len().min(3));
        let name = String::from_utf8_lossy(name);
        let Ok(resource) = Resource::new(name.as_ref()) else {
            continue;
        };
        let b = |i: usize| u32::from(head.get(i).copied().unwrap_or(0));
        let bits = if b(0) == 0xFF {
            OpSet::WILDCARD_BIT
        } else {
            (b(0) | (b(1) << 8) | ((b(2) & 1) << 16)) & (OpSet::WILDCARD_BIT - 1)
        };
        let Some(ops) = OpSet::from_bits(bits) else {
            continue;
        };
        let approved_at = NOW - u64::from(b(1) * 97 + b(2));
        set.insert(resource, Grant { ops, approved_at });
    }
    set
}

/// The same keys as [`sealer`], with key `id` signing: re-seals a value exactly as it was
/// sealed.
fn sealer_signing_with(id: u8) -> Sealer {
    let one = GrantKey::derive(1, b"fuzz-cookie-key-0123456789abcdef");
    let two = GrantKey::derive(2, b"fuzz-cookie-key-older-0123456789");
    let (signing, other) = if id == 2 { (two, one) } else { (one, two) };
    Sealer::new(
        GrantKeys::new(signing, vec![other]).expect("two keys"),
        COOKIE_NAME,
    )
}

/// The grant cookie: (1) `data` as a sealed value never panics the opener, and opens only if
/// it is exactly what the sealer writes for what it holds (so arbitrary text never opens: only
/// a genuinely sealed seed can); (2) `open(seal(x)) == x` for a set drawn from `data`, and
/// `seal` refuses exactly the sets over the limits `open` enforces (grant count, body size,
/// sealed length), so every value capsign hands out opens again; (3) a sealed value changed
/// in one character, truncated, opened for another client or for the header purpose, never
/// opens.
pub fn grant_cookie(data: &[u8]) {
    let sealer = sealer();
    // (1) Arbitrary text.
    let text = String::from_utf8_lossy(data);
    for purpose in [Purpose::Cookie, Purpose::Header] {
        if let Ok(opened) = sealer.open(purpose, &text, CLIENT, limits()) {
            let key_id = URL_SAFE_NO_PAD
                .decode(text.as_bytes())
                .ok()
                .and_then(|raw| raw.get(1).copied())
                .unwrap_or(0);
            let again = sealer_signing_with(key_id)
                .seal_grants(purpose, CLIENT, opened.issued_at, &opened.grants)
                .expect("what opened seals again");
            assert_eq!(again, text, "only an exact sealed value may open");
        }
    }

    // (2) Round trip, at the limits.
    let set = grant_set_from(data);
    let sealed = match sealer.seal_grants(Purpose::Cookie, CLIENT, NOW, &set) {
        Ok(sealed) => sealed,
        Err(SealError::TooManyGrants { held, max }) => {
            assert!(
                held > max && set.len() > sealer.max_grants(),
                "{held} > {max}"
            );
            return;
        }
        Err(SealError::TooLarge { bytes, limit }) => {
            assert!(bytes > limit, "refused at {bytes} bytes, limit {limit}");
            return;
        }
    };
    assert!(sealed.len() <= crate::grants::MAX_SEALED_LEN);
    let opened = sealer
        .open(Purpose::Cookie, &sealed, CLIENT, limits())
        .unwrap_or_else(|e| panic!("a sealed value of {} bytes did not open: {e}", sealed.len()));
    assert_eq!(opened.grants, set, "open(seal(x)) must be x");
    assert_eq!(opened.issued_at, NOW);

    // (3) Tampering.
    let pick = data.iter().fold(7usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(*b))
    });
    let pos = pick % sealed.len();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = sealed.clone().into_bytes();
    let old = bytes[pos];
    let new = alphabet[(pick / 7 + 1) % alphabet.len()];
    bytes[pos] = if new == old {
        b'A' + (old == b'A') as u8
    } else {
        new
    };
    let mutated = String::from_utf8(bytes).unwrap();
    assert!(
        sealer
            .open(Purpose::Cookie, &mutated, CLIENT, limits())
            .is_err(),
        "a value changed at {pos} opened"
    );
    let cut = &sealed[..pos];
    assert!(sealer.open(Purpose::Cookie, cut, CLIENT, limits()).is_err());
    assert!(
        sealer
            .open(Purpose::Header, &sealed, CLIENT, limits())
            .is_err()
    );
    assert!(
        sealer
            .open(Purpose::Cookie, &sealed, "someone-else", limits())
            .is_err()
    );
}

fn check_canonical(set: &CapabilitySet) {
    let text = set.to_json();
    let again = CapabilitySet::from_json(&text).unwrap_or_else(|e| {
        panic!("canonical form {text} does not parse: {e}");
    });
    assert_eq!(&again, set, "canonical form must round-trip");
    assert_eq!(again.to_json(), text, "canonical form must be stable");
    assert!(set.covers_set(set), "covering must be reflexive");
}

/// Capability JSON: two documents separated by the first line feed. Each that parses
/// round-trips through its canonical form; for two, union, merge, `uncovered` and
/// intersection keep their laws and never widen beyond their inputs.
pub fn capability(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, "{}"));
    let (Ok(a), Ok(b)) = (CapabilitySet::from_json(a), CapabilitySet::from_json(b)) else {
        return;
    };
    check_canonical(&a);
    check_canonical(&b);

    let u = a.union(&b);
    assert_eq!(u, b.union(&a), "union must commute");
    assert_eq!(u.union(&a), u, "union must be idempotent");
    assert!(
        u.covers_set(&a) && u.covers_set(&b),
        "union must cover its inputs"
    );
    for (r, ops) in u.iter() {
        let from_inputs = a
            .ops_for(r.as_str())
            .unwrap_or_default()
            .union(b.ops_for(r.as_str()).unwrap_or_default());
        assert!(ops.is_subset(from_inputs), "union widened {r}");
    }
    let mut merged = GrantSet::new();
    merged.add(&a, NOW);
    let mut other = GrantSet::new();
    other.add(&b, NOW - 5);
    merged.merge(other);
    assert_eq!(
        merged.capabilities(),
        u,
        "merging grant sets must be the union"
    );

    let missing = a.uncovered(&b);
    assert!(
        b.covers_set(&missing),
        "uncovered must be part of the request"
    );
    assert!(
        a.union(&missing).covers_set(&b),
        "held ∪ uncovered must cover the request"
    );
    let mut held = GrantSet::new();
    held.add(&a, NOW);
    assert_eq!(
        held.uncovered(&b),
        missing,
        "GrantSet::uncovered must agree"
    );

    let i = a.intersect(&b);
    assert!(a.covers_set(&i) && b.covers_set(&i), "intersection widened");
}

/// The rules file: any text that parses as rules decides only within what was asked, for any
/// clientId (including ones with `:` and `*`) and claims.
pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rules, who) = text.split_once("\n#who:").unwrap_or((text, "u:1*"));
    let Ok(policy) = Rules::from_toml(rules) else {
        return;
    };
    let mut claims = Map::new();
    claims.insert("team".into(), Value::String(who.chars().rev().collect()));
    let Ok(client_id) = ClientId::new(who) else {
        return;
    };
    let who = Identity::new(client_id, claims);
    let requested = CapabilitySet::from_value(&json!({
        "*": ["*"],
        "chat:*": ["publish", "subscribe"],
        "doc:a:b": ["history"],
        "[*]*": ["subscribe"],
        "[meta]log": ["subscribe"],
        "private:u:*": ["publish"],
    }))
    .unwrap();
    let granted = policy.decide(&who, &requested);
    assert!(
        requested.covers_set(&granted),
        "the policy granted more than was asked"
    );
    for (r, _) in granted.iter() {
        assert!(
            requested.ops_for(r.as_str()).is_some(),
            "granted an unasked resource {r}"
        );
    }
    let defaults = policy.defaults(&who);
    check_canonical(&defaults);
}

struct AuthTarget {
    app: App,
    bearer: String,
    cookie: String,
    rt: tokio::runtime::Runtime,
}

fn auth_target() -> &'static AuthTarget {
    static TARGET: OnceLock<AuthTarget> = OnceLock::new();
    TARGET.get_or_init(|| {
        let app = testing::app_of(&testing::env_with_rules(testing::RULES_WITH_DEFAULT, &[]));
        let now = app.clock.now_ms() / 1000;
        let bearer = testing::session_jwt(
            CLIENT,
            now + 10 * 365 * 86_400,
            &json!({"team": "red", "iat": now}),
        );
        let mut held = CapabilitySet::from_json(r#"{"chat:lobby":["subscribe"]}"#).unwrap();
        held.insert(
            Resource::new("doc:1").unwrap(),
            OpSet::from_bits(OpSet::WILDCARD_BIT).unwrap(),
        );
        let mut grants = GrantSet::new();
        grants.add(&held, now);
        let cookie = app
            .flow
            .sealer
            .seal_grants(Purpose::Cookie, CLIENT, now, &grants)
            .expect("two grants seal");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        AuthTarget {
            app,
            bearer,
            cookie,
            rt,
        }
    })
}

/// An `/auth` request built from `data`: byte 0 picks the method, the body's content type and
/// which credentials go along; the rest is `query \n body \n extra cookie header`. Whatever
/// comes in, the answer is never a 5xx; an error carries Ably's envelope with matching
/// status; a 200 is a credential signed by the Ably key (a JWT's signature, a TokenRequest's
/// MAC, both checked) whose capability the rules allow.
pub fn auth_request(data: &[u8]) {
    let t = auth_target();
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default().to_vec();
    let extra_cookie = parts.next().unwrap_or_default();

    let post = ctl & 1 == 1;
    let mut req = http::Request::builder()
        .method(if post { "POST" } else { "GET" })
        .uri(format!("/auth?{}", query.replace(['#', ' '], "%20")));
    if ctl & 2 != 0 {
        req = req.header("authorization", format!("Bearer {}", t.bearer));
    }
    let mut cookie = String::new();
    if ctl & 4 != 0 {
        cookie = format!("{COOKIE_NAME}={}", t.cookie);
    }
    if let Ok(v) = http::HeaderValue::from_bytes(extra_cookie) {
        if !extra_cookie.is_empty() {
            if !cookie.is_empty() {
                cookie.push_str("; ");
            }
            cookie.push_str(v.to_str().unwrap_or_default());
        }
    }
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    if post {
        let ctype = match (ctl >> 3) & 3 {
            0 => "application/x-www-form-urlencoded",
            1 => "application/json",
            2 => "application/json; charset=utf-8",
            _ => "text/plain",
        };
        req = req.header("content-type", ctype);
    }
    if ctl & 0x20 != 0 {
        req = req.header("x-capsign-grants", URL_SAFE_NO_PAD.encode(&body));
    }
    let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
        return;
    };
    let resp = t.rt.block_on(crate::http::handle(&t.app, req));
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body =
        t.rt.block_on(resp.into_body().collect())
            .expect("in-memory body")
            .to_bytes();
    let unreachable_ably = status == http::StatusCode::BAD_GATEWAY;
    assert!(
        !status.is_server_error() || unreachable_ably,
        "{status} for {data:?}"
    );
    if status.is_success() {
        let cap = match ctype.as_str() {
            "application/jwt" => {
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
                v.required_spec_claims.clear();
                v.validate_exp = false;
                let token = std::str::from_utf8(&body).expect("JWT text");
                let claims = jsonwebtoken::decode::<Map<String, Value>>(
                    token,
                    &jsonwebtoken::DecodingKey::from_secret(ABLY_SECRET.as_bytes()),
                    &v,
                )
                .expect("the JWT must verify with the Ably key")
                .claims;
                claims["x-ably-capability"].as_str().unwrap().to_owned()
            }
            "application/json" => {
                let tr: Value = serde_json::from_slice(&body).expect("TokenRequest JSON");
                // The MAC, recomputed here from Ably's definition (the seven fields' sign text,
                // each line-terminated, HMAC-SHA256 with the key secret, standard base64).
                use hmac::Mac as _;
                let field = |k: &str| match &tr[k] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut mac = crate::crypto::keyed_hmac(ABLY_SECRET.as_bytes());
                for k in [
                    "keyName",
                    "ttl",
                    "capability",
                    "clientId",
                    "timestamp",
                    "nonce",
                ] {
                    mac.update(field(k).as_bytes());
                    mac.update(b"\n");
                }
                let want =
                    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                assert_eq!(
                    tr["mac"],
                    json!(want),
                    "the TokenRequest must be signed by the Ably key"
                );
                tr["capability"].as_str().unwrap().to_owned()
            }
            other => panic!("200 with content type {other}"),
        };
        let cap = CapabilitySet::from_json(&cap).expect("minted capability parses");
        let allowed = CapabilitySet::from_value(&json!({
            "chat:*": ["subscribe", "publish", "presence"],
            "doc:*": ["subscribe", "publish"],
            "doc:1": ["*"],
            "private:fuzz-user:*": ["*"],
            "team:red": ["subscribe"],
            "home:fuzz-user": ["subscribe"],
        }))
        .unwrap();
        assert!(allowed.covers_set(&cap), "minted {cap} beyond the rules");
    } else {
        let env: Value = serde_json::from_slice(&body).expect("error envelope JSON");
        assert_eq!(ctype, "application/json");
        assert_eq!(
            env["error"]["statusCode"].as_u64(),
            Some(u64::from(status.as_u16())),
            "envelope status"
        );
        assert!(env["error"]["code"].as_u64().is_some());
    }
}

/// A policy webhook's answer: whatever the body, the parsed grant stays within what was
/// asked (same resources, a subset of their operations).
pub fn webhook_answer(data: &[u8]) {
    let requested = CapabilitySet::from_value(&json!({
        "doc:1": ["publish", "subscribe"],
        "doc:*": ["subscribe"],
        "chat:a:b": ["*"],
        "[meta]log": ["subscribe"],
    }))
    .unwrap();
    let Ok(granted) = crate::policy::webhook::parse_answer(&requested, data) else {
        return;
    };
    assert!(
        requested.covers_set(&granted),
        "the webhook widened the request"
    );
    for (r, ops) in granted.iter() {
        let asked = requested.ops_for(r.as_str()).expect("only asked resources");
        assert!(ops.is_subset(asked), "{r}: {ops:?} beyond {asked:?}");
        assert!(!ops.is_empty());
    }
}

/// HS256 (`crate::hs256`), which signs every Ably JWT and verifies session JWTs. The input is
/// a header and claims (split at the first `0xff`), MAC'd with the key as any holder of it
/// could, and also the whole input taken as a token. Properties: nothing panics; a forged
/// token (the raw input) never verifies; a correctly MAC'd token verifies exactly when its
/// header, read independently with serde_json, is an object with `alg` = `HS256`, no `crit`
/// and no member named twice, and then yields the claims bytes unchanged; what `sign` makes, `verify` and
/// `jsonwebtoken` both accept, with the same claims.
pub fn hs256(data: &[u8]) {
    use hmac::Mac as _;

    use crate::hs256::Hs256Key;

    let key = Hs256Key::new(SESSION_SECRET.as_bytes(), Some("fuzz.kid"));
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(key.verify(text).is_err(), "an unsigned input verified");
    }

    let (header, claims) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = crate::crypto::keyed_hmac(SESSION_SECRET.as_bytes());
    mac.update(signed.as_bytes());
    let token = format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    // A member named twice is refused too (RFC 7515 allows either refusing or taking the last).
    let acceptable = match serde_json::from_slice::<Value>(header) {
        Ok(Value::Object(h)) => {
            h.get("alg") == Some(&json!("HS256"))
                && !h.contains_key("crit")
                && member_count(header) == Some(h.len())
        }
        _ => false,
    };
    match key.verify(&token) {
        Ok(got) => {
            assert!(
                acceptable,
                "header {:?} accepted",
                String::from_utf8_lossy(header)
            );
            assert_eq!(got, claims, "claims changed on the way");
        }
        Err(e) => assert!(
            !acceptable,
            "header {:?} refused: {e}",
            String::from_utf8_lossy(header)
        ),
    }
    differ_from_jsonwebtoken(&key, &token, header, claims);

    // Round trip through `sign`, checked by the JWT library as well, when the claims are a
    // JSON object (what `sign` is given in capsign).
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(claims) {
        // Serializing a map of JSON values cannot fail.
        let text = serde_json::to_vec(&obj).unwrap();
        let minted = key.sign(&text);
        assert_eq!(key.verify(&minted).as_deref(), Ok(&text[..]));
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        if let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(
            &minted,
            &jsonwebtoken::DecodingKey::from_secret(SESSION_SECRET.as_bytes()),
            &v,
        ) {
            // Compared with a reading of the same signed text: serde_json's default float
            // parser need not give back the same f64 after a print and a reparse.
            // `text` is an object serde_json just wrote.
            let signed: Map<String, Value> = serde_json::from_slice(&text).unwrap();
            assert_eq!(data.claims, signed, "jsonwebtoken reads other claims");
            assert_eq!(data.header.kid.as_deref(), Some("fuzz.kid"));
        } else {
            // jsonwebtoken also type-checks registered claims (exp, nbf, iat, aud, iss, sub);
            // only such a claim of another type may make it refuse what capsign signed.
            let registered = ["exp", "nbf", "iat", "aud", "iss", "sub"];
            assert!(
                obj.keys().any(|k| registered.contains(&k.as_str())),
                "jsonwebtoken refused a token capsign signed: {minted}"
            );
        }
    }
}

/// The fast HS256 verifier against jsonwebtoken's, on a correctly MAC'd `token` (what capsign
/// verifies with it is only the signature and the header: every claim check is
/// `SessionClaims`', shared with the jsonwebtoken paths). What jsonwebtoken accepts, capsign
/// accepts unless the header names `crit` or a member twice (refused on purpose); what capsign
/// accepts, jsonwebtoken accepts when the header holds nothing but `alg` and string `typ`,
/// `kid` or `cty` (jsonwebtoken types more header members) and the claims are a JSON object
/// without registered claims (jsonwebtoken type-checks those while decoding).
fn differ_from_jsonwebtoken(
    key: &crate::hs256::Hs256Key,
    token: &str,
    header: &[u8],
    claims: &[u8],
) {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let theirs = jsonwebtoken::decode::<Box<serde_json::value::RawValue>>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SESSION_SECRET.as_bytes()),
        &v,
    );
    let ours = key.verify(token);
    let parsed_header = serde_json::from_slice::<Map<String, Value>>(header).ok();
    let deliberate = parsed_header
        .as_ref()
        .is_none_or(|h| h.contains_key("crit") || member_count(header) != Some(h.len()));
    if let Ok(data) = &theirs {
        if !deliberate {
            assert_eq!(
                ours.as_deref().ok(),
                Some(claims),
                "jsonwebtoken accepts what capsign refuses: {token}"
            );
            let read: Value = serde_json::from_slice(claims).unwrap();
            let theirs: Value = serde_json::from_str(data.claims.get()).unwrap();
            assert_eq!(read, theirs, "jsonwebtoken reads other claims");
        }
    }
    let plain_header = parsed_header.as_ref().is_some_and(|h| {
        h.iter().all(|(k, v)| {
            k == "alg" || (matches!(k.as_str(), "typ" | "kid" | "cty") && v.is_string())
        })
    });
    let plain_claims = serde_json::from_slice::<Map<String, Value>>(claims).is_ok_and(|c| {
        !["exp", "nbf", "iat", "aud", "iss", "sub"]
            .iter()
            .any(|r| c.contains_key(*r))
    });
    if ours.is_ok() && plain_header && plain_claims {
        assert!(
            theirs.is_ok(),
            "capsign accepts what jsonwebtoken refuses: {token}: {:?}",
            theirs.err()
        );
    }
}

/// How many members (duplicates included) the JSON object `text` has at its top level.
fn member_count(text: &[u8]) -> Option<usize> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {
                n += 1;
            }
            Ok(n)
        }
    }
    serde::Deserializer::deserialize_map(&mut serde_json::Deserializer::from_slice(text), Count)
        .ok()
}

/// A JWKS document: parsing never panics, and no key it yields verifies an HMAC algorithm or
/// an algorithm outside the allow-list, whatever `kid` a token names.
pub fn jwks(data: &[u8]) {
    use jsonwebtoken::Algorithm;
    let allowed = [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA];
    let Ok(keys) = crate::identity::jwks::KeySet::parse(data, &allowed) else {
        return;
    };
    assert!(!keys.is_empty());
    let doc: Value = serde_json::from_slice(data).unwrap();
    let mut kids: Vec<Option<String>> = vec![None];
    if let Some(list) = doc.get("keys").and_then(Value::as_array) {
        kids.extend(
            list.iter()
                .filter_map(|k| k.get("kid").and_then(Value::as_str))
                .map(|k| Some(k.to_owned())),
        );
    }
    for kid in &kids {
        for alg in [
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES384,
        ] {
            assert!(
                keys.find(kid.as_deref(), alg).is_none(),
                "key {kid:?} accepted {alg:?}"
            );
        }
    }
}
