//! Ably capabilities: parsing, canonical form, covering, union and intersection.
//!
//! This module owns the grammar of Ably capabilities and the algebra capsign needs on them. It
//! knows nothing of cookies, policies or tokens; they all speak in [`CapabilitySet`]s.
//!
//! # Syntax
//!
//! A capability is a JSON object mapping a *resource* to a non-empty array of *operations*:
//!
//! ```text
//! {"chat:*":["presence","publish","subscribe"],"notifications":["subscribe"]}
//! ```
//!
//! A **resource** is a channel name or a pattern of channel names:
//!
//! - It is split into *segments* at `:`. A segment that is exactly `*` is a wildcard; a `*`
//!   anywhere else is a literal character (`foo*` is the channel named `foo*`).
//! - A `*` segment in the middle matches exactly one segment: `foo:*:baz` matches `foo:bar:baz`
//!   but not `foo:bar:bam:baz`.
//! - A `*` segment at the end matches one or more segments: `ns:*` matches `ns:a` and `ns:a:b`,
//!   but not `ns` itself (Ably does not document that case, so capsign takes the narrow reading).
//! - `*` alone matches every ordinary channel, but no queue and no metachannel.
//! - A qualifier in brackets selects another kind of resource: `[queue]name`, `[meta]name`, and
//!   `[*]name`, which matches ordinary channels, queues and metachannels alike (`[*]*` is
//!   everything). Other qualifiers are rejected, so are empty names and control characters.
//!
//! An **operation** is one of the 17 Ably operations (`annotation-publish`,
//! `annotation-subscribe`, `channel-metadata`, `history`, `message-delete-any`,
//! `message-delete-own`, `message-update-any`, `message-update-own`, `object-publish`,
//! `object-subscribe`, `presence`, `privileged-headers`, `publish`, `push-admin`,
//! `push-subscribe`, `stats`, `subscribe`) or `*`, meaning all of them, including operations
//! Ably may add later. `*` must stand alone; an empty list, an unknown name or a duplicate
//! resource is an error ([`CapabilityError`]), which the HTTP layer answers with 400/40000.
//!
//! # Canonical form
//!
//! [`CapabilitySet::to_json`] writes resources sorted by their UTF-8 bytes, operations sorted
//! by name, no whitespace, and standard JSON escapes: the form Ably documents and ably-js
//! produces, so the same set always signs to the same bytes.
//!
//! # Covering, union, intersection
//!
//! - A pattern `p` **covers** a pattern `q` when every channel `q` matches is matched by `p`
//!   ([`Resource::covers`]).
//! - A set **covers** a grant `(r, ops)` when the operations of all its resources that cover
//!   `r`, taken together, include `ops` ([`CapabilitySet::covers`]). A requested `*` is covered
//!   only by a held `*`: listing all 17 operations is not the same as `*`.
//! - The **union** of two sets has every resource of either, with the union of its operations
//!   ([`CapabilitySet::union`]); it never invents a resource or an operation.
//! - The **intersection** with an Ably key's capability follows what Ably does when it issues a
//!   token: for each overlapping pair, the more specific resource is kept with the common
//!   operations ([`CapabilitySet::intersect`]).
//!
//! ```
//! use capsign_core::capability::{CapabilitySet, Operation, OpSet, Resource};
//!
//! let held = CapabilitySet::from_json(r#"{"chat:*":["subscribe"],"dm:alice":["*"]}"#)?;
//! assert!(held.covers_json(r#"{"chat:lobby:1":["subscribe"]}"#)?);
//! assert!(!held.covers_json(r#"{"chat":["subscribe"]}"#)?);
//! assert!(!held.covers_json(r#"{"chat:lobby":["publish"]}"#)?);
//!
//! let more = CapabilitySet::from_json(r#"{ "chat:*": ["publish"] }"#)?;
//! let merged = held.union(&more);
//! assert_eq!(
//!     merged.to_json(),
//!     r#"{"chat:*":["publish","subscribe"],"dm:alice":["*"]}"#
//! );
//! // What the set allows on one channel: the union over the patterns that cover it.
//! assert_eq!(
//!     merged.allowed_ops(&Resource::new("chat:x")?),
//!     OpSet::from(Operation::Publish) | Operation::Subscribe.into()
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use smallvec::SmallVec;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::json::{JsonStr, needs_escape, push_json_string};

/// The longest resource name capsign accepts, in bytes. Ably documents no limit; this one keeps
/// a single grant from filling the cookie and bounds the work of matching.
pub const MAX_RESOURCE_LEN: usize = 512;

/// The most resources one parsed capability may hold. The cookie could not carry more anyway.
pub const MAX_RESOURCES: usize = 1024;

