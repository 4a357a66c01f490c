//! capsign: a stateless capability signer for Ably.
//!
//! An app's users call capsign's `/auth` (as their Ably client's `authUrl`) to get Ably
//! credentials. The grants a client already holds travel with it in an HMAC-signed cookie, so
//! capsign keeps no per-client state: it verifies the cookie, sends only the *new* grants to
//! the app's policy, merges the allowed ones in, mints one credential for the whole set, and
//! sets the updated cookie.
//!
//! This crate is the native runtime: the hyper [`server`], the [`native`] platform (outbound
//! HTTP with hyper and rustls, background tasks on tokio), and the `capsign` binary with its
//! CLI; `capsign-lambda` (`crates/capsign-lambda`) runs on the same platform. The request
//! logic is `capsign-core`, which depends on neither tokio nor hyper and also runs as a
//! Cloudflare Worker (`crates/capsign-worker`); its modules are re-exported here under the
//! same names.
//!
//! # Embedding capsign
//!
//! Read [`settings::Settings`] (from the environment, a lookup of your own, or a TOML file),
//! build an [`app::App`] from them on a platform ([`native::server`]), call
//! [`app::App::prepare`] once, then either serve it with [`server::run`] on a listener of
//! yours, or answer requests yourself with [`http::handle`], which takes any `http::Request`
//! and returns an `http::Response` (a serverless adapter does this).

pub use capsign_core::{
    ably, app, capability, client, flow, grants, http, identity, logging, metrics, policy,
    revocation, set_cookie, settings,
};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use capsign_core::{fuzzing, testing};

pub mod native;
pub mod server;
