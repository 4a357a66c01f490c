//! The revocation list's document: parsed, bounded, and indexed by clientId and by revocation
//! key, so a request's check is one hash lookup.
//!
//! ```json
//! {"revocations": [
//!   {"clientId": "alice", "before": 1764806400000, "resources": ["doc:*"]},
//!   {"revocationKey": "org:acme", "before": 1764806400000}
//! ]}
//! ```
//!
//! Each entry names exactly one of `clientId` and `revocationKey`; `before` is milliseconds
//! since the Unix epoch; `resources` (optional) are capability resource names or patterns.
//! Other fields, in the document and in entries, are ignored (later versions may add some).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::capability::Resource;

/// The largest list document read, in bytes.
pub const MAX_LIST_BYTES: usize = 4 << 20;

/// The most entries a list may hold (after the ones too old to matter are dropped).
pub const MAX_ENTRIES: usize = 50_000;

/// The most resources one entry may name.
pub const MAX_RESOURCES: usize = 64;

/// Why a list document was refused (the previous list stays in force).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// Larger than [`MAX_LIST_BYTES`].
    #[error("{0} bytes; at most {MAX_LIST_BYTES} are read")]
    TooLarge(usize),
    /// Not the expected JSON.
    #[error("not a revocation list: {0}")]
    Json(String),
    /// An entry that cannot be applied as written.
    #[error("entry {index}: {problem}")]
    Entry {
        /// Its position in `revocations` (from 0).
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// More entries than [`MAX_ENTRIES`] still matter.
    #[error(
        "{0} entries still in force; at most {MAX_ENTRIES} (drop the ones older than CAPSIGN_GRANT_MAX_AGE)"
    )]
    TooManyEntries(usize),
}

/// One entry as written in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryDoc {
    /// The clientId whose grants are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The revocation key (the `x-ably-revocation-key` claim) whose users' grants are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_key: Option<String>,
    /// Grants approved before this time (ms since the epoch) are revoked.
    pub before: u64,
    /// Only these resources (patterns cover what they match); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
}

/// The document: `{"revocations": [...]}`, other fields kept as they are when capsign
/// rewrites it (`capsign revoke`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListDoc {
    /// The entries.
    pub revocations: Vec<EntryDoc>,
    /// Whatever else the document holds.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ListDoc {
    /// Parses a document (bounded in size).
    ///
    /// # Errors
    ///
    /// Too large, or not a list.
    pub fn parse(bytes: &[u8]) -> Result<ListDoc, ListError> {
        if bytes.len() > MAX_LIST_BYTES {
            return Err(ListError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| ListError::Json(e.to_string()))
    }

    /// A document of these entries.
    pub fn of(revocations: Vec<EntryDoc>) -> ListDoc {
        ListDoc {
            revocations,
            other: serde_json::Map::new(),
        }
    }

    /// The document as JSON, indented for people (and diffs).
    pub fn to_pretty_json(&self) -> String {
        // A map of strings and numbers always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Drops the entries whose `before` is at or before `cutoff_ms` (they revoke nothing any
    /// grant cookie can still hold).
    pub fn drop_older_than(&mut self, cutoff_ms: u64) {
        self.revocations.retain(|e| e.before > cutoff_ms);
    }
}

/// One entry in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Grants approved before this time (ms since the epoch) are revoked.
    pub before_ms: u64,
    /// Only grants overlapping these; all when `None`.
    pub resources: Option<Vec<Resource>>,
}

impl Entry {
    /// Whether a held grant on `held` falls under this entry's resources: a listed resource
    /// covers it, or it covers a listed one (a held `*` is revoked by a listed `doc:*`), or
    /// both are patterns that may share a channel. When unsure, revoked: the policy is asked
    /// again, it never grants more.
    pub fn reaches(&self, held: &Resource) -> bool {
        let Some(listed) = &self.resources else {
            return true;
        };
        listed.iter().any(|l| {
            l.covers(held)
                || held.covers(l)
                || (l.is_pattern() && held.is_pattern() && prefixes_meet(l, held))
        })
    }
}

/// Two patterns may share a channel only if one's literal prefix starts the other's.
fn prefixes_meet(a: &Resource, b: &Resource) -> bool {
    let (pa, pb) = (
        crate::capability::literal_prefix(a.as_str()),
        crate::capability::literal_prefix(b.as_str()),
    );
    pa.starts_with(pb) || pb.starts_with(pa)
}

/// The entries in force, by clientId and by revocation key.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    by_client: HashMap<Box<str>, Vec<Entry>>,
    by_key: HashMap<Box<str>, Vec<Entry>>,
    entries: usize,
}

impl RevocationList {
    /// The list of `bytes` read at `now_ms`: entries whose `before` is older than
    /// `max_age_ms` are ignored (no grant approved then is still held); a `before` in the
    /// future counts as `now_ms` (nothing approved later is revoked).
    ///
    /// # Errors
    ///
    /// See [`ListError`]; one bad entry refuses the whole document (a list applied in part
    /// would be worse to reason about than the previous one).
    pub fn parse(bytes: &[u8], now_ms: u64, max_age_ms: u64) -> Result<RevocationList, ListError> {
        let doc = ListDoc::parse(bytes)?;
        RevocationList::from_doc(doc, now_ms, max_age_ms)
    }

