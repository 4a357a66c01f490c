//! The sealed form of a grant set: the grant cookie (format v1) and the `X-Capsign-Grants`
//! header (format v2), described in the parent module, and the cookie's `Set-Cookie` value.
//!
//! Every value [`Sealer::encode`] accepts opens again with the same sealer: it refuses a set
//! of more than the sealer's grant limit, a body over the inflate limit, and a sealed value
//! over [`MAX_SEALED_LEN`], which are exactly the limits `open` enforces.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;

use super::GrantSet;
use super::codec::{decode_body, deflate, encode_body};
use super::keys::{GrantKey, GrantKeys};
use crate::crypto::HmacSha256;
use crate::set_cookie::{CookieSpec, SetCookie};
use crate::settings::{CookieSettings, SameSite};

/// The budget for the whole `Set-Cookie` header value. Browsers drop a cookie whose name and
/// value exceed 4096 bytes without a word; capsign never sends one that large.
pub const SET_COOKIE_BUDGET: usize = 4096;

/// The format version of grant cookies.
pub const VERSION: u8 = 1;

/// The format version of `X-Capsign-Grants` values: v1's payload, with a MAC that binds the
/// cookie name too (v1 headers bound an empty name, so they opened in any deployment that
/// shared the cookie key).
pub const HEADER_VERSION: u8 = 2;

/// The most grants a set holds unless the settings say otherwise (`CAPSIGN_MAX_GRANTS`).
pub const DEFAULT_MAX_GRANTS: usize = 256;

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
const DOMAIN_V1: &[u8] = b"capsign-grants-v1\0";
const DOMAIN_V2: &[u8] = b"capsign-grants-v2\0";
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

    /// The format version written and required for this purpose.
    const fn version(self) -> u8 {
        match self {
            Purpose::Cookie => VERSION,
            Purpose::Header => HEADER_VERSION,
        }
    }
}

/// Why a grant set cannot be sealed: it would not open again. The flow applies the cookie
/// overflow policy (refuse the request, or evict the oldest grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// More grants than the sealer's limit.
    #[error("{held} grants; at most {max} may be held")]
    TooManyGrants {
        /// Grants in the set.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// The body or the sealed value is over the limits `open` enforces.
    #[error("sealed grants too large ({bytes} bytes, at most {limit})")]
    TooLarge {
        /// The size that is over its limit.
        bytes: usize,
        /// The limit: the encoded body's (64 KiB) or the sealed value's (4096 bytes).
        limit: usize,
    },
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
    /// More grants than the limit.
    #[error("more grants than the limit")]
    TooManyGrants,
    /// Issued too far in the future.
    #[error("grants issued in the future")]
    FromFuture,
    /// Older than the maximum age.
    #[error("grants expired")]
    Expired,
}

/// A grant set as it came out of a sealed value, with the seal's issue time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The grants.
    pub grants: GrantSet,
    /// When the value was sealed (Unix seconds).
    pub issued_at: u64,
    /// The id of the key that opened it (metrics: has a key rotation finished?).
    pub key_id: u8,
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

/// Seals and opens grant sets for one cookie name with one key ring, and writes the grant
/// cookie's `Set-Cookie` value.
#[derive(Debug, Clone)]
pub struct Sealer {
    keys: GrantKeys,
    /// The grant cookie: `Secure`, the configured `SameSite`, `Max-Age` the grant maximum age.
    cookie: CookieSpec,
    max_grants: usize,
}

/// The encoded payload of a grant set, before the MAC: sealed once per purpose. Made only by
/// [`Sealer::encode`], which writes its `HEADER_LEN`-byte header first.
pub struct Payload(Vec<u8>);

impl Payload {
    /// The header and the body.
    fn split(&self) -> (&[u8; HEADER_LEN], &[u8]) {
        #[allow(clippy::expect_used)]
        self.0
            .split_first_chunk()
            .expect("a payload starts with its header: Sealer::encode writes it first")
    }
}

impl Sealer {
    /// A sealer for `cookie_name` (at most 255 bytes; the settings check at most 64), whose
    /// cookie is `SameSite=Lax` with a `Max-Age` of a day.
    pub fn new(keys: GrantKeys, cookie_name: impl Into<String>) -> Sealer {
        Sealer {
            keys,
            cookie: CookieSpec {
                name: cookie_name.into(),
                same_site: SameSite::Lax,
                secure: true,
                max_age_s: Some(24 * 3600),
            },
            max_grants: DEFAULT_MAX_GRANTS,
        }
    }