/// Why a capability was refused. Each variant names what was wrong, so a client sees which
/// resource or operation to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The text is not a JSON object of string arrays.
    #[error("capability is not valid JSON of the form {{\"resource\":[\"op\",...]}}: {0}")]
    Json(String),
    /// The resource name is empty.
    #[error("empty resource name in capability")]
    EmptyResource,
    /// The resource name is longer than [`MAX_RESOURCE_LEN`].
    #[error("resource {0:?} is longer than {MAX_RESOURCE_LEN} bytes")]
    ResourceTooLong(String),
    /// The resource contains a control character.
    #[error("resource {0:?} contains a control character")]
    ControlCharacter(String),
    /// The resource has a bracketed qualifier that is not `[*]`, `[queue]` or `[meta]`.
    #[error("resource {0:?} has an unknown qualifier; use [*], [queue] or [meta]")]
    UnknownQualifier(String),
    /// The same resource appears twice in one capability.
    #[error("resource {0:?} appears more than once in capability")]
    DuplicateResource(String),
    /// More resources than [`MAX_RESOURCES`].
    #[error("capability has more than {MAX_RESOURCES} resources")]
    TooManyResources,
    /// An operation name that Ably does not know.
    #[error("unknown operation {op:?} for resource {resource:?}")]
    UnknownOperation {
        /// The resource whose list held the operation.
        resource: String,
        /// The operation as given.
        op: String,
    },
    /// `*` together with other operations.
    #[error("operation \"*\" must stand alone, for resource {0:?}")]
    WildcardMixed(String),
    /// An empty operation list.
    #[error("empty operation list for resource {0:?}")]
    EmptyOperations(String),
}

macro_rules! operations {
    ($($variant:ident = $name:literal,)*) => {
        /// One Ably operation. Declared in the order of their names, so that a bit set iterates
        /// in canonical order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[allow(missing_docs)]
        pub enum Operation {
            $($variant,)*
        }

        impl Operation {
            /// Every operation, in canonical (name) order.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant,)*];

            /// The operation's wire name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Operation::$variant => $name,)*
                }
            }

            /// The wire name in JSON quotes: `"name"`, or `\"name\"` (`escaped`) for a JSON
            /// text inside a JSON string literal.
            const fn quoted(self, escaped: bool) -> &'static str {
                match (self, escaped) {
                    $((Operation::$variant, false) => concat!("\"", $name, "\""),)*
                    $((Operation::$variant, true) => concat!("\\\"", $name, "\\\""),)*
                }
            }

            /// Looks an operation up by its wire name.
            pub fn from_name(name: &str) -> Option<Operation> {
                match name {
                    $($name => Some(Operation::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

operations! {
    AnnotationPublish = "annotation-publish",
    AnnotationSubscribe = "annotation-subscribe",
    ChannelMetadata = "channel-metadata",
    History = "history",
    MessageDeleteAny = "message-delete-any",
    MessageDeleteOwn = "message-delete-own",
    MessageUpdateAny = "message-update-any",
    MessageUpdateOwn = "message-update-own",
    ObjectPublish = "object-publish",
    ObjectSubscribe = "object-subscribe",
    Presence = "presence",
    PrivilegedHeaders = "privileged-headers",
    Publish = "publish",
    PushAdmin = "push-admin",
    PushSubscribe = "push-subscribe",
    Stats = "stats",
    Subscribe = "subscribe",
}

const _: () = assert!(Operation::ALL.len() == 17);

/// A set of operations, or the wildcard `*`. Stored as bits: bit `i` is `Operation::ALL[i]`,
/// bit [`OpSet::WILDCARD_BIT`] is `*`. A set holding `*` holds nothing else (canonical form).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OpSet(u32);

impl OpSet {
    /// The bit that stands for `*`.
    pub const WILDCARD_BIT: u32 = 1 << 17;
    const OPS_MASK: u32 = Self::WILDCARD_BIT - 1;

    /// The empty set.
    pub const EMPTY: OpSet = OpSet(0);
    /// `*`: every operation, now and later.
    pub const WILDCARD: OpSet = OpSet(Self::WILDCARD_BIT);

    /// The raw bits, as the grant cookie stores them.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Rebuilds a set from [`OpSet::bits`]; `None` for bits that no canonical set has.
    pub const fn from_bits(bits: u32) -> Option<OpSet> {
        if bits == Self::WILDCARD_BIT || (bits & !Self::OPS_MASK == 0) {
            Some(OpSet(bits))
        } else {
            None
        }
    }

    /// Whether the set is `*`.
    pub const fn is_wildcard(self) -> bool {
        self.0 == Self::WILDCARD_BIT
    }

    /// Whether the set holds no operation at all.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every operation of `self` is in `other`. Only `*` covers `*`.
    pub const fn is_subset(self, other: OpSet) -> bool {
        other.is_wildcard() || (!self.is_wildcard() && self.0 & !other.0 == 0)
    }

    /// The operations of either set; `*` absorbs everything.
    #[must_use]
    pub const fn union(self, other: OpSet) -> OpSet {
        if self.is_wildcard() || other.is_wildcard() {
            OpSet::WILDCARD
        } else {
            OpSet(self.0 | other.0)
        }
    }

    /// The operations of both sets; `*` is the identity, as in Ably's token intersection.
    #[must_use]
    pub const fn intersection(self, other: OpSet) -> OpSet {
        if self.is_wildcard() {
            other
        } else if other.is_wildcard() {
            self
        } else {
            OpSet(self.0 & other.0)
        }
    }

    /// The operations of `self` not in `other`. `*` minus anything but `*` stays `*`, since
    /// no finite list of operations stands for it.
    #[must_use]
    pub const fn difference(self, other: OpSet) -> OpSet {
        if other.is_wildcard() {
            OpSet::EMPTY
        } else if self.is_wildcard() {
            OpSet::WILDCARD
        } else {
            OpSet(self.0 & !other.0)
        }
    }

    /// Writes the names, quoted as [`Operation::quoted`] does and separated by commas.
    fn push_quoted(self, out: &mut String, escaped: bool) {
        if self.is_wildcard() {
            out.push_str(if escaped { "\\\"*\\\"" } else { "\"*\"" });
            return;
        }
        let mut bits = self.0 & Self::OPS_MASK;
        let mut first = true;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(op) = Operation::ALL.get(i) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(op.quoted(escaped));
            }
        }
    }

    /// The operations' names in canonical order (`["*"]` for the wildcard).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        let wildcard = self.is_wildcard();
        // Visits only the set bits, lowest (first in name order) first.
        let mut bits = self.0 & Self::OPS_MASK;
        std::iter::once("*")
            .filter(move |_| wildcard)
            .chain(std::iter::from_fn(move || {
                while bits != 0 {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if let Some(op) = Operation::ALL.get(i) {
                        return Some(op.name());
                    }
                }
                None
            }))
    }

    /// Parses an operation list as it appears in capability JSON, for `resource`.
    ///
    /// # Errors
    ///
    /// An empty list, an unknown name, or `*` beside other names.
    pub fn from_names<'a>(
        resource: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<OpSet, CapabilityError> {
        let mut set = OpSet::EMPTY;
        let mut wildcard = false;
        let mut count = 0usize;
        for name in names {
            count += 1;
            if name == "*" {
                wildcard = true;
            } else if let Some(op) = Operation::from_name(name) {
                set = set | op.into();
            } else {
                return Err(CapabilityError::UnknownOperation {
                    resource: resource.to_owned(),
                    op: name.to_owned(),
                });
            }
        }
        match (count, wildcard) {
            (0, _) => Err(CapabilityError::EmptyOperations(resource.to_owned())),
            (_, true) if !set.is_empty() => {
                Err(CapabilityError::WildcardMixed(resource.to_owned()))
            }
            (_, true) => Ok(OpSet::WILDCARD),
            (_, false) => Ok(set),
        }
    }
}

impl From<Operation> for OpSet {
    fn from(op: Operation) -> OpSet {
        OpSet(1 << (op as u32))
    }
}

impl std::ops::BitOr for OpSet {
    type Output = OpSet;
    fn bitor(self, rhs: OpSet) -> OpSet {
        self.union(rhs)
    }
}

impl fmt::Debug for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// The kind of resource a pattern names, from its bracketed qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    /// No qualifier: an ordinary channel.
    Channel,
    /// `[*]`: channels, queues and metachannels.
    Any,
    /// `[queue]`.
    Queue,
    /// `[meta]`.
    Meta,
}

