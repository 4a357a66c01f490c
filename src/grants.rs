//! The grant set a client holds, and its sealed form: the grant cookie (format v1).
//!
//! This module owns the bytes of the cookie and of the `X-Capsign-Grants` header: how a
//! [`GrantSet`] is encoded, compressed, MAC'd and opened again. It decides nothing about what
//! a client may hold (that is the policy's job) and does not read HTTP headers.
//!
//! # Format v1
//!
//! A sealed value is `base64url_nopad(payload ‖ mac)`:
//!
//! ```text
//! payload = version:u8 (=1) ‖ key_id:u8 ‖ flags:u8 ‖ body        flags bit 0: body is deflated
//! body    = varint(issued_at) ‖ varint(len) ‖ clientId
//!           ‖ varint(n) ‖ n × grant                              grants sorted by resource bytes
//! grant   = varint(shared) ‖ varint(len) ‖ suffix                resource = prev[..shared] ‖ suffix
//!           ‖ varint(op_bits) ‖ varint(issued_at − approved_at)
//! mac     = HMAC-SHA256(K[key_id], "capsign-grants-v1" ‖ 0x00 ‖ purpose ‖ u8(len(name)) ‖ name
//!                                  ‖ payload)
//! K[id]   = HKDF-SHA256(salt = "capsign", ikm = cookie key `id`,
//!                       info = "capsign grant cookie v1 hmac-sha256")
//! ```
//!
//! Times are Unix seconds, varints are unsigned LEB128, `purpose` is `C` for the cookie (whose
//! name is bound as `name`) and `H` for the `X-Capsign-Grants` header (empty name), so a value
//! sealed for one never opens as the other. `op_bits` is the operation bit set of
//! [`OpSet::bits`]: bit `i` is the `i`-th operation in name order, bit 17 is `*`.
//!
//! Opening checks, in order, and stops at the first failure: the length (before decoding
//! anything), base64, version, key id, the MAC over the raw bytes (constant time), and only
//! then inflates (bounded) and parses, requiring strictly sorted valid resources, canonical
//! operation sets, no trailing bytes, the expected clientId, an issue time neither in the
//! future (beyond a small skew) nor older than the maximum age.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::capability::{CapabilitySet, OpSet, Resource};

/// The format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Longest sealed value `open` looks at. Browsers keep no cookie over 4096 bytes anyway.
pub const MAX_SEALED_LEN: usize = 4096;

/// Largest body `open` inflates, so a small cookie cannot expand into a large allocation.
const MAX_BODY_LEN: usize = 64 * 1024;

/// Bodies shorter than this (about 60 grants) are stored as they are. Deflate saves about a
/// third on large sets, which is what lets 300+ grants fit in a cookie, but on a small set it
/// saves a few dozen bytes for more CPU than the rest of the request together (measured with
/// `bench/run`). The decoder takes either form, so this is the encoder's choice alone.
const DEFLATE_FROM: usize = 768;

const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 3;
const DOMAIN: &[u8] = b"capsign-grants-v1\0";
const HKDF_SALT: &[u8] = b"capsign";
const HKDF_INFO: &[u8] = b"capsign grant cookie v1 hmac-sha256";
const FLAG_DEFLATE: u8 = 1;

/// What a sealed value is for; bound into the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The grant cookie, whose name is bound too.
    Cookie,
    /// The `X-Capsign-Grants` header.
    Header,
}

impl Purpose {
    const fn tag(self) -> u8 {
        match self {
            Purpose::Cookie => b'C',
            Purpose::Header => b'H',
        }
    }
}

/// Why a sealed value did not open. None of these reach the client: the flow treats the value
/// as absent. They are logged at `debug` to help an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantsError {
    /// Longer than [`MAX_SEALED_LEN`].
    #[error("sealed grants longer than {MAX_SEALED_LEN} bytes")]
    TooLong,
    /// Not base64url without padding.
    #[error("sealed grants are not base64url")]
    Base64,
    /// Too short to hold a header and a MAC.
    #[error("sealed grants too short")]
    TooShort,
    /// Another format version.
    #[error("unsupported grants format version {0}")]
    Version(u8),
    /// A key id this instance does not hold (retired, or from another deployment).
    #[error("unknown grants key id {0}")]
    UnknownKey(u8),
    /// The MAC does not verify.
    #[error("grants MAC does not verify")]
    Mac,
    /// The MAC verified but the body is not a canonical v1 body. Means a bug or a leaked key.
    #[error("malformed grants body: {0}")]
    Malformed(&'static str),
    /// Sealed for another clientId.
    #[error("grants belong to another clientId")]
    OtherClient,
    /// Issued too far in the future.
    #[error("grants issued in the future")]
    FromFuture,
    /// Older than the maximum age.
    #[error("grants expired")]
    Expired,
}

