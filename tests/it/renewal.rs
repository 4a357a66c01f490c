//! Renewals: a request that asks for nothing new gets no new `Set-Cookie` and no new
//! `X-Capsign-Grants` (the client keeps what it has), unless its value needs resealing; the
//! grants are sealed only for the carriers a client uses.

use bytes::Bytes;
use http_body_util::Full;

use crate::harness::{Reply, Server, auth_path, auth_request, session};

/// A browser's jar of the one grant cookie: it forgets the cookie at its `Max-Age`.
struct Jar {
    value: Option<String>,
    expires_ms: u64,
}

impl Jar {
    fn store(&mut self, reply: &Reply, now_ms: u64) {
        let Some(line) = reply.header("set-cookie") else {
            return;
        };
        let c = cookie::Cookie::parse(line.to_owned()).unwrap();
        let max_age = c.max_age().unwrap().whole_seconds();
        self.value = Some(c.value().to_owned());
        self.expires_ms = now_ms + u64::try_from(max_age).unwrap() * 1000;
    }

    fn value(&mut self, now_ms: u64) -> Option<String> {
        if now_ms >= self.expires_ms {
            self.value = None;
        }
        self.value.clone()
    }
}

/// Three grants, then a renewal every 10 minutes for two days against the server's clock,
/// with a jar that forgets the cookie at its `Max-Age`: every credential covers all three, and
/// most renewals set nothing.
async fn renew_for_two_days(extra: &[(&str, &str)]) -> (usize, usize) {
    let s = Server::start(extra).await;
    let mut jar = Jar {
        value: None,
        expires_ms: 0,
    };
    let all = r#"{"chat:a":["subscribe"],"chat:b":["subscribe"],"doc:c":["publish"]}"#;
    for cap in [
        r#"{"chat:a":["subscribe"]}"#,
        r#"{"chat:b":["subscribe"]}"#,
        r#"{"doc:c":["publish"]}"#,
    ] {
        let now = s.app.clock.now_ms();
        let cookie = jar.value(now);
        let r = s
            .send(auth_request(&s, "alice", Some(cap), cookie.as_deref()))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        jar.store(&r, now);
    }
    let (mut resealed, mut kept) = (0, 0);
    for step in 0..(2 * 24 * 6) {
        s.app.clock.advance(10 * 60 * 1000);
        let now = s.app.clock.now_ms();
        let cookie = jar.value(now);
        assert!(
            cookie.is_some(),
            "the cookie expired under an active client at step {step}"
        );
        // Half the renewals ask again for a grant already held, half for nothing.
        let cap = (step % 2 == 0).then_some(r#"{"chat:a":["subscribe"]}"#);
        let r = s
            .send(auth_request(&s, "alice", cap, cookie.as_deref()))
            .await;
        assert_eq!(r.capability(), all, "step {step}");
        assert_eq!(
            r.header("x-capsign-grants"),
            None,
            "a cookie client gets no header"
        );
        if r.header("set-cookie").is_some() {
            resealed += 1;
        } else {
            kept += 1;
        }
        jar.store(&r, now);
    }
    (resealed, kept)
}

#[tokio::test]
async fn a_day_of_renewals_keeps_every_grant_and_reseals_only_on_rechecks() {
    // Defaults: re-checked every hour (the re-check reseals), maximum age 24 h.
    let (resealed, kept) = renew_for_two_days(&[]).await;
    assert!(
        (46..=50).contains(&resealed),
        "resealed {resealed}, kept {kept}"
    );
    assert_eq!(resealed + kept, 288);
}

#[tokio::test]
async fn without_rechecks_the_cookie_is_resealed_at_half_its_maximum_age() {
    // Nothing is re-checked within the maximum age: only the half-age rule keeps the cookie
    // from reaching its Max-Age (the jar would forget it, and the grants with it).
    let (resealed, kept) = renew_for_two_days(&[
        ("CAPSIGN_REGRANT_AFTER", "24h"),
        ("CAPSIGN_GRANT_MAX_AGE", "24h"),
    ])
    .await;
    assert!(
        (3..=5).contains(&resealed),
        "resealed {resealed}, kept {kept}"
    );
}

fn grants_header(reply: &Reply) -> String {
    reply.header("x-capsign-grants").unwrap().to_owned()
}

/// Each kind of client gets back only what it uses: the cookie for a cookie client, the
/// header for a header client, both for a client that sent neither.
#[tokio::test]
async fn grants_are_sealed_only_for_the_carriers_a_client_uses() {
    let s = Server::start(&[]).await;
    let first = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    assert!(first.grant_cookie().is_some() && first.header("x-capsign-grants").is_some());

    // A header client: a new grant comes back in the header only.
    let bearer = format!("Bearer {}", session("alice", serde_json::Value::Null));
    let header_client = |grants: String, cap: Option<&str>| {
        s.get(&auth_path(cap))
            .header("authorization", &bearer)
            .header("x-capsign-grants", grants)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = s
        .send(header_client(
            grants_header(&first),
            Some(r#"{"doc:b":["publish"]}"#),
        ))
        .await;
    assert_eq!(
        r.capability(),
        r#"{"chat:a":["subscribe"],"doc:b":["publish"]}"#
    );
    assert_eq!(r.header("set-cookie"), None);
    let held = grants_header(&r);
    // Its renewal: nothing new, nothing sealed.
    let r = s.send(header_client(held.clone(), None)).await;
    assert_eq!(
        r.capability(),
        r#"{"chat:a":["subscribe"],"doc:b":["publish"]}"#
    );
    assert_eq!(
        (r.header("set-cookie"), r.header("x-capsign-grants")),
        (None, None)
    );

    // A cookie client: a new grant comes back in the cookie only; its renewal sets nothing.
    let cookie = first.grant_cookie().unwrap();
    let r = s
        .send(auth_request(
            &s,
            "alice",
            Some(r#"{"doc:c":["publish"]}"#),
            Some(&cookie),
        ))
        .await;
    assert_eq!(r.header("x-capsign-grants"), None);
    let cookie = r.grant_cookie().unwrap();
    let r = s.send(auth_request(&s, "alice", None, Some(&cookie))).await;
    assert_eq!(
        r.capability(),
        r#"{"chat:a":["subscribe"],"doc:c":["publish"]}"#
    );
    assert_eq!(
        (r.header("set-cookie"), r.header("x-capsign-grants")),
        (None, None)
    );

    // A value another key sealed is resealed even when nothing changed: a rotation finishes
    // for clients that only renew.
    let keys = format!(
        "2:MTIzNDU2Nzg5MGFiY2RlZjEyMzQ1Njc4OTBhYmNkZWY=,1:{}",
        crate::harness::COOKIE_KEY
    );
    let rotated = Server::start(&[("CAPSIGN_COOKIE_KEY", &keys)]).await;
    let r = rotated
        .send(auth_request(&rotated, "alice", None, Some(&cookie)))
        .await;
    assert_eq!(
        r.capability(),
        r#"{"chat:a":["subscribe"],"doc:c":["publish"]}"#
    );
    assert!(
        r.grant_cookie().is_some(),
        "an old key's cookie is resealed"
    );
    assert_eq!(r.header("x-capsign-grants"), None);
}
