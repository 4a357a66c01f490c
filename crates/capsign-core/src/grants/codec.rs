//! The grant cookie's body: varints, the holder's clientId and the grants, each name stored
//! as the bytes it does not share with the one before (`docs/grant-cookie.md`); deflated when
//! that is shorter. Reads only verified bytes, bounded by the grant limit.

use super::seal::{GrantsError, Opened};
use super::{Grant, GrantSet};
use crate::capability::{MAX_RESOURCE_LEN, OpSet, Resource};

/// Appends the body of `grants` sealed for `client_id` at `issued_at` (Unix seconds): the
/// issue time, the holder, the count, then each grant (its name as the bytes it does not share
/// with the one before, its operations, its age at `issued_at`).
pub(super) fn encode_body(body: &mut Vec<u8>, client_id: &str, issued_at: u64, grants: &GrantSet) {
    put_varint(body, issued_at);
    put_bytes(body, client_id.as_bytes());
    put_varint(body, grants.len() as u64);
    let mut prev: &[u8] = &[];
    for (r, g) in grants.iter() {
        let name = r.as_str().as_bytes();
        let shared = name.iter().zip(prev).take_while(|(a, b)| a == b).count();
        put_varint(body, shared as u64);
        // `shared` counts bytes of `name` (zip stops at the shorter): within it.
        put_bytes(body, name.split_at(shared).1);
        put_varint(body, u64::from(g.ops.bits()));
        put_varint(body, issued_at.saturating_sub(g.approved_at));
        prev = name;
    }
}

/// Decodes a verified body sealed with key `key_id`.
pub(super) fn decode_body(
    body: &[u8],
    max_grants: usize,
    key_id: u8,
) -> Result<(&[u8], Opened), GrantsError> {
    let mut r = Reader(body);
    let issued_at = r.varint()?;
    let holder = r.bytes()?;
    let n = r.varint()?;
    // Checked before any grant is decoded: the work of opening is bounded by the limit.
    if usize::try_from(n).map_or(true, |n| n > max_grants) {
        return Err(GrantsError::TooManyGrants);
    }
    // Each grant takes at least four bytes, which bounds the capacity by the body's length;
    // one more makes room for the grant a request most often adds.
    let mut grants = GrantSet {
        entries: Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(r.0.len() / 4) + 1),
    };
    // Each name is built on the stack from the previous one (the last entry) and its suffix:
    // the only allocation per grant is its own name's, when it is too long to be inline.
    let mut name = [0u8; MAX_RESOURCE_LEN];
    for _ in 0..n {
        let shared = usize::try_from(r.varint()?).map_err(|_| GrantsError::Malformed("prefix"))?;
        let suffix = r.bytes()?;
        let prev = grants
            .entries
            .last()
            .map_or(&[][..], |(p, _)| p.as_str().as_bytes());
        let len = shared
            .checked_add(suffix.len())
            .filter(|&len| len <= MAX_RESOURCE_LEN)
            .ok_or(GrantsError::Malformed("resource"))?;
        let prefix = prev.get(..shared).ok_or(GrantsError::Malformed("prefix"))?;
        let (head, tail) = name.split_at_mut(shared);
        head.copy_from_slice(prefix);
        tail.get_mut(..suffix.len())
            .ok_or(GrantsError::Malformed("resource"))?
            .copy_from_slice(suffix);
        let built = name.get(..len).unwrap_or_default();
        // `built` shares `shared` bytes with `prev`: the first byte after them decides, when
        // both have one and they differ (the usual case); else compare the whole names.
        let ordered = match (prev.get(shared), suffix.first()) {
            _ if grants.entries.is_empty() => true,
            (Some(p), Some(s)) if p != s => s > p,
            _ => built > prev,
        };
        if !ordered {
            return Err(GrantsError::Malformed("order"));
        }
        let text = std::str::from_utf8(built).map_err(|_| GrantsError::Malformed("resource"))?;
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
    }
    if !r.0.is_empty() {
        return Err(GrantsError::Malformed("trailing bytes"));
    }
    Ok((
        holder,
        Opened {
            grants,
            issued_at,
            key_id,
        },
    ))
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub(super) struct Reader<'a>(&'a [u8]);

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
pub(super) fn deflate(input: &[u8]) -> Option<Vec<u8>> {
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