/// A secret from which the cookie MAC key is derived. `Debug` never shows it.
#[derive(Clone)]
pub struct GrantKey {
    id: u8,
    mac: Hmac<Sha256>,
}

impl GrantKey {
    /// Derives the MAC key for key id `id` from `secret` (at least 32 bytes; the caller checks).
    pub fn derive(id: u8, secret: &[u8]) -> GrantKey {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(HKDF_SALT), secret);
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32, so expand cannot fail.
        let _ = hk.expand(HKDF_INFO, &mut okm);
        GrantKey {
            id,
            mac: keyed_hmac(&okm),
        }
    }

    /// The key id written into sealed values.
    pub fn id(&self) -> u8 {
        self.id
    }
}

/// An HMAC-SHA256 keyed once; clones of it skip the key schedule on the hot path.
pub(crate) fn keyed_hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail; an empty key is the fallback the
    // type system asks for.
    Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()))
}

impl fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantKey {{ id: {}, key: <redacted> }}", self.id)
    }
}

/// The keys that open grants: the first one signs, all of them verify.
#[derive(Debug, Clone)]
pub struct GrantKeys {
    keys: Vec<GrantKey>,
}

impl GrantKeys {
    /// A key ring; `None` when `keys` is empty or two keys share an id.
    pub fn new(keys: Vec<GrantKey>) -> Option<GrantKeys> {
        keys.first()?;
        let mut ids: Vec<u8> = keys.iter().map(|k| k.id).collect();
        ids.sort_unstable();
        ids.dedup();
        (ids.len() == keys.len()).then_some(GrantKeys { keys })
    }

    fn signing(&self) -> Option<&GrantKey> {
        self.keys.first()
    }

    fn find(&self, id: u8) -> Option<&GrantKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

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
    pub fn uncovered(&self, requested: &CapabilitySet) -> CapabilitySet {
        let mut out = CapabilitySet::new();
        for (r, ops) in requested.iter() {
            let allowed = self
                .entries
                .iter()
                .filter(|(held, _)| held.covers(r))
                .fold(crate::capability::OpSet::EMPTY, |acc, (_, g)| {
                    acc.union(g.ops)
                });
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
        if self.oldest_approval().is_none_or(|t| t > cutoff) {
            return GrantSet::new();
        }
        let (old, keep) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(_, g)| g.approved_at <= cutoff);
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

/// A grant set as it came out of a sealed value, with the seal's issue time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The grants.
    pub grants: GrantSet,
    /// When the value was sealed (Unix seconds).
    pub issued_at: u64,
}

/// What `open` checks besides the MAC.
#[derive(Debug, Clone, Copy)]
pub struct OpenLimits {
    /// The current time, Unix seconds.
    pub now: u64,
    /// The oldest seal accepted, in seconds.
    pub max_age: u64,
    /// How far in the future a seal's issue time may be (clock differences within a fleet).
    pub future_skew: u64,
}

/// Seals and opens grant sets for one cookie name with one key ring.
#[derive(Debug, Clone)]
pub struct Sealer {
    keys: GrantKeys,
    cookie_name: String,
}

/// The encoded payload of a grant set, before the MAC: sealed once per purpose.
pub struct Payload(Vec<u8>);

impl Sealer {
    /// A sealer for `cookie_name` (at most 255 bytes; the config checks).
    pub fn new(keys: GrantKeys, cookie_name: impl Into<String>) -> Sealer {
        Sealer {
            keys,
            cookie_name: cookie_name.into(),
        }
    }

