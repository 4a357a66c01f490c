//! Heap allocations of each stage of an `/auth` request and of the whole handler, in the
//! setting of `cargo bench --bench stages` (10 held grants, one new, an Ably JWT minted).
//!
//! `cargo bench --bench allocations`. Counts are exact (dhat's counting allocator, in this
//! benchmark only), so unlike timings they do not move with the machine's noise: a change that
//! adds allocations to the request path shows here. Each stage runs once untimed first, so
//! one-time set-up (lazy statics, the runtime's first task) is not counted.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let fixture = common::Fixture::new();
    let stages = fixture.stages();
    for (_, stage) in &stages {
        stage();
    }
    if let Ok(path) = std::env::var("CAPSIGN_DHAT_PROFILE") {
        // Where the whole handler's allocations come from: a dhat profile of one request
        // (view it with dhat's viewer, or `bench/alloc-sites PATH`).
        let handler = stages.last().expect("the handler stage");
        let profiler = dhat::Profiler::builder().file_name(&path).build();
        (handler.1)();
        drop(profiler);
        return;
    }
    let _profiler = dhat::Profiler::builder().testing().build();
    println!("| stage | allocations | bytes |");
    println!("| --- | ---: | ---: |");
    let row = |name: &str, run: &dyn Fn()| {
        let before = dhat::HeapStats::get();
        run();
        let after = dhat::HeapStats::get();
        println!(
            "| {name} | {} | {} |",
            after.total_blocks - before.total_blocks,
            after.total_bytes - before.total_bytes
        );
    };
    for (name, stage) in &stages {
        row(name, stage.as_ref());
    }
}
