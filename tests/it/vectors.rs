//! Known-answer vectors, all in tests/data/vectors.json: the TokenRequest and Ably JWT vectors
//! of docs/ably-protocol.md §1.3 and §4.6 (one of them Ably's published `test_hmac`, the
//! others computed by this project and cross-checked with ably-js, ably-python and openssl), and
//! capsign's own grant cookie and grants header (`docs/grant-cookie.md`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capsign::ably::AblyKey;
use capsign::capability::CapabilitySet;
use capsign::grants::{GrantKey, GrantKeys, GrantSet, OpenLimits, Purpose, Sealer};
use capsign::settings::AblyApiKey;
use hmac::{Hmac, Mac};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../data/vectors.json")).unwrap()
}

fn opt_str(v: &Value) -> Option<&str> {
    v.as_str()
}

#[test]
fn token_request_vectors_reproduce() {
    let all = vectors();
    for v in all["token_request"].as_array().unwrap() {
        let key = AblyKey::from_parts(
            v["keyName"].as_str().unwrap(),
            v["secret"].as_str().unwrap(),
        );
        // Capabilities go through capsign's canonical form, as the flow sends them.
        let cap = opt_str(&v["capability"]).map(|c| CapabilitySet::from_json(c).unwrap().to_json());
        assert_eq!(
            cap.as_deref(),
            opt_str(&v["capability_canonical"]),
            "{}",
            v["id"]
        );
        let json = key
            .token_request(
                v["ttl"].as_u64(),
                cap.as_deref(),
                opt_str(&v["clientId"]),
                v["timestamp"].as_u64().unwrap(),
                v["nonce"].as_str().unwrap(),
            )
            .unwrap();
        let tr: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(tr["mac"], v["mac"], "vector {}", v["id"]);
        if let Some(exact) = opt_str(&v["json"]) {
            assert_eq!(json, exact, "vector {} JSON bytes", v["id"]);
        }
    }
}

#[test]
fn jwt_vectors_reproduce_and_verify() {
    let all = vectors();
    let key = AblyKey::new(&AblyApiKey::parse("xVLyHw.mDYnFA:FAKESECRETfakesecret").unwrap());
    for v in all["jwt"].as_array().unwrap() {
        let claims = &v["claims"];
        let jwt = key.jwt(
            &CapabilitySet::from_json(claims["x-ably-capability"].as_str().unwrap()).unwrap(),
            opt_str(&claims["x-ably-clientId"]),
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(jwt, v["jwt_typ_alg_kid"].as_str().unwrap(), "{}", v["id"]);
        // The other header order (Ably's docs) verifies with the same secret.
        for token in [&v["jwt_alg_typ_kid"], &v["jwt_typ_alg_kid"]] {
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            validation.validate_exp = false;
            let data = jsonwebtoken::decode::<Value>(
                token.as_str().unwrap(),
                &jsonwebtoken::DecodingKey::from_secret(b"FAKESECRETfakesecret"),
                &validation,
            )
            .unwrap();
            assert_eq!(&data.claims, claims);
        }
    }
}

fn cookie_vector_parts() -> (Value, Sealer, GrantSet) {
    let v = vectors()["grant_cookie"].clone();
    let secret = hex_decode(v["cookie_key_hex"].as_str().unwrap());
    let keys = GrantKeys::new(
        GrantKey::derive(
            u8::try_from(v["key_id"].as_u64().unwrap()).unwrap(),
            &secret,
        ),
        vec![],
    )
    .unwrap();
    let sealer = Sealer::new(keys, v["cookie_name"].as_str().unwrap());
    let mut grants = GrantSet::new();
    for g in v["grants"].as_array().unwrap() {
        let set = CapabilitySet::from_json(&g["capability"].to_string()).unwrap();
        grants.add(&set, g["approved_at"].as_u64().unwrap());
    }
    (v, sealer, grants)
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn grant_cookie_vector_reproduces() {
    let (v, sealer, grants) = cookie_vector_parts();
    let client = v["client_id"].as_str().unwrap();
    let issued = v["issued_at"].as_u64().unwrap();
    let sealed = sealer
        .seal_grants(Purpose::Cookie, client, issued, &grants)
        .unwrap();
    assert_eq!(sealed, v["sealed"].as_str().unwrap());
    let header = sealer
        .seal_grants(Purpose::Header, client, issued, &grants)
        .unwrap();
    assert_eq!(header, v["sealed_header"].as_str().unwrap());
    let opened = sealer
        .open(
            Purpose::Cookie,
            &sealed,
            client,
            OpenLimits {
                now: issued,
                max_age: 60,
                future_skew: 0,
            },
        )
        .unwrap();
    assert_eq!(opened.grants, grants);
}

/// Checks the vector against the format as `docs/grant-cookie.md` describes it, with plain hkdf/hmac and
/// a hand-written reader: the documentation and the code agree.
#[test]
fn grant_cookie_vector_matches_the_documented_format() {
    let (v, _, _) = cookie_vector_parts();
    let raw = URL_SAFE_NO_PAD
        .decode(v["sealed"].as_str().unwrap())
        .unwrap();
    let (payload, tag) = raw.split_at(raw.len() - 32);
    let secret = hex_decode(v["cookie_key_hex"].as_str().unwrap());
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"capsign"), &secret);
    let mut key = [0u8; 32];
    hk.expand(b"capsign grant cookie v1 hmac-sha256", &mut key)
        .unwrap();
    let name = v["cookie_name"].as_str().unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"capsign-grants-v1\0");
    mac.update(&[b'C', u8::try_from(name.len()).unwrap()]);
    mac.update(name.as_bytes());
    mac.update(payload);
    mac.verify_slice(tag).unwrap();

    // The header value: the same payload with version 2, its MAC binding the cookie name too.
    let header = URL_SAFE_NO_PAD
        .decode(v["sealed_header"].as_str().unwrap())
        .unwrap();
    let (header_payload, header_tag) = header.split_at(header.len() - 32);
    assert_eq!(header_payload[0], 2, "header version");
    assert_eq!(&header_payload[1..], &payload[1..]);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"capsign-grants-v2\0");
    mac.update(&[b'H', u8::try_from(name.len()).unwrap()]);
    mac.update(name.as_bytes());
    mac.update(header_payload);
    mac.verify_slice(header_tag).unwrap();

    assert_eq!(payload[0], 1, "version");
    assert_eq!(u64::from(payload[1]), v["key_id"].as_u64().unwrap());
    assert_eq!(payload[2], 0, "this small vector is not deflated");
    let mut r = Reader(&payload[3..]);
    let issued = r.varint();
    assert_eq!(issued, v["issued_at"].as_u64().unwrap());
    assert_eq!(r.bytes(), v["client_id"].as_str().unwrap().as_bytes());
    let n = r.varint();
    let mut prev: Vec<u8> = Vec::new();
    let mut decoded = Vec::new();
    for _ in 0..n {
        let shared = usize::try_from(r.varint()).unwrap();
        let mut name = prev[..shared].to_vec();
        name.extend_from_slice(r.bytes());
        let bits = r.varint();
        let ops: Vec<&str> = capsign::capability::Operation::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, op)| op.name())
            .chain((bits & (1 << 17) != 0).then_some("*"))
            .collect();
        let approved = issued - r.varint();
        decoded.push((String::from_utf8(name.clone()).unwrap(), ops, approved));
        prev = name;
    }
    assert!(r.0.is_empty(), "no trailing bytes");
    let expected: Vec<(String, Vec<&str>, u64)> = v["grants"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            let approved = g["approved_at"].as_u64().unwrap();
            g["capability"]
                .as_object()
                .unwrap()
                .iter()
                .map(move |(res, ops)| {
                    let ops = ops
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|o| o.as_str().unwrap())
                        .collect();
                    (res.clone(), ops, approved)
                })
        })
        .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(decoded, expected);
}

