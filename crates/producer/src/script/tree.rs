//! A positioned document tree built from YAML parser events.
//!
//! `yaml-rust2`'s own `Yaml` values drop positions and fold duplicate keys into one entry; the
//! validator needs a line and column for every node and must reject duplicates. So the event
//! parser is driven here, iteratively, into a small tree whose every node keeps its position.
//! JSON feeds the same builder through its own small reader ([`super::json`]).
//!
//! The input is untrusted, so building is bounded: nesting depth, total nodes and total scalar
//! bytes (both counted after alias expansion, which stops "billion laughs" alias bombs before they
//! allocate) all have caps, and exceeding one is an error, never a panic or a stack overflow.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::{shown, Pos, Sink};

/// Deepest nesting accepted. Scripts nest about eight levels; the cap keeps recursive walks and
/// drops of the tree far from the stack limit.
pub const MAX_DEPTH: usize = 64;
/// Most nodes in a document, counting each alias as a copy of what it names.
pub const MAX_NODES: usize = 1_000_000;
/// Most scalar bytes in a document, counting each alias as a copy of what it names.
pub const MAX_SCALAR_BYTES: usize = 32 * 1024 * 1024;

const CORE_TAG: &str = "tag:yaml.org,2002:";

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Quoted or block scalars are text unless tagged; plain ones are resolved to null, bool or
    /// number (YAML 1.2 core schema).
    pub plain: bool,
    /// Core-schema tag suffix (`str`, `int`, …) when the scalar carries an explicit `!!` tag.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// A scalar resolved to its YAML 1.2 core-schema type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'a> {
    Null,
    Bool(bool),
    /// `None` when the integer does not fit in an `i64`.
    Int(Option<i64>),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    pub fn resolve(&self) -> Resolved<'_> {
        match self.tag.as_deref() {
            Some("str") => return Resolved::Str(&self.text),
            Some("null") => return Resolved::Null,
            _ => {}
        }
        // An explicit `!!int "8"` asks for the core-schema reading even of a quoted scalar.
        if !self.plain && self.tag.is_none() {
            return Resolved::Str(&self.text);
        }
        let t = self.text.as_str();
        if matches!(t, "" | "~" | "null" | "Null" | "NULL") {
            return Resolved::Null;
        }
        if matches!(t, "true" | "True" | "TRUE") {
            return Resolved::Bool(true);
        }
        if matches!(t, "false" | "False" | "FALSE") {
            return Resolved::Bool(false);
        }
        if let Some(i) = parse_int(t) {
            return Resolved::Int(i);
        }
        if let Some(f) = parse_float(t) {
            return Resolved::Float(f);
        }
        Resolved::Str(t)
    }
}

impl Resolved<'_> {
    /// "an integer (7)", "a boolean (true)": what the validator says it found instead.
    pub fn describe(&self) -> String {
        match self {
            Resolved::Null => "nothing (an empty value)".to_string(),
            Resolved::Bool(b) => format!("a boolean ({b})"),
            Resolved::Int(Some(i)) => format!("an integer ({i})"),
            Resolved::Int(None) => "an integer too large to use".to_string(),
            // A float's shortest form can still run to 300 digits (1e300 prints in full).
            Resolved::Float(f) => format!("a number ({})", shown(&f.to_string())),
            Resolved::Str(_) => "text".to_string(),
        }
    }
}

/// Core-schema integers: `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`. `Some(None)` is an integer
/// too large for `i64`.
fn parse_int(t: &str) -> Option<Option<i64>> {
    let (radix, digits, neg) = if let Some(h) = t.strip_prefix("0x") {
        (16, h, false)
    } else if let Some(o) = t.strip_prefix("0o") {
        (8, o, false)
    } else if let Some(d) = t.strip_prefix('-') {
        (10, d, true)
    } else {
        (10, t.strip_prefix('+').unwrap_or(t), false)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i64::from_str_radix(digits, radix).ok();
    Some(magnitude.map(|m| if neg { -m } else { m }))
}

/// Core-schema floats: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `.inf`, `.nan`.
fn parse_float(t: &str) -> Option<f64> {
    let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Some(if t.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if matches!(t, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (unsigned.get(..i)?, Some(unsigned.get(i + 1..)?)),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac_part {
        None => !int_part.is_empty() && all_digits(int_part),
        Some(frac) if int_part.is_empty() => !frac.is_empty() && all_digits(frac),
        Some(frac) => all_digits(int_part) && all_digits(frac),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && all_digits(e)
        }
    };
    if mantissa_ok && exponent_ok {
        t.parse::<f64>().ok()
    } else {
        None
    }
}

impl Node {
    /// What kind of node this is, for "expected …, found …" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Scalar(s) => s.resolve().describe(),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
        }
    }
}

fn pos_of(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 but columns from 0.
    Pos::new(m.line(), m.col() + 1)
}

