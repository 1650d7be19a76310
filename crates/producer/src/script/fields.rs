//! Typed reads from the positioned tree, each reporting what was expected and what was found.
//!
//! The validator is written against these helpers so that every field read checks its type and
//! reports a mismatch at the value's position, and so that every mapping rejects fields it does
//! not know (a misspelt optional field would otherwise be silently ignored).

use dramaq_common::ids::is_safe_component;

use super::error::{shown, Pos, Sink};
use super::tree::{Entry, Node, Resolved, Value};

/// `base.name`, or `name` at the top level.
pub fn field_path(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[i]`.
pub fn index_path(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// A mapping whose keys were checked against the allowed set.
pub struct Fields<'n> {
    pub path: String,
    pub pos: Pos,
    entries: &'n [Entry],
}

impl<'n> Fields<'n> {
    /// Read `node` as a mapping with only `allowed` keys; anything else is reported.
    pub fn read(
        sink: &mut Sink,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            sink.push(
                path,
                node.pos,
                format!(
                    "expected a mapping with fields {}, found {}",
                    allowed.join(", "),
                    node.describe()
                ),
            );
            return None;
        };
        for e in entries {
            if !allowed.contains(&e.key.as_str()) {
                sink.push(
                    &field_path(path, &shown(&e.key)),
                    e.key_pos,
                    format!(
                        "unknown field `{}` (allowed: {})",
                        shown(&e.key),
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(Fields {
            path: path.to_string(),
            pos: node.pos,
            entries,
        })
    }

    pub fn path_of(&self, name: &str) -> String {
        field_path(&self.path, name)
    }

    /// The value of an optional field; an explicit null counts as absent.
    pub fn opt(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|e| e.key == name)
            .map(|e| &e.value)
            .filter(|n| !is_null(n))
    }

    /// The value of a required field, reporting it at the mapping when it is missing. A null
    /// value is returned so the type check names what was found.
    pub fn req(&self, sink: &mut Sink, name: &str) -> Option<&'n Node> {
        let found = self
            .entries
            .iter()
            .find(|e| e.key == name)
            .map(|e| &e.value);
        if found.is_none() {
            sink.push(
                &self.path_of(name),
                self.pos,
                format!("missing required field `{name}`"),
            );
        }
        found
    }
}

pub fn is_null(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar(s) if s.resolve() == Resolved::Null)
}

/// Non-empty text, trimmed: prompts, names, lines.
pub fn text(sink: &mut Sink, node: &Node, path: &str) -> Option<String> {
    let raw = raw_text(sink, node, path)?;
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        sink.push(path, node.pos, "must not be empty or only whitespace");
        return None;
    }
    Some(trimmed.to_string())
}

fn raw_text<'n>(sink: &mut Sink, node: &'n Node, path: &str) -> Option<&'n str> {
    match &node.value {
        Value::Scalar(s) => match s.resolve() {
            Resolved::Str(t) => Some(t),
            other => {
                let hint = if matches!(other, Resolved::Null) {
                    ""
                } else {
                    "; put it in quotes to use it as text"
                };
                sink.push(
                    path,
                    node.pos,
                    format!("expected text, found {}{hint}", other.describe()),
                );
                None
            }
        },
        _ => {
            sink.push(
                path,
                node.pos,
                format!("expected text, found {}", node.describe()),
            );
            None
        }
    }
}

/// An id usable as a path component and Redis key part.
pub fn id(sink: &mut Sink, node: &Node, path: &str) -> Option<String> {
    let raw = raw_text(sink, node, path)?.to_string();
    if !is_safe_component(&raw) {
        sink.push(
            path,
            node.pos,
            format!(
                "`{}` is not a valid id (allowed: 1 to 64 letters, digits, '_' or '-', not \
                 starting with '-')",
                shown(&raw)
            ),
        );
        return None;
    }
    Some(raw)
}

/// A whole number in `min..=max`.
pub fn whole(sink: &mut Sink, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
    let found = match &node.value {
        Value::Scalar(s) => match s.resolve() {
            Resolved::Int(Some(i)) if (min..=max).contains(&i) => return Some(i),
            Resolved::Int(Some(i)) => {
                sink.push(
                    path,
                    node.pos,
                    format!("{i} is out of range (allowed: {min} to {max})"),
                );
                return None;
            }
            Resolved::Int(None) => {
                sink.push(
                    path,
                    node.pos,
                    format!(
                        "{} is out of range (allowed: {min} to {max})",
                        shown(&s.text)
                    ),
                );
                return None;
            }
            other => other.describe(),
        },
        _ => node.describe(),
    };
    sink.push(
        path,
        node.pos,
        format!("expected a whole number from {min} to {max}, found {found}"),
    );
    None
}

/// A time offset in seconds (whole or decimal, `0` to one hour), as milliseconds.
pub fn seconds_ms(sink: &mut Sink, node: &Node, path: &str) -> Option<u32> {
    let expected = "expected a number of seconds (like 2 or 1.5), found";
    let message = match &node.value {
        Value::Scalar(s) => match s.resolve() {
            Resolved::Int(Some(i)) if (0..=3_600).contains(&i) => return Some(i as u32 * 1000),
            Resolved::Float(x) if (0.0..=3_600.0).contains(&x) => {
                return Some((x * 1000.0).round() as u32)
            }
            Resolved::Int(_) | Resolved::Float(_) => format!(
                "{} is out of range (allowed: 0 to 3600 seconds)",
                shown(&s.text)
            ),
            other => format!("{expected} {}", other.describe()),
        },
        _ => format!("{expected} {}", node.describe()),
    };
    sink.push(path, node.pos, message);
    None
}

/// A list, possibly empty.
pub fn list<'n>(sink: &mut Sink, node: &'n Node, path: &str) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            sink.push(
                path,
                node.pos,
                format!("expected a list, found {}", node.describe()),
            );
            None
        }
    }
}

/// An amount of US dollars: a finite number ≥ 0 (`200`, `19.5`).
pub fn usd(sink: &mut Sink, node: &Node, path: &str) -> Option<f64> {
    let found = match &node.value {
        Value::Scalar(s) => match s.resolve() {
            Resolved::Int(Some(i)) if i >= 0 => return Some(i as f64),
            Resolved::Float(f) if f.is_finite() && f >= 0.0 => return Some(f),
            other => other.describe(),
        },
        _ => node.describe(),
    };
    sink.push(
        path,
        node.pos,
        format!("expected an amount of US dollars (a number ≥ 0), found {found}"),
    );
    None
}