/// Unsigned LEB128 and length-prefixed bytes, as `docs/grant-cookie.md` defines them.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> u64 {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let b = self.0[0];
            self.0 = &self.0[1..];
            n |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return n;
            }
        }
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = usize::try_from(self.varint()).unwrap();
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head
    }
}

/// Both fake Ablys (the e2e suite's and the integration tests') check capabilities against
/// the operations of `tests/data/fake_ably.json`; it must be exactly capsign's (and Ably's)
/// list, or the fakes would accept what Ably refuses. Issue 17 found `statistics` in the
/// Python fake where Ably says `stats`.
#[test]
fn the_fake_ablys_know_the_same_operations() {
    let shared = crate::fakes::shared();
    let mut theirs: Vec<&str> = shared["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op.as_str().unwrap())
        .collect();
    theirs.sort_unstable();
    let mut ours: Vec<&str> = capsign::capability::Operation::ALL
        .iter()
        .map(|op| op.name())
        .collect();
    ours.sort_unstable();
    assert_eq!(theirs, ours);
    // The Python fake reads them from there, and has no list of its own.
    let fake = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/fake_ably.py"
    ))
    .unwrap();
    assert!(fake.contains(r#"OPERATIONS = set(json.load(f)["operations"])"#));
    // The client helper checks feature operations against its own copy (it runs in browsers,
    // with no file to read): the same list.
    let helper = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/src/index.ts"
    ))
    .unwrap();
    let list = helper
        .split_once("ABLY_OPERATIONS: readonly string[] = Object.freeze([")
        .and_then(|(_, rest)| rest.split_once("])"))
        .unwrap()
        .0;
    let mut helpers: Vec<&str> = list
        .split(',')
        .map(|s| s.trim().trim_matches('\''))
        .filter(|s| !s.is_empty())
        .collect();
    helpers.sort_unstable();
    assert_eq!(helpers, ours, "clients/js/src/index.ts ABLY_OPERATIONS");
}
