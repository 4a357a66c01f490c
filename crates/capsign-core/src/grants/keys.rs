//! The grant cookie's key ring: MAC keys derived from `CAPSIGN_COOKIE_KEY`'s secrets with
//! HKDF-SHA256 (`docs/grant-cookie.md`); one seals, all of them open.

use std::fmt;

use crate::crypto::{HmacSha256, hkdf, keyed_hmac};
use crate::settings::CookieKeys;

const HKDF_SALT: &[u8] = b"capsign";
const HKDF_INFO: &[u8] = b"capsign grant cookie v1 hmac-sha256";

/// A secret from which the cookie MAC key is derived. `Debug` never shows it.
#[derive(Clone)]
pub struct GrantKey {
    pub(super) id: u8,
    pub(super) mac: HmacSha256,
}

impl GrantKey {
    /// Derives the MAC key for key id `id` from `secret` (at least 32 bytes; the settings
    /// check).
    pub fn derive(id: u8, secret: &[u8]) -> GrantKey {
        GrantKey {
            id,
            mac: keyed_hmac(&hkdf(HKDF_SALT, secret, HKDF_INFO)),
        }
    }

    /// The key id written into sealed values.
    pub fn id(&self) -> u8 {
        self.id
    }
}

impl fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantKey {{ id: {}, key: <redacted> }}", self.id)
    }
}

/// The keys that open grants: one signs, all of them verify. The signing key is not an
/// `Option`, so nothing is ever sealed without a MAC.
#[derive(Debug, Clone)]
pub struct GrantKeys {
    pub(super) signing: GrantKey,
    pub(super) others: Vec<GrantKey>,
}

impl GrantKeys {
    /// A key ring; `None` when two keys share an id.
    pub fn new(signing: GrantKey, others: Vec<GrantKey>) -> Option<GrantKeys> {
        let mut ids: Vec<u8> = std::iter::once(signing.id)
            .chain(others.iter().map(|k| k.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        (ids.len() == others.len() + 1).then_some(GrantKeys { signing, others })
    }

    /// The key ring of `CAPSIGN_COOKIE_KEY`, whose ids the settings checked.
    pub fn from_settings(keys: &CookieKeys) -> GrantKeys {
        let (id, secret) = keys.signing();
        GrantKeys {
            signing: GrantKey::derive(id, secret),
            others: keys
                .all()
                .skip(1)
                .map(|(id, secret)| GrantKey::derive(id, secret))
                .collect(),
        }
    }

    pub(super) fn find(&self, id: u8) -> Option<&GrantKey> {
        std::iter::once(&self.signing)
            .chain(&self.others)
            .find(|k| k.id == id)
    }
}
