//! Settings: every knob capsign has, declared once, read once at start-up, checked, and
//! turned into plain typed values.
//!
//! [`TABLE`] is the one declaration: each setting's name, built-in default, parser, one-line
//! doc, and whether it is secret. The same table reads the environment and the `--config`
//! TOML file, writes `capsign --help`, and is compared with the configuration table of `docs/configuration.md`
//! by a test. In the file a setting goes by its name in lower case without the `CAPSIGN_`
//! prefix (`CAPSIGN_COOKIE_KEY` is `cookie_key`, `ABLY_API_KEY` is `ably_api_key`); the
//! environment wins over the file. A variable that is set but empty is an invalid value,
//! never the same as an unset one.
//!
//! [`Settings`] holds plain validated values, grouped by the module that uses them, and does
//! no I/O: files named by settings (rules, keys, JWKS) are read when the [`crate::app::App`]
//! is built, by the module that owns them. Secrets are held in [`Secret`], whose `Debug`
//! never shows them.
//!
//! With nothing set, capsign runs in demo mode: a demo Ably key, demo identity, a random
//! cookie key and the built-in example rules, allowed only on a loopback address.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderName, Uri};
use jsonwebtoken::Algorithm;

use crate::capability::CapabilitySet;
use crate::policy::ClaimTemplate;

mod help;
mod load;
mod parse;
mod source;
mod table;
mod values;

pub use help::*;
pub use source::*;
pub use table::*;
pub use values::*;

/// The grant cookie's name when none is set: `__Host-` makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, which stops sibling subdomains from planting a cookie.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-capsign";
/// The shortest cookie secret, in bytes.
pub const MIN_COOKIE_KEY_LEN: usize = 32;
/// The shortest HS256 session secret and webhook secret, in characters.
pub const MIN_SHARED_SECRET_LEN: usize = 32;
/// Ably's longest token lifetime (24 h), in ms.
pub const ABLY_MAX_TTL_MS: u64 = 24 * 3600 * 1000;
/// The longest lifetime for keys with revocable tokens (1 h), in ms.
pub const ABLY_REVOCABLE_MAX_TTL_MS: u64 = 3600 * 1000;
/// The Ably key used when none is configured. Ably refuses it: it is for trying capsign out.
pub const DEMO_ABLY_KEY: &str = "demoap.demoky:capsign-demo-secret-not-for-production";

/// The algorithms a JWKS key may verify unless `CAPSIGN_SESSION_ALGORITHMS` narrows them:
/// the asymmetric signature algorithms, RSA first.
pub const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The settings of where and how capsign listens, logs and shuts down: giving them does not
/// make a configuration a production one (they supply no identity, key or policy), so a demo
/// can still be tried with them.
const TRANSPORT: &[&str] = &[
    "CAPSIGN_LISTEN",
    "CAPSIGN_LOG_FORMAT",
    "CAPSIGN_METRICS_LISTEN",
    "CAPSIGN_HEADER_TIMEOUT",
    "CAPSIGN_BODY_TIMEOUT",
    "CAPSIGN_WRITE_TIMEOUT",
    "CAPSIGN_MAX_CONNECTIONS",
    "CAPSIGN_MAX_CONNECTIONS_PER_PEER",
    "CAPSIGN_SHUTDOWN_DELAY",
    "CAPSIGN_SHUTDOWN_GRACE",
    "CAPSIGN_STARTUP_TIMEOUT",
];

/// A setting that could not be used: names the variable (or file key) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct SettingsError {
    /// `CAPSIGN_X`, `x in FILE`, or `--config`.
    pub setting: String,
    /// What is wrong, and what to do.
    pub problem: String,
}

