//! Script errors: where in which file, at which schema path, and what is wrong.
//!
//! A script is checked completely before anything is enqueued, and every problem found is
//! reported at once, so an operator fixes a whole script in one pass instead of one error per run.
//! Each error carries the file, a 1-based line and column pointing at the offending value, and the
//! schema path (`episodes[2].scenes[3].duration`) so it can be found even in generated JSON.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};

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

/// The problems found in a script, sorted by position: at most [`MAX_ERRORS`] of them, and how
/// many more there were. A script that is wrong in bulk (a generated one, a wrong file) would
/// otherwise hold and print every one of tens of thousands of errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptErrors {
    /// The first errors by position, at most [`MAX_ERRORS`].
    pub errors: Vec<ScriptError>,
    /// Distinct errors found beyond those kept.
    pub omitted: usize,
}

/// Most errors kept and shown for one script; the rest are counted.
pub const MAX_ERRORS: usize = 200;

impl ScriptErrors {
    /// Every distinct error found, shown or not.
    pub fn len(&self) -> usize {
        self.errors.len() + self.omitted
    }

    /// How many are kept (and shown).
    pub fn shown(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ScriptError> {
        self.errors.iter()
    }
}

impl fmt::Display for ScriptErrors {
    /// One error per line, then `… and N more errors` when some were left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.omitted > 0 {
            if !self.errors.is_empty() {
                writeln!(f)?;
            }
            write!(
                f,
                "… and {} more error{}",
                thousands(self.omitted),
                if self.omitted == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptErrors {}

impl IntoIterator for ScriptErrors {
    type Item = ScriptError;
    type IntoIter = std::vec::IntoIter<ScriptError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// `39950` as `39,950`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// User text as shown inside a message: control characters escaped and long text cut, so a
/// script full of junk cannot flood the terminal through its error messages.
pub(crate) fn shown(s: &str) -> String {
    dramaq_common::text::shown_default(s)
}

/// Collects errors for one file while the tree is built and walked, keeping the first
/// [`MAX_ERRORS`] by position and counting the rest: memory stays bounded whatever the script.
#[derive(Debug)]
pub(crate) struct Sink {
    file: String,
    errors: Vec<ScriptError>,
    /// Hashes of every error pushed, so exact repeats count once even after being dropped.
    seen: HashSet<u64>,
    /// Errors pushed in total, repeats excluded.
    distinct: usize,
    /// Order of pushing, to keep the sort stable across compactions.
    seq: Vec<u64>,
    next_seq: u64,
}

impl Sink {
    pub(crate) fn new(file: &str) -> Sink {
        Sink {
            // The path comes from the command line; escaped like any other outside text.
            file: dramaq_common::text::shown(file, 200),
            errors: Vec::new(),
            seen: HashSet::new(),
            distinct: 0,
            seq: Vec::new(),
            next_seq: 0,
        }
    }

    pub(crate) fn push(&mut self, path: &str, pos: Pos, message: impl Into<String>) {
        let e = ScriptError {
            file: self.file.clone(),
            path: path.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        };
        let mut h = DefaultHasher::new();
        (&e.path, e.line, e.column, &e.message).hash(&mut h);
        if !self.seen.insert(h.finish()) {
            return;
        }
        self.distinct += 1;
        self.errors.push(e);
        self.seq.push(self.next_seq);
        self.next_seq += 1;
        if self.errors.len() >= 2 * MAX_ERRORS {
            self.compact();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.distinct == 0
    }

    /// Keep the first [`MAX_ERRORS`] by position (ties in the order found).
    fn compact(&mut self) {
        let mut both: Vec<(ScriptError, u64)> = std::mem::take(&mut self.errors)
            .into_iter()
            .zip(std::mem::take(&mut self.seq))
            .collect();
        both.sort_by_key(|(e, seq)| (e.line, e.column, *seq));
        both.truncate(MAX_ERRORS);
        (self.errors, self.seq) = both.into_iter().unzip();
    }

    /// Sorted by position; errors at one spot keep the order they were found in. Exact repeats
    /// are shown once.
    pub(crate) fn finish(mut self) -> ScriptErrors {
        self.compact();
        let omitted = self.distinct - self.errors.len();
        ScriptErrors {
            errors: self.errors,
            omitted,
        }
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
    fn keeps_the_first_errors_by_position_and_counts_the_rest() {
        let mut sink = Sink::new("s.yaml");
        for i in (1..=1_000).rev() {
            sink.push("x", Pos::new(i, 1), format!("bad {i}"));
            sink.push("x", Pos::new(i, 1), format!("bad {i}")); // an exact repeat
        }
        let errors = sink.finish();
        assert_eq!(errors.shown(), MAX_ERRORS);
        assert_eq!(errors.len(), 1_000);
        assert_eq!(errors.omitted, 800);
        assert_eq!(errors.errors[0].line, 1);
        assert_eq!(errors.errors[MAX_ERRORS - 1].line, MAX_ERRORS);
        let text = errors.to_string();
        assert!(text.ends_with("\n… and 800 more errors"), "{text}");
        assert_eq!(text.lines().count(), MAX_ERRORS + 1);
        assert_eq!(thousands(39_950), "39,950");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\nb\u{0}"), "a\\nb\\u{0}");
        assert_eq!(shown(&"x".repeat(100)), format!("{}…", "x".repeat(60)));
    }
}
