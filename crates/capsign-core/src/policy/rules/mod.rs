//! The rules file and its evaluation.
//!
//! # Rules file
//!
//! ```toml
//! [[rule]]
//! resource = "chat:*"                 # an Ably resource pattern, with templates
//! ops = ["subscribe", "publish", "presence", "history"]
//!
//! [[rule]]
//! resource = "private:{clientId}:*"
//! ops = ["*"]
//! default = true                      # granted to every fresh set without being asked
//!
//! [groups]                            # named operation lists, expanded at load
//! reader = ["subscribe", "history"]
//!
//! [[rule]]
//! resource = "support:*"              # Chat rooms are capabilities on the room name
//! ops = ["@chat", "@reader"]          # @chat: every Chat feature (built in)
//! claim = '{"role":"{claims.role}"}'  # a user claim Ably copies onto messages
//! claim_scope = "room"                # ably.room.<resource> (or "channel": ably.channel.…)
//! ```
//!
//! **Operation groups**: `@NAME` in `ops` stands for the operations of a group: one of the
//! file's `[groups]` or the built-in `@chat`, which is every Ably Chat feature
//! ([`CHAT_OPERATIONS`]). A group names operations, not other groups.
//!
//! **User claims**: a rule with a `claim` sets, in every Ably JWT minted for a set that holds a
//! resource the rule covers, the top-level claim `ably.room.<resource>` or
//! `ably.channel.<resource>` (by `claim_scope`) to the rendered template, a string (Ably copies
//! it onto messages, and for rooms onto presence, typing and reactions). Only held resources
//! get claims, each from the first rule with a claim that covers it. In a claim template only
//! `{clientId}` and `{claims.NAME}` are placeholders (other braces are text, so JSON templates
//! read as written), and each value is escaped as JSON string content, so a value cannot break
//! out of the string it is placed in; a client without the claim gets no claim from that rule.
//!
//! A requested grant `(resource, ops)` is allowed for the operations that the rules whose
//! pattern covers `resource` allow together (covering as in [`crate::capability`]); the rest
//! is denied. A request for `*` gets what the rules allow. A request for a pattern (`chat:*`)
//! is allowed only when a rule's pattern covers the whole pattern.
//!
//! Templates: `{clientId}` and `{claims.NAME}` (a string or integer claim of the app session).
//! A substituted value must not change the pattern's meaning, so a value that is empty or
//! holds `:`, `*`, `[`, `]`, `{`, `}` or a control character makes the rule match nothing for
//! that client: a clientId `a:*` gets nothing from `private:{clientId}:*`, rather than
//! `private:a:*:*`.

use std::borrow::Cow;

use serde::Deserialize;
use smallvec::SmallVec;

use crate::capability::{CapabilityError, CapabilitySet, OpSet, Resource, literal_prefix};
use crate::identity::Identity;

mod template;

pub use template::ClaimTemplate;

use template::{
    Piece, parse_claim_template, parse_template, render, render_claim, render_resource,
};

/// Why a rules file was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The file is not valid TOML of the expected shape.
    #[error("rules file: {0}")]
    Toml(String),
    /// A rule's template is malformed.
    #[error("rule {index} (resource {resource:?}): {problem}")]
    Template {
        /// 1-based position of the rule in the file.
        index: usize,
        /// The resource as written.
        resource: String,
        /// What is wrong.
        problem: String,
    },
    /// A rule's resource or operations are not valid Ably capability syntax.
    #[error("rule {index} (resource {resource:?}): {source}")]
    Capability {
        /// 1-based position of the rule in the file.
        index: usize,
        /// The resource as written.
        resource: String,
        /// The capability error.
        source: CapabilityError,
    },
    /// No rule at all: every request would be denied.
    #[error("rules file has no [[rule]]; every request would be denied")]
    Empty,
}

