//! JSON string helpers shared by capability JSON, minted claims and the claim readers.
//!
//! Writing: [`push_json_string`] appends a string literal with serde_json's exact escaping,
//! without the intermediate allocations of `serde_json::to_string`. Reading: [`JsonStr`]
//! borrows a key or value from the input when it has no escapes. This module imports nothing
//! of capsign's.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// Whether JSON escapes anything in `s` (quotes, backslashes, control characters).
pub(crate) fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// Appends `s` as a JSON string literal with serde_json's escaping (the same bytes as
/// JavaScript's `JSON.stringify` for every string capsign accepts).
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    // Control characters (which capsign refuses in names anyway) take serde_json's path;
    // otherwise only quotes and backslashes are escaped, in spans copied whole.
    if s.bytes().any(|b| b < 0x20) {
        // serde_json fails only on maps with non-string keys and on `Serialize` impls that
        // error; a `&str` is neither.
        #[allow(clippy::expect_used)]
        out.push_str(&serde_json::to_string(s).expect("a string always serializes"));
        return;
    }
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'"' || b == b'\\' {
            // `i` is at an ASCII byte, so both cuts fall on character boundaries.
            out.push_str(s.get(start..i).unwrap_or_default());
            out.push('\\');
            start = i;
        }
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// A JSON string, borrowed from the text when it has no escapes (serde's own `Cow<str>`
/// always copies).
pub(crate) struct JsonStr<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<JsonStr<'de>, E> {
                Ok(JsonStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<JsonStr<'de>, E> {
                Ok(JsonStr(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, checked as serde_json reads it into a `serde_json::Value` (strings decoded,
/// a lone surrogate refused, numbers in range, nesting within the parser's depth) but kept
/// nowhere: nothing is allocated for text without escapes.
pub(crate) struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_serde_json() {
        let mut samples: Vec<String> = [
            "",
            "plain",
            "\"",
            "\\",
            "a\"b\\c\"",
            "{\"chat:*\":[\"publish\"]}",
            "caf\u{e9} \u{1f600} \u{7f}",
            "tab\there\nnew\u{1}",
            "[meta]*",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Every pair of a small alphabet, escapes and multi-byte characters included.
        let alphabet = ['a', '"', '\\', '\u{e9}', '\n', ':', '\u{2028}'];
        for x in alphabet {
            for y in alphabet {
                samples.push(format!("{x}{y}{x}"));
            }
        }
        for s in samples {
            let mut ours = String::from("prefix");
            push_json_string(&mut ours, &s);
            assert_eq!(
                ours,
                format!("prefix{}", serde_json::to_string(&s).unwrap()),
                "{s:?}"
            );
        }
    }

    #[test]
    fn checked_accepts_what_serde_json_values_accept() {
        let samples = [
            r#"{"a":1}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"\udc00":1}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e400}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":[1,2,{"b":null}],"c":true}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":"x\u0000y"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"[1]"#,
            r#""s""#,
            r#"{"a":1} x"#,
        ];
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in samples.iter().copied().chain([deep.as_str()]) {
            let value = serde_json::from_str::<serde_json::Value>(text).is_ok();
            let checked = serde_json::from_str::<Checked>(text).is_ok();
            assert_eq!(checked, value, "{text}");
        }
    }
}
