//! JSON scripts: a small positioned reader feeding the same tree builder as YAML.
//!
//! JSON is nearly YAML's flow style, but not quite: the YAML parser refuses escaped surrogate
//! pairs (`"\ud83c\udf19"`, which `json.dumps` writes for every emoji) and tab indentation, and
//! would accept YAML-only syntax in a `.json` file. So `serde_json` judges the syntax (its errors
//! carry line and column), and this reader, which never has to recover from bad input but must
//! not panic on it either, turns the text into builder events with positions.

use yaml_rust2::parser::Event;
use yaml_rust2::scanner::TScalarStyle;

use super::error::{Pos, Sink};
use super::tree::{Builder, Node};

/// Parse JSON `text` into a tree. Problems go to `sink`; `None` when there is no usable tree.
pub fn build_json(text: &str, sink: &mut Sink) -> Option<Node> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        sink.push(
            "",
            Pos::new(e.line().max(1), e.column().max(1)),
            format!(
                "JSON syntax error: {}",
                dramaq_common::text::shown(&message(&e), 200)
            ),
        );
        return None;
    }
    let mut b = Builder::new(sink);
    let mut r = Reader {
        text,
        bytes: text.as_bytes(),
        i: 0,
        line: 1,
        column: 1,
    };
    match r.run(&mut b) {
        Ok(()) => b.finish(),
        Err(Failure::Stop) => None,
        Err(Failure::Syntax(pos, msg)) => {
            b.sink.push("", pos, format!("JSON syntax error: {msg}"));
            None
        }
    }
}

/// serde_json's message without its trailing "at line L column C" (the position is shown
/// already).
fn message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full.get(..i).unwrap_or(&full).to_string(),
        None => full,
    }
}

