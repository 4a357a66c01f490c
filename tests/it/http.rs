//! The real server on 127.0.0.1:0, spoken to over HTTP.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Server, auth_request, session, settings, temp_file, verify_ably_jwt};

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn incremental_grants_reach_the_policy_once() {
    let s = Server::start(&[("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0")]).await;
    let decided = || capsign::testing::decided_by_rules(&s.app);

    let a = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    assert_eq!(a.capability(), r#"{"chat:a":["subscribe"]}"#);
    assert_eq!(decided(), 1);

    // Ask for B only: the credential covers A and B, the policy saw B alone.
    let cookie = a.grant_cookie().unwrap();
    let b = s
        .send(auth_request(
            &s,
            "alice",
            Some(r#"{"doc:b":["publish"]}"#),
            Some(&cookie),
        ))
        .await;
    assert_eq!(
        b.capability(),
        r#"{"chat:a":["subscribe"],"doc:b":["publish"]}"#
    );
    assert_eq!(decided(), 2);

    // Renewal with no capability and asking for held grants again: no policy call at all.
    let cookie = b.grant_cookie().unwrap();
    let c = s.send(auth_request(&s, "alice", None, Some(&cookie))).await;
    assert_eq!(c.capability(), b.capability());
    let d = s
        .send(auth_request(
            &s,
            "alice",
            Some(r#"{"chat:a":["subscribe"],"doc:b":["publish"]}"#),
            Some(&cookie),
        ))
        .await;
    assert_eq!(d.capability(), b.capability());
    assert_eq!(decided(), 2);
    s.stop().await;
}

#[tokio::test]
async fn another_users_cookie_is_ignored() {
    let s = Server::start(&[]).await;
    let a = s
        .first_auth("alice", Some(r#"{"private:alice:x":["*"]}"#))
        .await;
    let alices = a.grant_cookie().unwrap();
    let b = s
        .send(auth_request(
            &s,
            "bob",
            Some(r#"{"chat:x":["subscribe"]}"#),
            Some(&alices),
        ))
        .await;
    assert_eq!(b.capability(), r#"{"chat:x":["subscribe"]}"#);
    // Bob's new cookie replaces Alice's; it does not carry her grant either.
    let claims = verify_ably_jwt(&b.body);
    assert_eq!(claims["x-ably-clientId"], "bob");
    s.stop().await;
}

#[tokio::test]
async fn tampered_truncated_and_foreign_cookies_are_ignored() {
    let s = Server::start(&[]).await;
    let a = s.first_auth("alice", Some(r#"{"chat:a":["*"]}"#)).await;
    let good = a.grant_cookie().unwrap();
    let mut flipped = good.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let header_value = a.header("x-capsign-grants").unwrap().to_owned();
    for bad in [
        flipped.as_str(),
        &good[..good.len() - 1],
        &good[..10],
        "",
        "garbage",
        &"A".repeat(5000),
        header_value.as_str(), // sealed for the header, presented as the cookie
    ] {
        let r = s
            .send(auth_request(
                &s,
                "alice",
                Some(r#"{"doc:z":["subscribe"]}"#),
                Some(bad),
            ))
            .await;
        assert_eq!(
            r.capability(),
            r#"{"doc:z":["subscribe"]}"#,
            "cookie {bad:?}"
        );
        assert!(r.grant_cookie().is_some(), "a fresh cookie replaces it");
    }
    s.stop().await;
}

#[tokio::test]
async fn grants_header_for_clients_without_a_cookie_jar() {
    let s = Server::start(&[]).await;
    let a = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    let sealed = a.header("x-capsign-grants").unwrap().to_owned();
    let mut req = auth_request(&s, "alice", Some(r#"{"chat:b":["subscribe"]}"#), None);
    req.headers_mut()
        .insert("x-capsign-grants", sealed.parse().unwrap());
    let b = s.send(req).await;
    assert_eq!(
        b.capability(),
        r#"{"chat:a":["subscribe"],"chat:b":["subscribe"]}"#
    );
    // The cookie's value does not open as a header.
    let mut req = auth_request(&s, "alice", None, None);
    req.headers_mut().insert(
        "x-capsign-grants",
        a.grant_cookie().unwrap().parse().unwrap(),
    );
    let c = s.send(req).await;
    assert_eq!(c.status, 403, "nothing held, nothing asked: {}", c.body);
    s.stop().await;
}

#[tokio::test]
async fn expired_cookie_starts_fresh_and_ageing_rechecks() {
    let s = Server::start(&[
        ("CAPSIGN_REGRANT_AFTER", "1h"),
        ("CAPSIGN_GRANT_MAX_AGE", "1d"),
        ("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let a = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    let cookie = a.grant_cookie().unwrap();
    let before = capsign::testing::decided_by_rules(&s.app);
    // Past regrant_after: the held grant goes back to the policy with the new one.
    s.app.clock.advance(2 * 3600 * 1000);
    let b = s
        .send(auth_request(
            &s,
            "alice",
            Some(r#"{"chat:b":["subscribe"]}"#),
            Some(&cookie),
        ))
        .await;
    assert_eq!(
        b.capability(),
        r#"{"chat:a":["subscribe"],"chat:b":["subscribe"]}"#
    );
    assert_eq!(capsign::testing::decided_by_rules(&s.app), before + 2);
    // A day later the old cookie has expired: only the new request counts.
    s.app.clock.advance(25 * 3600 * 1000);
    let c = s
        .send(auth_request(
            &s,
            "alice",
            Some(r#"{"chat:c":["subscribe"]}"#),
            Some(&cookie),
        ))
        .await;
    assert_eq!(c.capability(), r#"{"chat:c":["subscribe"]}"#);
    s.stop().await;
}

#[tokio::test]
async fn response_headers_and_cookie_attributes() {
    let s = Server::start(&[]).await;
    let r = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/jwt"));
    assert_eq!(r.header("cache-control"), Some("no-store, private"));
    assert_eq!(r.header("vary"), Some("Cookie, Authorization, Origin"));
    assert!(!r.body.ends_with('\n') && !r.body.starts_with('"'));
    let set_cookie = r.header("set-cookie").unwrap();
    for attr in [
        "__Host-capsign=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=86400",
    ] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    assert!(!set_cookie.contains("Domain"));
    let claims = verify_ably_jwt(&r.body);
    assert_eq!(claims["x-ably-clientId"], "alice");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    assert!(
        iat <= now && iat + 10 >= now,
        "iat back-dated a little, never ahead"
    );
    s.stop().await;
}

#[tokio::test]
async fn token_request_format_and_ttl_clamping() {
    let s = Server::start(&[("CAPSIGN_TTL_MIN", "1m"), ("CAPSIGN_TTL_MAX", "2h")]).await;
    let path = |q: &str| {
        format!(
            "/auth?format=tokenRequest&capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D{q}"
        )
    };
    let bearer = format!("Bearer {}", session("alice", Value::Null));
    for (q, ttl) in [
        ("", 3_600_000),
        ("&ttl=5000", 60_000),
        ("&ttl=600000", 600_000),
        ("&ttl=99999999999", 7_200_000),
    ] {
        let r = s
            .send(
                s.get(&path(q))
                    .header("authorization", &bearer)
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#);
        let tr: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(tr["ttl"], ttl, "{q}");
        assert_eq!(tr["clientId"], "alice");
        assert_eq!(tr["keyName"], "xVLyHw.mDYnFA");
        assert!(tr["nonce"].as_str().unwrap().len() >= 16);
    }
    s.stop().await;
}

#[tokio::test]
async fn post_bodies_form_and_json() {
    let s = Server::start(&[]).await;
    let bearer = format!("Bearer {}", session("alice", Value::Null));
    // ably-js POST: form body, %20 and + both decode, authUrl's own query kept but overridden.
    let form = "rnd=123&clientId=alice&ttl=600000&capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D&app=x%20y+z";
    let r = s
        .send(
            s.post("/auth?clientId=urlwins&format=tokenRequest")
                .header("authorization", &bearer)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#);
    // JSON body with the capability as an object, ttl as a number, python's client_id.
    let body = json!({"capability": {"chat:b": ["publish"]}, "ttl": 120000, "client_id": "alice", "extra": [1]});
    let r = s
        .send(
            s.post("/auth")
                .header("authorization", &bearer)
                .header("content-type", "application/json; charset=utf-8")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), r#"{"chat:b":["publish"]}"#);
    // clientId and client_id with the same value (as some SDKs and apps send through
    // authParams) are one parameter, in a query, a form and a JSON body.
    let r = s
        .send(status_get(
            &s,
            "clientId=alice&client_id=alice&capability=%7B%22chat%3Ac%22%3A%5B%22subscribe%22%5D%7D",
            true,
        ))
        .await;
    assert_eq!(r.capability(), r#"{"chat:c":["subscribe"]}"#);
    for (content_type, body) in [
        (
            "application/x-www-form-urlencoded",
            "client_id=alice&clientId=alice&capability=%7B%22chat%3Ad%22%3A%5B%22subscribe%22%5D%7D"
                .to_owned(),
        ),
        (
            "application/json",
            json!({"clientId": "alice", "client_id": "alice", "capability": {"chat:d": ["subscribe"]}})
                .to_string(),
        ),
    ] {
        let r = s
            .send(
                s.post("/auth")
                    .header("authorization", &bearer)
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.capability(), r#"{"chat:d":["subscribe"]}"#, "{content_type}");
    }
    // Different values name both.
    let r = s
        .send(status_get(&s, "clientId=alice&client_id=bob", true))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("clientId and client_id differ"),
        "{}",
        r.body
    );
    s.stop().await;
}

#[tokio::test]
async fn denied_grants_omit_mode() {
    let s = Server::start(&[]).await;
    let r = s
        .send(auth_request(
            &s,
            "alice",
            Some(
                r#"{"chat:a":["subscribe"],"admin,ops":["publish"],"private:bob:x":["subscribe"]}"#,
            ),
            None,
        ))
        .await;
    assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#);
    assert_eq!(
        r.header("x-capsign-denied"),
        Some("admin%2Cops,private:bob:x")
    );
    assert_eq!(r.header("x-capsign-partial"), None);
    // Granted fewer operations than asked: named in X-Capsign-Partial, not X-Capsign-Denied,
    // and the credential holds what was granted.
    let r = s
        .send(auth_request(
            &s,
            "alice",
            Some(r#"{"doc:p":["subscribe","history"],"admin":["publish"]}"#),
            None,
        ))
        .await;
    assert_eq!(r.capability(), r#"{"doc:p":["subscribe"]}"#);
    assert_eq!(r.header("x-capsign-partial"), Some("doc:p"));
    assert_eq!(r.header("x-capsign-denied"), Some("admin"));
    s.stop().await;
}

#[tokio::test]
async fn claims_reach_rule_templates() {
    let s = Server::start(&[]).await;
    let token = session("alice", json!({"team": "red"}));
    let r = s
        .send(
            s.get("/auth?capability=%7B%22team%3Ared%22%3A%5B%22subscribe%22%5D%7D")
                .header("authorization", format!("Bearer {token}"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), r#"{"team:red":["subscribe"]}"#);
    s.stop().await;
}

#[tokio::test]
async fn key_capability_intersection() {
    let s = Server::start(&[("CAPSIGN_KEY_CAPABILITY", r#"{"chat:*":["subscribe"]}"#)]).await;
    let r = s
        .first_auth(
            "alice",
            Some(r#"{"chat:a":["subscribe","publish"],"doc:1":["publish"]}"#),
        )
        .await;
    assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#);
    s.stop().await;
}

/// `GET /auth?{q}` on `srv`, with alice's session when `auth`.
fn status_get(srv: &Server, q: &str, auth: bool) -> http::Request<Full<Bytes>> {
    let mut b = srv.get(&format!("/auth?{q}"));
    if auth {
        b = b.header("authorization", alice_bearer());
    }
    b.body(empty()).unwrap()
}

fn alice_bearer() -> String {
    format!("Bearer {}", session("alice", Value::Null))
}

/// `POST /auth` on `srv` with alice's session, a content type and a body.
fn status_post(srv: &Server, content_type: &str, body: &'static str) -> http::Request<Full<Bytes>> {
    srv.post("/auth")
        .header("authorization", alice_bearer())
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Every error status of the endpoint table (docs/http.md), each with Ably's envelope, no-store, and no cookie
/// change: one named test per row, against a server with `CAPSIGN_DENY` as given.
macro_rules! error_statuses {
    ($($name:ident: deny $deny:literal, |$s:ident| $req:expr => $status:literal, $code:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let $s = Server::start(&[("CAPSIGN_DENY", $deny)]).await;
            let r = $s.send($req).await;
            assert_eq!(r.status, $status, "{}", r.body);
            assert_eq!(r.error_code(), $code, "{}", r.body);
            assert_eq!(r.header("cache-control"), Some("no-store, private"));
            assert!(r.header("set-cookie").is_none(), "errors leave the cookie alone");
            $s.stop().await;
        }
    )*};
}

error_statuses! {
    status_no_session: deny "omit", |s| status_get(&s, "", false) => 401, 40101;
    status_malformed_session: deny "omit", |s| s.get("/auth")
        .header("authorization", "Bearer not.a.jwt")
        .body(empty())
        .unwrap() => 401, 40101;
    status_wildcard_client_id_session: deny "omit", |s| s.get("/auth")
        .header("authorization", format!("Bearer {}", session("*", Value::Null)))
        .body(empty())
        .unwrap() => 401, 40101;
    status_unknown_operation: deny "omit",
        |s| status_get(&s, "capability=%7B%22a%22%3A%5B%22publish_%22%5D%7D", true) => 400, 40000;
    status_wildcard_operation_not_alone: deny "omit", |s| status_get(
        &s,
        "capability=%7B%22a%22%3A%5B%22*%22%2C%22publish%22%5D%7D",
        true,
    ) => 400, 40000;
    status_capability_not_json: deny "omit", |s| status_get(&s, "capability=not-json", true) => 400, 40000;
    status_ttl_not_a_number: deny "omit", |s| status_get(&s, "ttl=abc", true) => 400, 40003;
    status_ttl_negative: deny "omit", |s| status_get(&s, "ttl=-1", true) => 400, 40003;
    status_ttl_zero: deny "omit", |s| status_get(&s, "ttl=0", true) => 400, 40003;
    status_ttl_fraction: deny "omit", |s| status_get(&s, "ttl=1.5", true) => 400, 40003;
    status_unknown_format: deny "omit", |s| status_get(&s, "format=xml", true) => 400, 40000;
    status_ably_unreachable_for_format_token: deny "omit", |s| status_get(
        &s,
        "format=token&capability=%7B%22chat%3Aa%22%3A%5B%22publish%22%5D%7D",
        true,
    ) => 502, 50200;
    status_parameter_twice: deny "omit", |s| status_get(&s, "ttl=1&ttl=2", true) => 400, 40000;
    status_client_id_mismatch: deny "omit", |s| status_get(&s, "clientId=bob", true) => 403, 40102;
    status_client_id_snake_case_mismatch: deny "omit",
        |s| status_get(&s, "client_id=bob", true) => 403, 40102;
    status_client_id_and_client_id_differ: deny "omit",
        |s| status_get(&s, "clientId=alice&client_id=bob", true) => 400, 40000;
    status_client_id_twice: deny "omit",
        |s| status_get(&s, "clientId=alice&clientId=alice", true) => 400, 40000;
    status_client_id_control_character: deny "omit",
        |s| status_get(&s, "clientId=%01", true) => 400, 40012;
    status_nothing_granted_for_a_denied_channel: deny "omit", |s| status_get(
        &s,
        "capability=%7B%22admin%22%3A%5B%22publish%22%5D%7D",
        true,
    ) => 403, 40160;
    status_nothing_asked_nothing_held: deny "omit", |s| status_get(&s, "", true) => 403, 40160;
    status_denied_in_reject_mode: deny "reject", |s| status_get(
        &s,
        "capability=%7B%22chat%3Aa%22%3A%5B%22publish%22%5D%2C%22admin%22%3A%5B%22publish%22%5D%7D",
        true,
    ) => 403, 40160;
    status_unsupported_body_type: deny "omit", |s| status_post(&s, "text/plain", "x") => 415, 40000;
    status_json_body_not_an_object: deny "omit",
        |s| status_post(&s, "application/json", "[1]") => 400, 40000;
    status_json_body_malformed: deny "omit", |s| status_post(&s, "application/json", "{") => 400, 40000;
    status_body_over_the_limit: deny "omit", |s| s.post("/auth")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(vec![b'a'; 20_000])))
        .unwrap() => 413, 40000;
    status_no_such_endpoint: deny "omit", |s| s.get("/nope").body(empty()).unwrap() => 404, 40400;
    status_method_not_allowed: deny "omit", |s| http::Request::put(format!("http://{}/auth", s.addr))
        .body(empty())
        .unwrap() => 405, 40500;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let s = Server::listen(&[]).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut req = b"POST /auth HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'a'; 0x400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&req).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    s.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    // A short header timeout, so the test does not wait out the default 10 s.
    let s = Server::listen(&[("CAPSIGN_HEADER_TIMEOUT", "1s")]).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /auth HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    // The server must close (or answer 408) within its header timeout, not wait forever.
    let r = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await;
    assert!(r.is_ok(), "connection still open after 20 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off before the timeout"
    );
    s.stop().await;
}

#[tokio::test]
async fn cookie_overflow_reject_and_evict() {
    use sha2::Digest as _;
    // 250 channels named by hashes: incompressible, so they cannot fit in one cookie.
    let many: String = {
        let entries: Vec<String> = (0..250u32)
            .map(|i| {
                let h = sha2::Sha256::digest(i.to_be_bytes());
                let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
                format!("\"doc:{hex}\":[\"subscribe\"]")
            })
            .collect();
        format!("{{{}}}", entries.join(","))
    };
    let post = |s: &Server| {
        s.post("/auth")
            .header(
                "authorization",
                format!("Bearer {}", session("alice", Value::Null)),
            )
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({ "capability": many }).to_string(),
            )))
            .unwrap()
    };
    let s = Server::start(&[("CAPSIGN_MAX_NEW_GRANTS", "256")]).await;
    let r = s.send(post(&s)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("grant cookie full"), "{}", r.body);

    let s2 = Server::start(&[
        ("CAPSIGN_COOKIE_OVERFLOW", "evict"),
        ("CAPSIGN_MAX_NEW_GRANTS", "256"),
    ])
    .await;
    let r = s2.send(post(&s2)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let evicted = r.header("x-capsign-evicted").unwrap().split(',').count();
    let kept = serde_json::from_str::<Value>(&r.capability())
        .unwrap()
        .as_object()
        .unwrap()
        .len();
    assert_eq!(evicted + kept, 250);
    assert!(kept > 100, "only {kept} grants kept");
    assert!(r.header("set-cookie").unwrap().len() < 4096);
    s.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn too_many_new_grants_in_one_request() {
    let s = Server::start(&[("CAPSIGN_MAX_NEW_GRANTS", "3")]).await;
    let r = s
        .first_auth("alice", Some(r#"{"doc:1":["subscribe"],"doc:2":["subscribe"],"doc:3":["subscribe"],"doc:4":["subscribe"]}"#))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), 40000);
    s.stop().await;
}

#[tokio::test]
async fn cookie_key_rotation_keeps_grants() {
    const OLD: &str = crate::harness::COOKIE_KEY;
    const NEW: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let old = Server::start(&[("CAPSIGN_COOKIE_KEY", OLD)]).await;
    let a = old
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    let cookie = a.grant_cookie().unwrap();
    // Phase 2 of rotation: the new key signs, the old one still verifies.
    let both = Server::start(&[("CAPSIGN_COOKIE_KEY", &format!("2:{NEW},1:{OLD}"))]).await;
    let b = both
        .send(auth_request(&both, "alice", None, Some(&cookie)))
        .await;
    assert_eq!(b.capability(), r#"{"chat:a":["subscribe"]}"#);
    let resealed = b.grant_cookie().unwrap();
    // Phase 3: the old key is gone; cookies resealed in phase 2 still open.
    let new_only = Server::start(&[("CAPSIGN_COOKIE_KEY", &format!("2:{NEW}"))]).await;
    let c = new_only
        .send(auth_request(&new_only, "alice", None, Some(&resealed)))
        .await;
    assert_eq!(c.capability(), r#"{"chat:a":["subscribe"]}"#);
    let d = new_only
        .send(auth_request(&new_only, "alice", None, Some(&cookie)))
        .await;
    assert_eq!(
        d.status, 403,
        "a cookie only the retired key signed opens no more"
    );
    for s in [old, both, new_only] {
        s.stop().await;
    }
}

#[tokio::test]
async fn public_key_sessions() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keys");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        json!({"sub": "carol", "exp": now + 600, "iss": "https://idp.example", "aud": "capsign"});
    for (kind, alg) in [
        ("rsa", Algorithm::RS256),
        ("ec", Algorithm::ES256),
        ("ed", Algorithm::EdDSA),
    ] {
        let mut vars = settings(&[
            ("CAPSIGN_SESSION_ISSUER", "https://idp.example"),
            ("CAPSIGN_SESSION_AUDIENCE", "capsign"),
        ]);
        vars.remove("CAPSIGN_SESSION_SECRET");
        vars.insert(
            "CAPSIGN_SESSION_PUBLIC_KEY".into(),
            format!("{dir}/{kind}.pub"),
        );
        let s = Server::start_with(vars).await;
        let pem = std::fs::read(format!("{dir}/{kind}.key")).unwrap();
        let key = match kind {
            "rsa" => EncodingKey::from_rsa_pem(&pem),
            "ec" => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .unwrap();
        let good = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
        let r = s
            .send(
                s.get("/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D")
                    .header("authorization", format!("Bearer {good}"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#, "{kind}");
        // HS256 "signed" with the public key's bytes: the alg confusion attack.
        let public = std::fs::read(format!("{dir}/{kind}.pub")).unwrap();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        let wrong_aud = jsonwebtoken::encode(&Header::new(alg), &json!({"sub": "carol", "exp": now + 600, "iss": "https://idp.example", "aud": "other"}), &key).unwrap();
        for bad in [forged, wrong_aud] {
            let r = s
                .send(
                    s.get("/auth")
                        .header("authorization", format!("Bearer {bad}"))
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, 401, "{kind}");
            assert_eq!(r.error_code(), 40101);
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn session_from_a_named_cookie() {
    let s = Server::start(&[("CAPSIGN_SESSION_COOKIE", "app_session")]).await;
    let token = session("dave", Value::Null);
    let r = s
        .send(
            s.get("/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D")
                .header("cookie", format!("other=1; app_session={token}"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#);
    s.stop().await;
}

#[tokio::test]
async fn healthz_and_demo_pages_absent_in_production() {
    let s = Server::start(&[]).await;
    let r = s.send(s.get("/healthz").body(empty()).unwrap()).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = s.send(s.get("/").body(empty()).unwrap()).await;
    assert_eq!(r.status, 404);
    let r = s
        .send(
            s.post("/login")
                .body(Full::new(Bytes::from("user=x")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn rules_file_is_required_and_checked_in_production() {
    let mut vars = settings(&[]);
    vars.remove("CAPSIGN_RULES");
    let e = crate::harness::load(&vars).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_RULES");
    let bad = temp_file(
        "bad.toml",
        "[[rule]]\nresource = \"chat:{user}\"\nops = [\"publish\"]\n",
    );
    let vars = settings(&[("CAPSIGN_RULES", bad.to_str().unwrap())]);
    let e = crate::harness::load(&vars).unwrap_err();
    assert!(e.to_string().contains("rule 1"), "{e}");
}

/// Every `CAPSIGN_COOKIE_SAMESITE` value reaches the `Set-Cookie` (issue 16: the old unit test
/// set a variable the configuration never read, and tested `Lax` three times).
#[tokio::test]
async fn cross_site_cookie_setting() {
    for (setting, attribute) in [
        ("none", "SameSite=None"),
        ("strict", "SameSite=Strict"),
        ("lax", "SameSite=Lax"),
    ] {
        let s = Server::start(&[("CAPSIGN_COOKIE_SAMESITE", setting)]).await;
        let r = s
            .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
            .await;
        let set_cookie = r.header("set-cookie").unwrap();
        assert!(
            set_cookie.contains(attribute) && set_cookie.contains("Secure"),
            "{setting}: {set_cookie}"
        );
        s.stop().await;
    }
}
