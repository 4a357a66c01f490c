//! Who is asking: the clientId (and claims) from the app's own login.
//!
//! This module owns the identity modes: `jwt` (the app's session JWT, from `Authorization:
//! Bearer` or a named cookie, verified with a secret, a PEM public key or a JWKS document;
//! `session` and `jwks`), `header` (a header set by a trusted front proxy, believed only
//! from its addresses; `header`) and `demo` (a user name in a signed cookie, for trying
//! capsign on loopback; `demo`). [`IdentityService::build`] turns the identity settings into
//! the one in use. It reads request headers but knows nothing of grants.

mod client_id;
pub(crate) mod demo;
pub(crate) mod header;
pub(crate) mod jwks;
pub(crate) mod session;

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::client::HttpClient;
use crate::metrics::Metrics;
use crate::settings::{CookieKeys, IdentitySettings, SessionKeySource};

pub use client_id::{BadClientId, ClientId, MAX_CLIENT_ID_LEN};
pub use demo::{DEMO_COOKIE, DemoIdentity};
pub use header::HeaderIdentity;
pub use jwks::JwksError;
pub use session::{JwksIdentity, JwtIdentity, NotAPublicKey, SessionClaims};

/// The longest app-session JWT capsign will look at, in bytes.
pub const MAX_SESSION_TOKEN_LEN: usize = 8 * 1024;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The Ably clientId: who the credential is for.
    pub client_id: ClientId,
    /// When the app's session ends (Unix seconds), for sessions that say (`exp` of a session
    /// JWT): no credential outlives it unless the settings allow.
    pub session_expires_at: Option<u64>,
    /// The session's claims, read whole when the session was verified (a session whose claims
    /// do not parse is refused). Empty in demo and header modes, and when nothing the app is
    /// configured with reads them (see [`SessionClaims::keep`]).
    claims: Map<String, Value>,
}

impl Identity {
    /// An identity with these claims.
    pub fn new(client_id: ClientId, claims: Map<String, Value>) -> Identity {
        Identity {
            client_id,
            session_expires_at: None,
            claims,
        }
    }

    /// The session's claims, for `{claims.NAME}` templates, the webhook and the embedded
    /// token's `sub`.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// Why a request has no identity. Each becomes `401`/40101, so the client retries after the
/// app refreshes its session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No session credential at all; says where capsign looked.
    #[error("no session: {0}")]
    Missing(String),
    /// The session token is longer than [`MAX_SESSION_TOKEN_LEN`].
    #[error("session token longer than {MAX_SESSION_TOKEN_LEN} bytes")]
    TooLong,
    /// The session token did not verify.
    #[error("session token rejected: {0}")]
    Invalid(String),
    /// The session has expired.
    #[error("session token expired")]
    Expired,
    /// The session is not valid yet.
    #[error("session token not valid yet (nbf)")]
    NotYetValid,
    /// The clientId claim is missing or not a string.
    #[error("session token has no string claim {0:?} to use as clientId")]
    NoClientId(String),
    /// The clientId is not acceptable.
    #[error("invalid clientId: {0}")]
    BadClientId(#[from] BadClientId),
    /// `header` mode, and the request did not come from a trusted proxy.
    #[error("the {0} header is only believed from CAPSIGN_TRUSTED_PROXIES")]
    UntrustedPeer(String),
}

/// Why the identity settings could not be put to use at start-up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityBuildError {
    /// A key file could not be read.
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Read {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `CAPSIGN_SESSION_PUBLIC_KEY` is not a supported PEM public key.
    #[error("CAPSIGN_SESSION_PUBLIC_KEY: {}: not a PEM RSA, EC or Ed25519 public key", .0.display())]
    Pem(PathBuf),
    /// The JWKS file holds no usable key.
    #[error("CAPSIGN_SESSION_JWKS: {}: {source}", path.display())]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: JwksError,
    },
}

impl IdentityBuildError {
    /// The setting to fix.
    pub fn setting(&self) -> &'static str {
        match self {
            IdentityBuildError::Read { setting, .. } => setting,
            IdentityBuildError::Pem(_) => "CAPSIGN_SESSION_PUBLIC_KEY",
            IdentityBuildError::Jwks { .. } => "CAPSIGN_SESSION_JWKS",
        }
    }
}

/// How this deployment establishes identity.
#[derive(Debug)]
pub enum IdentityService {
    /// The app's session JWT, verified with a secret or a PEM public key.
    Jwt(JwtIdentity),
    /// The app's session JWT, verified with the keys of a JWKS document.
    Jwks(JwksIdentity),
    /// A header set by a trusted front proxy.
    Header(HeaderIdentity),
    /// A user name in a signed cookie; loopback only.
    Demo(DemoIdentity),
}

