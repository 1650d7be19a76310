//! Episode assembly: put an episode's stored scenes and voice lines together.
//!
//! The assembly account is an ordinary provider that happens to run in the worker
//! ([`Assembler`]): claimed, submitted, stored and completed through the same path as every
//! render ([`crate::submit`], [`crate::finish`]), with no special case. It charges nothing, so
//! a resubmit after a crash is not counted as a possible duplicate payment.
//!
//! It runs once every scene and line of the episode is stored (the dependency protocol makes the
//! task ready only then). With `ffmpeg` on the worker (config `worker.ffmpeg`), the scene clips
//! are concatenated and the voice lines laid over them as one audio track. ffmpeg needs files: a
//! storage backend without local paths (S3) has the clips fetched into a temporary directory
//! first, each checked against its recorded sha256; the finished file is streamed back as the
//! submit's answer and stored like any result. Without ffmpeg — or when ffmpeg cannot read the
//! clips — the episode gets a JSON manifest listing every clip in order with its checksum, and
//! the log says so. A clip that cannot be fetched fails the attempt (retried with backoff)
//! rather than settling for a manifest over a passing storage error.

use crate::providers::{
    nothing_to_poll, Download, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome,
    SubmitRequest, SyncResult,
};
use crate::storage::{self, Location, Storage};
use async_trait::async_trait;
use bytes::Bytes;
use dramaq_common::config::Family;
use dramaq_common::model::{DepRef, FailureClass, TaskPayload};
use dramaq_common::queue::Queue;
use futures::StreamExt;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// The assembly account's "provider": it runs in the worker, reads the episode's clips from the
/// queue and storage, and answers a submit with the finished file. It charges nothing.
pub(crate) struct Assembler {
    queue: Queue,
    storage: Arc<dyn Storage>,
    ffmpeg: String,
}

impl Assembler {
    pub(crate) fn new(queue: Queue, storage: Arc<dyn Storage>, ffmpeg: String) -> Assembler {
        Assembler {
            queue,
            storage,
            ffmpeg,
        }
    }
}

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

#[async_trait]
impl Provider for Assembler {
    fn family(&self) -> Family {
        Family::Assembly
    }

    fn charges(&self) -> bool {
        false
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let TaskPayload::Assembly { scenes, voice } = req.payload else {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "the assembly account got a task that is not an episode assembly",
            ));
        };
        let scene_clips = self.clips(req.deps, scenes).await?;
        let voice_clips = self.clips(req.deps, voice).await?;
        if let Some(body) = self.try_ffmpeg(&scene_clips, &voice_clips).await? {
            return Ok(SubmitOutcome::Finished(SyncResult::Stream {
                body,
                ext: "mp4".into(),
            }));
        }
        let manifest = Manifest {
            season: req.season,
            episode: req.group,
            assembled_by: "dramaq",
            note: "ffmpeg was not available (or could not read the clips): this manifest lists the episode's clips in playback order",
            scenes: scene_clips,
            voice: voice_clips,
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| {
            ProviderError::new(FailureClass::Unknown, format!("writing the manifest: {e}"))
        })?;
        info!("episode manifest written (no ffmpeg assembly)");
        Ok(SubmitOutcome::Finished(SyncResult::Bytes {
            bytes: Bytes::from(body),
            ext: "json".into(),
        }))
    }

    async fn poll(&self, _: &str, _: Option<&str>) -> Result<PollOutcome, ProviderError> {
        Err(nothing_to_poll())
    }

    async fn fetch(&self, _: &ResultRef) -> Result<Download, ProviderError> {
        Err(nothing_to_poll())
    }
}

impl Assembler {
    async fn clips(&self, deps: &[DepRef], ids: &[String]) -> Result<Vec<Clip>, ProviderError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let bad = |why: String| ProviderError::new(FailureClass::Unknown, why);
            let dep = deps
                .iter()
                .find(|d| &d.id == id)
                .ok_or_else(|| bad(format!("{id} is not a dependency of the assembly")))?;
            let r = self
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

