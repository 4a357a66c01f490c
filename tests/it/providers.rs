//! Identity providers: session JWTs verified with a JWKS document (file or URL, `kid`
//! selection, algorithm allow-list, refresh), and `header` identity from trusted proxies.

use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::fakes::{Answer, Fake};
use crate::harness::{Reply, Server, settings};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keys");
const CAP: &str = "/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key(kind: &str) -> EncodingKey {
    let pem = std::fs::read(format!("{KEYS}/{kind}.key")).unwrap();
    match kind {
        "rsa" => EncodingKey::from_rsa_pem(&pem),
        "ec" => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap()
}

/// A session JWT signed by the test key `kind` with `alg`, naming `kid`.
fn token(kind: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key(kind)).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "team": "red"})
}

async fn get(s: &Server, path: &str, bearer: &str) -> Reply {
    s.send(
        s.get(path)
            .header("authorization", format!("Bearer {bearer}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

async fn jwks_server(extra: &[(&str, &str)], jwks: &str) -> Server {
    let mut vars = settings(extra);
    vars.remove("CAPSIGN_SESSION_SECRET");
    vars.insert("CAPSIGN_SESSION_JWKS".into(), jwks.into());
    Server::start_with(vars).await
}

#[tokio::test]
async fn jwks_file_selects_the_key_by_kid() {
    let s = jwks_server(&[], &format!("{KEYS}/jwks.json")).await;
    for (kind, alg, kid) in [
        ("rsa", Algorithm::RS256, "rsa-1"),
        ("ec", Algorithm::ES256, "ec-1"),
        ("ed", Algorithm::EdDSA, "ed-1"),
    ] {
        let r = get(&s, CAP, &token(kind, alg, Some(kid), &claims("carol"))).await;
        assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#, "{kind}");
    }
    // Claims reach the rules: team:{claims.team}.
    let r = get(
        &s,
        "/auth?capability=%7B%22team%3Ared%22%3A%5B%22subscribe%22%5D%7D",
        &token("ec", Algorithm::ES256, Some("ec-1"), &claims("carol")),
    )
    .await;
    assert_eq!(r.capability(), r#"{"team:red":["subscribe"]}"#);
}

#[tokio::test]
async fn unknown_or_wrong_keys_and_algorithm_confusion_are_refused() {
    let s = jwks_server(&[], &format!("{KEYS}/jwks.json")).await;
    let c = claims("mallory");
    let public = std::fs::read(format!("{KEYS}/rsa.pub")).unwrap();
    let hs = |secret: &[u8], kid: &str| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(secret)).unwrap()
    };
    let none = {
        use base64::Engine as _;
        let b = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b(&json!({"alg": "none", "kid": "rsa-1"})), b(&c))
    };
    for (what, bad) in [
        (
            "unknown kid",
            token("rsa", Algorithm::RS256, Some("rsa-9"), &c),
        ),
        (
            "another key's kid",
            token("rsa", Algorithm::RS256, Some("ec-1"), &c),
        ),
        (
            "no kid, several keys",
            token("rsa", Algorithm::RS256, None, &c),
        ),
        (
            "alg other than the JWK's",
            token("rsa", Algorithm::RS384, Some("rsa-1"), &c),
        ),
        (
            "an encryption key",
            token("rsa", Algorithm::RS256, Some("enc-1"), &c),
        ),
        ("HS256 with the public key", hs(&public, "rsa-1")),
        (
            "HS256 with the oct key",
            hs(b"a shared secret that must never verify anything", "hmac-1"),
        ),
        ("alg none", none),
    ] {
        let r = get(&s, CAP, &bad).await;
        assert_eq!(
            (r.status, r.error_code()),
            (401, 40101),
            "{what}: {}",
            r.body
        );
    }
}

/// Issue 16: a `crit` header was refused in HS256 mode but accepted in PEM and JWKS mode. One
/// rule everywhere now: a session JWT naming `crit` extensions is refused (capsign
/// understands none).
#[tokio::test]
async fn a_crit_header_is_refused_with_public_keys_too() {
    let with_crit = |kind: &str, alg: Algorithm, kid: Option<&str>| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        header.crit = Some(vec!["exp".into()]);
        jsonwebtoken::encode(&header, &claims("carol"), &key(kind)).unwrap()
    };
    let jwks = jwks_server(&[], &format!("{KEYS}/jwks.json")).await;
    let plain = token("rsa", Algorithm::RS256, Some("rsa-1"), &claims("carol"));
    assert_eq!(get(&jwks, CAP, &plain).await.status, 200);
    let r = get(
        &jwks,
        CAP,
        &with_crit("rsa", Algorithm::RS256, Some("rsa-1")),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, 40101), "{}", r.body);

    let mut vars = settings(&[]);
    vars.remove("CAPSIGN_SESSION_SECRET");
    vars.insert(
        "CAPSIGN_SESSION_PUBLIC_KEY".into(),
        format!("{KEYS}/ec.pub"),
    );
    let pem = Server::start_with(vars).await;
    assert_eq!(
        get(
            &pem,
            CAP,
            &token("ec", Algorithm::ES256, None, &claims("carol"))
        )
        .await
        .status,
        200
    );
    let r = get(&pem, CAP, &with_crit("ec", Algorithm::ES256, None)).await;
    assert_eq!((r.status, r.error_code()), (401, 40101), "{}", r.body);
    assert!(r.body.contains("crit"), "{}", r.body);
}

