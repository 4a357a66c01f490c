//! The lean floor: the benchmark's `/auth` request answered by the least work that still does
//! it for real, as a measure of how much of capsign's own work any implementation must do.
//!
//! Per request, on the request it receives: the session JWT's header recognised by its
//! encoding, its MAC checked (the session secret), its claims read with serde_json (`sub`,
//! `exp`); the `capability` parameter percent-decoded and read with serde_json; the grant
//! cookie found, base64-decoded, its MAC computed over the same bytes capsign MACs and
//! compared in constant time (with a key of its own: capsign derives its cookie key, and the
//! cost is the same; the result is not acted on), its body decoded (format v1: varints,
//! prefix-compressed names into one buffer, no per-grant allocation); each requested
//! resource looked up in the sorted held grants by exact name (no wildcard patterns), a new
//! one granted when it starts with `doc:` (the benchmark's rules file), inserted in order; the
//! Ably JWT's claims written (capability JSON escaped in place), encoded and signed with the
//! real Ably key, so the answer verifies; the cookie's body encoded, sealed and set when
//! something was granted; a random request id. The other headers are capsign's, fixed.
//!
//! Left out, and each of them in capsign: wildcard and templated rules, the webhook, resource
//! and clientId validation, JSON escaping of names, the `nbf`, `iss` and `aud` claims and
//! repeated members, the cookie's key ids, age and order checks and deflated bodies, duplicate
//! parameters, CORS, Host and Fetch Metadata checks, held-set and cookie-budget limits, error
//! envelopes, metrics and logs. It is the request's essential work done plainly with the
//! crates capsign uses: not a bound on every conceivable implementation (hand-written parsers
//! could shave more), but what a server doing the request without any of capsign's checks
//! costs on this stack.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use capsign::capability::Operation;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, COOKIE, HeaderName, HeaderValue, SET_COOKIE};
use hyper::{HeaderMap, Request, Response, StatusCode};
use sha2::Sha256;
use smallvec::SmallVec;

type HmacSha256 = Hmac<Sha256>;

/// What the lean floor needs to know, from `bench/run` or `bench/profile` (the benchmark's
/// secrets).
#[derive(serde::Deserialize)]
pub(crate) struct LeanConfig {
    /// The HS256 secret of the session JWTs.
    session_secret: String,
    /// `name:secret`, as `ABLY_API_KEY`.
    ably_key: String,
    /// The grant cookie's name.
    cookie_name: String,
    /// What follows `name=value` in capsign's `Set-Cookie` (`; Path=/; ...`).
    cookie_attributes: String,
    /// The credential's lifetime, seconds.
    ttl_s: u64,
}

/// The lean floor, its keys prepared once.
pub(crate) struct Lean {
    session: HmacSha256,
    ably: HmacSha256,
    jwt_header: String,
    cookie_key: HmacSha256,
    cookie_name: String,
    cookie_attributes: String,
    ttl_s: u64,
    /// capsign's other response headers (content type, cache control, vary).
    headers: HeaderMap,
}

/// The session JWT headers capsign knows by their encoding (src/hs256.rs).
const USUAL_HEADERS: [&str; 2] = [
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
];
/// capsign's cookie MAC domain (format v1).
const DOMAIN_V1: &[u8] = b"capsign-grants-v1\0";
const MAC_LEN: usize = 32;

#[derive(serde::Deserialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// One held grant: its name's place in [`Held::names`], its operation bits, its approval.
struct Entry {
    start: usize,
    end: usize,
    bits: u32,
    approved: u64,
}

/// The held grants, sorted by name, on the stack.
#[derive(Default)]
struct Held {
    names: SmallVec<[u8; 512]>,
    entries: SmallVec<[Entry; 16]>,
}

/// The requested capability: (resource, operation bits), in the JSON's order, borrowed.
struct Asked<'a>(SmallVec<[(&'a str, u32); 4]>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Asked<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Asked<'a>, D::Error> {
        struct Ops;
        impl<'de> serde::de::Visitor<'de> for Ops {
            type Value = u32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("operation names")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<u32, A::Error> {
                let mut bits = 0;
                while let Some(op) = seq.next_element::<&str>()? {
                    let i = Operation::ALL
                        .iter()
                        .position(|o| o.name() == op)
                        .ok_or_else(|| serde::de::Error::custom("unknown operation"))?;
                    bits |= 1 << i;
                }
                Ok(bits)
            }
        }
        struct Bits(u32);
        impl<'de> serde::Deserialize<'de> for Bits {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bits, D::Error> {
                d.deserialize_seq(Ops).map(Bits)
            }
        }
        struct Map<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Map<'a> {
            type Value = Asked<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a capability object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Asked<'a>, A::Error> {
                let mut out = SmallVec::new();
                while let Some((name, Bits(bits))) = map.next_entry::<&str, Bits>()? {
                    out.push((name, bits));
                }
                Ok(Asked(out))
            }
        }
        d.deserialize_map(Map(std::marker::PhantomData))
    }
}

