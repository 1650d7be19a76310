//! The episode timeline: where each scene sits and where each voice line starts.
//!
//! Scenes play one after another, each exactly as long as the script asked (the clip is trimmed
//! or held on its last frame to fit). A voice line starts inside its own scene: at the `at:`
//! offset the script gives, else one after another from a short lead-in with a small gap between
//! lines. A start that would fall past the end of its scene is pulled back inside it (`plan`
//! warns about such scenes), so no line ever plays over the wrong picture. Pure arithmetic in
//! milliseconds, tested below; the audio mix and the subtitles are both built from it.

/// Silence before a scene's first line when the script gives no offset.
pub(crate) const LEAD_IN_MS: u64 = 300;
/// Silence between two lines of one scene.
pub(crate) const GAP_MS: u64 = 250;
/// The latest a line may start: this long before the end of its scene.
pub(crate) const MIN_INSIDE_MS: u64 = 200;

/// A scene's place on the episode timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SceneSlot {
    pub start_ms: u64,
    pub duration_ms: u64,
}

impl SceneSlot {
    pub(crate) fn end_ms(&self) -> u64 {
        self.start_ms + self.duration_ms
    }
}

/// A voice line as the timeline needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LineIn {
    /// Index of its scene.
    pub scene: usize,
    /// Offset from the scene's start, when the script gives one.
    pub at_ms: Option<u64>,
    /// Length of the voice file.
    pub duration_ms: u64,
    pub text: String,
}

/// A voice line placed on the episode timeline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placed {
    pub scene: usize,
    /// Where its audio starts (episode time).
    pub start_ms: u64,
    /// Where its subtitle ends: the end of its audio, or of its scene if that comes first.
    pub cue_end_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timeline {
    pub scenes: Vec<SceneSlot>,
    pub lines: Vec<Placed>,
    pub total_ms: u64,
}

/// Lay out `scene_ms` (each scene's length, in playback order) and `lines` (in script order).
pub(crate) fn build(scene_ms: &[u64], lines: &[LineIn]) -> Result<Timeline, String> {
    let mut scenes = Vec::with_capacity(scene_ms.len());
    let mut at = 0u64;
    for &d in scene_ms {
        scenes.push(SceneSlot {
            start_ms: at,
            duration_ms: d,
        });
        at += d;
    }
    let mut cursor: Vec<u64> = vec![LEAD_IN_MS; scenes.len()];
    let mut placed = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let slot = scenes.get(line.scene).ok_or_else(|| {
            format!(
                "voice line {} belongs to scene {} but the episode has {} scenes",
                n + 1,
                line.scene + 1,
                scenes.len()
            )
        })?;
        let latest = slot.duration_ms.saturating_sub(MIN_INSIDE_MS);
        let rel = line.at_ms.unwrap_or(cursor[line.scene]).min(latest);
        cursor[line.scene] = rel + line.duration_ms + GAP_MS;
        let start_ms = slot.start_ms + rel;
        placed.push(Placed {
            scene: line.scene,
            start_ms,
            cue_end_ms: (start_ms + line.duration_ms).min(slot.end_ms()),
            text: line.text.clone(),
        });
    }
    Ok(Timeline {
        scenes,
        lines: placed,
        total_ms: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(scene: usize, at_ms: Option<u64>, duration_ms: u64) -> LineIn {
        LineIn {
            scene,
            at_ms,
            duration_ms,
            text: format!("s{scene}"),
        }
    }

    #[test]
    fn lines_start_inside_their_own_scene() {
        // The sample's ep01: no line in scene 1, two in scene 2, three in scene 3.
        let t = build(
            &[4_000, 8_000, 8_000, 5_000],
            &[
                line(1, None, 2_000),
                line(1, None, 2_500),
                line(2, None, 3_000),
                line(2, Some(4_000), 1_000),
                line(2, None, 1_000),
            ],
        )
        .unwrap();
        assert_eq!(t.total_ms, 25_000);
        let starts: Vec<u64> = t.lines.iter().map(|l| l.start_ms).collect();
        assert_eq!(starts, [4_300, 6_550, 12_300, 16_000, 17_250]);
        for l in &t.lines {
            let s = t.scenes[l.scene];
            assert!(l.start_ms >= s.start_ms && l.start_ms < s.end_ms(), "{l:?}");
            assert!(
                l.cue_end_ms <= s.end_ms() && l.cue_end_ms > l.start_ms,
                "{l:?}"
            );
        }
    }

    #[test]
    fn a_line_past_its_scene_is_pulled_back_inside_and_its_cue_clipped() {
        let t = build(
            &[2_000, 3_000],
            &[
                line(0, None, 1_500),
                line(0, None, 1_500),
                line(1, Some(9_000), 500),
            ],
        )
        .unwrap();
        assert_eq!(t.lines[1].start_ms, 1_800);
        assert_eq!(t.lines[1].cue_end_ms, 2_000);
        assert_eq!(t.lines[2].start_ms, 4_800);
        assert!(build(&[1_000], &[line(3, None, 10)]).is_err());
    }
}