#[tokio::test]
async fn algorithm_allow_list_issuer_and_audience() {
    let s = jwks_server(
        &[
            ("CAPSIGN_SESSION_ALGORITHMS", "ES256, EdDSA"),
            ("CAPSIGN_SESSION_ISSUER", "https://idp.example"),
            ("CAPSIGN_SESSION_AUDIENCE", "capsign"),
        ],
        &format!("{KEYS}/jwks.json"),
    )
    .await;
    let good =
        json!({"sub": "carol", "exp": now() + 600, "iss": "https://idp.example", "aud": "capsign"});
    let r = get(&s, CAP, &token("ec", Algorithm::ES256, Some("ec-1"), &good)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(
        &s,
        CAP,
        &token("rsa", Algorithm::RS256, Some("rsa-1"), &good),
    )
    .await;
    assert_eq!(r.status, 401, "RS256 is not on the allow-list");
    let wrong_iss = json!({"sub": "carol", "exp": now() + 600, "iss": "https://evil.example", "aud": "capsign"});
    let r = get(
        &s,
        CAP,
        &token("ec", Algorithm::ES256, Some("ec-1"), &wrong_iss),
    )
    .await;
    assert_eq!(r.status, 401);
    let expired =
        json!({"sub": "carol", "exp": now() - 600, "iss": "https://idp.example", "aud": "capsign"});
    let r = get(
        &s,
        CAP,
        &token("ec", Algorithm::ES256, Some("ec-1"), &expired),
    )
    .await;
    assert_eq!(r.status, 401);

    let map = settings(&[("CAPSIGN_SESSION_ALGORITHMS", "HS256")]);
    let mut map = map;
    map.remove("CAPSIGN_SESSION_SECRET");
    map.insert("CAPSIGN_SESSION_JWKS".into(), format!("{KEYS}/jwks.json"));
    let err = crate::harness::load(&map).unwrap_err();
    assert!(
        err.to_string().contains("CAPSIGN_SESSION_ALGORITHMS"),
        "{err}"
    );
}

/// A JWKS document holding the test keys named.
fn jwks_of(kids: &[&str]) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{KEYS}/jwks.json")).unwrap())
            .unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    json!({ "keys": keys })
}

