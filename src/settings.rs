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
/// Credential lifetime when the client asks for none (and the maximum allows it).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
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

/// `CAPSIGN_SHUTDOWN_DELAY` outside demo mode.
const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(10);

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

/// One setting of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    /// The environment variable.
    pub name: &'static str,
    /// The built-in default as shown to people (empty: none).
    pub default: &'static str,
    /// One line on what it does.
    pub doc: &'static str,
    /// Whether its value is a secret (never printed).
    pub secret: bool,
}

impl Def {
    /// The key of this setting in a `--config` file.
    pub fn file_key(&self) -> String {
        self.name
            .strip_prefix("CAPSIGN_")
            .unwrap_or(self.name)
            .to_ascii_lowercase()
    }
}

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

/// A secret value: `Debug` shows `<redacted>`, and only [`Secret::expose`] reads it. It has
/// no `PartialEq` on purpose: comparing secrets with `==` is not constant-time; a MAC is
/// compared by its `verify` (nor do the settings types holding one compare).
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret itself, for the module that keys something with it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Declares [`TABLE`] and the raw reading of every setting from one list. Each entry:
/// `field: Type = "NAME", default ("parsed text") | default ["shown only"], secret | plain,
/// parser, "doc";`. A `("…")` default is parsed by the same parser when the setting is unset
/// (so the field is a `Type`); a `["…"]` default is only shown, and the field is an
/// `Option<Type>` that [`Settings::from_given`] resolves.
macro_rules! settings_table {
    ($( $field:ident : $ty:ty = $name:literal, default $default:tt, $secret:ident,
        $parse:expr, $doc:literal; )*) => {
        /// Every setting capsign reads, in the order `--help` and `docs/configuration.md` list them.
        pub const TABLE: &[Def] = &[$(Def {
            name: $name,
            default: settings_table!(@shown $default),
            doc: $doc,
            secret: settings_table!(@secret $secret),
        }),*];

        /// The settings as given, each parsed on its own (defaults of the `("…")` kind
        /// applied), before the checks that span several.
        struct Given {
            $($field: settings_table!(@ty $default, $ty),)*
        }

        impl Given {
            fn read(src: &Source<'_>) -> Result<Given, SettingsError> {
                Ok(Given {
                    $($field: settings_table!(@read src, $name, $parse, $default),)*
                })
            }
        }
    };
    (@shown ($d:literal)) => { $d };
    (@shown [$d:literal]) => { $d };
    (@secret secret) => { true };
    (@secret plain) => { false };
    (@ty ($d:literal), $ty:ty) => { $ty };
    (@ty [$d:literal], $ty:ty) => { Option<$ty> };
    (@read $src:ident, $name:literal, $parse:expr, ($d:literal)) => {
        match $src.parse($name, $parse)? {
            Some(v) => v,
            None => ($parse)($d).map_err(|problem| {
                SettingsError::new($name, format!("built-in default {:?}: {problem}", $d))
            })?,
        }
    };
    (@read $src:ident, $name:literal, $parse:expr, [$d:literal]) => {
        $src.parse($name, $parse)?
    };
}

