//! Session keys from a JWKS document (what Auth0, Cognito, Firebase, Supabase and Keycloak
//! publish): from a file read at start-up, or from a URL fetched at start-up, refreshed in
//! the background every `CAPSIGN_SESSION_JWKS_REFRESH`, and fetched again when a token names
//! an unknown `kid` (at most once per `CAPSIGN_SESSION_JWKS_MIN_REFRESH`, so a flood of
//! made-up `kid`s cannot make capsign hammer the identity provider).
//!
//! Only asymmetric signature keys are taken (RSA, EC P-256/P-384, Ed25519); `oct` keys,
//! encryption keys and unknown key types are skipped. Each key verifies only the algorithms of
//! its own family that the allow-list permits, and its own `alg` when the JWK names one: no
//! `none`, no HS256 "signed" with a public key.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::Uri;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::client::HttpClient;

/// The algorithms a JWKS key may verify unless `CAPSIGN_SESSION_ALGORITHMS` narrows them.
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

/// The RSA algorithms: the first six of [`ASYMMETRIC`] (checked when compiling).
const RSA_FAMILY: &[Algorithm] = ASYMMETRIC.split_at(6).0;

/// Largest JWKS document read.
pub const MAX_JWKS_LEN: usize = 256 * 1024;
/// Time a JWKS URL has to answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Default background refresh interval.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// Default minimum time between fetches caused by unknown `kid`s.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(60);

/// One usable key.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The usable keys of a JWKS document.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.algorithms)))
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys that can verify one of `allowed`.
    ///
    /// # Errors
    ///
    /// Not JSON, no `keys` array, or no usable key in it.
    pub fn parse(json: &[u8], allowed: &[Algorithm]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        let mut set = KeySet::default();
        for k in keys.iter().take(100) {
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            if matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            ) {
                continue;
            }
            let family: &[Algorithm] = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => RSA_FAMILY,
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256],
                    EllipticCurve::P384 => &[Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    &[Algorithm::EdDSA]
                }
                _ => continue,
            };
            let named = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::try_from(a).ok());
            let algorithms: Vec<Algorithm> = family
                .iter()
                .copied()
                .filter(|a| allowed.contains(a) && named.is_none_or(|n| n == *a))
                .collect();
            if algorithms.is_empty() {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            set.keys.push(Key {
                kid: jwk.common.key_id.clone(),
                key,
                algorithms,
            });
        }
        if set.keys.is_empty() {
            return Err("no usable signature key (RSA, EC P-256/P-384 or Ed25519)".into());
        }
        Ok(set)
    }

    /// The key for a token's `kid` and `alg`. A token without `kid` is accepted only when
    /// the set holds exactly one key.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))?,
            None => match self.keys.as_slice() {
                [only] => only,
                _ => return None,
            },
        };
        key.algorithms.contains(&alg).then_some(&key.key)
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where the keys come from.
#[derive(Debug)]
pub enum JwksSource {
    /// A file, read once at start-up.
    File,
    /// A URL, fetched at start-up and refreshed.
    Url(Uri),
}

/// The current keys and their refresh bookkeeping, shared with background refreshes.
pub struct JwksState {
    source: JwksSource,
    allowed: Vec<Algorithm>,
    keys: RwLock<Arc<KeySet>>,
    fetched_at_ms: AtomicU64,
    refreshing: AtomicBool,
    refresh_every: Duration,
    min_interval: Duration,
    client: HttpClient,
}

impl std::fmt::Debug for JwksState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksState")
            .field("source", &self.source)
            .field("allowed", &self.allowed)
            .field("keys", &self.current())
            .finish_non_exhaustive()
    }
}

impl JwksState {
    /// Keys from a file's contents.
    ///
    /// # Errors
    ///
    /// See [`KeySet::parse`].
    pub fn from_file(json: &[u8], allowed: Vec<Algorithm>) -> Result<JwksState, String> {
        let keys = KeySet::parse(json, &allowed)?;
        Ok(JwksState::new(
            JwksSource::File,
            allowed,
            keys,
            Duration::MAX,
            Duration::MAX,
            HttpClient::new(),
        ))
    }

    /// Keys from `url`, empty until the first [`JwksState::refresh`].
    pub fn from_url(
        url: Uri,
        allowed: Vec<Algorithm>,
        refresh_every: Duration,
        min_interval: Duration,
        client: HttpClient,
    ) -> JwksState {
        JwksState::new(
            JwksSource::Url(url),
            allowed,
            KeySet::default(),
            refresh_every,
            min_interval,
            client,
        )
    }

    fn new(
        source: JwksSource,
        allowed: Vec<Algorithm>,
        keys: KeySet,
        refresh_every: Duration,
        min_interval: Duration,
        client: HttpClient,
    ) -> JwksState {
        JwksState {
            source,
            allowed,
            keys: RwLock::new(Arc::new(keys)),
            fetched_at_ms: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            refresh_every,
            min_interval,
            client,
        }
    }

    /// The keys now.
    pub fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Whether keys come from a URL.
    pub fn is_remote(&self) -> bool {
        matches!(self.source, JwksSource::Url(_))
    }

    /// Fetches the URL now (no-op for a file) and replaces the keys if the document is
    /// usable; a failed fetch keeps the old keys.
    ///
    /// # Errors
    ///
    /// The fetch or the document failed.
    pub async fn refresh(&self, now_ms: u64) -> Result<usize, String> {
        let JwksSource::Url(url) = &self.source else {
            return Ok(self.current().len());
        };
        self.fetched_at_ms.store(now_ms, Ordering::Relaxed);
        let resp = self
            .client
            .get(url, FETCH_TIMEOUT, MAX_JWKS_LEN)
            .await
            .map_err(|e| format!("JWKS {url}: {e}"))?;
        if !resp.status.is_success() {
            return Err(format!("JWKS {url} answered {}", resp.status));
        }
        let keys =
            KeySet::parse(&resp.body, &self.allowed).map_err(|e| format!("JWKS {url}: {e}"))?;
        let n = keys.len();
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        Ok(n)
    }

    /// Refreshes if this caller wins the right to: no refresh running, and the last one at
    /// least `interval` ago. Returns whether it refreshed.
    async fn refresh_if_due(&self, now_ms: u64, interval: Duration) -> bool {
        let last = self.fetched_at_ms.load(Ordering::Relaxed);
        let due =
            now_ms.saturating_sub(last) >= u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        if !self.is_remote() || !due {
            return false;
        }
        if self
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let result = self.refresh(now_ms).await;
        self.refreshing.store(false, Ordering::Release);
        if let Err(e) = &result {
            tracing::warn!("{e}; keeping the previous keys");
        }
        result.is_ok()
    }

    /// Called on each request: starts a background refresh when the keys are older than the
    /// refresh interval.
    pub fn maybe_refresh_in_background(self: &Arc<Self>, now_ms: u64) {
        let last = self.fetched_at_ms.load(Ordering::Relaxed);
        let every = u64::try_from(self.refresh_every.as_millis()).unwrap_or(u64::MAX);
        if self.is_remote() && now_ms.saturating_sub(last) >= every {
            let state = Arc::clone(self);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    state.refresh_if_due(now_ms, state.refresh_every).await;
                });
            }
        }
    }

    /// A token named a `kid` that is not in the set: fetch again, unless that happened less
    /// than the minimum interval ago. Returns whether the keys were refreshed.
    pub async fn refresh_for_unknown_kid(&self, now_ms: u64) -> bool {
        self.refresh_if_due(now_ms, self.min_interval).await
    }
}
