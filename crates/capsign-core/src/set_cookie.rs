//! The one `Set-Cookie` writer: the grant cookie, the demo login and its logout.
//!
//! [`CookieSpec`] is a cookie's name and attributes; [`CookieSpec::write`] builds the header
//! value in one allocation of its exact length, the value appended in place (the grant cookie
//! is sealed straight into it). The bytes are the ones the `cookie` crate writes for the same
//! cookie (a test compares): `name=value; HttpOnly; SameSite=…; Secure; Path=/; Max-Age=…`.
//! Names are checked where they are configured and values are base64url, so nothing here
//! quotes or escapes. This module imports nothing of capsign's but the `SameSite` keyword.

use std::ops::Range;

use crate::settings::SameSite;

/// A cookie's name and attributes (always `HttpOnly` and `Path=/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSpec {
    /// The cookie's name (a token: checked at start-up).
    pub name: String,
    /// The `SameSite` attribute.
    pub same_site: SameSite,
    /// Whether to send it only over HTTPS (`Secure`).
    pub secure: bool,
    /// `Max-Age` in seconds; `None` for a session cookie (`Some(0)` removes the cookie).
    pub max_age_s: Option<u64>,
}

/// A `Set-Cookie` header value and where its value is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    header: String,
    value: Range<usize>,
}

impl SetCookie {
    /// The cookie's value (what the client's `Cookie` header will carry).
    pub fn value(&self) -> &str {
        // The range is where `write` appended the value: both ends are positions between
        // whole pushes, so character boundaries within the header.
        self.header
            .split_at(self.value.end)
            .0
            .split_at(self.value.start)
            .1
    }

    /// The whole `Set-Cookie` header value.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The `Set-Cookie` header value, owned.
    pub fn into_header(self) -> String {
        self.header
    }
}

impl CookieSpec {
    /// The `Set-Cookie` value of this cookie with `value`.
    pub fn with_value(&self, value: &str) -> SetCookie {
        self.write(value.len(), |out| out.push_str(value))
    }

    /// The `Set-Cookie` value of this cookie whose value (of `value_len` bytes, which sizes the
    /// allocation) `value` appends.
    pub fn write(&self, value_len: usize, value: impl FnOnce(&mut String)) -> SetCookie {
        let mut out = String::with_capacity(self.len(value_len));
        out.push_str(&self.name);
        out.push('=');
        let start = out.len();
        value(&mut out);
        let end = out.len();
        out.push_str("; HttpOnly; SameSite=");
        out.push_str(self.same_site.as_str());
        if self.secure {
            out.push_str("; Secure");
        }
        out.push_str("; Path=/");
        if let Some(max_age) = self.max_age_s {
            out.push_str("; Max-Age=");
            out.push_str(itoa::Buffer::new().format(clamped(max_age)));
        }
        SetCookie {
            header: out,
            value: start..end,
        }
    }

    /// The length of [`CookieSpec::write`]'s header for a value of `value_len` bytes.
    pub fn len(&self, value_len: usize) -> usize {
        self.name.len()
            + 1
            + value_len
            + "; HttpOnly; SameSite=".len()
            + self.same_site.as_str().len()
            + if self.secure { "; Secure".len() } else { 0 }
            + "; Path=/".len()
            + self.max_age_s.map_or(0, |max_age| {
                "; Max-Age=".len() + itoa::Buffer::new().format(clamped(max_age)).len()
            })
    }
}

/// `Max-Age` as the `cookie` crate writes it: at most `i64::MAX`.
fn clamped(max_age_s: u64) -> u64 {
    max_age_s.min(i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_cookie(spec: &CookieSpec, value: &str) -> String {
        let mut c = cookie::Cookie::build((spec.name.clone(), value.to_owned()))
            .http_only(true)
            .path("/")
            .same_site(match spec.same_site {
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::None => cookie::SameSite::None,
            })
            .secure(spec.secure)
            .build();
        if let Some(max_age) = spec.max_age_s {
            c.set_max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age).unwrap(),
            ));
        }
        c.to_string()
    }

    /// The same bytes as the `cookie` crate, for every combination of attributes; the value
    /// found where it was written; the length computed before writing exact.
    #[test]
    fn writes_what_the_cookie_crate_writes() {
        for same_site in [SameSite::Lax, SameSite::Strict, SameSite::None] {
            for secure in [true, false] {
                for max_age_s in [None, Some(0), Some(86_400), Some(u64::from(u32::MAX))] {
                    let spec = CookieSpec {
                        name: "capsign".into(),
                        same_site,
                        secure,
                        max_age_s,
                    };
                    let written = spec.with_value("AbC-_9");
                    assert_eq!(written.header(), crate_cookie(&spec, "AbC-_9"));
                    assert_eq!(written.value(), "AbC-_9");
                    assert_eq!(written.header().len(), spec.len(6));
                    assert_eq!(spec.with_value("").value(), "");
                }
            }
        }
    }
}