settings_table! {
    ably_api_key: AblyApiKey = "ABLY_API_KEY", default ["demo key (demo only)"], secret,
        AblyApiKey::parse,
        "The Ably API key, appId.keyId:secret. Signs every credential.";
    listen: SocketAddr = "CAPSIGN_LISTEN", default ("127.0.0.1:3000"), plain,
        parse::socket_addr,
        "Listen address, e.g. [::]:8080.";
    log_format: LogFormat = "CAPSIGN_LOG_FORMAT",
        default ["text (json when AWS_LAMBDA_LOG_FORMAT=JSON)"], plain, LogFormat::parse,
        "Log lines as text or json (one JSON object a line).";
    metrics_listen: SocketAddr = "CAPSIGN_METRICS_LISTEN", default ["(off)"], plain,
        parse::socket_addr,
        "Address of a separate listener serving GET /metrics (Prometheus text); off if unset.";
    cookie_key: CookieKeys = "CAPSIGN_COOKIE_KEY", default ["random (demo only)"], secret,
        CookieKeys::parse,
        "The grant-cookie secret: base64 of 32+ random bytes, or id:base64,id:base64 (first signs, all verify).";
    cookie_name: String = "CAPSIGN_COOKIE_NAME", default ("__Host-capsign"), plain,
        parse::cookie_name,
        "The grant cookie's name (bound into its MAC).";
    max_grants: usize = "CAPSIGN_MAX_GRANTS", default ("256"), plain,
        parse::grant_count,
        "Most grants one client may hold; also the most a request may ask for (at most 1024).";
    cookie_overflow: Overflow = "CAPSIGN_COOKIE_OVERFLOW", default ("reject"), plain,
        Overflow::parse,
        "When a merge would exceed the cookie budget: reject (400) or evict (oldest grants).";
    cookie_samesite: SameSite = "CAPSIGN_COOKIE_SAMESITE", default ("lax"), plain,
        SameSite::parse,
        "The grant cookie's SameSite: lax, strict, or none (capsign on another site).";
    cors_origins: Vec<String> = "CAPSIGN_CORS_ORIGINS", default ["(none)"], plain,
        parse::cors_origins,
        "Comma-separated exact origins whose pages may call capsign cross-origin.";
    allowed_hosts: Vec<String> = "CAPSIGN_ALLOWED_HOSTS", default ["(any)"], plain,
        parse::hosts,
        "Comma-separated Host values served (host or host:port); others get 421.";
    identity: IdentityMode = "CAPSIGN_IDENTITY", default ["jwt if a session key is set, else demo"],
        plain, IdentityMode::parse,
        "How users are identified: jwt, header or demo.";
    session_secret: Secret<String> = "CAPSIGN_SESSION_SECRET", default [""], secret,
        parse::shared_secret,
        "HS256 secret of the app's session JWTs (at least 32 characters).";
    session_public_key: PathBuf = "CAPSIGN_SESSION_PUBLIC_KEY", default [""], plain,
        parse::path,
        "Path of a PEM public key of the session JWTs (RSA, EC or Ed25519).";
    session_jwks: JwksLocation = "CAPSIGN_SESSION_JWKS", default [""], plain,
        JwksLocation::parse,
        "A JWKS document of the identity provider: a file path or an http(s) URL.";
    session_algorithms: Vec<Algorithm> = "CAPSIGN_SESSION_ALGORITHMS",
        default ["all asymmetric"], plain, parse::algorithms,
        "JWKS mode: the algorithms accepted, e.g. RS256 or ES256,EdDSA.";
    session_jwks_refresh: Duration = "CAPSIGN_SESSION_JWKS_REFRESH", default ("1h"), plain,
        parse::duration,
        "How often a JWKS URL is fetched again.";
    session_jwks_min_refresh: Duration = "CAPSIGN_SESSION_JWKS_MIN_REFRESH", default ("1m"),
        plain, parse::duration,
        "At most how often an unknown kid may cause a JWKS fetch.";
    session_cookie: String = "CAPSIGN_SESSION_COOKIE", default [""], plain,
        parse::text,
        "Also accept the session JWT from this cookie.";
    client_id_claim: String = "CAPSIGN_CLIENT_ID_CLAIM", default ("sub"), plain,
        parse::text,
        "The session claim that is the Ably clientId.";
    session_issuer: String = "CAPSIGN_SESSION_ISSUER", default [""], plain,
        parse::text,
        "Required iss of session JWTs.";
    session_audience: String = "CAPSIGN_SESSION_AUDIENCE", default [""], plain,
        parse::text,
        "Required aud of session JWTs.";
    identity_header: HeaderName = "CAPSIGN_IDENTITY_HEADER", default ("x-forwarded-user"),
        plain, parse::header_name,
        "header mode: the header the front proxy sets to the user's id.";
    trusted_proxies: Vec<ipnet::IpNet> = "CAPSIGN_TRUSTED_PROXIES", default [""], plain,
        parse::networks,
        "Front proxies' addresses (IPs or CIDR blocks), comma-separated: in header mode the only \
         peers whose identity header is believed; in any mode, the access log follows their \
         X-Forwarded-For to the client's address.";
    rules: PathBuf = "CAPSIGN_RULES", default ["examples/rules.toml (demo only)"], plain,
        parse::path,
        "Path of the rules file.";
    policy_url: Uri = "CAPSIGN_POLICY_URL", default [""], plain,
        parse::url,
        "The policy webhook, asked about whatever no rule matches.";
    policy_secret: Secret<String> = "CAPSIGN_POLICY_SECRET", default [""], secret,
        parse::shared_secret,
        "Signs each webhook call (X-Capsign-Signature); at least 32 characters.";
    policy_patterns: PatternPolicy = "CAPSIGN_POLICY_PATTERNS", default ("ask"), plain,
        PatternPolicy::parse,
        "Patterns (doc:*, *, [*]*) no rule covers: ask the webhook, or deny them.";
    policy_timeout: Duration = "CAPSIGN_POLICY_TIMEOUT", default ("2s"), plain,
        parse::up_to_a_minute,
        "The webhook's time to answer completely; after it, 503.";
    policy_max_response: usize = "CAPSIGN_POLICY_MAX_RESPONSE", default ("65536"), plain,
        parse::positive,
        "Largest webhook answer, in bytes.";
    format: Format = "CAPSIGN_FORMAT", default ("jwt"), plain,
        Format::parse,
        "Default credential: jwt, tokenRequest, token, auto or embedded.";
    embedded_secret: Secret<String> = "CAPSIGN_EMBEDDED_SECRET", default [""], secret,
        parse::shared_secret,
        "format=embedded: the app's HS256 secret that signs the outer JWT (at least 32 characters).";
    embedded_inner: EmbeddedInner = "CAPSIGN_EMBEDDED_INNER", default ("jwt"), plain,
        EmbeddedInner::parse,
        "format=embedded: the Ably credential inside, jwt or token (a native token from Ably).";
    embedded_claims: EmbeddedClaims = "CAPSIGN_EMBEDDED_CLAIMS", default [""], plain,
        EmbeddedClaims::parse,
        "format=embedded: claims added to the outer JWT, a JSON object (e.g. iss, aud).";
    ably_rest_url: Uri = "CAPSIGN_ABLY_REST_URL", default ("https://main.realtime.ably.net"),
        plain, parse::url,
        "Ably's REST API, for format=token and CAPSIGN_ABLY_TIME.";
    ably_timeout: Duration = "CAPSIGN_ABLY_TIMEOUT", default ("5s"), plain,
        parse::up_to_a_minute,
        "Ably's time to answer; after it, 502.";
    ably_time: bool = "CAPSIGN_ABLY_TIME", default ("false"), plain,
        parse::boolean,
        "At start-up, set capsign's clock from Ably's GET /time.";
    deny: DenyMode = "CAPSIGN_DENY", default ("omit"), plain,
        DenyMode::parse,
        "Denied grants: omit (200, X-Capsign-Denied) or reject (403/40160).";
    ttl: Duration = "CAPSIGN_TTL", default ["1h (at most CAPSIGN_TTL_MAX)"], plain,
        parse::duration,
        "Credential lifetime when the client asks for none.";
    ttl_min: Duration = "CAPSIGN_TTL_MIN", default ("1m"), plain,
        parse::duration,
        "Shortest credential lifetime; shorter requests are raised to it.";
    ttl_max: Duration = "CAPSIGN_TTL_MAX", default ["24h (1h with revocable tokens)"], plain,
        parse::duration,
        "Longest credential lifetime; never above Ably's limit.";
    outlive_session: bool = "CAPSIGN_OUTLIVE_SESSION", default ("false"), plain,
        parse::boolean,
        "Let credentials outlive the app session's exp (by default they end with it).";
    revocable_tokens: bool = "CAPSIGN_REVOCABLE_TOKENS", default ("false"), plain,
        parse::boolean,
        "The Ably key has revocable tokens: lifetimes are capped at 1 h.";
    regrant_after: Duration = "CAPSIGN_REGRANT_AFTER", default ("1h"), plain,
        parse::duration,
        "Grants approved longer ago are re-checked with the next request.";
    grant_max_age: Duration = "CAPSIGN_GRANT_MAX_AGE", default ("24h"), plain,
        parse::duration,
        "No credential outlives a grant's approval by more; also the cookie's maximum age.";
    key_capability: CapabilitySet = "CAPSIGN_KEY_CAPABILITY", default [""], plain,
        parse::capability,
        "The Ably key's own capability (JSON); minted sets are intersected with it.";
    max_new_grants: usize = "CAPSIGN_MAX_NEW_GRANTS", default ("100"), plain,
        parse::grant_count,
        "Most new grants one request may ask for (at most CAPSIGN_MAX_GRANTS).";
    max_body: usize = "CAPSIGN_MAX_BODY", default ("16384"), plain,
        parse::body_size,
        "Largest request body, in bytes (at most 1 MiB).";
    header_timeout: Duration = "CAPSIGN_HEADER_TIMEOUT", default ("10s"), plain,
        parse::up_to_a_minute,
        "How long a client may take to send its request headers.";
    body_timeout: Duration = "CAPSIGN_BODY_TIMEOUT", default ("10s"), plain,
        parse::up_to_a_minute,
        "How long a client may take to send its request body.";
    shutdown_delay: Duration = "CAPSIGN_SHUTDOWN_DELAY", default ["10s (0s in demo mode)"],
        plain, parse::up_to_ten_minutes,
        "On SIGTERM, /readyz turns 503 at once and requests are still served this long: at least \
         the load balancer's health-check interval × its failure threshold, plus propagation.";
    startup_timeout: Duration = "CAPSIGN_STARTUP_TIMEOUT", default ("5m"), plain,
        parse::up_to_ten_minutes,
        "How long a failed start-up fetch (the JWKS) is retried, not ready, before exit 2.";
    shutdown_grace: Duration = "CAPSIGN_SHUTDOWN_GRACE", default ("10s"), plain,
        parse::up_to_ten_minutes,
        "Then in-flight requests get this long to complete before capsign exits.";
    write_timeout: Duration = "CAPSIGN_WRITE_TIMEOUT", default ("10s"), plain,
        parse::up_to_a_minute,
        "How long a response may wait to be written (a client that never reads is cut off).";
    max_connections: usize = "CAPSIGN_MAX_CONNECTIONS", default ("1000"), plain,
        parse::positive,
        "Most open connections; past it new ones get 503 and are closed.";
    max_connections_per_peer: usize = "CAPSIGN_MAX_CONNECTIONS_PER_PEER",
        default ["half of CAPSIGN_MAX_CONNECTIONS"], plain, parse::positive,
        "Most open connections from one address (CAPSIGN_TRUSTED_PROXIES are exempt).";
}

