//! Test fixtures shared by the unit tests, `tests/it`, the fuzz targets and the benchmarks: one
//! production-like configuration, its keys, one rules file, session JWTs. Built only for tests
//! and with the `fuzzing` feature; never part of a production build.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::app::App;
use crate::settings::Settings;

/// The Ably key of the fixtures (not a real key).
pub const ABLY_KEY: &str = "xVLyHw.mDYnFA:FAKESECRETfakesecret";
/// Its secret.
pub const ABLY_SECRET: &str = "FAKESECRETfakesecret";
/// The HS256 secret of the fixtures' app sessions.
pub const SESSION_SECRET: &str = "test-session-secret-0123456789abcdef";
/// The grant-cookie key of the fixtures (32 bytes, base64).
pub const COOKIE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The text of [`RULES`], for `concat!`.
macro_rules! rules_text {
    () => {
        r#"
[[rule]]
resource = "chat:*"
ops = ["subscribe", "publish", "presence"]

[[rule]]
resource = "doc:*"
ops = ["subscribe", "publish"]

[[rule]]
resource = "private:{clientId}:*"
ops = ["*"]

[[rule]]
resource = "team:{claims.team}"
ops = ["subscribe"]
"#
    };
}

/// The rules of the fixtures: open channel families, a per-user namespace, a claim template.
pub const RULES: &str = rules_text!();

/// [`RULES`] plus a rule granted to every fresh set without being asked.
pub const RULES_WITH_DEFAULT: &str = concat!(
    rules_text!(),
    r#"
[[rule]]
resource = "home:{clientId}"
ops = ["subscribe"]
default = true
"#
);

/// A file holding `contents` under a fresh temporary directory.
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "capsign-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("a temporary file");
    path
}

/// A read-only file holding `contents`, shared by everything that asks for the same contents
/// (its name is their hash): the fixtures write their rules once, not once per app, so test
/// runs leave a handful of files behind rather than thousands of directories.
pub fn shared_file(contents: &str) -> PathBuf {
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(contents.as_bytes()));
    let dir = std::env::temp_dir().join("capsign-test-shared");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(format!("{}.toml", hash.get(..16).unwrap_or(&hash)));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(contents) {
        // Written whole under a name of its own, then renamed: a reader never sees half.
        let partial = dir.join(format!("{}.{}", rand::random::<u64>(), std::process::id()));
        std::fs::write(&partial, contents).expect("a temporary file");
        std::fs::rename(&partial, &path).expect("a temporary file");
    }
    path
}

/// The environment of a production-like deployment (jwt identity, `rules` written to a file),
/// plus `extra`. Ably's REST API is a closed loopback port unless a test starts its own fake.
pub fn env_with_rules(rules: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let rules = shared_file(rules);
    let mut map: HashMap<String, String> = [
        ("ABLY_API_KEY", ABLY_KEY),
        ("CAPSIGN_COOKIE_KEY", COOKIE_KEY),
        ("CAPSIGN_SESSION_SECRET", SESSION_SECRET),
        ("CAPSIGN_LISTEN", "127.0.0.1:0"),
        ("CAPSIGN_ABLY_REST_URL", "http://127.0.0.1:1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    map.insert("CAPSIGN_RULES".into(), rules.display().to_string());
    for (k, v) in extra {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    map
}

/// [`env_with_rules`] with [`RULES`].
pub fn env(extra: &[(&str, &str)]) -> HashMap<String, String> {
    env_with_rules(RULES, extra)
}

/// The settings of an environment map.
pub fn settings_of(map: &HashMap<String, String>) -> Settings {
    Settings::load(&|k| map.get(k).cloned(), None).expect("fixture settings")
}

/// The app of an environment map.
pub fn app_of(map: &HashMap<String, String>) -> App {
    App::build(
        settings_of(map),
        std::sync::Arc::new(crate::client::Offline),
    )
    .expect("fixture app")
}

/// A production-like app with [`RULES`] and `extra` settings.
pub fn app(extra: &[(&str, &str)]) -> App {
    app_of(&env(extra))
}

/// Unix seconds now, by the system clock.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs()
}

/// An HS256 app-session JWT under [`SESSION_SECRET`] for `sub`, expiring at `exp` (Unix
/// seconds), with the members of `extra` as more claims.
pub fn session_jwt(sub: &str, exp: u64, extra: &Value) -> String {
    let mut claims = serde_json::json!({"sub": sub, "exp": exp});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SESSION_SECRET.as_bytes()),
    )
    .expect("HS256 signs any claims object")
}

/// How many requested grants the rules have decided, as `capsign_grant_decisions_total`
/// counts them (the app's metrics must be on: `CAPSIGN_METRICS_LISTEN`): what tests check to
/// see that only new grants reach the policy.
pub fn decided_by_rules(app: &crate::app::App) -> u64 {
    assert!(
        app.settings.server.metrics_listen.is_some(),
        "decided_by_rules counts with the metrics: set CAPSIGN_METRICS_LISTEN"
    );
    app.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("capsign_grant_decisions_total{decider=\"rules\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
