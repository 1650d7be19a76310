//! Episode assembly: put an episode's stored scenes and voice lines together.
//!
//! It runs once every scene and line of the episode is stored (the dependency protocol makes the
//! task ready only then). With `ffmpeg` on the worker (config `worker.ffmpeg`), the scene clips
//! are concatenated and the voice lines laid over them as one audio track. Without it — or when
//! ffmpeg cannot read the clips — the episode gets a JSON manifest listing every clip in order
//! with its checksum, and the log says so; an editor or a later run can assemble from it.

use crate::context::Ctx;
use crate::process;
use crate::providers::ProviderError;
use crate::storage::{self, Location};
use bytes::Bytes;
use dramaq_common::model::{FailureClass, TaskPayload, TaskRecord};
use dramaq_common::queue::QueueError;
use serde::Serialize;
use std::path::PathBuf;
use std::process::Stdio;
use tracing::{info, warn};

#[derive(Debug, Serialize)]
struct Clip {
    task: String,
    label: String,
    location: String,
    sha256: String,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct Manifest<'a> {
    season: &'a str,
    episode: &'a str,
    assembled_by: &'static str,
    note: &'static str,
    scenes: Vec<Clip>,
    voice: Vec<Clip>,
}

pub async fn run(ctx: &Ctx, rec: &TaskRecord) -> Result<(), QueueError> {
    let TaskPayload::Assembly { scenes, voice } = &rec.payload else {
        let err = ProviderError::new(
            FailureClass::InvalidRequest,
            "assembly account got a non-assembly task",
        );
        return process::fail_held(ctx, rec, rec.fence, rec.attempt + 1, err).await;
    };
    let attempt = ctx
        .queue
        .mark_submitting(&rec.account, &rec.id, rec.fence)
        .await?;
    let (scene_clips, voice_clips) =
        match (clips(ctx, rec, scenes).await, clips(ctx, rec, voice).await) {
            (Ok(s), Ok(v)) => (s, v),
            (Err(e), _) | (_, Err(e)) => {
                return process::fail_held(ctx, rec, rec.fence, attempt, e).await
            }
        };
    if let Some(stored) = try_ffmpeg(ctx, rec, &scene_clips, &voice_clips).await {
        return process::complete(ctx, rec, rec.fence, stored).await;
    }
    let manifest = Manifest {
        season: &rec.season,
        episode: &rec.group,
        assembled_by: "dramaq",
        note: "ffmpeg was not available (or could not read the clips): this manifest lists the episode's clips in playback order",
        scenes: scene_clips,
        voice: voice_clips,
    };
    let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    match process::store(ctx, rec, "json", storage::once(Bytes::from(body))).await {
        Ok(stored) => {
            info!("episode manifest written (no ffmpeg assembly)");
            process::complete(ctx, rec, rec.fence, stored).await
        }
        Err(e) => process::fail_held(ctx, rec, rec.fence, attempt, process::store_failure(e)).await,
    }
}

async fn clips(ctx: &Ctx, rec: &TaskRecord, ids: &[String]) -> Result<Vec<Clip>, ProviderError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let bad = |why: String| ProviderError::new(FailureClass::Unknown, why);
        let dep = rec
            .deps
            .iter()
            .find(|d| &d.id == id)
            .ok_or_else(|| bad(format!("{id} is not a dependency of the assembly")))?;
        let r = ctx
            .queue
            .get_task(&dep.account, id)
            .await
            .map_err(|e| bad(format!("reading {id}: {e}")))?
            .ok_or_else(|| bad(format!("{id} has no record")))?;
        let (Some(location), Some(sha256)) = (r.output.clone(), r.sha256.clone()) else {
            return Err(bad(format!("{id} ({}) is not stored", r.label)));
        };
        out.push(Clip {
            task: r.id,
            label: r.label,
            location,
            sha256,
            bytes: r.bytes.unwrap_or(0),
        });
    }
    Ok(out)
}

fn local_paths(ctx: &Ctx, clips: &[Clip]) -> Option<Vec<PathBuf>> {
    clips
        .iter()
        .map(|c| {
            Location::parse(&c.location)
                .ok()
                .and_then(|l| ctx.storage.local_path(&l))
        })
        .collect()
}

/// Concatenate with ffmpeg into a temporary file, then store it. `None` means "use a manifest".
async fn try_ffmpeg(
    ctx: &Ctx,
    rec: &TaskRecord,
    scenes: &[Clip],
    voice: &[Clip],
) -> Option<storage::Stored> {
    let ffmpeg = &ctx.cfg.worker.ffmpeg;
    let probe = tokio::process::Command::new(ffmpeg)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if !probe.map(|s| s.success()).unwrap_or(false) || scenes.is_empty() {
        return None;
    }
    let scene_paths = local_paths(ctx, scenes)?;
    let voice_paths = local_paths(ctx, voice)?;
    let dir = tempfile::tempdir().ok()?;
    let list = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| {
                format!(
                    "file '{}'\n",
                    p.display().to_string().replace('\'', "'\\''")
                )
            })
            .collect::<String>()
    };
    let videos = dir.path().join("videos.txt");
    tokio::fs::write(&videos, list(&scene_paths)).await.ok()?;
    let out = dir.path().join("episode.mp4");
    let mut cmd = tokio::process::Command::new(ffmpeg);
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
    ])
    .arg(&videos);
    if !voice_paths.is_empty() {
        let audio = dir.path().join("audio.txt");
        tokio::fs::write(&audio, list(&voice_paths)).await.ok()?;
        cmd.args(["-f", "concat", "-safe", "0", "-i"]).arg(&audio);
        cmd.args(["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac"]);
    } else {
        cmd.args(["-c", "copy"]);
    }
    cmd.arg(&out).stdout(Stdio::null()).stderr(Stdio::piped());
    let result = cmd.output().await.ok()?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        warn!(stderr = %stderr.chars().take(400).collect::<String>(), "ffmpeg could not assemble the episode; writing a manifest instead");
        return None;
    }
    let bytes = tokio::fs::read(&out).await.ok()?;
    process::store(ctx, rec, "mp4", storage::once(Bytes::from(bytes)))
        .await
        .ok()
}