/// Declares a setting's enum of keywords and its parser: `Name { Variant = "keyword", … }`.
macro_rules! keywords {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $kw:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Parses one of the keywords.
            ///
            /// # Errors
            ///
            /// Another word; the message lists the keywords.
            pub fn parse(s: &str) -> Result<$name, String> {
                match s {
                    $($kw => Ok($name::$variant),)*
                    _ => Err(format!("expected one of: {}", [$($kw),*].join(", "))),
                }
            }
        }
    };
}

keywords! {
    /// `CAPSIGN_EMBEDDED_INNER`.
    EmbeddedInner {
        /// An Ably JWT minted here.
        Jwt = "jwt",
        /// A native Ably token: capsign's TokenRequest exchanged with Ably.
        Token = "token",
    }
}

keywords! {
    /// Which credential `/auth` mints when the request does not say.
    Format {
        /// `jwt`: an Ably JWT.
        Jwt = "jwt",
        /// `tokenRequest`: a signed TokenRequest.
        TokenRequest = "tokenRequest",
        /// `token`: capsign asks Ably for the token and returns its TokenDetails.
        Token = "token",
        /// `auto`: a JWT unless it would be over 8 KB, then a TokenRequest.
        Auto = "auto",
        /// `embedded`: the app's own JWT with the Ably credential in its `x-ably-token`
        /// header.
        Embedded = "embedded",
    }
}

keywords! {
    /// What happens to a request that asks for something the policy denies.
    DenyMode {
        /// Leave the denied grants out, name them in `X-Capsign-Denied`, answer 200.
        Omit = "omit",
        /// Answer the whole request with 403/40160.
        Reject = "reject",
    }
}

keywords! {
    /// What happens when a merge would make the cookie too large.
    Overflow {
        /// Refuse the request with 400/40000: the client keeps what it held.
        Reject = "reject",
        /// Drop the grants approved longest ago, name them in `X-Capsign-Evicted`.
        Evict = "evict",
    }
}

keywords! {
    /// What the webhook is asked about patterns (resources holding a `*`) that no rule covers.
    PatternPolicy {
        /// Asked like channel names.
        Ask = "ask",
        /// Denied by capsign; never sent to the webhook.
        Deny = "deny",
    }
}

keywords! {
    /// The grant cookie's `SameSite` attribute.
    SameSite {
        /// `Lax`: sent on top-level navigations and same-site requests.
        Lax = "lax",
        /// `Strict`: same-site requests only.
        Strict = "strict",
        /// `None`: sent cross-site too (capsign on another site than the app's pages).
        None = "none",
    }
}

impl SameSite {
    /// The attribute's value as written in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::None => "None",
            SameSite::Strict => "Strict",
        }
    }
}

keywords! {
    /// `CAPSIGN_LOG_FORMAT`.
    LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object a line.
        Json = "json",
    }
}

keywords! {
    /// `CAPSIGN_IDENTITY`.
    IdentityMode {
        /// The app's session JWT.
        Jwt = "jwt",
        /// A header from trusted proxies.
        Header = "header",
        /// A user name at `/login`; loopback only.
        Demo = "demo",
    }
}

/// An Ably API key, `appId.keyId:secret`, with its shape checked.
#[derive(Debug, Clone)]
pub struct AblyApiKey {
    /// `appId.keyId`, the public part.
    pub name: String,
    /// The secret: signs JWTs and TokenRequests as its UTF-8 bytes.
    pub secret: Secret<String>,
}

impl AblyApiKey {
    /// Parses `appId.keyId:secret`.
    ///
    /// # Errors
    ///
    /// A part is missing or empty, or holds a space or a control character.
    pub fn parse(key: &str) -> Result<AblyApiKey, String> {
        let shape = || "expected the form appId.keyId:secret, as shown in the Ably dashboard";
        let (name, secret) = key.split_once(':').ok_or_else(shape)?;
        let (app, id) = name.split_once('.').ok_or_else(shape)?;
        let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_control() || c == ' ');
        if bad(app) || bad(id) || bad(secret) || id.contains('.') {
            return Err(shape().into());
        }
        Ok(AblyApiKey {
            name: name.to_owned(),
            secret: Secret::new(secret.to_owned()),
        })
    }
}

/// The grant-cookie key ring: one key signs, every key verifies. The signing key is not
/// optional, and ids are distinct and non-zero: a ring that could seal without a MAC cannot be
/// built.
#[derive(Debug, Clone)]
pub struct CookieKeys {
    signing: (u8, Secret<Vec<u8>>),
    others: Vec<(u8, Secret<Vec<u8>>)>,
}

impl CookieKeys {
    /// Parses `CAPSIGN_COOKIE_KEY`: one base64 secret (key id 1), or a comma-separated list of
    /// `id:base64`, where the first key signs and every key verifies.
    ///
    /// # Errors
    ///
    /// Not base64, shorter than [`MIN_COOKIE_KEY_LEN`] bytes, a bad or repeated id.
    pub fn parse(s: &str) -> Result<CookieKeys, String> {
        let mut keys = Vec::new();
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
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(format!("two keys share the id {id}"));
            }
            keys.push((id, Secret::new(secret)));
        }
        let mut keys = keys.into_iter();
        let signing = keys.next().ok_or("no key")?;
        Ok(CookieKeys {
            signing,
            others: keys.collect(),
        })
    }

    /// A fresh random key (id 1): demo mode only, since cookies sealed with it die with the
    /// process.
    fn random() -> CookieKeys {
        let secret: [u8; 32] = rand::random();
        CookieKeys {
            signing: (1, Secret::new(secret.to_vec())),
            others: Vec::new(),
        }
    }

    /// The next step of the three-step rotation (`docs/security.md`) of `current` (a
    /// `CAPSIGN_COOKIE_KEY` value), with `new_secret` as the new key where one is added, and
    /// what the step does:
    ///
    /// 1. one key `A` (or a newest key that already signs, alone): add the new key, verifying
    ///    only (`1:A,2:NEW`);
    /// 2. the newest key verifies but does not sign yet: make it sign (`2:NEW,1:A`);
    /// 3. the newest key signs and older ones verify: drop them (`2:NEW`), once
    ///    `CAPSIGN_GRANT_MAX_AGE` has passed since step 2 reached every instance.
    ///
    /// # Errors
    ///
    /// `current` is not a valid key value, or has no id left for a new key.
    pub fn next_rotation_step(
        current: &str,
        new_secret: &[u8],
    ) -> Result<(String, &'static str), String> {
        let keys = CookieKeys::parse(current)?;
        let b64 = |secret: &[u8]| STANDARD.encode(secret);
        let list = |keys: &[(u8, &[u8])]| {
            keys.iter()
                .map(|(id, secret)| format!("{id}:{}", b64(secret)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let all: Vec<(u8, &[u8])> = keys.all().collect();
        let (signing_id, _) = keys.signing();
        let newest = all.iter().map(|(id, _)| *id).max().unwrap_or(signing_id);
        if all.len() == 1 {
            let id = newest
                .checked_add(1)
                .ok_or("key id 255 is taken; start again from a single key with id 1")?;
            let mut next = all.clone();
            next.push((id, new_secret));
            return Ok((
                list(&next),
                "step 1 of 3: the current key keeps signing, the new key verifies. Deploy it \
                 to every instance, then run keygen again with it.",
            ));
        }
        if signing_id != newest {
            let mut next: Vec<(u8, &[u8])> = all
                .iter()
                .copied()
                .filter(|(id, _)| *id == newest)
                .collect();
            next.extend(all.iter().copied().filter(|(id, _)| *id != newest));
            return Ok((
                list(&next),
                "step 2 of 3: the new key signs, the old ones still verify. Deploy it to every \
                 instance; after CAPSIGN_GRANT_MAX_AGE, run keygen again with it.",
            ));
        }
        let next: Vec<(u8, &[u8])> = all
            .iter()
            .copied()
            .filter(|(id, _)| *id == newest)
            .collect();
        Ok((
            list(&next),
            "step 3 of 3: only the new key is left. Deploy it once CAPSIGN_GRANT_MAX_AGE has passed \
             since step 2 reached every instance (no cookie sealed with an old key is still valid).",
        ))
    }

    /// The key that seals: its id and secret.
    pub fn signing(&self) -> (u8, &[u8]) {
        (self.signing.0, self.signing.1.expose())
    }

    /// Every key, the signing one first.
    pub fn all(&self) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::once(&self.signing)
            .chain(&self.others)
            .map(|(id, s)| (*id, s.expose().as_slice()))
    }
}

/// Where a JWKS document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// A file, read once at start-up.
    File(PathBuf),
    /// A URL, fetched at start-up and refreshed.
    Url(Uri),
}