impl SettingsError {
    /// The error for `setting`: what is wrong and what to do.
    pub fn new(setting: &str, problem: impl Into<String>) -> SettingsError {
        SettingsError {
            setting: setting.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Everything capsign is configured with, checked, grouped by the module that uses it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The listen address.
    pub listen: SocketAddr,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The Ably key, REST API and credential lifetimes.
    pub ably: AblySettings,
    /// The grant cookie.
    pub cookie: CookieSettings,
    /// How users are identified.
    pub identity: IdentitySettings,
    /// Who decides new grants.
    pub policy: PolicySettings,
    /// The auth flow's choices and limits.
    pub flow: FlowSettings,
    /// The revocation list and the revocation key.
    pub revocation: RevocationSettings,
    /// Request limits and cross-origin callers.
    pub http: HttpSettings,
    /// Transport limits.
    pub server: ServerSettings,
    /// Settings that fell back to demo values, for the start-up banner.
    pub demo_defaults: Vec<&'static str>,
}

/// The settings of the `ably` module.
#[derive(Debug, Clone)]
pub struct AblySettings {
    /// Signs every credential.
    pub key: AblyApiKey,
    /// The key's own capability, when known: minted sets are intersected with it so that
    /// clients are never surprised by Ably's 40160.
    pub key_capability: Option<CapabilitySet>,
    /// Ably's REST API (`format=token`, `/time`).
    pub rest_url: Uri,
    /// Ably's time to answer.
    pub timeout: Duration,
    /// Whether to correct the clock from Ably's `/time` at start-up.
    pub correct_clock: bool,
    /// `format=embedded`, when configured.
    pub embedded: Option<EmbeddedSettings>,
}

/// The settings of `format=embedded`: the app's own JWT around the Ably credential.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// Signs the outer JWT (HS256).
    pub secret: Secret<String>,
    /// The Ably credential inside.
    pub inner: EmbeddedInner,
    /// Claims added to the outer JWT.
    pub claims: EmbeddedClaims,
}

/// Claims added to the outer JWT of `format=embedded`: a JSON object without the claims
/// capsign sets (`iat`, `exp`, `sub`) and without Ably's reserved `x-ably-` names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddedClaims(serde_json::Map<String, serde_json::Value>);

impl EmbeddedClaims {
    /// Parses the JSON object.
    ///
    /// # Errors
    ///
    /// Not a JSON object, or a claim capsign sets or Ably reserves.
    pub fn parse(s: &str) -> Result<EmbeddedClaims, String> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(s)
            .map_err(|e| format!("expected a JSON object of claims: {e}"))?;
        for name in map.keys() {
            if matches!(name.as_str(), "iat" | "exp" | "sub") {
                return Err(format!("{name} is set by capsign"));
            }
            if name.starts_with("x-ably-") {
                return Err(format!("{name}: names beginning with x-ably- are Ably's"));
            }
        }
        Ok(EmbeddedClaims(map))
    }

    /// The claims.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

/// The settings of the grant cookie (the `grants` module).
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// The key ring.
    pub keys: CookieKeys,
    /// The cookie's name, bound into its MAC.
    pub name: String,
    /// Its `SameSite`.
    pub same_site: SameSite,
    /// Its `Max-Age` and the oldest seal accepted, in seconds (the grant maximum age).
    pub max_age_s: u64,
    /// The most grants a set may hold (and a request may ask for).
    pub max_grants: usize,
}

/// The settings of the `identity` module.
#[derive(Debug, Clone)]
pub enum IdentitySettings {
    /// The app's session JWT.
    Jwt {
        /// What verifies it.
        key: SessionKeySource,
        /// How its claims become an identity.
        session: SessionSettings,
    },
    /// A header set by trusted front proxies.
    Header {
        /// The header.
        header: HeaderName,
        /// The proxies it is believed from.
        trusted: Vec<ipnet::IpNet>,
    },
    /// A user name in a signed cookie; loopback only.
    Demo,
}

impl IdentitySettings {
    /// The mode's name, as `CAPSIGN_IDENTITY` spells it.
    pub fn mode(&self) -> &'static str {
        match self {
            IdentitySettings::Jwt { .. } => "jwt",
            IdentitySettings::Header { .. } => "header",
            IdentitySettings::Demo => "demo",
        }
    }
}

/// What verifies session JWTs.
#[derive(Debug, Clone)]
pub enum SessionKeySource {
    /// An HS256 shared secret.
    Secret(Secret<String>),
    /// A PEM public key file.
    PublicKey(PathBuf),
    /// A JWKS document.
    Jwks {
        /// Where it is.
        location: Location,
        /// The algorithms its keys may verify.
        algorithms: Vec<Algorithm>,
        /// Background refresh interval (URL only).
        refresh: Duration,
        /// Least time between fetches caused by unknown `kid`s (URL only).
        min_refresh: Duration,
    },
}