/// The built-in operation group `@chat`: every feature of Ably Chat (messages, their edits and
/// deletions by their author, reactions as annotations, presence, typing and occupancy through
/// channel metadata, history).
pub(crate) const CHAT_OPERATIONS: [&str; 9] = [
    "publish",
    "subscribe",
    "presence",
    "history",
    "channel-metadata",
    "annotation-publish",
    "annotation-subscribe",
    "message-update-own",
    "message-delete-own",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    groups: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    resource: String,
    ops: Vec<String>,
    #[serde(default)]
    default: bool,
    claim: Option<String>,
    claim_scope: Option<String>,
}

/// Where a rule's user claim goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimScope {
    /// `ably.room.<resource>` (Ably Chat).
    Room,
    /// `ably.channel.<resource>`.
    Channel,
}

/// A rule's user claim: its scope and template.
#[derive(Debug, Clone)]
struct Claim {
    scope: ClaimScope,
    template: Vec<Piece>,
}

#[derive(Debug, Clone)]
struct Rule {
    pieces: Vec<Piece>,
    /// The resource, when the pattern has no template: rendered once, at load.
    fixed: Option<Resource>,
    /// What every resource the pattern covers starts with, whoever asks: its literal text up
    /// to the first template or `*` (empty for a `[*]` pattern). A templated rule need not be
    /// rendered for a question whose resources all start otherwise.
    prefix: String,
    ops: OpSet,
    default: bool,
    claim: Option<Claim>,
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Some rule sets a user claim (known at load, so minting without claims looks at no rule).
    has_claims: bool,
}

