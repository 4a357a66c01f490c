//! The setting both benchmarks measure (`stages` for time, `allocations` for heap use): the
//! example rules, an HS256 session JWT, a grant cookie holding 10 grants (`doc:<8 hex>`, mixed
//! operation sets) and one new grant; and the stages of an `/auth` request, each as a closure
//! that does one request's worth of that stage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use bytes::Bytes;
use capsign::app::App;
use capsign::capability::CapabilitySet;
use capsign::flow::{AuthParams, Presented};
use capsign::grants::{GrantSet, OpenLimits, Purpose};
use capsign::identity::{Identity, Presenting};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The lean floor (`bench/run`'s): the request answered by the least work that does it.
#[path = "../../examples/floors/lean.rs"]
mod lean;

const SESSION_SECRET: &str = "bench-session-secret-0123456789abcdef0123456789";
const CLIENT: &str = "bench-user";
const ABLY_API_KEY: &str = "bench1.keyone:bench-ably-secret";

struct Setup {
    app: App,
    bearer: String,
    cookie: String,
    held: GrantSet,
    new: CapabilitySet,
    query: String,
    renew_query: String,
}

fn setup() -> Setup {
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rules.toml"))
            .expect("examples/rules.toml");
    let env = capsign::testing::env_with_rules(
        &rules,
        &[
            ("ABLY_API_KEY", ABLY_API_KEY),
            ("CAPSIGN_SESSION_SECRET", SESSION_SECRET),
        ],
    );
    let app = capsign::testing::app_of(&env);
    let now = app.clock.now_ms() / 1000;
    let bearer = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": CLIENT, "iat": now, "exp": now + 86_400}),
        &EncodingKey::from_secret(SESSION_SECRET.as_bytes()),
    )
    .unwrap();
    let ops = [
        r#"["subscribe"]"#,
        r#"["presence","subscribe"]"#,
        r#"["publish","subscribe"]"#,
        r#"["presence","publish","subscribe"]"#,
    ];
    let mut held = GrantSet::new();
    for i in 0..10u32 {
        let id = i.wrapping_mul(0x9E37_79B9);
        let cap = format!(r#"{{"doc:{id:08x}":{}}}"#, ops[i as usize % ops.len()]);
        held.add(&CapabilitySet::from_json(&cap).unwrap(), now - 60);
    }
    let cookie = app
        .flow
        .sealer
        .seal_grants(Purpose::Cookie, CLIENT, now - 60, &held)
        .unwrap();
    let new = CapabilitySet::from_json(r#"{"doc:c0ffee42":["publish","subscribe"]}"#).unwrap();
    let query = format!(
        "/auth?capability={}",
        percent_encoding::utf8_percent_encode(&new.to_json(), percent_encoding::NON_ALPHANUMERIC)
    );
    // A renewal: a held grant asked again.
    let renew_query = format!(
        "/auth?capability={}",
        percent_encoding::utf8_percent_encode(
            r#"{"doc:00000000":["subscribe"]}"#,
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    Setup {
        app,
        bearer,
        cookie,
        held,
        new,
        query,
        renew_query,
    }
}

/// A stage's name and one request's worth of it.
pub(crate) type Stage<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// What the stages share, computed once.
pub(crate) struct Fixture {
    s: Setup,
    rt: tokio::runtime::Runtime,
    headers: http::HeaderMap,
    now: u64,
    who: Identity,
    limits: OpenLimits,
    merged: GrantSet,
    set: CapabilitySet,
    capability: String,
    cookie_header: String,
    lean: lean::Lean,
    revocations: capsign::revocation::Revocations,
}

/// A revocation list of 10,000 entries (other clients), one of them for the bench's client.
fn revocation_list(now_ms: u64, max_age_s: u64) -> capsign::revocation::Revocations {
    let mut entries: Vec<serde_json::Value> = (0..9_999u32)
        .map(|i| json!({"clientId": format!("user-{i:05}"), "before": now_ms - 1000}))
        .collect();
    entries.push(json!({"clientId": CLIENT, "before": now_ms - 3_600_000, "resources": ["doc:*"]}));
    let path = std::env::temp_dir().join(format!(
        "capsign-bench-revocations-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, json!({ "revocations": entries }).to_string()).unwrap();
    let settings = capsign::settings::RevocationSettings {
        list: Some(capsign::settings::Location::File(path.clone())),
        refresh: std::time::Duration::from_secs(3600),
        max_stale: std::time::Duration::from_secs(7200),
        key: None,
    };
    let list = capsign::revocation::Revocations::build(
        &settings,
        max_age_s,
        capsign::client::HttpClient::new(std::sync::Arc::new(capsign::client::Offline)),
        capsign::metrics::Metrics::disabled(),
        now_ms,
    )
    .unwrap()
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(list.current().len(), 10_000);
    list
}

fn no_cookie<'a>(_: &str) -> Option<&'a str> {
    None
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let s = setup();
        let app = &s.app;
        let now = s.app.clock.now_ms() / 1000;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let headers = http::HeaderMap::new();
        let who = rt
            .block_on(app.identity.identify(
                &Presenting {
                    bearer: Some(&s.bearer),
                    cookie: &no_cookie,
                    headers: &headers,
                    peer: None,
                },
                now * 1000,
            ))
            .unwrap();
        let limits = OpenLimits {
            now,
            max_age: app.settings.flow.grant_max_age_s,
            future_skew: 60,
        };
        let mut merged = s.held.clone();
        merged.add(&s.new, now);
        let set = merged.capabilities();
        let capability = set.to_json();
        let cookie_header = format!("{}={}", app.flow.sealer.cookie_name(), s.cookie);
        let lean = {
            let request = http::Request::get(s.query.as_str())
                .header("authorization", format!("Bearer {}", s.bearer))
                .header("cookie", cookie_header.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let answer = rt.block_on(capsign::http::handle(app, request));
            let set_cookie = answer.headers()["set-cookie"].to_str().unwrap();
            let config = serde_json::from_value(json!({
                "session_secret": SESSION_SECRET,
                "ably_key": ABLY_API_KEY,
                "cookie_name": app.flow.sealer.cookie_name(),
                "cookie_attributes": format!(";{}", set_cookie.split_once(';').unwrap().1),
                "ttl_s": 3600,
            }))
            .unwrap();
            lean::Lean::new(config, answer.headers()).unwrap()
        };
        let revocations = revocation_list(now * 1000, app.settings.flow.grant_max_age_s);
        Fixture {
            s,
            rt,
            headers,
            now,
            who,
            limits,
            merged,
            set,
            capability,
            cookie_header,
            lean,
            revocations,
        }
    }

    /// Every stage, by name, as a closure doing one request's worth of it.
    pub(crate) fn stages(&self) -> Vec<Stage<'_>> {
        let (s, app, now) = (&self.s, &self.s.app, self.now);
        vec![
            (
                "identity: HS256 session JWT",
                Box::new(move || {
                    let presenting = Presenting {
                        bearer: Some(black_box(&s.bearer)),
                        cookie: &no_cookie,
                        headers: &self.headers,
                        peer: None,
                    };
                    black_box(
                        self.rt
                            .block_on(app.identity.identify(&presenting, now * 1000))
                            .unwrap(),
                    );
                }),
            ),
            (
                "cookie open: 10 grants",
                Box::new(move || {
                    black_box(
                        app.flow
                            .sealer
                            .open(Purpose::Cookie, black_box(&s.cookie), CLIENT, self.limits)
                            .unwrap(),
                    );
                }),
            ),
            (
                "revocation: lookup in a 10,000-entry list (the client listed, nothing revoked)",
                Box::new(move || {
                    // The held grants were approved after the client's entry: nothing leaves.
                    let mut held = GrantSet::new();
                    black_box(self.revocations.apply(
                        black_box(CLIENT),
                        || None,
                        &mut held,
                        now * 1000,
                    ));
                }),
            ),
            (
                "policy: 1 new grant, example rules",
                Box::new(move || {
                    black_box(app.flow.policy.rules().decide(&self.who, black_box(&s.new)));
                }),
            ),
            (
                "merge: uncovered + add + canonical JSON",
                Box::new(move || {
                    let mut held = s.held.clone();
                    let new = held.uncovered(black_box(&s.new));
                    held.add(&new, now);
                    black_box(held.capabilities().to_json());
                }),
            ),
            (
                "mint: Ably JWT, 11 grants",
                Box::new(move || {
                    black_box(app.flow.ably.key.jwt(
                        black_box(&self.set),
                        Some(CLIENT),
                        now,
                        now + 3600,
                    ));
                }),
            ),
            (
                "mint: TokenRequest, 11 grants",
                Box::new(move || {
                    black_box(
                        app.flow
                            .ably
                            .key
                            .token_request(
                                Some(3_600_000),
                                Some(black_box(&self.capability)),
                                Some(CLIENT),
                                now * 1000,
                                &capsign::ably::nonce(),
                            )
                            .unwrap(),
                    );
                }),
            ),
            (
                "cookie seal: 11 grants + Set-Cookie",
                Box::new(move || {
                    let sealer = &app.flow.sealer;
                    let v = sealer
                        .seal_grants(Purpose::Cookie, CLIENT, now, black_box(&self.merged))
                        .unwrap();
                    black_box(sealer.set_cookie(&v));
                }),
            ),
            (
                "flow: authorize (no HTTP, no identity)",
                Box::new(move || {
                    let cookies = [s.cookie.as_str()];
                    black_box(
                        self.rt
                            .block_on(app.flow.authorize(
                                &self.who,
                                Presented {
                                    cookies: &cookies,
                                    header: None,
                                },
                                AuthParams {
                                    capability: Some(s.new.clone()),
                                    ..AuthParams::default()
                                },
                                app.clock.now_ms(),
                                "bench",
                            ))
                            .unwrap(),
                    );
                }),
            ),
            (
                "request: built and dropped (the harness's cost inside the handler figures)",
                Box::new(move || {
                    black_box(self.request());
                }),
            ),
            (
                "handler: a renewal (a held grant asked again), whole request",
                Box::new(move || {
                    let req = http::Request::get(s.renew_query.as_str())
                        .header("authorization", format!("Bearer {}", s.bearer))
                        .header("cookie", self.cookie_header.as_str())
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let res = self.rt.block_on(capsign::http::handle(&s.app, req));
                    assert_eq!(res.status(), 200);
                    assert!(
                        res.headers().get("set-cookie").is_none(),
                        "nothing resealed"
                    );
                    black_box(res);
                }),
            ),
            (
                "lean floor: an acquire's least work (examples/floors/lean.rs), whole request",
                Box::new(move || {
                    let res = self.lean.answer(&self.request());
                    assert_eq!(res.status(), 200);
                    assert!(res.headers().contains_key("set-cookie"));
                    black_box(res);
                }),
            ),
            (
                "handler: an acquire (one new grant), whole request",
                Box::new(move || {
                    let res = self
                        .rt
                        .block_on(capsign::http::handle(&s.app, self.request()));
                    assert_eq!(res.status(), 200);
                    black_box(res);
                }),
            ),
        ]
    }

    /// The measured request as the handler gets it (what building it costs is not capsign's).
    pub(crate) fn request(&self) -> http::Request<Full<Bytes>> {
        http::Request::get(self.s.query.as_str())
            .header("authorization", format!("Bearer {}", self.s.bearer))
            .header("cookie", self.cookie_header.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
}