    /// The cookie name bound into cookie MACs.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Encodes a grant set for `client_id` at `issued_at` (Unix seconds).
    pub fn encode(&self, client_id: &str, issued_at: u64, grants: &GrantSet) -> Payload {
        let mut body = Vec::with_capacity(32 + client_id.len() + grants.len() * 16);
        put_varint(&mut body, issued_at);
        put_bytes(&mut body, client_id.as_bytes());
        put_varint(&mut body, grants.len() as u64);
        let mut prev: &[u8] = &[];
        for (r, g) in grants.iter() {
            let name = r.as_str().as_bytes();
            let shared = name.iter().zip(prev).take_while(|(a, b)| a == b).count();
            put_varint(&mut body, shared as u64);
            put_bytes(&mut body, name.get(shared..).unwrap_or_default());
            put_varint(&mut body, u64::from(g.ops.bits()));
            put_varint(&mut body, issued_at.saturating_sub(g.approved_at));
            prev = name;
        }
        let key_id = self.keys.signing().map_or(0, GrantKey::id);
        let deflated = (body.len() >= DEFLATE_FROM)
            .then(|| deflate(&body))
            .flatten()
            .filter(|d| d.len() < body.len());
        let (flags, body) = match &deflated {
            Some(d) => (FLAG_DEFLATE, d),
            None => (0, &body),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + MAC_LEN);
        out.extend_from_slice(&[VERSION, key_id, flags]);
        out.extend_from_slice(body);
        Payload(out)
    }

    /// The sealed text of `payload` for `purpose`.
    pub fn seal(&self, purpose: Purpose, payload: &Payload) -> String {
        let mut raw = Vec::with_capacity(payload.0.len() + MAC_LEN);
        raw.extend_from_slice(&payload.0);
        if let Some(key) = self.keys.signing() {
            let tag = self.mac(key, purpose, &payload.0).finalize().into_bytes();
            raw.extend_from_slice(&tag);
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Encodes and seals in one step.
    pub fn seal_grants(
        &self,
        purpose: Purpose,
        client_id: &str,
        issued_at: u64,
        grants: &GrantSet,
    ) -> String {
        self.seal(purpose, &self.encode(client_id, issued_at, grants))
    }

    /// The MAC state over `payload` for `purpose`, ready to finalize or verify.
    fn mac(&self, key: &GrantKey, purpose: Purpose, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = key.mac.clone();
        let name: &[u8] = match purpose {
            Purpose::Cookie => self.cookie_name.as_bytes(),
            Purpose::Header => b"",
        };
        mac.update(DOMAIN);
        mac.update(&[purpose.tag(), name.len().min(255) as u8]);
        mac.update(name);
        mac.update(payload);
        mac
    }

    /// Opens a sealed value for `client_id` (see the module's `# Format v1` for the checks).
    ///
    /// # Errors
    ///
    /// Any failed check; the caller treats the value as absent.
    pub fn open(
        &self,
        purpose: Purpose,
        sealed: &str,
        client_id: &str,
        limits: OpenLimits,
    ) -> Result<Opened, GrantsError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(GrantsError::TooLong);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| GrantsError::Base64)?;
        if raw.len() < HEADER_LEN + MAC_LEN {
            return Err(GrantsError::TooShort);
        }
        let (payload, tag) = raw.split_at(raw.len() - MAC_LEN);
        let (&[version, key_id, flags], body) = payload
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(GrantsError::TooShort)?;
        if version != VERSION {
            return Err(GrantsError::Version(version));
        }
        let key = self
            .keys
            .find(key_id)
            .ok_or(GrantsError::UnknownKey(key_id))?;
        self.mac(key, purpose, payload)
            .verify_slice(tag)
            .map_err(|_| GrantsError::Mac)?;

        // Only verified bytes from here on.
        let inflated;
        let body = match flags {
            0 => body,
            FLAG_DEFLATE => {
                inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_BODY_LEN)
                    .map_err(|_| GrantsError::Malformed("deflate"))?;
                &inflated[..]
            }
            _ => return Err(GrantsError::Malformed("flags")),
        };
        let (holder, opened) = decode_body(body)?;
        if holder != client_id.as_bytes() {
            return Err(GrantsError::OtherClient);
        }
        if opened.issued_at > limits.now.saturating_add(limits.future_skew) {
            return Err(GrantsError::FromFuture);
        }
        if limits.now.saturating_sub(opened.issued_at) > limits.max_age {
            return Err(GrantsError::Expired);
        }
        Ok(opened)
    }
}

