//! Subtitle sidecars from the dialogue timeline: SubRip (`.srt`) and WebVTT (`.vtt`).
//!
//! One cue per voice line, from the start of its audio to its end (never past the end of its
//! scene, [`super::timeline`]). Text is the script's line as written (CJK, Vietnamese and any
//! other script pass through as UTF-8); only what would break the format is changed: control
//! characters go, blank lines inside a cue are folded (a blank line ends a cue in both formats),
//! and WebVTT's `&`, `<`, `>` are escaped.

use super::timeline::Placed;
use std::fmt::Write;

fn clean(text: &str) -> String {
    let no_controls: String = text
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| *c == '\n' || !c.is_control())
        .collect();
    no_controls
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn stamp(ms: u64, frac_sep: char) -> String {
    format!(
        "{:02}:{:02}:{:02}{frac_sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    )
}

/// The SubRip file.
pub(crate) fn srt(lines: &[Placed]) -> String {
    let mut out = String::new();
    for (n, l) in lines.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            n + 1,
            stamp(l.start_ms, ','),
            stamp(l.cue_end_ms, ','),
            clean(&l.text)
        );
    }
    out
}

/// The WebVTT file.
pub(crate) fn vtt(lines: &[Placed]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for l in lines {
        let text = clean(&l.text)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            stamp(l.start_ms, '.'),
            stamp(l.cue_end_ms, '.'),
            text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(start_ms: u64, cue_end_ms: u64, text: &str) -> Placed {
        Placed {
            scene: 0,
            start_ms,
            cue_end_ms,
            text: text.into(),
        }
    }

    #[test]
    fn writes_both_formats_with_text_kept_and_breakers_removed() {
        let lines = [
            placed(4_300, 6_300, "Not tonight."),
            placed(
                3_661_005,
                3_662_000,
                "灯塔熄了。\n\nĐèn tắt rồi <b> & \u{1b}[31m",
            ),
        ];
        let s = srt(&lines);
        assert_eq!(
            s,
            "1\n00:00:04,300 --> 00:00:06,300\nNot tonight.\n\n\
             2\n01:01:01,005 --> 01:01:02,000\n灯塔熄了。\nĐèn tắt rồi <b> & [31m\n\n"
        );
        let v = vtt(&lines);
        assert!(
            v.starts_with("WEBVTT\n\n00:00:04.300 --> 00:00:06.300\n"),
            "{v}"
        );
        assert!(v.contains("Đèn tắt rồi &lt;b&gt; &amp; [31m\n"), "{v}");
    }
}
