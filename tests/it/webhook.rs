//! The policy webhook, grant ageing through it, `format=token` and the clock correction,
//! against the in-process fakes of `fakes.rs`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::fakes::{Answer, Fake, fake_ably, grant_all_but_secret};
use crate::harness::{Reply, Server, auth_request, session, settings, verify_ably_jwt};

const POLICY_SECRET: &str = "policy-secret-0123456789abcdef0123456789";

/// capsign with only a webhook (no rules file), plus `extra`.
async fn with_webhook(hook: &Fake, extra: &[(&str, &str)]) -> Server {
    let mut map = settings(extra);
    map.remove("CAPSIGN_RULES");
    map.insert("CAPSIGN_POLICY_URL".into(), hook.url("/decide"));
    Server::start_with(map).await
}

fn cap(resource: &str) -> String {
    format!(r#"{{"{resource}":["subscribe"]}}"#)
}

async fn ask(s: &Server, resource: &str, cookie: Option<&str>) -> Reply {
    s.send(auth_request(s, "alice", Some(&cap(resource)), cookie))
        .await
}

#[tokio::test]
async fn forty_channels_one_at_a_time_take_at_most_forty_calls_each_with_only_the_new_one() {
    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(&hook, &[]).await;
    let mut cookie: Option<String> = None;
    for i in 0..40 {
        let r = ask(&s, &format!("doc:{i}"), cookie.as_deref()).await;
        let held: Value = serde_json::from_str(&r.capability()).unwrap();
        assert_eq!(held.as_object().unwrap().len(), i + 1, "after {i}");
        cookie = r.grant_cookie();
    }
    let calls = hook.seen();
    assert!(calls.len() <= 40, "{} webhook calls", calls.len());
    for (i, call) in calls.iter().enumerate() {
        let body = call.json();
        assert_eq!(body["clientId"], "alice");
        assert_eq!(
            body["requested"],
            json!({ format!("doc:{i}"): ["subscribe"] }),
            "call {i} carries only what is new"
        );
    }
    assert_eq!(
        hook.connections(),
        1,
        "one pooled connection for all 40 calls"
    );
    // Nothing new: no call at all.
    let r = s
        .send(auth_request(&s, "alice", None, cookie.as_deref()))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(hook.seen().len(), calls.len());
}

#[tokio::test]
async fn rules_decide_what_they_match_and_the_rest_goes_to_the_webhook() {
    let hook = Fake::start(grant_all_but_secret).await;
    let s = Server::start(&[("CAPSIGN_POLICY_URL", &hook.url("/decide"))]).await;
    let r = s
        .first_auth(
            "alice",
            Some(r#"{"chat:a":["publish"],"billing:7":["subscribe"],"secret:x":["subscribe"]}"#),
        )
        .await;
    assert_eq!(
        r.capability(),
        r#"{"billing:7":["subscribe"],"chat:a":["publish"]}"#
    );
    assert_eq!(r.header("x-capsign-denied"), Some("secret:x"));
    let calls = hook.seen();
    assert_eq!(
        calls.len(),
        1,
        "one call for everything the rules did not match"
    );
    assert_eq!(
        calls[0].json()["requested"],
        json!({"billing:7": ["subscribe"], "secret:x": ["subscribe"]})
    );
}

#[tokio::test]
async fn calls_carry_claims_and_a_verifiable_signature() {
    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(&hook, &[("CAPSIGN_POLICY_SECRET", POLICY_SECRET)]).await;
    let req = s
        .get(&format!(
            "/auth?capability={}",
            percent_encoding::utf8_percent_encode(
                &cap("billing:1"),
                percent_encoding::NON_ALPHANUMERIC
            )
        ))
        .header(
            "authorization",
            format!("Bearer {}", session("alice", json!({"team": "red"}))),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(s.send(req).await.status, 200);
    let call = &hook.seen()[0];
    assert_eq!(call.json()["claims"]["team"], "red");
    let sig = call.headers["x-capsign-signature"].to_str().unwrap();
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(t.parse::<u64>().unwrap().abs_diff(now) < 60);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(POLICY_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&call.body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("signature over t.body");
}

#[tokio::test]
async fn extra_grants_from_the_webhook_are_dropped() {
    let hook = Fake::start(|_: &_| {
        Answer::json(
            200,
            &json!({"granted": {
                "billing:1": ["*"],
                "billing:*": ["*"],
                "admin": ["publish"],
            }}),
        )
    })
    .await;
    let s = with_webhook(&hook, &[]).await;
    let r = ask(&s, "billing:1", None).await;
    assert_eq!(r.capability(), r#"{"billing:1":["subscribe"]}"#);
}

#[tokio::test]
async fn a_403_from_the_webhook_means_none() {
    let hook = Fake::start(|_: &_| Answer::json(403, &json!({}))).await;
    let s = with_webhook(&hook, &[]).await;
    let r = ask(&s, "billing:1", None).await;
    assert_eq!((r.status, r.error_code()), (403, 40160));
}

#[tokio::test]
async fn a_failing_webhook_is_503_within_the_timeout_and_the_cookie_stays() {
    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(
        &hook,
        &[
            ("CAPSIGN_POLICY_TIMEOUT", "500ms"),
            ("CAPSIGN_POLICY_MAX_RESPONSE", "1024"),
        ],
    )
    .await;
    let held = ask(&s, "billing:1", None).await;
    assert_eq!(held.status, 200);
    let cookie = held.grant_cookie().unwrap();

    let failures: Vec<(&str, Answer)> = vec![
        (
            "slow",
            Answer {
                status: 200,
                body: b"{\"granted\":{}}".to_vec(),
                delay: Duration::from_secs(3),
                headers: Vec::new(),
            },
        ),
        (
            "garbage",
            Answer {
                status: 200,
                body: b"<html>oops".to_vec(),
                delay: Duration::ZERO,
                headers: Vec::new(),
            },
        ),
        ("wrong shape", Answer::json(200, &json!({"allowed": {}}))),
        (
            "bad capability",
            Answer::json(200, &json!({"granted": {"billing:2": ["teleport"]}})),
        ),
        ("500", Answer::json(500, &json!({}))),
        ("401", Answer::json(401, &json!({}))),
        (
            "oversized",
            Answer::json(200, &json!({"granted": {}, "pad": "x".repeat(5000)})),
        ),
    ];
    for (what, answer) in failures {
        hook.answer(move |_: &_| answer.clone());
        let started = Instant::now();
        let r = ask(&s, "billing:2", Some(&cookie)).await;
        assert_eq!((r.status, r.error_code()), (503, 50300), "{what}");
        assert!(
            r.header("set-cookie").is_none(),
            "{what}: the cookie is left as it was"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: took {:?}",
            started.elapsed()
        );
        // What the client holds still works without the webhook.
        let r = s.send(auth_request(&s, "alice", None, Some(&cookie))).await;
        assert_eq!(r.capability(), r#"{"billing:1":["subscribe"]}"#, "{what}");
    }

    // Pull the plug mid-run.
    hook.unplug();
    let r = ask(&s, "billing:3", Some(&cookie)).await;
    assert_eq!((r.status, r.error_code()), (503, 50300));
    let r = s.send(auth_request(&s, "alice", None, Some(&cookie))).await;
    assert_eq!(r.capability(), r#"{"billing:1":["subscribe"]}"#);
}

#[tokio::test]
async fn ageing_across_a_simulated_day() {
    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(
        &hook,
        &[
            ("CAPSIGN_REGRANT_AFTER", "1h"),
            ("CAPSIGN_GRANT_MAX_AGE", "24h"),
        ],
    )
    .await;
    let a = ask(&s, "billing:1", None).await;
    let cookie = a.grant_cookie().unwrap();

    // Two hours on: the old grant is re-checked in the same single call as the new one.
    s.app.clock.advance(2 * 3600 * 1000);
    let b = ask(&s, "billing:2", Some(&cookie)).await;
    assert_eq!(
        b.capability(),
        r#"{"billing:1":["subscribe"],"billing:2":["subscribe"]}"#
    );
    let calls = hook.seen();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].json()["requested"],
        json!({"billing:1": ["subscribe"], "billing:2": ["subscribe"]})
    );
    let cookie = b.grant_cookie().unwrap();

    // The app revokes billing:1; at the next re-check it is gone.
    hook.answer(|seen: &_| {
        let mut a = grant_all_but_secret(seen);
        let mut v: Value = serde_json::from_slice(&a.body).unwrap();
        v["granted"].as_object_mut().unwrap().remove("billing:1");
        a.body = v.to_string().into_bytes();
        a
    });
    s.app.clock.advance(2 * 3600 * 1000);
    let c = s.send(auth_request(&s, "alice", None, Some(&cookie))).await;
    assert_eq!(c.capability(), r#"{"billing:2":["subscribe"]}"#);
    let claims = verify_ably_jwt(&c.body);
    let cookie = c.grant_cookie().unwrap();

    // A minted credential never outlives its oldest grant's limit (approved 2 h ago, 24 h max).
    let now = s.app.clock.now_ms() / 1000;
    assert!(claims["exp"].as_u64().unwrap() <= now + 22 * 3600 + 5);

    // A day later, the cookie itself has expired: a fresh set, asked again.
    s.app.clock.advance(25 * 3600 * 1000);
    let before = hook.seen().len();
    let d = ask(&s, "billing:9", Some(&cookie)).await;
    assert_eq!(d.capability(), r#"{"billing:9":["subscribe"]}"#);
    assert_eq!(hook.seen().len(), before + 1);
}

/// Issue 16: past `CAPSIGN_REGRANT_AFTER`, every renewal used to become a 503 while the
/// webhook was down, though it asked for nothing new. Grants due for a re-check are now served
/// as they are until their maximum age; a request with new grants still gets the 503.
#[tokio::test]
async fn a_webhook_outage_keeps_due_grants_until_their_maximum_age() {
    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(
        &hook,
        &[
            ("CAPSIGN_REGRANT_AFTER", "1h"),
            ("CAPSIGN_GRANT_MAX_AGE", "24h"),
        ],
    )
    .await;
    let cookie = ask(&s, "billing:1", None).await.grant_cookie().unwrap();
    s.app.clock.advance(2 * 3600 * 1000);
    hook.unplug();

    // A renewal asking nothing new: served, the due grant kept with its old approval time.
    let r = s.send(auth_request(&s, "alice", None, Some(&cookie))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.capability(), r#"{"billing:1":["subscribe"]}"#);
    let claims = verify_ably_jwt(&r.body);
    let now = s.app.clock.now_ms() / 1000;
    assert!(
        claims["exp"].as_u64().unwrap() <= now + 22 * 3600 + 5,
        "never past its max age"
    );
    let cookie = r.grant_cookie().unwrap();

    // Something new needs the webhook: 503, the cookie left as it was.
    let r = ask(&s, "billing:2", Some(&cookie)).await;
    assert_eq!((r.status, r.error_code()), (503, 50300));

    // Past the maximum age the grant is gone, webhook or not.
    s.app.clock.advance(23 * 3600 * 1000);
    let r = s.send(auth_request(&s, "alice", None, Some(&cookie))).await;
    assert_eq!((r.status, r.error_code()), (403, 40160), "{}", r.body);
}

/// Issue 16: wildcards reached the webhook as if they were channel names (`*`, `[*]*`,
/// `doc:*`). With `CAPSIGN_POLICY_PATTERNS=deny` they are denied before it is asked; by
/// default they are asked, as docs/policy.md says.
#[tokio::test]
async fn patterns_can_be_kept_from_the_webhook() {
    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(&hook, &[("CAPSIGN_POLICY_PATTERNS", "deny")]).await;
    let r = s
        .first_auth("alice", Some(r#"{"*":["subscribe"],"[*]*":["subscribe"],"doc:*":["subscribe"],"doc:1":["subscribe"]}"#))
        .await;
    assert_eq!(r.capability(), r#"{"doc:1":["subscribe"]}"#, "{}", r.body);
    assert_eq!(r.header("x-capsign-denied"), Some("*,[*]*,doc:*"));
    let calls = hook.seen();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].json()["requested"],
        json!({"doc:1": ["subscribe"]})
    );

    // Issue 26: `news*` is one channel's name, not a pattern (a `*` widens only as a whole
    // segment): the webhook is asked about it, not refused unasked.
    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(&hook, &[("CAPSIGN_POLICY_PATTERNS", "deny")]).await;
    let r = ask(&s, "news*", None).await;
    assert_eq!(r.capability(), r#"{"news*":["subscribe"]}"#, "{}", r.body);
    assert_eq!(
        hook.seen()[0].json()["requested"],
        json!({"news*": ["subscribe"]})
    );

    let hook = Fake::start(grant_all_but_secret).await;
    let s = with_webhook(&hook, &[]).await;
    let r = ask(&s, "doc:*", None).await;
    assert_eq!(r.capability(), r#"{"doc:*":["subscribe"]}"#);
    assert_eq!(
        hook.seen()[0].json()["requested"],
        json!({"doc:*": ["subscribe"]})
    );
}

#[tokio::test]
async fn format_token_returns_ablys_token_details() {
    let ably = fake_ably(0).await;
    let s = Server::start(&[("CAPSIGN_ABLY_REST_URL", &ably.url(""))]).await;
    let r = s
        .first_auth("alice", Some(r#"{"chat:a":["publish"]}"#))
        .await;
    assert_eq!(r.status, 200);
    let req = s
        .get("/auth?format=token&capability=%7B%22chat%3Ab%22%3A%5B%22subscribe%22%5D%7D")
        .header(
            "authorization",
            format!("Bearer {}", session("alice", Value::Null)),
        )
        .header(
            "cookie",
            format!("__Host-capsign={}", r.grant_cookie().unwrap()),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = s.send(req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let details: Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        details["token"]
            .as_str()
            .unwrap()
            .starts_with("xVLyHw.fake-")
    );
    assert_eq!(details["clientId"], "alice");
    assert_eq!(
        details["capability"],
        r#"{"chat:a":["publish"],"chat:b":["subscribe"]}"#
    );
    assert!(r.grant_cookie().is_some());
    // Ably saw exactly one requestToken, for the right key.
    let calls = ably.seen();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/keys/xVLyHw%2EmDYnFA/requestToken");
}

#[tokio::test]
async fn ably_refusing_capsigns_token_request_is_502_not_a_session_error() {
    let ably = fake_ably(0).await;
    let s = Server::start(&[("CAPSIGN_ABLY_REST_URL", &ably.url(""))]).await;
    ably.answer(|_: &_| {
        Answer::json(
            401,
            &json!({"error": {"code": 40131, "statusCode": 401, "message": "Key revoked"}}),
        )
    });
    let token = |s: &Server| {
        s.get("/auth?format=token&capability=%7B%22chat%3Ab%22%3A%5B%22subscribe%22%5D%7D")
            .header(
                "authorization",
                format!("Bearer {}", session("alice", Value::Null)),
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // Ably's 401 is about capsign's key, not the user's session: a 502 that names it (a 401
    // would make ably-js refresh the session and retry, as if the user were logged out).
    let r = s.send(token(&s)).await;
    assert_eq!((r.status, r.error_code()), (502, 50200));
    assert!(r.body.contains("40131: Key revoked"), "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    ably.answer(|_: &_| {
        Answer::json(
            401,
            &json!({"error": {"code": 40101, "statusCode": 401, "message": "Invalid mac"}}),
        )
    });
    let r = s.send(token(&s)).await;
    assert_eq!((r.status, r.error_code()), (502, 50200));
    assert!(r.body.contains("40101: Invalid mac"), "{}", r.body);
    ably.answer(|_: &_| Answer::json(500, &json!({"error": {"code": 50000, "message": "boom"}})));
    let r = s.send(token(&s)).await;
    assert_eq!((r.status, r.error_code()), (502, 50200));
    ably.unplug();
    let r = s.send(token(&s)).await;
    assert_eq!((r.status, r.error_code()), (502, 50200));
}

#[tokio::test]
async fn clock_correction_from_ablys_time() {
    // This host's clock is 10 minutes behind Ably's.
    let ably = fake_ably(600_000).await;
    let uncorrected = Server::start(&[("CAPSIGN_ABLY_REST_URL", &ably.url(""))]).await;
    let token = |s: &Server| {
        s.get("/auth?format=token&capability=%7B%22chat%3Ab%22%3A%5B%22subscribe%22%5D%7D")
            .header(
                "authorization",
                format!("Bearer {}", session("alice", Value::Null)),
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = uncorrected.send(token(&uncorrected)).await;
    assert_eq!(
        (r.status, r.error_code()),
        (502, 50200),
        "Ably refuses the skewed timestamp: capsign's clock, a 502"
    );
    assert!(r.body.contains("40104"), "{}", r.body);

    let corrected = Server::start(&[
        ("CAPSIGN_ABLY_REST_URL", &ably.url("")),
        ("CAPSIGN_ABLY_TIME", "true"),
    ])
    .await;
    let r = corrected.send(token(&corrected)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let jwt = corrected
        .send(auth_request(
            &corrected,
            "alice",
            Some(&cap("chat:c")),
            None,
        ))
        .await;
    let iat = verify_ably_jwt(&jwt.body)["iat"].as_u64().unwrap();
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(iat.abs_diff(local + 600) < 30, "iat {iat} vs local {local}");
}
