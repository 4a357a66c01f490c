//! The auth flow: verified grants + new grants the policy allows → one credential and a new
//! cookie.
//!
//! This module knows no HTTP: it takes an [`Identity`], the sealed grants the client
//! presented, the parsed parameters and the time, and returns an [`AuthOutcome`] (with the
//! sealed grants, not a `Set-Cookie`) or a [`FlowError`]. The `http` module turns both into
//! responses; a serverless adapter or a fuzz target can drive the flow the same way.
//!
//! The order matters and is the heart of capsign's safety:
//!
//! 1. Sealed grants are opened (MAC first) for this clientId; a value that fails any check is
//!    ignored, so the request starts from an empty set rather than failing.
//! 2. Grants approved longer ago than `regrant_after` leave the held set and are asked again.
//! 3. Only what the held set does not cover goes to the policy, in one call, with the re-checks.
//! 4. The allowed grants are merged; the cookie is sealed within its size budget; the
//!    credential is minted for the whole set, never outliving its oldest grant.

use crate::ably::{self, Ably, AblyError, TokenError};
use crate::capability::{CapabilitySet, Resource};
use crate::grants::{
    GrantSet, GrantsError, OpenLimits, Purpose, SET_COOKIE_BUDGET, SealError, Sealer,
};
use crate::identity::{ClientId, Identity};
use crate::metrics::{CookieResult, Decider, Metrics};
use crate::policy::{ClaimTemplate, Policy, WebhookError};
use crate::revocation::{Applied, Revocations};
use crate::set_cookie::SetCookie;
use crate::settings::{DenyMode, EmbeddedInner, FlowSettings, Format, Overflow};

mod carrier;
mod mint;

use carrier::{Carrier, Carriers, Reseal};

/// JWTs above this size are sent as TokenRequests by `format=auto`: they travel in URLs and
/// headers, where about 8 KB is the practical limit.
pub const JWT_BUDGET: usize = 8 * 1024;

/// The most bytes of user claims (names and values) one Ably JWT carries. One claim per rule
/// keeps them small; a claim template that copies a long session claim is refused, not sent
/// on every renewal.
pub const CLAIMS_BUDGET: usize = 4 * 1024;

/// Seconds an Ably JWT's `iat` is back-dated, so a client whose clock (or Ably's) is slightly
/// behind never sees a token "issued in the future" (which ably-js retries without end).
pub const IAT_BACKDATE_S: u64 = 5;

/// How far in the future a cookie's issue time may lie (clock differences within a fleet).
pub const COOKIE_FUTURE_SKEW_S: u64 = 60;

/// The most grant cookies of one request that are tried: the first that opens is used, the
/// rest are ignored (a browser sends two only when an old cookie with another path or domain
/// lingers). Grants from several cookies are never unioned.
pub const MAX_COOKIES_TRIED: usize = 4;

/// The services and settings of the auth flow; the app builds one at start-up.
#[derive(Debug)]
pub struct Flow {
    /// Seals and opens grant cookies and headers.
    pub sealer: Sealer,
    /// Decides new grants.
    pub policy: Policy,
    /// Mints credentials; asks Ably for tokens.
    pub ably: Ably,
    /// The revocation list, when one is configured.
    pub revocations: Option<std::sync::Arc<Revocations>>,
    /// The `x-ably-revocation-key` claim of minted JWTs.
    revocation_key: Option<ClaimTemplate>,
    settings: FlowSettings,
    metrics: Metrics,
}

/// The parameters of an `/auth` request, parsed.
#[derive(Debug, Clone, Default)]
pub struct AuthParams {
    /// The grants wanted now.
    pub capability: Option<CapabilitySet>,
    /// The clientId the client believes it has.
    pub client_id: Option<ClientId>,
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
    /// The app's own JWT with the Ably credential in its `x-ably-token` header
    /// (`application/jwt`).
    Embedded(String),
}

