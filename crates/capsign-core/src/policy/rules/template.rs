//! The two template dialects of a rules file, with one placeholder check: a resource pattern
//! (`{clientId}` and `{claims.NAME}`, braces reserved: a stray one is an error; rendered values
//! may not change the pattern's shape) and a user claim (the same placeholders, any other text
//! literal, JSON braces included; values escaped as JSON string content).

use std::borrow::Cow;

use crate::capability::Resource;
use crate::identity::Identity;

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    Literal(String),
    ClientId,
    Claim(String),
}

/// The placeholder `{name}` names, if any: `clientId`, or `claims.NAME` where NAME is ASCII
/// letters, digits, `_`, `-` and `.`. The one check of both template dialects.
pub(super) fn placeholder(name: &str) -> Option<Piece> {
    if name == "clientId" {
        return Some(Piece::ClientId);
    }
    let claim = name.strip_prefix("claims.")?;
    let ok = !claim.is_empty()
        && claim
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    ok.then(|| Piece::Claim(claim.to_owned()))
}

/// A claim template: `{clientId}` and `{claims.NAME}` are placeholders, any other text (JSON
/// braces included) is literal.
pub(super) fn parse_claim_template(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let (lit, tail) = rest.split_at(open);
        literal.push_str(lit);
        let placeholder = tail
            .find('}')
            .and_then(|close| Some((placeholder(tail.get(1..close)?)?, close)));
        match placeholder {
            Some((piece, close)) => {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                // `close` is at a `}`: one byte.
                rest = tail.split_at(close + 1).1;
            }
            None => {
                literal.push('{');
                // `tail` starts with the `{` found.
                rest = tail.split_at(1).1;
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    pieces
}

/// Renders a claim template for `who`, each value escaped as JSON string content; `None` when
/// a value is missing.
pub(super) fn render_claim(pieces: &[Piece], who: &Identity) -> Option<String> {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Literal(s) => out.push_str(s),
            other => {
                crate::json::push_escaped(&mut out, &substitution(who, other)?);
            }
        }
    }
    Some(out)
}

/// A claim value capsign writes into each minted JWT (`x-ably-revocation-key`): the claim
/// dialect's placeholders, any other text literal; rendered as the raw value (the JWT writer
/// escapes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimTemplate {
    text: String,
    pieces: Vec<Piece>,
}

impl ClaimTemplate {
    /// Parses `text`; refuses an empty one and a `{...}` that is no placeholder (a typo such
    /// as `{claim.org}` would otherwise be sent literally to every user).
    ///
    /// # Errors
    ///
    /// Empty, or an unknown `{...}`.
    pub fn parse(text: &str) -> Result<ClaimTemplate, String> {
        if text.trim().is_empty() {
            return Err("empty".into());
        }
        let pieces = parse_template(text)?;
        Ok(ClaimTemplate {
            text: text.to_owned(),
            pieces,
        })
    }

    /// The value for `who`; `None` when a claim it names is missing (or not a string or an
    /// integer).
    pub fn render(&self, who: &Identity) -> Option<String> {
        let mut out = String::new();
        for p in &self.pieces {
            out.push_str(&substitution(who, p)?);
        }
        Some(out)
    }

    /// Whether it reads a session claim (so the identity must keep them).
    pub fn reads_claims(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Claim(_)))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

pub(super) fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        let (lit, tail) = rest.split_at(open);
        if tail.starts_with('}') {
            return Err("unmatched '}'".into());
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit.to_owned()));
        }
        let close = tail.find('}').ok_or("unclosed '{'")?;
        // Between the `{` that starts `tail` and the `}` at `close` (both one byte).
        let name = tail.split_at(close).0.split_at(1).1;
        pieces.push(placeholder(name).ok_or_else(|| {
            format!("unknown template {{{name}}}; use {{clientId}} or {{claims.NAME}}")
        })?);
        rest = tail.split_at(close + 1).1;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_owned()));
    }
    Ok(pieces)
}

/// Renders a template; `None` when a substitution is missing or unsafe.
pub(super) fn render<'a>(
    pieces: &'a [Piece],
    mut value: impl FnMut(&'a Piece) -> Option<Cow<'a, str>>,
) -> Option<String> {
    let mut out = String::new();
    render_into(&mut out, pieces, &mut value)?;
    Some(out)
}

/// Appends the pieces to `out`; `None` when a value is missing or would change the
/// pattern's shape (empty, a control character, or one of `:*[]{}`).
pub(super) fn render_into<'a>(
    out: &mut String,
    pieces: &'a [Piece],
    value: &mut impl FnMut(&'a Piece) -> Option<Cow<'a, str>>,
) -> Option<()> {
    for p in pieces {
        match p {
            Piece::Literal(s) => out.push_str(s),
            other => {
                let v = value(other)?;
                if v.is_empty() || v.chars().any(|c| c.is_control() || ":*[]{}".contains(c)) {
                    return None;
                }
                out.push_str(&v);
            }
        }
    }
    Some(())
}

/// A rule's resource pattern for `who`, rendered in the thread's scratch buffer: a pattern
/// short enough to be kept inline costs no allocation.
pub(super) fn render_resource<'a>(pieces: &'a [Piece], who: &'a Identity) -> Option<Resource> {
    crate::scratch::with_text(|out| {
        render_into(out, pieces, &mut |p| substitution(who, p))?;
        Resource::new(out.as_str()).ok()
    })
}

pub(super) fn substitution<'a>(who: &'a Identity, piece: &'a Piece) -> Option<Cow<'a, str>> {
    match piece {
        Piece::ClientId => Some(Cow::Borrowed(&who.client_id)),
        Piece::Claim(name) => match who.claims().get(name)? {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                Some(Cow::Owned(n.to_string()))
            }
            _ => None,
        },
        Piece::Literal(s) => Some(Cow::Borrowed(s)),
    }
}