    /// The same sealer with another grant limit.
    pub fn with_max_grants(self, max_grants: usize) -> Sealer {
        Sealer { max_grants, ..self }
    }

    /// The most grants a sealed set may hold.
    pub fn max_grants(&self) -> usize {
        self.max_grants
    }

    /// The sealer of the grant cookie settings.
    pub fn from_settings(cookie: &CookieSettings) -> Sealer {
        Sealer {
            keys: GrantKeys::from_settings(&cookie.keys),
            cookie: CookieSpec {
                name: cookie.name.clone(),
                same_site: cookie.same_site,
                secure: true,
                max_age_s: Some(cookie.max_age_s),
            },
            max_grants: cookie.max_grants,
        }
    }

    /// The `Set-Cookie` value for a sealed cookie value: `HttpOnly; Secure; Path=/`, the
    /// configured `SameSite` (`Lax` by default) and a `Max-Age` of the grant maximum age,
    /// written by the one `Set-Cookie` writer ([`CookieSpec`]).
    pub fn set_cookie(&self, value: &str) -> String {
        self.cookie.with_value(value).into_header()
    }

    /// The length of [`Sealer::set_cookie`] for a value of `value_len` bytes.
    pub fn set_cookie_len(&self, value_len: usize) -> usize {
        self.cookie.len(value_len)
    }

    /// The cookie name bound into cookie MACs.
    pub fn cookie_name(&self) -> &str {
        &self.cookie.name
    }

    /// Encodes a grant set for `client_id` at `issued_at` (Unix seconds).
    ///
    /// # Errors
    ///
    /// A set that would not open again: over the grant limit, or too large once encoded.
    pub fn encode(
        &self,
        client_id: &str,
        issued_at: u64,
        grants: &GrantSet,
    ) -> Result<Payload, SealError> {
        if grants.len() > self.max_grants {
            return Err(SealError::TooManyGrants {
                held: grants.len(),
                max: self.max_grants,
            });
        }
        let key_id = self.keys.signing.id;
        // The header first (the version byte is the purpose's; `seal` writes it), then the
        // body, in the one buffer that becomes the payload unless deflating pays.
        let mut out = Vec::with_capacity(HEADER_LEN + 32 + client_id.len() + grants.len() * 16);
        out.extend_from_slice(&[0, key_id, 0]);
        encode_body(&mut out, client_id, issued_at, grants);
        let body_len = out.len() - HEADER_LEN;
        if body_len > MAX_BODY_LEN {
            return Err(SealError::TooLarge {
                bytes: body_len,
                limit: MAX_BODY_LEN,
            });
        }
        if body_len >= DEFLATE_FROM {
            let deflated = deflate(out.split_at(HEADER_LEN).1).filter(|d| d.len() < body_len);
            if let Some(d) = deflated {
                out.truncate(HEADER_LEN);
                out.extend_from_slice(&d);
                if let Some(flags) = out.get_mut(2) {
                    *flags = FLAG_DEFLATE;
                }
            }
        }
        let raw_len = out.len() + MAC_LEN;
        let sealed_len = (4 * raw_len).div_ceil(3);
        if sealed_len > MAX_SEALED_LEN {
            return Err(SealError::TooLarge {
                bytes: sealed_len,
                limit: MAX_SEALED_LEN,
            });
        }
        Ok(Payload(out))
    }

    /// The sealed text of `payload` for `purpose`.
    pub fn seal(&self, purpose: Purpose, payload: &Payload) -> String {
        let mut out = String::with_capacity(self.sealed_len(payload));
        self.seal_into(purpose, payload, &mut out);
        out
    }

    /// The grant cookie for `payload`, sealed straight into its `Set-Cookie` value (see
    /// [`Sealer::set_cookie`]).
    pub fn seal_cookie(&self, payload: &Payload) -> SetCookie {
        self.cookie.write(self.sealed_len(payload), |out| {
            self.seal_into(Purpose::Cookie, payload, out);
        })
    }

