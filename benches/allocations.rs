//! Heap allocations of each stage of an `/auth` request and of the whole handler, in the
//! setting of `cargo bench --bench stages` (10 held grants, one new, an Ably JWT minted).
//!
//! `cargo bench --bench allocations [-- --check]`. Counts are exact (dhat's counting allocator, in this
//! benchmark only), so unlike timings they do not move with the machine's noise: a change that
//! adds allocations to the request path shows here. Each stage runs once untimed first, so
//! one-time set-up (lazy statics, the runtime's first task) is not counted.
//!
//! `--check` (run by `.ci/run`) fails unless a whole request, less what building the test
//! request itself allocates, stays within the budget: a renewal at most
//! [`RENEWAL_BUDGET`] heap allocations, an acquire at most [`ACQUIRE_BUDGET`].

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

/// The most heap allocations a renewal (a held grant asked again) may make in the handler.
const RENEWAL_BUDGET: u64 = 12;
/// The most heap allocations an acquire (one new grant) may make in the handler.
const ACQUIRE_BUDGET: u64 = 16;

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
        let blocks = after.total_blocks - before.total_blocks;
        println!(
            "| {name} | {blocks} | {} |",
            after.total_bytes - before.total_bytes
        );
        blocks
    };
    let counted: Vec<(&str, u64)> = stages
        .iter()
        .map(|(name, stage)| (*name, row(name, stage.as_ref())))
        .collect();
    if std::env::args().any(|a| a == "--check") {
        check_budget(&counted);
    }
}

/// Fails unless the handler's renewal and acquire, less the harness's own request, are within
/// their budgets.
fn check_budget(counted: &[(&str, u64)]) {
    let find = |prefix: &str| {
        counted
            .iter()
            .find(|(name, _)| name.starts_with(prefix))
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no stage named {prefix}..."))
    };
    let harness = find("request: built and dropped");
    let renewal = find("handler: a renewal") - harness;
    let acquire = find("handler: an acquire") - harness;
    println!(
        "\nbudget: renewal {renewal} of {RENEWAL_BUDGET}, acquire {acquire} of {ACQUIRE_BUDGET} \
         heap allocations (the handler's, less the {harness} of building the test request)"
    );
    if renewal > RENEWAL_BUDGET || acquire > ACQUIRE_BUDGET {
        eprintln!(
            "allocation budget exceeded: a change added heap allocations to the request path \
             (see `bench/alloc-sites` for where they come from)"
        );
        std::process::exit(1);
    }
}