impl Rules {
    /// Parses and checks a rules file.
    ///
    /// # Errors
    ///
    /// Bad TOML, unknown keys, malformed templates, invalid resources or operations, or no
    /// rule at all.
    pub fn from_toml(text: &str) -> Result<Rules, RulesError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| RulesError::Toml(e.to_string()))?;
        if raw.rule.is_empty() {
            return Err(RulesError::Empty);
        }
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (i, r) in raw.rule.into_iter().enumerate() {
            let index = i + 1;
            let pieces = parse_template(&r.resource).map_err(|problem| RulesError::Template {
                index,
                resource: r.resource.clone(),
                problem,
            })?;
            let cap_err = |source| RulesError::Capability {
                index,
                resource: r.resource.clone(),
                source,
            };
            // The pattern must be valid with any safe value in its templates.
            Resource::new(render(&pieces, |_| Some(Cow::Borrowed("x"))).unwrap_or_default())
                .map_err(cap_err)?;
            let template_err = |problem: String| RulesError::Template {
                index,
                resource: r.resource.clone(),
                problem,
            };
            let names = expand_groups(&r.ops, &raw.groups).map_err(template_err)?;
            let ops = OpSet::from_names(&r.resource, names.iter().copied()).map_err(cap_err)?;
            let claim = compile_claim(r.claim.as_deref(), r.claim_scope.as_deref())
                .map_err(template_err)?;
            let fixed = if pieces.iter().all(|p| matches!(p, Piece::Literal(_))) {
                Some(
                    Resource::new(render(&pieces, |_| None).unwrap_or_default())
                        .map_err(cap_err)?,
                )
            } else {
                None
            };
            let prefix = match pieces.first() {
                Some(Piece::Literal(text)) => literal_prefix(text).to_owned(),
                _ => String::new(),
            };
            rules.push(Rule {
                pieces,
                fixed,
                prefix,
                ops,
                default: r.default,
                claim,
            });
        }
        Ok(Rules {
            has_claims: rules.iter().any(|r| r.claim.is_some()),
            rules,
        })
    }

    /// Whether a template (a resource's or a user claim's) reads a session claim
    /// (`{claims.NAME}`): then the identity must keep each session's claims.
    pub fn reads_claims(&self) -> bool {
        let reads = |pieces: &[Piece]| pieces.iter().any(|p| matches!(p, Piece::Claim(_)));
        self.rules
            .iter()
            .any(|r| reads(&r.pieces) || r.claim.as_ref().is_some_and(|c| reads(&c.template)))
    }

    /// What the rules allow `who`: one pattern per applicable rule (a template that cannot be
    /// filled for `who` applies to no one).
    ///
    /// Evaluated as needed: a fixed pattern is lent, not copied, and only templated ones are
    /// rendered (one small allocation each, none for a short result).
    ///
    /// With `for_set`, rules whose patterns can cover none of its resources are left out
    /// before they are rendered (their [`Rule::prefix`] starts none of them).
    fn allowed<'a>(
        &'a self,
        who: &'a Identity,
        defaults_only: bool,
        for_set: Option<&'a CapabilitySet>,
    ) -> impl Iterator<Item = (std::borrow::Cow<'a, Resource>, OpSet)> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.default || !defaults_only)
            .filter(move |r| {
                r.fixed.is_some()
                    || for_set.is_none_or(|set| {
                        set.iter()
                            .any(|(q, _)| q.as_str().starts_with(r.prefix.as_str()))
                    })
            })
            .filter_map(move |rule| {
                let resource = match &rule.fixed {
                    Some(r) => std::borrow::Cow::Borrowed(r),
                    None => std::borrow::Cow::Owned(render_resource(&rule.pieces, who)?),
                };
                Some((resource, rule.ops))
            })
    }

    /// The grants given to every fresh set.
    pub fn defaults(&self, who: &Identity) -> CapabilitySet {
        self.allowed(who, true, None)
            .map(|(r, ops)| (r.into_owned(), ops))
            .collect()
    }

    /// Decides `requested` for `who`: the granted part, a subset of `requested`. A resource
    /// gets the operations of every rule whose pattern covers it.
    pub fn decide(&self, who: &Identity, requested: &CapabilitySet) -> CapabilitySet {
        let allowed: SmallVec<[_; 8]> = self.allowed(who, false, Some(requested)).collect();
        requested
            .iter()
            .map(|(r, ops)| {
                let may = allowed
                    .iter()
                    .filter(|(pattern, _)| pattern.covers(r))
                    .fold(OpSet::EMPTY, |acc, (_, o)| acc.union(*o));
                (r.clone(), ops.intersection(may))
            })
            .collect()
    }

    /// Splits `requested` into the part some rule matches (which the rules decide) and the
    /// rest (which goes to the webhook).
    pub fn split(
        &self,
        who: &Identity,
        requested: &CapabilitySet,
    ) -> (CapabilitySet, CapabilitySet) {
        let allowed: Vec<_> = self.allowed(who, false, Some(requested)).collect();
        let mut mine = CapabilitySet::new();
        let mut rest = CapabilitySet::new();
        for (r, ops) in requested.iter() {
            if allowed.iter().any(|(pattern, _)| pattern.covers(r)) {
                mine.insert(r.clone(), ops);
            } else {
                rest.insert(r.clone(), ops);
            }
        }
        (mine, rest)
    }

    /// The user claims for a minted `capability` (the resources a set holds): for each
    /// resource, the claim of the first rule with a claim whose pattern covers it, as
    /// `(ably.room.<resource> | ably.channel.<resource>, value)`.
    pub fn claims(&self, who: &Identity, capability: &CapabilitySet) -> Vec<(String, String)> {
        if !self.has_claims {
            return Vec::new();
        }
        // The rules with a claim, their patterns rendered for this user, in order.
        let rules: Vec<(Resource, &Claim)> = self
            .rules
            .iter()
            .filter_map(|rule| {
                let claim = rule.claim.as_ref()?;
                let pattern = match &rule.fixed {
                    Some(r) => r.clone(),
                    None => render_resource(&rule.pieces, who)?,
                };
                Some((pattern, claim))
            })
            .collect();
        // Each held resource's claim is its first covering rule's (capsign's precedence).
        let chosen: Vec<(&Resource, usize)> = capability
            .iter()
            .filter_map(|(resource, _)| {
                let i = rules.iter().position(|(p, _)| p.covers(resource))?;
                Some((resource, i))
            })
            .collect();
        // One claim per rule used, named by the rule's pattern (Ably matches claim names as
        // patterns: `ably.room.support:*` holds for every room under `support:`), so a claim
        // is written once however many resources its rule covers.
        let mut values: Vec<Option<Option<String>>> = vec![None; rules.len()];
        let mut out: Vec<(String, String)> = Vec::new();
        let mut named: Vec<(usize, &Resource)> = Vec::new();
        for &(_, i) in &chosen {
            let (Some((pattern, claim)), Some(slot)) = (rules.get(i), values.get_mut(i)) else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
            let value = render_claim(&claim.template, who);
            if let Some(v) = &value {
                out.push((claim_name(claim.scope, pattern), v.clone()));
                named.push((i, pattern));
            }
            *slot = Some(value);
        }
        // Ably gives a resource the claim of its most specific matching name (the exact
        // resource, else the pattern with the most literal characters). Where that is another
        // rule's than capsign's first covering rule, the resource gets its own exact claim.
        for &(resource, i) in &chosen {
            let Some(Some(Some(value))) = values.get(i) else {
                continue;
            };
            let Some((_, claim)) = rules.get(i) else {
                continue;
            };
            let ably_pick = named
                .iter()
                .filter(|(j, p)| {
                    rules.get(*j).is_some_and(|(_, c)| c.scope == claim.scope) && p.covers(resource)
                })
                .max_by_key(|(_, p)| {
                    (
                        p.as_str() == resource.as_str(),
                        p.as_str().bytes().filter(|b| *b != b'*').count(),
                    )
                })
                .map(|(j, _)| *j);
            if ably_pick != Some(i) {
                out.push((claim_name(claim.scope, resource), value.clone()));
            }
        }
        out
    }
}

