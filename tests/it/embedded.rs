//! `format=embedded`: the app's own JWT with the Ably credential in its `x-ably-token` header,
//! checked independently of capsign's code (plain HMAC over the parts).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use serde_json::Value;

use crate::fakes::fake_ably;
use crate::harness::{Server, auth_path, bearer_request, session, verify_ably_jwt};

const APP_SECRET: &str = "the-apps-own-secret-0123456789abcdef";

/// Verifies the outer JWT with the app's secret; returns its header and claims.
fn verify_outer(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
        .expect("the outer JWT verifies with the app's secret");
    let decode =
        |p: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    (decode(parts[0]), decode(parts[1]))
}

fn embedded_request(s: &Server, cap: &str, cookie: Option<&str>) -> http::Request<Full<Bytes>> {
    let path = format!("{}&format=embedded", auth_path(Some(cap)));
    bearer_request(s, &session("alice", Value::Null), &path, cookie)
}

#[tokio::test]
async fn an_ably_jwt_inside_the_apps_jwt_expiring_with_it() {
    let s = Server::start(&[
        ("CAPSIGN_EMBEDDED_SECRET", APP_SECRET),
        (
            "CAPSIGN_EMBEDDED_CLAIMS",
            r#"{"iss":"https://app.example.com","aud":"my-api"}"#,
        ),
    ])
    .await;
    let first = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    let r = s
        .send(embedded_request(
            &s,
            r#"{"doc:b":["publish"]}"#,
            first.grant_cookie().as_deref(),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/jwt"));
    let (header, claims) = verify_outer(&r.body);
    assert_eq!(header["alg"], "HS256");
    let inner = verify_ably_jwt(header["x-ably-token"].as_str().unwrap());
    assert_eq!(
        inner["x-ably-capability"],
        r#"{"chat:a":["subscribe"],"doc:b":["publish"]}"#
    );
    assert_eq!(inner["x-ably-clientId"], "alice");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], "https://app.example.com");
    assert_eq!(claims["aud"], "my-api");
    assert_eq!(
        claims["exp"], inner["exp"],
        "the outer JWT expires with the inner one"
    );
    assert!(claims["iat"].as_u64().unwrap() <= claims["exp"].as_u64().unwrap());
    assert_eq!(
        claims
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("x-ably-"))
            .count(),
        0
    );
    // The grants are kept as for any other format.
    assert!(r.grant_cookie().is_some());
}

#[tokio::test]
async fn a_native_ably_token_inside_when_configured() {
    let ably = fake_ably(0).await;
    let s = Server::start(&[
        ("CAPSIGN_EMBEDDED_SECRET", APP_SECRET),
        ("CAPSIGN_EMBEDDED_INNER", "token"),
        ("CAPSIGN_FORMAT", "embedded"),
        ("CAPSIGN_ABLY_REST_URL", &ably.url("")),
    ])
    .await;
    // CAPSIGN_FORMAT=embedded: no format parameter needed.
    let r = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (header, claims) = verify_outer(&r.body);
    let token = header["x-ably-token"].as_str().unwrap();
    assert!(token.starts_with("xVLyHw.fake-"), "{token}");
    assert_eq!(ably.seen().len(), 1, "one requestToken");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    // The fake Ably's token lives for the TokenRequest's ttl (1 h by default).
    assert!(
        exp > now + 3500 && exp <= now + 3600,
        "exp {exp}, now {now}"
    );
}

#[tokio::test]
async fn embedded_without_an_app_secret_is_a_400_or_a_start_up_error() {
    let s = Server::start(&[]).await;
    let r = s
        .send(embedded_request(&s, r#"{"chat:a":["subscribe"]}"#, None))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), 40000);
    assert!(r.body.contains("CAPSIGN_EMBEDDED_SECRET"), "{}", r.body);

    let map = crate::harness::settings(&[("CAPSIGN_FORMAT", "embedded")]);
    let e = crate::harness::load(&map).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_FORMAT");
    for (claims, why) in [
        (r#"{"exp":1}"#, "exp is set by capsign"),
        (r#"{"x-ably-capability":"{}"}"#, "x-ably-"),
        ("[1]", "JSON object"),
    ] {
        let map = crate::harness::settings(&[
            ("CAPSIGN_EMBEDDED_SECRET", APP_SECRET),
            ("CAPSIGN_EMBEDDED_CLAIMS", claims),
        ]);
        let e = crate::harness::load(&map).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_EMBEDDED_CLAIMS");
        assert!(e.to_string().contains(why), "{e}");
    }
}
