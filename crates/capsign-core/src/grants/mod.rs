//! The grant set a client holds, and its sealed form: the grant cookie (format v1) and the
//! `X-Capsign-Grants` header (format v2).
//!
//! This module owns the bytes of the cookie and of the `X-Capsign-Grants` header: how a
//! [`GrantSet`] is encoded, compressed, MAC'd and opened again. It decides nothing about what
//! a client may hold (that is the policy's job) and does not read HTTP headers.
//!
//! # Formats v1 (cookie) and v2 (header)
//!
//! A sealed value is `base64url_nopad(payload ‖ mac)`:
//!
//! ```text
//! payload = version:u8 ‖ key_id:u8 ‖ flags:u8 ‖ body             1 cookie, 2 header
//!                                                                flags bit 0: body is deflated
//! body    = varint(issued_at) ‖ varint(len) ‖ clientId
//!           ‖ varint(n) ‖ n × grant                              grants sorted by resource bytes
//! grant   = varint(shared) ‖ varint(len) ‖ suffix                resource = prev[..shared] ‖ suffix
//!           ‖ varint(op_bits) ‖ varint(issued_at − approved_at)
//! mac     = HMAC-SHA256(K[key_id], domain ‖ purpose ‖ u8(len(name)) ‖ name ‖ payload)
//! domain  = "capsign-grants-v1" ‖ 0x00 (cookie), "capsign-grants-v2" ‖ 0x00 (header)
//! K[id]   = HKDF-SHA256(salt = "capsign", ikm = the bytes of cookie key `id`,
//!                       info = "capsign grant cookie v1 hmac-sha256")
//! ```
//!
//! Times are Unix seconds, varints are unsigned LEB128, `purpose` is `C` for the cookie and
//! `H` for the `X-Capsign-Grants` header, and `name` is the cookie name for both (it names the
//! deployment), so a value sealed for one purpose or deployment never opens as another. `op_bits` is the operation bit set of
//! [`OpSet::bits`]: bit `i` is the `i`-th operation in name order, bit 17 is `*`.
//!
//! Opening checks, in order, and stops at the first failure: the length (before decoding
//! anything), base64, version, key id, the MAC over the raw bytes (constant time), and only
//! then inflates (bounded) and parses, refusing more grants than the limit before decoding any, requiring strictly sorted valid resources, canonical
//! operation sets, no trailing bytes, the expected clientId, an issue time neither in the
//! future (beyond a small skew) nor older than the maximum age.

mod codec;
mod keys;
mod seal;

use crate::capability::{CapabilitySet, OpSet, Resource, literal_prefix};

pub use keys::{GrantKey, GrantKeys};
pub use seal::{
    DEFAULT_MAX_GRANTS, GrantsError, HEADER_VERSION, MAX_SEALED_LEN, OpenLimits, Opened, Payload,
    Purpose, SET_COOKIE_BUDGET, SealError, Sealer, VERSION,
};

/// One held grant: the operations on a resource and when the policy last approved them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The operations granted.
    pub ops: OpSet,
    /// Unix seconds of the policy decision that approved them; drives re-checks and expiry.
    pub approved_at: u64,
}

/// The grants a client holds, with their approval times. Kept as a vector sorted by resource
/// (the cookie's order): a cookie opens into it without a single comparison, and sets of a few
/// hundred grants are searched and merged faster than a tree would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSet {
    entries: Vec<(Resource, Grant)>,
}

impl GrantSet {
    /// The empty set.
    pub fn new() -> GrantSet {
        GrantSet::default()
    }

