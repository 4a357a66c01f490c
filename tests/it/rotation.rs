//! Key rotation while requests flow: a fleet rolls through the three cookie-key
//! steps, and switches its Ably key, while clients keep acquiring channels through a
//! round-robin "load balancer" over a mixed fleet. No client ever loses a grant, and every
//! credential verifies under the Ably key its `kid` names.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::harness::{ABLY_KEY, ABLY_SECRET, Server, auth_request};

const OLD: &str = crate::harness::COOKIE_KEY;
const NEW: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const NEW_ABLY_KEY: &str = "xVLyHw.n3wK3y:NEWSECRETnewsecret";

/// Checks the JWT's MAC with the secret of the key its `kid` names; returns the capability.
fn verify(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let secret = match header["kid"].as_str().unwrap() {
        "xVLyHw.mDYnFA" => ABLY_SECRET,
        "xVLyHw.n3wK3y" => "NEWSECRETnewsecret",
        other => panic!("unknown kid {other}"),
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
        .expect("JWT signature under the key its kid names");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    serde_json::from_str(claims["x-ably-capability"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn cookie_and_ably_keys_rotate_while_requests_flow() {
    // The deployments of the rotation, in order (`docs/security.md`, "Rotating the cookie key").
    let step0 = Server::start(&[("CAPSIGN_COOKIE_KEY", &format!("1:{OLD}"))]).await;
    let step1 = Server::start(&[("CAPSIGN_COOKIE_KEY", &format!("1:{OLD},2:{NEW}"))]).await;
    let step2 = Server::start(&[
        ("CAPSIGN_COOKIE_KEY", &format!("2:{NEW},1:{OLD}")),
        ("ABLY_API_KEY", NEW_ABLY_KEY),
    ])
    .await;
    let step3 = Server::start(&[
        ("CAPSIGN_COOKIE_KEY", &format!("2:{NEW}")),
        ("ABLY_API_KEY", NEW_ABLY_KEY),
    ])
    .await;
    assert_ne!(ABLY_KEY, NEW_ABLY_KEY);
    // A rolling deploy: each phase is a fleet of two instances, old and new version side by
    // side, then all new.
    let phases: [[&Server; 2]; 7] = [
        [&step0, &step0],
        [&step0, &step1],
        [&step1, &step1],
        [&step1, &step2],
        [&step2, &step2],
        [&step2, &step3],
        [&step3, &step3],
    ];
    const CLIENTS: usize = 6;
    const PER_PHASE: usize = 4;
    let mut cookies: Vec<Option<String>> = vec![None; CLIENTS];
    let mut held: Vec<BTreeSet<String>> = vec![BTreeSet::new(); CLIENTS];
    let mut kids = BTreeSet::new();
    let mut n = 0usize;
    for (p, fleet) in phases.iter().enumerate() {
        for round in 0..PER_PHASE {
            // Every client sends one request at once; the balancer alternates instances.
            let requests = (0..CLIENTS).map(|c| {
                let server = fleet[(c + round + p) % 2];
                let channel = format!("doc:c{c}-p{p}-r{round}");
                let cap = format!(r#"{{"{channel}":["subscribe"]}}"#);
                let req = auth_request(
                    server,
                    &format!("user-{c}"),
                    Some(&cap),
                    cookies[c].as_deref(),
                );
                async move { (channel, server.send(req).await) }
            });
            let replies = futures_util::future::join_all(requests).await;
            for (c, (channel, reply)) in replies.into_iter().enumerate() {
                assert_eq!(reply.status, 200, "phase {p}: {}", reply.body);
                let cap = verify(&reply.body);
                held[c].insert(channel);
                for ch in &held[c] {
                    assert!(
                        cap.get(ch).is_some(),
                        "phase {p} round {round}: client {c} lost {ch}"
                    );
                }
                let header: Value = serde_json::from_slice(
                    &URL_SAFE_NO_PAD
                        .decode(reply.body.split('.').next().unwrap())
                        .unwrap(),
                )
                .unwrap();
                kids.insert(header["kid"].as_str().unwrap().to_owned());
                cookies[c] = Some(reply.grant_cookie().unwrap());
                n += 1;
            }
        }
    }
    assert_eq!(n, CLIENTS * PER_PHASE * phases.len());
    assert_eq!(kids.len(), 2, "credentials from both Ably keys: {kids:?}");
    for s in [step0, step1, step2, step3] {
        s.stop().await;
    }
}
