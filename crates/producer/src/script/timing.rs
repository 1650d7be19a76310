//! `plan`'s timing check: warns when a scene's dialogue will not fit in the scene.
//!
//! The master lays a scene's lines one after another from a short lead-in (or at their `at:`
//! offsets); a line that would start past the end of its scene is pulled back inside it and
//! talks over the line before. Speech length is only known once the voice is rendered, so this
//! estimates it from the text (about 15 characters a second, 4.5 for CJK) and warns early,
//! naming the scene's place in the script. A warning never stops a plan or an enqueue.

use super::error::ScriptError;
use super::season::{Scene, Season};

/// The master's lead-in before a scene's first line and gap between lines (ms); kept equal to
/// the worker's timeline.
const LEAD_IN_MS: u64 = 300;
const GAP_MS: u64 = 250;

/// Estimated speaking time of `text` (ms).
pub fn speech_ms(text: &str) -> u64 {
    text.chars()
        .map(|c| match c as u32 {
            0x3000..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff | 0xff00..=0xffef => 220,
            _ if c.is_whitespace() => 40,
            _ => 65,
        })
        .sum()
}

/// When the last line of `scene` is estimated to end, from the scene's start (ms).
fn dialogue_end_ms(scene: &Scene) -> u64 {
    let mut cursor = LEAD_IN_MS;
    let mut end = 0;
    for line in &scene.dialogue {
        let start = line.at_ms.map_or(cursor, u64::from);
        let len = speech_ms(&line.text);
        end = end.max(start + len);
        cursor = start + len + GAP_MS;
    }
    end
}

/// A warning per scene whose lines are estimated to run past its end.
pub fn warnings(season: &Season, file: &str) -> Vec<ScriptError> {
    let mut out = Vec::new();
    for scene in season.episodes.iter().flat_map(|e| &e.scenes) {
        let end = dialogue_end_ms(scene);
        let length = u64::from(scene.duration_s) * 1000;
        if scene.dialogue.is_empty() || end <= length {
            continue;
        }
        out.push(ScriptError {
            file: file.to_string(),
            path: scene.path.clone(),
            line: scene.pos.line,
            column: scene.pos.column,
            message: format!(
                "the scene's {} dialogue line{} need about {:.1} s but the scene lasts {} s; \
                 late lines will be pulled inside the scene and overlap (shorten them, lengthen \
                 the scene, or place them with `at:`)",
                scene.dialogue.len(),
                if scene.dialogue.len() == 1 { "" } else { "s" },
                end as f64 / 1000.0,
                scene.duration_s
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_is_slower_than_latin() {
        assert_eq!(speech_ms("ab c"), 65 * 3 + 40);
        assert_eq!(speech_ms("灯塔"), 440);
    }
}
