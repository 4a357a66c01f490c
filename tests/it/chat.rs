//! Chat rooms and user claims: a rule's claim in every minted Ably JWT for exactly the held
//! resources it covers, escaped; operation groups.

use serde_json::{Value, json};

use crate::harness::{Server, auth_path, bearer_request, verify_ably_jwt};

const RULES: &str = r#"
[[rule]]
resource = "rooms:*"
ops = ["@chat"]
claim = '{"role":"{claims.role}"}'
claim_scope = "room"

[[rule]]
resource = "feed:*"
ops = ["subscribe"]
claim = '{"tier":"{claims.tier}"}'
claim_scope = "channel"

[[rule]]
resource = "lobby"
ops = ["subscribe"]
"#;

fn server_map() -> std::collections::HashMap<String, String> {
    capsign::testing::env_with_rules(RULES, &[])
}

fn session_request(
    s: &Server,
    claims: &Value,
    cap: &str,
    cookie: Option<&str>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let token = capsign::testing::session_jwt("alice", capsign::testing::now_s() + 3600, claims);
    bearer_request(s, &token, &auth_path(Some(cap)), cookie)
}

fn user_claims(claims: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = claims
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("ably."))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn claims_follow_the_held_set() {
    let s = Server::start_with(server_map()).await;
    let session = json!({"role": "moderator", "tier": "gold"});
    // A room first (capabilities name the room, not its ::$chat channel).
    let r = s
        .send(session_request(
            &s,
            &session,
            r#"{"rooms:7":["@chat"]}"#,
            None,
        ))
        .await;
    assert_eq!(
        r.status, 400,
        "@chat is a rules-file group, not a request operation"
    );
    let r = s
        .send(session_request(
            &s,
            &session,
            r#"{"rooms:7":["publish","subscribe","presence"]}"#,
            None,
        ))
        .await;
    let claims = verify_ably_jwt(&r.body);
    // Named by the rule's pattern: once, however many rooms it covers (issue 27).
    assert_eq!(
        user_claims(&claims),
        vec![(
            "ably.room.rooms:*".to_owned(),
            r#"{"role":"moderator"}"#.to_owned()
        )]
    );
    // A channel with a claim and one without: the held set's claims, each from its rule.
    let cookie = r.grant_cookie().unwrap();
    let r = s
        .send(session_request(
            &s,
            &session,
            r#"{"feed:news":["subscribe"],"lobby":["subscribe"]}"#,
            Some(&cookie),
        ))
        .await;
    let claims = verify_ably_jwt(&r.body);
    assert_eq!(
        user_claims(&claims),
        vec![
            (
                "ably.channel.feed:*".to_owned(),
                r#"{"tier":"gold"}"#.to_owned()
            ),
            (
                "ably.room.rooms:*".to_owned(),
                r#"{"role":"moderator"}"#.to_owned()
            ),
        ]
    );
    // Another user's request holds nothing: no claims for resources it does not hold.
    let r = s
        .first_auth("bob", Some(r#"{"lobby":["subscribe"]}"#))
        .await;
    assert_eq!(user_claims(&verify_ably_jwt(&r.body)), vec![]);
}

#[tokio::test]
async fn a_claim_value_cannot_break_out_of_its_string() {
    let s = Server::start_with(server_map()).await;
    let hostile = json!({"role": "x\",\"role\":\"admin"});
    let r = s
        .send(session_request(
            &s,
            &hostile,
            r#"{"rooms:1":["publish"]}"#,
            None,
        ))
        .await;
    let claims = verify_ably_jwt(&r.body);
    let value = claims["ably.room.rooms:*"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(value).unwrap();
    assert_eq!(parsed, json!({"role": "x\",\"role\":\"admin"}));
    // A session without the claim: the rule grants, but sets no claim.
    let r = s
        .send(session_request(
            &s,
            &json!({}),
            r#"{"rooms:1":["publish"]}"#,
            None,
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(user_claims(&verify_ably_jwt(&r.body)), vec![]);
}

/// Issue 27 (2): a client cannot shed the claims the rules give its capability by asking for a
/// format that has none (a TokenRequest, an Ably token, `auto` past the JWT budget): refused
/// with 400 naming the claim; a capability without claims takes every format.
#[tokio::test]
async fn claims_are_not_shed_by_asking_another_format() {
    let s = Server::start_with(capsign::testing::env_with_rules(
        RULES,
        &[("CAPSIGN_MAX_NEW_GRANTS", "256")],
    ))
    .await;
    let session = json!({"role": "moderator"});
    let token = capsign::testing::session_jwt("alice", capsign::testing::now_s() + 3600, &session);
    let ask = |cap: &str, format: &str| {
        let path = format!("{}&format={format}", auth_path(Some(cap)));
        bearer_request(&s, &token, &path, None)
    };
    for format in ["tokenRequest", "token"] {
        let r = s.send(ask(r#"{"rooms:1":["publish"]}"#, format)).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, 40000),
            "{format}: {}",
            r.body
        );
        assert!(r.body.contains("ably.room.rooms:*"), "{format}: {}", r.body);
    }
    // The JWT carries them; a capability with no claim takes a TokenRequest.
    let r = s.send(ask(r#"{"rooms:1":["publish"]}"#, "jwt")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .send(ask(r#"{"lobby":["subscribe"]}"#, "tokenRequest"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // `auto` past the 8 KB JWT budget would fall back to a TokenRequest: refused too.
    let many: serde_json::Map<String, Value> = (0..160)
        .map(|i| {
            (
                format!("rooms:{i:03}-{}", "x".repeat(20)),
                json!(["publish"]),
            )
        })
        .collect();
    // (In a JSON body: the URL would be over the header limit.)
    let form = json!({"format": "auto", "capability": Value::Object(many).to_string()}).to_string();
    let r = s
        .send(
            s.post("/auth")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(form)))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (400, 40000), "{}", r.body);
    assert!(
        r.body.contains("format=auto would send a TokenRequest"),
        "{}",
        r.body
    );
}

/// Issue 27 (1): claims were copied once per held resource with no size limit (255 rooms and
/// a 5,800-character session claim made a 2 MB JWT on every renewal). Now one claim per rule,
/// and a claim over the 4 KB budget is refused, not sent.
#[tokio::test]
async fn claims_are_not_amplified_and_have_a_budget() {
    let s = Server::start_with(capsign::testing::env_with_rules(
        RULES,
        &[("CAPSIGN_MAX_NEW_GRANTS", "256")],
    ))
    .await;
    let many: serde_json::Map<String, Value> = (0..255)
        .map(|i| (format!("rooms:{i}"), json!(["publish"])))
        .collect();
    let body = |session: &Value| {
        let token =
            capsign::testing::session_jwt("alice", capsign::testing::now_s() + 3600, session);
        s.post("/auth")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({"capability": Value::Object(many.clone()).to_string()}).to_string(),
            )))
            .unwrap()
    };
    let r = s.send(body(&json!({"role": "r".repeat(2_000)}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The capability of 255 rooms is most of it; the claim is written once (was 255 times).
    assert!(r.body.len() < 16_000, "a {}-byte JWT", r.body.len());
    assert_eq!(user_claims(&verify_ably_jwt(&r.body)).len(), 1);
    let r = s.send(body(&json!({"role": "r".repeat(5_800)}))).await;
    assert_eq!((r.status, r.error_code()), (400, 40000), "{}", r.body);
    assert!(r.body.contains("over the 4096-byte budget"), "{}", r.body);
}
