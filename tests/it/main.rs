//! Integration tests: one binary (ripgrep style), each module a theme.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs, unreachable_pub)]

mod binary;
mod capacity;
mod chat;
mod embedded;
mod fakes;
mod fuzz_replay;
mod harness;
mod hostile;
mod http;
mod lambda;
mod laws;
mod metrics;
mod providers;
mod renewal;
mod revocation;
mod rotation;
mod vectors;
mod web;
mod webhook;