impl Held {
    fn name(&self, e: &Entry) -> &[u8] {
        self.names.get(e.start..e.end).unwrap_or_default()
    }

    fn find(&self, name: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.name(e).cmp(name))
    }

    fn insert(&mut self, at: usize, name: &[u8], bits: u32, approved: u64) {
        let start = self.names.len();
        self.names.extend_from_slice(name);
        let entry = Entry {
            start,
            end: self.names.len(),
            bits,
            approved,
        };
        self.entries.insert(at, entry);
    }
}

impl Lean {
    pub(crate) fn new(config: LeanConfig, headers: &HeaderMap) -> Result<Lean, String> {
        let key = |k: &[u8]| HmacSha256::new_from_slice(k).map_err(|e| e.to_string());
        let (name, secret) = config
            .ably_key
            .split_once(':')
            .ok_or("ably_key: expected name:secret")?;
        let header = format!(r#"{{"typ":"JWT","alg":"HS256","kid":"{name}"}}"#);
        let mut kept = HeaderMap::new();
        for (k, v) in headers {
            if k != SET_COOKIE && k.as_str() != "x-request-id" {
                kept.append(k.clone(), v.clone());
            }
        }
        Ok(Lean {
            session: key(config.session_secret.as_bytes())?,
            ably: key(secret.as_bytes())?,
            jwt_header: URL_SAFE_NO_PAD.encode(header),
            cookie_key: key(b"lean floor cookie key, 32 bytes.")?,
            cookie_name: config.cookie_name,
            cookie_attributes: config.cookie_attributes,
            ttl_s: config.ttl_s,
            headers: kept,
        })
    }

    /// The answer to one request; a 400 without a body when it is not the benchmark's.
    pub(crate) fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        self.work(req).unwrap_or_else(|| {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        })
    }

    fn work<B>(&self, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let headers = req.headers();

        // The session.
        let token = headers
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let (signed, sig) = token.rsplit_once('.')?;
        let (header, payload) = signed.split_once('.')?;
        if !USUAL_HEADERS.contains(&header) {
            return None;
        }
        let mut mac = self.session.clone();
        mac.update(signed.as_bytes());
        let mut tag = [0u8; 48];
        let n = URL_SAFE_NO_PAD.decode_slice(sig, &mut tag).ok()?;
        mac.verify_slice(tag.get(..n)?).ok()?;
        let mut claims_json = [0u8; 512];
        let n = URL_SAFE_NO_PAD
            .decode_slice(payload, &mut claims_json)
            .ok()?;
        let claims: Claims<'_> = serde_json::from_slice(claims_json.get(..n)?).ok()?;
        if claims.exp <= now {
            return None;
        }

        // The parameter.
        let query = req.uri().query().unwrap_or_default();
        let mut decoded = SmallVec::<[u8; 512]>::new();
        let asked = match query.split('&').find_map(|p| p.strip_prefix("capability=")) {
            Some(v) => {
                decoded.extend(percent_encoding::percent_decode_str(v));
                std::str::from_utf8(&decoded).ok()?
            }
            None => "{}",
        };
        let Asked(asked) = serde_json::from_str(asked).ok()?;

        // The cookie.
        let sealed = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|p| {
                let (n, v) = p.split_once('=')?;
                (n.trim() == self.cookie_name).then(|| v.trim())
            });
        let mut held = Held::default();
        let mut raw = [0u8; 1024];
        if let Some(sealed) = sealed {
            let n = URL_SAFE_NO_PAD.decode_slice(sealed, &mut raw).ok()?;
            let raw = raw.get(..n)?;
            let (body, tag) = raw.split_at_checked(raw.len().checked_sub(MAC_LEN)?)?;
            let mac = self.cookie_mac(body);
            // The cost of the check, with a key that is not capsign's: not acted on.
            std::hint::black_box(mac.verify_slice(tag).is_ok());
            // Version, key id, flags: no deflated body at the benchmark's size.
            if body.get(2) != Some(&0) {
                return None;
            }
            let mut r = Reader(body.get(3..)?);
            let issued = r.varint()?;
            if r.bytes()? != claims.sub.as_bytes() {
                return None;
            }
            let n = r.varint()?;
            let mut prev = (0, 0);
            for _ in 0..n {
                let shared = usize::try_from(r.varint()?).ok()?;
                let suffix = r.bytes()?;
                let start = held.names.len();
                if shared > prev.1 - prev.0 {
                    return None;
                }
                let mut copy = [0u8; 256];
                let copy = copy.get_mut(..shared)?;
                copy.copy_from_slice(held.names.get(prev.0..prev.0 + shared)?);
                held.names.extend_from_slice(copy);
                held.names.extend_from_slice(suffix);
                let bits = u32::try_from(r.varint()?).ok()?;
                let approved = issued.checked_sub(r.varint()?)?;
                let end = held.names.len();
                held.entries.push(Entry {
                    start,
                    end,
                    bits,
                    approved,
                });
                prev = (start, end);
            }
        }

