//! capsign's core: the request logic of a stateless capability signer for Ably, independent
//! of any runtime (no tokio, no hyper; it builds for `wasm32-unknown-unknown`).
//!
//! An app's users call capsign's `/auth` (as their Ably client's `authUrl`) to get Ably
//! credentials. The grants a client already holds travel with it in an HMAC-signed cookie, so
//! capsign keeps no per-client state: it verifies the cookie, sends only the *new* grants to
//! the app's policy, merges the allowed ones in, mints one credential for the whole set, and
//! sets the updated cookie.
//!
//! # Embedding capsign
//!
//! The `capsign` binary (the `capsign` crate, with the hyper server) is the usual way to run
//! it; `capsign-lambda` and the Cloudflare Worker (`capsign-worker`) are the others. Each
//! runtime implements [`client::Platform`] once (outbound HTTP, background tasks, files), reads
//! [`settings::Settings`] (from the environment, a lookup of its own, or a TOML file), builds
//! an [`app::App`] on its platform, calls [`app::App::prepare`] once, then answers requests
//! with [`http::handle`], which takes any `http::Request` and returns an `http::Response`. [`capability`] is the Ably capability algebra on its own;
//! [`metrics`] is the app's registry, [`logging`] the binaries' logging.
//!
//! That is the public surface. `grants`, `flow`, `identity`, `policy`, `ably` and
//! `set_cookie` are reachable (hidden from the documentation) only so that the benchmarks, the
//! fuzz targets and the integration tests can drive single stages; they are not an API.
//!
//! # Layout
//!
//! - [`settings`]: every setting, declared once in one table; plain validated values.
//! - [`app`]: the services built from the settings, the clock, the start-up I/O.
//! - [`http`]: requests to flow and back; the one error table (statuses, Ably codes).
//! - [`client`]: what the core needs from its runtime ([`client::Platform`]), and the
//!   outbound HTTP handle built on it.
//! - [`flow`]: the auth flow itself, independent of HTTP.
//! - [`identity`]: who is asking (the app's session JWT with a secret, a PEM key or a JWKS;
//!   a trusted proxy's header; the demo login).
//! - [`policy`]: the rules file, then the webhook for what no rule matches.
//! - `revocation`: the revocation list every instance reads, applied as grants open.
//! - [`grants`]: the held grant set and its sealed form (the grant cookie, format v1).
//! - [`ably`]: the Ably key, Ably JWTs and TokenRequests; Ably's REST API.
//! - [`capability`]: the Ably capability grammar and algebra (covering, union, intersection).
//! - [`metrics`]: one Prometheus registry per app and the handles each module records into.
//! - [`logging`]: the binaries' logging (text or JSON lines, the access line, batched writes).
//! - `hs256`: HS256 JWTs with the key prepared once; `crypto`: keyed HMAC and HKDF; `json`:
//!   JSON string helpers and the claims checker; `scratch`: per-thread scratch buffers for a request's temporary bytes;
//!   [`set_cookie`]: the one `Set-Cookie` writer (the grant cookie, the demo login).
//!
//! A request goes identity → sealed grants (MAC first) → new grants → policy → merge → seal →
//! mint. The identity decides whose cookie may open; the policy sees only what the cookie
//! does not already cover; the credential covers the merged set and never outlives its
//! oldest grant. The module graph is a one-way street in that order: `http` (and a runtime's server) use
//! `app`, which builds the rest; nothing below `http` imports it, the flow does not import
//! the app, and `crypto`, `json` and `scratch` import nothing of capsign's.

#[doc(hidden)]
pub mod ably;
pub mod app;
pub mod capability;
pub mod client;
pub(crate) mod crypto;
#[doc(hidden)]
pub mod flow;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod grants;
pub(crate) mod hs256;
pub mod http;
#[doc(hidden)]
pub mod identity;
pub(crate) mod json;
pub mod logging;
pub mod metrics;
#[doc(hidden)]
pub mod policy;
#[doc(hidden)]
pub mod revocation;
pub(crate) mod scratch;
#[doc(hidden)]
pub mod set_cookie;
pub mod settings;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod testing;
