//! The explicit fallback: with `assembly.ffmpeg = false` an episode's output is a JSON manifest
//! listing its clips in playback order with their checksums, for a studio that assembles
//! elsewhere. Never used when ffmpeg fails: that is a task failure.

use serde::Serialize;

/// A stored clip of the episode.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Clip {
    pub task: String,
    pub label: String,
    pub location: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
struct Manifest<'a> {
    season: &'a str,
    episode: &'a str,
    assembled_by: &'static str,
    note: &'static str,
    scenes: &'a [Clip],
    voice: &'a [Clip],
}

/// The manifest's JSON text.
pub(crate) fn write(
    season: &str,
    episode: &str,
    scenes: &[Clip],
    voice: &[Clip],
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec_pretty(&Manifest {
        season,
        episode,
        assembled_by: "dramaq",
        note: "assembly.ffmpeg is false: this manifest lists the episode's clips in playback order",
        scenes,
        voice,
    })
}