/// A validated resource name or pattern, as it appears in a capability. A name of up to 23
/// bytes (most channel names) is stored inline, a longer one shared: creating one allocates
/// only for long names, and cloning never does, so the sets of a request (held, requested,
/// new, granted, minted) copy no names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource(smol_str::SmolStr);

impl Resource {
    /// Validates a resource name (see the module's `# Syntax`).
    ///
    /// # Errors
    ///
    /// Empty, too long, control characters, or an unknown qualifier.
    pub fn new(name: impl AsRef<str>) -> Result<Resource, CapabilityError> {
        let name = name.as_ref();
        check_resource(name)?;
        Ok(Resource(smol_str::SmolStr::new(name)))
    }

    /// The resource as it is written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the resource is a pattern, covering more than itself: the `[*]` qualifier, or a
    /// segment that is exactly `*` (`*`, `chat:*`, `chat:*:b`). A `*` inside a segment is a
    /// literal character: `news*` names one channel.
    ///
    /// ```
    /// use capsign_core::capability::Resource;
    /// let r = |s: &str| Resource::new(s).unwrap();
    /// assert!(r("*").is_pattern() && r("chat:*").is_pattern() && r("[*]log").is_pattern());
    /// assert!(r("a:*:b").is_pattern() && r("[queue]*").is_pattern());
    /// assert!(!r("news*").is_pattern() && !r("a*b:c").is_pattern() && !r("[meta]log").is_pattern());
    /// ```
    pub fn is_pattern(&self) -> bool {
        match split_qualifier(&self.0) {
            Some((Qualifier::Any, _)) => true,
            Some((_, rest)) => rest.split(':').any(|segment| segment == "*"),
            None => false,
        }
    }

