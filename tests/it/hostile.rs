//! The hostile-input suite: each case a named test against the running server. Every one
//! must get the right 4xx with Ably's error envelope (or, for grant cookies, be ignored: a
//! fresh set, never an error the client sees), and never a 5xx, a hang or a panic. Cases
//! that hyper rejects before capsign sees a request (oversized or too many headers) get
//! hyper's bare 431, and the server stays up for everyone else.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Reply, Server, auth_request, session};

const CAP: &str = r#"{"chat:a":["subscribe"]}"#;

/// A raw HTTP exchange: writes `request`, reads until the server closes (the requests say
/// `Connection: close`), at most 25 s. Returns the status and the whole response text.
async fn raw(s: &Server, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(25), stream.read_to_end(&mut out))
        .await
        .expect("the server must answer or close, not hang")
        .expect("the answer must be readable (a reset loses it)");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The Ably error code in a raw response's envelope.
fn raw_code(text: &str) -> u64 {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("no envelope: {text}"));
    v["error"]["code"].as_u64().unwrap()
}

fn bearer(who: &str) -> String {
    format!("Bearer {}", session(who, Value::Null))
}

async fn with_cookie(s: &Server, cookie: &str) -> Reply {
    s.send(auth_request(s, "alice", Some(CAP), Some(cookie)))
        .await
}

/// The server still serves a normal request.
async fn still_serving(s: &Server) {
    let r = s.send(auth_request(s, "alice", Some(CAP), None)).await;
    assert_eq!(r.capability(), CAP);
}

