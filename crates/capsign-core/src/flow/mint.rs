//! Minting: the credential in the asked format (an Ably JWT, a TokenRequest, a native token
//! from Ably, or the app's own JWT around one), its lifetime, and the user claims it carries.

use super::*;

/// When a credential is minted: now, its lifetime, and the earliest `iat` it may carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    /// Now, ms since the epoch.
    pub(super) now_ms: u64,
    /// The credential's lifetime, ms.
    pub(super) ttl_ms: u64,
    /// A revocation at Ably refuses what was issued before it: an `iat` back-dated past the
    /// revocation would make the fresh credential look revoked too (Unix seconds; 0: none).
    pub(super) issued_not_before_s: u64,
}

/// The JWT claim Ably matches `revocationKey:<value>` revocation targets against.
pub(super) const REVOCATION_KEY_CLAIM: &str = "x-ably-revocation-key";

/// The token and its expiry (Unix seconds, rounded down: never later than Ably's) from Ably's
/// TokenDetails.
fn token_and_expiry(details: &[u8]) -> Result<(String, u64), FlowError> {
    #[derive(serde::Deserialize)]
    struct Details {
        token: String,
        expires: u64,
    }
    let d: Details = serde_json::from_slice(details)
        .map_err(|e| AblyError::Malformed(format!("TokenDetails: {e}")))?;
    Ok((d.token, d.expires / 1000))
}

impl Flow {
    /// The credential in `format`: minted here, or for `format=token`, the TokenRequest
    /// minted here exchanged with Ably for its TokenDetails; for `format=embedded`, either of
    /// those (`CAPSIGN_EMBEDDED_INNER`) inside the app's own JWT.
    pub(super) async fn credential(
        &self,
        format: Format,
        capability: &CapabilitySet,
        who: &Identity,
        at: At,
        request_id: &str,
    ) -> Result<Credential, FlowError> {
        if format == Format::Embedded {
            return self
                .embedded_credential(capability, who, at, request_id)
                .await;
        }
        let credential = self.mint(format, capability, who, at)?;
        match credential {
            Credential::TokenRequest(tr) if format == Format::Token => {
                Ok(Credential::Token(self.exchange(tr, request_id).await?))
            }
            other => Ok(other),
        }
    }

    /// Exchanges a TokenRequest with Ably for its TokenDetails.
    async fn exchange(
        &self,
        token_request: String,
        request_id: &str,
    ) -> Result<bytes::Bytes, FlowError> {
        let key_name = self.ably.key.key_name();
        let started = web_time::Instant::now();
        // Boxed: the HTTP exchange's future is large and only `format=token` needs it.
        let answer = Box::pin(
            self.ably
                .rest
                .request_token(key_name, token_request, request_id),
        )
        .await;
        let error = answer.as_ref().err().map(AblyError::kind);
        self.metrics.ably_call(started.elapsed(), error);
        Ok(answer?)
    }

