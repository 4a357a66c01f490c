//! Micro-benchmarks for each stage of an `/auth` request, and the whole handler without the
//! network, in the setting `bench/run` measures end to end: an HS256 session JWT, a grant
//! cookie holding 10 grants (`doc:<8 hex>`, mixed operation sets), one new grant decided by
//! the rules file, an Ably JWT minted, the new cookie sealed.
//!
//! `cargo bench --bench stages` (add `-- <filter>` for one stage). A regression in the
//! end-to-end figure shows up here in the stage that caused it.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use bytes::Bytes;
use capsign::capability::CapabilitySet;
use capsign::config::Config;
use capsign::flow::{self, App, AuthParams, Presented};
use capsign::grants::{GrantSet, OpenLimits, Purpose};
use capsign::identity::Presenting;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SESSION_SECRET: &str = "bench-session-secret-0123456789abcdef0123456789";
const CLIENT: &str = "bench-user";

struct Setup {
    app: App,
    bearer: String,
    cookie: String,
    held: GrantSet,
    new: CapabilitySet,
    query: String,
}

fn setup() -> Setup {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rules.toml");
    let env = move |k: &str| -> Option<String> {
        Some(match k {
            "ABLY_API_KEY" => "bench1.keyone:bench-ably-secret".into(),
            "CAPSIGN_LISTEN" => "127.0.0.1:0".into(),
            "CAPSIGN_COOKIE_KEY" => "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
            "CAPSIGN_SESSION_SECRET" => SESSION_SECRET.into(),
            "CAPSIGN_RULES" => rules.into(),
            _ => return None,
        })
    };
    let config = Config::load(&env, None).expect("bench configuration");
    let app = App::new(config);
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
        .config
        .sealer
        .seal_grants(Purpose::Cookie, CLIENT, now - 60, &held);
    let new = CapabilitySet::from_json(r#"{"doc:c0ffee42":["publish","subscribe"]}"#).unwrap();
    let query = format!(
        "/auth?capability={}",
        percent_encoding::utf8_percent_encode(&new.to_json(), percent_encoding::NON_ALPHANUMERIC)
    );
    Setup {
        app,
        bearer,
        cookie,
        held,
        new,
        query,
    }
}

fn stages(c: &mut Criterion) {
    let s = setup();
    let cfg = &s.app.config;
    let now = s.app.clock.now_ms() / 1000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let headers = http::HeaderMap::new();
    let no_cookie = |_: &str| -> Option<&str> { None };
    let presenting = |bearer| Presenting {
        bearer: Some(bearer),
        cookie: &no_cookie,
        headers: &headers,
        peer: None,
    };
    let now_ms = now * 1000;
    let who = rt
        .block_on(cfg.identity.identify(&presenting(&s.bearer), now_ms))
        .unwrap();
    let limits = OpenLimits {
        now,
        max_age: cfg.grant_max_age,
        future_skew: 60,
    };
    let mut merged = s.held.clone();
    merged.add(&s.new, now);
    let set = merged.capabilities();
    let capability = set.to_json();

    c.bench_function("identity: HS256 session JWT", |b| {
        b.iter(|| {
            rt.block_on(
                cfg.identity
                    .identify(&presenting(black_box(&s.bearer)), now_ms),
            )
        })
    });
    c.bench_function("cookie open: 10 grants", |b| {
        b.iter(|| {
            cfg.sealer
                .open(Purpose::Cookie, black_box(&s.cookie), CLIENT, limits)
        })
    });
    c.bench_function("policy: 1 new grant, example rules", |b| {
        b.iter(|| cfg.policy.decide(&who, black_box(&s.new)))
    });
    c.bench_function("merge: uncovered + add + canonical JSON", |b| {
        b.iter(|| {
            let mut held = s.held.clone();
            let new = held.uncovered(black_box(&s.new));
            held.add(&new, now);
            held.capabilities().to_json()
        })
    });
    c.bench_function("mint: Ably JWT, 11 grants", |b| {
        b.iter(|| cfg.ably.jwt(black_box(&set), Some(CLIENT), now, now + 3600))
    });
    c.bench_function("mint: TokenRequest, 11 grants", |b| {
        b.iter(|| {
            cfg.ably.token_request(
                Some(3_600_000),
                Some(black_box(&capability)),
                Some(CLIENT),
                now * 1000,
                &capsign::token::nonce(),
            )
        })
    });
    c.bench_function("cookie seal: 11 grants + Set-Cookie", |b| {
        b.iter(|| {
            let v = cfg
                .sealer
                .seal_grants(Purpose::Cookie, CLIENT, now, black_box(&merged));
            flow::set_cookie(cfg, &v)
        })
    });
    c.bench_function("flow: authorize (no HTTP, no identity)", |b| {
        let cookies = [s.cookie.as_str()];
        b.iter(|| {
            rt.block_on(flow::authorize(
                &s.app,
                &who,
                Presented {
                    cookies: &cookies,
                    header: None,
                },
                AuthParams {
                    capability: Some(s.new.clone()),
                    ..AuthParams::default()
                },
            ))
            .unwrap()
        })
    });
    let cookie_header = format!("{}={}", cfg.sealer.cookie_name(), s.cookie);
    c.bench_function("handler: GET /auth, whole request in memory", |b| {
        b.iter(|| {
            let req = http::Request::get(s.query.as_str())
                .header("authorization", format!("Bearer {}", s.bearer))
                .header("cookie", cookie_header.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let res = rt.block_on(capsign::http::handle(&s.app, req));
            assert_eq!(res.status(), 200);
            res
        })
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