    /// Appends the sealed text of `payload` for `purpose` to `out`: base64url of the header
    /// (with the purpose's version byte), the body and the MAC, written in three runs at
    /// multiples of three bytes, so nothing is copied first.
    fn seal_into(&self, purpose: Purpose, payload: &Payload, out: &mut String) {
        let (head, body) = payload.split();
        let mut head = *head;
        head[0] = purpose.version();
        let mut mac = self.mac(&self.keys.signing, purpose, &head);
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        // HEADER_LEN is 3: its four characters end on a boundary.
        URL_SAFE_NO_PAD.encode_string(head, out);
        let (aligned, rest) = body.split_at(body.len() / 3 * 3);
        URL_SAFE_NO_PAD.encode_string(aligned, out);
        let mut tail = [0u8; 2 + MAC_LEN];
        for (t, b) in tail.iter_mut().zip(rest.iter().chain(tag.iter())) {
            *t = *b;
        }
        // `rest` is what is left of the body after its multiples of three: at most 2 bytes.
        let (tail, _) = tail.split_at(rest.len() + MAC_LEN);
        URL_SAFE_NO_PAD.encode_string(tail, out);
    }

    /// The length of [`Sealer::seal`]'s value for `payload`, without computing its MAC.
    pub fn sealed_len(&self, payload: &Payload) -> usize {
        // Unpadded base64 of the payload and the MAC; `None` only past `usize::MAX / 4 * 3`.
        base64::encoded_len(payload.0.len() + MAC_LEN, false).unwrap_or(usize::MAX)
    }

    /// The id of the key that seals (a value opened by another key is resealed).
    pub fn signing_key_id(&self) -> u8 {
        self.keys.signing.id
    }

    /// Encodes and seals in one step.
    ///
    /// # Errors
    ///
    /// See [`Sealer::encode`].
    pub fn seal_grants(
        &self,
        purpose: Purpose,
        client_id: &str,
        issued_at: u64,
        grants: &GrantSet,
    ) -> Result<String, SealError> {
        Ok(self.seal(purpose, &self.encode(client_id, issued_at, grants)?))
    }

    /// The MAC state over `payload` for `purpose`, ready to finalize or verify.
    fn mac(&self, key: &GrantKey, purpose: Purpose, payload: &[u8]) -> HmacSha256 {
        let mut mac = key.mac.clone();
        // Both bind the cookie name, which names the deployment; the purpose tag and the
        // domain keep a cookie from opening as a header and the other way round.
        let name = self.cookie.name.as_bytes();
        mac.update(match purpose {
            Purpose::Cookie => DOMAIN_V1,
            Purpose::Header => DOMAIN_V2,
        });
        mac.update(&[purpose.tag(), name.len().min(255) as u8]);
        mac.update(name);
        mac.update(payload);
        mac
    }

    /// Opens a sealed value for whoever it belongs to, for support (`capsign inspect`): the
    /// same checks as [`Sealer::open`] up to and including the MAC and the body, but no check
    /// of the clientId or the times, which the caller shows instead. Returns the holder's
    /// clientId (lossy UTF-8) and what opened.
    ///
    /// # Errors
    ///
    /// The first failed check, as [`Sealer::open`] gives it.
    pub fn inspect(&self, purpose: Purpose, sealed: &str) -> Result<(String, Opened), GrantsError> {
        let mut holder = String::new();
        let opened = self.open_any(purpose, sealed, |h| {
            holder = String::from_utf8_lossy(h).into_owned();
            Ok(())
        })?;
        Ok((holder, opened))
    }

    /// Opens a sealed value for `client_id` (see the parent module for the checks).
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
        let opened = self.open_any(purpose, sealed, |holder| {
            if holder == client_id.as_bytes() {
                Ok(())
            } else {
                Err(GrantsError::OtherClient)
            }
        })?;
        if opened.issued_at > limits.now.saturating_add(limits.future_skew) {
            return Err(GrantsError::FromFuture);
        }
        if limits.now.saturating_sub(opened.issued_at) > limits.max_age {
            return Err(GrantsError::Expired);
        }
        Ok(opened)
    }
}