fn decode_body(body: &[u8]) -> Result<(&[u8], Opened), GrantsError> {
    let mut r = Reader(body);
    let issued_at = r.varint()?;
    let holder = r.bytes()?;
    let n = r.varint()?;
    // Each grant takes at least four bytes, which bounds the capacity by the body's length.
    let mut grants = GrantSet {
        entries: Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(r.0.len() / 4)),
    };
    // The previous name and the one being built, reused: one allocation per grant, its own.
    let mut prev: Vec<u8> = Vec::new();
    let mut name: Vec<u8> = Vec::new();
    for i in 0..n {
        let shared = usize::try_from(r.varint()?).map_err(|_| GrantsError::Malformed("prefix"))?;
        let suffix = r.bytes()?;
        name.clear();
        name.extend_from_slice(prev.get(..shared).ok_or(GrantsError::Malformed("prefix"))?);
        name.extend_from_slice(suffix);
        if i > 0 && name <= prev {
            return Err(GrantsError::Malformed("order"));
        }
        let text = std::str::from_utf8(&name).map_err(|_| GrantsError::Malformed("resource"))?;
        let bits = u32::try_from(r.varint()?).map_err(|_| GrantsError::Malformed("ops"))?;
        let ops = OpSet::from_bits(bits)
            .filter(|o| !o.is_empty())
            .ok_or(GrantsError::Malformed("ops"))?;
        let age = r.varint()?;
        let approved_at = issued_at
            .checked_sub(age)
            .ok_or(GrantsError::Malformed("age"))?;
        let resource = Resource::new(text).map_err(|_| GrantsError::Malformed("resource"))?;
        // Strictly increasing (checked above): the vector stays sorted.
        grants.entries.push((resource, Grant { ops, approved_at }));
        std::mem::swap(&mut prev, &mut name);
    }
    if !r.0.is_empty() {
        return Err(GrantsError::Malformed("trailing bytes"));
    }
    Ok((holder, Opened { grants, issued_at }))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, GrantsError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or(GrantsError::Malformed("truncated"))?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(GrantsError::Malformed("varint"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], GrantsError> {
        let len = usize::try_from(self.varint()?).map_err(|_| GrantsError::Malformed("length"))?;
        if len > self.0.len() {
            return Err(GrantsError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

/// Raw deflate at level 6 with this thread's compressor, reset for each use.
///
/// A `CompressorOxide` holds about 300 KB of tables; making one per cookie (as
/// `compress_to_vec` does) costs a fresh zeroed allocation and its page faults on every
/// request. `None` if the compressor reports a failure (then the body is stored raw).
fn deflate(input: &[u8]) -> Option<Vec<u8>> {
    use miniz_oxide::deflate::core::{
        CompressorOxide, TDEFLFlush, TDEFLStatus, compress, create_comp_flags_from_zip_params,
    };
    use std::cell::RefCell;
    thread_local! {
        static COMPRESSOR: RefCell<Option<Box<CompressorOxide>>> = const { RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        let compressor = slot.get_or_insert_with(|| {
            Box::new(CompressorOxide::new(create_comp_flags_from_zip_params(
                6, 0, 0,
            )))
        });
        compressor.reset();
        let mut output = vec![0; input.len().max(64)];
        let (mut rest, mut written) = (input, 0);
        loop {
            let (status, read, wrote) = compress(
                compressor,
                rest,
                output.get_mut(written..)?,
                TDEFLFlush::Finish,
            );
            written += wrote;
            match status {
                TDEFLStatus::Done => {
                    output.truncate(written);
                    return Some(output);
                }
                TDEFLStatus::Okay => {
                    rest = rest.get(read..)?;
                    output.resize(output.len() * 2, 0);
                }
                _ => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        let keys = GrantKeys::new(vec![GrantKey::derive(1, &[7u8; 32])]).unwrap();
        Sealer::new(keys, "__Host-capsign")
    }

    fn limits(now: u64) -> OpenLimits {
        OpenLimits {
            now,
            max_age: 86_400,
            future_skew: 60,
        }
    }

    fn set(json: &str, approved_at: u64) -> GrantSet {
        let mut g = GrantSet::new();
        g.add(&CapabilitySet::from_json(json).unwrap(), approved_at);
        g
    }

    #[test]
    fn round_trip() {
        let s = sealer();
        let g = set(
            r#"{"chat:a":["publish","subscribe"],"chat:b":["*"],"[meta]x":["subscribe"]}"#,
            990,
        );
        let sealed = s.seal_grants(Purpose::Cookie, "alice", 1000, &g);
        let opened = s
            .open(Purpose::Cookie, &sealed, "alice", limits(1000))
            .unwrap();
        assert_eq!(opened.grants, g);
        assert_eq!(opened.issued_at, 1000);
    }

    #[test]
    fn bound_to_client_purpose_name_and_time() {
        let s = sealer();
        let g = set(r#"{"chat:a":["publish"]}"#, 1000);
        let sealed = s.seal_grants(Purpose::Cookie, "alice", 1000, &g);
        assert_eq!(
            s.open(Purpose::Cookie, &sealed, "bob", limits(1000)),
            Err(GrantsError::OtherClient)
        );
        assert_eq!(
            s.open(Purpose::Header, &sealed, "alice", limits(1000)),
            Err(GrantsError::Mac)
        );
        let other_name = Sealer::new(s.keys.clone(), "other");
        assert_eq!(
            other_name.open(Purpose::Cookie, &sealed, "alice", limits(1000)),
            Err(GrantsError::Mac)
        );
        assert_eq!(
            s.open(Purpose::Cookie, &sealed, "alice", limits(1000 + 86_401)),
            Err(GrantsError::Expired)
        );
        assert_eq!(
            s.open(Purpose::Cookie, &sealed, "alice", limits(900)),
            Err(GrantsError::FromFuture)
        );
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let s = sealer();
        let g = set(r#"{"chat:a":["publish"],"chat:b":["subscribe"]}"#, 1000);
        let sealed = s.seal_grants(Purpose::Cookie, "alice", 1000, &g);
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut m = raw.clone();
                m[i] ^= 1 << bit;
                let text = URL_SAFE_NO_PAD.encode(&m);
                assert!(
                    s.open(Purpose::Cookie, &text, "alice", limits(1000))
                        .is_err(),
                    "flip of byte {i} bit {bit} opened"
                );
            }
        }
    }

    #[test]
    fn rotation_old_keys_verify_new_key_signs() {
        let old = GrantKey::derive(1, &[1u8; 32]);
        let new = GrantKey::derive(2, &[2u8; 32]);
        let before = Sealer::new(GrantKeys::new(vec![old.clone()]).unwrap(), "c");
        let after = Sealer::new(GrantKeys::new(vec![new.clone(), old]).unwrap(), "c");
        let only_new = Sealer::new(GrantKeys::new(vec![new]).unwrap(), "c");
        let g = set(r#"{"a":["publish"]}"#, 1000);
        let sealed = before.seal_grants(Purpose::Cookie, "u", 1000, &g);
        assert!(
            after
                .open(Purpose::Cookie, &sealed, "u", limits(1000))
                .is_ok()
        );
        assert_eq!(
            only_new.open(Purpose::Cookie, &sealed, "u", limits(1000)),
            Err(GrantsError::UnknownKey(1))
        );
        let resealed = after.seal_grants(Purpose::Cookie, "u", 1000, &g);
        assert!(
            only_new
                .open(Purpose::Cookie, &resealed, "u", limits(1000))
                .is_ok()
        );
    }

    #[test]
    fn garbage_never_opens() {
        let s = sealer();
        for v in ["", "a", "!!!!", &"A".repeat(5000), "AQEA", &"A".repeat(60)] {
            assert!(
                s.open(Purpose::Cookie, v, "u", limits(1000)).is_err(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn keyring_rejects_duplicate_ids() {
        assert!(GrantKeys::new(vec![]).is_none());
        let k = GrantKey::derive(3, &[0u8; 32]);
        assert!(GrantKeys::new(vec![k.clone(), k]).is_none());
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
