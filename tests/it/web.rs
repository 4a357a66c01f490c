//! Web posture: cross-site requests that would change the cookie are refused; CORS is for an
//! exact allow-list only, with credentials and the headers ably-js needs exposed.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::harness::{Server, auth_request};

const CAP: &str = r#"{"chat:lobby":["subscribe"]}"#;
const APP: &str = "https://app.example.com";

async fn server() -> Server {
    Server::start(&[(
        "CAPSIGN_CORS_ORIGINS",
        "https://app.example.com, http://localhost:5173",
    )])
    .await
}

/// The usual request, with extra headers.
fn with_headers(s: &Server, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut req = auth_request(s, "alice", Some(CAP), None);
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    req
}

#[tokio::test]
async fn cross_site_fetch_metadata_is_refused_and_sets_no_cookie() {
    let s = server().await;
    for site in ["cross-site", "same-site"] {
        let r = s.send(with_headers(&s, &[("sec-fetch-site", site)])).await;
        assert_eq!(r.status, 403, "{site}");
        assert_eq!(r.error_code(), 40300);
        assert!(r.header("set-cookie").is_none(), "{site}");
        assert!(r.body.contains("CAPSIGN_CORS_ORIGINS"));
        assert!(r.header("access-control-allow-origin").is_none());
    }
}

#[tokio::test]
async fn same_origin_and_direct_requests_pass() {
    let s = server().await;
    for site in ["same-origin", "none"] {
        let r = s.send(with_headers(&s, &[("sec-fetch-site", site)])).await;
        assert_eq!(r.status, 200, "{site}");
        assert!(r.header("set-cookie").is_some());
    }
    // No Fetch Metadata: an Origin equal to the Host is same-origin.
    let origin = format!("http://{}", s.addr);
    let r = s.send(with_headers(&s, &[("origin", &origin)])).await;
    assert_eq!(r.status, 200);
    // Server-side clients send neither.
    let r = s.send(with_headers(&s, &[])).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn foreign_or_null_origin_is_refused_without_fetch_metadata() {
    let s = server().await;
    for origin in [
        "https://evil.example",
        "null",
        "https://app.example.com.evil.example",
    ] {
        let r = s.send(with_headers(&s, &[("origin", origin)])).await;
        assert_eq!(r.status, 403, "{origin}");
        assert_eq!(r.error_code(), 40300);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn listed_origin_gets_credentialed_cors_with_exposed_headers() {
    let s = server().await;
    let r = s
        .send(with_headers(
            &s,
            &[("origin", APP), ("sec-fetch-site", "cross-site")],
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let exposed = r.header("access-control-expose-headers").unwrap();
    for h in [
        "X-Ably-ErrorCode",
        "X-Ably-ErrorMessage",
        "X-Capsign-Grants",
        "X-Capsign-Denied",
        "X-Capsign-Partial",
    ] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    assert!(r.header("vary").unwrap().contains("Origin"));
    assert!(r.header("set-cookie").is_some());

    // Errors carry CORS too, so ably-js reads the code.
    let mut req = with_headers(&s, &[("origin", APP), ("sec-fetch-site", "cross-site")]);
    req.headers_mut().remove("authorization");
    let r = s.send(req).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn origin_matching_is_exact() {
    let s = server().await;
    for origin in [
        "https://app.example.com/",
        "https://app.example.com:443",
        "http://app.example.com",
    ] {
        let r = s
            .send(with_headers(
                &s,
                &[("origin", origin), ("sec-fetch-site", "cross-site")],
            ))
            .await;
        assert_eq!(r.status, 403, "{origin}");
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn preflight_only_for_listed_origins() {
    let s = server().await;
    let preflight = |origin: &str| {
        http::Request::options(format!("http://{}/auth", s.addr))
            .header("host", s.addr.to_string())
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = s.send(preflight(APP)).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase()
            .contains("authorization")
    );
    let r = s.send(preflight("https://evil.example")).await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], 40300);
}

#[tokio::test]
async fn without_an_allow_list_no_origin_gets_cors() {
    let s = Server::start(&[]).await;
    let r = s
        .send(with_headers(
            &s,
            &[("origin", APP), ("sec-fetch-site", "cross-site")],
        ))
        .await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn bad_cors_origins_stop_start_up() {
    for bad in [
        "*",
        "null",
        "app.example.com",
        "https://app.example.com/path",
        "ftp://x",
        "https://*.example.com",
    ] {
        let map = crate::harness::settings(&[("CAPSIGN_CORS_ORIGINS", bad)]);
        let err = crate::harness::load(&map).unwrap_err();
        assert!(
            err.to_string().contains("CAPSIGN_CORS_ORIGINS"),
            "{bad}: {err}"
        );
    }
}

/// Issue 16: a non-ASCII `Origin` (or `Sec-Fetch-Site`) was read as absent, so the
/// cross-site check let it through. It is foreign.
#[tokio::test]
async fn a_non_ascii_origin_is_foreign_not_absent() {
    let s = server().await;
    for name in ["origin", "sec-fetch-site"] {
        let mut req = auth_request(&s, "alice", Some(CAP), None);
        req.headers_mut().insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_bytes("https://ex\u{e4}mple.com".as_bytes()).unwrap(),
        );
        let r = s.send(req).await;
        assert_eq!(
            (r.status, r.error_code()),
            (403, 40300),
            "{name}: {}",
            r.body
        );
        assert!(r.header("set-cookie").is_none());
    }
}

/// Issue 16: an optional allow-list of `Host` values (DNS rebinding). Other hosts get 421;
/// the liveness check is exempt.
#[tokio::test]
async fn hosts_outside_the_allow_list_get_421() {
    let s = Server::start(&[("CAPSIGN_ALLOWED_HOSTS", "auth.example.com, localhost:3000")]).await;
    let with_host = |host: &str| {
        let mut req = auth_request(&s, "alice", Some(CAP), None);
        req.headers_mut().insert("host", host.parse().unwrap());
        req
    };
    for host in ["auth.example.com", "AUTH.example.com", "localhost:3000"] {
        let r = s.send(with_host(host)).await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
    for host in ["evil.example", "localhost:3001", "auth.example.com.evil"] {
        let r = s.send(with_host(host)).await;
        assert_eq!(
            (r.status, r.error_code()),
            (421, 40000),
            "{host}: {}",
            r.body
        );
    }
    let r = s
        .send(
            s.get("/healthz")
                .header("host", "10.0.0.7:3000")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
}