    /// Whether every channel this pattern matches is also matched by `self`.
    ///
    /// ```
    /// use capsign_core::capability::Resource;
    /// let r = |s: &str| Resource::new(s).unwrap();
    /// assert!(r("chat:*").covers(&r("chat:a:b")));
    /// assert!(r("chat:*").covers(&r("chat:*:b")));
    /// assert!(!r("chat:*:b").covers(&r("chat:*")));
    /// assert!(!r("*").covers(&r("[queue]q")));
    /// assert!(r("[*]*").covers(&r("[meta]log")));
    /// ```
    pub fn covers(&self, other: &Resource) -> bool {
        covers(&self.0, &other.0)
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Resource {
    fn borrow(&self) -> &str {
        &self.0
    }
}

fn check_resource(name: &str) -> Result<(), CapabilityError> {
    if name.is_empty() {
        return Err(CapabilityError::EmptyResource);
    }
    if name.len() > MAX_RESOURCE_LEN {
        let mut cut = MAX_RESOURCE_LEN.min(40);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let shown = name.split_at(cut).0;
        return Err(CapabilityError::ResourceTooLong(format!("{shown}...")));
    }
    let control = if name.is_ascii() {
        name.bytes().any(|b| b.is_ascii_control())
    } else {
        name.chars().any(char::is_control)
    };
    if control {
        return Err(CapabilityError::ControlCharacter(name.to_owned()));
    }
    match split_qualifier(name) {
        Some((_, "")) | None => Err(CapabilityError::UnknownQualifier(name.to_owned())),
        Some(_) => Ok(()),
    }
}

/// Splits `[qualifier]rest`. `None` for a bracket that opens no known qualifier.
fn split_qualifier(name: &str) -> Option<(Qualifier, &str)> {
    let Some(tail) = name.strip_prefix('[') else {
        return Some((Qualifier::Channel, name));
    };
    let (qual, rest) = tail.split_once(']')?;
    let qual = match qual {
        "*" => Qualifier::Any,
        "queue" => Qualifier::Queue,
        "meta" => Qualifier::Meta,
        _ => return None,
    };
    Some((qual, rest))
}

/// What every resource a pattern covers starts with: the pattern up to its first `*`, or
/// nothing for a `[*]` pattern (which covers other qualifiers too). Also true of the start of
/// a pattern, the literal text before a rule's first template.
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    if pattern.starts_with("[*]") {
        return "";
    }
    pattern.split('*').next().unwrap_or_default()
}

/// Pattern covering (see [`Resource::covers`]) on validated names.
fn covers(p: &str, q: &str) -> bool {
    // Only a `*` (a wildcard segment or the `[*]` qualifier) widens a pattern.
    if p == q {
        return true;
    }
    if !p.as_bytes().contains(&b'*') {
        return false;
    }
    let (Some((pq, p)), Some((qq, q))) = (split_qualifier(p), split_qualifier(q)) else {
        return false;
    };
    if !(pq == Qualifier::Any || pq == qq) {
        return false;
    }
    // Split as bytes: `:` is ASCII, and a byte search costs less than a `char` pattern.
    let mut ps = p.as_bytes().split(|&b| b == b':').peekable();
    let mut qs = q.as_bytes().split(|&b| b == b':').peekable();
    loop {
        match (ps.next(), qs.next()) {
            (None, None) => return true,
            (Some(pseg), Some(qseg)) => {
                let p_last = ps.peek().is_none();
                let q_last = qs.peek().is_none();
                if pseg == b"*" {
                    if p_last {
                        // A trailing `*` matches one or more segments: whatever is left of q.
                        return true;
                    }
                    // A middle `*` matches one segment; q's trailing `*` may match several.
                    if qseg == b"*" && q_last {
                        return false;
                    }
                } else if qseg == b"*" || pseg != qseg {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// A set of grants: resource patterns, each with its operations. Kept in canonical order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CapabilitySet {
    /// Sorted by resource, each resource once, every operation set non-empty.
    entries: Vec<(Resource, OpSet)>,
}

impl CapabilitySet {
    /// The empty set.
    pub fn new() -> CapabilitySet {
        CapabilitySet::default()
    }

    /// Parses capability JSON (see the module's `# Syntax`).
    ///
    /// # Errors
    ///
    /// Malformed JSON, a bad resource or operation, a duplicate resource, or more than
    /// [`MAX_RESOURCES`] resources.
    pub fn from_json(text: &str) -> Result<CapabilitySet, CapabilityError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let set = de
            .deserialize_map(SetVisitor)
            .map_err(|e| CapabilityError::Json(e.to_string()))
            .and_then(|r| r)?;
        de.end().map_err(|e| CapabilityError::Json(e.to_string()))?;
        Ok(set)
    }

    /// Builds a set from a parsed JSON value (a JSON body may carry the capability as an
    /// object instead of a string).
    ///
    /// # Errors
    ///
    /// As [`CapabilitySet::from_json`].
    pub fn from_value(value: &serde_json::Value) -> Result<CapabilitySet, CapabilityError> {
        let obj = value
            .as_object()
            .ok_or_else(|| CapabilityError::Json("expected an object".into()))?;
        if obj.len() > MAX_RESOURCES {
            return Err(CapabilityError::TooManyResources);
        }
        let mut set = CapabilitySet::new();
        for (name, ops) in obj {
            let arr = ops.as_array().ok_or_else(|| {
                CapabilityError::Json(format!("operations of {name:?} must be an array"))
            })?;
            let names = arr
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        CapabilityError::Json(format!("operations of {name:?} must be strings"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ops = OpSet::from_names(name, names)?;
            set.insert(Resource::new(name.clone())?, ops);
        }
        Ok(set)
    }

    /// Whether the set holds no grant.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many resources the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A set from entries already in canonical order with distinct resources and non-empty
    /// operations (a [`crate::grants::GrantSet`]'s), built in one pass.
    pub(crate) fn from_sorted(entries: impl Iterator<Item = (Resource, OpSet)>) -> CapabilitySet {
        let entries: Vec<(Resource, OpSet)> = entries.collect();
        debug_assert!(entries.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0)));
        CapabilitySet { entries }
    }

    /// Where `resource` is, or would be inserted.
    fn find(&self, resource: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(r, _)| r.as_str().cmp(resource))
    }

    /// Adds operations to a resource (union with what it already has).
    pub fn insert(&mut self, resource: Resource, ops: OpSet) {
        if ops.is_empty() {
            return;
        }
        match self.find(resource.as_str()) {
            Ok(i) => {
                if let Some((_, held)) = self.entries.get_mut(i) {
                    *held = held.union(ops);
                }
            }
            Err(i) => self.entries.insert(i, (resource, ops)),
        }
    }

    /// Removes a resource and returns its operations.
    pub fn remove(&mut self, resource: &str) -> Option<OpSet> {
        let i = self.find(resource).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// The operations listed for exactly this resource.
    pub fn ops_for(&self, resource: &str) -> Option<OpSet> {
        let i = self.find(resource).ok()?;
        self.entries.get(i).map(|(_, ops)| *ops)
    }

    /// The entries in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&Resource, OpSet)> {
        self.entries.iter().map(|(r, o)| (r, *o))
    }

    /// The operations this set allows on `resource`: the union over every held pattern that
    /// covers it.
    pub fn allowed_ops(&self, resource: &Resource) -> OpSet {
        self.entries
            .iter()
            .filter(|(held, _)| held.covers(resource))
            .fold(OpSet::EMPTY, |acc, (_, ops)| acc.union(*ops))
    }

    /// Whether the set allows `ops` on `resource`.
    pub fn covers(&self, resource: &Resource, ops: OpSet) -> bool {
        ops.is_subset(self.allowed_ops(resource))
    }

    /// Whether the set covers every grant of `other`.
    pub fn covers_set(&self, other: &CapabilitySet) -> bool {
        other.iter().all(|(r, ops)| self.covers(r, ops))
    }

    /// [`CapabilitySet::covers_set`] on capability JSON, for examples and tests.
    ///
    /// # Errors
    ///
    /// When `json` does not parse.
    pub fn covers_json(&self, json: &str) -> Result<bool, CapabilityError> {
        Ok(self.covers_set(&CapabilitySet::from_json(json)?))
    }

    /// The part of `requested` that this set does not already cover: for each resource, the
    /// operations not yet allowed. This is what goes to the policy.
    pub fn uncovered(&self, requested: &CapabilitySet) -> CapabilitySet {
        let mut out = CapabilitySet::new();
        for (r, ops) in requested.iter() {
            let missing = ops.difference(self.allowed_ops(r));
            out.insert(r.clone(), missing);
        }
        out
    }

    /// Every grant of either set.
    #[must_use]
    pub fn union(&self, other: &CapabilitySet) -> CapabilitySet {
        let mut out = self.clone();
        for (r, ops) in other.iter() {
            out.insert(r.clone(), ops);
        }
        out
    }

    /// What remains of this set under an Ably key's capability, the way Ably computes a
    /// token's capability: for each overlapping pair the more specific resource, with the
    /// operations both allow. Pairs that only partly overlap (`a:*:c` against `a:b:*`) are
    /// dropped, since no single pattern names their overlap: capsign under-grants rather than
    /// over-grants.
    #[must_use]
    pub fn intersect(&self, key: &CapabilitySet) -> CapabilitySet {
        let mut out = CapabilitySet::new();
        for (r, ops) in self.iter() {
            for (k, kops) in key.iter() {
                let common = ops.intersection(kops);
                if common.is_empty() {
                    continue;
                }
                if k.covers(r) {
                    out.insert(r.clone(), common);
                } else if r.covers(k) {
                    out.insert(k.clone(), common);
                }
            }
        }
        out
    }

    /// The canonical JSON text (see the module's `# Canonical form`).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.json_len_hint());
        self.write_json(&mut out, false);
        out
    }

    /// Appends the canonical JSON as a JSON string literal: what `x-ably-capability` holds in a
    /// JWT's claims. The same bytes as serializing [`CapabilitySet::to_json`]'s text, in one
    /// pass when no resource name needs escaping (the usual case).
    pub fn push_json_literal(&self, out: &mut String) {
        if self.entries.iter().any(|(r, _)| needs_escape(r.as_str())) {
            push_json_string(out, &self.to_json());
            return;
        }
        out.reserve(self.json_len_hint() * 5 / 4);
        out.push('"');
        self.write_json(out, true);
        out.push('"');
    }

    /// Writes the canonical JSON: as the text itself, or `escaped` as the body of a string
    /// literal (every quote `\"`; names then need no escaping: the caller checks).
    fn write_json(&self, out: &mut String, escaped: bool) {
        out.push('{');
        for (i, (r, ops)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if escaped {
                out.push_str("\\\"");
                out.push_str(r.as_str());
                out.push_str("\\\":[");
            } else {
                push_json_string(out, r.as_str());
                out.push_str(":[");
            }
            ops.push_quoted(out, escaped);
            out.push(']');
        }
        out.push('}');
    }

    /// Room for the JSON: the name, quotes and brackets, and about 16 bytes per operation.
    fn json_len_hint(&self) -> usize {
        2 + self
            .entries
            .iter()
            .map(|(r, ops)| r.as_str().len() + 8 + 16 * ops.0.count_ones() as usize)
            .sum::<usize>()
    }
}

impl fmt::Debug for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(r, o)| (r, o)))
            .finish()
    }
}

