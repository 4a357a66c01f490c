//! Configuration: read once at start-up, checked, and turned into typed values.
//!
//! Every setting comes from an environment variable (so a serverless function needs no file)
//! or from the TOML file given with `--config`, under the same name in lower case without the
//! `CAPSIGN_` prefix (`CAPSIGN_COOKIE_KEY` is `cookie_key`, `ABLY_API_KEY` is
//! `ably_api_key`). The environment wins over the file. Nothing is read again after
//! [`Config::load`]; request handlers get a `&Config` of decoded keys and compiled rules.
//!
//! With nothing set, capsign runs in demo mode: a demo Ably key, demo identity, a random
//! cookie key and the built-in example rules, allowed only on a loopback address.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::Sha256;

use http::Uri;

use crate::ably::AblyRest;
use crate::capability::CapabilitySet;
use crate::client::{HttpClient, parse_url};
use crate::grants::{GrantKey, GrantKeys, Sealer};
use crate::identity::{
    DemoIdentity, HeaderIdentity, IdentityConfig, JwksIdentity, JwtIdentity, SessionClaims,
    SessionKey,
};
use crate::jwks::JwksState;
use crate::policy::Policy;
use crate::token::{ABLY_MAX_TTL_MS, ABLY_REVOCABLE_MAX_TTL_MS, AblyKey};
use crate::webhook::Webhook;

/// Where capsign listens when `CAPSIGN_LISTEN` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// The grant cookie's name: `__Host-` makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`, which stops sibling subdomains from planting a cookie.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-capsign";
/// Credential lifetime when the client asks for none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Shortest credential lifetime; Ably renews about 30 s before expiry, so less is churn.
pub const DEFAULT_TTL_MIN: Duration = Duration::from_secs(60);
/// Grants approved longer ago than this are re-checked with the next request's new grants.
pub const DEFAULT_REGRANT_AFTER: Duration = Duration::from_secs(3600);
/// Grants approved longer ago than this are dropped unless re-approved; also the cookie's
/// maximum age, since a cookie older than this could hold nothing usable.
pub const DEFAULT_GRANT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How far in the future a cookie's issue time may lie (clock differences within a fleet).
pub const COOKIE_FUTURE_SKEW_S: u64 = 60;
/// Most new grants one request may ask for.
pub const DEFAULT_MAX_NEW_GRANTS: usize = 100;
/// Largest request body, in bytes.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024;
/// The budget for the whole `Set-Cookie` header value. Browsers drop a cookie whose name and
/// value exceed 4096 bytes without a word; capsign never sends one that large.
pub const SET_COOKIE_BUDGET: usize = 4096;
/// The shortest cookie secret, in bytes.
pub const MIN_COOKIE_KEY_LEN: usize = 32;

/// The Ably key used when none is configured. Ably refuses it: it is for trying capsign out.
pub const DEMO_ABLY_KEY: &str = "demoap.demoky:capsign-demo-secret-not-for-production";
/// The rules used in demo mode.
pub const DEMO_RULES: &str = include_str!("../examples/rules.toml");

const HKDF_DEMO_INFO: &[u8] = b"capsign demo session v1 hmac-sha256";

/// A setting that could not be used. Names the variable (or file key) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// `CAPSIGN_X` or `x in FILE`.
    pub setting: String,
    /// What is wrong, and what to do.
    pub problem: String,
}

/// Which credential `/auth` mints when the request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `auto`: a JWT unless it would be over 8 KB, then a TokenRequest.
    Auto,
    /// `jwt`: an Ably JWT.
    Jwt,
    /// `token`: capsign asks Ably for the token (not in this version).
    Token,
    /// `tokenRequest`: a signed TokenRequest.
    TokenRequest,
}

impl Format {
    /// Parses the `format` parameter or setting.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "jwt" => Some(Format::Jwt),
            "tokenRequest" => Some(Format::TokenRequest),
            "token" => Some(Format::Token),
            "auto" => Some(Format::Auto),
            _ => None,
        }
    }
}

/// What happens to a request that asks for something the policy denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyMode {
    /// Leave the denied grants out, name them in `X-Capsign-Denied`, answer 200.
    Omit,
    /// Answer the whole request with 403/40160.
    Reject,
}