    /// How many resources are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The grants in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&Resource, &Grant)> {
        self.entries.iter().map(|(r, g)| (r, g))
    }

    /// The held capabilities, without times.
    pub fn capabilities(&self) -> CapabilitySet {
        CapabilitySet::from_sorted(self.entries.iter().map(|(r, g)| (r.clone(), g.ops)))
    }

    /// The part of `requested` these grants do not already cover (as
    /// [`CapabilitySet::uncovered`], without building the held set first).
    ///
    /// A held name that is not a pattern covers only itself, so it is found by binary search; only the
    /// held patterns are compared one by one, and each first by its literal prefix. The cost
    /// is at most `requested × (log held + patterns held)`, with both bounded by the grant
    /// limit.
    pub fn uncovered(&self, requested: &CapabilitySet) -> CapabilitySet {
        let patterns: Vec<(&Resource, OpSet, &str)> = self
            .entries
            .iter()
            .filter(|(r, _)| r.is_pattern())
            .map(|(r, g)| (r, g.ops, literal_prefix(r.as_str())))
            .collect();
        let mut out = CapabilitySet::new();
        for (r, ops) in requested.iter() {
            let exact = self
                .find(r.as_str())
                .ok()
                .and_then(|i| self.entries.get(i))
                .map_or(OpSet::EMPTY, |(_, g)| g.ops);
            let allowed = patterns
                .iter()
                .filter(|(p, _, prefix)| r.as_str().starts_with(prefix) && p.covers(r))
                .fold(exact, |acc, (_, o, _)| acc.union(*o));
            out.insert(r.clone(), ops.difference(allowed));
        }
        out
    }

    /// Adds every grant of `set`, approved at `approved_at`. A resource already held keeps
    /// the older approval time, so merging never makes a grant look fresher than it is.
    pub fn add(&mut self, set: &CapabilitySet, approved_at: u64) {
        for (r, ops) in set.iter() {
            self.insert(r.clone(), Grant { ops, approved_at });
        }
    }

    /// Adds one grant, merged as [`GrantSet::add`] does.
    pub fn insert(&mut self, resource: Resource, grant: Grant) {
        if grant.ops.is_empty() {
            return;
        }
        match self.find(resource.as_str()) {
            Ok(i) => {
                if let Some((_, g)) = self.entries.get_mut(i) {
                    *g = merged(*g, grant);
                }
            }
            Err(i) => self.entries.insert(i, (resource, grant)),
        }
    }

    /// Every grant of both sets (see [`GrantSet::insert`]), in one pass over both.
    pub fn merge(&mut self, other: GrantSet) {
        if self.entries.is_empty() {
            self.entries = other.entries;
            return;
        }
        let mut out = Vec::with_capacity(self.entries.len() + other.entries.len());
        let mut a = std::mem::take(&mut self.entries).into_iter().peekable();
        let mut b = other.entries.into_iter().peekable();
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some((ra, _)), Some((rb, _))) => match ra.cmp(rb) {
                    std::cmp::Ordering::Less => a.next(),
                    std::cmp::Ordering::Greater => b.next(),
                    std::cmp::Ordering::Equal => match (a.next(), b.next()) {
                        (Some((r, ga)), Some((_, gb))) => Some((r, merged(ga, gb))),
                        (x, y) => x.or(y),
                    },
                },
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            if let Some((r, g)) = next {
                if !g.ops.is_empty() {
                    out.push((r, g));
                }
            }
        }
        self.entries = out;
    }

    /// Removes and returns the grants approved at or before `cutoff`.
    pub fn take_approved_before(&mut self, cutoff: u64) -> GrantSet {
        self.take_where(cutoff, |_| true)
    }

    /// Removes and returns the grants approved at or before `cutoff` whose resource `which`
    /// picks (a revocation of some resources).
    pub fn take_where(&mut self, cutoff: u64, which: impl Fn(&Resource) -> bool) -> GrantSet {
        if self.oldest_approval().is_none_or(|t| t > cutoff) {
            return GrantSet::new();
        }
        let (old, keep) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(r, g)| g.approved_at <= cutoff && which(r));
        self.entries = keep;
        GrantSet { entries: old }
    }

    /// The earliest approval time held.
    pub fn oldest_approval(&self) -> Option<u64> {
        self.entries.iter().map(|(_, g)| g.approved_at).min()
    }

    /// Removes the `n` grants approved longest ago (ties broken by resource order) and returns
    /// their resources: the cookie's overflow eviction.
    pub fn evict_oldest(&mut self, n: usize) -> Vec<Resource> {
        let mut order: Vec<(u64, Resource)> = self
            .entries
            .iter()
            .map(|(r, g)| (g.approved_at, r.clone()))
            .collect();
        order.sort();
        order.truncate(n);
        let gone: std::collections::BTreeSet<&str> =
            order.iter().map(|(_, r)| r.as_str()).collect();
        self.entries.retain(|(r, _)| !gone.contains(r.as_str()));
        order.into_iter().map(|(_, r)| r).collect()
    }

    fn find(&self, resource: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(r, _)| r.as_str().cmp(resource))
    }
}

/// One grant from two: the union of the operations, the older approval.
fn merged(a: Grant, b: Grant) -> Grant {
    Grant {
        ops: a.ops.union(b.ops),
        approved_at: a.approved_at.min(b.approved_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str, approved_at: u64) -> GrantSet {
        let mut g = GrantSet::new();
        g.add(&CapabilitySet::from_json(json).unwrap(), approved_at);
        g
    }

    #[test]
    fn merge_keeps_older_approval() {
        let mut g = set(r#"{"a":["publish"]}"#, 100);
        g.merge(set(r#"{"a":["subscribe"],"b":["publish"]}"#, 200));
        let a = g.iter().next().unwrap().1;
        assert_eq!(a.approved_at, 100);
        assert_eq!(a.ops.bits().count_ones(), 2);
        assert_eq!(g.evict_oldest(1)[0].as_str(), "a");
        assert_eq!(g.len(), 1);
    }
}
