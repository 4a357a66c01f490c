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
    assert_eq!(
        user_claims(&claims),
        vec![(
            "ably.room.rooms:7".to_owned(),
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
                "ably.channel.feed:news".to_owned(),
                r#"{"tier":"gold"}"#.to_owned()
            ),
            (
                "ably.room.rooms:7".to_owned(),
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
    let value = claims["ably.room.rooms:1"].as_str().unwrap();
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
