//! How many realistic grants fit in one grant cookie (a headline figure of docs/performance.md).

use capsign::capability::{CapabilitySet, OpSet};
use capsign::grants::{GrantSet, Purpose, SET_COOKIE_BUDGET};
use rand::{Rng, SeedableRng};

/// Realistic: `doc:<8 hex>` channels, a mix of op sets, approvals spread over the last hour,
/// a clientId of a typical length. Returns how many grants fit under the budget.
fn capacity(seed: u64) -> usize {
    let s = crate::harness::settings(&[]);
    let app = crate::harness::load(&s).unwrap();
    // The cookie format's capacity, whatever CAPSIGN_MAX_GRANTS lets one client hold.
    let sealer = app.flow.sealer.clone().with_max_grants(10_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mixes = [
        r#"["subscribe"]"#,
        r#"["presence","subscribe"]"#,
        r#"["presence","publish","subscribe"]"#,
        r#"["history","subscribe"]"#,
        r#"["*"]"#,
    ];
    let now = 1_800_000_000u64;
    let mut grants = GrantSet::new();
    let mut fitted = 0;
    loop {
        let name = format!("doc:{:08x}", rng.random::<u32>());
        let ops = mixes[rng.random_range(0..mixes.len())];
        let one = CapabilitySet::from_json(&format!("{{\"{name}\":{ops}}}")).unwrap();
        grants.add(&one, now - rng.random_range(0..3600));
        let Ok(sealed) =
            sealer.seal_grants(Purpose::Cookie, "user-8f3a2c1e-5b7d-4e9a", now, &grants)
        else {
            return fitted;
        };
        if sealer.set_cookie(&sealed).len() >= SET_COOKIE_BUDGET {
            return fitted;
        }
        fitted = grants.len();
        assert!(fitted < 10_000);
        let _: OpSet = one.ops_for(&name).unwrap();
    }
}

#[test]
fn at_least_200_realistic_grants_fit() {
    let counts: Vec<usize> = (0..5).map(capacity).collect();
    println!("grants per 4 KB cookie over 5 seeds: {counts:?}");
    let min = counts.iter().copied().min().unwrap();
    assert!(min >= 200, "only {min} grants fit: {counts:?}");
}