impl JwksLocation {
    fn parse(s: &str) -> Result<JwksLocation, String> {
        if s.starts_with("http://") || s.starts_with("https://") {
            parse::url(s).map(JwksLocation::Url)
        } else {
            Ok(JwksLocation::File(PathBuf::from(s)))
        }
    }
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
        /// [`Settings::for_frozen_instances`]).
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

/// Where settings come from: the environment, then the file.
struct Source<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<(String, toml::Table)>,
}

impl Source<'_> {
    /// The value of `var` and the name to blame in errors.
    fn get(&self, var: &str) -> Option<(String, String)> {
        if let Some(v) = (self.env)(var) {
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
    ) -> Result<Option<T>, SettingsError> {
        let Some((v, setting)) = self.get(var) else {
            return Ok(None);
        };
        let v = v.trim();
        if v.is_empty() {
            return Err(SettingsError {
                setting,
                problem: "set but empty; give it a value or unset it".into(),
            });
        }
        parse(v)
            .map(Some)
            .map_err(|problem| SettingsError { setting, problem })
    }
}

/// `NAME_FILE` gives a secret setting `NAME` as the path of a file holding it.
const FILE_SUFFIX: &str = "_FILE";

/// `NAME_AWS` gives a secret setting `NAME` as a reference to AWS Secrets Manager
/// (`secretsmanager:ID[#json-key]`) or Parameter Store (`ssm:NAME`), read through the AWS
/// Parameters and Secrets Lambda extension by `capsign-lambda`.
pub const AWS_SUFFIX: &str = "_AWS";

/// The secret settings given as AWS references (`NAME_AWS`): each setting's name, the
/// variable and the reference, for `capsign-lambda` to resolve before [`Settings::load`].
///
/// # Errors
///
/// `NAME_AWS` set together with `NAME` or `NAME_FILE`.
pub fn aws_secret_references(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String, String)>, SettingsError> {
    let mut refs = Vec::new();
    for d in TABLE.iter().filter(|d| d.secret) {
        let var = format!("{}{AWS_SUFFIX}", d.name);
        let Some(reference) = env(&var) else { continue };
        for other in [d.name.to_owned(), format!("{}{FILE_SUFFIX}", d.name)] {
            if env(&other).is_some() {
                return Err(SettingsError::new(
                    &var,
                    format!("set together with {other}; set one of them"),
                ));
            }
        }
        refs.push((d.name, var, reference));
    }
    Ok(refs)
}

/// The largest secret file read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The secrets given as files (`NAME_FILE`, as container platforms mount secrets: Docker and
/// Kubernetes secrets, systemd credentials), read once: each secret setting's name and value.
///
/// # Errors
///
/// `NAME` and `NAME_FILE` both set, or a file that cannot be read, is empty, or is larger
/// than 64 KiB.
fn secret_files(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String)>, SettingsError> {
    let mut read = Vec::new();
    for d in TABLE.iter().filter(|d| d.secret) {
        let var = format!("{}{FILE_SUFFIX}", d.name);
        let Some(path) = env(&var) else { continue };
        let err = |problem: String| SettingsError::new(&var, problem);
        if env(d.name).is_some() {
            return Err(err(format!(
                "set together with {}; set one of them",
                d.name
            )));
        }
        let file =
            std::fs::File::open(&path).map_err(|e| err(format!("cannot read {path}: {e}")))?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_SECRET_FILE + 1),
            &mut text,
        )
        .map_err(|e| err(format!("cannot read {path}: {e}")))?;
        if text.len() as u64 > MAX_SECRET_FILE {
            return Err(err(format!("{path} is larger than 64 KiB")));
        }
        // A file written with `echo` ends with a line break, which is not part of the value.
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(err(format!("{path} is empty")));
        }
        read.push((d.name, value.to_owned()));
    }
    Ok(read)
}

/// Reads a `--config` file, refusing keys that name no setting.
fn read_file(path: &Path) -> Result<(String, toml::Table), SettingsError> {
    let shown = path.display().to_string();
    let err = |problem| SettingsError::new("--config", problem);
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("cannot read {shown}: {e}")))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| err(format!("{shown} is not valid TOML: {e}")))?;
    if let Some(key) = table
        .keys()
        .find(|key| !TABLE.iter().any(|d| d.file_key() == **key))
    {
        return Err(err(format!("unknown setting {key:?} in {shown}")));
    }
    Ok((shown, table))
}

/// Refuses a `CAPSIGN_*` name among `names` (an environment's variable names) that is no
/// setting: a typo (`CAPSIGN_COOKIE_KYE`, `CAPSIGN_DNY`) would otherwise leave the setting it
/// meant at its default without a word, where an unknown key of the `--config` file is refused.
///
/// # Errors
///
/// The first such name, with the setting it is closest to when one differs by a letter or two.
pub fn refuse_unknown_variables(
    names: impl IntoIterator<Item = String>,
) -> Result<(), SettingsError> {
    for name in names {
        let named = |n: &str| TABLE.iter().any(|d| d.name == n);
        let secret_file = [FILE_SUFFIX, AWS_SUFFIX].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|n| TABLE.iter().any(|d| d.name == n && d.secret))
        });
        if !name.starts_with("CAPSIGN_") || named(&name) || secret_file {
            continue;
        }
        let near = TABLE
            .iter()
            .map(|d| (edit_distance(&name, d.name), d.name))
            .min()
            .filter(|(distance, _)| *distance <= 2)
            .map(|(_, n)| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        return Err(SettingsError::new(
            &name,
            format!("set, but capsign has no such setting{near}; `capsign --help` lists them"),
        ));
    }
    Ok(())
}