/// A successful request.
#[derive(Debug, Clone)]
pub struct AuthOutcome {
    /// The credential.
    pub credential: Credential,
    /// The sealed grants for the grant cookie, as its `Set-Cookie` value, when the client
    /// should get a new one (see [`Flow::authorize`]).
    pub cookie: Option<SetCookie>,
    /// The sealed grants for the `X-Capsign-Grants` header, when the client should get a new
    /// one.
    pub header_grants: Option<String>,
    /// Resources asked for and granted none of the operations asked.
    pub denied: Vec<Resource>,
    /// Resources asked for and granted some, not all, of the operations asked.
    pub partial: Vec<Resource>,
    /// Resources dropped to keep the cookie within its budget.
    pub evicted: Vec<Resource>,
    /// The capability minted.
    pub capability: CapabilitySet,
    /// How many grants were held (opened from the cookie or header) when the request came in.
    pub held: usize,
    /// How many requested grants were new (not covered by what was held).
    pub new: usize,
}

/// Why a request was refused. The `http` module maps each to a status and an Ably code.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// `clientId` differs from the authenticated one.
    #[error("clientId {asked:?} does not match the authenticated clientId")]
    ClientIdMismatch {
        /// What the client sent.
        asked: ClientId,
    },
    /// Denied grants in `deny = "reject"` mode.
    #[error("capability denied for {}", list(.0))]
    Denied(Vec<Resource>),
    /// Nothing to mint.
    #[error("no capability granted")]
    NothingGranted,
    /// More resources asked for than one client may hold; refused before any comparison.
    #[error("{asked} resources in one capability; at most {max} are allowed")]
    TooManyRequested {
        /// How many were asked.
        asked: usize,
        /// The limit (`CAPSIGN_MAX_GRANTS`).
        max: usize,
    },
    /// More grants than one client may hold (`overflow = "reject"`).
    #[error(
        "{held} grants would be held; at most {max} are allowed (CAPSIGN_MAX_GRANTS); ask for a \
         wildcard resource instead of many channels"
    )]
    TooManyGrants {
        /// Grants held, new ones included.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// More new grants than allowed in one request.
    #[error("{asked} new grants in one request; at most {max} are allowed")]
    TooManyNewGrants {
        /// How many were asked.
        asked: usize,
        /// The limit.
        max: usize,
    },
    /// The rules give the capability user claims (`ably.room.*`, `ably.channel.*`) that only
    /// a JWT carries, and the format asked for (or `auto` past the JWT budget) is not one.
    #[error(
        "the rules give this capability user claims ({claim}) that only an Ably JWT carries; \
         {why}: ask for format=jwt (or embedded, with its JWT inside)"
    )]
    ClaimsNeedJwt {
        /// The first claim that would be shed.
        claim: String,
        /// Why no JWT would be minted.
        why: &'static str,
    },
    /// The user claims the rules give the capability are over [`CLAIMS_BUDGET`].
    #[error(
        "the user claims for this capability take {bytes} bytes, over the {CLAIMS_BUDGET}-byte \
         budget: a claim template copies a session claim that is too long"
    )]
    ClaimsTooLarge {
        /// Their size, names and values.
        bytes: usize,
    },
    /// The grant cookie would exceed its size budget (`overflow = "reject"`).
    #[error(
        "grant cookie full: {held} grants held and the new ones do not fit in {limit} bytes \
         ({of}); ask for a wildcard resource instead of many channels"
    )]
    CookieFull {
        /// Grants held, new ones included.
        held: usize,
        /// The limit that was hit, in bytes.
        limit: usize,
        /// Which limit: the `Set-Cookie` budget, or the largest encoded set that opens.
        of: &'static str,
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
    /// `format=embedded` asked of a capsign without `CAPSIGN_EMBEDDED_SECRET`.
    #[error("format embedded is not configured here (CAPSIGN_EMBEDDED_SECRET); ask for jwt")]
    EmbeddedNotConfigured,
}

