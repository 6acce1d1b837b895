//! YAML to a small tree of nodes that remember where they came from.
//!
//! serde-saphyr parses; [`Spanned`] gives every key and value its line and column. We keep
//! our own tree (rather than deserializing into typed structs) so that every semantic error
//! (unknown field, duplicate route, bad limit) can name its place and field path, and so that
//! duplicate keys reach us with both their places (`DuplicateKeyPolicy::PassThrough`).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use std::fmt;
use std::ops::Range;

/// A 1-based line and column; 0 means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(loc: &Location) -> Pos {
        Pos {
            line: usize::try_from(loc.line()).unwrap_or(0),
            column: usize::try_from(loc.column()).unwrap_or(0),
        }
    }

    pub fn is_known(self) -> bool {
        self.line > 0
    }
}

#[derive(Debug)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    /// Where the node is used (for an alias: the `*alias`).
    pub pos: Pos,
    /// Byte range of the node's definition in the source, when known.
    span: Option<Range<usize>>,
}

impl Node {
    /// The node's text as written in the source (for scalars), if the parser told us where.
    pub fn source_text<'s>(&self, src: &'s str) -> Option<&'s str> {
        let span = self.span.clone()?;
        src.get(span).map(str::trim).filter(|s| !s.is_empty())
    }

    /// How to show a scalar to the user: its source text if known, else a rendering.
    pub fn display(&self, src: &str) -> String {
        if let Kind::Str(s) = &self.kind {
            return s.clone();
        }
        if let Some(t) = self.source_text(src) {
            return t.to_string();
        }
        match &self.kind {
            Kind::Null => "null".to_string(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Str(s) => s.clone(),
            Kind::Seq(_) => "[...]".to_string(),
            Kind::Map(_) => "{...}".to_string(),
        }
    }

    /// What kind of YAML value this is, for messages ("a number", "a list", ...).
    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "empty",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }
}

/// Deeper nesting than this is never a valid manifest; the limit also bounds recursion.
const MAX_DEPTH: usize = 32;

/// Parses one YAML document into a [`Node`] tree. On failure returns the parser's message
/// and location.
pub(crate) fn parse(src: &str) -> Result<Node, (String, Pos)> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
        budget: Some(budget),
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(src, options) {
        Ok(raw) => Ok(convert(raw)),
        Err(e) => {
            use serde_saphyr::MessageFormatter;
            let mut inner = &e;
            while let serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } = inner
            {
                inner = error;
            }
            let msg = serde_saphyr::UserMessageFormatter.format_message(inner);
            // Keep messages on one line.
            let msg: String = msg
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let pos = e.location().map(|l| Pos::of(&l)).unwrap_or_default();
            Err((msg, pos))
        }
    }
}

fn convert(raw: Spanned<Raw>) -> Node {
    let span = raw.defined.span();
    let span = match (span.byte_offset(), span.byte_len()) {
        (Some(start), Some(len)) => usize::try_from(start)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(s, l)| Some(s..s.checked_add(l)?)),
        _ => None,
    };
    let pos = Pos::of(&raw.referenced);
    let kind = match raw.value {
        Raw::Null => Kind::Null,
        Raw::Bool(b) => Kind::Bool(b),
        Raw::Int(i) => Kind::Int(i),
        Raw::Float(f) => Kind::Float(f),
        Raw::Str(s) => Kind::Str(s),
        Raw::Seq(items) => Kind::Seq(items.into_iter().map(convert).collect()),
        Raw::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| (convert(k), convert(v)))
                .collect(),
        ),
    };
    Node { kind, pos, span }
}

/// What serde-saphyr hands us: any YAML value, children wrapped in [`Spanned`].
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Raw, E> {
        Ok(Raw::Int(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Raw, E> {
        Ok(Raw::Int(n.into()))
    }
    fn visit_i128<E>(self, n: i128) -> Result<Raw, E> {
        Ok(Raw::Int(n))
    }
    fn visit_u128<E>(self, n: u128) -> Result<Raw, E> {
        Ok(match i128::try_from(n) {
            Ok(n) => Raw::Int(n),
            // Precision does not matter: no manifest field takes a number this large.
            Err(_) => Raw::Float(n as f64),
        })
    }
    fn visit_f64<E>(self, f: f64) -> Result<Raw, E> {
        Ok(Raw::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Raw, E> {
        Ok(Raw::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Raw, E> {
        Ok(Raw::Str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(b).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = a.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}