/// Whether `url`'s host is a loopback address or `localhost`.
fn is_loopback_host(url: &Uri) -> bool {
    let host = url.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Levenshtein distance between two short ASCII names (for the suggestion above only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or_default();
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or_default();
            let left = row.get(j).copied().unwrap_or_default();
            let value = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(left + 1);
            diagonal = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or_default()
}

impl Settings {
    /// What is allowed but unwise, for the operator to read at start-up (and in `check`):
    /// an outbound URL on plain `http` to a host off loopback, whose answers decide grants
    /// (the webhook), identities (a JWKS) or carry credentials (Ably), and which anyone on the
    /// path could then read or forge.
    pub fn warnings(&self) -> Vec<String> {
        let unhealthy = self.http.unhealthy.iter().map(|why| {
            format!("WARNING: {why}; /healthz and /readyz answer 503 so no health check passes")
        });
        let mut urls: Vec<(&str, &Uri, &str)> = Vec::new();
        if let Some(webhook) = &self.policy.webhook {
            urls.push((
                "CAPSIGN_POLICY_URL",
                &webhook.url,
                "its answers decide grants",
            ));
        }
        if let IdentitySettings::Jwt {
            key:
                SessionKeySource::Jwks {
                    location: JwksLocation::Url(url),
                    ..
                },
            ..
        } = &self.identity
        {
            urls.push(("CAPSIGN_SESSION_JWKS", url, "its keys decide who a user is"));
        }
        urls.push((
            "CAPSIGN_ABLY_REST_URL",
            &self.ably.rest_url,
            "it carries signed TokenRequests and Ably tokens",
        ));
        urls.into_iter()
            .filter(|(_, url, _)| url.scheme_str() == Some("http") && !is_loopback_host(url))
            .map(|(name, url, why)| {
                format!(
                    "WARNING: {name} is plain http to {}: {why}, and anyone on the path can read \
                     or change them; use https",
                    url.host().unwrap_or_default()
                )
            })
            .chain(unhealthy)
            .collect()
    }

    /// [`Settings::load`] from this process's environment, after
    /// [`refuse_unknown_variables`] on its variable names.
    ///
    /// # Errors
    ///
    /// An unknown `CAPSIGN_*` variable, or what [`Settings::load`] refuses.
    pub fn from_process(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let env = |k: &str| std::env::var(k).ok();
        if let Some((name, var, _)) = aws_secret_references(&env)?.first() {
            return Err(SettingsError::new(
                var,
                format!(
                    "read by capsign-lambda only (through the AWS Parameters and Secrets \
                     extension); here give {name} or {name}{FILE_SUFFIX}"
                ),
            ));
        }
        Settings::from_process_with(file, &[])
    }

    /// [`Settings::from_process`], with `resolved` values (secrets fetched by the caller,
    /// name and value) taking the place of the environment's.
    ///
    /// # Errors
    ///
    /// As [`Settings::from_process`].
    pub fn from_process_with(
        file: Option<&Path>,
        resolved: &[(&str, String)],
    ) -> Result<Settings, SettingsError> {
        refuse_unknown_variables(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
        Settings::load(
            &|k| {
                resolved
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var(k).ok())
            },
            file,
        )
    }

    /// Adapts the settings to AWS Lambda, whose instances are frozen between invocations and
    /// come and go by the hundred: no spawned task may be relied on, so a JWKS fetched from a
    /// URL is refreshed in the request that finds it due (bounded by its timeout, as the
    /// unknown-`kid` fetch is). Refuses what cannot work there.
    ///
    /// # Errors
    ///
    /// Demo mode (its cookie key is random per cold start, so every instance would refuse
    /// every other instance's cookies and each cold start would lose every client's grants)
    /// and `header` identity (a Lambda event carries no peer address that a trusted proxy
    /// could be checked against).
    pub fn for_lambda(mut self) -> Result<Settings, SettingsError> {
        if let Some(first) = self.demo_defaults.first() {
            return Err(SettingsError::new(
                "CAPSIGN_IDENTITY",
                format!(
                    "capsign-lambda does not run in demo mode (it would use a demo value for \
                     {first}; a random cookie key per cold start loses every client's grants): \
                     set ABLY_API_KEY, CAPSIGN_COOKIE_KEY, CAPSIGN_IDENTITY=jwt with its key, and \
                     CAPSIGN_RULES or CAPSIGN_POLICY_URL"
                ),
            ));
        }
        match &mut self.identity {
            IdentitySettings::Header { .. } => {
                return Err(SettingsError::new(
                    "CAPSIGN_IDENTITY",
                    "header identity cannot work on Lambda: an event carries no peer address \
                     to check CAPSIGN_TRUSTED_PROXIES against; use CAPSIGN_IDENTITY=jwt",
                ));
            }
            IdentitySettings::Demo => {
                return Err(SettingsError::new(
                    "CAPSIGN_IDENTITY",
                    "demo identity cannot work on Lambda; use CAPSIGN_IDENTITY=jwt",
                ));
            }
            IdentitySettings::Jwt { key, .. } => {
                if let SessionKeySource::Jwks {
                    refresh_in_background,
                    ..
                } = key
                {
                    *refresh_in_background = false;
                }
            }
        }
        Ok(self)
    }

    /// Reads and checks every setting from `env` (a lookup such as `std::env::var`) and the
    /// optional TOML `file`. Reads the file and nothing else.
    ///
    /// # Errors
    ///
    /// The first setting that is missing or invalid, by name.
    pub fn load(
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<&Path>,
    ) -> Result<Settings, SettingsError> {
        let file = file.map(read_file).transpose()?;
        let files = secret_files(env)?;
        let env = &|k: &str| {
            files
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
                .or_else(|| env(k))
        };
        let src = Source { env, file };
        let mut given = Given::read(&src)?;
        // A container platform's PORT (Cloud Run, Fly.io, Knative), when CAPSIGN_LISTEN is
        // unset: on all interfaces, except in demo mode (loopback only).
        let port =
            match (src.get("CAPSIGN_LISTEN"), env("PORT")) {
                (None, Some(p)) => Some(p.trim().parse::<u16>().map_err(|_| {
                    SettingsError::new("PORT", format!("{p:?} is not a port number"))
                })?),
                _ => None,
            };
        if let Some(port) = port {
            given.listen = SocketAddr::from(([127, 0, 0, 1], port));
        }
        // On AWS Lambda with JSON logs configured for the function, log JSON by default.
        if given.log_format.is_none() && env("AWS_LAMBDA_LOG_FORMAT").as_deref() == Some("JSON") {
            given.log_format = Some(LogFormat::Json);
        }
        // Anything set beyond where to listen makes this a production configuration, which
        // demo values never complete.
        let configured: Vec<&'static str> = TABLE
            .iter()
            .map(|d| d.name)
            .filter(|n| !TRANSPORT.contains(n) && *n != "CAPSIGN_IDENTITY")
            .filter(|n| src.get(n).is_some())
            .collect();
        let mut settings = Settings::from_given(given, &configured)?;
        match port {
            Some(port) if !settings.is_demo() => {
                settings.listen = SocketAddr::from(([0, 0, 0, 0], port));
            }
            Some(port) => {
                settings.http.unhealthy = Some(format!(
                    "demo mode listens on 127.0.0.1:{port} only (PORT is a container \
                     platform's): nothing outside this host or container can reach it; give \
                     capsign production settings (docs/configuration.md)"
                ));
            }
            None => {}
        }
        Ok(settings)
    }

    /// The checks that span several settings, and the demo fallbacks (demo mode only:
    /// `configured` names the settings given besides the listen address and the mode).
    fn from_given(g: Given, configured: &[&str]) -> Result<Settings, SettingsError> {
        let mut demo_defaults = Vec::new();
        if g.max_new_grants > g.max_grants {
            return Err(SettingsError::new(
                "CAPSIGN_MAX_NEW_GRANTS",
                format!(
                    "{} is more than CAPSIGN_MAX_GRANTS ({}), which bounds every request",
                    g.max_new_grants, g.max_grants
                ),
            ));
        }
        if let (Some(embedded), Some(session)) = (&g.embedded_secret, &g.session_secret) {
            // A start-up check of the operator's own two values (no attacker times it).
            if embedded.expose() == session.expose() {
                return Err(SettingsError::new(
                    "CAPSIGN_EMBEDDED_SECRET",
                    "equals CAPSIGN_SESSION_SECRET: every embedded credential capsign signs would \
                     then also be a valid app session; give it a secret of its own",
                ));
            }
        }
        let ttl = Settings::ttl(&g)?;
        let secs = |d: Duration| d.as_secs();
        let (regrant_after_s, grant_max_age_s) = (secs(g.regrant_after), secs(g.grant_max_age));
        if regrant_after_s == 0 || regrant_after_s > grant_max_age_s {
            return Err(SettingsError::new(
                "CAPSIGN_REGRANT_AFTER",
                "must be at least 1s and at most CAPSIGN_GRANT_MAX_AGE",
            ));
        }
        let identity = Settings::identity(&g, configured)?;
        let demo = matches!(identity, IdentitySettings::Demo);
        if demo {
            if !g.listen.ip().is_loopback() {
                return Err(SettingsError::new(
                    "CAPSIGN_IDENTITY",
                    format!(
                        "demo identity accepts any user name, so capsign refuses it on {}; set \
                         CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY or \
                         CAPSIGN_SESSION_JWKS, or listen on 127.0.0.1",
                        g.listen
                    ),
                ));
            }
            demo_defaults.push("identity (demo: any user name at /login)");
        }
        let webhook = g.policy_url.map(|url| WebhookSettings {
            url,
            secret: g.policy_secret,
            timeout: g.policy_timeout,
            max_response: g.policy_max_response,
            patterns: g.policy_patterns,
        });
        let rules = Settings::rules(g.rules, webhook.is_some(), demo, &mut demo_defaults)?;
        let (key, keys) = Settings::keys(g.ably_api_key, g.cookie_key, demo, &mut demo_defaults)?;
        let embedded = g.embedded_secret.map(|secret| EmbeddedSettings {
            secret,
            inner: g.embedded_inner,
            claims: g.embedded_claims.unwrap_or_default(),
        });
        if embedded.is_none() && g.format == Format::Embedded {
            return Err(SettingsError::new(
                "CAPSIGN_FORMAT",
                "embedded needs CAPSIGN_EMBEDDED_SECRET (the app's secret for the outer JWT)",
            ));
        }
        Ok(Settings {
            listen: g.listen,
            log_format: g.log_format.unwrap_or(LogFormat::Text),
            ably: AblySettings {
                key,
                key_capability: g.key_capability,
                rest_url: g.ably_rest_url,
                timeout: g.ably_timeout,
                correct_clock: g.ably_time,
                embedded,
            },
            cookie: CookieSettings {
                keys,
                name: g.cookie_name,
                same_site: g.cookie_samesite,
                max_age_s: grant_max_age_s,
                max_grants: g.max_grants,
            },
            identity,
            policy: PolicySettings { rules, webhook },
            flow: FlowSettings {
                format: g.format,
                deny: g.deny,
                overflow: g.cookie_overflow,
                ttl,
                regrant_after_s,
                grant_max_age_s,
                max_new_grants: g.max_new_grants,
                outlive_session: g.outlive_session,
            },
            http: HttpSettings {
                cors_origins: g.cors_origins.unwrap_or_default(),
                allowed_hosts: g.allowed_hosts.unwrap_or_default(),
                max_body: g.max_body,
                body_timeout: g.body_timeout,
                trusted_proxies: g.trusted_proxies.clone().unwrap_or_default(),
                unhealthy: None,
            },
            server: ServerSettings {
                metrics_listen: g.metrics_listen,
                header_timeout: g.header_timeout,
                write_timeout: g.write_timeout,
                // Long enough for common health checks to see /readyz fail (HAProxy's
                // `inter 2s fall 3`: 6 s) and for endpoint removal to propagate; nothing
                // routes to a demo on loopback.
                shutdown_delay: g.shutdown_delay.unwrap_or(if demo {
                    Duration::ZERO
                } else {
                    DEFAULT_SHUTDOWN_DELAY
                }),
                shutdown_grace: g.shutdown_grace,
                startup_timeout: g.startup_timeout,
                max_connections: g.max_connections,
                max_connections_per_peer: g
                    .max_connections_per_peer
                    .unwrap_or(g.max_connections.div_ceil(2))
                    .min(g.max_connections),
                trusted_proxies: g.trusted_proxies.clone().unwrap_or_default(),
            },
            demo_defaults,
        })
    }

    /// The Ably key and the cookie keys. Demo values fill them in demo mode only; a
    /// production configuration without them is refused, naming every one missing.
    fn keys(
        ably: Option<AblyApiKey>,
        cookie: Option<CookieKeys>,
        demo: bool,
        demo_defaults: &mut Vec<&'static str>,
    ) -> Result<(AblyApiKey, CookieKeys), SettingsError> {
        match (ably, cookie) {
            (Some(key), Some(keys)) => Ok((key, keys)),
            (ably, cookie) if demo => {
                let key = match ably {
                    Some(k) => k,
                    None => {
                        demo_defaults
                            .push("ABLY_API_KEY (demo key; Ably will refuse its credentials)");
                        AblyApiKey::parse(DEMO_ABLY_KEY)
                            .map_err(|e| SettingsError::new("ABLY_API_KEY", e))?
                    }
                };
                let keys = cookie.unwrap_or_else(|| {
                    demo_defaults.push("CAPSIGN_COOKIE_KEY (random; cookies die with the process)");
                    CookieKeys::random()
                });
                Ok((key, keys))
            }
            (ably, cookie) => {
                let missing: Vec<&str> = [
                    ably.is_none()
                        .then_some("ABLY_API_KEY (appId.keyId:secret)"),
                    cookie.is_none().then_some(
                        "CAPSIGN_COOKIE_KEY (openssl rand -base64 32; the same on every instance)",
                    ),
                ]
                .into_iter()
                .flatten()
                .collect();
                let setting = if ably.is_none() {
                    "ABLY_API_KEY"
                } else {
                    "CAPSIGN_COOKIE_KEY"
                };
                Err(SettingsError::new(
                    setting,
                    format!(
                        "not set; a production configuration needs {} (demo values are used only \
                         in demo mode)",
                        missing.join(" and ")
                    ),
                ))
            }
        }
    }

    /// Where the rules come from: a file, the built-in demo rules, or none when a webhook
    /// decides everything.
    fn rules(
        path: Option<PathBuf>,
        webhook: bool,
        demo: bool,
        demo_defaults: &mut Vec<&'static str>,
    ) -> Result<Option<RulesSource>, SettingsError> {
        match path {
            Some(path) => Ok(Some(RulesSource::File(path))),
            None if webhook => Ok(None),
            None if demo => {
                demo_defaults.push("CAPSIGN_RULES (examples/rules.toml, built in)");
                Ok(Some(RulesSource::Demo))
            }
            None => Err(SettingsError::new(
                "CAPSIGN_RULES",
                "not set; capsign needs a rules file or a policy webhook (CAPSIGN_POLICY_URL) \
                 to decide grants (see examples/rules.toml)",
            )),
        }
    }

    /// The identity mode and what it needs. Demo only when asked for, or when nothing is
    /// configured (`configured` is empty).
    fn identity(g: &Given, configured: &[&str]) -> Result<IdentitySettings, SettingsError> {
        let (secret, public, jwks) = (&g.session_secret, &g.session_public_key, &g.session_jwks);
        let sources = [secret.is_some(), public.is_some(), jwks.is_some()];
        let mode = match g.identity {
            Some(mode) => mode,
            None if sources.contains(&true) => IdentityMode::Jwt,
            None if configured.is_empty() => IdentityMode::Demo,
            None => {
                return Err(SettingsError::new(
                    "CAPSIGN_SESSION_SECRET",
                    format!(
                        "no identity source, while {} set: this is no demo, so set \
                         CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY or \
                         CAPSIGN_SESSION_JWKS (or CAPSIGN_IDENTITY=header with \
                         CAPSIGN_TRUSTED_PROXIES; CAPSIGN_IDENTITY=demo only to try capsign on \
                         loopback)",
                        configured.join(", ") + if configured.len() == 1 { " is" } else { " are" }
                    ),
                ));
            }
        };
        match mode {
            IdentityMode::Demo => Ok(IdentitySettings::Demo),
            IdentityMode::Header => Ok(IdentitySettings::Header {
                header: g.identity_header.clone(),
                trusted: g
                    .trusted_proxies
                    .clone()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        SettingsError::new(
                            "CAPSIGN_TRUSTED_PROXIES",
                            "header identity needs the addresses of the proxies that set the \
                             header (IPs or CIDR blocks, comma-separated)",
                        )
                    })?,
            }),
            IdentityMode::Jwt => {
                if sources.iter().filter(|s| **s).count() > 1 {
                    return Err(SettingsError::new(
                        "CAPSIGN_SESSION_SECRET",
                        "set one of CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY and \
                         CAPSIGN_SESSION_JWKS",
                    ));
                }
                let key = match (secret, public, jwks) {
                    (Some(s), _, _) => SessionKeySource::Secret(s.clone()),
                    (_, Some(p), _) => SessionKeySource::PublicKey(p.clone()),
                    (_, _, Some(location)) => SessionKeySource::Jwks {
                        location: location.clone(),
                        algorithms: g
                            .session_algorithms
                            .clone()
                            .unwrap_or_else(|| ASYMMETRIC.to_vec()),
                        refresh: g.session_jwks_refresh,
                        min_refresh: g.session_jwks_min_refresh,
                        refresh_in_background: true,
                    },
                    _ => {
                        return Err(SettingsError::new(
                            "CAPSIGN_IDENTITY",
                            "jwt identity needs CAPSIGN_SESSION_SECRET, \
                             CAPSIGN_SESSION_PUBLIC_KEY or CAPSIGN_SESSION_JWKS",
                        ));
                    }
                };
                Ok(IdentitySettings::Jwt {
                    key,
                    session: SessionSettings {
                        cookie: g.session_cookie.clone(),
                        client_id_claim: g.client_id_claim.clone(),
                        issuer: g.session_issuer.clone(),
                        audience: g.session_audience.clone(),
                    },
                })
            }
        }
    }

    /// The credential lifetime bounds: `1s <= min <= default <= max <= Ably's limit`.
    fn ttl(g: &Given) -> Result<TtlBounds, SettingsError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ably_max = if g.revocable_tokens {
            ABLY_REVOCABLE_MAX_TTL_MS
        } else {
            ABLY_MAX_TTL_MS
        };
        let max_ms = match g.ttl_max {
            Some(d) if ms(d) > ably_max => {
                return Err(SettingsError::new(
                    "CAPSIGN_TTL_MAX",
                    format!(
                        "above Ably's limit of {} h for this key",
                        ably_max / 3_600_000
                    ),
                ));
            }
            Some(d) => ms(d),
            None => ably_max,
        };
        let min_ms = ms(g.ttl_min);
        let default_ms = g.ttl.map_or(ms(DEFAULT_TTL).min(max_ms), ms);
        if !(1000 <= min_ms && min_ms <= default_ms && default_ms <= max_ms) {
            return Err(SettingsError::new(
                "CAPSIGN_TTL",
                format!(
                    "need 1s <= CAPSIGN_TTL_MIN ({min_ms} ms) <= CAPSIGN_TTL ({default_ms} ms) \
                     <= CAPSIGN_TTL_MAX ({max_ms} ms)"
                ),
            ));
        }
        Ok(TtlBounds {
            default_ms,
            min_ms,
            max_ms,
        })
    }

    /// Whether this is the demo identity.
    pub fn is_demo(&self) -> bool {
        matches!(self.identity, IdentitySettings::Demo)
    }

    /// The value a setting took where the table describes its default in words (`["…"]`) or
    /// another variable decides it (`PORT`), as `capsign check` shows it.
    pub fn resolved(&self, name: &str) -> Option<String> {
        let ms = |ms: u64| humantime::format_duration(Duration::from_millis(ms)).to_string();
        Some(match name {
            "CAPSIGN_LISTEN" => self.listen.to_string(),
            "CAPSIGN_IDENTITY" => match self.identity {
                IdentitySettings::Jwt { .. } => "jwt".into(),
                IdentitySettings::Header { .. } => "header".into(),
                IdentitySettings::Demo => "demo".into(),
            },
            "CAPSIGN_LOG_FORMAT" => match self.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            },
            "CAPSIGN_TTL" => ms(self.flow.ttl.default_ms),
            "CAPSIGN_TTL_MAX" => ms(self.flow.ttl.max_ms),
            "CAPSIGN_MAX_CONNECTIONS_PER_PEER" => self.server.max_connections_per_peer.to_string(),
            "CAPSIGN_SHUTDOWN_DELAY" => {
                humantime::format_duration(self.server.shutdown_delay).to_string()
            }
            _ => return None,
        })
    }
}