#[tokio::test]
async fn jwks_url_is_fetched_at_start_and_again_for_an_unknown_kid() {
    let idp = Fake::start(|_: &_| Answer::json(200, &jwks_of(&["rsa-1"]))).await;
    let s = jwks_server(
        &[("CAPSIGN_SESSION_JWKS_MIN_REFRESH", "1ms")],
        &idp.url("/.well-known/jwks.json"),
    )
    .await;
    assert_eq!(idp.seen().len(), 1, "fetched at start-up");
    let r = get(
        &s,
        CAP,
        &token("rsa", Algorithm::RS256, Some("rsa-1"), &claims("carol")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(idp.seen().len(), 1, "a known kid needs no fetch");

    // The identity provider rotates in a new key.
    idp.answer(|_: &_| Answer::json(200, &jwks_of(&["rsa-1", "ec-1"])));
    let r = get(
        &s,
        CAP,
        &token("ec", Algorithm::ES256, Some("ec-1"), &claims("carol")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.seen().len(), 2);

    // The provider goes down: known keys keep working.
    idp.answer(|_: &_| Answer::json(500, &json!({})));
    let r = get(
        &s,
        CAP,
        &token("rsa", Algorithm::RS256, Some("rsa-1"), &claims("carol")),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        &s,
        CAP,
        &token("ed", Algorithm::EdDSA, Some("ed-1"), &claims("carol")),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = get(
        &s,
        CAP,
        &token("ec", Algorithm::ES256, Some("ec-1"), &claims("carol")),
    )
    .await;
    assert_eq!(r.status, 200, "a failed refresh keeps the previous keys");
}

/// Issue 17: a request dropped while its unknown `kid` refresh is in flight (a client that
/// disconnects) must not leave the refresh flag set, or no key rotation would ever be picked
/// up again.
#[tokio::test]
async fn a_request_dropped_mid_refresh_does_not_stop_later_refreshes() {
    let idp = Fake::start(|_: &_| Answer::json(200, &jwks_of(&["rsa-1"]))).await;
    let s = jwks_server(
        &[("CAPSIGN_SESSION_JWKS_MIN_REFRESH", "1ms")],
        &idp.url("/jwks"),
    )
    .await;
    let ec = token("ec", Algorithm::ES256, Some("ec-1"), &claims("carol"));
    let request = || {
        s.get(CAP)
            .header("authorization", format!("Bearer {ec}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // The provider is slow: the request that triggers the refresh is dropped mid-fetch.
    idp.answer(|_: &_| Answer {
        delay: std::time::Duration::from_secs(5),
        ..Answer::json(200, &jwks_of(&["rsa-1", "ec-1"]))
    });
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        capsign::http::handle(&s.app, request()),
    )
    .await;
    assert!(dropped.is_err(), "the request was meant to be cut off");
    for _ in 0..100 {
        if idp.seen().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(idp.seen().len(), 2, "the refresh had started");

    // The provider answers again: the new kid is fetched and accepted.
    idp.answer(|_: &_| Answer::json(200, &jwks_of(&["rsa-1", "ec-1"])));
    s.app.clock.advance(10);
    let r = s.send(request()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.seen().len(), 3, "a new fetch after the dropped one");
}

#[tokio::test]
async fn unknown_kids_cannot_make_capsign_hammer_the_provider() {
    let idp = Fake::start(|_: &_| Answer::json(200, &jwks_of(&["rsa-1"]))).await;
    let s = jwks_server(
        &[("CAPSIGN_SESSION_JWKS_MIN_REFRESH", "1h")],
        &idp.url("/jwks"),
    )
    .await;
    for i in 0..20 {
        let kid = format!("made-up-{i}");
        let r = get(
            &s,
            CAP,
            &token("rsa", Algorithm::RS256, Some(&kid), &claims("m")),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(idp.seen().len(), 1, "only the start-up fetch");
}

#[tokio::test]
async fn jwks_url_is_refreshed_in_the_background() {
    let idp = Fake::start(|_: &_| Answer::json(200, &jwks_of(&["rsa-1"]))).await;
    let s = jwks_server(
        &[("CAPSIGN_SESSION_JWKS_REFRESH", "10m")],
        &idp.url("/jwks"),
    )
    .await;
    s.app.clock.advance(11 * 60 * 1000);
    let long = json!({"sub": "carol", "exp": now() + 3600});
    let r = get(
        &s,
        CAP,
        &token("rsa", Algorithm::RS256, Some("rsa-1"), &long),
    )
    .await;
    assert_eq!(
        r.status, 200,
        "the request does not wait for the refresh: {}",
        r.body
    );
    for _ in 0..100 {
        if idp.seen().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(idp.seen().len(), 2);
}

#[tokio::test]
async fn an_unreachable_jwks_url_stops_the_start() {
    let mut vars = settings(&[]);
    vars.remove("CAPSIGN_SESSION_SECRET");
    vars.insert(
        "CAPSIGN_SESSION_JWKS".into(),
        "http://127.0.0.1:1/jwks".into(),
    );
    let app = crate::harness::load(&vars).unwrap();
    let err = app.prepare().await.unwrap_err().to_string();
    assert!(err.contains("CAPSIGN_SESSION_JWKS"), "{err}");
}

#[tokio::test]
async fn header_identity_from_a_trusted_proxy_only() {
    let header_server = |trusted: &str| {
        let mut vars = settings(&[
            ("CAPSIGN_IDENTITY", "header"),
            ("CAPSIGN_IDENTITY_HEADER", "X-Forwarded-User"),
            ("CAPSIGN_TRUSTED_PROXIES", trusted),
        ]);
        vars.remove("CAPSIGN_SESSION_SECRET");
        Server::start_with(vars)
    };
    let as_user = |s: &Server, user: &str| {
        s.get(CAP)
            .header("x-forwarded-user", user)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // The test client connects from 127.0.0.1.
    let trusted = header_server("10.0.0.0/8, 127.0.0.1").await;
    let r = trusted.send(as_user(&trusted, "dave")).await;
    assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#);
    let cookie = r.grant_cookie().unwrap();
    let r = trusted
        .send(
            trusted
                .get("/auth")
                .header("x-forwarded-user", "eve")
                .header("cookie", format!("__Host-capsign={cookie}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (403, 40160),
        "dave's cookie is not eve's"
    );

    let untrusted = header_server("10.0.0.0/8").await;
    let r = untrusted.send(as_user(&untrusted, "dave")).await;
    assert_eq!((r.status, r.error_code()), (401, 40101));

    let mut vars = settings(&[("CAPSIGN_IDENTITY", "header")]);
    vars.remove("CAPSIGN_SESSION_SECRET");
    let err = crate::harness::load(&vars).unwrap_err();
    assert!(err.to_string().contains("CAPSIGN_TRUSTED_PROXIES"), "{err}");
}
