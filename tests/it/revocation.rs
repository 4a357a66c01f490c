//! The revocation list (`CAPSIGN_REVOCATIONS`): a listed client's grants approved before the
//! entry leave the held set as its cookie opens, the policy is asked about them again, the
//! rest is kept; a group by revocation key; read from a file and from a URL (`ETag`,
//! `If-None-Match`), refreshed in the request on a frozen runtime; a list that stops
//! refreshing turns every held grant into a re-check.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::fakes::{Answer, Fake, Seen};
use crate::harness::{
    Reply, Server, auth_path, bearer_request, session, settings, verify_ably_jwt,
};

/// A webhook that grants what it is asked, except `room:1` once `deny_room_1` is set; every
/// call's asked resources are recorded.
async fn room_webhook() -> (Fake, Arc<std::sync::atomic::AtomicBool>) {
    let deny = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = Arc::clone(&deny);
    let hook = Fake::start(move |seen: &Seen| {
        let asked = seen.json()["requested"].as_object().unwrap().clone();
        let granted: serde_json::Map<String, Value> = asked
            .into_iter()
            .filter(|(r, _)| !(r == "room:1" && d.load(std::sync::atomic::Ordering::Relaxed)))
            .collect();
        Answer::json(200, &json!({ "granted": granted }))
    })
    .await;
    (hook, deny)
}