/// One setting as `capsign check` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The variable.
    pub name: &'static str,
    /// Its value as given (`<redacted>` for a secret), or the built-in default as shown.
    pub value: String,
    /// Where it came from: `environment`, `FILE`, or `default`.
    pub source: String,
}

/// Every setting with its effective value and where it came from, secrets redacted, for
/// `capsign check`. Reads what [`Settings::load`] reads (it does not check the values).
///
/// # Errors
///
/// The `--config` file cannot be read, is not TOML, or names an unknown setting.
pub fn effective(
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&Path>,
) -> Result<Vec<Effective>, SettingsError> {
    let path = file.map(|p| p.display().to_string());
    let src = Source {
        env,
        file: file.map(read_file).transpose()?,
    };
    // Checked as `load` checks them; only where each came from is shown.
    secret_files(env)?;
    Ok(TABLE
        .iter()
        .map(|d| {
            if let Some(path) = env(&format!("{}{FILE_SUFFIX}", d.name)).filter(|_| d.secret) {
                return Effective {
                    name: d.name,
                    value: "<redacted>".to_owned(),
                    source: format!("file {path} ({}{FILE_SUFFIX})", d.name),
                };
            }
            let (value, source) = match (src.get(d.name), (env)(d.name)) {
                (Some(_), Some(_)) if d.secret => {
                    ("<redacted>".to_owned(), "environment".to_owned())
                }
                (Some((v, _)), Some(_)) => (v, "environment".to_owned()),
                (Some(_), None) if d.secret => {
                    ("<redacted>".to_owned(), path.clone().unwrap_or_default())
                }
                (Some((v, _)), None) => (v, path.clone().unwrap_or_default()),
                (None, _) => (d.default.to_owned(), "default".to_owned()),
            };
            Effective {
                name: d.name,
                value,
                source,
            }
        })
        .collect())
}