impl fmt::Display for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl FromIterator<(Resource, OpSet)> for CapabilitySet {
    /// Collected, then sorted once and merged (a resource given twice gets the union).
    fn from_iter<I: IntoIterator<Item = (Resource, OpSet)>>(iter: I) -> Self {
        let mut entries: Vec<(Resource, OpSet)> = iter
            .into_iter()
            .filter(|(_, ops)| !ops.is_empty())
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = kept.1.union(later.1);
            }
            same
        });
        CapabilitySet { entries }
    }
}

/// Streams a capability object without building a `serde_json::Value`, so duplicate keys are
/// seen (a `Value` would silently keep the last) and nesting beyond strings fails at once.
struct SetVisitor;

impl<'de> Visitor<'de> for SetVisitor {
    type Value = Result<CapabilitySet, CapabilityError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object mapping resources to arrays of operations")
    }

    /// Entries are kept in document order and sorted once at the end. The first error in
    /// document order is the one reported (a resource named twice counts at its second
    /// mention): the rest of the object is then only read through, so that the error is
    /// this one and not the JSON reader's complaint about an object left half read.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(Resource, OpSet)> = Vec::new();
        let mut error = None;
        while let Some(JsonStr(name)) = map.next_key::<JsonStr<'de>>()? {
            let ops: OpNames = map.next_value()?;
            match entry(&entries, &name, &ops) {
                Ok(entry) => entries.push(entry),
                Err((named, e)) => {
                    // A resource named twice before this entry's error comes first.
                    entries.extend(named.map(|r| (r, OpSet::EMPTY)));
                    error = Some(first_duplicate(&entries).unwrap_or(e));
                    break;
                }
            }
        }
        if let Some(error) = error {
            while map.next_key::<IgnoredAny>()?.is_some() {
                map.next_value::<IgnoredAny>()?;
            }
            return Ok(Err(error));
        }
        if let Some(dup) = first_duplicate(&entries) {
            return Ok(Err(dup));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(Ok(CapabilitySet { entries }))
    }
}

