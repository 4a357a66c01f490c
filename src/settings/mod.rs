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

mod help;
mod load;
mod parse;
mod source;
mod table;
#[cfg(test)]
mod tests;
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
    fn new(setting: &str, problem: impl Into<String>) -> SettingsError {
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
        location: JwksLocation,
        /// The algorithms its keys may verify.
        algorithms: Vec<Algorithm>,
        /// Background refresh interval (URL only).
        refresh: Duration,
        /// Least time between fetches caused by unknown `kid`s (URL only).
        min_refresh: Duration,
        /// Whether the periodic refresh runs in a spawned task (true for a server; see
        /// [`Settings::for_lambda`]).
        refresh_in_background: bool,
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
