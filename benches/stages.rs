//! Micro-benchmarks for each stage of an `/auth` request, and the whole handler without the
//! network, in the setting `bench/run` measures end to end: an HS256 session JWT, a grant
//! cookie holding 10 grants (`doc:<8 hex>`, mixed operation sets), one new grant decided by
//! the rules file, an Ably JWT minted, the new cookie sealed.
//!
//! `cargo bench --bench stages` (add `-- <filter>` for one stage). A regression in the
//! end-to-end figure shows up here in the stage that caused it; `cargo bench --bench
//! allocations` counts the same stages' heap allocations.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;

fn stages(c: &mut Criterion) {
    let fixture = common::Fixture::new();
    for (name, stage) in fixture.stages() {
        c.bench_function(name, |b| b.iter(&stage));
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