/// One entry of a capability object read so far; on an error, the resource when its name
/// was valid (its operations were not), so a repeat of it still counts first.
fn entry(
    entries: &[(Resource, OpSet)],
    name: &str,
    ops: &OpNames<'_>,
) -> Result<(Resource, OpSet), (Option<Resource>, CapabilityError)> {
    if entries.len() >= MAX_RESOURCES {
        return Err((None, CapabilityError::TooManyResources));
    }
    let resource = Resource::new(name).map_err(|e| (None, e))?;
    match OpSet::from_names(resource.as_str(), ops.0.iter().map(|s| &*s.0)) {
        Ok(ops) => Ok((resource, ops)),
        Err(e) => Err((Some(resource), e)),
    }
}

/// The resource named twice whose second mention comes first in `entries` (document order),
/// as the error reading it would give: by comparing pairs for a few entries (no allocation),
/// by sorting positions for more (`O(n log n)`).
fn first_duplicate(entries: &[(Resource, OpSet)]) -> Option<CapabilityError> {
    let name = |i: usize| entries.get(i).map(|(r, _)| r.as_str());
    let second = if entries.len() <= 16 {
        (1..entries.len()).find(|&j| (0..j).any(|i| name(i) == name(j)))
    } else {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| name(a).cmp(&name(b)).then(a.cmp(&b)));
        order
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if name(*a) == name(*b) => Some(*b),
                _ => None,
            })
            .min()
    };
    let (r, _) = entries.get(second?)?;
    Some(CapabilityError::DuplicateResource(r.as_str().to_owned()))
}

/// An operation list as written, bounded so a huge array cannot grow without limit (a
/// usual list stays on the stack).
struct OpNames<'de>(SmallVec<[JsonStr<'de>; 8]>);

