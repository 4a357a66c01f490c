//! The auth flow: verified grants + new grants the policy allows → one credential and a new
//! cookie.
//!
//! This module knows no HTTP: it takes an [`Identity`], the sealed grants the client
//! presented, and the parsed parameters, and returns an [`AuthOutcome`] or a [`FlowError`].
//! The `http` module turns both into responses; a serverless adapter or a fuzz target can
//! drive the flow the same way.
//!
//! The order matters and is the heart of capsign's safety:
//!
//! 1. Sealed grants are opened (MAC first) for this clientId; a value that fails any check is
//!    ignored, so the request starts from an empty set rather than failing.
//! 2. Grants approved longer ago than `regrant_after` leave the held set and are asked again.
//! 3. Only what the held set does not cover goes to the policy, in one call, with the re-checks.
//! 4. The allowed grants are merged; the cookie is sealed within its size budget; the
//!    credential is minted for the whole set, never outliving its oldest grant.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ably::AblyError;
use crate::capability::{CapabilitySet, Resource};
use crate::config::{Config, DenyMode, Format, Overflow, SET_COOKIE_BUDGET};
use crate::grants::{GrantSet, OpenLimits, Purpose};
use crate::identity::Identity;
use crate::token::{self, TokenError};
use crate::webhook::WebhookError;

/// JWTs above this size are sent as TokenRequests by `format=auto`: they travel in URLs and
/// headers, where about 8 KB is the practical limit.
pub const JWT_BUDGET: usize = 8 * 1024;

/// Seconds an Ably JWT's `iat` is back-dated, so a client whose clock (or Ably's) is slightly
/// behind never sees a token "issued in the future" (which ably-js retries without end).
pub const IAT_BACKDATE_S: u64 = 5;

/// The time source. Reads the system clock plus an offset that tests (and, later, a clock
/// correction from Ably's `/time`) can set.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        sys.saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock by `delta_ms` (tests; clock correction).
    pub fn advance(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::Relaxed);
    }
}

/// Everything a request handler needs: the configuration and the clock.
#[derive(Debug)]
pub struct App {
    /// The checked configuration.
    pub config: Config,
    /// The time source.
    pub clock: Clock,
}

impl App {
    /// An app with the system clock.
    pub fn new(config: Config) -> App {
        App {
            config,
            clock: Clock::default(),
        }
    }

    /// The start-up I/O, once, before serving: the clock correction from Ably's `/time` when
    /// `CAPSIGN_ABLY_TIME` is on, and the first fetch of a JWKS URL. Returns notes for the
    /// operator (a failed clock correction is one: capsign then runs on the system clock).
    ///
    /// # Errors
    ///
    /// The JWKS URL could not be fetched or holds no usable key: no session could verify.
    pub async fn prepare(&self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        if self.config.ably_time {
            match self.correct_clock().await {
                Ok(offset) => {
                    notes.push(format!("clock corrected by {offset} ms from Ably's /time"))
                }
                Err(e) => notes.push(format!(
                    "warning: no clock correction ({e}); using the system clock"
                )),
            }
        }
        if let crate::identity::IdentityConfig::Jwks(j) = &self.config.identity {
            if j.state().is_remote() {
                let n = j
                    .state()
                    .refresh(self.clock.now_ms())
                    .await
                    .map_err(|e| format!("CAPSIGN_SESSION_JWKS: {e}"))?;
                notes.push(format!("{n} session keys fetched from the JWKS URL"));
            }
        }
        Ok(notes)
    }

    async fn correct_clock(&self) -> Result<i64, AblyError> {
        let before = self.clock.now_ms();
        let ably = self.config.ably_rest.time().await?;
        let after = self.clock.now_ms();
        // Ably's reading is taken somewhere during the round trip: compare with its middle.
        let local = before / 2 + after / 2;
        let offset = i64::try_from(ably)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(local).unwrap_or(i64::MAX));
        self.clock.advance(offset);
        Ok(offset)
    }
}

/// The parameters of an `/auth` request, parsed.
#[derive(Debug, Clone, Default)]
pub struct AuthParams {
    /// The grants wanted now.
    pub capability: Option<CapabilitySet>,
    /// The clientId the client believes it has.
    pub client_id: Option<String>,
    /// Requested lifetime in ms (positive).
    pub ttl_ms: Option<u64>,
    /// Requested format.
    pub format: Option<Format>,
}

/// The sealed grants a client presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// Values of every cookie with the grant cookie's name (a browser may send several).
    pub cookies: &'a [&'a str],
    /// The `X-Capsign-Grants` header.
    pub header: Option<&'a str>,
}