impl Sealer {
    /// The checks of [`Sealer::open`] up to the body: length, base64, version, key id, MAC,
    /// inflate, a canonical body within the grant limit; then `holder` is shown the clientId
    /// the value was sealed for, and may refuse it.
    fn open_any(
        &self,
        purpose: Purpose,
        sealed: &str,
        holder: impl FnOnce(&[u8]) -> Result<(), GrantsError>,
    ) -> Result<Opened, GrantsError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(GrantsError::TooLong);
        }
        crate::scratch::with_bytes(|raw| self.open_raw(purpose, sealed, raw, holder))
    }

    /// [`Sealer::open_any`] with `raw`, an empty buffer for the decoded value.
    fn open_raw(
        &self,
        purpose: Purpose,
        sealed: &str,
        raw: &mut Vec<u8>,
        holder: impl FnOnce(&[u8]) -> Result<(), GrantsError>,
    ) -> Result<Opened, GrantsError> {
        URL_SAFE_NO_PAD
            .decode_vec(sealed, raw)
            .map_err(|_| GrantsError::Base64)?;
        if raw.len() < HEADER_LEN + MAC_LEN {
            return Err(GrantsError::TooShort);
        }
        let (payload, tag) = raw.split_at(raw.len() - MAC_LEN);
        let (&[version, key_id, flags], body) = payload
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(GrantsError::TooShort)?;
        if version != purpose.version() {
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
        let (sealed_for, opened) = decode_body(body, self.max_grants, key_id)?;
        holder(sealed_for)?;
        Ok(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{put_bytes, put_varint};
    use super::*;
    use crate::capability::CapabilitySet;
    use crate::capability::{OpSet, Resource};

    fn sealer() -> Sealer {
        let keys = GrantKeys::new(GrantKey::derive(1, &[7u8; 32]), vec![]).unwrap();
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

    /// A body of grants given as (shared prefix length, suffix), each with `subscribe`.
    fn raw_body(grants: &[(usize, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, 1000);
        put_bytes(&mut out, b"alice");
        put_varint(&mut out, grants.len() as u64);
        for (shared, suffix) in grants {
            put_varint(&mut out, *shared as u64);
            put_bytes(&mut out, suffix);
            put_varint(
                &mut out,
                u64::from(OpSet::from_names("r", ["subscribe"]).unwrap().bits()),
            );
            put_varint(&mut out, 0);
        }
        out
    }

    proptest::proptest! {
        /// Names must come strictly increasing: the decoder's shortcut (the first byte after
        /// the shared prefix) decides as a comparison of the whole names would.
        #[test]
        fn names_must_increase(
            grants in proptest::collection::vec(
                (0usize..4, proptest::collection::vec(proptest::sample::select(b"ab:".to_vec()), 0..4)),
                1..6,
            )
        ) {
            let grants: Vec<(usize, &[u8])> =
                grants.iter().map(|(n, s)| (*n, s.as_slice())).collect();
            // The reference: build every name, then check each is valid and above the last.
            let mut names: Vec<Vec<u8>> = Vec::new();
            let mut expected = true;
            for (shared, suffix) in &grants {
                let prev = names.last().cloned().unwrap_or_default();
                let Some(head) = prev.get(..*shared) else {
                    expected = false;
                    break;
                };
                let name = [head, suffix].concat();
                let valid = std::str::from_utf8(&name).is_ok_and(|t| Resource::new(t).is_ok());
                if !valid || names.last().is_some_and(|p| name <= *p) {
                    expected = false;
                    break;
                }
                names.push(name);
            }
            let body = raw_body(&grants);
            let decoded = decode_body(&body, 100, 1);
            proptest::prop_assert_eq!(decoded.is_ok(), expected, "{:?}", decoded.err());
            if let Ok((_, opened)) = decoded {
                let got: Vec<&str> = opened.grants.iter().map(|(r, _)| r.as_str()).collect();
                let want: Vec<String> =
                    names.iter().map(|n| String::from_utf8(n.clone()).unwrap()).collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn round_trip() {
        let s = sealer();
        let g = set(
            r#"{"chat:a":["publish","subscribe"],"chat:b":["*"],"[meta]x":["subscribe"]}"#,
            990,
        );
        let sealed = s.seal_grants(Purpose::Cookie, "alice", 1000, &g).unwrap();
        let opened = s
            .open(Purpose::Cookie, &sealed, "alice", limits(1000))
            .unwrap();
        assert_eq!(opened.grants, g);
        assert_eq!(opened.issued_at, 1000);
    }

    #[test]
    fn a_cookie_sealed_into_its_set_cookie_is_the_sealed_value() {
        // Every body length modulo 3 (the base64 runs are cut at multiples of three), and a
        // body large enough to be deflated.
        let s = sealer();
        let mut g = GrantSet::new();
        let mut deflated = 0;
        for n in 0..80u32 {
            let payload = s.encode("alice", 1000, &g).unwrap();
            deflated += usize::from(payload.0.get(2) == Some(&FLAG_DEFLATE));
            let cookie = s.seal_cookie(&payload);
            let value = s.seal(Purpose::Cookie, &payload);
            assert_eq!(cookie.value(), value, "{n} grants");
            assert_eq!(cookie.header(), s.set_cookie(&value));
            let opened = s.open(Purpose::Cookie, cookie.value(), "alice", limits(1000));
            assert_eq!(opened.unwrap().grants, g);
            let header = cookie.into_header();
            assert_eq!(header.len(), header.capacity(), "exact: {n} grants");
            g.add(
                &CapabilitySet::from_json(&format!(
                    r#"{{"room:{n:03}:{}":["subscribe"]}}"#,
                    "x".repeat(20)
                ))
                .unwrap(),
                990,
            );
        }
        assert!(deflated > 10, "large sets are deflated: {deflated}");
    }

    #[test]
    fn sealed_len_is_the_length_of_the_sealed_value() {
        let s = sealer();
        let mut g = GrantSet::new();
        for n in 0..40 {
            let payload = s.encode("alice", 1000, &g).unwrap();
            assert_eq!(
                s.sealed_len(&payload),
                s.seal(Purpose::Cookie, &payload).len(),
                "{n} grants"
            );
            g.add(
                &CapabilitySet::from_json(&format!(r#"{{"chat:{n}":["publish"]}}"#)).unwrap(),
                990,
            );
        }
    }

    #[test]
    fn bound_to_client_purpose_name_and_time() {
        let s = sealer();
        let g = set(r#"{"chat:a":["publish"]}"#, 1000);
        let sealed = s.seal_grants(Purpose::Cookie, "alice", 1000, &g).unwrap();
        assert_eq!(
            s.open(Purpose::Cookie, &sealed, "bob", limits(1000)),
            Err(GrantsError::OtherClient)
        );
        assert_eq!(
            s.open(Purpose::Header, &sealed, "alice", limits(1000)),
            Err(GrantsError::Version(VERSION))
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

    /// Issue 16 (7): an `X-Capsign-Grants` value from one deployment opened in another that
    /// shared the cookie key but used another cookie name (the header's MAC bound an empty
    /// name). Format v2 binds the cookie name; a v1 header value no longer opens.
    #[test]
    fn grants_header_is_bound_to_the_cookie_name() {
        let s = sealer();
        let g = set(r#"{"chat:a":["publish"]}"#, 1000);
        let header = s.seal_grants(Purpose::Header, "alice", 1000, &g).unwrap();
        assert!(
            s.open(Purpose::Header, &header, "alice", limits(1000))
                .is_ok()
        );
        let other_name = Sealer::new(s.keys.clone(), "__Host-other-app");
        assert_eq!(
            other_name.open(Purpose::Header, &header, "alice", limits(1000)),
            Err(GrantsError::Mac)
        );
        assert_eq!(
            s.open(Purpose::Cookie, &header, "alice", limits(1000)),
            Err(GrantsError::Version(HEADER_VERSION))
        );
        // A v1 header value, as this build's predecessor sealed it: MAC over an empty name.
        let payload = s.encode("alice", 1000, &g).unwrap();
        let mut raw = payload.0.clone();
        raw[0] = 1;
        let mut mac = s.keys.signing.mac.clone();
        mac.update(DOMAIN_V1);
        mac.update(b"H\0");
        mac.update(&raw);
        raw.extend_from_slice(&mac.finalize().into_bytes());
        let v1 = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            s.open(Purpose::Header, &v1, "alice", limits(1000)),
            Err(GrantsError::Version(1))
        );
    }

    /// Issue 16 (4): capsign sealed sets it could not open again (a body inflating past the
    /// opener's limit, or more grants than it accepts). Every value `seal` hands out opens, and
    /// `seal` refuses exactly what `open` would.
    #[test]
    fn every_sealed_value_opens_at_the_limits() {
        let s = sealer().with_max_grants(300);
        // Distinct first bytes defeat the prefix sharing; long repeated tails deflate to
        // almost nothing: a body far over the inflate limit in a small sealed value.
        let wide = |n: usize, tail: usize| {
            let mut g = GrantSet::new();
            for i in 0..n {
                let name = format!("{i:04}{}", "z".repeat(tail));
                g.add(
                    &CapabilitySet::from_json(&format!(r#"{{"{name}":["subscribe"]}}"#)).unwrap(),
                    1000,
                );
            }
            g
        };
        let over_body = wide(200, 500);
        assert!(matches!(
            s.seal_grants(Purpose::Cookie, "u", 1000, &over_body),
            Err(SealError::TooLarge { bytes, limit: MAX_BODY_LEN }) if bytes > MAX_BODY_LEN
        ));
        assert!(matches!(
            s.seal_grants(Purpose::Cookie, "u", 1000, &wide(301, 0)),
            Err(SealError::TooManyGrants {
                held: 301,
                max: 300
            })
        ));
        for (n, tail) in [(300, 0), (120, 500), (1, 508), (0, 0)] {
            let g = wide(n, tail);
            for purpose in [Purpose::Cookie, Purpose::Header] {
                match s.seal_grants(purpose, "u", 1000, &g) {
                    Ok(sealed) => {
                        assert!(sealed.len() <= MAX_SEALED_LEN);
                        let opened = s.open(purpose, &sealed, "u", limits(1000)).unwrap();
                        assert_eq!(opened.grants, g, "{n} × {tail}");
                    }
                    Err(SealError::TooLarge { bytes, limit }) => {
                        assert!(
                            [MAX_SEALED_LEN, MAX_BODY_LEN].contains(&limit) && bytes > limit,
                            "{n} × {tail}"
                        )
                    }
                    Err(e) => panic!("{n} × {tail}: {e}"),
                }
            }
        }
        // A sealer with a lower limit refuses to open a larger set (before decoding it).
        let sealed = s.seal_grants(Purpose::Cookie, "u", 1000, &wide(300, 0));
        let lower = sealer().with_max_grants(299);
        assert_eq!(
            lower.open(Purpose::Cookie, &sealed.unwrap(), "u", limits(1000)),
            Err(GrantsError::TooManyGrants)
        );
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let s = sealer();
        let g = set(r#"{"chat:a":["publish"],"chat:b":["subscribe"]}"#, 1000);
        let sealed = s.seal_grants(Purpose::Cookie, "alice", 1000, &g).unwrap();
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
        let before = Sealer::new(GrantKeys::new(old.clone(), vec![]).unwrap(), "c");
        let after = Sealer::new(GrantKeys::new(new.clone(), vec![old]).unwrap(), "c");
        let only_new = Sealer::new(GrantKeys::new(new, vec![]).unwrap(), "c");
        let g = set(r#"{"a":["publish"]}"#, 1000);
        let sealed = before.seal_grants(Purpose::Cookie, "u", 1000, &g).unwrap();
        assert!(
            after
                .open(Purpose::Cookie, &sealed, "u", limits(1000))
                .is_ok()
        );
        assert_eq!(
            only_new.open(Purpose::Cookie, &sealed, "u", limits(1000)),
            Err(GrantsError::UnknownKey(1))
        );
        let resealed = after.seal_grants(Purpose::Cookie, "u", 1000, &g).unwrap();
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
        let k = GrantKey::derive(3, &[0u8; 32]);
        assert!(GrantKeys::new(k.clone(), vec![k]).is_none());
    }

    /// The grant cookie's attributes (the writer itself is tested in `set_cookie`).
    #[test]
    fn the_grant_cookie_is_secure_with_the_configured_same_site_and_max_age() {
        for same_site in [SameSite::Strict, SameSite::Lax, SameSite::None] {
            let mut s = sealer();
            s.cookie.same_site = same_site;
            s.cookie.max_age_s = Some(60);
            let header = s.set_cookie("AQEA_x-y");
            assert_eq!(
                header,
                format!(
                    "__Host-capsign=AQEA_x-y; HttpOnly; SameSite={}; Secure; Path=/; Max-Age=60",
                    same_site.as_str()
                )
            );
            assert_eq!(s.set_cookie_len(8), header.len());
        }
    }
}