    /// A file per clip for ffmpeg: the backend's own path when it has one, else a copy fetched into
    /// `dir` and checked against the recorded sha256.
    async fn clip_files(
        &self,
        clips: &[Clip],
        dir: &Path,
        what: &str,
    ) -> Result<Vec<PathBuf>, ProviderError> {
        let mut out = Vec::with_capacity(clips.len());
        for (i, clip) in clips.iter().enumerate() {
            let location = Location::parse(&clip.location).map_err(|e| {
                ProviderError::new(FailureClass::Unknown, format!("{}: {e}", clip.label))
            })?;
            if let Some(path) = self.storage.local_path(&location) {
                out.push(path);
                continue;
            }
            let name = location.as_str().rsplit('/').next().unwrap_or("clip");
            // Numbered, so two clips can never share a file and the listing keeps playback order.
            let dest = dir.join(format!("{what}-{i:04}-{name}"));
            let got = self
                .storage
                .fetch_to_file(&location, &dest)
                .await
                .map_err(crate::finish::store_failure)?;
            if got.sha256 != clip.sha256 {
                return Err(ProviderError::new(
                    FailureClass::Unknown,
                    format!(
                        "{} ({}) was fetched with sha256 {} but was stored with {}",
                        clip.label, clip.location, got.sha256, clip.sha256
                    ),
                ));
            }
            out.push(dest);
        }
        Ok(out)
    }

    /// Concatenate with ffmpeg into a temporary file and stream it back. `Ok(None)` means "use a
    /// manifest"; an error fails the attempt (a clip could not be fetched).
    async fn try_ffmpeg(
        &self,
        scenes: &[Clip],
        voice: &[Clip],
    ) -> Result<Option<storage::Body>, ProviderError> {
        let probe = tokio::process::Command::new(&self.ffmpeg)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !probe.map(|s| s.success()).unwrap_or(false) || scenes.is_empty() {
            return Ok(None);
        }
        let Ok(dir) = tempfile::tempdir() else {
            warn!("no temporary directory for ffmpeg; writing a manifest instead");
            return Ok(None);
        };
        let scene_paths = self.clip_files(scenes, dir.path(), "scene").await?;
        let voice_paths = self.clip_files(voice, dir.path(), "voice").await?;
        if scene_paths
            .iter()
            .chain(&voice_paths)
            .any(|p| p.starts_with(dir.path()))
        {
            debug!(
                scenes = scene_paths.len(),
                voice = voice_paths.len(),
                "clips fetched from storage for ffmpeg"
            );
        }
        let Some(out) = run_ffmpeg(&self.ffmpeg, dir.path(), &scene_paths, &voice_paths).await
        else {
            return Ok(None);
        };
        let file = match tokio::fs::File::open(&out).await {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "ffmpeg's output cannot be read; writing a manifest instead");
                return Ok(None);
            }
        };
        // Streamed, so a long episode is never held in memory whole; the stream owns the temporary
        // directory, which goes when the body has been stored.
        let body = tokio_util::io::ReaderStream::new(file)
            .map(move |chunk| {
                let _keep = &dir;
                chunk.map_err(|e| format!("reading ffmpeg's output: {e}"))
            })
            .boxed();
        Ok(Some(body))
    }
}

/// Run ffmpeg in `dir`; the assembled file's path, or `None` when ffmpeg failed (logged).
async fn run_ffmpeg(
    ffmpeg: &str,
    dir: &Path,
    scene_paths: &[PathBuf],
    voice_paths: &[PathBuf],
) -> Option<PathBuf> {
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
    let videos = dir.join("videos.txt");
    tokio::fs::write(&videos, list(scene_paths)).await.ok()?;
    let out = dir.join("episode.mp4");
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
        let audio = dir.join("audio.txt");
        tokio::fs::write(&audio, list(voice_paths)).await.ok()?;
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
    Some(out)
}
