//! capsign as a Cloudflare Worker: `capsign-core` on workers-rs.
//!
//! Built for `wasm32-unknown-unknown` with wasm-bindgen (`scripts/worker-build`) and run by
//! workerd, locally (`scripts/worker-dev`) or on Cloudflare (`deploy/cloudflare/`). It reads the
//! same settings as the server (the same table, names and checks) from the Worker's variables
//! and secrets, a file a setting names from a text binding named after the setting with
//! `_TEXT` ([`config`]), calls the policy webhook and Ably with `fetch` ([`platform`]), logs
//! JSON lines to the console and its metrics as counters in the logs ([`report`]).
//!
//! The app is built by the first request an isolate receives and kept for the isolate's life;
//! a configuration error answers every request with a 500 (details in the log, not the
//! answer).

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod config;
pub mod platform;
pub mod report;

#[cfg(target_arch = "wasm32")]
mod entry;