/// The settings for `capsign --help`: every one with its default and doc, secrets marked.
pub fn help() -> String {
    let mut out = String::from(
        "Settings (environment variables; in a --config TOML file, the same names in lower \
         case without CAPSIGN_, e.g. cookie_key; the environment wins):\n",
    );
    for d in TABLE {
        out.push_str("\n  ");
        out.push_str(d.name);
        match (d.default, d.secret) {
            ("", true) => out.push_str("  (secret)"),
            ("", false) => {}
            (default, secret) => {
                out.push_str(&format!("  [default: {default}]"));
                if secret {
                    out.push_str(" (secret)");
                }
            }
        }
        out.push_str("\n      ");
        out.push_str(d.doc);
    }
    out.push_str(
        "\nAlso read from the environment:\n\n  PORT\n      A container platform's port \
         (Cloud Run, Fly.io, Knative): when CAPSIGN_LISTEN is unset, capsign listens on \
         0.0.0.0:PORT (127.0.0.1:PORT in demo mode).\n\n  RUST_LOG\n      Log filter \
         (tracing's EnvFilter syntax), e.g. info, capsign=debug, warn. Default: info.\n",
    );
    out
}

/// The parsers of plain values. Each returns what is wrong and how to fix it.
mod parse {
    use super::*;

    pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
        s.parse()
            .map_err(|_| "expected an address such as 127.0.0.1:3000 or [::]:8080".into())
    }

    pub(super) fn text(s: &str) -> Result<String, String> {
        Ok(s.to_owned())
    }

    pub(super) fn path(s: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(s))
    }

    pub(super) fn shared_secret(s: &str) -> Result<Secret<String>, String> {
        if s.chars().count() < MIN_SHARED_SECRET_LEN {
            return Err(format!(
                "use at least {MIN_SHARED_SECRET_LEN} characters (openssl rand -base64 32)"
            ));
        }
        Ok(Secret::new(s.to_owned()))
    }

    pub(super) fn cookie_name(s: &str) -> Result<String, String> {
        let ok = s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
        ok.then(|| s.to_owned())
            .ok_or_else(|| "use at most 64 letters, digits and -_.".into())
    }

    pub(super) fn header_name(s: &str) -> Result<HeaderName, String> {
        HeaderName::from_bytes(s.as_bytes()).map_err(|_| "not a header name".into())
    }

    pub(super) fn duration(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s)
            .map_err(|e| format!("{e}; write a duration such as 90s, 10m or 1h"))
    }

    /// A duration of at most ten minutes (zero allowed).
    pub(super) fn up_to_ten_minutes(s: &str) -> Result<Duration, String> {
        let d = duration(s)?;
        if d > Duration::from_secs(600) {
            return Err("expected a duration of at most 10m".into());
        }
        Ok(d)
    }

    /// A duration above 0 and at most a minute.
    pub(super) fn up_to_a_minute(s: &str) -> Result<Duration, String> {
        let d = duration(s)?;
        if d.is_zero() || d > Duration::from_secs(60) {
            return Err("expected a duration above 0 and at most 60s".into());
        }
        Ok(d)
    }

    pub(super) fn boolean(s: &str) -> Result<bool, String> {
        match s {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }

    /// A count of grants: at least 1, at most [`MAX_RESOURCES`](crate::capability::MAX_RESOURCES)
    /// (what one capability may name; a sealed set holds about 350 at most anyway).
    pub(super) fn grant_count(s: &str) -> Result<usize, String> {
        let max = crate::capability::MAX_RESOURCES;
        let n = positive(s)?;
        if n > max {
            return Err(format!("at most {max}"));
        }
        Ok(n)
    }

    /// A body size in bytes: at least 1, at most 1 MiB (a capability of the most resources
    /// fits in far less).
    pub(super) fn body_size(s: &str) -> Result<usize, String> {
        const MAX: usize = 1 << 20;
        let n = positive(s)?;
        if n > MAX {
            return Err(format!("at most {MAX} (1 MiB)"));
        }
        Ok(n)
    }

    pub(super) fn positive(s: &str) -> Result<usize, String> {
        s.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| "expected a positive whole number".into())
    }

    /// An absolute `http` or `https` URL with a host, for outbound calls.
    pub(super) fn url(s: &str) -> Result<Uri, String> {
        let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err("expected an http:// or https:// URL".into()),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        Ok(uri)
    }

    pub(super) fn capability(s: &str) -> Result<CapabilitySet, String> {
        CapabilitySet::from_json(s).map_err(|e| e.to_string())
    }

    pub(super) fn algorithms(s: &str) -> Result<Vec<Algorithm>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse::<Algorithm>()
                    .ok()
                    .filter(|alg| ASYMMETRIC.contains(alg))
                    .ok_or_else(|| {
                        format!("{a:?}: expected RS256/384/512, PS256/384/512, ES256/384 or EdDSA")
                    })
            })
            .collect()
    }

    pub(super) fn networks(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{p:?} is not an IP address or CIDR block"))
            })
            .collect()
    }

    pub(super) fn hosts(s: &str) -> Result<Vec<String>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                let ok =
                    !h.contains(['/', '@', '*', ' ']) && h.parse::<http::uri::Authority>().is_ok();
                ok.then(|| h.to_ascii_lowercase())
                    .ok_or_else(|| format!("{h:?} is not a host or host:port"))
            })
            .collect()
    }

    pub(super) fn cors_origins(s: &str) -> Result<Vec<String>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(cors_origin)
            .collect()
    }

    /// One exact origin: `http(s)://host[:port]`, nothing after, never `null` or `*` (which
    /// would hand signed credentials to any page).
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
    fn key_rotation_goes_through_the_three_steps() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let b64 = |k: &[u8]| STANDARD.encode(k);
        let (one, _) = CookieKeys::next_rotation_step(&b64(&old), &new).unwrap();
        assert_eq!(one, format!("1:{},2:{}", b64(&old), b64(&new)));
        let (two, _) = CookieKeys::next_rotation_step(&one, &[3u8; 32]).unwrap();
        assert_eq!(two, format!("2:{},1:{}", b64(&new), b64(&old)));
        let (three, _) = CookieKeys::next_rotation_step(&two, &[3u8; 32]).unwrap();
        assert_eq!(three, format!("2:{}", b64(&new)));
        let (again, _) = CookieKeys::next_rotation_step(&three, &[4u8; 32]).unwrap();
        assert_eq!(again, format!("2:{},3:{}", b64(&new), b64(&[4u8; 32])));
        for step in [&one, &two, &three, &again] {
            assert!(CookieKeys::parse(step).is_ok(), "{step}");
        }
        assert!(CookieKeys::next_rotation_step("nope", &new).is_err());
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
        let section = include_str!("../docs/configuration.md");
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
}
