//! Property tests (proptest) for the capability algebra: the laws the merge relies on, and
//! covering checked against an independent reading of Ably's channel matching.

use capsign::capability::{CapabilitySet, OpSet, Resource};
use capsign::grants::GrantSet;
use proptest::collection::vec;
use proptest::prelude::*;

const QUALIFIERS: [&str; 4] = ["", "[*]", "[queue]", "[meta]"];

/// Patterns over a tiny alphabet, so that covering relations actually occur.
fn pattern() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&QUALIFIERS[..]),
        vec(prop::sample::select(&["a", "b", "*"][..]), 1..4),
    )
        .prop_map(|(q, segs)| format!("{q}{}", segs.join(":")))
}

/// Concrete channel names: no wildcard anywhere, `[*]` is not a real qualifier.
fn channel() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&QUALIFIERS[..]),
        vec(prop::sample::select(&["a", "b", "c"][..]), 1..5),
    )
        .prop_map(|(q, segs)| {
            let q = if q == "[*]" { "" } else { q };
            format!("{q}{}", segs.join(":"))
        })
}

fn ops() -> impl Strategy<Value = OpSet> {
    prop_oneof![
        1 => Just(OpSet::from_bits(OpSet::WILDCARD_BIT).unwrap()),
        6 => (1u32..(1 << 17)).prop_map(|b| OpSet::from_bits(b).unwrap()),
        3 => (0u32..8).prop_map(|b| OpSet::from_bits(b << 14).unwrap()),
    ]
}

fn cap_set() -> impl Strategy<Value = CapabilitySet> {
    vec((pattern(), ops()), 0..6).prop_map(|entries| {
        let mut set = CapabilitySet::new();
        for (r, o) in entries {
            set.insert(Resource::new(r).unwrap(), o);
        }
        set
    })
}

fn res(s: &str) -> Resource {
    Resource::new(s).unwrap()
}

/// Ably's matching of a channel name by a resource pattern, written from the protocol
/// reference (§3), independently of capsign's `covers`: the qualifier must be equal unless
/// the pattern's is `[*]`; a trailing `*` segment matches one or more segments; any other
/// `*` segment matches exactly one.
fn ably_matches(pattern: &str, channel: &str) -> bool {
    fn split(s: &str) -> (&str, &str) {
        match s.strip_prefix('[').and_then(|t| t.split_once(']')) {
            Some((q, rest)) => (q, rest),
            None => ("", s),
        }
    }
    fn segs(p: &[&str], c: &[&str]) -> bool {
        match (p, c) {
            ([], []) => true,
            (["*"], rest) => !rest.is_empty(),
            (["*", p_rest @ ..], [_, c_rest @ ..]) => segs(p_rest, c_rest),
            ([p0, p_rest @ ..], [c0, c_rest @ ..]) => p0 == c0 && segs(p_rest, c_rest),
            _ => false,
        }
    }
    let (pq, p) = split(pattern);
    let (cq, c) = split(channel);
    if pq != "*" && pq != cq {
        return false;
    }
    let p: Vec<&str> = p.split(':').collect();
    let c: Vec<&str> = c.split(':').collect();
    segs(&p, &c)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn union_is_commutative(a in cap_set(), b in cap_set()) {
        prop_assert_eq!(a.union(&b), b.union(&a));
    }

    #[test]
    fn union_is_associative(a in cap_set(), b in cap_set(), c in cap_set()) {
        prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
    }

    #[test]
    fn union_is_idempotent(a in cap_set(), b in cap_set()) {
        prop_assert_eq!(a.union(&a), a.clone());
        let u = a.union(&b);
        prop_assert_eq!(u.union(&b), u);
    }

    #[test]
    fn every_input_is_covered_by_the_union(a in cap_set(), b in cap_set()) {
        let u = a.union(&b);
        prop_assert!(u.covers_set(&a));
        prop_assert!(u.covers_set(&b));
    }

    #[test]
    fn json_literal_is_the_serialized_canonical_text(
        names in vec(("[a-z\"\\\\\u{e9}\u{2028}:*]{1,6}", ops()), 0..6),
    ) {
        let mut set = CapabilitySet::new();
        for (name, o) in names {
            if let Ok(r) = Resource::new(name) {
                set.insert(r, o);
            }
        }
        let mut literal = String::new();
        set.push_json_literal(&mut literal);
        prop_assert_eq!(literal, serde_json::to_string(&set.to_json()).unwrap());
        let text: serde_json::Value = serde_json::from_str(&set.to_json()).unwrap();
        prop_assert_eq!(CapabilitySet::from_value(&text).unwrap(), set);
    }

    #[test]
    fn merge_never_widens_beyond_its_inputs(a in cap_set(), b in cap_set()) {
        let mut held = GrantSet::new();
        held.add(&a, 1000);
        let mut other = GrantSet::new();
        other.add(&b, 2000);
        held.merge(other);
        for (r, g) in held.iter() {
            let want = if a.ops_for(r.as_str()).is_some() { 1000 } else { 2000 };
            prop_assert_eq!(g.approved_at, want, "{} keeps the older approval", r);
        }
        let merged = held.capabilities();
        for (r, ops) in merged.iter() {
            let inputs = a.ops_for(r.as_str()).unwrap_or_default()
                .union(b.ops_for(r.as_str()).unwrap_or_default());
            prop_assert!(ops.is_subset(inputs), "{} widened", r);
        }
        prop_assert_eq!(merged, a.union(&b));
    }

    #[test]
    fn covering_is_reflexive(p in pattern(), a in cap_set()) {
        prop_assert!(res(&p).covers(&res(&p)));
        prop_assert!(a.covers_set(&a));
    }

    #[test]
    fn covering_is_transitive(p in pattern(), q in pattern(), r in pattern()) {
        let (p, q, r) = (res(&p), res(&q), res(&r));
        if p.covers(&q) && q.covers(&r) {
            prop_assert!(p.covers(&r), "{:?} ⊇ {:?} ⊇ {:?}", p, q, r);
        }
    }

    #[test]
    fn covering_a_channel_is_ably_matching(p in pattern(), c in channel()) {
        prop_assert_eq!(res(&p).covers(&res(&c)), ably_matches(&p, &c), "{} vs {}", p, c);
    }

    #[test]
    fn covering_a_pattern_is_sound_for_every_channel(
        p in pattern(),
        q in pattern(),
        channels in vec(channel(), 1..24),
    ) {
        if res(&p).covers(&res(&q)) {
            for c in channels {
                if ably_matches(&q, &c) {
                    prop_assert!(ably_matches(&p, &c), "{} covers {} but not {}", p, q, c);
                }
            }
        }
    }

    #[test]
    fn canonical_form_is_stable(a in cap_set()) {
        let text = a.to_json();
        let again = CapabilitySet::from_json(&text).unwrap();
        prop_assert_eq!(&again, &a);
        prop_assert_eq!(again.to_json(), text);
    }

    #[test]
    fn uncovered_is_what_the_policy_must_see(held in cap_set(), asked in cap_set()) {
        let missing = held.uncovered(&asked);
        prop_assert!(asked.covers_set(&missing));
        prop_assert!(held.union(&missing).covers_set(&asked));
        let mut grants = GrantSet::new();
        grants.add(&held, 1);
        prop_assert_eq!(grants.uncovered(&asked), missing);
    }

    #[test]
    fn intersection_never_widens(a in cap_set(), key in cap_set()) {
        let i = a.intersect(&key);
        prop_assert!(a.covers_set(&i));
        prop_assert!(key.covers_set(&i));
    }
}
