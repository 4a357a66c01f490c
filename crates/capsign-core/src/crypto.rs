//! The two keyed primitives every signing module shares: HMAC-SHA256 keyed once, and HKDF-SHA256
//! into fixed-size keys.
//!
//! Grant cookies, demo sessions, Ably JWTs, TokenRequests, session JWTs under a secret and
//! webhook signatures all use these. Nothing here can fail on valid types, so nothing returns
//! a `Result`; the two places where the underlying crates' signatures say "may fail" state why
//! they cannot. This module imports nothing of capsign's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// An HMAC-SHA256 state.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Bytes of an HMAC-SHA256 tag and of every derived key.
pub(crate) const KEY_LEN: usize = 32;

/// A derived key: always exactly [`KEY_LEN`] bytes.
pub(crate) type DerivedKey = [u8; KEY_LEN];

/// An HMAC-SHA256 keyed once with `key`; clones of it skip the key schedule on the hot path.
pub(crate) fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104 hashes long ones, pads short ones): `hmac`'s
    // `new_from_slice` returns an error only for fixed-key MACs, never for `Hmac<D>`.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` from `ikm`, expand with `info` into one key.
pub(crate) fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8]) -> DerivedKey {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut okm = [0u8; KEY_LEN];
    // Expand fails only for outputs over 255 × 32 bytes; this one is 32.
    #[allow(clippy::expect_used)]
    hk.expand(info, &mut okm)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    okm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc_5869_case_1() {
        // RFC 5869 A.1, first 32 bytes of its 42-byte OKM.
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        assert_eq!(
            hex::encode(hkdf(&salt, &ikm, &info)),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mut mac = keyed_hmac(b"Jefe");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // An empty key is a key like any other, not an error.
        let _ = keyed_hmac(b"");
    }
}
