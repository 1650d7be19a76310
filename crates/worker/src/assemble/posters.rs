//! Pictures a person can glance at: a poster frame per scene and per episode, and a contact sheet
//! (the scene posters in a grid) per episode, all JPEG, taken from the finished master so they
//! show exactly what the master shows (format, padding, burnt-in subtitles). The posters are
//! taken at the middle of each scene (a fast seek each); the sheet is tiled from them.

use super::ffmpeg::{args, run, Format};
use super::timeline::Timeline;
use crate::providers::ProviderError;
use std::path::{Path, PathBuf};

/// Posters written into the work directory.
pub(crate) struct Posters {
    /// One per scene, in playback order.
    pub scenes: Vec<PathBuf>,
    pub episode: PathBuf,
    pub contact: PathBuf,
}

/// Columns of the contact sheet.
const COLUMNS: usize = 4;

fn poster_height(f: Format) -> u32 {
    f.height.min(640) / 2 * 2
}

async fn frame_at(
    ffmpeg: &str,
    dir: &Path,
    master: &Path,
    at_ms: u64,
    height: u32,
    name: &str,
) -> Result<PathBuf, ProviderError> {
    let out = dir.join(name);
    run(
        ffmpeg,
        dir,
        "poster frame",
        args([
            "-loglevel".into(),
            "error".into(),
            "-ss".into(),
            format!("{}.{:03}", at_ms / 1000, at_ms % 1000),
            "-i".into(),
            master.display().to_string(),
            "-frames:v".into(),
            "1".into(),
            "-vf".into(),
            format!("scale=-2:{height}"),
            "-q:v".into(),
            "4".into(),
            name.into(),
        ]),
    )
    .await?;
    Ok(out)
}

/// Take the posters and the contact sheet from `master`.
pub(crate) async fn make(
    ffmpeg: &str,
    dir: &Path,
    master: &Path,
    t: &Timeline,
    f: Format,
) -> Result<Posters, ProviderError> {
    let height = poster_height(f);
    let mut scenes = Vec::with_capacity(t.scenes.len());
    for (i, s) in t.scenes.iter().enumerate() {
        let mid = s.start_ms + s.duration_ms / 2;
        scenes.push(
            frame_at(
                ffmpeg,
                dir,
                master,
                mid,
                height,
                &format!("poster-{i:04}.jpg"),
            )
            .await?,
        );
    }
    let episode = frame_at(ffmpeg, dir, master, t.total_ms / 2, height, "poster.jpg").await?;
    // The sheet tiles the scene posters already taken (an image sequence), so the master is not
    // decoded again.
    let columns = t.scenes.len().clamp(1, COLUMNS);
    let rows = t.scenes.len().div_ceil(columns).max(1);
    let thumb = (height / 2).max(16) / 2 * 2;
    run(
        ffmpeg,
        dir,
        "contact sheet",
        args([
            "-loglevel".to_string(),
            "error".into(),
            "-framerate".into(),
            "1".into(),
            "-i".into(),
            "poster-%04d.jpg".into(),
            "-vf".into(),
            format!("scale=-2:{thumb},tile={columns}x{rows}:padding=4:margin=4"),
            "-frames:v".into(),
            "1".into(),
            "-q:v".into(),
            "4".into(),
            "contact.jpg".into(),
        ]),
    )
    .await?;
    Ok(Posters {
        scenes,
        episode,
        contact: dir.join("contact.jpg"),
    })
}