/// A valid grant cookie of alice's holding `doc:held`.
async fn alices_cookie(s: &Server) -> String {
    s.send(auth_request(
        s,
        "alice",
        Some(r#"{"doc:held":["subscribe"]}"#),
        None,
    ))
    .await
    .grant_cookie()
    .unwrap()
}

/// A bad cookie is ignored: the answer covers the request alone, with a fresh cookie.
fn assert_fresh(r: &Reply, what: &str) {
    assert_eq!(r.capability(), CAP, "{what}");
    assert!(r.grant_cookie().is_some(), "{what}");
}

#[tokio::test]
async fn oversized_cookie_is_ignored() {
    let s = Server::listen(&[]).await;
    let r = with_cookie(&s, &"A".repeat(12_000)).await;
    assert_fresh(&r, "12 KB cookie");
}

#[tokio::test]
async fn truncated_and_padded_cookies_are_ignored() {
    let s = Server::listen(&[]).await;
    let good = alices_cookie(&s).await;
    for n in [0, 1, 4, 35, 36, good.len() / 2, good.len() - 1] {
        assert_fresh(&with_cookie(&s, &good[..n]).await, &format!("cut at {n}"));
    }
    for pad in ["=", "==", "A", "AAAA", "\"", "%3D", ".", "\\"] {
        let v = format!("{good}{pad}");
        assert_fresh(&with_cookie(&s, &v).await, &format!("padded with {pad:?}"));
    }
    let quoted = format!("\"{good}\"");
    let r = with_cookie(&s, &quoted).await;
    assert_eq!(r.status, 200, "a quoted cookie value never errors");
    // Standard base64 instead of base64url: from a cookie that has a `-` or `_` to turn into
    // `+` or `/` (about four in five do; the loop is bounded and must find one).
    let mut tried = 0;
    let with_url_chars = loop {
        tried += 1;
        assert!(tried <= 50, "no cookie with - or _ in 50 tries");
        let r = s
            .send(auth_request(
                &s,
                "alice",
                Some(&format!(r#"{{"doc:{tried}":["subscribe"]}}"#)),
                None,
            ))
            .await;
        let c = r.grant_cookie().unwrap();
        if c.contains(['-', '_']) {
            break c;
        }
    };
    let std = with_url_chars.replace('-', "+").replace('_', "/");
    assert_ne!(std, with_url_chars);
    assert_fresh(&with_cookie(&s, &std).await, "standard base64");
}

#[tokio::test]
async fn non_utf8_cookie_header_is_ignored() {
    let s = Server::listen(&[]).await;
    let mut req = b"GET /auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
    req.extend_from_slice(format!("authorization: {}\r\n", bearer("alice")).as_bytes());
    req.extend_from_slice(b"cookie: __Host-capsign=\xff\xfe\xc3(; other=\x80\r\n\r\n");
    let (status, text) = raw(&s, &req).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("set-cookie: __Host-capsign="), "{text}");
}

#[tokio::test]
async fn multibyte_character_at_every_split_point_is_ignored() {
    let s = Server::listen(&[]).await;
    let good = alices_cookie(&s).await;
    for (i, ch) in [(0usize, "é"), (1, "日"), (2, "🦀")]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
        .map(|(n, (_, c))| (n, c))
    {
        // Insert at several positions, including the ends.
        for at in [0, i + 1, good.len() / 2, good.len()] {
            let mut v = good.clone();
            v.insert_str(at, ch);
            let r = with_cookie(&s, &v).await;
            assert_fresh(&r, &format!("{ch:?} at {at}"));
        }
    }
    // A value long enough to reach the MAC check, whose body splits a multibyte clientId:
    // refused by the MAC, before any byte of it is decoded.
    let mut raw = vec![1u8, 1, 0, 0x80, 0x80, 0x04, 0x04];
    raw.extend_from_slice(&"\u{65e5}\u{672c}".as_bytes()[..4]);
    raw.extend_from_slice(&[0u8; 32]);
    let sealed = URL_SAFE_NO_PAD.encode(&raw);
    let now = s.app.clock.now_ms() / 1000;
    let limits = capsign::grants::OpenLimits {
        now,
        max_age: 86_400,
        future_skew: 60,
    };
    assert_eq!(
        s.app
            .flow
            .sealer
            .open(capsign::grants::Purpose::Cookie, &sealed, "alice", limits),
        Err(capsign::grants::GrantsError::Mac)
    );
    assert_fresh(&with_cookie(&s, &sealed).await, "split");
}

#[tokio::test]
async fn cookie_swapped_between_users_is_ignored() {
    let s = Server::listen(&[]).await;
    let alices = alices_cookie(&s).await;
    let r = s
        .send(auth_request(&s, "bob", Some(CAP), Some(&alices)))
        .await;
    assert_eq!(r.capability(), CAP, "bob gets nothing of alice's");
}

#[tokio::test]
async fn cookie_swapped_between_names_is_ignored() {
    let a = Server::listen(&[("CAPSIGN_COOKIE_NAME", "__Host-one")]).await;
    let b = Server::listen(&[("CAPSIGN_COOKIE_NAME", "__Host-two")]).await;
    let r = a
        .send(
            a.get("/auth?capability=%7B%22doc%3Aheld%22%3A%5B%22subscribe%22%5D%7D")
                .header("authorization", bearer("alice"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    let sealed = r
        .headers
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            let c = cookie::Cookie::parse(v.to_str().unwrap().to_owned()).unwrap();
            (c.name() == "__Host-one").then(|| c.value().to_owned())
        })
        .unwrap();
    let grants_header = r.header("x-capsign-grants").unwrap().to_owned();
    // The same key, another cookie name: the name is in the MAC.
    let r = b
        .send(
            b.get("/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D")
                .header("authorization", bearer("alice"))
                .header("cookie", format!("__Host-two={sealed}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), CAP);
    // A cookie value sent as the grants header, and the other way round.
    let r = a
        .send(
            a.get("/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D")
                .header("authorization", bearer("alice"))
                .header("x-capsign-grants", sealed.as_str())
                .header("cookie", format!("__Host-one={grants_header}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), CAP);
}

#[tokio::test]
async fn old_cookie_replayed_after_key_rotation_is_ignored() {
    const OLD: &str = crate::harness::COOKIE_KEY;
    const NEW: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let old = Server::listen(&[("CAPSIGN_COOKIE_KEY", OLD)]).await;
    let cookie = alices_cookie(&old).await;
    let new = Server::listen(&[("CAPSIGN_COOKIE_KEY", &format!("2:{NEW}"))]).await;
    assert_fresh(&with_cookie(&new, &cookie).await, "retired key");
    // Same key id, other secret: the MAC fails.
    let impostor = Server::listen(&[("CAPSIGN_COOKIE_KEY", &format!("1:{NEW}"))]).await;
    assert_fresh(&with_cookie(&impostor, &cookie).await, "same id, other key");
}

async fn capability_error(s: &Server, capability: &str) -> (u16, u64) {
    let body = json!({ "capability": capability }).to_string();
    let r = s
        .send(
            s.post("/auth")
                .header("authorization", bearer("alice"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
    (r.status, r.error_code())
}

#[tokio::test]
async fn deep_capability_json_is_400() {
    let s = Server::listen(&[("CAPSIGN_MAX_BODY", "65536")]).await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(capability_error(&s, &deep).await, (400, 40000));
    let deep_obj = format!("{}{}", r#"{"a":"#.repeat(3000), "}".repeat(3000));
    assert_eq!(capability_error(&s, &deep_obj).await, (400, 40000));
    // As a whole JSON body, too.
    let r = s
        .send(
            s.post("/auth")
                .header("authorization", bearer("alice"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(deep)))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (400, 40000));
}

#[tokio::test]
async fn huge_capability_is_400() {
    let s = Server::listen(&[("CAPSIGN_MAX_BODY", "262144")]).await;
    let many: serde_json::Map<String, Value> = (0..2000)
        .map(|i| (format!("doc:{i}"), json!(["subscribe"])))
        .collect();
    let (status, code) = capability_error(&s, &Value::Object(many).to_string()).await;
    assert_eq!((status, code), (400, 40000));
    let long = json!({ "a".repeat(600): ["subscribe"] }).to_string();
    assert_eq!(capability_error(&s, &long).await, (400, 40000));
    let many_ops = json!({ "chat:a": vec!["subscribe"; 5000] }).to_string();
    let (status, _) = capability_error(&s, &many_ops).await;
    assert_eq!(status, 400, "5000 repeated operations");
}

#[tokio::test]
async fn duplicated_unknown_and_mixed_wildcard_operations_are_400() {
    let s = Server::listen(&[]).await;
    for bad in [
        r#"{"chat:a":["subscribe"],"chat:a":["publish"]}"#,
        r#"{"chat:a":["subscribe","teleport"]}"#,
        r#"{"chat:a":["*","publish"]}"#,
        r#"{"chat:a":"subscribe"}"#,
        r#"{"chat:a":[1]}"#,
        r#"{"":["subscribe"]}"#,
        r#"{"[bogus]a":["subscribe"]}"#,
        r#"{"chat:a\u0000":["subscribe"]}"#,
        r#"["chat:a"]"#,
        r#"{"chat:a":["subscribe"]} trailing"#,
    ] {
        let (status, code) = capability_error(&s, bad).await;
        assert_eq!((status, code), (400, 40000), "{bad}");
    }
    still_serving(&s).await;
}

#[tokio::test]
async fn client_ids_with_control_characters_or_wildcards() {
    let s = Server::listen(&[]).await;
    // In the session: refused as an identity.
    for sub in ["ali\u{0}ce", "ali\nce", "*", "", "\u{7f}"] {
        let r = s
            .send(
                s.get("/auth")
                    .header("authorization", bearer(sub))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!((r.status, r.error_code()), (401, 40101), "{sub:?}");
    }
    // `:` and `*` inside a clientId never widen a {clientId} rule.
    for sub in ["a:*", "a*", "x:y"] {
        let r = s
            .first_auth(sub, Some(r#"{"private:a:*:z":["publish"]}"#))
            .await;
        assert_eq!((r.status, r.error_code()), (403, 40160), "{sub:?}");
    }
    // As a parameter: a clean 400 or a mismatch, never a 5xx.
    for (q, status, code) in [
        ("clientId=%00", 400, 40012),
        ("clientId=%E2%80%AE", 403, 40102),
        ("clientId=*", 400, 40012),
        ("client_id=alice%0A", 400, 40012),
    ] {
        let r = s
            .send(
                s.get(&format!("/auth?{q}"))
                    .header("authorization", bearer("alice"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!((r.status, r.error_code()), (status, code), "{q}");
    }
}

#[tokio::test]
async fn ttl_negative_huge_and_non_numeric() {
    let s = Server::listen(&[]).await;
    for ttl in [
        "-1",
        "-0",
        "abc",
        "1e3",
        "99999999999999999999999",
        "%00",
        "0x10",
        "",
    ] {
        let r = s
            .send(
                s.get(&format!(
                    "/auth?ttl={ttl}&capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D"
                ))
                .header("authorization", bearer("alice"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
            )
            .await;
        assert_eq!((r.status, r.error_code()), (400, 40003), "ttl={ttl:?}");
    }
    // Large but numeric: clamped to Ably's limit, not refused.
    let r = s
        .send(
            s.get("/auth?ttl=999999999999&capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D")
                .header("authorization", bearer("alice"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    let claims = crate::harness::verify_ably_jwt(&r.body);
    let life = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(life <= 86_400 + 5, "clamped to 24 h: {life}");
}

#[tokio::test]
async fn giant_header_gets_431_and_the_server_stays_up() {
    let s = Server::listen(&[]).await;
    let mut req = b"GET /auth HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let (status, text) = raw(&s, &req).await;
    assert_eq!(status, 431, "{text}");
    still_serving(&s).await;
}

#[tokio::test]
async fn header_flood_gets_431_and_the_server_stays_up() {
    let s = Server::listen(&[]).await;
    let mut req = b"GET /auth HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
    for i in 0..500 {
        req.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let (status, text) = raw(&s, &req).await;
    assert_eq!(status, 431, "{text}");
    still_serving(&s).await;
}

#[tokio::test]
async fn body_over_the_limit_with_and_without_content_length() {
    let s = Server::listen(&[]).await;
    // Declared too large: refused before reading.
    let req = b"POST /auth HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n{";
    let (status, text) = raw(&s, req).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(raw_code(&text), 40000);
    // Chunked, no length: cut off at the limit.
    let mut req = b"POST /auth HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..40 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b' '; 0x400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw(&s, &req).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(raw_code(&text), 40000);
    still_serving(&s).await;
}

#[tokio::test]
async fn slow_body_gets_408_within_the_body_timeout() {
    let s = Server::listen(&[("CAPSIGN_BODY_TIMEOUT", "1s")]).await;
    let started = Instant::now();
    let mut req = b"POST /auth HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 100\r\n".to_vec();
    req.extend_from_slice(format!("authorization: {}\r\n\r\n{{", bearer("alice")).as_bytes());
    let (status, text) = raw(&s, &req).await;
    assert_eq!(status, 408, "{text}");
    assert_eq!(raw_code(&text), 40000);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_others_are_served_meanwhile() {
    let s = Server::listen(&[("CAPSIGN_HEADER_TIMEOUT", "1s")]).await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /auth HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    still_serving(&s).await;
    let mut buf = [0u8; 512];
    let r = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut buf)).await;
    assert!(r.is_ok(), "a slow client's connection must be closed");
}

#[tokio::test]
async fn many_idle_connections_do_not_block_service() {
    let s = Server::listen(&[]).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let started = Instant::now();
    still_serving(&s).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request waited {:?} behind idle connections",
        started.elapsed()
    );
    drop(idle);
    still_serving(&s).await;
}

#[tokio::test]
async fn malformed_request_lines_get_4xx() {
    let s = Server::listen(&[]).await;
    for req in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /auth HTTP/9.9\r\nhost: x\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    ] {
        let (status, text) = raw(&s, req).await;
        // An answer, not a silently closed connection: a client must learn what was wrong.
        assert!(
            (400..500).contains(&status),
            "{:?} → {status} {text:?}",
            String::from_utf8_lossy(req)
        );
    }
    still_serving(&s).await;
}

/// A grant cookie of `n` grants `doc:<i>` for alice, sealed with the fixtures' cookie key and a
/// sealer that allows that many, as a deployment with a higher `CAPSIGN_MAX_GRANTS` (or a
/// forger with the key) would.
fn big_cookie(s: &Server, n: usize, prefix: &str) -> String {
    let sealer = s.app.flow.sealer.clone().with_max_grants(n);
    let now = s.app.clock.now_ms() / 1000;
    let mut grants = capsign::grants::GrantSet::new();
    for i in 0..n {
        let cap = format!(r#"{{"{prefix}{i:05}":["subscribe"]}}"#);
        grants.add(
            &capsign::capability::CapabilitySet::from_json(&cap).unwrap(),
            now,
        );
    }
    sealer
        .seal_grants(capsign::grants::Purpose::Cookie, "alice", now, &grants)
        .unwrap()
}

/// Issue 16 (2): the held set had no size limit, so one user's cookie of thousands of grants
/// (shared prefixes and deflate keep it small) made each request compare every requested
/// resource with every held grant. A set over `CAPSIGN_MAX_GRANTS` now does not open at all
/// (checked before any grant is decoded): the request starts from a fresh set.
#[tokio::test]
async fn a_held_set_over_the_grant_limit_does_not_open() {
    let s = Server::listen(&[("CAPSIGN_MAX_GRANTS", "100")]).await;
    let under = big_cookie(&s, 99, "doc:");
    let r = with_cookie(&s, &under).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.capability().contains("doc:00098"),
        "99 grants are held, and one more"
    );
    // One more than the limit: refused (overflow = reject), and the client keeps its cookie.
    let full = big_cookie(&s, 100, "doc:");
    let r = with_cookie(&s, &full).await;
    assert_eq!((r.status, r.error_code()), (400, 40000), "{}", r.body);
    assert!(r.body.contains("CAPSIGN_MAX_GRANTS"), "{}", r.body);
    let over = big_cookie(&s, 3000, "doc:");
    assert!(over.len() < 4096, "3000 grants in {} bytes", over.len());
    assert_fresh(&with_cookie(&s, &over).await, "a set over the limit");
}

/// Issue 16 (2): the number of requested resources is checked before any comparison with the
/// held set.
#[tokio::test]
async fn more_requested_resources_than_the_grant_limit_is_400() {
    let s = Server::listen(&[("CAPSIGN_MAX_GRANTS", "100")]).await;
    let held = big_cookie(&s, 100, "chat:");
    let many: serde_json::Map<String, Value> = (0..101)
        .map(|i| (format!("doc:{i}"), json!(["subscribe"])))
        .collect();
    let r = s
        .send(auth_request(
            &s,
            "alice",
            Some(&Value::Object(many).to_string()),
            Some(&held),
        ))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), 40000);
    assert!(r.body.contains("at most 100"), "{}", r.body);
    assert!(r.header("set-cookie").is_none());
}

/// Issue 16 (2): several grant cookies of the same name used to be opened and unioned, so a
/// client could multiply its held set. Only the first that opens counts; the rest are
/// ignored.
#[tokio::test]
async fn a_second_grant_cookie_of_the_same_name_is_ignored() {
    let s = Server::listen(&[]).await;
    let a = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await
        .grant_cookie()
        .unwrap();
    let b = s
        .first_auth("alice", Some(r#"{"chat:b":["subscribe"]}"#))
        .await
        .grant_cookie()
        .unwrap();
    let r = s
        .send(
            s.get("/auth")
                .header("authorization", bearer("alice"))
                .header("cookie", format!("__Host-capsign={a}; __Host-capsign={b}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#, "{}", r.body);
    // A first cookie that does not open is skipped for the next.
    let r = s
        .send(
            s.get("/auth")
                .header("authorization", bearer("alice"))
                .header(
                    "cookie",
                    format!("__Host-capsign=garbage; __Host-capsign={b}"),
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.capability(), r#"{"chat:b":["subscribe"]}"#, "{}", r.body);
}

/// Issue 16 (2): a full set of held patterns and a full set of requested resources: the
/// covering check is bounded by the limits (each held pattern is compared by its literal
/// prefix first, each held name found by binary search), and the answer is right.
#[tokio::test]
async fn covering_a_full_request_against_a_full_held_set() {
    let s = Server::listen(&[
        ("CAPSIGN_MAX_GRANTS", "256"),
        ("CAPSIGN_MAX_NEW_GRANTS", "256"),
        ("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let held = big_cookie(&s, 256, "chat:");
    let asked: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("chat:{i:05}"), json!(["subscribe"])))
        .collect();
    let r = s
        .send(auth_request(
            &s,
            "alice",
            Some(&Value::Object(asked).to_string()),
            Some(&held),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        capsign::testing::decided_by_rules(&s.app),
        0,
        "everything asked was held"
    );
}

/// `GET /healthz` on a fresh connection: its status, or 0 when the connection fails.
/// `GET /readyz`'s status: 503 while the connection is shed, 200 when served.
async fn health(s: &Server) -> u16 {
    let (status, _) = raw(
        s,
        b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    status
}

/// Issue 16 (5): there was no connection limit; enough open connections exhausted file
/// descriptors and every health check timed out. Past `CAPSIGN_MAX_CONNECTIONS` a new
/// connection gets a clean 503 envelope; when one closes, service resumes.
#[tokio::test]
async fn connections_over_the_limit_are_shed_with_503() {
    let s = Server::listen(&[
        ("CAPSIGN_MAX_CONNECTIONS", "3"),
        ("CAPSIGN_MAX_CONNECTIONS_PER_PEER", "3"),
        ("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(s.addr).await.unwrap());
    }
    // The accept loop has handed out the three slots.
    until_open(&s, 3).await;
    let (status, text) = raw(&s, b"GET /auth HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(raw_code(&text), 50300);
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    // Issue 27 (3): liveness still answers (a probe must not restart a busy instance);
    // readiness says 503, so a load balancer sends its traffic elsewhere.
    let (status, text) = raw(&s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!((status, text.ends_with("ok\n")), (200, true), "{text}");
    assert_eq!(health(&s).await, 503);
    // Operators see it: the shed connections are counted.
    assert!(
        s.app
            .metrics
            .encode()
            .contains("capsign_connections_shed_total{reason=\"max_connections\"} 3\n"),
        "{}",
        s.app.metrics.encode()
    );
    drop(held.pop());
    let mut served = 0;
    for _ in 0..50 {
        served = health(&s).await;
        if served == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, 200, "a freed slot serves again");
}

/// Waits until the server counts `n` open client connections (`capsign_connections_open`;
/// metrics on): the accept loop has taken, or closed, every connection so far. Polls for at
/// most 5 s.
async fn until_open(s: &Server, n: u64) {
    let want = format!("capsign_connections_open {n}\n");
    for _ in 0..250 {
        if s.app.metrics.encode().contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never {n} open connections:\n{}", s.app.metrics.encode());
}

/// A connection from `ip` (any 127.0.0.0/8 address reaches loopback on Linux).
async fn connect_from(s: &Server, ip: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(s.addr).await.unwrap()
}

/// The status line's code of a raw request on `stream`.
async fn status_on(mut stream: TcpStream, request: &[u8]) -> u16 {
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 27 (3): 1,000 idle connections from one address made every request 503. One peer
/// now gets at most `CAPSIGN_MAX_CONNECTIONS_PER_PEER` (by default half of
/// `CAPSIGN_MAX_CONNECTIONS`); others are still served; a trusted proxy is exempt.
#[tokio::test]
async fn one_peer_cannot_take_every_connection() {
    const READY: &[u8] = b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let s = Server::listen(&[
        ("CAPSIGN_MAX_CONNECTIONS", "8"),
        ("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let mut greedy = Vec::new();
    for _ in 0..4 {
        greedy.push(connect_from(&s, "127.0.0.2").await);
    }
    until_open(&s, 4).await;
    assert_eq!(
        status_on(connect_from(&s, "127.0.0.2").await, READY).await,
        503,
        "a fifth from the same peer"
    );
    for _ in 0..3 {
        let other = connect_from(&s, "127.0.0.3").await;
        assert_eq!(status_on(other, READY).await, 200, "another peer is served");
    }
    assert!(
        s.app
            .metrics
            .encode()
            .contains("capsign_connections_shed_total{reason=\"per_peer\"} 1\n")
    );
    // A freed connection frees the peer's place.
    drop(greedy.pop());
    let mut status = 0;
    for _ in 0..50 {
        status = status_on(connect_from(&s, "127.0.0.2").await, READY).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);

    // A load balancer listed as a trusted proxy carries everyone's connections.
    let s = Server::listen(&[
        ("CAPSIGN_MAX_CONNECTIONS", "8"),
        ("CAPSIGN_MAX_CONNECTIONS_PER_PEER", "2"),
        ("CAPSIGN_TRUSTED_PROXIES", "127.0.0.2/32"),
        ("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from(&s, "127.0.0.2").await);
    }
    until_open(&s, 5).await;
    assert_eq!(
        status_on(connect_from(&s, "127.0.0.2").await, READY).await,
        200
    );
    drop(held);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_from(&s, "127.0.0.4").await);
    }
    until_open(&s, 2).await;
    assert_eq!(
        status_on(connect_from(&s, "127.0.0.4").await, READY).await,
        503
    );
    drop(held);
}

/// Issue 16 (5): no write timeout: a client that pipelines requests and never reads the
/// answers held its connection for ever. With `CAPSIGN_WRITE_TIMEOUT`, the stalled connection
/// is closed, and (here, with a single connection slot) others are served again.
#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_by_the_write_timeout() {
    let s = Server::listen(&[
        ("CAPSIGN_MAX_CONNECTIONS", "1"),
        ("CAPSIGN_WRITE_TIMEOUT", "1s"),
    ])
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut greedy = socket.connect(s.addr).await.unwrap();
    // Pipelined requests whose answers (401 envelopes) are never read: a bounded writer that
    // stops when the server stops reading or closes.
    let writer = tokio::spawn(async move {
        let one = b"GET /auth HTTP/1.1\r\nhost: x\r\n\r\n".repeat(1000);
        for _ in 0..200 {
            let write = tokio::time::timeout(Duration::from_secs(5), greedy.write_all(&one));
            match write.await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        greedy
    });
    let mut status = 0;
    for _ in 0..100 {
        status = health(&s).await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503, "the greedy client holds the only slot");
    let started = Instant::now();
    let mut status = 0;
    while started.elapsed() < Duration::from_secs(20) {
        status = health(&s).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the stalled connection was never closed");
    drop(writer.await.unwrap());
}

/// Issue 16 (6): a body over the limit was answered before it was read and the connection
/// closed at once; a client still sending (Node's `fetch`) got a reset instead of the 413.
/// The rest of the body is now read and discarded (bounded), so the whole body goes out and
/// the 413 envelope is read.
#[tokio::test]
async fn a_refused_body_is_drained_so_the_client_reads_the_413() {
    let s = Server::listen(&[]).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    // Larger than what the kernel's socket buffers absorb on loopback here (2 MiB sometimes
    // is, 6 MiB is not), so an undrained body means a reset.
    let body = vec![b'a'; 6 * 1024 * 1024];
    let head = format!(
        "POST /auth HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         authorization: {}\r\ncontent-length: {}\r\n\r\n",
        bearer("alice"),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Like a client that sends the whole body before it reads: every byte must go through.
    let sent = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&body)).await;
    assert!(matches!(sent, Ok(Ok(()))), "the body was cut off: {sent:?}");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .expect("an answer, not a reset");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(raw_code(&text), 40000);
}

/// Issue 16: duplicate keys in a JSON body (or in a capability object inside one) were
/// last-wins, while the same duplicates in a query string were a 400. One rule everywhere.
#[tokio::test]
async fn duplicate_parameters_and_resources_are_400_in_every_form() {
    let s = Server::listen(&[]).await;
    let post = |body: &'static str| {
        s.post("/auth")
            .header("authorization", bearer("alice"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    for body in [
        r#"{"ttl":60000,"ttl":120000}"#,
        r#"{"capability":{"chat:a":["subscribe"]},"capability":{"chat:b":["subscribe"]}}"#,
        r#"{"capability":{"chat:a":["subscribe"],"chat:a":["publish"]}}"#,
        r#"{"capability":"{\"chat:a\":[\"subscribe\"],\"chat:a\":[\"publish\"]}"}"#,
        r#"{"format":"jwt","format":"jwt"}"#,
    ] {
        let r = s.send(post(body)).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, 40000),
            "{body}: {}",
            r.body
        );
    }
    let q = "/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%2C%22chat%3Aa%22%3A%5B%22publish%22%5D%7D";
    let r = s
        .send(
            s.get(q)
                .header("authorization", bearer("alice"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (400, 40000), "{}", r.body);
    // Unknown members, duplicated or not, are ignored as in a query string.
    let r = s
        .send(post(
            r#"{"capability":{"chat:a":["subscribe"]},"x":1,"x":2}"#,
        ))
        .await;
    assert_eq!(r.capability(), CAP);
}