/// A user claim's name: `ably.room.<resource>` or `ably.channel.<resource>`.
fn claim_name(scope: ClaimScope, resource: &Resource) -> String {
    let scope = match scope {
        ClaimScope::Room => "room",
        ClaimScope::Channel => "channel",
    };
    format!("ably.{scope}.{}", resource.as_str())
}

/// The operation names of `ops` with each `@group` replaced by its operations.
fn expand_groups<'a>(
    ops: &'a [String],
    groups: &'a std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Vec<&'a str>, String> {
    let mut names = Vec::with_capacity(ops.len());
    for op in ops {
        let Some(group) = op.strip_prefix('@') else {
            names.push(op.as_str());
            continue;
        };
        match (groups.get(group), group) {
            (Some(members), _) => {
                if let Some(nested) = members.iter().find(|m| m.starts_with('@')) {
                    return Err(format!(
                        "group {group:?} names the group {nested:?}; a group lists operations"
                    ));
                }
                names.extend(members.iter().map(String::as_str));
            }
            (None, "chat") => names.extend(CHAT_OPERATIONS),
            (None, _) => {
                return Err(format!(
                    "unknown operation group @{group}; define it under [groups] or use @chat"
                ));
            }
        }
    }
    // A group and a name may repeat an operation; each counts once.
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

fn compile_claim(template: Option<&str>, scope: Option<&str>) -> Result<Option<Claim>, String> {
    let scope = match (template, scope) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Err("claim_scope without a claim".into()),
        (Some(_), None) => return Err("a claim needs claim_scope = \"room\" or \"channel\"".into()),
        (Some(_), Some("room")) => ClaimScope::Room,
        (Some(_), Some("channel")) => ClaimScope::Channel,
        (Some(_), Some(other)) => {
            return Err(format!(
                "claim_scope {other:?}; use \"room\" or \"channel\""
            ));
        }
    };
    let text = template.unwrap_or_default();
    Ok(Some(Claim {
        scope,
        template: parse_claim_template(text),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ClientId;

    const RULES: &str = r#"
        [[rule]]
        resource = "chat:*"
        ops = ["subscribe", "publish"]

        [[rule]]
        resource = "private:{clientId}:*"
        ops = ["*"]
        default = true

        [[rule]]
        resource = "team:{claims.team}:*"
        ops = ["subscribe"]
    "#;

    fn who(id: &str) -> Identity {
        Identity::new(ClientId::new(id).unwrap(), serde_json::Map::new())
    }

    fn caps(json: &str) -> CapabilitySet {
        CapabilitySet::from_json(json).unwrap()
    }

    #[test]
    fn decide_grants_what_rules_cover() {
        let p = Rules::from_toml(RULES).unwrap();
        let got = p.decide(
            &who("alice"),
            &caps(r#"{"chat:a":["publish","presence"],"private:alice:x":["*"],"private:bob:x":["subscribe"],"*":["subscribe"]}"#),
        );
        assert_eq!(
            got.to_json(),
            r#"{"chat:a":["publish"],"private:alice:x":["*"]}"#
        );
    }

    /// Templates in every position a prefix could be taken from, with qualifiers and `*`.
    const TEMPLATED: &str = r#"
        [[rule]]
        resource = "p:{clientId}:*"
        ops = ["subscribe"]
        [[rule]]
        resource = "[queue]q:{clientId}"
        ops = ["publish"]
        [[rule]]
        resource = "[*]m:{clientId}"
        ops = ["presence"]
        [[rule]]
        resource = "c:*:{clientId}"
        ops = ["history"]
        [[rule]]
        resource = "{clientId}:x"
        ops = ["stats"]
        [[rule]]
        resource = "a*b:{clientId}"
        ops = ["push-subscribe"]
    "#;

    proptest::proptest! {
        /// Leaving out the templated rules whose prefix starts none of the requested
        /// resources never changes a decision: the same as deciding with every rule rendered.
        #[test]
        fn prefix_filter_changes_no_decision(
            names in proptest::collection::vec(
                "(\\[(queue|meta|\\*)\\])?(p|q|m|c|a\\*b|u|\\*)(:(u|v|\\*|x)){0,2}",
                1..5,
            ),
            id in "u|v|u\\*|\\*u",
        ) {
            let rules = Rules::from_toml(TEMPLATED).unwrap();
            let who = who(&id);
            let mut requested = CapabilitySet::new();
            for name in &names {
                if let Ok(r) = Resource::new(name) {
                    requested.insert(r, OpSet::WILDCARD);
                }
            }
            let all: Vec<_> = rules.allowed(&who, false, None).collect();
            let expected: CapabilitySet = requested
                .iter()
                .map(|(r, ops)| {
                    let may = all
                        .iter()
                        .filter(|(pattern, _)| pattern.covers(r))
                        .fold(OpSet::EMPTY, |acc, (_, o)| acc.union(*o));
                    (r.clone(), ops.intersection(may))
                })
                .collect();
            proptest::prop_assert_eq!(rules.decide(&who, &requested), expected);
        }
    }

    #[test]
    fn wildcard_request_gets_what_is_allowed() {
        let p = Rules::from_toml(RULES).unwrap();
        let got = p.decide(&who("alice"), &caps(r#"{"chat:a":["*"]}"#));
        assert_eq!(got.to_json(), r#"{"chat:a":["publish","subscribe"]}"#);
    }

    #[test]
    fn hostile_client_id_never_widens() {
        let p = Rules::from_toml(RULES).unwrap();
        // "*" and control characters cannot be a clientId at all (`ClientId::new`).
        for id in ["a:*", "a:b", "[*]", "{clientId}", "**"] {
            let got = p.decide(
                &who(id),
                &caps(r#"{"private:a:*":["*"],"private:a:b:c":["*"],"private:*":["*"]}"#),
            );
            assert!(got.is_empty(), "{id}: {got:?}");
            assert!(p.defaults(&who(id)).is_empty(), "{id}");
        }
    }

    #[test]
    fn claims_are_substituted() {
        let p = Rules::from_toml(RULES).unwrap();
        let mut claims = serde_json::Map::new();
        claims.insert("team".into(), "red".into());
        let alice = Identity::new(ClientId::new("alice").unwrap(), claims);
        let got = p.decide(
            &alice,
            &caps(r#"{"team:red:x":["subscribe"],"team:blue:x":["subscribe"]}"#),
        );
        assert_eq!(got.to_json(), r#"{"team:red:x":["subscribe"]}"#);
        // No claim: the rule matches nothing.
        assert!(
            p.decide(&who("bob"), &caps(r#"{"team:red:x":["subscribe"]}"#))
                .is_empty()
        );
    }

    const CHAT_RULES: &str = r#"
        [groups]
        reader = ["subscribe", "history"]

        [[rule]]
        resource = "support:*"
        ops = ["@chat"]
        claim = '{"role":"{claims.role}","name":"{clientId}"}'
        claim_scope = "room"

        [[rule]]
        resource = "news:*"
        ops = ["@reader", "subscribe"]
        claim = 'reader'
        claim_scope = "channel"

        [[rule]]
        resource = "*"
        ops = ["subscribe"]
    "#;

    #[test]
    fn operation_groups_expand_at_load() {
        let p = Rules::from_toml(CHAT_RULES).unwrap();
        let got = p.decide(
            &who("alice"),
            &caps(r#"{"support:1":["*"],"news:a":["*"]}"#),
        );
        assert_eq!(
            got.to_json(),
            r#"{"news:a":["history","subscribe"],"support:1":["annotation-publish","annotation-subscribe","channel-metadata","history","message-delete-own","message-update-own","presence","publish","subscribe"]}"#
        );
        for (ops, why) in [
            (r#"["@nope"]"#, "unknown operation group @nope"),
            (r#"["@loop"]"#, "a group lists operations"),
        ] {
            let text = format!(
                "[groups]\nloop = [\"@reader\"]\nreader = [\"subscribe\"]\n[[rule]]\nresource = \"a\"\nops = {ops}\n"
            );
            let e = Rules::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    /// Issue 27 (1): a claim is written once per rule, named by its pattern, however many
    /// held resources the rule covers (255 rooms and a long claim made a 2 MB JWT).
    #[test]
    fn one_claim_per_rule_pattern_not_per_resource() {
        let p = Rules::from_toml(CHAT_RULES).unwrap();
        let mut claims = serde_json::Map::new();
        claims.insert("role".into(), "m".repeat(5_800).into());
        let alice = Identity::new(ClientId::new("alice").unwrap(), claims);
        let many: serde_json::Map<String, serde_json::Value> = (0..255)
            .map(|i| (format!("support:{i}"), serde_json::json!(["publish"])))
            .collect();
        let got = p.claims(&alice, &caps(&serde_json::Value::Object(many).to_string()));
        assert_eq!(
            got.len(),
            1,
            "{:?}",
            got.iter().map(|c| &c.0).collect::<Vec<_>>()
        );
        assert_eq!(got[0].0, "ably.room.support:*");
    }

    /// Rules that each allow `publish` on a pattern and set a claim in `scope`, in order.
    fn claim_rules(scope: &str, rules: &[(&str, &str)]) -> Rules {
        let text: String = rules
            .iter()
            .map(|(resource, claim)| {
                format!(
                    "[[rule]]\nresource = \"{resource}\"\nops = [\"publish\"]\n\
                     claim = '{claim}'\nclaim_scope = \"{scope}\"\n"
                )
            })
            .collect();
        Rules::from_toml(&text).unwrap()
    }

    /// Where Ably's choice among the pattern claims (the most specific) would differ from
    /// capsign's (the first rule that covers the resource), the resource gets an exact claim.
    #[test]
    fn an_exact_claim_where_ablys_most_specific_pattern_would_pick_another_rule() {
        let p = claim_rules("room", &[("rooms:*", "general"), ("rooms:vip:*", "vip")]);
        // Both rules cover rooms:vip:1; capsign's first rule (rooms:*) decides its claim, and
        // rooms:vip:* is never the first rule of a held resource, so it is not named: one
        // claim holds for both rooms, at Ably as here.
        let got = p.claims(
            &who("a"),
            &caps(r#"{"rooms:1":["publish"],"rooms:vip:1":["publish"]}"#),
        );
        assert_eq!(
            got,
            vec![("ably.room.rooms:*".to_owned(), "general".to_owned())]
        );
        // With the rules the other way round, rooms:vip:* is named and wins for rooms:vip:1 at
        // Ably as it does here; rooms:2 keeps rooms:*: no exact claim needed.
        let q = claim_rules(
            "room",
            &[
                ("rooms:vip:*", "vip"),
                ("rooms:*", "general"),
                ("rooms:x:*", "x"),
            ],
        );
        let got = q.claims(
            &who("a"),
            &caps(r#"{"rooms:2":["publish"],"rooms:vip:1":["publish"],"rooms:x:1":["publish"]}"#),
        );
        // rooms:x:1 is covered first by rooms:* ('general'); its own rule is never used, so
        // no rooms:x:* claim is named and Ably's pick is rooms:* too.
        assert_eq!(
            got,
            vec![
                ("ably.room.rooms:*".to_owned(), "general".to_owned()),
                ("ably.room.rooms:vip:*".to_owned(), "vip".to_owned()),
            ]
        );
        // rooms:vip:c is covered first by rooms:*:c ('p'), but rooms:vip:* is named too (for
        // rooms:vip:x) and has more literal characters, so Ably would give rooms:vip:c 'q':
        // rooms:vip:c gets its own, exact claim.
        let r = claim_rules("room", &[("rooms:*:c", "p"), ("rooms:vip:*", "q")]);
        let got = r.claims(
            &who("a"),
            &caps(r#"{"rooms:vip:c":["publish"],"rooms:vip:x":["publish"]}"#),
        );
        assert_eq!(
            got,
            vec![
                ("ably.room.rooms:*:c".to_owned(), "p".to_owned()),
                ("ably.room.rooms:vip:*".to_owned(), "q".to_owned()),
                ("ably.room.rooms:vip:c".to_owned(), "p".to_owned()),
            ]
        );
    }

    #[test]
    fn claims_only_for_held_resources_escaped() {
        let p = Rules::from_toml(CHAT_RULES).unwrap();
        let mut claims = serde_json::Map::new();
        claims.insert("role".into(), r#"mod","admin":"yes"#.into());
        let alice = Identity::new(ClientId::new("al\"ice").unwrap(), claims);
        let held =
            caps(r#"{"support:1":["publish"],"news:a":["subscribe"],"other":["subscribe"]}"#);
        let got = p.claims(&alice, &held);
        assert_eq!(
            got,
            vec![
                ("ably.channel.news:*".to_owned(), "reader".to_owned()),
                (
                    "ably.room.support:*".to_owned(),
                    r#"{"role":"mod\",\"admin\":\"yes","name":"al\"ice"}"#.to_owned()
                ),
            ]
        );
        // The value is still one JSON object with two members: nothing broke out.
        let v: serde_json::Value = serde_json::from_str(&got[1].1).unwrap();
        assert_eq!(v["role"], r#"mod","admin":"yes"#);
        assert_eq!(v.as_object().unwrap().len(), 2);
        // Without the claim the rule sets nothing; a set without the resources gets nothing.
        assert_eq!(
            p.claims(&who("bob"), &caps(r#"{"support:1":["publish"]}"#)),
            vec![]
        );
        assert_eq!(
            p.claims(&alice, &caps(r#"{"other":["subscribe"]}"#)),
            vec![]
        );
        let e = Rules::from_toml("[[rule]]\nresource = \"a\"\nops = [\"*\"]\nclaim = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("claim_scope"), "{e}");
    }

    #[test]
    fn defaults_are_templated() {
        let p = Rules::from_toml(RULES).unwrap();
        assert_eq!(
            p.defaults(&who("alice")).to_json(),
            r#"{"private:alice:*":["*"]}"#
        );
    }

    #[test]
    fn bad_files_name_the_rule() {
        let err = |t: &str| Rules::from_toml(t).unwrap_err().to_string();
        assert!(err("").contains("no [[rule]]"));
        assert!(err("[[rule]]\nresource = \"a:{user}\"\nops = [\"publish\"]").contains("rule 1"));
        assert!(err("[[rule]]\nresource = \"a\"\nops = [\"publish_\"]").contains("publish_"));
        assert!(err("[[rule]]\nresource = \"a\"\nops = []").contains("empty operation list"));
        assert!(err("[[rule]]\nresource = \"a{\"\nops = [\"publish\"]").contains("unclosed"));
        assert!(err("[[rule]]\nresource = \"a\"\nop = [\"publish\"]").contains("unknown field"));
    }
}
