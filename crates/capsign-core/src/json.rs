//! JSON string helpers shared by capability JSON, minted claims and the claim readers.
//!
//! Writing: [`push_json_string`] appends a string literal with serde_json's exact escaping,
//! without the intermediate allocations of `serde_json::to_string`. Reading: [`JsonStr`]
//! borrows a key or value from the input when it has no escapes. This module imports nothing
//! of capsign's.

use std::fmt;
use std::fmt::Write as _;

use serde::de::{self, Deserializer, Visitor};

/// Whether JSON escapes anything in `s` (quotes, backslashes, control characters).
pub(crate) fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// Appends `s` as a JSON string literal with serde_json's escaping (the same bytes as
/// JavaScript's `JSON.stringify` for every string capsign accepts).
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// Appends `s` escaped as the content of a JSON string (no quotes): capsign's one JSON string
/// escaper, with serde_json's escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, and `\u00XX`
/// for the other control characters), copying the runs between escapes whole.
pub(crate) fn push_escaped(out: &mut String, s: &str) {
    let mut rest = s;
    while let Some(i) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)
    {
        // `i` is at an ASCII character: both cuts fall on character boundaries.
        let (run, tail) = rest.split_at(i);
        out.push_str(run);
        // An ASCII character: one byte.
        let (c, after) = tail.split_at(1);
        match c {
            "\"" => out.push_str("\\\""),
            "\\" => out.push_str("\\\\"),
            "\n" => out.push_str("\\n"),
            "\r" => out.push_str("\\r"),
            "\t" => out.push_str("\\t"),
            "\u{8}" => out.push_str("\\b"),
            "\u{c}" => out.push_str("\\f"),
            _ => {
                for b in c.bytes() {
                    let _ = write!(out, "\\u{b:04x}");
                }
            }
        }
        rest = after;
    }
    out.push_str(rest);
}

/// A `fmt::Write` that appends what is written to it escaped by [`push_escaped`]: for writing a
/// `Display` value into a JSON string without an intermediate `String`.
pub(crate) struct Escaping<'a>(pub(crate) &'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
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
        // Every control character, alone and between others.
        for c in (0u8..0x20).map(char::from) {
            samples.push(format!("{c}"));
            samples.push(format!("a{c}\"{c}\u{e9}"));
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

    proptest::proptest! {
        /// The one escaper writes serde_json's bytes for any string, and through
        /// [`Escaping`] for any `Display` value.
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in "\\PC*|[\\x00-\\x20\"\\\\a\u{e9}]*") {
            let mut ours = String::new();
            push_json_string(&mut ours, &s);
            proptest::prop_assert_eq!(&ours, &serde_json::to_string(&s).unwrap());
            let mut through = String::from("\"");
            write!(Escaping(&mut through), "{s}").unwrap();
            through.push('"');
            proptest::prop_assert_eq!(through, ours);
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