/// How a session JWT's claims become an identity.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Also take the token from this cookie.
    pub cookie: Option<String>,
    /// The claim holding the clientId.
    pub client_id_claim: String,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
}

/// The settings of the `policy` module.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The rules, if any.
    pub rules: Option<RulesSource>,
    /// The webhook, if any.
    pub webhook: Option<WebhookSettings>,
}

/// Where the rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesSource {
    /// `examples/rules.toml`, built in (demo mode).
    Demo,
    /// A file.
    File(PathBuf),
}

/// The policy webhook.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: Uri,
    /// Signs each call when given.
    pub secret: Option<Secret<String>>,
    /// Time to answer completely.
    pub timeout: Duration,
    /// Largest answer.
    pub max_response: usize,
    /// Whether patterns no rule covers reach the webhook.
    pub patterns: PatternPolicy,
}

/// The settings of the auth flow.
#[derive(Debug, Clone)]
pub struct FlowSettings {
    /// Default credential format.
    pub format: Format,
    /// Deny mode.
    pub deny: DenyMode,
    /// Cookie overflow policy.
    pub overflow: Overflow,
    /// Credential lifetimes.
    pub ttl: TtlBounds,
    /// Seconds after which a grant is re-checked.
    pub regrant_after_s: u64,
    /// Seconds after which a grant is dropped unless re-approved; also the cookie's max age.
    pub grant_max_age_s: u64,
    /// Most new grants in one request.
    pub max_new_grants: usize,
    /// Whether credentials may outlive the app session's `exp`.
    pub outlive_session: bool,
}

/// Revocation: the list every instance reads, and the `x-ably-revocation-key` claim.
#[derive(Debug, Clone)]
pub struct RevocationSettings {
    /// Where the list is (`CAPSIGN_REVOCATIONS`), if anywhere.
    pub list: Option<Location>,
    /// How often it is read again.
    pub refresh: Duration,
    /// After this long without a successful read, every held grant is re-checked.
    pub max_stale: Duration,
    /// The `x-ably-revocation-key` claim of minted JWTs.
    pub key: Option<ClaimTemplate>,
}

/// The settings of the `http` module.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Origins (exact `scheme://host[:port]`) whose pages may call capsign cross-site, with
    /// credentials. Empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// `Host` values served; empty: any (DNS-rebinding protection when set).
    pub allowed_hosts: Vec<String>,
    /// Largest request body.
    pub max_body: usize,
    /// Time a client has to send its body.
    pub body_timeout: Duration,
    /// Front proxies (`CAPSIGN_TRUSTED_PROXIES`): the access line follows `X-Forwarded-For`
    /// from them to the client's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Why this instance must not pass a health check, if it must not: demo mode started by a
    /// platform's `PORT` (a container), where it listens on loopback only and nothing outside
    /// can reach it. `/healthz` and `/readyz` then answer 503 with this.
    pub unhealthy: Option<String>,
}