/// What a request presents to be identified.
pub struct Presenting<'a> {
    /// The token of an `Authorization: Bearer` header.
    pub bearer: Option<&'a str>,
    /// Looks a request cookie up by name.
    pub cookie: &'a (dyn Fn(&str) -> Option<&'a str> + Sync),
    /// All request headers (for `header` mode).
    pub headers: &'a http::HeaderMap,
    /// The address of the peer that sent the request, when the transport knows it.
    pub peer: Option<IpAddr>,
}

impl IdentityService {
    /// The identity service of `settings`: reads key files (PEM, a JWKS file); a JWKS URL is
    /// fetched later, by [`IdentityService::prepare`]. Demo sessions are keyed from the grant
    /// cookie's signing key, under a label of their own. `keep_claims`: whether something the
    /// app is configured with reads session claims (a `{claims.NAME}` template, the webhook, the
    /// embedded token), so each session's claims are kept as a map ([`SessionClaims::keep`]).
    ///
    /// # Errors
    ///
    /// A key file that cannot be read or holds no usable key.
    pub fn build(
        settings: &IdentitySettings,
        cookie_keys: &CookieKeys,
        client: &HttpClient,
        metrics: &Metrics,
        keep_claims: bool,
    ) -> Result<IdentityService, IdentityBuildError> {
        let read = |setting, path: &PathBuf| {
            client
                .read_file(path)
                .map_err(|source| IdentityBuildError::Read {
                    setting,
                    path: path.clone(),
                    source,
                })
        };
        Ok(match settings {
            IdentitySettings::Demo => {
                IdentityService::Demo(DemoIdentity::from_cookie_key(cookie_keys.signing().1))
            }
            IdentitySettings::Header { header, trusted } => {
                IdentityService::Header(HeaderIdentity::new(header.clone(), trusted.clone()))
            }
            IdentitySettings::Jwt { key, session } => {
                let claims = SessionClaims::new(session, keep_claims);
                match key {
                    SessionKeySource::Secret(secret) => {
                        IdentityService::Jwt(JwtIdentity::hs256(secret.expose().as_bytes(), claims))
                    }
                    SessionKeySource::PublicKey(path) => {
                        let pem = read("CAPSIGN_SESSION_PUBLIC_KEY", path)?;
                        IdentityService::Jwt(
                            JwtIdentity::public_key(&pem, claims)
                                .map_err(|_| IdentityBuildError::Pem(path.clone()))?,
                        )
                    }
                    SessionKeySource::Jwks {
                        location,
                        algorithms,
                        refresh,
                        min_refresh,
                    } => {
                        let state = jwks::JwksState::build(
                            location,
                            algorithms,
                            (*refresh, *min_refresh),
                            client.clone(),
                            |path| read("CAPSIGN_SESSION_JWKS", path),
                        )?
                        .with_metrics(metrics.clone());
                        IdentityService::Jwks(JwksIdentity::new(state, claims))
                    }
                }
            }
        })
    }

    /// The start-up I/O: the first fetch of a JWKS URL (nothing for the other modes).
    /// Returns how many keys were fetched, if any.
    ///
    /// # Errors
    ///
    /// The JWKS URL could not be fetched or holds no usable key: no session could verify.
    pub async fn prepare(&self, now_ms: u64) -> Result<Option<usize>, JwksError> {
        match self {
            IdentityService::Jwks(j) if j.state().is_remote() => {
                j.state().refresh(now_ms).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Establishes who is asking; `now_ms` is the current time in ms since the epoch.
    ///
    /// # Errors
    ///
    /// No credential, or one that does not verify.
    pub async fn identify(
        &self,
        p: &Presenting<'_>,
        now_ms: u64,
    ) -> Result<Identity, IdentityError> {
        match self {
            IdentityService::Jwt(j) => j.identify(p, now_ms),
            IdentityService::Jwks(j) => j.identify(p, now_ms).await,
            IdentityService::Header(h) => h.identify(p),
            IdentityService::Demo(d) => d.identify((p.cookie)(DEMO_COOKIE)),
        }
    }

    /// The demo identity, when this is the demo mode.
    pub fn demo(&self) -> Option<&DemoIdentity> {
        match self {
            IdentityService::Demo(d) => Some(d),
            _ => None,
        }
    }
}