enum Failure {
    /// The builder refused (a limit); it reported why.
    Stop,
    Syntax(Pos, &'static str),
}

impl From<super::tree::Stop> for Failure {
    fn from(_: super::tree::Stop) -> Failure {
        Failure::Stop
    }
}

#[derive(Clone, Copy)]
enum Open {
    Array,
    Object,
}

enum Want {
    Value,
    Key,
    /// A value just ended: `,`, a closing bracket, or the end of the text.
    After,
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    i: usize,
    line: usize,
    /// In characters, 1-based.
    column: usize,
}

impl Reader<'_> {
    fn pos(&self) -> Pos {
        Pos::new(self.line, self.column)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        if b == b'\n' {
            self.line += 1;
            self.column = 1;
        } else if b & 0xC0 != 0x80 {
            // Continuation bytes belong to the character already counted.
            self.column += 1;
        }
        Some(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn run(&mut self, b: &mut Builder<'_>) -> Result<(), Failure> {
        let mut stack: Vec<Open> = Vec::new();
        let mut want = Want::Value;
        loop {
            self.skip_ws();
            let pos = self.pos();
            want = match want {
                Want::Value => match self.peek() {
                    Some(b'{') => {
                        self.bump();
                        b.event(Event::MappingStart(0, None), pos)?;
                        self.skip_ws();
                        if self.peek() == Some(b'}') {
                            self.bump();
                            b.event(Event::MappingEnd, pos)?;
                            Want::After
                        } else {
                            stack.push(Open::Object);
                            Want::Key
                        }
                    }
                    Some(b'[') => {
                        self.bump();
                        b.event(Event::SequenceStart(0, None), pos)?;
                        self.skip_ws();
                        if self.peek() == Some(b']') {
                            self.bump();
                            b.event(Event::SequenceEnd, pos)?;
                            Want::After
                        } else {
                            stack.push(Open::Array);
                            Want::Value
                        }
                    }
                    Some(b'"') => {
                        let s = self.string()?;
                        b.event(scalar(s, TScalarStyle::DoubleQuoted), pos)?;
                        Want::After
                    }
                    Some(_) => {
                        let s = self.literal()?;
                        b.event(scalar(s, TScalarStyle::Plain), pos)?;
                        Want::After
                    }
                    None => return Err(Failure::Syntax(pos, "expected a value")),
                },
                Want::Key => {
                    if self.peek() != Some(b'"') {
                        return Err(Failure::Syntax(pos, "expected a quoted key"));
                    }
                    let key = self.string()?;
                    b.event(scalar(key, TScalarStyle::DoubleQuoted), pos)?;
                    self.skip_ws();
                    if self.bump() != Some(b':') {
                        return Err(Failure::Syntax(self.pos(), "expected `:`"));
                    }
                    Want::Value
                }
                Want::After => match (stack.last().copied(), self.peek()) {
                    (None, None) => return Ok(()),
                    (None, Some(_)) => {
                        return Err(Failure::Syntax(pos, "unexpected text after the document"))
                    }
                    (Some(Open::Array), Some(b',')) => {
                        self.bump();
                        Want::Value
                    }
                    (Some(Open::Object), Some(b',')) => {
                        self.bump();
                        Want::Key
                    }
                    (Some(Open::Array), Some(b']')) => {
                        self.bump();
                        stack.pop();
                        b.event(Event::SequenceEnd, pos)?;
                        Want::After
                    }
                    (Some(Open::Object), Some(b'}')) => {
                        self.bump();
                        stack.pop();
                        b.event(Event::MappingEnd, pos)?;
                        Want::After
                    }
                    _ => return Err(Failure::Syntax(pos, "expected `,` or a closing bracket")),
                },
            };
        }
    }

    /// `true`, `false`, `null` or a number, kept as text for the core-schema resolution.
    fn literal(&mut self) -> Result<String, Failure> {
        let pos = self.pos();
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'+' | b'-' | b'.')
        ) {
            self.bump();
        }
        match self.text.get(start..self.i) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(Failure::Syntax(pos, "expected a value")),
        }
    }

    /// A string at the opening quote, with its escapes decoded.
    fn string(&mut self) -> Result<String, Failure> {
        let pos = self.pos();
        self.bump();
        let mut out = String::new();
        let mut run = self.i;
        loop {
            match self.peek() {
                None => return Err(Failure::Syntax(pos, "unterminated string")),
                Some(b'"') => {
                    out.push_str(self.text.get(run..self.i).unwrap_or_default());
                    self.bump();
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(self.text.get(run..self.i).unwrap_or_default());
                    self.bump();
                    let c = self.escape()?;
                    out.push(c);
                    run = self.i;
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self) -> Result<char, Failure> {
        let pos = self.pos();
        let c = match self.bump() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hi = self.hex4()?;
                if (0xD800..0xDC00).contains(&hi) {
                    if self.bump() != Some(b'\\') || self.bump() != Some(b'u') {
                        return Err(Failure::Syntax(pos, "unpaired surrogate escape"));
                    }
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(Failure::Syntax(pos, "unpaired surrogate escape"));
                    }
                    let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    char::from_u32(code).ok_or(Failure::Syntax(pos, "invalid unicode escape"))?
                } else {
                    char::from_u32(hi).ok_or(Failure::Syntax(pos, "invalid unicode escape"))?
                }
            }
            _ => return Err(Failure::Syntax(pos, "invalid escape")),
        };
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u32, Failure> {
        let pos = self.pos();
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .bump()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or(Failure::Syntax(pos, "expected four hex digits"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }
}

fn scalar(text: String, style: TScalarStyle) -> Event {
    Event::Scalar(text, style, 0, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::tree::{Resolved, Value};

    fn parse(text: &str) -> (Option<Node>, Vec<String>) {
        let mut sink = Sink::new("t.json");
        let node = build_json(text, &mut sink);
        let errs = sink.finish().into_iter().map(|e| e.to_string()).collect();
        (node, errs)
    }

    #[test]
    fn reads_values_with_positions() {
        let (node, errs) =
            parse("{\n\t\"a\": [1, \"\\ud83c\\udf19 \\u00e9\\/\", true, null],\n\t\"b\": {}\n}");
        assert!(errs.is_empty(), "{errs:?}");
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = node
        else {
            panic!("not a map");
        };
        assert_eq!(entries[0].key_pos, Pos::new(2, 2));
        let Value::Seq(items) = &entries[0].value.value else {
            panic!("not a list");
        };
        let texts: Vec<Resolved<'_>> = items
            .iter()
            .map(|n| match &n.value {
                Value::Scalar(s) => s.resolve(),
                _ => Resolved::Null,
            })
            .collect();
        assert_eq!(
            texts,
            vec![
                Resolved::Int(Some(1)),
                Resolved::Str("\u{1f319} é/"),
                Resolved::Bool(true),
                Resolved::Null
            ]
        );
        assert_eq!(items[1].pos, Pos::new(2, 11));
        assert_eq!(entries[1].key_pos, Pos::new(3, 2));
    }

    #[test]
    fn duplicate_keys_and_syntax_errors() {
        let (_, errs) = parse("{\"a\": 1, \"a\": 2}");
        assert_eq!(
            errs,
            vec!["t.json:1:10: a: duplicate key `a` (first given at line 1)"]
        );
        let (node, errs) = parse("{\"a\": 1,}");
        assert!(node.is_none());
        assert!(
            errs[0].starts_with("t.json:1:9: JSON syntax error"),
            "{errs:?}"
        );
        let (node, errs) = parse("");
        assert!(node.is_none());
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn deep_json_is_an_error() {
        for depth in [100, 10_000] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let (node, errs) = parse(&text);
            assert!(node.is_none());
            assert_eq!(errs.len(), 1, "{errs:?}");
        }
    }
}
