//! The parameters of `/auth` (query, form or JSON body) and the bounded body read.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::BoxError;
use super::error::Reject;
use crate::capability::CapabilitySet;
use crate::flow::AuthParams;
use crate::identity::ClientId;
use crate::settings::Format;

/// Reads a body of at most `max` bytes. Its time is bounded by the transport, whose body fails
/// with [`BodyTimedOut`] when `CAPSIGN_BODY_TIMEOUT` passes (a body already in memory, as in
/// AWS Lambda or a Worker, needs none).
pub(super) async fn read_body<B>(headers: &HeaderMap, body: B, max: usize) -> Result<Bytes, Reject>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = || Reject::BodyTooLarge { limit: max };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) if e.is::<BodyTimedOut>() => Err(Reject::BodyTimeout),
        Err(e) => Err(Reject::bad(format!("cannot read request body: {e}"))),
        Ok(collected) => Ok(collected.to_bytes()),
    }
}

/// The error a transport's request body fails with when `CAPSIGN_BODY_TIMEOUT` passes before
/// its end: the handler answers `408`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within CAPSIGN_BODY_TIMEOUT")]
pub struct BodyTimedOut;

/// The members of a JSON object in order, duplicates kept, each value as its text.
struct Members(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The parameters as sent, before validation.
#[derive(Debug, Default)]
pub(super) struct RawParams {
    capability: Option<Value>,
    /// The value and the name it came under (`clientId` or `client_id`).
    client_id: Option<(String, &'static str)>,
    ttl: Option<Value>,
    format: Option<String>,
}

/// `clientId` and `client_id` name one parameter (SDKs and apps send either, some both): the
/// same value under both names is that value; different values, or either name twice, are
/// refused.
fn set_client_id(
    slot: &mut Option<(String, &'static str)>,
    name: &str,
    value: String,
) -> Result<(), Reject> {
    let name = if name == "clientId" {
        "clientId"
    } else {
        "client_id"
    };
    match slot {
        None => {
            *slot = Some((value, name));
            Ok(())
        }
        Some((_, first)) if *first == name => Err(Reject::bad(format!(
            "parameter {name} given more than once"
        ))),
        Some((first_value, _)) if *first_value == value => Ok(()),
        Some(_) => Err(Reject::bad(
            "parameters clientId and client_id differ; send one clientId",
        )),
    }
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), Reject> {
    if slot.is_some() {
        return Err(Reject::bad(format!(
            "parameter {name} given more than once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

/// The name/value pairs of an `application/x-www-form-urlencoded` text (a query string, a form
/// body, the demo login), decoded exactly as `form_urlencoded::parse` decodes them (a test
/// compares), each decoded value allocated once, at its final size, and only when it has
/// something to decode. Kept over the crate's on a measurement (`bench/icount.py`,
/// `cargo bench --bench allocations`): the crate's costs 1.2% more instructions and two more
/// heap allocations a request, the whole of the allocation budget's margin.
pub(super) fn form_pairs(bytes: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    bytes
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                // Past the `=` at `i`.
                Some(i) => (pair.split_at(i).0, pair.split_at(i + 1).1),
                None => (pair, &[][..]),
            };
            (form_decode(name), form_decode(value))
        })
}

/// One form-encoded name or value: `+` is a space, `%XX` a byte, anything else itself; then
/// UTF-8, invalid sequences replaced.
fn form_decode(input: &[u8]) -> Cow<'_, str> {
    if !input.iter().any(|&b| b == b'+' || b == b'%') {
        return String::from_utf8_lossy(input);
    }
    let hex = |b: &u8| char::from(*b).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    // Runs without `+` or `%` are copied whole.
    while let Some(at) = rest.iter().position(|&b| b == b'+' || b == b'%') {
        let (run, tail) = rest.split_at(at);
        out.extend_from_slice(run);
        rest = match tail {
            [b'+', after @ ..] => {
                out.push(b' ');
                after
            }
            [b'%', high, low, after @ ..] => match (hex(high), hex(low)) {
                (Some(high), Some(low)) => {
                    // Two hex digits: at most 255.
                    out.push((high * 16 + low) as u8);
                    after
                }
                _ => {
                    out.push(b'%');
                    tail.split_at(1).1
                }
            },
            // `tail` starts at the `+` or `%` found.
            _ => {
                out.push(b'%');
                tail.split_at(1).1
            }
        };
    }
    out.extend_from_slice(rest);
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

impl RawParams {
    pub(super) fn read_form(&mut self, bytes: &[u8]) -> Result<(), Reject> {
        for (k, v) in form_pairs(bytes) {
            match &*k {
                "capability" => set_once(&mut self.capability, &k, Value::String(v.into_owned()))?,
                "clientId" | "client_id" => set_client_id(&mut self.client_id, &k, v.into_owned())?,
                "ttl" => set_once(&mut self.ttl, &k, Value::String(v.into_owned()))?,
                "format" => set_once(&mut self.format, &k, v.into_owned())?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a JSON object body. A parameter named twice is refused, as in a query string
    /// (serde_json's maps keep the last silently), and a `capability` object is read from its
    /// text, so a resource named twice in it is refused as in the text form.
    pub(super) fn read_json(&mut self, bytes: &[u8]) -> Result<(), Reject> {
        let members: Members = serde_json::from_slice(bytes).map_err(|e| {
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
                Reject::bad("JSON request body must be an object")
            } else {
                Reject::bad(format!("request body is not valid JSON: {e}"))
            }
        })?;
        for (k, raw) in members.0 {
            let value = || -> Result<Value, Reject> {
                serde_json::from_str(raw.get())
                    .map_err(|e| Reject::bad(format!("parameter {k}: {e}")))
            };
            let string = || match value()? {
                Value::String(s) => Ok(s),
                _ => Err(Reject::bad(format!("parameter {k} must be a string"))),
            };
            match k.as_str() {
                "capability" if raw.get().starts_with('{') => set_once(
                    &mut self.capability,
                    &k,
                    Value::String(raw.get().to_owned()),
                )?,
                "capability" => set_once(&mut self.capability, &k, value()?)?,
                "clientId" | "client_id" => set_client_id(&mut self.client_id, &k, string()?)?,
                "ttl" => set_once(&mut self.ttl, &k, value()?)?,
                "format" => set_once(&mut self.format, &k, string()?)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Body parameters win over the URL's, as ably-js keeps the authUrl's own query on POST.
    pub(super) fn override_with(&mut self, other: RawParams) {
        self.capability = other.capability.or(self.capability.take());
        self.client_id = other.client_id.or(self.client_id.take());
        self.ttl = other.ttl.or(self.ttl.take());
        self.format = other.format.or(self.format.take());
    }

    pub(super) fn parse(self) -> Result<AuthParams, Reject> {
        let capability = match self.capability {
            None => None,
            // A JSON body's object arrives as its text (see `read_json`).
            Some(Value::String(s)) => Some(CapabilitySet::from_json(&s)),
            Some(_) => return Err(Reject::bad("capability must be a JSON object or its text")),
        }
        .transpose()
        .map_err(|e| Reject::bad(e.to_string()))?;
        let bad_ttl = || Reject::InvalidTtl;
        let ttl_ms = match self.ttl {
            None => None,
            Some(Value::String(s)) => Some(s.trim().parse::<u64>().map_err(|_| bad_ttl())?),
            Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(bad_ttl)?),
            Some(_) => return Err(bad_ttl()),
        };
        if ttl_ms == Some(0) {
            return Err(bad_ttl());
        }
        let format = match self.format.as_deref() {
            None => None,
            Some(f) => Some(Format::parse(f).map_err(|_| {
                Reject::bad("format must be jwt, tokenRequest, token, auto or embedded")
            })?),
        };
        let client_id = match self.client_id {
            None => None,
            Some((id, _)) => {
                Some(
                    ClientId::try_from(id).map_err(|why| Reject::InvalidClientId {
                        what: "clientId",
                        why,
                    })?,
                )
            }
        };
        Ok(AuthParams {
            capability,
            client_id,
            ttl_ms,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(text: &[u8]) -> Vec<(String, String)> {
        form_pairs(text)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn theirs(text: &[u8]) -> Vec<(String, String)> {
        form_urlencoded::parse(text)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn form_decoding_matches_form_urlencoded_on_known_cases() {
        for text in [
            &b"capability=%7B%22a%22%3A%5B%22*%22%5D%7D&clientId=a+b"[..],
            b"a=1&&b=&c&=d&e==f",
            b"%+1=%2B%2b%zz%4",
            b"x=%C3%A9%FF%C3",
            b"\xff=\xfe",
            b"",
            b"&",
        ] {
            assert_eq!(
                ours(text),
                theirs(text),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    proptest! {
        #[test]
        fn form_decoding_matches_form_urlencoded(
            text in proptest::collection::vec(
                prop_oneof![
                    Just(b'%'), Just(b'+'), Just(b'&'), Just(b'='), Just(b'a'), Just(b'F'),
                    Just(b'2'), Just(b'c'), Just(0xC3), Just(0xA9), Just(0xFF), any::<u8>(),
                ],
                0..40,
            )
        ) {
            prop_assert_eq!(ours(&text), theirs(&text));
        }
    }
}
