//! capsign: a stateless capability signer for Ably.
//!
//! An app's users call capsign's `/auth` (as their Ably client's `authUrl`) to get Ably
//! credentials. The grants a client already holds travel with it in an HMAC-signed cookie, so
//! capsign keeps no per-client state: it verifies the cookie, sends only the *new* grants to
//! the app's policy, merges the allowed ones in, mints one credential for the whole set, and
//! sets the updated cookie.
//!
//! # Embedding capsign
//!
//! The `capsign` binary is the usual way to run it. A Rust service can embed the same thing:
//! read [`settings::Settings`] (from the environment, a lookup of your own, or a TOML file),
//! build an [`app::App`] from them, call [`app::App::prepare`] once, then either serve it with
//! [`server::run`] on a listener of yours, or answer requests yourself with
//! [`http::handle`], which takes any `http::Request` and returns an `http::Response` (a
//! serverless adapter does this). [`capability`] is the Ably capability algebra on its own;
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
//! - [`server`]: the hyper server and its limits.
//! - [`flow`]: the auth flow itself, independent of HTTP.
//! - [`identity`]: who is asking (the app's session JWT with a secret, a PEM key or a JWKS;
//!   a trusted proxy's header; the demo login).
//! - [`policy`]: the rules file, then the webhook for what no rule matches.
//! - [`grants`]: the held grant set and its sealed form (the grant cookie, format v1).
//! - [`ably`]: the Ably key, Ably JWTs and TokenRequests; Ably's REST API.
//! - [`capability`]: the Ably capability grammar and algebra (covering, union, intersection).
//! - [`metrics`]: one Prometheus registry per app and the handles each module records into.
//! - [`logging`]: the binaries' logging (text or JSON lines, the access line, batched writes).
//! - `hs256`: HS256 JWTs with the key prepared once; `crypto`: keyed HMAC and HKDF; `json`:
//!   JSON string helpers and the claims checker; `client`: outbound HTTP, bounded in time and
//!   size; `scratch`: per-thread scratch buffers for a request's temporary bytes;
//!   [`set_cookie`]: the one `Set-Cookie` writer (the grant cookie, the demo login).
//!
//! A request goes identity → sealed grants (MAC first) → new grants → policy → merge → seal →
//! mint. The identity decides whose cookie may open; the policy sees only what the cookie
//! does not already cover; the credential covers the merged set and never outlives its
//! oldest grant. The module graph is a one-way street in that order: `http` and `server` use
//! `app`, which builds the rest; nothing below `http` imports it, the flow does not import
//! the app, and `crypto`, `json` and `scratch` import nothing of capsign's.

#[doc(hidden)]
pub mod ably;
pub mod app;
pub mod capability;
pub(crate) mod client;
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
pub(crate) mod scratch;
pub mod server;
#[doc(hidden)]
pub mod set_cookie;
pub mod settings;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod testing;