/// What happens when a merge would make the cookie too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the grants approved longest ago, name them in `X-Capsign-Evicted`.
    Evict,
    /// Refuse the request with 400/40000: the client keeps what it held.
    Reject,
}

/// Credential lifetime bounds, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlBounds {
    /// When the client asks for none.
    pub default_ms: u64,
    /// Shorter requests are raised to this.
    pub min_ms: u64,
    /// Longer requests are lowered to this (never above Ably's limit).
    pub max_ms: u64,
}

/// Everything capsign needs, decoded and checked.
pub struct Config {
    /// The listen address.
    pub listen: SocketAddr,
    /// The Ably key credentials are signed with.
    pub ably: AblyKey,
    /// The Ably key's own capability, when known: minted sets are intersected with it so that
    /// clients are never surprised by Ably's 40160.
    pub key_capability: Option<CapabilitySet>,
    /// How users are identified.
    pub identity: IdentityConfig,
    /// The rules (none when only a webhook decides).
    pub policy: Policy,
    /// The policy webhook, deciding what no rule matches.
    pub webhook: Option<Webhook>,
    /// Ably's REST API, for `format=token` and the clock correction.
    pub ably_rest: AblyRest,
    /// Whether to correct the clock from Ably's `/time` at start-up.
    pub ably_time: bool,
    /// Seals and opens grant cookies.
    pub sealer: Sealer,
    /// Default credential format.
    pub format: Format,
    /// Deny mode.
    pub deny: DenyMode,
    /// Cookie overflow policy.
    pub overflow: Overflow,
    /// The grant cookie's `SameSite`: `Lax` unless capsign serves another site's pages.
    pub same_site: ::cookie::SameSite,
    /// Origins (exact `scheme://host[:port]`) whose pages may call capsign cross-site, with
    /// credentials. Empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// Credential lifetimes.
    pub ttl: TtlBounds,
    /// Seconds after which a grant is re-checked.
    pub regrant_after: u64,
    /// Seconds after which a grant is dropped unless re-approved; also the cookie's max age.
    pub grant_max_age: u64,
    /// Most new grants in one request.
    pub max_new_grants: usize,
    /// Largest request body.
    pub max_body: usize,
    /// Settings that fell back to demo values, for the start-up banner.
    pub demo_defaults: Vec<&'static str>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every key type here redacts itself.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("ably", &self.ably)
            .field("key_capability", &self.key_capability)
            .field("identity", &self.identity)
            .field("sealer", &self.sealer)
            .field("webhook", &self.webhook)
            .field("ably_rest", &self.ably_rest)
            .field("ably_time", &self.ably_time)
            .field("format", &self.format)
            .field("deny", &self.deny)
            .field("overflow", &self.overflow)
            .field("same_site", &self.same_site)
            .field("cors_origins", &self.cors_origins)
            .field("ttl", &self.ttl)
            .field("regrant_after", &self.regrant_after)
            .field("grant_max_age", &self.grant_max_age)
            .field("max_new_grants", &self.max_new_grants)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// Where settings come from: the environment, then the file.
struct Source<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<(String, toml::Table)>,
}

impl Source<'_> {
    /// The value of `var` and the name to blame in errors. Empty values count as unset.
    fn get(&self, var: &str) -> Option<(String, String)> {
        if let Some(v) = (self.env)(var).filter(|v| !v.is_empty()) {
            return Some((v, var.to_owned()));
        }
        let (path, table) = self.file.as_ref()?;
        let key = var
            .strip_prefix("CAPSIGN_")
            .unwrap_or(var)
            .to_ascii_lowercase();
        let v = match table.get(&key)? {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        };
        Some((v, format!("{key} in {path}")))
    }

    fn parse<T>(
        &self,
        var: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(var) {
            None => Ok(None),
            Some((v, setting)) => parse(v.trim())
                .map(Some)
                .map_err(|problem| ConfigError { setting, problem }),
        }
    }
}

