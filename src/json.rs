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
}