/// The resources each webhook call asked about, in order.
fn asked(hook: &Fake) -> Vec<Vec<String>> {
    hook.seen()
        .iter()
        .map(|s| {
            let mut r: Vec<String> = s.json()["requested"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            r.sort();
            r
        })
        .collect()
}

fn list(entries: &Value) -> String {
    json!({ "revocations": entries }).to_string()
}

/// `/auth` for the session `jwt` asking `capability`, with the grant cookie `cookie`.
async fn auth(s: &Server, jwt: &str, capability: &str, cookie: Option<&str>) -> Reply {
    s.send(bearer_request(s, jwt, &auth_path(Some(capability)), cookie))
        .await
}

/// The capability keys of a JWT reply.
fn channels(r: &Reply) -> Vec<String> {
    let cap: Value = serde_json::from_str(&r.capability()).unwrap();
    cap.as_object().unwrap().keys().cloned().collect()
}

/// Acquires `room:1`, `room:2` and `chat:a` for `jwt`, one by one; returns the cookie.
async fn acquire_three(s: &Server, jwt: &str) -> String {
    let mut cookie: Option<String> = None;
    for cap in [
        r#"{"room:1":["publish"]}"#,
        r#"{"room:2":["publish"]}"#,
        r#"{"chat:a":["subscribe"]}"#,
    ] {
        let r = auth(s, jwt, cap, cookie.as_deref()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        cookie = r.grant_cookie().or(cookie);
    }
    cookie.unwrap()
}

fn now_ms(s: &Server) -> u64 {
    s.app.clock.now_ms()
}

/// A server with the room webhook and an empty list file, plus `extra`: the server, the
/// webhook, its deny switch and the list's path.
async fn with_list_file(
    extra: &[(&str, &str)],
) -> (
    Server,
    Fake,
    Arc<std::sync::atomic::AtomicBool>,
    std::path::PathBuf,
) {
    let (hook, deny) = room_webhook().await;
    let path = crate::harness::temp_file("revocations.json", &list(&json!([])));
    let url = hook.url("/decide");
    let mut all = vec![
        ("CAPSIGN_POLICY_URL", url.as_str()),
        ("CAPSIGN_REVOCATIONS", path.to_str().unwrap()),
    ];
    all.extend_from_slice(extra);
    (Server::start(&all).await, hook, deny, path)
}

/// Writes `entries` as the list file at `path`, moves the clock a second on and reads it, as
/// the next refresh would.
async fn publish(s: &Server, path: &std::path::Path, entries: &Value) {
    std::fs::write(path, list(entries)).unwrap();
    s.app.clock.advance(1000);
    let revocations = s.app.flow.revocations.as_ref().unwrap();
    let read = revocations.refresh(now_ms(s)).await.unwrap();
    assert!(matches!(read, capsign::revocation::Refreshed::Loaded(_)));
}

#[tokio::test]
async fn a_listed_client_loses_the_revoked_resource_and_keeps_the_rest() {
    let (s, hook, deny, path) = with_list_file(&[("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0")]).await;
    let alice = session("alice", Value::Null);
    let cookie = acquire_three(&s, &alice).await;
    assert_eq!(asked(&hook), [vec!["room:1"], vec!["room:2"]]);
    let carol = session("carol", Value::Null);
    let carol_cookie = acquire_three(&s, &carol).await;

    // The operator revokes room:* for alice (and all of bob's grants); the webhook now denies
    // room:1. The list is read again (as each refresh interval does).
    deny.store(true, std::sync::atomic::Ordering::Relaxed);
    let before = now_ms(&s) + 1;
    let entries = json!([
        {"clientId": "alice", "before": before, "resources": ["room:*"]},
        {"clientId": "bob", "before": before},
    ]);
    publish(&s, &path, &entries).await;
    assert_eq!(s.app.flow.revocations.as_ref().unwrap().current().len(), 2);

    // Renewing with the old cookie: room:1 and room:2 are asked again (room:1 denied), chat:a
    // (a rule's grant, not listed) is kept without asking.
    let r = auth(&s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(channels(&r), ["chat:a", "room:2"]);
    assert_eq!(asked(&hook).last().unwrap(), &vec!["room:1", "room:2"]);
    let resealed = r.grant_cookie().expect("the set changed: a new cookie");

    // The new cookie holds room:2 approved after the entry: nothing is asked again.
    let calls = hook.seen().len();
    let r = auth(&s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&resealed)).await;
    assert_eq!(channels(&r), ["chat:a", "room:2"]);
    assert_eq!(hook.seen().len(), calls);
    assert!(r.grant_cookie().is_none(), "a plain renewal sets nothing");

    // Asking for room:1 again goes to the webhook, which denies it.
    let r = auth(&s, &alice, r#"{"room:1":["publish"]}"#, Some(&resealed)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-capsign-denied"), Some("room:1"));
    assert_eq!(channels(&r), ["chat:a", "room:2"]);

    // Another client is untouched by alice's entry.
    let calls = hook.seen().len();
    let r = auth(
        &s,
        &carol,
        r#"{"chat:a":["subscribe"]}"#,
        Some(&carol_cookie),
    )
    .await;
    assert_eq!(channels(&r), ["chat:a", "room:1", "room:2"]);
    assert_eq!(hook.seen().len(), calls, "carol is asked nothing again");

    let text = s.app.metrics.encode();
    assert!(text.contains("capsign_grants_revoked_total 2"), "{text}");
    assert!(text.contains("capsign_revocation_list_entries 2"), "{text}");
    assert!(
        text.contains("capsign_revocation_list_reads_total{result=\"ok\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_whole_client_entry_asks_everything_again_and_the_jwt_is_not_issued_before_it() {
    let (s, hook, _, path) = with_list_file(&[]).await;
    let alice = session("alice", Value::Null);
    let cookie = acquire_three(&s, &alice).await;
    // Revoked at Ably and in the list now: a credential minted now must not carry an `iat`
    // before the revocation (capsign back-dates `iat` by a few seconds otherwise), or Ably
    // would refuse it as revoked too.
    let before = now_ms(&s) + 500;
    publish(&s, &path, &json!([{"clientId": "alice", "before": before}])).await;
    let r = auth(&s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
    assert_eq!(channels(&r), ["chat:a", "room:1", "room:2"]);
    let claims = verify_ably_jwt(&r.body);
    assert!(
        claims["iat"].as_u64().unwrap() * 1000 >= before,
        "iat {} before the revocation {before}",
        claims["iat"]
    );
    // Rules' grants are asked again too (and granted by the rules), the webhook's by it.
    assert_eq!(asked(&hook).last().unwrap(), &vec!["room:1", "room:2"]);
}

#[tokio::test]
async fn a_revocation_key_reaches_every_user_of_the_group() {
    let (s, hook, _, path) =
        with_list_file(&[("CAPSIGN_REVOCATION_KEY", "org:{claims.org}")]).await;
    let users = [
        ("alice", session("alice", json!({"org": "acme"}))),
        ("bob", session("bob", json!({"org": "acme"}))),
        ("carol", session("carol", json!({"org": "globex"}))),
        ("dave", session("dave", Value::Null)),
    ];
    let mut cookies = HashMap::new();
    for (name, jwt) in &users {
        cookies.insert(*name, acquire_three(&s, jwt).await);
    }
    // The minted JWTs carry the key Ably revokes by (none without the claim).
    let r = auth(
        &s,
        &users[0].1,
        r#"{"chat:a":["subscribe"]}"#,
        Some(&cookies["alice"]),
    )
    .await;
    assert_eq!(
        verify_ably_jwt(&r.body)["x-ably-revocation-key"],
        "org:acme"
    );
    let r = auth(
        &s,
        &users[3].1,
        r#"{"chat:a":["subscribe"]}"#,
        Some(&cookies["dave"]),
    )
    .await;
    assert!(
        verify_ably_jwt(&r.body)
            .get("x-ably-revocation-key")
            .is_none()
    );

    let before = now_ms(&s) + 1;
    let entries = json!([{"revocationKey": "org:acme", "before": before, "resources": ["room:2"]}]);
    publish(&s, &path, &entries).await;
    for (name, jwt) in &users {
        let calls = hook.seen().len();
        let r = auth(&s, jwt, r#"{"chat:a":["subscribe"]}"#, Some(&cookies[name])).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let in_group = matches!(*name, "alice" | "bob");
        assert_eq!(
            hook.seen().len() - calls,
            usize::from(in_group),
            "{name}: room:2 asked again only in the group"
        );
        if in_group {
            assert_eq!(asked(&hook).last().unwrap(), &vec!["room:2"]);
        }
    }
}

/// An app on a runtime frozen between requests (Lambda's platform): a due refresh runs in the
/// request that finds it due.
async fn frozen(extra: &[(&str, &str)]) -> Server {
    let map = settings(extra);
    let settings = capsign::settings::Settings::load(&|k| map.get(k).cloned(), None).unwrap();
    let app =
        capsign::app::App::build(settings, capsign::native::frozen_between_requests()).unwrap();
    Server::from_app(Arc::new(app)).await
}

#[tokio::test]
async fn a_list_url_is_read_with_its_etag_and_each_instance_honours_a_change() {
    let (hook, deny) = room_webhook().await;
    let doc = Arc::new(std::sync::Mutex::new((list(&json!([])), 1)));
    let d = Arc::clone(&doc);
    let lists = Fake::start(move |seen: &Seen| {
        let (body, version) = d.lock().unwrap().clone();
        let etag = format!("\"v{version}\"");
        let matches = seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v.to_str().unwrap() == etag);
        if matches {
            return Answer {
                body: Vec::new(),
                ..Answer::json(304, &Value::Null)
            };
        }
        Answer {
            body: body.into_bytes(),
            ..Answer::json(200, &Value::Null)
        }
        .with_header("etag", etag)
    })
    .await;
    let extra = [
        ("CAPSIGN_POLICY_URL", hook.url("/decide")),
        ("CAPSIGN_REVOCATIONS", lists.url("/revocations.json")),
        ("CAPSIGN_REVOCATIONS_REFRESH", "1s".to_owned()),
    ];
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Two instances: one refreshing in the background (a server), one in the request (Lambda).
    let fleet = [Server::start(&extra).await, frozen(&extra).await];
    let alice = session("alice", Value::Null);
    let cookie = acquire_three(&fleet[0], &alice).await;
    assert_eq!(
        lists.seen().len(),
        2,
        "each instance read the list at start-up"
    );

    // Unchanged: the next reads send If-None-Match and get 304.
    for s in &fleet {
        s.app.clock.advance(1500);
        let asked_at = now_ms(s);
        let r = auth(s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
        assert_eq!(channels(&r), ["chat:a", "room:1", "room:2"]);
        let revocations = s.app.flow.revocations.as_ref().unwrap();
        wait_for(|| revocations.loaded_at_ms() >= Some(asked_at)).await;
    }
    assert_eq!(lists.seen().len(), 4);
    assert!(
        lists.seen()[2..]
            .iter()
            .all(|s| s.headers.get("if-none-match").is_some()),
        "refreshes are conditional"
    );

    // The list changes: within one refresh interval, both instances drop room:1.
    deny.store(true, std::sync::atomic::Ordering::Relaxed);
    let before = fleet[0].app.clock.now_ms().max(fleet[1].app.clock.now_ms()) + 1;
    *doc.lock().unwrap() = (
        list(&json!([{"clientId": "alice", "before": before, "resources": ["room:1"]}])),
        2,
    );
    for s in &fleet {
        s.app.clock.advance(1500);
        let revocations = s.app.flow.revocations.as_ref().unwrap();
        // The request that finds the list due reads it (frozen), or starts the read (server).
        let _ = auth(s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
        wait_for(|| revocations.current().len() == 1).await;
        let r = auth(s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
        assert_eq!(channels(&r), ["chat:a", "room:2"]);
    }
}

#[tokio::test]
async fn a_list_that_stops_refreshing_keeps_its_entries_then_turns_every_grant_into_a_recheck() {
    let (hook, _) = room_webhook().await;
    let lists = Fake::start(|_: &Seen| Answer {
        body: list(&json!([])).into_bytes(),
        ..Answer::json(200, &Value::Null)
    })
    .await;
    let s = frozen(&[
        ("CAPSIGN_POLICY_URL", &hook.url("/decide")),
        ("CAPSIGN_REVOCATIONS", &lists.url("/r.json")),
        ("CAPSIGN_REVOCATIONS_REFRESH", "10s"),
        ("CAPSIGN_REVOCATIONS_MAX_STALE", "1m"),
    ])
    .await;
    let alice = session("alice", Value::Null);
    let cookie = acquire_three(&s, &alice).await;
    // The list's host fails: the last list is kept, nothing changes for a minute.
    lists.answer(|_: &Seen| Answer::json(503, &json!({"error": "down"})));
    let calls = hook.seen().len();
    for _ in 0..5 {
        s.app.clock.advance(11_000);
        let r = auth(&s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
        assert_eq!(channels(&r), ["chat:a", "room:1", "room:2"]);
    }
    assert_eq!(
        hook.seen().len(),
        calls,
        "nothing re-checked while fresh enough"
    );
    let revocations = s.app.flow.revocations.as_ref().unwrap();
    assert!(!revocations.is_stale(now_ms(&s)));
    // Past the staleness limit: every held grant goes to the policy on every request.
    s.app.clock.advance(11_000);
    assert!(revocations.is_stale(now_ms(&s)));
    for _ in 0..2 {
        let r = auth(&s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(asked(&hook).last().unwrap(), &vec!["room:1", "room:2"]);
    }
    // The host is back: the next due read ends the staleness.
    lists.answer(|_: &Seen| Answer {
        body: list(&json!([])).into_bytes(),
        ..Answer::json(200, &Value::Null)
    });
    s.app.clock.advance(11_000);
    let _ = auth(&s, &alice, r#"{"chat:a":["subscribe"]}"#, Some(&cookie)).await;
    assert!(!revocations.is_stale(now_ms(&s)));
}

#[tokio::test]
async fn an_instance_is_not_ready_before_its_first_read_and_a_bad_file_stops_the_start() {
    let lists = Fake::start(|_: &Seen| Answer::json(200, &json!({"revocations": "no"}))).await;
    let map = settings(&[("CAPSIGN_REVOCATIONS", &lists.url("/r.json"))]);
    let app = crate::harness::load(&map).unwrap();
    let e = app.prepare().await.unwrap_err();
    assert_eq!(e.setting(), "CAPSIGN_REVOCATIONS");
    assert!(e.to_string().contains("not a revocation list"), "{e}");
    assert_eq!(app.readiness(), capsign::app::Readiness::Starting);

    let path = crate::harness::temp_file(
        "revocations.json",
        r#"{"revocations":[{"clientId":"a","revocationKey":"b","before":1}]}"#,
    );
    let e = crate::harness::load(&settings(&[(
        "CAPSIGN_REVOCATIONS",
        path.to_str().unwrap(),
    )]))
    .unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_REVOCATIONS");
    assert!(e.to_string().contains("entry 0"), "{e}");
}

#[test]
fn a_list_url_off_loopback_must_be_https_and_the_intervals_must_make_sense() {
    for (extra, setting) in [
        (
            vec![("CAPSIGN_REVOCATIONS", "http://lists.example.com/r.json")],
            "CAPSIGN_REVOCATIONS",
        ),
        (
            vec![("CAPSIGN_REVOCATIONS_REFRESH", "0s")],
            "CAPSIGN_REVOCATIONS_REFRESH",
        ),
        (
            vec![
                ("CAPSIGN_REVOCATIONS_REFRESH", "2m"),
                ("CAPSIGN_REVOCATIONS_MAX_STALE", "1m"),
            ],
            "CAPSIGN_REVOCATIONS_MAX_STALE",
        ),
        (
            vec![("CAPSIGN_REVOCATION_KEY", "org:{claim.org}")],
            "CAPSIGN_REVOCATION_KEY",
        ),
    ] {
        let e = crate::harness::load(&settings(&extra)).unwrap_err();
        assert_eq!(e.setting, setting, "{e}");
    }
    crate::harness::load(&settings(&[(
        "CAPSIGN_REVOCATIONS",
        "https://lists.example.com/r.json",
    )]))
    .unwrap();
}

#[tokio::test]
async fn a_read_whose_connection_fails_is_sent_once_more() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A list server that closes its first connection unanswered (as a server closing a
    // pooled keep-alive connection), then answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        drop(first);
        let (mut second, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = second.read(&mut buf).await.unwrap();
        let body = list(&json!([{"clientId": "alice", "before": 1}]));
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        second.write_all(head.as_bytes()).await.unwrap();
        second.write_all(body.as_bytes()).await.unwrap();
    });
    let map = settings(&[("CAPSIGN_REVOCATIONS", &format!("http://{addr}/r.json"))]);
    let app = crate::harness::load(&map).unwrap();
    app.prepare().await.unwrap();
    served.await.unwrap();
    assert!(
        app.flow
            .revocations
            .as_ref()
            .unwrap()
            .loaded_at_ms()
            .is_some()
    );
}

/// Polls `done` every 20 ms for at most 5 s.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..250 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("not done within 5 s");
}

/// `capsign revoke` as an operator runs it, against a fake of Ably's `revokeTokens`.
mod cli {
    use std::process::Command;

    use serde_json::{Value, json};

    use crate::fakes::{Answer, Fake, Seen};
    use crate::harness::{ABLY_KEY, settings};

    /// Ably's `revokeTokens`: Basic auth with the key; each target revoked, except those
    /// starting with `clientId:refused`; a key-wide refusal when `refuse_all` is given.
    async fn ably(refuse_all: Option<(u16, u32)>) -> Fake {
        Fake::start(move |seen: &Seen| {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD.encode(ABLY_KEY);
            assert_eq!(
                seen.headers.get("authorization").unwrap().to_str().unwrap(),
                format!("Basic {basic}")
            );
            // The key name is percent-encoded in the path, as for requestToken.
            assert_eq!(
                seen.path.replace("%2E", "."),
                "/keys/xVLyHw.mDYnFA/revokeTokens"
            );
            if let Some((status, code)) = refuse_all {
                return Answer::json(
                    status,
                    &json!({"error": {"code": code, "statusCode": status, "message": "no revocable tokens"}}),
                );
            }
            let body = seen.json();
            let before = body["issuedBefore"].as_u64().unwrap();
            assert_eq!(before % 1000, 0, "a whole second");
            let results: Vec<Value> = body["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let t = t.as_str().unwrap();
                    if t.starts_with("clientId:refused") {
                        json!({"target": t, "error": {"code": 40000, "statusCode": 400, "message": "bad target"}})
                    } else {
                        json!({"target": t, "issuedBefore": before, "appliesAt": before + 10})
                    }
                })
                .collect();
            Answer::json(200, &json!({"successCount": 0, "failureCount": 0, "results": results}))
        })
        .await
    }

    /// Runs `capsign revoke ARGS` with the test settings plus `extra`, off the runtime's
    /// threads; returns (exit code, stdout, stderr).
    async fn revoke(extra: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
        let env = settings(extra);
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_capsign"));
            for (k, _) in std::env::vars() {
                if k.starts_with("CAPSIGN_") || k == "ABLY_API_KEY" {
                    c.env_remove(k);
                }
            }
            let out = c.arg("revoke").args(&args).envs(&env).output().unwrap();
            (
                out.status.code().unwrap(),
                String::from_utf8(out.stdout).unwrap(),
                String::from_utf8(out.stderr).unwrap(),
            )
        })
        .await
        .unwrap()
    }

    fn now_ms() -> u64 {
        capsign::testing::now_s() * 1000
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoke_asks_ably_then_keeps_the_entries_it_revoked() {
        let fake = ably(None).await;
        let url = fake.url("");
        let old = now_ms() - 2 * 86_400_000;
        let path = crate::harness::temp_file(
            "revocations.json",
            &json!({"revocations": [{"clientId": "old", "before": old}], "owner": "ops"})
                .to_string(),
        );
        let list = path.to_str().unwrap();
        let (code, out, err) = revoke(
            &[
                ("CAPSIGN_ABLY_REST_URL", &url),
                ("CAPSIGN_REVOCATIONS", list),
            ],
            &[
                "--client-id",
                "alice",
                "--client-id",
                "refused-bob",
                "--revocation-key",
                "org:acme",
                "--resource",
                "room:*",
                "--no-wait",
            ],
        )
        .await;
        assert_eq!(code, 1, "one target refused: {out} {err}");
        assert!(out.contains("clientId:alice: revoked at Ably"), "{out}");
        assert!(
            out.contains("clientId:refused-bob: refused by Ably: 40000"),
            "{out}"
        );
        assert!(
            out.contains("revocationKey:org:acme: revoked at Ably"),
            "{out}"
        );
        let sent = fake.seen()[0].json();
        assert_eq!(
            sent["targets"],
            json!([
                "clientId:alice",
                "clientId:refused-bob",
                "revocationKey:org:acme"
            ])
        );
        assert_eq!(sent["allowReauthMargin"], false);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let before = sent["issuedBefore"].clone();
        assert_eq!(
            doc,
            json!({"owner": "ops", "revocations": [
                {"clientId": "alice", "before": before, "resources": ["room:*"]},
                {"revocationKey": "org:acme", "before": before, "resources": ["room:*"]},
            ]}),
            "the refused target's entry and the entry too old to matter are gone"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_or_an_unreachable_ably_leaves_the_list_as_it_was() {
        let original = json!({"revocations": []}).to_string();
        let path = crate::harness::temp_file("revocations.json", &original);
        let list = path.to_str().unwrap();
        let fake = ably(Some((401, 40163))).await;
        let url = fake.url("");
        let (code, _, err) = revoke(
            &[
                ("CAPSIGN_ABLY_REST_URL", &url),
                ("CAPSIGN_REVOCATIONS", list),
            ],
            &["--client-id", "alice", "--no-wait"],
        )
        .await;
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("40163") && err.contains("no revocable tokens"),
            "{err}"
        );
        assert!(err.contains("--list-only"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);

        let (code, _, err) = revoke(
            &[
                ("CAPSIGN_ABLY_REST_URL", "http://127.0.0.1:1"),
                ("CAPSIGN_REVOCATIONS", list),
            ],
            &["--client-id", "alice", "--no-wait"],
        )
        .await;
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("unreachable") && err.contains("nothing was revoked"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_list_or_a_bad_resource_stops_before_anything_is_revoked() {
        let fake = ably(None).await;
        let url = fake.url("");
        let path = crate::harness::temp_file("revocations.json", r#"{"revocations": "no"}"#);
        let (code, _, err) = revoke(
            &[
                ("CAPSIGN_ABLY_REST_URL", &url),
                ("CAPSIGN_REVOCATIONS", path.to_str().unwrap()),
            ],
            &["--client-id", "alice"],
        )
        .await;
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("fix the list first"), "{err}");
        let (code, _, err) = revoke(
            &[("CAPSIGN_ABLY_REST_URL", &url)],
            &["--client-id", "alice", "--resource", ""],
        )
        .await;
        assert_eq!(code, 2, "{err}");
        let (code, _, err) = revoke(&[("CAPSIGN_ABLY_REST_URL", &url)], &[]).await;
        assert_eq!(code, 2, "{err}");
        assert!(fake.seen().is_empty(), "Ably was not asked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_only_prints_the_entries_when_the_list_is_not_a_file() {
        let fake = ably(None).await;
        let url = fake.url("");
        let (code, out, err) = revoke(
            &[
                ("CAPSIGN_ABLY_REST_URL", &url),
                ("CAPSIGN_REVOCATIONS", "https://lists.example.com/r.json"),
            ],
            &["--client-id", "alice", "--list-only"],
        )
        .await;
        assert_eq!(code, 0, "{err}");
        let doc: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["revocations"][0]["clientId"], "alice");
        assert!(doc["revocations"][0]["before"].as_u64().unwrap() <= now_ms() + 1000);
        assert!(err.contains("lists.example.com/r.json"), "{err}");
        assert!(fake.seen().is_empty(), "--list-only does not ask Ably");
    }
}