/// Every setting capsign reads, so a typo in the file is caught.
const SETTINGS: &[&str] = &[
    "ABLY_API_KEY",
    "CAPSIGN_LISTEN",
    "CAPSIGN_COOKIE_KEY",
    "CAPSIGN_COOKIE_NAME",
    "CAPSIGN_COOKIE_OVERFLOW",
    "CAPSIGN_COOKIE_SAMESITE",
    "CAPSIGN_CORS_ORIGINS",
    "CAPSIGN_IDENTITY",
    "CAPSIGN_SESSION_SECRET",
    "CAPSIGN_SESSION_PUBLIC_KEY",
    "CAPSIGN_SESSION_JWKS",
    "CAPSIGN_SESSION_ALGORITHMS",
    "CAPSIGN_SESSION_JWKS_REFRESH",
    "CAPSIGN_SESSION_JWKS_MIN_REFRESH",
    "CAPSIGN_IDENTITY_HEADER",
    "CAPSIGN_TRUSTED_PROXIES",
    "CAPSIGN_SESSION_COOKIE",
    "CAPSIGN_CLIENT_ID_CLAIM",
    "CAPSIGN_SESSION_ISSUER",
    "CAPSIGN_SESSION_AUDIENCE",
    "CAPSIGN_RULES",
    "CAPSIGN_POLICY_URL",
    "CAPSIGN_POLICY_SECRET",
    "CAPSIGN_POLICY_TIMEOUT",
    "CAPSIGN_POLICY_MAX_RESPONSE",
    "CAPSIGN_ABLY_REST_URL",
    "CAPSIGN_ABLY_TIMEOUT",
    "CAPSIGN_ABLY_TIME",
    "CAPSIGN_FORMAT",
    "CAPSIGN_DENY",
    "CAPSIGN_TTL",
    "CAPSIGN_TTL_MIN",
    "CAPSIGN_TTL_MAX",
    "CAPSIGN_REGRANT_AFTER",
    "CAPSIGN_GRANT_MAX_AGE",
    "CAPSIGN_KEY_CAPABILITY",
    "CAPSIGN_REVOCABLE_TOKENS",
    "CAPSIGN_MAX_NEW_GRANTS",
    "CAPSIGN_MAX_BODY",
];

/// One exact origin of `CAPSIGN_CORS_ORIGINS`: `http(s)://host[:port]`, nothing after, never
/// `null` or `*` (which would hand signed credentials to any page).
fn cors_origin(o: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{o:?} is not an origin: {why}"));
    let Some((scheme, authority)) = o.split_once("://") else {
        return bad("expected scheme://host[:port], such as https://app.example.com");
    };
    if scheme != "https" && scheme != "http" {
        return bad("the scheme must be https or http");
    }
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@', '*', ' '])
        || authority.parse::<http::uri::Authority>().is_err()
    {
        return bad("expected a host and optional port, with no path, wildcard or user");
    }
    Ok(o.to_ascii_lowercase())
}

/// A duration from 1 ms up to `max_s` seconds.
fn bounded_duration(max_s: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |s| {
        let d = duration(s)?;
        if d.is_zero() || d > Duration::from_secs(max_s) {
            return Err(format!("expected a duration above 0 and at most {max_s}s"));
        }
        Ok(d)
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration such as 90s, 10m or 1h"))
}

fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn positive(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "expected a positive whole number".into())
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Parses `CAPSIGN_COOKIE_KEY`: one base64 secret (key id 1), or a comma-separated list of
/// `id:base64`, where the first key signs and every key verifies.
fn cookie_keys(s: &str) -> Result<(GrantKeys, Vec<u8>), String> {
    let mut keys = Vec::new();
    let mut signing_secret = Vec::new();
    for (i, part) in s.split(',').map(str::trim).enumerate() {
        let (id, b64) = match part.split_once(':') {
            Some((id, b64)) => (
                id.parse::<u8>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| format!("key id {id:?} is not a number from 1 to 255"))?,
                b64,
            ),
            None if i == 0 && !s.contains(',') => (1, part),
            None => return Err("in a list, write each key as id:base64".into()),
        };
        let secret = STANDARD
            .decode(b64)
            .or_else(|_| URL_SAFE_NO_PAD.decode(b64))
            .map_err(|_| format!("key {id} is not base64"))?;
        if secret.len() < MIN_COOKIE_KEY_LEN {
            return Err(format!(
                "key {id} is {} bytes; use at least {MIN_COOKIE_KEY_LEN} random bytes \
                 (openssl rand -base64 32)",
                secret.len()
            ));
        }
        if i == 0 {
            signing_secret = secret.clone();
        }
        keys.push(GrantKey::derive(id, &secret));
    }
    let keys = GrantKeys::new(keys).ok_or("two keys share an id")?;
    Ok((keys, signing_secret))
}