        // What is new, decided, merged.
        let mut granted = false;
        for &(resource, bits) in &asked {
            match held.find(resource.as_bytes()) {
                Ok(i) if held.entries.get(i)?.bits & bits == bits => {}
                Ok(_) => return None,
                Err(at) if resource.starts_with("doc:") => {
                    held.insert(at, resource.as_bytes(), bits, now);
                    granted = true;
                }
                Err(_) => return None,
            }
        }

        // The Ably JWT.
        let mut claims_out = Vec::with_capacity(64 + held.names.len() + 64 * held.entries.len());
        let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
        for part in [
            "{\"iat\":",
            a.format(now),
            ",\"exp\":",
            b.format(now + self.ttl_s),
        ] {
            claims_out.extend_from_slice(part.as_bytes());
        }
        claims_out.extend_from_slice(b",\"x-ably-capability\":\"{");
        for (i, e) in held.entries.iter().enumerate() {
            if i > 0 {
                claims_out.push(b',');
            }
            claims_out.extend_from_slice(b"\\\"");
            claims_out.extend_from_slice(held.name(e));
            claims_out.extend_from_slice(b"\\\":[");
            let mut first = true;
            for (bit, op) in Operation::ALL.iter().enumerate() {
                if e.bits & (1 << bit) != 0 {
                    if !first {
                        claims_out.push(b',');
                    }
                    first = false;
                    claims_out.extend_from_slice(b"\\\"");
                    claims_out.extend_from_slice(op.name().as_bytes());
                    claims_out.extend_from_slice(b"\\\"");
                }
            }
            claims_out.push(b']');
        }
        claims_out.extend_from_slice(b"}\",\"x-ably-clientId\":\"");
        claims_out.extend_from_slice(claims.sub.as_bytes());
        claims_out.extend_from_slice(b"\"}");
        let mut jwt = String::with_capacity(self.jwt_header.len() + claims_out.len() * 4 / 3 + 48);
        jwt.push_str(&self.jwt_header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_out, &mut jwt);
        let mut mac = self.ably.clone();
        mac.update(jwt.as_bytes());
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut jwt);

        // The answer.
        let mut resp = Response::new(Full::new(Bytes::from(jwt)));
        *resp.headers_mut() = self.headers.clone();
        if granted {
            let mut body = Vec::with_capacity(64 + held.names.len() + 8 * held.entries.len());
            body.extend_from_slice(&[1, 0, 0]);
            put_varint(&mut body, now);
            put_varint(&mut body, claims.sub.len() as u64);
            body.extend_from_slice(claims.sub.as_bytes());
            put_varint(&mut body, held.entries.len() as u64);
            let mut prev: &[u8] = &[];
            for e in &held.entries {
                let name = held.name(e);
                let shared = name.iter().zip(prev).take_while(|(x, y)| x == y).count();
                put_varint(&mut body, shared as u64);
                let suffix = name.get(shared..)?;
                put_varint(&mut body, suffix.len() as u64);
                body.extend_from_slice(suffix);
                put_varint(&mut body, u64::from(e.bits));
                put_varint(&mut body, now.saturating_sub(e.approved));
                prev = name;
            }
            let tag = self.cookie_mac(&body).finalize().into_bytes();
            body.extend_from_slice(&tag);
            let mut value = String::with_capacity(
                self.cookie_name.len() + body.len() * 4 / 3 + 8 + self.cookie_attributes.len(),
            );
            value.push_str(&self.cookie_name);
            value.push('=');
            URL_SAFE_NO_PAD.encode_string(&body, &mut value);
            value.push_str(&self.cookie_attributes);
            let value = HeaderValue::from_maybe_shared(Bytes::from(value)).ok()?;
            resp.headers_mut().insert(SET_COOKIE, value);
        }
        let mut id = [0u8; 32];
        hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut id).ok()?;
        resp.headers_mut().insert(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_bytes(&id).ok()?,
        );
        Some(resp)
    }

    /// The MAC over what capsign MACs for a cookie: domain, purpose, name, payload.
    fn cookie_mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.cookie_key.clone();
        mac.update(DOMAIN_V1);
        mac.update(&[b'C', self.cookie_name.len() as u8]);
        mac.update(self.cookie_name.as_bytes());
        mac.update(payload);
        mac
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
}