    /// The list of a parsed document (see [`RevocationList::parse`]).
    ///
    /// # Errors
    ///
    /// See [`ListError`].
    pub fn from_doc(
        doc: ListDoc,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<RevocationList, ListError> {
        let mut list = RevocationList::default();
        let oldest = now_ms.saturating_sub(max_age_ms);
        for (index, e) in doc.revocations.into_iter().enumerate() {
            let bad = |problem: &str| ListError::Entry {
                index,
                problem: problem.to_owned(),
            };
            let (map, name) = match (e.client_id, e.revocation_key) {
                (Some(id), None) => (&mut list.by_client, id),
                (None, Some(key)) => (&mut list.by_key, key),
                _ => return Err(bad("name exactly one of clientId and revocationKey")),
            };
            if name.is_empty() || name.len() > 1024 {
                return Err(bad("clientId or revocationKey empty or over 1024 bytes"));
            }
            if e.before == 0 {
                return Err(bad("before must be a time in ms since the epoch"));
            }
            let resources = match e.resources {
                None => None,
                Some(rs) if rs.is_empty() || rs.len() > MAX_RESOURCES => {
                    return Err(bad("resources: give 1 to 64, or leave it out for all"));
                }
                Some(rs) => Some(
                    rs.iter()
                        .map(Resource::new)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| bad(&format!("resources: {e}")))?,
                ),
            };
            if e.before <= oldest {
                continue;
            }
            map.entry(name.into_boxed_str()).or_default().push(Entry {
                before_ms: e.before.min(now_ms),
                resources,
            });
            list.entries += 1;
            if list.entries > MAX_ENTRIES {
                return Err(ListError::TooManyEntries(list.entries));
            }
        }
        Ok(list)
    }

    /// How many entries are in force.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether any entry names a revocation key (only then is a request's key rendered).
    pub fn has_keys(&self) -> bool {
        !self.by_key.is_empty()
    }

    /// The entries for this clientId and this revocation key.
    pub fn matching<'a>(
        &'a self,
        client_id: &str,
        key: Option<&str>,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let by_client = self.by_client.get(client_id).into_iter().flatten();
        let by_key = key.and_then(|k| self.by_key.get(k)).into_iter().flatten();
        by_client.chain(by_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    const DAY: u64 = 86_400_000;

    fn list(json: &str) -> Result<RevocationList, ListError> {
        RevocationList::parse(json.as_bytes(), NOW, DAY)
    }

    fn r(s: &str) -> Resource {
        Resource::new(s).unwrap()
    }

    #[test]
    fn entries_are_indexed_by_client_and_by_key() {
        let l = list(&format!(
            r#"{{"revocations":[{{"clientId":"alice","before":{},"resources":["doc:*"]}},
               {{"revocationKey":"org:acme","before":{},"note":"ignored"}}],"version":2}}"#,
            NOW - 1000,
            NOW - 2000
        ))
        .unwrap();
        assert_eq!(l.len(), 2);
        assert!(l.has_keys());
        assert_eq!(l.matching("alice", None).count(), 1);
        assert_eq!(l.matching("alice", Some("org:acme")).count(), 2);
        assert_eq!(l.matching("bob", Some("org:other")).count(), 0);
    }

    #[test]
    fn old_entries_are_ignored_and_future_ones_count_as_now() {
        let l = list(&format!(
            r#"{{"revocations":[{{"clientId":"a","before":{}}},{{"clientId":"b","before":{}}}]}}"#,
            NOW - DAY - 1,
            NOW + 60_000
        ))
        .unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l.matching("a", None).count(), 0);
        assert_eq!(l.matching("b", None).next().unwrap().before_ms, NOW);
    }

    #[test]
    fn a_bad_entry_refuses_the_document_and_says_which() {
        for (json, want) in [
            (r#"{"revocations":[{"before":5}]}"#, "entry 0"),
            (
                r#"{"revocations":[{"clientId":"a","revocationKey":"k","before":5}]}"#,
                "exactly one",
            ),
            (r#"{"revocations":[{"clientId":"a","before":0}]}"#, "before"),
            (
                r#"{"revocations":[{"clientId":"a","before":5,"resources":[]}]}"#,
                "resources",
            ),
            (
                r#"{"revocations":[{"clientId":"a","before":5,"resources":[""]}]}"#,
                "resources",
            ),
            (
                r#"{"revocations":[{"clientId":"a","before":"5"}]}"#,
                "not a",
            ),
            (r#"{"nothing":[]}"#, "not a"),
            ("[", "not a"),
        ] {
            let e = list(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let big = vec![b' '; MAX_LIST_BYTES + 1];
        assert!(matches!(
            RevocationList::parse(&big, NOW, DAY),
            Err(ListError::TooLarge(_))
        ));
    }

    #[test]
    fn an_entry_reaches_what_its_resources_overlap() {
        let e = Entry {
            before_ms: NOW,
            resources: Some(vec![r("doc:*"), r("room:1")]),
        };
        for held in ["doc:1", "doc:a:b", "doc:*", "*", "[*]*", "room:1", "do*"] {
            assert_eq!(e.reaches(&r(held)), held != "do*", "{held}");
        }
        for held in ["room:2", "chat:*", "docs:1"] {
            assert!(!e.reaches(&r(held)), "{held}");
        }
        let all = Entry {
            before_ms: NOW,
            resources: None,
        };
        assert!(all.reaches(&r("anything")));
    }

    #[test]
    fn a_document_written_back_keeps_unknown_fields() {
        let mut doc = ListDoc::parse(br#"{"revocations":[],"owner":"ops"}"#).unwrap();
        doc.revocations.push(EntryDoc {
            client_id: Some("alice".into()),
            revocation_key: None,
            before: 7,
            resources: None,
        });
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(
            text,
            r#"{"revocations":[{"clientId":"alice","before":7}],"owner":"ops"}"#
        );
    }
}