impl Config {
    /// Reads and checks every setting from `env` (a lookup such as `std::env::var`) and the
    /// optional TOML `file`.
    ///
    /// # Errors
    ///
    /// The first setting that is missing or invalid, by name.
    pub fn load(
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let file = match file {
            None => None,
            Some(p) => {
                let shown = p.display().to_string();
                let err = |problem| ConfigError {
                    setting: "--config".into(),
                    problem,
                };
                let text = std::fs::read_to_string(p)
                    .map_err(|e| err(format!("cannot read {shown}: {e}")))?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| err(format!("{shown} is not valid TOML: {e}")))?;
                for key in table.keys() {
                    let known = SETTINGS.iter().any(|s| {
                        s.strip_prefix("CAPSIGN_")
                            .unwrap_or(s)
                            .eq_ignore_ascii_case(key)
                    });
                    if !known {
                        return Err(err(format!("unknown setting {key:?} in {shown}")));
                    }
                }
                Some((shown, table))
            }
        };
        let src = Source { env, file };
        let mut demo_defaults = Vec::new();

        let listen = src
            .parse("CAPSIGN_LISTEN", |s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| "expected an address such as 127.0.0.1:3000 or [::]:8080".into())
            })?
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3000)));

        let ably = match src.parse("ABLY_API_KEY", |s| {
            AblyKey::parse(s).map_err(|e| e.to_string())
        })? {
            Some(k) => k,
            None => {
                demo_defaults.push("ABLY_API_KEY (demo key; Ably will refuse its credentials)");
                AblyKey::parse(DEMO_ABLY_KEY).map_err(|e| ConfigError {
                    setting: "ABLY_API_KEY".into(),
                    problem: e.to_string(),
                })?
            }
        };

        let (keys, cookie_secret) = match src.parse("CAPSIGN_COOKIE_KEY", cookie_keys)? {
            Some(k) => k,
            None => {
                demo_defaults.push("CAPSIGN_COOKIE_KEY (random; cookies die with the process)");
                let secret: [u8; 32] = rand::random();
                cookie_keys(&STANDARD.encode(secret)).map_err(|problem| ConfigError {
                    setting: "CAPSIGN_COOKIE_KEY".into(),
                    problem,
                })?
            }
        };
        let cookie_name = src
            .parse("CAPSIGN_COOKIE_NAME", |s| {
                let ok = s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
                ok.then(|| s.to_owned())
                    .ok_or_else(|| "use at most 64 letters, digits and -_.".into())
            })?
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_owned());

        let http = HttpClient::new();
        let identity = Self::identity(&src, &cookie_secret, listen, &http, &mut demo_defaults)?;

        let webhook = match src.parse("CAPSIGN_POLICY_URL", parse_url)? {
            None => None,
            Some(url) => {
                let secret = src.get("CAPSIGN_POLICY_SECRET").map(|(v, _)| v);
                if let Some(s) = &secret {
                    if s.len() < 32 {
                        return Err(ConfigError {
                            setting: "CAPSIGN_POLICY_SECRET".into(),
                            problem: "use at least 32 characters".into(),
                        });
                    }
                }
                let timeout = src
                    .parse("CAPSIGN_POLICY_TIMEOUT", bounded_duration(60))?
                    .unwrap_or(crate::webhook::DEFAULT_TIMEOUT);
                let max_response = src
                    .parse("CAPSIGN_POLICY_MAX_RESPONSE", positive)?
                    .unwrap_or(crate::webhook::DEFAULT_MAX_RESPONSE);
                Some(Webhook::new(
                    url,
                    secret.as_deref().map(str::as_bytes),
                    timeout,
                    max_response,
                    http.clone(),
                ))
            }
        };
        let policy = match src.get("CAPSIGN_RULES") {
            Some((path, setting)) => {
                let text = read_file(&path)
                    .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8".into()))
                    .map_err(|problem| ConfigError {
                        setting: setting.clone(),
                        problem,
                    })?;
                Policy::from_toml(&text).map_err(|e| ConfigError {
                    setting,
                    problem: format!("{path}: {e}"),
                })?
            }
            None if webhook.is_some() => Policy::default(),
            None if identity.is_demo() => {
                demo_defaults.push("CAPSIGN_RULES (examples/rules.toml, built in)");
                Policy::from_toml(DEMO_RULES).map_err(|e| ConfigError {
                    setting: "CAPSIGN_RULES".into(),
                    problem: e.to_string(),
                })?
            }
            None => {
                return Err(ConfigError {
                    setting: "CAPSIGN_RULES".into(),
                    problem: "not set; capsign needs a rules file or a policy webhook \
                              (CAPSIGN_POLICY_URL) to decide grants (see examples/rules.toml)"
                        .into(),
                });
            }
        };
        let ably_rest = AblyRest::new(
            src.parse("CAPSIGN_ABLY_REST_URL", parse_url)?
                .unwrap_or_else(|| Uri::from_static(crate::ably::DEFAULT_REST_URL)),
            src.parse("CAPSIGN_ABLY_TIMEOUT", bounded_duration(60))?
                .unwrap_or(crate::ably::DEFAULT_TIMEOUT),
            http,
        );
        let ably_time = src.parse("CAPSIGN_ABLY_TIME", boolean)?.unwrap_or(false);

        let format = src
            .parse("CAPSIGN_FORMAT", |s| {
                Format::parse(s).ok_or_else(|| "expected jwt, tokenRequest, token or auto".into())
            })?
            .unwrap_or(Format::Jwt);
        let deny = src
            .parse("CAPSIGN_DENY", |s| match s {
                "omit" => Ok(DenyMode::Omit),
                "reject" => Ok(DenyMode::Reject),
                _ => Err("expected omit or reject".into()),
            })?
            .unwrap_or(DenyMode::Omit);
        let overflow = src
            .parse("CAPSIGN_COOKIE_OVERFLOW", |s| match s {
                "reject" => Ok(Overflow::Reject),
                "evict" => Ok(Overflow::Evict),
                _ => Err("expected reject or evict".into()),
            })?
            .unwrap_or(Overflow::Reject);

        let same_site = src
            .parse("CAPSIGN_COOKIE_SAMESITE", |s| match s {
                "lax" => Ok(::cookie::SameSite::Lax),
                "strict" => Ok(::cookie::SameSite::Strict),
                "none" => Ok(::cookie::SameSite::None),
                _ => Err("expected lax, strict or none".into()),
            })?
            .unwrap_or(::cookie::SameSite::Lax);

        let cors_origins = src
            .parse("CAPSIGN_CORS_ORIGINS", |s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(cors_origin)
                    .collect::<Result<Vec<_>, _>>()
            })?
            .unwrap_or_default();

        let revocable = src
            .parse("CAPSIGN_REVOCABLE_TOKENS", boolean)?
            .unwrap_or(false);
        let ably_max = if revocable {
            ABLY_REVOCABLE_MAX_TTL_MS
        } else {
            ABLY_MAX_TTL_MS
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ttl_max = src
            .parse("CAPSIGN_TTL_MAX", |s| {
                let d = ms(duration(s)?);
                (d <= ably_max).then_some(d).ok_or_else(|| {
                    format!(
                        "above Ably's limit of {} h for this key",
                        ably_max / 3_600_000
                    )
                })
            })?
            .unwrap_or(ably_max);
        let ttl_min = src
            .parse("CAPSIGN_TTL_MIN", |s| duration(s).map(ms))?
            .unwrap_or(ms(DEFAULT_TTL_MIN));
        let ttl_default = src
            .parse("CAPSIGN_TTL", |s| duration(s).map(ms))?
            .unwrap_or(ms(DEFAULT_TTL).min(ttl_max));
        if !(1000 <= ttl_min && ttl_min <= ttl_default && ttl_default <= ttl_max) {
            return Err(ConfigError {
                setting: "CAPSIGN_TTL".into(),
                problem: format!(
                    "need 1s <= CAPSIGN_TTL_MIN ({ttl_min} ms) <= CAPSIGN_TTL ({ttl_default} ms) \
                     <= CAPSIGN_TTL_MAX ({ttl_max} ms)"
                ),
            });
        }

        let secs = |d: Duration| d.as_secs();
        let regrant_after = src
            .parse("CAPSIGN_REGRANT_AFTER", |s| duration(s).map(secs))?
            .unwrap_or(secs(DEFAULT_REGRANT_AFTER));
        let grant_max_age = src
            .parse("CAPSIGN_GRANT_MAX_AGE", |s| duration(s).map(secs))?
            .unwrap_or(secs(DEFAULT_GRANT_MAX_AGE));
        if regrant_after == 0 || regrant_after > grant_max_age {
            return Err(ConfigError {
                setting: "CAPSIGN_REGRANT_AFTER".into(),
                problem: "must be at least 1s and at most CAPSIGN_GRANT_MAX_AGE".into(),
            });
        }

        let key_capability = src.parse("CAPSIGN_KEY_CAPABILITY", |s| {
            CapabilitySet::from_json(s).map_err(|e| e.to_string())
        })?;
        let max_new_grants = src
            .parse("CAPSIGN_MAX_NEW_GRANTS", positive)?
            .unwrap_or(DEFAULT_MAX_NEW_GRANTS);
        let max_body = src
            .parse("CAPSIGN_MAX_BODY", positive)?
            .unwrap_or(DEFAULT_MAX_BODY);

        let config = Config {
            listen,
            ably,
            key_capability,
            identity,
            policy,
            webhook,
            ably_rest,
            ably_time,
            sealer: Sealer::new(keys, cookie_name),
            format,
            deny,
            overflow,
            same_site,
            cors_origins,
            ttl: TtlBounds {
                default_ms: ttl_default,
                min_ms: ttl_min,
                max_ms: ttl_max,
            },
            regrant_after,
            grant_max_age,
            max_new_grants,
            max_body,
            demo_defaults,
        };
        config.self_test()?;
        Ok(config)
    }

    fn identity(
        src: &Source<'_>,
        cookie_secret: &[u8],
        listen: SocketAddr,
        http: &HttpClient,
        demo_defaults: &mut Vec<&'static str>,
    ) -> Result<IdentityConfig, ConfigError> {
        let secret = src.get("CAPSIGN_SESSION_SECRET");
        let public = src.get("CAPSIGN_SESSION_PUBLIC_KEY");
        let jwks = src.get("CAPSIGN_SESSION_JWKS");
        let mode = src.parse("CAPSIGN_IDENTITY", |s| match s {
            "jwt" | "header" | "demo" => Ok(s.to_owned()),
            _ => Err("expected jwt, header or demo".into()),
        })?;
        let mode = mode.unwrap_or_else(|| {
            if secret.is_some() || public.is_some() || jwks.is_some() {
                "jwt".into()
            } else {
                "demo".into()
            }
        });
        if mode == "demo" {
            if !listen.ip().is_loopback() {
                return Err(ConfigError {
                    setting: "CAPSIGN_IDENTITY".into(),
                    problem: format!(
                        "demo identity accepts any user name, so capsign refuses it on \
                         {listen}; set CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY or \
                         CAPSIGN_SESSION_JWKS, or listen on 127.0.0.1"
                    ),
                });
            }
            demo_defaults.push("identity (demo: any user name at /login)");
            let hk = hkdf::Hkdf::<Sha256>::new(Some(b"capsign"), cookie_secret);
            let mut key = [0u8; 32];
            // 32 bytes is within HKDF-SHA256's output limit, so expand cannot fail.
            let _ = hk.expand(HKDF_DEMO_INFO, &mut key);
            return Ok(IdentityConfig::Demo(DemoIdentity::new(&key)));
        }
        if mode == "header" {
            let header = src
                .parse("CAPSIGN_IDENTITY_HEADER", |s| {
                    http::HeaderName::from_bytes(s.as_bytes())
                        .map_err(|_| "not a header name".into())
                })?
                .unwrap_or(http::HeaderName::from_static("x-forwarded-user"));
            let trusted = src
                .parse("CAPSIGN_TRUSTED_PROXIES", |s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            p.parse::<ipnet::IpNet>()
                                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                                .map_err(|_| format!("{p:?} is not an IP address or CIDR block"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ConfigError {
                    setting: "CAPSIGN_TRUSTED_PROXIES".into(),
                    problem: "header identity needs the addresses of the proxies that set the \
                              header (IPs or CIDR blocks, comma-separated)"
                        .into(),
                })?;
            return Ok(IdentityConfig::Header(HeaderIdentity::new(header, trusted)));
        }
        let session = SessionClaims {
            cookie: src.get("CAPSIGN_SESSION_COOKIE").map(|(v, _)| v),
            claim: src
                .get("CAPSIGN_CLIENT_ID_CLAIM")
                .map_or_else(|| "sub".to_owned(), |(v, _)| v),
            leeway: crate::identity::DEFAULT_LEEWAY_S,
        };
        let issuer = src.get("CAPSIGN_SESSION_ISSUER").map(|(v, _)| v);
        let audience = src.get("CAPSIGN_SESSION_AUDIENCE").map(|(v, _)| v);
        let chosen = [&secret, &public, &jwks]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if chosen > 1 {
            return Err(ConfigError {
                setting: "CAPSIGN_SESSION_SECRET".into(),
                problem: "set one of CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY and \
                          CAPSIGN_SESSION_JWKS"
                    .into(),
            });
        }
        if let Some((location, setting)) = jwks {
            let allowed = src
                .parse("CAPSIGN_SESSION_ALGORITHMS", |s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(|a| {
                            a.parse::<jsonwebtoken::Algorithm>()
                                .ok()
                                .filter(|alg| crate::jwks::ASYMMETRIC.contains(alg))
                                .ok_or_else(|| {
                                    format!("{a:?}: expected RS256/384/512, PS256/384/512, ES256/384 or EdDSA")
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })?
                .unwrap_or_else(|| crate::jwks::ASYMMETRIC.to_vec());
            let state = if location.starts_with("http://") || location.starts_with("https://") {
                let url = parse_url(&location).map_err(|problem| ConfigError {
                    setting: setting.clone(),
                    problem,
                })?;
                let refresh = src
                    .parse("CAPSIGN_SESSION_JWKS_REFRESH", duration)?
                    .unwrap_or(crate::jwks::DEFAULT_REFRESH);
                let min_refresh = src
                    .parse("CAPSIGN_SESSION_JWKS_MIN_REFRESH", duration)?
                    .unwrap_or(crate::jwks::DEFAULT_MIN_REFRESH);
                JwksState::from_url(url, allowed, refresh, min_refresh, http.clone())
            } else {
                let bytes = read_file(&location).map_err(|problem| ConfigError {
                    setting: setting.clone(),
                    problem,
                })?;
                JwksState::from_file(&bytes, allowed).map_err(|problem| ConfigError {
                    setting,
                    problem: format!("{location}: {problem}"),
                })?
            };
            return Ok(IdentityConfig::Jwks(JwksIdentity::new(
                state, session, issuer, audience,
            )));
        }
        let key_bytes;
        let (key, setting) = match (secret, public) {
            (Some((s, setting)), None) => {
                if s.len() < 32 {
                    return Err(ConfigError {
                        setting,
                        problem: "use at least 32 characters for an HS256 secret".into(),
                    });
                }
                key_bytes = s.into_bytes();
                (
                    SessionKey::Secret(&key_bytes),
                    "CAPSIGN_SESSION_SECRET".to_owned(),
                )
            }
            (None, Some((path, setting))) => {
                key_bytes = read_file(&path).map_err(|problem| ConfigError {
                    setting: setting.clone(),
                    problem,
                })?;
                (SessionKey::Pem(&key_bytes), setting)
            }
            _ => {
                return Err(ConfigError {
                    setting: "CAPSIGN_IDENTITY".into(),
                    problem: "jwt identity needs CAPSIGN_SESSION_SECRET, \
                              CAPSIGN_SESSION_PUBLIC_KEY or CAPSIGN_SESSION_JWKS"
                        .into(),
                });
            }
        };
        JwtIdentity::new(key, session, issuer.as_deref(), audience.as_deref())
            .map(IdentityConfig::Jwt)
            .map_err(|problem| ConfigError { setting, problem })
    }

    /// Mints and verifies one JWT, so a broken crypto backend stops the start, not a request.
    fn self_test(&self) -> Result<(), ConfigError> {
        let err = |problem: String| ConfigError {
            setting: "self-test".into(),
            problem,
        };
        let all =
            CapabilitySet::from_json(r#"{"*":["subscribe"]}"#).map_err(|e| err(e.to_string()))?;
        let jwt = self.ably.jwt(&all, Some("self-test"), 1, 2);
        if jwt.split('.').count() != 3 {
            return Err(err("the minted JWT is malformed".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load(&move |k| map.get(k).cloned(), None)
    }

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    #[test]
    fn empty_environment_is_demo() {
        let c = load(&[]).unwrap();
        assert!(c.identity.is_demo());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.format, Format::Jwt);
        assert!(!c.demo_defaults.is_empty());
    }

    #[test]
    fn demo_refused_off_loopback() {
        let e = load(&[("CAPSIGN_LISTEN", "0.0.0.0:3000")]).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_IDENTITY");
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("ABLY_API_KEY", "nope")], "ABLY_API_KEY"),
            (&[("CAPSIGN_LISTEN", "here")], "CAPSIGN_LISTEN"),
            (&[("CAPSIGN_COOKIE_KEY", "c2hvcnQ=")], "CAPSIGN_COOKIE_KEY"),
            (&[("CAPSIGN_COOKIE_KEY", "%%%")], "CAPSIGN_COOKIE_KEY"),
            (&[("CAPSIGN_FORMAT", "xml")], "CAPSIGN_FORMAT"),
            (&[("CAPSIGN_TTL", "1 fortnight")], "CAPSIGN_TTL"),
            (&[("CAPSIGN_TTL_MAX", "25h")], "CAPSIGN_TTL_MAX"),
            (&[("CAPSIGN_RULES", "/nonexistent.toml")], "CAPSIGN_RULES"),
            (
                &[("CAPSIGN_KEY_CAPABILITY", "{\"a\":[]}")],
                "CAPSIGN_KEY_CAPABILITY",
            ),
            (
                &[("CAPSIGN_SESSION_SECRET", "short")],
                "CAPSIGN_SESSION_SECRET",
            ),
            (&[("CAPSIGN_IDENTITY", "jwt")], "CAPSIGN_IDENTITY"),
            (
                &[("CAPSIGN_SESSION_SECRET", "0123456789abcdef0123456789abcdef")],
                "CAPSIGN_RULES",
            ),
        ];
        for (vars, setting) in cases {
            assert_eq!(load(vars).unwrap_err().setting, *setting, "{vars:?}");
        }
    }

    #[test]
    fn cookie_key_lists() {
        let (keys, _) = cookie_keys(&format!("2:{KEY}, 1:{KEY}")).unwrap();
        assert!(format!("{keys:?}").contains("id: 2"));
        assert!(cookie_keys(&format!("{KEY},{KEY}")).is_err());
        assert!(cookie_keys(&format!("1:{KEY},1:{KEY}")).is_err());
        assert!(cookie_keys(&format!("0:{KEY}")).is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = load(&[
            ("ABLY_API_KEY", "app.key:TOPSECRETVALUE"),
            ("CAPSIGN_COOKIE_KEY", KEY),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("TOPSECRETVALUE"));
        assert!(!shown.contains(KEY));
        assert!(shown.contains("app.key"));
    }

    #[test]
    fn file_settings_and_env_precedence() {
        let dir = std::env::temp_dir().join(format!("capsign-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "format = \"tokenRequest\"\nttl = \"10m\"\n").unwrap();
        let c = Config::load(&|_| None, Some(&path)).unwrap();
        assert_eq!(c.format, Format::TokenRequest);
        assert_eq!(c.ttl.default_ms, 600_000);
        let c = Config::load(
            &|k| (k == "CAPSIGN_FORMAT").then(|| "jwt".to_owned()),
            Some(&path),
        )
        .unwrap();
        assert_eq!(c.format, Format::Jwt);
        std::fs::write(&path, "fromat = \"jwt\"\n").unwrap();
        let e = Config::load(&|_| None, Some(&path)).unwrap_err();
        assert!(e.problem.contains("fromat"), "{e}");
        std::fs::write(&path, "ttl = \"1x\"\n").unwrap();
        let e = Config::load(&|_| None, Some(&path)).unwrap_err();
        assert!(e.setting.starts_with("ttl in "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
