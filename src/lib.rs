//! capsign: a stateless capability signer for Ably.
//!
//! An app's users call capsign's `/auth` (as their Ably client's `authUrl`) to get Ably
//! credentials. The grants a client already holds travel with it in an HMAC-signed cookie, so
//! capsign keeps no per-client state: it verifies the cookie, sends only the *new* grants to
//! the app's policy, merges the allowed ones in, mints one credential for the whole set, and
//! sets the updated cookie.
//!
//! # Layout
//!
//! - [`capability`]: the Ably capability grammar and algebra (covering, union, intersection).
//! - [`grants`]: the held grant set and its sealed form (the grant cookie, format v1).
//! - [`identity`]: who is asking (the app's session JWT, a trusted proxy's header, or the demo
//!   login); [`jwks`]: session keys from an identity provider's JWKS document.
//! - [`policy`]: the rules file that decides new grants; [`webhook`]: the app's endpoint that
//!   decides what no rule matches.
//! - [`token`]: the Ably key, Ably JWTs and TokenRequests; [`hs256`]: HS256 JWTs with the key
//!   prepared once (Ably JWTs, session JWTs under a shared secret).
//! - [`config`]: settings, read and checked once at start-up.
//! - [`flow`]: the auth flow itself, independent of HTTP.
//! - [`http`]: requests to flow and back, errors to Ably's envelope.
//! - [`server`]: the hyper server and its limits.
//! - [`client`]: outbound HTTP (webhook, JWKS, Ably), bounded in time and size; [`ably`]:
//!   Ably's REST API (`requestToken`, `/time`).
//!
//! A request goes identity → sealed grants (MAC first) → new grants → policy → merge → seal →
//! mint. The identity decides whose cookie may open; the policy sees only what the cookie
//! does not already cover; the credential covers the merged set and never outlives its
//! oldest grant.

pub mod ably;
pub mod capability;
pub mod client;
pub mod config;
pub mod flow;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod hs256;
pub mod http;
pub mod identity;
pub mod jwks;
pub mod policy;
pub mod server;
pub mod token;
pub mod webhook;