/// A minted credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An Ably JWT (`application/jwt`).
    Jwt(String),
    /// A TokenRequest's JSON (`application/json`).
    TokenRequest(String),
    /// Ably's TokenDetails, as Ably sent them (`application/json`).
    Token(bytes::Bytes),
}

/// A successful request.
#[derive(Debug, Clone)]
pub struct AuthOutcome {
    /// The credential.
    pub credential: Credential,
    /// The full `Set-Cookie` value.
    pub set_cookie: String,
    /// The sealed grants for the `X-Capsign-Grants` header.
    pub header_grants: String,
    /// Resources asked for and refused (some or all of their operations).
    pub denied: Vec<Resource>,
    /// Resources dropped to keep the cookie within its budget.
    pub evicted: Vec<Resource>,
    /// The capability minted.
    pub capability: CapabilitySet,
}

/// Why a request was refused. The `http` module maps each to a status and an Ably code.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// `clientId` differs from the authenticated one.
    #[error("clientId {asked:?} does not match the authenticated clientId")]
    ClientIdMismatch {
        /// What the client sent.
        asked: String,
    },
    /// Denied grants in `deny = "reject"` mode.
    #[error("capability denied for {}", list(.0))]
    Denied(Vec<Resource>),
    /// Nothing to mint.
    #[error("no capability granted")]
    NothingGranted,
    /// More new grants than allowed in one request.
    #[error("{asked} new grants in one request; at most {max} are allowed")]
    TooManyNewGrants {
        /// How many were asked.
        asked: usize,
        /// The limit.
        max: usize,
    },
    /// The grant cookie would exceed its size budget (`overflow = "reject"`).
    #[error(
        "grant cookie full: {held} grants held and the new ones do not fit in {SET_COOKIE_BUDGET} \
         bytes; ask for a wildcard resource instead of many channels"
    )]
    CookieFull {
        /// Grants held, new ones included.
        held: usize,
    },
    /// The policy webhook gave no usable answer.
    #[error(transparent)]
    PolicyUnavailable(#[from] WebhookError),
    /// Ably refused or could not be reached (`format=token`).
    #[error(transparent)]
    Ably(#[from] AblyError),
    /// A bug or a broken backend: minting failed.
    #[error(transparent)]
    Mint(#[from] TokenError),
}

fn list(resources: &[Resource]) -> String {
    resources
        .iter()
        .map(Resource::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the flow for one request.
///
/// # Errors
///
/// See [`FlowError`]. On any error the client's cookie stays as it was.
pub async fn authorize(
    app: &App,
    who: &Identity,
    presented: Presented<'_>,
    params: AuthParams,
) -> Result<AuthOutcome, FlowError> {
    let cfg = &app.config;
    if let Some(asked) = params.client_id {
        if asked != who.client_id {
            return Err(FlowError::ClientIdMismatch { asked });
        }
    }
    let format = params.format.unwrap_or(cfg.format);
    let now_ms = app.clock.now_ms();
    let now = now_ms / 1000;

    // 1. What the client verifiably holds.
    let (mut held, fresh) = open_presented(cfg, who, presented, now);
    if fresh {
        held.add(&cfg.policy.defaults(who), now);
    }

    // 2. Grants due for a re-check leave the held set; 3. the policy sees only what is new.
    let stale = held.take_approved_before(now.saturating_sub(cfg.regrant_after));
    let requested = params.capability.unwrap_or_default();
    let new = held.uncovered(&requested);
    if new.len() > cfg.max_new_grants {
        return Err(FlowError::TooManyNewGrants {
            asked: new.len(),
            max: cfg.max_new_grants,
        });
    }
    let ask = if stale.is_empty() {
        new.clone()
    } else {
        new.union(&stale.capabilities())
    };
    let granted = if ask.is_empty() {
        CapabilitySet::new()
    } else {
        decide(cfg, who, &ask, now).await?
    };
    let denied: Vec<Resource> = new
        .iter()
        .filter(|(r, ops)| !ops.is_subset(granted.ops_for(r.as_str()).unwrap_or_default()))
        .map(|(r, _)| r.clone())
        .collect();
    if !denied.is_empty() && cfg.deny == DenyMode::Reject {
        return Err(FlowError::Denied(denied));
    }

    // 4. Merge, seal within budget, mint.
    held.add(&granted, now);
    let (set_cookie, header_grants, evicted) = seal_within_budget(cfg, who, &mut held, now)?;
    let mut capability = held.capabilities();
    if let Some(key) = &cfg.key_capability {
        capability = capability.intersect(key);
    }
    if capability.is_empty() {
        return Err(FlowError::NothingGranted);
    }
    let ttl_ms = ttl(cfg, params.ttl_ms, &held, now_ms);
    let mut credential = mint(cfg, format, &capability, who, ttl_ms, now_ms)?;
    if format == Format::Token {
        // The TokenRequest minted above goes to Ably; the client gets Ably's answer.
        if let Credential::TokenRequest(tr) = credential {
            let details = cfg.ably_rest.request_token(cfg.ably.key_name(), tr).await?;
            credential = Credential::Token(details);
        }
    }
    Ok(AuthOutcome {
        credential,
        set_cookie,
        header_grants,
        denied,
        evicted,
        capability,
    })
}

/// Decides `ask` (non-empty): by the rules alone, or, with a webhook, the rules for what they
/// match and the webhook, in one call, for the rest.
async fn decide(
    cfg: &Config,
    who: &Identity,
    ask: &CapabilitySet,
    now: u64,
) -> Result<CapabilitySet, FlowError> {
    let Some(hook) = &cfg.webhook else {
        return Ok(cfg.policy.decide(who, ask));
    };
    let (by_rules, rest) = cfg.policy.split(who, ask);
    let mut granted = if by_rules.is_empty() {
        CapabilitySet::new()
    } else {
        cfg.policy.decide(who, &by_rules)
    };
    if !rest.is_empty() {
        granted = granted.union(&hook.decide(who, &rest, now).await?);
    }
    Ok(granted)
}

/// Opens every presented value for this client; returns the union and whether none opened.
fn open_presented(
    cfg: &Config,
    who: &Identity,
    presented: Presented<'_>,
    now: u64,
) -> (GrantSet, bool) {
    let limits = OpenLimits {
        now,
        max_age: cfg.grant_max_age,
        future_skew: crate::config::COOKIE_FUTURE_SKEW_S,
    };
    let candidates = presented
        .cookies
        .iter()
        .map(|v| (Purpose::Cookie, *v))
        .chain(presented.header.map(|v| (Purpose::Header, v)));
    let mut held = GrantSet::new();
    let mut fresh = true;
    for (purpose, value) in candidates {
        match cfg.sealer.open(purpose, value, &who.client_id, limits) {
            Ok(opened) => {
                held.merge(opened.grants);
                fresh = false;
            }
            Err(e) => {
                tracing::debug!(client_id = %who.client_id, ?purpose, "ignoring sealed grants: {e}")
            }
        }
    }
    // Grants past their maximum age need no special case: regrant_after <= grant_max_age, so
    // they are among those re-checked, and gone unless the policy approves them again.
    (held, fresh)
}

/// The `Set-Cookie` value for a sealed grant set: `Secure; HttpOnly; Path=/`, the configured
/// `SameSite` (`Lax` by default) and a `Max-Age` of the grant maximum age. The same bytes as
/// the `cookie` crate writes (a test checks), without its intermediate strings: the name was
/// checked at start-up and the value is base64url.
pub fn set_cookie(cfg: &Config, value: &str) -> String {
    let name = cfg.sealer.cookie_name();
    let same_site = match cfg.same_site {
        ::cookie::SameSite::Strict => "Strict",
        ::cookie::SameSite::Lax => "Lax",
        ::cookie::SameSite::None => "None",
    };
    let mut max_age = itoa::Buffer::new();
    let max_age = max_age.format(cfg.grant_max_age.min(i64::MAX as u64));
    let mut out = String::with_capacity(name.len() + value.len() + 64);
    for part in [
        name,
        "=",
        value,
        "; HttpOnly; SameSite=",
        same_site,
        "; Secure; Path=/; Max-Age=",
        max_age,
    ] {
        out.push_str(part);
    }
    out
}

/// Seals `held` for the cookie and the header, applying the overflow policy when the
/// `Set-Cookie` would exceed its budget.
fn seal_within_budget(
    cfg: &Config,
    who: &Identity,
    held: &mut GrantSet,
    now: u64,
) -> Result<(String, String, Vec<Resource>), FlowError> {
    let mut evicted = Vec::new();
    loop {
        let payload = cfg.sealer.encode(&who.client_id, now, held);
        let cookie = set_cookie(cfg, &cfg.sealer.seal(Purpose::Cookie, &payload));
        if cookie.len() < SET_COOKIE_BUDGET {
            let header = cfg.sealer.seal(Purpose::Header, &payload);
            return Ok((cookie, header, evicted));
        }
        if cfg.overflow == Overflow::Reject || held.is_empty() {
            return Err(FlowError::CookieFull { held: held.len() });
        }
        // Evict in proportion to the excess, at least one grant, then measure again.
        let per_grant = (cookie.len() / held.len().max(1)).max(1);
        let n = (cookie.len() + 1 - SET_COOKIE_BUDGET)
            .div_ceil(per_grant)
            .max(1);
        evicted.extend(held.evict_oldest(n));
    }
}

/// The credential's lifetime: the request's (or the default), within the configured bounds,
/// and never beyond the maximum age of the oldest grant it carries.
fn ttl(cfg: &Config, asked: Option<u64>, held: &GrantSet, now_ms: u64) -> u64 {
    let b = cfg.ttl;
    let ttl = asked.unwrap_or(b.default_ms).clamp(b.min_ms, b.max_ms);
    match held.oldest_approval() {
        Some(oldest) => {
            let limit_ms = oldest
                .saturating_add(cfg.grant_max_age)
                .saturating_mul(1000)
                .saturating_sub(now_ms);
            ttl.min(limit_ms.max(1000))
        }
        None => ttl,
    }
}

fn mint(
    cfg: &Config,
    format: Format,
    capability: &CapabilitySet,
    who: &Identity,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Credential, FlowError> {
    let client_id = Some(who.client_id.as_str());
    let token_request = || -> Result<Credential, FlowError> {
        Ok(Credential::TokenRequest(cfg.ably.token_request(
            Some(ttl_ms),
            Some(&capability.to_json()),
            client_id,
            now_ms,
            &token::nonce(),
        )?))
    };
    match format {
        Format::TokenRequest | Format::Token => token_request(),
        Format::Jwt | Format::Auto => {
            let now = now_ms / 1000;
            let iat = now.saturating_sub(IAT_BACKDATE_S);
            // Within Ably's limit even counting the back-dating.
            let exp = (now + ttl_ms.div_ceil(1000)).min(iat + cfg.ttl.max_ms / 1000);
            let jwt = cfg.ably.jwt(capability, client_id, iat, exp);
            if format == Format::Auto && jwt.len() > JWT_BUDGET {
                token_request()
            } else {
                Ok(Credential::Jwt(jwt))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const RULES: &str = r#"
        [[rule]]
        resource = "doc:*"
        ops = ["subscribe", "publish"]
        [[rule]]
        resource = "home:{clientId}"
        ops = ["subscribe"]
        default = true
    "#;

    fn app(vars: &[(&str, &str)]) -> App {
        let dir = std::env::temp_dir().join(format!(
            "capsign-flow-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = dir.join("rules.toml");
        std::fs::write(&rules, RULES).unwrap();
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.insert("CAPSIGN_RULES".into(), rules.display().to_string());
        map.insert("ABLY_API_KEY".into(), "app.key:secret".into());
        let config = Config::load(&move |k| map.get(k).cloned(), None).unwrap();
        App::new(config)
    }

    fn alice() -> Identity {
        Identity::new("alice".into(), Default::default())
    }

    fn params(cap: &str) -> AuthParams {
        AuthParams {
            capability: Some(CapabilitySet::from_json(cap).unwrap()),
            ..AuthParams::default()
        }
    }

    fn cookie_value(set_cookie: &str) -> String {
        let c = ::cookie::Cookie::parse(set_cookie).unwrap();
        c.value().to_owned()
    }

    #[test]
    fn set_cookie_writes_what_the_cookie_crate_writes() {
        for (same_site, max_age) in [("strict", "60s"), ("lax", "1d"), ("none", "1h")] {
            let app = app(&[
                ("CAPSIGN_SAME_SITE", same_site),
                ("CAPSIGN_GRANT_MAX_AGE", max_age),
                ("CAPSIGN_REGRANT_AFTER", "10s"),
            ]);
            let cfg = &app.config;
            let theirs = ::cookie::Cookie::build((cfg.sealer.cookie_name(), "AQEA_x-y"))
                .path("/")
                .secure(true)
                .http_only(true)
                .same_site(cfg.same_site)
                .max_age(::cookie::time::Duration::seconds(
                    i64::try_from(cfg.grant_max_age).unwrap(),
                ))
                .build()
                .to_string();
            assert_eq!(set_cookie(cfg, "AQEA_x-y"), theirs);
        }
    }

    #[tokio::test]
    async fn only_new_grants_reach_the_policy() {
        let app = app(&[]);
        let a = authorize(
            &app,
            &alice(),
            Presented::default(),
            params(r#"{"doc:a":["subscribe"]}"#),
        )
        .await
        .unwrap();
        assert_eq!(app.config.policy.evaluated(), 1);
        let jar = [cookie_value(&a.set_cookie)];
        let jar: Vec<&str> = jar.iter().map(String::as_str).collect();
        let b = authorize(
            &app,
            &alice(),
            Presented {
                cookies: &jar,
                header: None,
            },
            params(r#"{"doc:b":["subscribe"],"doc:a":["subscribe"]}"#),
        )
        .await
        .unwrap();
        assert_eq!(app.config.policy.evaluated(), 2, "doc:a was asked again");
        assert_eq!(
            b.capability.to_json(),
            r#"{"doc:a":["subscribe"],"doc:b":["subscribe"],"home:alice":["subscribe"]}"#
        );
        // Nothing new: no policy call at all.
        let jar2 = [cookie_value(&b.set_cookie)];
        let jar2: Vec<&str> = jar2.iter().map(String::as_str).collect();
        authorize(
            &app,
            &alice(),
            Presented {
                cookies: &jar2,
                header: None,
            },
            AuthParams::default(),
        )
        .await
        .unwrap();
        assert_eq!(app.config.policy.calls(), 2);
    }

    #[tokio::test]
    async fn denied_grants_are_omitted_or_rejected() {
        let app1 = app(&[]);
        let out = authorize(
            &app1,
            &alice(),
            Presented::default(),
            params(r#"{"doc:a":["subscribe"],"admin":["publish"]}"#),
        )
        .await
        .unwrap();
        assert_eq!(out.denied, vec![Resource::new("admin").unwrap()]);
        assert!(!out.capability.to_json().contains("admin"));
        let app2 = app(&[("CAPSIGN_DENY", "reject")]);
        let err = authorize(
            &app2,
            &alice(),
            Presented::default(),
            params(r#"{"admin":["publish"]}"#),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FlowError::Denied(_)));
    }

    #[tokio::test]
    async fn grants_are_rechecked_and_expire() {
        let app = app(&[
            ("CAPSIGN_REGRANT_AFTER", "1h"),
            ("CAPSIGN_GRANT_MAX_AGE", "1d"),
        ]);
        let out = authorize(
            &app,
            &alice(),
            Presented::default(),
            params(r#"{"doc:a":["subscribe"]}"#),
        )
        .await
        .unwrap();
        let v = [cookie_value(&out.set_cookie)];
        let jar: Vec<&str> = v.iter().map(String::as_str).collect();
        let before = app.config.policy.evaluated();
        app.clock.advance(2 * 3600 * 1000);
        let out = authorize(
            &app,
            &alice(),
            Presented {
                cookies: &jar,
                header: None,
            },
            AuthParams::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            app.config.policy.evaluated(),
            before + 2,
            "both held grants re-checked"
        );
        assert!(out.capability.to_json().contains("doc:a"));
    }

    #[tokio::test]
    async fn ttl_never_outlives_oldest_grant() {
        let app = app(&[
            ("CAPSIGN_GRANT_MAX_AGE", "2h"),
            ("CAPSIGN_REGRANT_AFTER", "2h"),
            ("CAPSIGN_TTL_MAX", "24h"),
        ]);
        let out = authorize(
            &app,
            &alice(),
            Presented::default(),
            params(r#"{"doc:a":["subscribe"]}"#),
        )
        .await
        .unwrap();
        let v = [cookie_value(&out.set_cookie)];
        let jar: Vec<&str> = v.iter().map(String::as_str).collect();
        app.clock.advance(90 * 60 * 1000);
        let p = AuthParams {
            ttl_ms: Some(10 * 3600 * 1000),
            format: Some(Format::TokenRequest),
            ..AuthParams::default()
        };
        let out = authorize(
            &app,
            &alice(),
            Presented {
                cookies: &jar,
                header: None,
            },
            p,
        )
        .await
        .unwrap();
        let Credential::TokenRequest(tr) = out.credential else {
            panic!()
        };
        let tr: serde_json::Value = serde_json::from_str(&tr).unwrap();
        let ttl = tr["ttl"].as_u64().unwrap();
        assert!(
            (29 * 60 * 1000..=30 * 60 * 1000 + 1000).contains(&ttl),
            "{ttl}"
        );
    }

    #[tokio::test]
    async fn client_id_mismatch() {
        let app = app(&[]);
        let p = AuthParams {
            client_id: Some("bob".into()),
            ..AuthParams::default()
        };
        assert!(matches!(
            authorize(&app, &alice(), Presented::default(), p).await,
            Err(FlowError::ClientIdMismatch { .. })
        ));
    }
}