/// Size of a finished subtree, kept per anchor so an alias is charged for what it copies.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
    height: usize,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        weight: Weight,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        /// Where each key was first seen, to name it in a duplicate-key error.
        seen: HashMap<String, Pos>,
        key: Option<Node>,
        weight: Weight,
    },
}

pub(super) struct Builder<'s> {
    pub(super) sink: &'s mut Sink,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Weight)>,
    root: Option<Node>,
    nodes: usize,
    bytes: usize,
}

/// Why building stopped early; already recorded in the sink.
pub(super) struct Stop;

/// Parse YAML `text` into a tree. Problems go to `sink`; `None` when the text has no usable tree
/// (a syntax error, an exceeded limit, an empty document).
pub fn build_yaml(text: &str, sink: &mut Sink) -> Option<Node> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::new(sink);
    let mut documents = 0usize;
    loop {
        // The parser is third-party code fed untrusted text; should it ever panic, that is one
        // more bad script, not a crashed CLI.
        let next = catch_unwind(AssertUnwindSafe(|| parser.next_token()));
        let (event, marker) = match next {
            Ok(Ok(next)) => next,
            Err(_) => {
                b.sink
                    .push("", Pos::new(1, 1), "the YAML parser failed on this text");
                return None;
            }
            Ok(Err(e)) => {
                let pos = pos_of(e.marker());
                b.sink.push(
                    "",
                    pos,
                    format!(
                        "syntax error: {}",
                        dramaq_common::text::shown(e.info(), 200)
                    ),
                );
                return None;
            }
        };
        let pos = pos_of(&marker);
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    b.sink.push(
                        "",
                        pos,
                        "a script holds one document; remove the second `---` and what follows",
                    );
                    return None;
                }
            }
            other => b.event(other, pos).ok()?,
        }
    }
    b.finish()
}

