//! The season as the validator hands it to expansion: every reference resolved, every default
//! applied, every value checked.
//!
//! Keeping this separate from the positioned tree means expansion cannot fail and never needs
//! to know about YAML, positions or error reporting.

/// A validated season script.
#[derive(Debug, Clone, PartialEq)]
pub struct Season {
    pub id: String,
    pub title: String,
    /// `review: scenes`: each episode is assembled only once all its scenes are approved.
    pub review: bool,
    /// `budget: { usd: N }`: what the season may spend, enforced at claim time.
    pub budget_usd: Option<f64>,
    /// `budget: { per_episode_usd: N }`: what each episode may spend (character sheets count
    /// against the season only).
    pub budget_per_episode_usd: Option<f64>,
    pub aspect_ratio: String,
    pub resolution: String,
    /// Provider chains per kind. Empty only when the kind has no tasks in this season.
    pub image_chain: Vec<String>,
    pub voice_chain: Vec<String>,
    pub assembly_chain: Vec<String>,
    /// Music bed of every episode without its own (path or URL).
    pub music: Option<String>,
    /// `subtitles: burn`: burn the cues into the picture as well as writing sidecars.
    pub burn_subtitles: bool,
    pub characters: Vec<Character>,
    pub episodes: Vec<Episode>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Character {
    pub name: String,
    /// Lowercased name with every character outside `[a-z0-9]` replaced by `-`.
    pub id: String,
    pub appearance: String,
    pub seed: u32,
    pub reference_image: Option<String>,
    pub voice: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub id: String,
    pub title: Option<String>,
    pub music: Option<String>,
    pub scenes: Vec<Scene>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub id: String,
    /// Where the scene is in the script (schema path and position), for warnings.
    pub path: String,
    pub pos: super::error::Pos,
    pub description: String,
    /// Indexes into [`Season::characters`], in script order.
    pub characters: Vec<usize>,
    pub duration_s: u32,
    pub camera: Option<String>,
    pub negative_prompt: Option<String>,
    /// Index into [`Season::characters`] of the first-frame character (image-to-video).
    pub first_frame: Option<usize>,
    pub video_chain: Vec<String>,
    pub dialogue: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Index into [`Season::characters`].
    pub speaker: usize,
    pub text: String,
    /// `at:`: where the line starts in its scene (ms).
    pub at_ms: Option<u32>,
}

/// `Mira Holt` → `mira-holt`.
pub fn character_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect()
}
