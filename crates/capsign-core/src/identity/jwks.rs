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

use crate::client::{ClientError, HttpClient};
use crate::metrics::Metrics;
use crate::settings::{ASYMMETRIC, Location};

/// The RSA algorithms: the first six of [`ASYMMETRIC`] (checked when compiling).
const RSA_FAMILY: &[Algorithm] = ASYMMETRIC.split_at(6).0;

/// Largest JWKS document read.
pub(crate) const MAX_JWKS_LEN: usize = 256 * 1024;
/// Time a JWKS URL has to answer.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a JWKS document gave no keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// No `keys` array.
    #[error("no \"keys\" array")]
    NoKeys,
    /// No key capsign can use.
    #[error("no usable signature key (RSA, EC P-256/P-384 or Ed25519)")]
    NoUsableKey,
    /// The URL could not be fetched.
    #[error("JWKS {url}: {source}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// Why.
        source: ClientError,
    },
    /// The URL answered with another status than 2xx.
    #[error("JWKS {url} answered {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// Its status.
        status: http::StatusCode,
    },
    /// The URL's document holds no usable key.
    #[error("JWKS {url}: {source}")]
    Document {
        /// The JWKS URL.
        url: String,
        /// What is wrong with the document.
        source: Box<JwksError>,
    },
}

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
    pub fn parse(json: &[u8], allowed: &[Algorithm]) -> Result<KeySet, JwksError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeys)?;
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
            return Err(JwksError::NoUsableKey);
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
pub(crate) enum JwksSource {
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
    metrics: Option<Metrics>,
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
    /// The key set at `location`: a file is read (with `read`) and parsed now; a URL is
    /// fetched by the first [`JwksState::refresh`].
    ///
    /// # Errors
    ///
    /// The file cannot be read or holds no usable key.
    pub(super) fn build(
        location: &Location,
        allowed: &[Algorithm],
        (refresh_every, min_interval): (Duration, Duration),
        client: HttpClient,
        read: impl FnOnce(&std::path::PathBuf) -> Result<Vec<u8>, super::IdentityBuildError>,
    ) -> Result<JwksState, super::IdentityBuildError> {
        match location {
            Location::Url(url) => Ok(JwksState::from_url(
                url.clone(),
                allowed.to_vec(),
                refresh_every,
                min_interval,
                client,
            )),
            Location::File(path) => {
                let bytes = read(path)?;
                JwksState::from_file(&bytes, allowed.to_vec()).map_err(|source| {
                    super::IdentityBuildError::Jwks {
                        path: path.clone(),
                        source,
                    }
                })
            }
        }
    }

    /// Keys from a file's contents.
    ///
    /// # Errors
    ///
    /// See [`KeySet::parse`].
    pub fn from_file(json: &[u8], allowed: Vec<Algorithm>) -> Result<JwksState, JwksError> {
        let keys = KeySet::parse(json, &allowed)?;
        Ok(JwksState::new(
            JwksSource::File,
            allowed,
            keys,
            Duration::MAX,
            Duration::MAX,
            HttpClient::new(std::sync::Arc::new(crate::client::Offline)),
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
            metrics: None,
        }
    }

    /// The same state, counting its fetches in `metrics`.
    pub(super) fn with_metrics(self, metrics: Metrics) -> JwksState {
        JwksState {
            metrics: Some(metrics),
            ..self
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
    pub async fn refresh(&self, now_ms: u64) -> Result<usize, JwksError> {
        let JwksSource::Url(url) = &self.source else {
            return Ok(self.current().len());
        };
        let result = self.fetch(url, now_ms).await;
        if let Some(m) = &self.metrics {
            m.jwks_refresh(result.is_ok());
        }
        result
    }

    async fn fetch(&self, url: &Uri, now_ms: u64) -> Result<usize, JwksError> {
        self.fetched_at_ms.store(now_ms, Ordering::Relaxed);
        let resp = self
            .client
            .get(url, FETCH_TIMEOUT, MAX_JWKS_LEN)
            .await
            .map_err(|source| JwksError::Fetch {
                url: url.to_string(),
                source,
            })?;
        if !resp.status.is_success() {
            return Err(JwksError::Status {
                url: url.to_string(),
                status: resp.status,
            });
        }
        let keys = KeySet::parse(&resp.body, &self.allowed).map_err(|e| JwksError::Document {
            url: url.to_string(),
            source: Box::new(e),
        })?;
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
        let Some(_guard) = crate::client::RefreshGuard::take(&self.refreshing) else {
            return false;
        };
        // The guard clears the flag however this ends: also when the request that started the
        // refresh is dropped at the `await` (a client that disconnects mid-fetch). A flag left
        // set would block every later refresh, and a key rotation at the identity provider
        // would then lock every user out.
        // Boxed: the fetch's future is large, and every request's future would otherwise
        // carry (and move) room for it.
        let result = Box::pin(self.refresh(now_ms)).await;
        if let Err(e) = &result {
            tracing::warn!("{e}; keeping the previous keys");
        }
        result.is_ok()
    }

    /// Called on each request: when the keys are older than the refresh interval, refreshes
    /// them in a spawned task (the request goes on with the current keys), or, for an
    /// instance frozen between requests, in this request, bounded by the fetch's timeout (a
    /// failed fetch keeps the current keys).
    pub async fn refresh_when_due(self: &Arc<Self>, now_ms: u64) {
        let last = self.fetched_at_ms.load(Ordering::Relaxed);
        let every = u64::try_from(self.refresh_every.as_millis()).unwrap_or(u64::MAX);
        if !self.is_remote() || now_ms.saturating_sub(last) < every {
            return;
        }
        self.client
            .in_background_or_here(|| {
                let state = Arc::clone(self);
                Box::pin(async move {
                    state.refresh_if_due(now_ms, state.refresh_every).await;
                })
            })
            .await;
    }

    /// A token named a `kid` that is not in the set: fetch again, unless that happened less
    /// than the minimum interval ago. Returns whether the keys were refreshed.
    pub async fn refresh_for_unknown_kid(&self, now_ms: u64) -> bool {
        self.refresh_if_due(now_ms, self.min_interval).await
    }
}