impl<'s> Builder<'s> {
    pub(super) fn new(sink: &'s mut Sink) -> Builder<'s> {
        Builder {
            sink,
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            nodes: 0,
            bytes: 0,
        }
    }

    /// Feed one parser event (document and stream events are the caller's business).
    pub(super) fn event(&mut self, event: Event, pos: Pos) -> Result<(), Stop> {
        match event {
            Event::Scalar(text, style, anchor, tag) => self.scalar(text, style, anchor, tag, pos),
            Event::Alias(id) => self.alias(id, pos),
            Event::SequenceStart(anchor, tag) => self.open(anchor, tag, pos, false),
            Event::MappingStart(anchor, tag) => self.open(anchor, tag, pos, true),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => Ok(()),
        }
    }

    /// The document's root, or an error when the text held none.
    pub(super) fn finish(self) -> Option<Node> {
        if self.root.is_none() {
            self.sink.push(
                "",
                Pos::new(1, 1),
                "the script is empty: expected a mapping with id, title, defaults, characters and \
                 episodes",
            );
        }
        self.root
    }

    /// The schema path of the slot the next finished node goes into, for duplicate-key errors.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => path.push_str(&format!("[{}]", items.len())),
                Frame::Map { key: Some(key), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    match &key.value {
                        Value::Scalar(s) => path.push_str(&shown(&s.text)),
                        _ => path.push('?'),
                    }
                }
                Frame::Map { key: None, .. } => {}
            }
        }
        path
    }

    fn charge(&mut self, w: Weight, pos: Pos) -> Result<(), Stop> {
        self.nodes = self.nodes.saturating_add(w.nodes);
        self.bytes = self.bytes.saturating_add(w.bytes);
        if self.nodes > MAX_NODES || self.bytes > MAX_SCALAR_BYTES {
            self.sink.push(
                "",
                pos,
                format!(
                    "the document is too large: at most {MAX_NODES} values and {MAX_SCALAR_BYTES} \
                     bytes of text, counting every alias as a full copy"
                ),
            );
            return Err(Stop);
        }
        Ok(())
    }

    fn check_tag(&mut self, tag: Option<Tag>, pos: Pos, allowed: &[&str]) -> Option<String> {
        let tag = tag?;
        if tag.handle == CORE_TAG && allowed.contains(&tag.suffix.as_str()) {
            return Some(tag.suffix);
        }
        let path = self.path();
        self.sink.push(
            &path,
            pos,
            format!(
                "unsupported tag `{}` (allowed: {})",
                shown(&format!("{}{}", tag.handle, tag.suffix)),
                allowed
                    .iter()
                    .map(|s| format!("!!{s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        None
    }

    fn scalar(
        &mut self,
        text: String,
        style: TScalarStyle,
        anchor: usize,
        tag: Option<Tag>,
        pos: Pos,
    ) -> Result<(), Stop> {
        let tag = self.check_tag(tag, pos, &["str", "int", "float", "bool", "null"]);
        let weight = Weight {
            nodes: 1,
            bytes: text.len(),
            height: 1,
        };
        self.charge(weight, pos)?;
        let node = Node {
            pos,
            value: Value::Scalar(Scalar {
                text,
                plain: style == TScalarStyle::Plain,
                tag,
            }),
        };
        self.attach(node, anchor, weight)
    }

    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), Stop> {
        let Some(weight) = self.anchors.get(&id).map(|(_, w)| *w) else {
            // The parser only emits aliases to anchors it has seen; an anchor that is not in the
            // map yet is still open, i.e. the alias sits inside the node it names.
            let path = self.path();
            self.sink.push(
                &path,
                pos,
                "an alias cannot refer to a node that contains it",
            );
            return Err(Stop);
        };
        self.charge(weight, pos)?;
        let Some(mut copy) = self.anchors.get(&id).map(|(node, _)| node.clone()) else {
            return Err(Stop);
        };
        copy.pos = pos;
        self.attach(copy, 0, weight)
    }

    fn open(&mut self, anchor: usize, tag: Option<Tag>, pos: Pos, map: bool) -> Result<(), Stop> {
        self.check_tag(tag, pos, if map { &["map"] } else { &["seq"] });
        if self.stack.len() >= MAX_DEPTH {
            let path = self.path();
            self.sink.push(
                &path,
                pos,
                format!("nested more than {MAX_DEPTH} levels deep"),
            );
            return Err(Stop);
        }
        self.charge(
            Weight {
                nodes: 1,
                ..Weight::default()
            },
            pos,
        )?;
        self.stack.push(if map {
            Frame::Map {
                pos,
                anchor,
                entries: Vec::new(),
                seen: HashMap::new(),
                key: None,
                weight: Weight::default(),
            }
        } else {
            Frame::Seq {
                pos,
                anchor,
                items: Vec::new(),
                weight: Weight::default(),
            }
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), Stop> {
        let (node, anchor, inner) = match self.stack.pop() {
            Some(Frame::Seq {
                pos,
                anchor,
                items,
                weight,
            }) => (
                Node {
                    pos,
                    value: Value::Seq(items),
                },
                anchor,
                weight,
            ),
            Some(Frame::Map {
                pos,
                anchor,
                entries,
                weight,
                ..
            }) => (
                Node {
                    pos,
                    value: Value::Map(entries),
                },
                anchor,
                weight,
            ),
            None => return Ok(()),
        };
        let weight = Weight {
            nodes: inner.nodes.saturating_add(1),
            bytes: inner.bytes,
            height: inner.height.saturating_add(1),
        };
        self.attach(node, anchor, weight)
    }

    /// Hand a finished node to its parent (or make it the root) and remember it if anchored.
    fn attach(&mut self, node: Node, anchor: usize, weight: Weight) -> Result<(), Stop> {
        // Aliases can stack copies of deep nodes inside each other; depth is checked on the
        // finished height so that cannot build a tree deeper than the cap either.
        if self.stack.len() + weight.height > MAX_DEPTH + 1 {
            let path = self.path();
            self.sink.push(
                &path,
                node.pos,
                format!("nested more than {MAX_DEPTH} levels deep"),
            );
            return Err(Stop);
        }
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), weight));
        }
        // The path is only needed for a bad key; building it for every node would cost
        // O(depth) per value.
        let bad_key = matches!(
            self.stack.last(),
            Some(Frame::Map { key: Some(k), seen, .. })
                if !matches!(&k.value, Value::Scalar(s) if !seen.contains_key(&s.text))
        );
        let path = if bad_key { self.path() } else { String::new() };
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
            }
            Some(Frame::Seq {
                items, weight: w, ..
            }) => {
                items.push(node);
                add(w, weight);
            }
            Some(Frame::Map {
                pos,
                entries,
                seen,
                key,
                weight: w,
                ..
            }) => {
                add(w, weight);
                match key.take() {
                    None => {
                        // A block mapping's start event is marked after its first key; the key is
                        // where a reader looks for the mapping.
                        if seen.is_empty() {
                            *pos = (*pos).min(node.pos);
                        }
                        *key = Some(node);
                    }
                    Some(k) => {
                        let key_pos = k.pos;
                        let Value::Scalar(s) = k.value else {
                            self.sink.push(
                                &path,
                                key_pos,
                                format!("mapping keys must be plain text, not {}", k.describe()),
                            );
                            return Ok(());
                        };
                        if let Some(first) = seen.get(&s.text) {
                            self.sink.push(
                                &path,
                                key_pos,
                                format!(
                                    "duplicate key `{}` (first given at line {})",
                                    shown(&s.text),
                                    first.line
                                ),
                            );
                            return Ok(());
                        }
                        seen.insert(s.text.clone(), key_pos);
                        entries.push(Entry {
                            key: s.text,
                            key_pos,
                            value: node,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

fn add(total: &mut Weight, w: Weight) {
    total.nodes = total.nodes.saturating_add(w.nodes);
    total.bytes = total.bytes.saturating_add(w.bytes);
    total.height = total.height.max(w.height);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<Node>, Vec<String>) {
        let mut sink = Sink::new("t.yaml");
        let node = build_yaml(text, &mut sink);
        let errs = sink.finish().into_iter().map(|e| e.to_string()).collect();
        (node, errs)
    }

    #[test]
    fn positions_are_one_based() {
        let (node, errs) = parse("a: 1\nbb:\n  - x\n");
        assert!(errs.is_empty(), "{errs:?}");
        let Some(Node {
            value: Value::Map(entries),
            pos,
        }) = node
        else {
            panic!("not a map");
        };
        assert_eq!(pos, Pos::new(1, 1));
        assert_eq!(entries[0].value.pos, Pos::new(1, 4));
        assert_eq!(entries[1].key_pos, Pos::new(2, 1));
        let Value::Seq(items) = &entries[1].value.value else {
            panic!("not a seq");
        };
        assert_eq!(items[0].pos, Pos::new(3, 5));
    }

    #[test]
    fn duplicate_keys_are_reported_with_path() {
        let (_, errs) = parse("a:\n  b: 1\n  b: 2\n");
        assert_eq!(
            errs,
            vec!["t.yaml:3:3: a.b: duplicate key `b` (first given at line 2)"]
        );
    }

    #[test]
    fn resolves_core_schema() {
        let s = |t: &str| Scalar {
            text: t.into(),
            plain: true,
            tag: None,
        };
        assert_eq!(s("8").resolve(), Resolved::Int(Some(8)));
        assert_eq!(s("-3").resolve(), Resolved::Int(Some(-3)));
        assert_eq!(s("0x1F").resolve(), Resolved::Int(Some(31)));
        assert_eq!(s("99999999999999999999999").resolve(), Resolved::Int(None));
        assert_eq!(s("7.5").resolve(), Resolved::Float(7.5));
        assert_eq!(s("1e3").resolve(), Resolved::Float(1000.0));
        assert_eq!(s("~").resolve(), Resolved::Null);
        assert_eq!(s("True").resolve(), Resolved::Bool(true));
        assert_eq!(s("yes").resolve(), Resolved::Str("yes"));
        assert_eq!(s("1.2.3").resolve(), Resolved::Str("1.2.3"));
        assert_eq!(s("e5").resolve(), Resolved::Str("e5"));
        let quoted = Scalar {
            text: "8".into(),
            plain: false,
            tag: None,
        };
        assert_eq!(quoted.resolve(), Resolved::Str("8"));
    }

    #[test]
    fn alias_bomb_is_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (node, errs) = parse(&text);
        assert!(node.is_none());
        assert!(errs[0].contains("too large"), "{errs:?}");
    }

    #[test]
    fn small_aliases_work() {
        let (node, errs) = parse("a: &x [1, 2]\nb: *x\n");
        assert!(errs.is_empty(), "{errs:?}");
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = node
        else {
            panic!("not a map");
        };
        assert_eq!(entries[0].value.value, entries[1].value.value);
        assert_eq!(entries[1].value.pos, Pos::new(2, 4));
    }

    #[test]
    fn deep_nesting_is_an_error() {
        for text in [
            "[".repeat(100_000),
            format!("{}x{}", "[".repeat(200), "]".repeat(200)),
            (0..200)
                .map(|i| format!("{}- \n", "  ".repeat(i)))
                .collect(),
        ] {
            let (node, errs) = parse(&text);
            assert!(node.is_none());
            assert_eq!(errs.len(), 1, "{errs:?}");
        }
    }

    #[test]
    fn deep_aliases_are_an_error() {
        let mut text = String::new();
        let inner = format!("{}1{}", "[".repeat(60), "]".repeat(60));
        text.push_str(&format!("a0: &a0 {inner}\n"));
        for i in 1..5 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} {}*a{p}{}\n",
                "[".repeat(60),
                "]".repeat(60)
            ));
        }
        let (node, errs) = parse(&text);
        assert!(node.is_none());
        assert!(errs[0].contains("levels deep"), "{errs:?}");
    }

    #[test]
    fn second_document_is_rejected() {
        let (node, errs) = parse("a: 1\n---\nb: 2\n");
        assert!(node.is_none());
        assert!(errs[0].contains("one document"), "{errs:?}");
    }

    #[test]
    fn json_is_read() {
        let (node, errs) = parse("{\"a\":[1,\"two\",{\"b\":null}],\"c\":\"\\u00e9\\/\"}");
        assert!(errs.is_empty(), "{errs:?}");
        assert!(node.is_some());
    }
}