    /// `format=embedded`: the inner credential, then the app's JWT around it, expiring with
    /// it and carrying the session's `sub` (the clientId when the session has none).
    async fn embedded_credential(
        &self,
        capability: &CapabilitySet,
        who: &Identity,
        at: At,
        request_id: &str,
    ) -> Result<Credential, FlowError> {
        let embedded = self
            .ably
            .embedded
            .as_ref()
            .ok_or(FlowError::EmbeddedNotConfigured)?;
        let (inner, exp) = match embedded.inner {
            EmbeddedInner::Jwt => self.ably_jwt(capability, who, at)?,
            EmbeddedInner::Token => {
                self.keep_claims(
                    capability,
                    who,
                    "CAPSIGN_EMBEDDED_INNER=token embeds an Ably token, which has no claims",
                )?;
                let tr = self.token_request(capability, who, at)?;
                let details = self.exchange(tr, request_id).await?;
                token_and_expiry(&details)?
            }
        };
        let sub = who
            .claims()
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&who.client_id);
        let iat = (at.now_ms / 1000).saturating_sub(IAT_BACKDATE_S).min(exp);
        Ok(Credential::Embedded(embedded.wrap(&inner, sub, iat, exp)))
    }

    /// The credential's lifetime: the request's (or the default), within the configured
    /// bounds, and never beyond the maximum age of the oldest grant it carries.
    ///
    /// Unless `CAPSIGN_OUTLIVE_SESSION` is on, it also ends with the app's session (the
    /// session JWT's `exp`): logging out of the app is not undone by a credential that lives
    /// on for a day. Both caps win over `CAPSIGN_TTL_MIN`; the result is at least 1 s.
    pub(super) fn ttl(
        &self,
        asked: Option<u64>,
        who: &Identity,
        held: &GrantSet,
        now_ms: u64,
    ) -> u64 {
        let b = self.settings.ttl;
        let ttl = asked.unwrap_or(b.default_ms).clamp(b.min_ms, b.max_ms);
        let until = |end_s: u64| end_s.saturating_mul(1000).saturating_sub(now_ms).max(1000);
        let grant_end = held
            .oldest_approval()
            .map(|oldest| oldest.saturating_add(self.settings.grant_max_age_s));
        let session_end = who
            .session_expires_at
            .filter(|_| !self.settings.outlive_session);
        [grant_end, session_end]
            .into_iter()
            .flatten()
            .fold(ttl, |ttl, end| ttl.min(until(end)))
    }

    fn mint(
        &self,
        format: Format,
        capability: &CapabilitySet,
        who: &Identity,
        at: At,
    ) -> Result<Credential, FlowError> {
        let token_request = || -> Result<Credential, FlowError> {
            Ok(Credential::TokenRequest(
                self.token_request(capability, who, at)?,
            ))
        };
        match format {
            Format::TokenRequest | Format::Token => {
                self.keep_claims(
                    capability,
                    who,
                    "a TokenRequest or an Ably token has no claims",
                )?;
                token_request()
            }
            Format::Jwt | Format::Auto | Format::Embedded => {
                let (jwt, _) = self.ably_jwt(capability, who, at)?;
                if format == Format::Auto && jwt.len() > JWT_BUDGET {
                    self.keep_claims(
                        capability,
                        who,
                        "format=auto would send a TokenRequest (the JWT is over its budget)",
                    )?;
                    token_request()
                } else {
                    Ok(Credential::Jwt(jwt))
                }
            }
        }
    }

    /// Refuses a credential without claims (`why`) when the rules give `capability` user
    /// claims: a client must not shed its `ably.room.*` claims (a moderator's role, say) by
    /// asking for another format.
    fn keep_claims(
        &self,
        capability: &CapabilitySet,
        who: &Identity,
        why: &'static str,
    ) -> Result<(), FlowError> {
        match self.policy.claims(who, capability).into_iter().next() {
            Some((claim, _)) => Err(FlowError::ClaimsNeedJwt { claim, why }),
            None => Ok(()),
        }
    }

    /// A signed TokenRequest's JSON.
    fn token_request(
        &self,
        capability: &CapabilitySet,
        who: &Identity,
        at: At,
    ) -> Result<String, FlowError> {
        Ok(self.ably.key.token_request(
            Some(at.ttl_ms),
            Some(&capability.to_json()),
            Some(who.client_id.as_str()),
            at.now_ms,
            &ably::nonce(),
        )?)
    }

    /// An Ably JWT and its `exp` (Unix seconds); its user claims within [`CLAIMS_BUDGET`],
    /// and its `x-ably-revocation-key` when configured.
    fn ably_jwt(
        &self,
        capability: &CapabilitySet,
        who: &Identity,
        at: At,
    ) -> Result<(String, u64), FlowError> {
        let now = at.now_ms / 1000;
        // Back-dated for clocks slightly behind, but never to before a revocation at Ably
        // that this client's credentials fall under: Ably refuses what was issued before it.
        // `iat` is in whole seconds, so a revocation at 12.3 s needs 13 s, up to a second
        // ahead (`capsign revoke` revokes at whole seconds, so its entries never need that).
        let iat = now
            .saturating_sub(IAT_BACKDATE_S)
            .max(at.issued_not_before_s.min(now + 1));
        // Within Ably's limit even counting the back-dating.
        let exp = (now + at.ttl_ms.div_ceil(1000)).min(iat + self.settings.ttl.max_ms / 1000);
        let mut claims = self.policy.claims(who, capability);
        if let Some(key) = self.revocation_key(who) {
            claims.push((REVOCATION_KEY_CLAIM.to_owned(), key));
        }
        let bytes: usize = claims.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > CLAIMS_BUDGET {
            return Err(FlowError::ClaimsTooLarge { bytes });
        }
        let jwt = self.ably.key.jwt_with_claims(
            capability,
            Some(who.client_id.as_str()),
            iat,
            exp,
            &claims,
        );
        Ok((jwt, exp))
    }
}
