//! Text from outside (a season script, a config file, a provider's answer) made safe to show.
//!
//! Anything a script author, a config or a provider controls can reach a terminal, a log line or
//! a URL. [`shown`] escapes control characters (so no escape sequence reaches a terminal and no
//! newline forges a log line) and cuts the text at a bound (so one huge value cannot flood a
//! screen or a log). Every message that quotes outside text goes through it.

use std::fmt;

/// How many characters [`shown_default`] keeps.
pub const SHOWN_CHARS: usize = 60;

/// `s` with control characters escaped (`\n`, `\u{1b}`) and cut after `max_chars` characters
/// (marked with `…`). Output length is bounded by about `10 × max_chars` bytes.
pub fn shown(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 2));
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// [`shown`] with the default bound of [`SHOWN_CHARS`] characters.
pub fn shown_default(s: &str) -> String {
    shown(s, SHOWN_CHARS)
}

fn push_escaped(out: &mut String, c: char) {
    // Bidirectional overrides and other invisible format characters can make a terminal show
    // something other than what is there; escape them like control characters.
    let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
    if c.is_control() || invisible {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// A `Display` wrapper for logs and `format!`: `Shown(&id)` prints [`shown`] with the bound
/// given (default 200 characters, enough for any provider task id).
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str, pub usize);

impl<'a> Shown<'a> {
    pub fn id(s: &'a str) -> Shown<'a> {
        Shown(s, 200)
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown(self.0, self.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_invisible_characters() {
        assert_eq!(shown("a\nb\u{1b}[31m", 60), "a\\nb\\u{1b}[31m");
        assert_eq!(shown("x\u{202e}y", 60), "x\\u{202e}y");
        assert_eq!(shown("越南 tiếng Việt", 60), "越南 tiếng Việt");
    }

    #[test]
    fn cuts_long_text() {
        let long = "é".repeat(1_000);
        let s = shown(&long, 10);
        assert_eq!(s.chars().count(), 11);
        assert!(s.ends_with('…'));
        assert_eq!(Shown("ab\ncd", 3).to_string(), "ab\\n…");
    }
}