/// The settings of the `server` module.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where `/metrics` is served, if anywhere (a listener of its own, so it is never public
    /// by accident).
    pub metrics_listen: Option<SocketAddr>,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Time a response may wait for the client to take it.
    pub write_timeout: Duration,
    /// How long requests are still served after SIGTERM, `/readyz` answering 503.
    pub shutdown_delay: Duration,
    /// How long in-flight requests then get to complete.
    pub shutdown_grace: Duration,
    /// How long a failed start-up fetch is retried before the process gives up.
    pub startup_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one address, except from `trusted_proxies`.
    pub max_connections_per_peer: usize,
    /// Addresses exempt from the per-peer limit (`CAPSIGN_TRUSTED_PROXIES`: a load balancer
    /// is one peer carrying everyone's connections).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(&move |k| map.get(k).cloned(), None)
    }

    const KEY: &str = crate::testing::COOKIE_KEY; // 32 bytes
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn empty_environment_is_demo() {
        let s = load(&[]).unwrap();
        assert!(s.is_demo());
        assert_eq!(s.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(s.flow.format, Format::Jwt);
        assert_eq!(s.policy.rules, Some(RulesSource::Demo));
        assert_eq!(s.demo_defaults.len(), 4);
    }

    #[test]
    fn demo_refused_off_loopback() {
        let e = load(&[("CAPSIGN_LISTEN", "0.0.0.0:3000")]).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_IDENTITY");
    }

    #[test]
    fn every_setting_has_a_distinct_name_and_a_doc() {
        let mut names: Vec<&str> = TABLE.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
        for d in TABLE {
            assert!(!d.doc.is_empty(), "{}", d.name);
            assert!(d.name == "ABLY_API_KEY" || d.name.starts_with("CAPSIGN_"));
        }
        let help = help();
        for d in TABLE {
            assert!(help.contains(d.name), "{} missing from --help", d.name);
        }
    }

    /// An empty variable is an invalid value (naming the variable), never "unset".
    #[test]
    fn empty_values_are_invalid_not_unset() {
        for d in TABLE {
            let e = load(&[(d.name, "")]).unwrap_err();
            assert_eq!(e.setting, d.name);
            assert!(e.problem.contains("empty"), "{e}");
        }
        let e = load(&[("CAPSIGN_SESSION_SECRET", "  ")]).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_SESSION_SECRET");
    }

    macro_rules! bad_settings {
        ($($case:ident: [$(($k:literal, $v:expr)),*] => $setting:literal;)*) => {$(
            #[test]
            fn $case() {
                let e = load(&[$(($k, $v)),*]).unwrap_err();
                assert_eq!(e.setting, $setting, "{e}");
            }
        )*};
    }

    bad_settings! {
        bad_ably_key: [("ABLY_API_KEY", "nope")] => "ABLY_API_KEY";
        bad_listen: [("CAPSIGN_LISTEN", "here")] => "CAPSIGN_LISTEN";
        short_cookie_key: [("CAPSIGN_COOKIE_KEY", "c2hvcnQ=")] => "CAPSIGN_COOKIE_KEY";
        cookie_key_not_base64: [("CAPSIGN_COOKIE_KEY", "%%%")] => "CAPSIGN_COOKIE_KEY";
        bad_format: [("CAPSIGN_FORMAT", "xml")] => "CAPSIGN_FORMAT";
        bad_ttl: [("CAPSIGN_TTL", "1 fortnight")] => "CAPSIGN_TTL";
        ttl_max_over_ably: [("CAPSIGN_TTL_MAX", "25h")] => "CAPSIGN_TTL_MAX";
        ttl_out_of_order: [("CAPSIGN_TTL", "30s")] => "CAPSIGN_TTL";
        bad_key_capability: [("CAPSIGN_KEY_CAPABILITY", "{\"a\":[]}")] => "CAPSIGN_KEY_CAPABILITY";
        short_session_secret: [("CAPSIGN_SESSION_SECRET", "short")] => "CAPSIGN_SESSION_SECRET";
        jwt_without_key: [("CAPSIGN_IDENTITY", "jwt")] => "CAPSIGN_IDENTITY";
        two_session_keys: [("CAPSIGN_SESSION_SECRET", SECRET),
            ("CAPSIGN_SESSION_PUBLIC_KEY", "/k.pem")] => "CAPSIGN_SESSION_SECRET";
        no_rules_in_production: [("CAPSIGN_SESSION_SECRET", SECRET)] => "CAPSIGN_RULES";
        header_without_proxies: [("CAPSIGN_IDENTITY", "header")] => "CAPSIGN_TRUSTED_PROXIES";
        regrant_after_max_age: [("CAPSIGN_REGRANT_AFTER", "2d")] => "CAPSIGN_REGRANT_AFTER";
        short_policy_secret: [("CAPSIGN_POLICY_SECRET", "short")] => "CAPSIGN_POLICY_SECRET";
        policy_url_not_http: [("CAPSIGN_POLICY_URL", "ftp://x")] => "CAPSIGN_POLICY_URL";
        cors_wildcard: [("CAPSIGN_CORS_ORIGINS", "*")] => "CAPSIGN_CORS_ORIGINS";
        header_timeout_zero: [("CAPSIGN_HEADER_TIMEOUT", "0s")] => "CAPSIGN_HEADER_TIMEOUT";
        // Issue 27 (5): upper bounds, and secrets that must differ.
        max_grants_unbounded: [("CAPSIGN_MAX_GRANTS", "1000000")] => "CAPSIGN_MAX_GRANTS";
        max_new_grants_unbounded: [("CAPSIGN_MAX_NEW_GRANTS", "1000000")] => "CAPSIGN_MAX_NEW_GRANTS";
        max_new_grants_over_max_grants: [("CAPSIGN_MAX_GRANTS", "50"),
            ("CAPSIGN_MAX_NEW_GRANTS", "100")] => "CAPSIGN_MAX_NEW_GRANTS";
        max_body_unbounded: [("CAPSIGN_MAX_BODY", "1000000000")] => "CAPSIGN_MAX_BODY";
        embedded_secret_is_the_session_secret: [("CAPSIGN_SESSION_SECRET", SECRET),
            ("CAPSIGN_EMBEDDED_SECRET", SECRET)] => "CAPSIGN_EMBEDDED_SECRET";
    }

    /// Issue 27 (5): plain http off loopback is named at start-up; loopback and https are not.
    #[test]
    fn plain_http_off_loopback_is_warned_about() {
        let with = |url: &str| {
            load(&[
                ABLY,
                COOKIE,
                RULES,
                SESSION,
                ("CAPSIGN_POLICY_URL", url),
                (
                    "CAPSIGN_POLICY_SECRET",
                    "a-policy-secret-of-at-least-32-characters",
                ),
            ])
            .unwrap()
            .warnings()
        };
        let w = with("http://policy.internal:8080/decide");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("CAPSIGN_POLICY_URL is plain http to policy.internal"),
            "{w:?}"
        );
        for quiet in [
            "https://policy.internal/decide",
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "http://[::1]:9/x",
        ] {
            assert!(with(quiet).is_empty(), "{quiet}: {:?}", with(quiet));
        }
    }

    /// Issue 27 (5): a misspelt variable is refused by name, with the setting it meant.
    #[test]
    fn unknown_capsign_variables_are_refused() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(refuse_unknown_variables(names(&["PATH", "CAPSIGN_DENY", "PORT"])).is_ok());
        let e = refuse_unknown_variables(names(&["HOME", "CAPSIGN_COOKIE_KYE"])).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_COOKIE_KYE");
        assert!(
            e.problem.contains("did you mean CAPSIGN_COOKIE_KEY?"),
            "{e}"
        );
        let e = refuse_unknown_variables(names(&["CAPSIGN_WHATEVER_ELSE"])).unwrap_err();
        assert!(!e.problem.contains("did you mean"), "{e}");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    /// Issue 28 (3): every secret can be given as `NAME_FILE`, as container platforms mount
    /// secrets; a trailing line break is not part of it; both forms at once, an unreadable or
    /// empty file is refused by name; `check` says where it came from, never what it is.
    #[test]
    fn secrets_are_read_from_files() {
        let dir = std::env::temp_dir().join(format!("capsign-secret-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let cookie = file("cookie", &format!("{KEY}\n"));
        let ably = file("ably", "app.key:from-a-file\r\n");
        let mut env = crate::testing::env(&[]);
        env.remove("CAPSIGN_COOKIE_KEY");
        env.remove("ABLY_API_KEY");
        env.insert("CAPSIGN_COOKIE_KEY_FILE".into(), cookie.clone());
        env.insert("ABLY_API_KEY_FILE".into(), ably);
        let get = |env: &std::collections::HashMap<String, String>| {
            let env = env.clone();
            move |k: &str| env.get(k).cloned()
        };
        let s = Settings::load(&get(&env), None).unwrap();
        assert_eq!(s.ably.key.name, "app.key");
        let shown = effective(&get(&env), None).unwrap();
        let cookie_shown = shown
            .iter()
            .find(|e| e.name == "CAPSIGN_COOKIE_KEY")
            .unwrap();
        assert_eq!(cookie_shown.value, "<redacted>");
        assert!(cookie_shown.source.contains(&cookie), "{cookie_shown:?}");
        assert!(refuse_unknown_variables(env.keys().cloned()).is_ok());

        let mut both = env.clone();
        both.insert("CAPSIGN_COOKIE_KEY".into(), KEY.into());
        let e = Settings::load(&get(&both), None).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_COOKIE_KEY_FILE");
        assert!(
            e.problem.contains("set together with CAPSIGN_COOKIE_KEY"),
            "{e}"
        );
        for (text, problem) in [
            (None, "cannot read"),
            (Some(""), "is empty"),
            (Some("\n"), "is empty"),
        ] {
            let mut bad = env.clone();
            let path = match text {
                Some(t) => file("bad", t),
                None => dir.join("missing").display().to_string(),
            };
            bad.insert("CAPSIGN_COOKIE_KEY_FILE".into(), path);
            let e = Settings::load(&get(&bad), None).unwrap_err();
            assert_eq!(e.setting, "CAPSIGN_COOKIE_KEY_FILE");
            assert!(e.problem.contains(problem), "{e}");
        }
        // Only secrets have a file form.
        let e = refuse_unknown_variables(["CAPSIGN_RULES_FILE".to_owned()]).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_RULES_FILE");
        let _ = std::fs::remove_dir_all(&dir);
    }

    const ABLY: (&str, &str) = ("ABLY_API_KEY", "app.key:secret");
    const COOKIE: (&str, &str) = ("CAPSIGN_COOKIE_KEY", KEY);
    const RULES: (&str, &str) = ("CAPSIGN_RULES", "/etc/capsign/rules.toml");
    const SESSION: (&str, &str) = ("CAPSIGN_SESSION_SECRET", SECRET);

    /// Issue 16 (1a): a production configuration without an identity source used to start in
    /// demo identity (anyone could log in as anyone at `/login`, signed with the real key).
    #[test]
    fn production_settings_without_an_identity_source_are_refused() {
        for vars in [
            &[ABLY, COOKIE, RULES][..],
            &[ABLY][..],
            &[RULES][..],
            &[("CAPSIGN_POLICY_URL", "https://app.example/policy")][..],
        ] {
            let e = load(vars).unwrap_err();
            assert_eq!(e.setting, "CAPSIGN_SESSION_SECRET", "{vars:?}: {e}");
            assert!(e.problem.contains("CAPSIGN_SESSION_JWKS"), "{e}");
        }
        // Asked for explicitly, demo identity is still there (on loopback).
        let s = load(&[ABLY, RULES, ("CAPSIGN_IDENTITY", "demo")]).unwrap();
        assert!(s.is_demo());
    }

    /// Issue 16 (1b): a real identity without the Ably key or the cookie key used to sign with
    /// the demo key, or seal with a random per-process key (every grant lost whenever a load
    /// balancer switched instance).
    #[test]
    fn production_settings_need_the_ably_and_cookie_keys() {
        let e = load(&[SESSION, RULES, COOKIE]).unwrap_err();
        assert_eq!(e.setting, "ABLY_API_KEY", "{e}");
        let e = load(&[SESSION, RULES, ABLY]).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_COOKIE_KEY", "{e}");
        let e = load(&[SESSION, RULES, ("CAPSIGN_LISTEN", "0.0.0.0:8080")]).unwrap_err();
        assert_eq!(e.setting, "ABLY_API_KEY", "{e}");
        assert!(
            e.problem.contains("ABLY_API_KEY") && e.problem.contains("CAPSIGN_COOKIE_KEY"),
            "both named: {e}"
        );
        let s = load(&[SESSION, RULES, ABLY, COOKIE]).unwrap();
        assert!(s.demo_defaults.is_empty());
    }

    #[test]
    fn cookie_key_lists() {
        let keys = CookieKeys::parse(&format!("2:{KEY}, 1:{KEY}")).unwrap();
        assert_eq!(keys.signing().0, 2);
        assert_eq!(keys.all().map(|(id, _)| id).collect::<Vec<_>>(), [2, 1]);
        assert!(CookieKeys::parse(&format!("{KEY},{KEY}")).is_err());
        assert!(CookieKeys::parse(&format!("1:{KEY},1:{KEY}")).is_err());
        assert!(CookieKeys::parse(&format!("0:{KEY}")).is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = load(&[
            ("ABLY_API_KEY", "app.key:TOPSECRETVALUE"),
            ("CAPSIGN_COOKIE_KEY", KEY),
            (
                "CAPSIGN_SESSION_SECRET",
                "SESSIONSECRET-0123456789abcdef-0123",
            ),
            ("CAPSIGN_POLICY_URL", "http://127.0.0.1:1/"),
            (
                "CAPSIGN_POLICY_SECRET",
                "POLICYSECRET-0123456789abcdef-0123",
            ),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        for secret in ["TOPSECRETVALUE", "SESSIONSECRET", "POLICYSECRET"] {
            assert!(!shown.contains(secret), "{secret} shown");
        }
        // The cookie key's bytes, in any of the forms Debug might print them.
        assert!(!shown.contains(KEY) && !shown.contains("48, 49, 50, 51"));
        assert!(shown.contains("app.key"));
    }

    #[test]
    fn file_settings_and_env_precedence() {
        let dir = std::env::temp_dir().join(format!("capsign-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "identity = \"demo\"\nformat = \"tokenRequest\"\nttl = \"10m\"\n",
        )
        .unwrap();
        let s = Settings::load(&|_| None, Some(&path)).unwrap();
        assert_eq!(s.flow.format, Format::TokenRequest);
        assert_eq!(s.flow.ttl.default_ms, 600_000);
        let s = Settings::load(
            &|k| (k == "CAPSIGN_FORMAT").then(|| "jwt".to_owned()),
            Some(&path),
        )
        .unwrap();
        assert_eq!(s.flow.format, Format::Jwt);
        std::fs::write(&path, "fromat = \"jwt\"\n").unwrap();
        let e = Settings::load(&|_| None, Some(&path)).unwrap_err();
        assert!(e.problem.contains("fromat"), "{e}");
        std::fs::write(&path, "ttl = \"1x\"\n").unwrap();
        let e = Settings::load(&|_| None, Some(&path)).unwrap_err();
        assert!(e.setting.starts_with("ttl in "), "{e}");
        std::fs::write(&path, "ably_api_key = \"\"\n").unwrap();
        let e = Settings::load(&|_| None, Some(&path)).unwrap_err();
        assert!(e.problem.contains("empty"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The configuration table (`docs/configuration.md`) lists exactly the settings of
    /// [`TABLE`].
    #[test]
    fn the_configuration_table_lists_every_setting() {
        let section = include_str!("../../../../docs/configuration.md");
        let mut in_readme: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| l.split('|').nth(1).unwrap_or_default().split('`'))
            .filter(|w| w.starts_with("CAPSIGN_") || *w == "ABLY_API_KEY")
            .collect();
        in_readme.sort_unstable();
        let mut in_table: Vec<&str> = TABLE.iter().map(|d| d.name).collect();
        in_table.sort_unstable();
        assert_eq!(in_readme, in_table);
    }

    /// Each row of the configuration table shows the default its settings are declared with in
    /// [`TABLE`] (formatting aside: backticks; a row of several settings shows theirs joined by
    /// ` / `), so the documentation cannot drift from what capsign does.
    #[test]
    fn the_configuration_table_shows_the_declared_defaults() {
        let section = include_str!("../../../../docs/configuration.md");
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (Some(names), Some(shown)) = (cells.get(1), cells.get(2)) else {
                panic!("a row without its cells: {row}");
            };
            let declared: Vec<&str> = names
                .split('`')
                .filter_map(|w| TABLE.iter().find(|d| d.name == w))
                .map(|d| d.default)
                .collect();
            assert!(!declared.is_empty(), "a row naming no setting: {row}");
            let expected = if declared.iter().all(|d| d.is_empty()) {
                String::new()
            } else {
                declared.join(" / ")
            };
            assert_eq!(shown.replace('`', ""), expected, "{names}");
        }
    }

    /// The table is where defaults come from: a `{"value", "rule"}` default is shown as
    /// `value (rule)`, and a configuration that sets none of them gets the declared values, with
    /// the rules applied, and what the words of the others say.
    #[test]
    fn unset_settings_take_the_declared_defaults() {
        let shown = |name: &str| {
            TABLE
                .iter()
                .find(|d| d.name == name)
                .map(|d| d.default)
                .unwrap_or_default()
        };
        assert_eq!(shown("CAPSIGN_TTL"), "1h (at most CAPSIGN_TTL_MAX)");
        assert_eq!(shown("CAPSIGN_SHUTDOWN_DELAY"), "10s (0s in demo mode)");
        assert_eq!(shown("CAPSIGN_TTL_MAX"), "24h (1h with revocable tokens)");
        assert_eq!(
            shown("CAPSIGN_LOG_FORMAT"),
            "text (json when AWS_LAMBDA_LOG_FORMAT=JSON, and in a Worker)"
        );
        let revocable = load(&[
            SESSION,
            RULES,
            ABLY,
            COOKIE,
            ("CAPSIGN_REVOCABLE_TOKENS", "true"),
        ]);
        let revocable = revocable.unwrap().flow.ttl;
        assert_eq!(
            (revocable.max_ms, revocable.default_ms),
            (ABLY_REVOCABLE_MAX_TTL_MS, 3_600_000),
            "1h with revocable tokens"
        );

        let s = load(&[
            SESSION,
            RULES,
            ABLY,
            COOKIE,
            ("CAPSIGN_MAX_CONNECTIONS", "8"),
        ])
        .unwrap();
        assert_eq!(s.flow.ttl.default_ms, 3_600_000);
        assert_eq!(s.flow.ttl.max_ms, ABLY_MAX_TTL_MS);
        assert_eq!(s.server.shutdown_delay, Duration::from_secs(10));
        assert_eq!(
            s.server.max_connections_per_peer, 4,
            "half of CAPSIGN_MAX_CONNECTIONS"
        );
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(s.server.metrics_listen.is_none(), "(off)");
        assert!(s.http.cors_origins.is_empty(), "(none)");
        assert!(s.http.allowed_hosts.is_empty(), "(any)");
        let demo = load(&[]).unwrap();
        assert_eq!(
            demo.server.shutdown_delay,
            Duration::ZERO,
            "0s in demo mode"
        );
    }

    /// Every `CAPSIGN_*` name written in the code and the documentation is a setting of [`TABLE`]
    /// (or its `_FILE` / `_AWS` form, or a prefix such as `CAPSIGN_SHUTDOWN_*`): a renamed or
    /// mistyped setting anywhere fails here, not in front of an operator. The deliberate
    /// exceptions (typos the tests feed in, response headers, a benchmark's variable, a client
    /// example's constant) are listed.
    #[test]
    fn every_setting_named_anywhere_exists() {
        const NOT_SETTINGS: &[&str] = &[
            "CAPSIGN_COOKIE_KYE",
            "CAPSIGN_DNY",
            "CAPSIGN_WHATEVER_ELSE",
            "CAPSIGN_X",
            "CAPSIGN_RULES_FILE",
            "CAPSIGN_DENIED",
            "CAPSIGN_EVICTED",
            "CAPSIGN_GRANTS",
            "CAPSIGN_PARTIAL",
            "CAPSIGN_DHAT_PROFILE",
            "CAPSIGN_URL",
        ];
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let mut files = vec![root.join("README.md")];
        let mut dirs = vec![
            root.join("src"),
            root.join("crates"),
            root.join("docs"),
            root.join("deploy"),
            root.join("scripts"),
        ];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // `scripts/` before it exists
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.ends_with("target") || path.ends_with("node_modules") {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        let known = |name: &str| {
            let base = name
                .strip_suffix("_FILE")
                .or_else(|| name.strip_suffix("_AWS"))
                // A Worker's file contents (`crates/capsign-worker/src/config.rs`).
                .or_else(|| name.strip_suffix("_TEXT"))
                .unwrap_or(name);
            TABLE
                .iter()
                .any(|d| d.name == base || d.name.starts_with(name) && name.ends_with('_'))
                || NOT_SETTINGS.contains(&name)
        };
        let mut unknown = Vec::new();
        for file in &files {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let mut rest = text.as_str();
            while let Some(at) = rest.find("CAPSIGN_") {
                let tail = rest.split_at(at).1;
                let end = tail
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(tail.len());
                let name = tail.split_at(end).0;
                if !known(name) {
                    unknown.push(format!("{}: {name}", file.display()));
                }
                rest = tail.split_at(end.max(1)).1;
            }
        }
        assert!(unknown.is_empty(), "names of no setting: {unknown:#?}");
    }
}