/// What a failure to open sealed grants counts as.
fn cookie_result(e: &GrantsError) -> CookieResult {
    match e {
        GrantsError::Expired | GrantsError::FromFuture => CookieResult::Expired,
        GrantsError::OtherClient => CookieResult::OtherUser,
        GrantsError::UnknownKey(_) => CookieResult::UnknownKey,
        _ => CookieResult::Tampered,
    }
}

fn list(resources: &[Resource]) -> String {
    resources
        .iter()
        .map(Resource::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sealed values for the cookie and the header (each when resealed), and the resources
/// evicted to fit the budget.
type Sealed = (Option<SetCookie>, Option<String>, Vec<Resource>);

impl Flow {
    /// The flow of the given services and settings.
    pub fn new(sealer: Sealer, policy: Policy, ably: Ably, settings: FlowSettings) -> Flow {
        Flow {
            sealer,
            policy,
            ably,
            revocations: None,
            revocation_key: None,
            settings,
            metrics: Metrics::disabled(),
        }
    }

    /// The same flow, applying the revocation list `revocations` and writing the
    /// `x-ably-revocation-key` claim `key`.
    pub fn with_revocation(
        self,
        revocations: Option<Revocations>,
        key: Option<ClaimTemplate>,
    ) -> Flow {
        Flow {
            revocations: revocations.map(std::sync::Arc::new),
            revocation_key: key,
            ..self
        }
    }

    /// The same flow, recording into `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Flow {
        Flow { metrics, ..self }
    }

    /// Runs the flow for one request at `now_ms` (ms since the epoch).
    ///
    /// The grants are sealed again only when the client needs a new value: for each carrier
    /// (the cookie, the `X-Capsign-Grants` header) the client uses, when the set changed (a
    /// fresh set, a new grant, a re-check), when the value it sent did not open, was sealed by
    /// a key that no longer signs, or is older than half the grant maximum age (so an active
    /// client's cookie never reaches its `Max-Age`). A client uses the cookie when it sent one,
    /// the header when it sent one, and both when it sent neither. A renewal that asks for
    /// nothing new therefore gets no `Set-Cookie` and no `X-Capsign-Grants`: it keeps what it
    /// has.
    ///
    /// # Errors
    ///
    /// See [`FlowError`]. On any error the client's cookie stays as it was.
    pub async fn authorize(
        &self,
        who: &Identity,
        presented: Presented<'_>,
        params: AuthParams,
        now_ms: u64,
        request_id: &str,
    ) -> Result<AuthOutcome, FlowError> {
        let cfg = &self.settings;
        if let Some(asked) = params.client_id {
            if asked != who.client_id {
                return Err(FlowError::ClientIdMismatch { asked });
            }
        }
        let format = params.format.unwrap_or(cfg.format);
        let now = now_ms / 1000;

        // 1. What the client verifiably holds.
        let (mut held, carriers) = self.open_presented(who, presented, now);
        let fresh = !carriers.cookie.opened && !carriers.header.opened;
        if fresh {
            held.add(&self.policy.defaults(who), now);
        }

        // 2. Revoked grants and grants due for a re-check leave the held set (all of them when
        // the revocation list is stale); 3. the policy sees only what is new, and those.
        let revocation = self.revoke(who, &mut held, now_ms).await;
        let recheck_cutoff = if revocation.stale {
            now
        } else {
            now.saturating_sub(cfg.regrant_after_s)
        };
        let stale = held.take_approved_before(recheck_cutoff);
        let rechecked = !stale.is_empty() || !revocation.revoked.is_empty();
        let requested = params.capability.unwrap_or_default();
        // Bounded before any comparison: the covering check costs at most this many lookups.
        if requested.len() > self.sealer.max_grants() {
            return Err(FlowError::TooManyRequested {
                asked: requested.len(),
                max: self.sealer.max_grants(),
            });
        }
        let new = held.uncovered(&requested);
        let held_count = held.len() + stale.len() + revocation.revoked.len();
        self.metrics
            .decisions(Decider::Cookie, true, requested.len() - new.len());
        if new.len() > cfg.max_new_grants {
            return Err(FlowError::TooManyNewGrants {
                asked: new.len(),
                max: cfg.max_new_grants,
            });
        }
        let granted = self
            .decide(
                who,
                &mut held,
                (stale, revocation.revoked),
                &new,
                now,
                request_id,
            )
            .await?;
        let (mut denied, mut partial) = (Vec::new(), Vec::new());
        for (resource, ops) in new.iter() {
            let given = granted.ops_for(resource.as_str()).unwrap_or_default();
            if ops.is_subset(given) {
                continue;
            }
            if ops.intersection(given).is_empty() {
                denied.push(resource.clone());
            } else {
                partial.push(resource.clone());
            }
        }
        if cfg.deny == DenyMode::Reject && !(denied.is_empty() && partial.is_empty()) {
            denied.append(&mut partial);
            denied.sort();
            return Err(FlowError::Denied(denied));
        }

        // 4. Merge, seal within budget (for the carriers that need a new value), mint.
        let changed = fresh || rechecked || !granted.is_empty() || carriers.both_opened();
        held.add(&granted, now);
        let reseal = carriers.reseal(changed);
        let (cookie, header_grants, evicted) =
            self.seal_within_budget(who, &mut held, now, reseal)?;
        let mut capability = held.capabilities();
        if let Some(key) = &self.ably.key_capability {
            capability = capability.intersect(key);
        }
        if capability.is_empty() {
            return Err(FlowError::NothingGranted);
        }
        let ttl_ms = self.ttl(params.ttl_ms, who, &held, now_ms);
        let at = mint::At {
            now_ms,
            ttl_ms,
            issued_not_before_s: revocation.issued_not_before_s,
        };
        let credential = self
            .credential(format, &capability, who, at, request_id)
            .await?;
        let (format_label, bytes) = match &credential {
            Credential::Jwt(jwt) => ("jwt", jwt.len()),
            Credential::TokenRequest(tr) => ("tokenRequest", tr.len()),
            Credential::Token(details) => ("token", details.len()),
            Credential::Embedded(jwt) => ("embedded", jwt.len()),
        };
        self.metrics.credential(format_label, bytes);
        if let Some(cookie) = &cookie {
            self.metrics.cookie_sealed(cookie.value().len());
        }
        Ok(AuthOutcome {
            held: held_count,
            new: new.len(),
            credential,
            cookie,
            header_grants,
            denied,
            partial,
            evicted,
            capability,
        })
    }

    /// Applies the revocation list (when one is configured) to the held grants; refreshes
    /// it first when due.
    async fn revoke(&self, who: &Identity, held: &mut GrantSet, now_ms: u64) -> Applied {
        let Some(revocations) = &self.revocations else {
            return Applied::default();
        };
        revocations.refresh_when_due(now_ms).await;
        revocations.apply(&who.client_id, || self.revocation_key(who), held, now_ms)
    }

    /// The user's revocation key (`CAPSIGN_REVOCATION_KEY` rendered), if configured and its
    /// claims are present.
    pub(super) fn revocation_key(&self, who: &Identity) -> Option<String> {
        self.revocation_key.as_ref()?.render(who)
    }

    /// Asks the policy about what is new, what is due for a re-check and what was revoked
    /// (`due`: the last two, out of `held`), in one call; returns what it granted.
    ///
    /// When only re-checks were asked (nothing new) and the webhook is down, the grants due
    /// for a re-check go back into `held` as they are (their approval time unchanged) until
    /// their maximum age, so an outage does not turn every renewal into a 503. Revoked grants
    /// never go back: the client goes on without them.
    async fn decide(
        &self,
        who: &Identity,
        held: &mut GrantSet,
        (stale, revoked): (GrantSet, GrantSet),
        new: &CapabilitySet,
        now: u64,
        request_id: &str,
    ) -> Result<CapabilitySet, FlowError> {
        let ask = if stale.is_empty() && revoked.is_empty() {
            std::borrow::Cow::Borrowed(new)
        } else {
            std::borrow::Cow::Owned(
                new.union(&stale.capabilities())
                    .union(&revoked.capabilities()),
            )
        };
        if ask.is_empty() {
            return Ok(CapabilitySet::new());
        }
        match self.policy.decide(who, &ask, now, request_id).await {
            Ok(granted) => Ok(granted),
            Err(e) if new.is_empty() => {
                tracing::warn!(
                    "{e}; serving grants due for a re-check until their maximum age (revoked \
                     ones excepted)"
                );
                let mut due = stale;
                let max_age = self.settings.grant_max_age_s;
                let _expired = due.take_approved_before(now.saturating_sub(max_age));
                held.merge(due);
                Ok(CapabilitySet::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens every presented value for this client; returns the union and what became of
    /// each carrier.
    fn open_presented(
        &self,
        who: &Identity,
        presented: Presented<'_>,
        now: u64,
    ) -> (GrantSet, Carriers) {
        let limits = OpenLimits {
            now,
            max_age: self.settings.grant_max_age_s,
            future_skew: COOKIE_FUTURE_SKEW_S,
        };
        let mut held = GrantSet::new();
        // Resealed from this age on, so that an active client's cookie never expires.
        let reseal_after = self.settings.grant_max_age_s / 2;
        let signing = self.sealer.signing_key_id();
        let open = |purpose, value| match self.sealer.open(purpose, value, &who.client_id, limits) {
            Ok(opened) => {
                self.metrics
                    .cookie(CookieResult::Opened, Some(opened.key_id));
                let current =
                    opened.key_id == signing && now.saturating_sub(opened.issued_at) < reseal_after;
                Some((opened.grants, current))
            }
            Err(e) => {
                self.metrics.cookie(cookie_result(&e), None);
                tracing::debug!(client_id = %who.client_id, ?purpose, "ignoring sealed grants: {e}");
                None
            }
        };
        let cookie = presented
            .cookies
            .iter()
            .take(MAX_COOKIES_TRIED)
            .find_map(|v| open(Purpose::Cookie, v));
        // The cookie and the header may both be sent (a client that keeps the header and has
        // a jar); each is within the grant limit, so their union is bounded too.
        let header = presented.header.and_then(|v| open(Purpose::Header, v));
        if presented.cookies.is_empty() && presented.header.is_none() {
            self.metrics.cookie(CookieResult::Absent, None);
        }
        let carriers = Carriers {
            cookie: Carrier::of(!presented.cookies.is_empty(), cookie.as_ref()),
            header: Carrier::of(presented.header.is_some(), header.as_ref()),
        };
        for (grants, _) in [cookie, header].into_iter().flatten() {
            held.merge(grants);
        }
        // Grants past their maximum age need no special case: regrant_after <= grant_max_age,
        // so they are among those re-checked, and gone unless the policy approves them again.
        (held, carriers)
    }

    /// Seals `held` for the carriers in `reseal`, applying the overflow policy when the
    /// `Set-Cookie` would exceed its budget (measured for every client, so that a client can
    /// move between the header and the cookie). Nothing is encoded when nothing is resealed.
    fn seal_within_budget(
        &self,
        who: &Identity,
        held: &mut GrantSet,
        now: u64,
        reseal: Reseal,
    ) -> Result<Sealed, FlowError> {
        let mut evicted = Vec::new();
        if !reseal.cookie && !reseal.header {
            return Ok((None, None, evicted));
        }
        let overflow = self.settings.overflow;
        loop {
            let held_now = held.len();
            let (excess, refusal) = match self.sealer.encode(&who.client_id, now, held) {
                Ok(payload) => {
                    let set_cookie_len =
                        self.sealer.set_cookie_len(self.sealer.sealed_len(&payload));
                    if set_cookie_len < SET_COOKIE_BUDGET {
                        let cookie = reseal.cookie.then(|| self.sealer.seal_cookie(&payload));
                        let header =
                            (reseal.header).then(|| self.sealer.seal(Purpose::Header, &payload));
                        return Ok((cookie, header, evicted));
                    }
                    // Evict in proportion to the excess, at least one grant, then measure
                    // again.
                    let per_grant = (set_cookie_len / held_now.max(1)).max(1);
                    let excess = (set_cookie_len + 1 - SET_COOKIE_BUDGET).div_ceil(per_grant);
                    let full = FlowError::CookieFull {
                        held: held_now,
                        limit: SET_COOKIE_BUDGET,
                        of: "the Set-Cookie budget",
                    };
                    (excess, full)
                }
                Err(SealError::TooManyGrants { held, max }) => {
                    (held - max, FlowError::TooManyGrants { held, max })
                }
                // A body over the inflate limit: an eighth at a time.
                Err(SealError::TooLarge { limit, .. }) => {
                    let full = FlowError::CookieFull {
                        held: held_now,
                        limit,
                        of: "the largest grant set that opens",
                    };
                    (held_now / 8, full)
                }
            };
            if overflow == Overflow::Reject || held.is_empty() {
                return Err(refusal);
            }
            evicted.extend(held.evict_oldest(excess.max(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::testing;

    fn app(vars: &[(&str, &str)]) -> App {
        testing::app_of(&testing::env_with_rules(testing::RULES_WITH_DEFAULT, vars))
    }

    /// [`Flow::authorize`] at the app's time.
    async fn authorize(
        app: &App,
        who: &Identity,
        presented: Presented<'_>,
        params: AuthParams,
    ) -> Result<AuthOutcome, FlowError> {
        app.flow
            .authorize(who, presented, params, app.clock.now_ms(), "test")
            .await
    }

    fn alice() -> Identity {
        Identity::new(ClientId::new("alice").unwrap(), Default::default())
    }

    fn params(cap: &str) -> AuthParams {
        AuthParams {
            capability: Some(CapabilitySet::from_json(cap).unwrap()),
            ..AuthParams::default()
        }
    }

    /// Issue 27 (10): a set too large to encode at all names the limit it hit (the largest
    /// grant set that opens, 64 KiB), not the Set-Cookie budget.
    #[tokio::test]
    async fn a_set_too_large_to_encode_names_the_limit_it_hit() {
        let app = app(&[
            ("CAPSIGN_MAX_GRANTS", "400"),
            ("CAPSIGN_MAX_NEW_GRANTS", "400"),
        ]);
        // 200 names of 490 bytes that share no more than "doc:": about 98 KB encoded.
        let cap: serde_json::Map<String, serde_json::Value> = (0..200)
            .map(|i| {
                let tail: String = (0..490)
                    .map(|j| char::from(b'a' + ((i * 7 + j * 13 + j / 5) % 26) as u8))
                    .collect();
                (
                    format!("doc:{i:03}{tail}"),
                    serde_json::json!(["subscribe"]),
                )
            })
            .collect();
        let err = authorize(
            &app,
            &alice(),
            Presented::default(),
            params(&serde_json::Value::Object(cap).to_string()),
        )
        .await
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("do not fit in 65536 bytes (the largest grant set that opens)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn only_new_grants_reach_the_policy() {
        let app = app(&[("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0")]);
        let a = authorize(
            &app,
            &alice(),
            Presented::default(),
            params(r#"{"doc:a":["subscribe"]}"#),
        )
        .await
        .unwrap();
        assert_eq!(testing::decided_by_rules(&app), 1);
        let jar = [a.cookie.clone().unwrap().value().to_owned()];
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
        assert_eq!(testing::decided_by_rules(&app), 2, "doc:a was asked again");
        assert_eq!(
            b.capability.to_json(),
            r#"{"doc:a":["subscribe"],"doc:b":["subscribe"],"home:alice":["subscribe"]}"#
        );
        // Nothing new: no policy call at all.
        let jar2 = [b.cookie.clone().unwrap().value().to_owned()];
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
        assert_eq!(
            testing::decided_by_rules(&app),
            2,
            "nothing new, nothing asked"
        );
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
        assert!(out.partial.is_empty());
        assert!(!out.capability.to_json().contains("admin"));
        // Fewer operations than asked: partial, not denied, and what was granted is minted.
        let out = authorize(
            &app1,
            &alice(),
            Presented::default(),
            params(r#"{"doc:b":["subscribe","history"],"chat:c":["*"]}"#),
        )
        .await
        .unwrap();
        assert!(out.denied.is_empty(), "{:?}", out.denied);
        let names: Vec<&str> = out.partial.iter().map(Resource::as_str).collect();
        assert_eq!(names, ["chat:c", "doc:b"]);
        assert!(
            out.capability
                .to_json()
                .contains(r#""doc:b":["subscribe"]"#)
        );
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
        // In reject mode a partial grant is refused too.
        let err = authorize(
            &app2,
            &alice(),
            Presented::default(),
            params(r#"{"doc:b":["subscribe","history"]}"#),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, FlowError::Denied(ref r) if r.len() == 1),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn grants_are_rechecked_and_expire() {
        let app = app(&[
            ("CAPSIGN_REGRANT_AFTER", "1h"),
            ("CAPSIGN_GRANT_MAX_AGE", "1d"),
            ("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0"),
        ]);
        let out = authorize(
            &app,
            &alice(),
            Presented::default(),
            params(r#"{"doc:a":["subscribe"]}"#),
        )
        .await
        .unwrap();
        let v = [out.cookie.clone().unwrap().value().to_owned()];
        let jar: Vec<&str> = v.iter().map(String::as_str).collect();
        let before = testing::decided_by_rules(&app);
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
            testing::decided_by_rules(&app),
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
        let v = [out.cookie.clone().unwrap().value().to_owned()];
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

    /// Issue 16: a session that expires in 10 s got a 24 h Ably credential; logging out of the
    /// app was undone for a day. The credential now ends with the session, unless
    /// `CAPSIGN_OUTLIVE_SESSION` allows longer.
    #[tokio::test]
    async fn credentials_end_with_the_session() {
        let mut who = alice();
        let app = app(&[("CAPSIGN_TTL", "24h")]);
        let now_s = app.clock.now_ms() / 1000;
        who.session_expires_at = Some(now_s + 10);
        let p = || AuthParams {
            format: Some(Format::TokenRequest),
            ..params(r#"{"doc:a":["subscribe"]}"#)
        };
        let ttl = |out: AuthOutcome| {
            let Credential::TokenRequest(tr) = out.credential else {
                panic!()
            };
            serde_json::from_str::<serde_json::Value>(&tr).unwrap()["ttl"]
                .as_u64()
                .unwrap()
        };
        let capped = ttl(authorize(&app, &who, Presented::default(), p())
            .await
            .unwrap());
        assert!((9_000..=10_000).contains(&capped), "{capped}");
        let longer = app_with_outlive();
        let free = ttl(authorize(&longer, &who, Presented::default(), p())
            .await
            .unwrap());
        // Only the grants' own maximum age (a day from now, to the second) caps it.
        assert!(free > 24 * 3600 * 1000 - 1000, "{free}");
    }

    fn app_with_outlive() -> App {
        app(&[("CAPSIGN_TTL", "24h"), ("CAPSIGN_OUTLIVE_SESSION", "true")])
    }

    #[tokio::test]
    async fn client_id_mismatch() {
        let app = app(&[]);
        let p = AuthParams {
            client_id: Some(ClientId::new("bob").unwrap()),
            ..AuthParams::default()
        };
        assert!(matches!(
            authorize(&app, &alice(), Presented::default(), p).await,
            Err(FlowError::ClientIdMismatch { .. })
        ));
    }
}