impl<'de> de::Deserialize<'de> for OpNames<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OpNames<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of operation names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OpNames<'de>, A::Error> {
                // 18 names is everything; duplicates beyond a generous bound are an attack.
                const MAX_OPS: usize = 64;
                let mut names = SmallVec::new();
                while let Some(name) = seq.next_element::<JsonStr<'de>>()? {
                    if names.len() >= MAX_OPS {
                        return Err(de::Error::custom("too many operations"));
                    }
                    names.push(name);
                }
                Ok(OpNames(names))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resource {
        Resource::new(s).unwrap()
    }

    macro_rules! covers_table {
        ($($name:ident: $p:literal covers $q:literal => $expected:literal;)*) => {
            $(#[test]
            fn $name() {
                assert_eq!(r($p).covers(&r($q)), $expected, "{} covers {}", $p, $q);
            })*
        };
    }

    covers_table! {
        exact: "chat" covers "chat" => true;
        different: "chat" covers "chats" => false;
        trailing_star_one: "chat:*" covers "chat:a" => true;
        trailing_star_deep: "chat:*" covers "chat:a:b:c" => true;
        trailing_star_not_bare: "chat:*" covers "chat" => false;
        trailing_star_pattern: "chat:*" covers "chat:a:*" => true;
        middle_star_one: "foo:*:baz" covers "foo:bar:baz" => true;
        middle_star_not_two: "foo:*:baz" covers "foo:bar:bam:baz" => false;
        middle_vs_trailing: "foo:*:baz" covers "foo:*" => false;
        middle_vs_middle: "foo:*:baz" covers "foo:*:baz" => true;
        literal_vs_star: "chat:a" covers "chat:*" => false;
        star_all_channels: "*" covers "a:b:c" => true;
        star_star: "*" covers "*" => true;
        star_not_queue: "*" covers "[queue]app-q" => false;
        star_not_meta: "*" covers "[meta]log" => false;
        any_qual_covers_channel: "[*]*" covers "chat:x" => true;
        any_qual_covers_queue: "[*]*" covers "[queue]x" => true;
        any_qual_covers_star: "[*]*" covers "*" => true;
        star_not_any_qual: "*" covers "[*]*" => false;
        queue_star: "[queue]*" covers "[queue]app-q" => true;
        queue_not_meta: "[queue]*" covers "[meta]x" => false;
        star_char_literal: "foo*" covers "foo*" => true;
        star_char_not_wild: "foo*" covers "foobar" => false;
        literal_star_segment_not_covered: "chat:x" covers "chat:x:*" => false;
    }

    #[test]
    fn parse_rejects_bad_input() {
        use CapabilityError::*;
        let err = |s: &str| CapabilitySet::from_json(s).unwrap_err();
        assert_eq!(err(r#"{"a":["*","publish"]}"#), WildcardMixed("a".into()));
        assert_eq!(err(r#"{"a":[]}"#), EmptyOperations("a".into()));
        assert_eq!(
            err(r#"{"a":["publish_"]}"#),
            UnknownOperation {
                resource: "a".into(),
                op: "publish_".into()
            }
        );
        assert_eq!(
            err(r#"{"a":["publish"],"a":["subscribe"]}"#),
            DuplicateResource("a".into())
        );
        assert_eq!(err(r#"{"":["publish"]}"#), EmptyResource);
        assert_eq!(
            err(r#"{"[foo]x":["publish"]}"#),
            UnknownQualifier("[foo]x".into())
        );
        assert_eq!(
            err(r#"{"[meta]":["publish"]}"#),
            UnknownQualifier("[meta]".into())
        );
        assert_eq!(
            err("{\"a\\u0000b\":[\"publish\"]}"),
            ControlCharacter("a\0b".into())
        );
        assert!(matches!(err("[]"), Json(_)));
        assert!(matches!(err(r#"{"a":"publish"}"#), Json(_)));
        assert!(matches!(err(r#"{"a":[["publish"]]}"#), Json(_)));
        assert!(matches!(err(r#"{"a":["publish"]} x"#), Json(_)));
        assert!(matches!(err(&"[".repeat(10_000)), Json(_)));
        let long = format!("{{\"{}\":[\"publish\"]}}", "é".repeat(MAX_RESOURCE_LEN));
        assert!(matches!(err(&long), ResourceTooLong(_)));
    }

    #[test]
    fn canonical_form_matches_ably_js() {
        // Vector V3/V4 of docs/ably-protocol.md §1.3: ably-js canonicalised these inputs.
        let set = CapabilitySet::from_json(
            r#"{"notifications":["subscribe"], "chat:*":["subscribe","publish","presence"]}"#,
        )
        .unwrap();
        assert_eq!(
            set.to_json(),
            r#"{"chat:*":["presence","publish","subscribe"],"notifications":["subscribe"]}"#
        );
        let set = CapabilitySet::from_json(r#"{ "[*]*" : [ "*" ] }"#).unwrap();
        assert_eq!(set.to_json(), r#"{"[*]*":["*"]}"#);
        let set = CapabilitySet::from_json(r#"{"é\"\\/":["publish","publish"]}"#).unwrap();
        assert_eq!(set.to_json(), r#"{"é\"\\/":["publish"]}"#);
    }

    #[test]
    fn set_covering_unions_covering_patterns() {
        let held = CapabilitySet::from_json(r#"{"chat:*":["publish"],"*":["subscribe"]}"#).unwrap();
        assert!(
            held.covers_json(r#"{"chat:x":["publish","subscribe"]}"#)
                .unwrap()
        );
        assert!(!held.covers_json(r#"{"news":["publish"]}"#).unwrap());
        assert!(!held.covers_json(r#"{"chat:x":["*"]}"#).unwrap());
    }

    #[test]
    fn uncovered_keeps_only_missing_ops() {
        let held = CapabilitySet::from_json(r#"{"chat:a":["subscribe"]}"#).unwrap();
        let req = CapabilitySet::from_json(r#"{"chat:a":["publish","subscribe"],"chat:b":["*"]}"#)
            .unwrap();
        assert_eq!(
            held.uncovered(&req).to_json(),
            r#"{"chat:a":["publish"],"chat:b":["*"]}"#
        );
        assert!(req.uncovered(&req).is_empty());
    }

    #[test]
    fn intersection_with_key_capability() {
        // The table of docs/ably-protocol.md §3.4.
        let key = CapabilitySet::from_json(
            r#"{"channel2":["publish","subscribe"],"channel6":["*"],"canpublish:*":["publish"]}"#,
        )
        .unwrap();
        let i = |req: &str| {
            CapabilitySet::from_json(req)
                .unwrap()
                .intersect(&key)
                .to_json()
        };
        assert_eq!(
            i(r#"{"channel2":["presence","subscribe"]}"#),
            r#"{"channel2":["subscribe"]}"#
        );
        assert_eq!(
            i(r#"{"channel2":["subscribe"],"channelx":["subscribe"]}"#),
            r#"{"channel2":["subscribe"]}"#
        );
        assert_eq!(
            i(r#"{"channel2":["*"]}"#),
            r#"{"channel2":["publish","subscribe"]}"#
        );
        assert_eq!(
            i(r#"{"canpublish:check":["publish"]}"#),
            r#"{"canpublish:check":["publish"]}"#
        );
        assert_eq!(i(r#"{"canpublish:test":["subscribe"]}"#), "{}");
        assert_eq!(
            i(r#"{"[*]*":["*"]}"#),
            r#"{"canpublish:*":["publish"],"channel2":["publish","subscribe"],"channel6":["*"]}"#
        );
    }

    #[test]
    fn opset_bits_round_trip_and_reject_noncanonical() {
        for op in Operation::ALL {
            let set = OpSet::from(*op);
            assert_eq!(OpSet::from_bits(set.bits()), Some(set));
        }
        assert_eq!(
            OpSet::from_bits(OpSet::WILDCARD_BIT | 1),
            None,
            "wildcard mixed"
        );
        assert_eq!(OpSet::from_bits(1 << 20), None);
    }

    /// `from_json` against a plain reading (each entry checked in document order, the first
    /// error kept), on documents built from a few names, repeated, with good and bad operation
    /// lists: the same set, or the same first error (once, before the set was sorted at the
    /// end, an error before the last entry came out as "trailing comma").
    mod reading_order {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// Each entry checked in document order, the first error kept.
        fn reference(entries: &[(String, Vec<String>)]) -> Result<String, String> {
            let mut set: BTreeMap<Resource, OpSet> = BTreeMap::new();
            for (name, ops) in entries {
                if set.len() >= MAX_RESOURCES {
                    return Err(CapabilityError::TooManyResources.to_string());
                }
                let r = Resource::new(name).map_err(|e| e.to_string())?;
                if set.contains_key(r.as_str()) {
                    return Err(CapabilityError::DuplicateResource(name.clone()).to_string());
                }
                let ops = OpSet::from_names(name, ops.iter().map(String::as_str))
                    .map_err(|e| e.to_string())?;
                set.insert(r, ops);
            }
            Ok(CapabilitySet::from_sorted(set.into_iter()).to_json())
        }

        fn entry() -> impl Strategy<Value = (String, Vec<String>)> {
            let name = prop_oneof![
                Just("a"),
                Just("b"),
                Just("chat:*"),
                Just("c:d"),
                Just("z"),
                Just("x]y"),
                Just(""),
                Just("q")
            ]
            .prop_map(str::to_owned);
            let ops = prop_oneof![
                Just(vec!["subscribe"]),
                Just(vec!["publish", "subscribe"]),
                Just(vec!["*"]),
                Just(vec![]),
                Just(vec!["fly"]),
                Just(vec!["*", "publish"]),
            ]
            .prop_map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
            (name, ops)
        }

        proptest! {
            #[test]
            fn from_json_reads_as_the_one_pass_map_did(
                entries in proptest::collection::vec(entry(), 0..24),
                distinct in 0usize..24,
            ) {
                // Past `distinct`, names get a suffix: long documents without early repeats.
                let entries: Vec<(String, Vec<String>)> = entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, (n, o))| if i >= distinct { (format!("{n}{i}"), o) } else { (n, o) })
                    .collect();
                let text = format!(
                    "{{{}}}",
                    entries
                        .iter()
                        .map(|(n, o)| format!("{}:{}", serde_json::json!(n), serde_json::json!(o)))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let ours = CapabilitySet::from_json(&text)
                    .map(|s| s.to_json())
                    .map_err(|e| e.to_string());
                prop_assert_eq!(ours, reference(&entries), "{}", text);
            }
        }
    }
}
