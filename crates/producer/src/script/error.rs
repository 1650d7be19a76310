//! Script errors: where in which file, at which schema path, and what is wrong.
//!
//! A script is checked completely before anything is enqueued, and every problem found is
//! reported at once, so an operator fixes a whole script in one pass instead of one error per run.
//! Each error carries the file, a 1-based line and column pointing at the offending value, and the
//! schema path (`episodes[2].scenes[3].duration`) so it can be found even in generated JSON.

use std::fmt;

/// A position in the script text, 1-based. Line 0 means "no position" (the file could not be
/// read at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const NONE: Pos = Pos { line: 0, column: 0 };

    pub fn new(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }
}

/// One problem in a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub file: String,
    /// Schema path of the offending node (`episodes[2].scenes[3].duration`); empty for problems
    /// with the text itself (syntax, encoding, size).
    pub path: String,
    /// 1-based; 0 when there is no position (unreadable file).
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    /// `file:line:col: path: message`, leaving out the position or the path when there is none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ScriptError {}

/// Every problem found in a script, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptErrors(pub Vec<ScriptError>);

impl ScriptErrors {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ScriptError> {
        self.0.iter()
    }
}

impl fmt::Display for ScriptErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptErrors {}

impl IntoIterator for ScriptErrors {
    type Item = ScriptError;
    type IntoIter = std::vec::IntoIter<ScriptError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// User text as shown inside a message: control characters escaped and long text cut, so a
/// script full of junk cannot flood the terminal through its error messages.
pub(crate) fn shown(s: &str) -> String {
    dramaq_common::text::shown_default(s)
}

/// Collects errors for one file while the tree is built and walked.
#[derive(Debug)]
pub(crate) struct Sink {
    file: String,
    errors: Vec<ScriptError>,
}

impl Sink {
    pub(crate) fn new(file: &str) -> Sink {
        Sink {
            file: file.to_string(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, path: &str, pos: Pos, message: impl Into<String>) {
        self.errors.push(ScriptError {
            file: self.file.clone(),
            path: path.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Sorted by position; the sort is stable so errors at one spot keep the order they were
    /// found in. Exact repeats are shown once.
    pub(crate) fn finish(mut self) -> ScriptErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors.dedup();
        ScriptErrors(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_what_is_missing() {
        let mut sink = Sink::new("s.yaml");
        sink.push("a.b", Pos::new(3, 4), "bad");
        sink.push("", Pos::new(1, 2), "syntax");
        sink.push("", Pos::NONE, "cannot read");
        assert_eq!(
            sink.finish().to_string(),
            "s.yaml: cannot read\ns.yaml:1:2: syntax\ns.yaml:3:4: a.b: bad"
        );
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\nb\u{0}"), "a\\nb\\u{0}");
        assert_eq!(shown(&"x".repeat(100)), format!("{}…", "x".repeat(60)));
    }
}
