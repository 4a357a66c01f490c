//! The settings table: one row per setting (its name, built-in default, parser, one-line doc,
//! whether it is secret), from which the raw reading of the environment and the file, `--help`
//! and the documentation check all come.

use super::*;

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
        file_key(self.name)
    }
}

/// The key of the setting `name` in a `--config` file: lower case, without `CAPSIGN_`
/// (`CAPSIGN_COOKIE_KEY` is `cookie_key`, `ABLY_API_KEY` is `ably_api_key`).
pub(super) fn file_key(name: &str) -> String {
    name.strip_prefix("CAPSIGN_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// A setting whose default a rule may change (`default {"value", "rule"}` in the table):
/// the value, and whether it was given or is the table's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Derived<T> {
    /// Set by the environment or the file: used as it is.
    Given(T),
    /// The table's default, for the loader's rule to apply to.
    Default(T),
}

/// Declares [`TABLE`] and the raw reading of every setting from one list. Each entry:
/// `field: Type = "NAME", default ("parsed text") | default {"parsed text", "rule"} |
/// default ["shown only"], secret | plain, parser, "doc";`. A `("…")` default is parsed by
/// the same parser when the setting is unset (so the field is a `Type`). A `{"…", "rule"}`
/// default is parsed the same way, and the field is a [`Derived`] that says whether the value
/// was given, for the loader to apply the rule to a default (shown as `value (rule)`). A
/// `["…"]` default is only shown (no value: off, none, or a rule of other settings), and the
/// field is an `Option<Type>` that `Settings::from_given` resolves.
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
        pub(super) struct Given {
            $(pub(super) $field: settings_table!(@ty $default, $ty),)*
        }

        impl Given {
            pub(super) fn read(src: &Source<'_>) -> Result<Given, SettingsError> {
                Ok(Given {
                    $($field: settings_table!(@read src, $name, $parse, $default),)*
                })
            }
        }
    };
    (@shown ($d:literal)) => { $d };
    (@shown {$d:literal, $rule:literal}) => { concat!($d, " (", $rule, ")") };
    (@shown [$d:literal]) => { $d };
    (@secret secret) => { true };
    (@secret plain) => { false };
    (@ty ($d:literal), $ty:ty) => { $ty };
    (@ty {$d:literal, $rule:literal}, $ty:ty) => { Derived<$ty> };
    (@ty [$d:literal], $ty:ty) => { Option<$ty> };
    (@read $src:ident, $name:literal, $parse:expr, ($d:literal)) => {
        match $src.parse($name, $parse)? {
            Some(v) => v,
            None => ($parse)($d).map_err(|problem| {
                SettingsError::new($name, format!("built-in default {:?}: {problem}", $d))
            })?,
        }
    };
    (@read $src:ident, $name:literal, $parse:expr, {$d:literal, $rule:literal}) => {
        match $src.parse($name, $parse)? {
            Some(v) => Derived::Given(v),
            None => Derived::Default(($parse)($d).map_err(|problem| {
                SettingsError::new($name, format!("built-in default {:?}: {problem}", $d))
            })?),
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
        default {"text", "json when AWS_LAMBDA_LOG_FORMAT=JSON, and in a Worker"}, plain, LogFormat::parse,
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
    identity: IdentityMode = "CAPSIGN_IDENTITY", default ["jwt if a session key is set; demo if nothing is configured"],
        plain, IdentityMode::parse,
        "How users are identified: jwt, header or demo.";
    session_secret: Secret<String> = "CAPSIGN_SESSION_SECRET", default [""], secret,
        parse::shared_secret,
        "HS256 secret of the app's session JWTs (at least 32 characters).";
    session_public_key: PathBuf = "CAPSIGN_SESSION_PUBLIC_KEY", default [""], plain,
        parse::path,
        "Path of a PEM public key of the session JWTs (RSA, EC or Ed25519).";
    session_jwks: Location = "CAPSIGN_SESSION_JWKS", default [""], plain,
        Location::parse,
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
    ttl: Duration = "CAPSIGN_TTL", default {"1h", "at most CAPSIGN_TTL_MAX"}, plain,
        parse::duration,
        "Credential lifetime when the client asks for none.";
    ttl_min: Duration = "CAPSIGN_TTL_MIN", default ("1m"), plain,
        parse::duration,
        "Shortest credential lifetime; shorter requests are raised to it.";
    ttl_max: Duration = "CAPSIGN_TTL_MAX", default {"24h", "1h with revocable tokens"}, plain,
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
    revocations: Location = "CAPSIGN_REVOCATIONS", default ["(none)"], plain,
        Location::parse,
        "The revocation list: a file path, or an https URL (plain http on loopback only); see \
         docs/revocation.md.";
    revocations_refresh: Duration = "CAPSIGN_REVOCATIONS_REFRESH", default ("10s"), plain,
        parse::up_to_ten_minutes,
        "How often the revocation list is read again (a URL with If-None-Match).";
    revocations_max_stale: Duration = "CAPSIGN_REVOCATIONS_MAX_STALE", default ("5m"), plain,
        parse::duration,
        "After this long without a successful read of the list, every held grant is re-checked \
         by the policy.";
    revocation_key: ClaimTemplate = "CAPSIGN_REVOCATION_KEY", default [""], plain,
        ClaimTemplate::parse,
        "The x-ably-revocation-key claim of minted JWTs, a template: user:{clientId}, \
         org:{claims.org}.";
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
    shutdown_delay: Duration = "CAPSIGN_SHUTDOWN_DELAY", default {"10s", "0s in demo mode"},
        plain, parse::up_to_ten_minutes,
        "On SIGTERM, /readyz turns 503 at once and requests are still served this long: at least \
         the load balancer's health-check interval × its failure threshold, plus propagation.";
    startup_timeout: Duration = "CAPSIGN_STARTUP_TIMEOUT", default ("5m"), plain,
        parse::up_to_ten_minutes,
        "How long a failed start-up fetch (the JWKS, the revocation list) is retried, not ready, \
         before exit 2.";
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
