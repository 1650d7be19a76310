//! Episode assembly: put an episode's stored scenes and voice lines together into a master.
//!
//! The assembly account is an ordinary provider that happens to run in the worker
//! ([`Assembler`]): claimed, submitted, stored and completed through the same path as every
//! render ([`crate::submit`], [`crate::finish`]), with no special case. It charges nothing, so
//! a resubmit after a crash is not counted as a possible duplicate payment.
//!
//! It runs once every scene and line of the episode is stored (the dependency protocol makes the
//! task ready only then). The layout is computed first ([`timeline`]: each scene's slot, each
//! line inside its own scene), then ffmpeg builds the master ([`ffmpeg`]: audio mix, loudness
//! measurement, one encode to the season's format), the subtitle sidecars are written
//! ([`subtitles`]) and the posters taken ([`posters`]). ffmpeg needs files: a storage backend
//! without local paths (S3) has the clips fetched into a temporary directory first, each checked
//! against its recorded sha256. Sidecars and posters are stored beside the episode's clips; the
//! master is streamed back as the submit's answer and stored like any result.
//!
//! With `assembly.ffmpeg = false` the episode gets a JSON manifest instead ([`manifest`]), on
//! purpose. Any failure on the ffmpeg path fails the attempt (retried with backoff) with
//! ffmpeg's own message in the task's error history; it never quietly becomes a manifest.

mod ffmpeg;
mod manifest;
mod posters;
mod subtitles;
mod timeline;

use crate::probe::{self, Expect};
use crate::providers::{
    nothing_to_poll, Download, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome,
    SubmitRequest, SyncResult,
};
use crate::storage::{self, Location, Storage};
use async_trait::async_trait;
use bytes::Bytes;
use dramaq_common::config::{Config, Family};
use dramaq_common::model::{DepRef, FailureClass, MasterPlan, TaskPayload, TaskRecord};
use dramaq_common::queue::Queue;
use futures::StreamExt;
use manifest::Clip;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, info};

/// Format of masters whose record predates [`MasterPlan`].
const DEFAULT_ASPECT: &str = "9:16";
const DEFAULT_RESOLUTION: &str = "720p";

/// The assembly account's "provider": it runs in the worker, reads the episode's clips from the
/// queue and storage, and answers a submit with the finished file. It charges nothing.
pub(crate) struct Assembler {
    queue: Queue,
    storage: Arc<dyn Storage>,
    ffmpeg: String,
    ffprobe: String,
    /// `assembly.ffmpeg`: false writes a manifest.
    use_ffmpeg: bool,
    fps: u32,
    loudness_lufs: f64,
    /// Accounts whose clips carry their own sound (`native_audio`).
    native_audio: BTreeSet<String>,
}

impl Assembler {
    pub(crate) fn new(queue: Queue, storage: Arc<dyn Storage>, cfg: &Config) -> Assembler {
        Assembler {
            queue,
            storage,
            ffmpeg: cfg.worker.ffmpeg.clone(),
            ffprobe: cfg.worker.ffprobe.clone(),
            use_ffmpeg: cfg.assembly.ffmpeg,
            fps: cfg.assembly.fps,
            loudness_lufs: cfg.assembly.loudness_lufs,
            native_audio: cfg
                .accounts
                .iter()
                .filter(|(_, a)| a.native_audio)
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }
}

fn failed(why: impl Into<String>) -> ProviderError {
    ProviderError::new(FailureClass::Unknown, why)
}

/// A dependency as the master needs it: its stored clip and its record.
struct Input {
    clip: Clip,
    record: TaskRecord,
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
        let TaskPayload::Assembly {
            scenes,
            voice,
            master,
        } = req.payload
        else {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "the assembly account got a task that is not an episode assembly",
            ));
        };
        let scene_inputs = self.inputs(req.deps, scenes).await?;
        let voice_inputs = self.inputs(req.deps, voice).await?;
        if !self.use_ffmpeg {
            let clips = |v: &[Input]| v.iter().map(|i| i.clip.clone()).collect::<Vec<_>>();
            let body = manifest::write(
                req.season,
                req.group,
                &clips(&scene_inputs),
                &clips(&voice_inputs),
            )
            .map_err(|e| failed(format!("writing the manifest: {e}")))?;
            info!("episode manifest written (assembly.ffmpeg = false)");
            return Ok(SubmitOutcome::Finished(SyncResult::Bytes {
                bytes: Bytes::from(body),
                ext: "json".into(),
            }));
        }
        if scene_inputs.is_empty() {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "the episode has no scenes to assemble",
            ));
        }
        let job = Job {
            req: &req,
            plan: master.as_deref(),
            scenes: &scene_inputs,
            voice: &voice_inputs,
        };
        let body = self.master(job).await?;
        Ok(SubmitOutcome::Finished(SyncResult::Stream {
            body,
            ext: "mp4".into(),
        }))
    }

    async fn poll(&self, _: &str, _: Option<&str>) -> Result<PollOutcome, ProviderError> {
        Err(nothing_to_poll())
    }

    async fn fetch(&self, _: &ResultRef) -> Result<Download, ProviderError> {
        Err(nothing_to_poll())
    }
}

/// One master to build.
struct Job<'a> {
    req: &'a SubmitRequest<'a>,
    plan: Option<&'a MasterPlan>,
    scenes: &'a [Input],
    voice: &'a [Input],
}

impl Assembler {
    async fn inputs(&self, deps: &[DepRef], ids: &[String]) -> Result<Vec<Input>, ProviderError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let dep = deps
                .iter()
                .find(|d| &d.id == id)
                .ok_or_else(|| failed(format!("{id} is not a dependency of the assembly")))?;
            let r = self
                .queue
                .get_task(&dep.account, id)
                .await
                .map_err(|e| failed(format!("reading {id}: {e}")))?
                .ok_or_else(|| failed(format!("{id} has no record")))?;
            let (Some(location), Some(sha256)) = (r.output.clone(), r.sha256.clone()) else {
                return Err(failed(format!("{id} ({}) is not stored", r.label)));
            };
            out.push(Input {
                clip: Clip {
                    task: r.id.clone(),
                    label: r.label.clone(),
                    location,
                    sha256,
                    bytes: r.bytes.unwrap_or(0),
                },
                record: r,
            });
        }
        Ok(out)
    }

    /// A file per clip for ffmpeg: the backend's own path when it has one, else a copy fetched into
    /// `dir` and checked against the recorded sha256.
    async fn clip_files(
        &self,
        inputs: &[Input],
        dir: &Path,
        what: &str,
    ) -> Result<Vec<PathBuf>, ProviderError> {
        let mut out = Vec::with_capacity(inputs.len());
        for (i, Input { clip, .. }) in inputs.iter().enumerate() {
            let location = Location::parse(&clip.location)
                .map_err(|e| failed(format!("{}: {e}", clip.label)))?;
            if let Some(path) = self.storage.local_path(&location) {
                out.push(path);
                continue;
            }
            let name = location.as_str().rsplit('/').next().unwrap_or("clip");
            // Numbered, so two clips can never share a file.
            let dest = dir.join(format!("{what}-{i:04}-{name}"));
            let got = self
                .storage
                .fetch_to_file(&location, &dest)
                .await
                .map_err(crate::finish::store_failure)?;
            if got.sha256 != clip.sha256 {
                return Err(failed(format!(
                    "{} ({}) was fetched with sha256 {} but was stored with {}",
                    clip.label, clip.location, got.sha256, clip.sha256
                )));
            }
            out.push(dest);
        }
        Ok(out)
    }

    /// Build the master in a temporary directory, store its sidecars and posters, and stream it
    /// back. The stream owns the directory, which goes when the body has been stored.
    async fn master(&self, job: Job<'_>) -> Result<storage::Body, ProviderError> {
        let started = std::time::Instant::now();
        let dir = tempfile::tempdir()
            .map_err(|e| failed(format!("no temporary directory for ffmpeg: {e}")))?;
        let d = dir.path();
        let scene_paths = self.clip_files(job.scenes, d, "scene").await?;
        let voice_paths = self.clip_files(job.voice, d, "voice").await?;
        let (aspect, resolution) = job.plan.map_or((DEFAULT_ASPECT, DEFAULT_RESOLUTION), |p| {
            (p.aspect_ratio.as_str(), p.resolution.as_str())
        });
        let format = ffmpeg::format_of(aspect, resolution, self.fps)
            .map_err(|e| ProviderError::new(FailureClass::InvalidRequest, e))?;

        // The timeline: scene lengths from the script, line lengths from the voice files.
        let mut scene_ms = Vec::with_capacity(job.scenes.len());
        let mut native = Vec::new();
        for (i, (input, path)) in job.scenes.iter().zip(&scene_paths).enumerate() {
            let TaskPayload::Video { duration_s, .. } = input.record.payload else {
                return Err(failed(format!("{} is not a scene video", input.clip.label)));
            };
            scene_ms.push(u64::from(duration_s) * 1000);
            if self.native_audio.contains(&input.record.account) {
                let p = self
                    .probe_input(
                        path,
                        &input.clip,
                        Expect::Video {
                            seconds: f64::from(duration_s),
                        },
                    )
                    .await?;
                if p.audio {
                    native.push((i, native.len()));
                }
            }
        }
        let mut lines = Vec::with_capacity(job.voice.len());
        for (n, (input, path)) in job.voice.iter().zip(&voice_paths).enumerate() {
            let p = self.probe_input(path, &input.clip, Expect::Audio).await?;
            let text = match &input.record.payload {
                TaskPayload::Voice { text, .. } => text.clone(),
                _ => return Err(failed(format!("{} is not a voice line", input.clip.label))),
            };
            let cue = job.plan.and_then(|p| p.lines.get(n));
            lines.push(timeline::LineIn {
                scene: cue.map_or_else(
                    || scene_by_label(job.scenes, &input.record.label),
                    |c| c.scene as usize,
                ),
                at_ms: cue.and_then(|c| c.at_ms).map(u64::from),
                duration_ms: (p.duration_s * 1000.0).round() as u64,
                text,
            });
        }
        let t = timeline::build(&scene_ms, &lines)
            .map_err(|e| ProviderError::new(FailureClass::InvalidRequest, e))?;
        let srt = subtitles::srt(&t.lines);
        let vtt = subtitles::vtt(&t.lines);
        let write = |name: &str, text: &str| {
            std::fs::write(d.join(name), text).map_err(|e| failed(format!("writing {name}: {e}")))
        };
        write("subs.srt", &srt)?;
        write("subs.vtt", &vtt)?;

        // Pass 1: the audio mix.
        let mut a = ffmpeg::args(["-loglevel", "error"]);
        for &(scene, _) in &native {
            a.extend(ffmpeg::args([
                "-i".into(),
                scene_paths[scene].clone().into_os_string(),
            ]));
        }
        for p in &voice_paths {
            a.extend(ffmpeg::args(["-i".into(), p.clone().into_os_string()]));
        }
        let music = job.plan.and_then(|p| p.music.as_deref());
        if let Some(m) = music {
            a.extend(ffmpeg::args(["-stream_loop", "-1", "-i", &music_input(m)]));
        }
        let native_inputs: Vec<(usize, usize)> = native.iter().map(|&(s, k)| (s, k)).collect();
        let voice_inputs: Vec<usize> = (native.len()..native.len() + voice_paths.len()).collect();
        let graph = ffmpeg::audio_graph(
            &t,
            &ffmpeg::AudioInputs {
                native: &native_inputs,
                voice: &voice_inputs,
                music: music.map(|_| native.len() + voice_paths.len()),
            },
        );
        a.extend(ffmpeg::args([
            "-filter_complex",
            &graph,
            "-map",
            "[aout]",
            "-c:a",
            "pcm_f32le",
            "-ar",
            "48000",
            "mix.wav",
        ]));
        ffmpeg::run(&self.ffmpeg, d, "audio mix", a).await?;

        // Pass 2: measure the mix.
        let measured = ffmpeg::run(
            &self.ffmpeg,
            d,
            "loudness measurement",
            ffmpeg::args([
                "-loglevel",
                "info",
                "-i",
                "mix.wav",
                "-af",
                &ffmpeg::measure_filter(self.loudness_lufs),
                "-f",
                "null",
                "-",
            ]),
        )
        .await?;
        let loudness = ffmpeg::parse_loudness(&measured).map_err(failed)?;
        let audio_filter = match loudness.integrated() {
            Some(_) => loudness.filter(self.loudness_lufs),
            None => ffmpeg::FMT.to_string(),
        };

        // Pass 3: the one encode.
        let burn = job.plan.is_some_and(|p| p.burn_subtitles) && !t.lines.is_empty();
        let mut graph = ffmpeg::video_graph(&t, format, burn.then_some("subs.srt"));
        graph.push_str(&format!(";[{}:a]{audio_filter}[aout]", scene_paths.len()));
        let mut e = ffmpeg::args(["-loglevel", "error"]);
        for p in &scene_paths {
            e.extend(ffmpeg::args(["-i".into(), p.clone().into_os_string()]));
        }
        let total = format!("{}.{:03}", t.total_ms / 1000, t.total_ms % 1000);
        e.extend(ffmpeg::args([
            "-i",
            "mix.wav",
            "-filter_complex",
            &graph,
            "-map",
            "[vout]",
            "-map",
            "[aout]",
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "veryfast",
            "-crf",
            "21",
            "-r",
            &format.fps.to_string(),
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            "-ar",
            "48000",
            "-t",
            &total,
            "-movflags",
            "+faststart",
            "master.mp4",
        ]));
        ffmpeg::run(&self.ffmpeg, d, "encode", e).await?;
        let master = d.join("master.mp4");
        let got = probe::check(
            &self.ffprobe,
            &master,
            Expect::Video {
                seconds: t.total_ms as f64 / 1000.0,
            },
        )
        .await
        .map_err(|e| {
            failed(format!(
                "the master ffmpeg wrote is not right: {}",
                e.message
            ))
        })?;
        if !got.audio {
            return Err(failed("the master ffmpeg wrote has no audio stream"));
        }

        // Sidecars and pictures, beside the episode's clips.
        let shots = posters::make(&self.ffmpeg, d, &master, &t, format).await?;
        let (season, group, id) = (job.req.season, job.req.group, job.req.task_id);
        self.put(season, group, id, "srt", d.join("subs.srt"))
            .await?;
        self.put(season, group, id, "vtt", d.join("subs.vtt"))
            .await?;
        self.put(season, group, &format!("{id}-poster"), "jpg", shots.episode)
            .await?;
        self.put(
            season,
            group,
            &format!("{id}-contact"),
            "jpg",
            shots.contact,
        )
        .await?;
        for (input, shot) in job.scenes.iter().zip(shots.scenes) {
            // Beside the clip as stored (its name carries the attempt's suffix), which is where
            // the studio looks for it.
            let stem = input
                .clip
                .location
                .rsplit('/')
                .next()
                .and_then(|file| file.rsplit_once('.'))
                .map_or(input.clip.task.as_str(), |(stem, _)| stem);
            self.put(season, group, &format!("{stem}-poster"), "jpg", shot)
                .await?;
        }
        info!(
            episode = %dramaq_common::text::Shown::id(group),
            seconds = t.total_ms as f64 / 1000.0,
            lines = t.lines.len(),
            loudness_in = ?loudness.integrated(),
            took_ms = started.elapsed().as_millis() as u64,
            "episode master built"
        );
        let file = tokio::fs::File::open(&master)
            .await
            .map_err(|e| failed(format!("reading the master: {e}")))?;
        let body = tokio_util::io::ReaderStream::new(file)
            .map(move |chunk| {
                let _keep = &dir;
                chunk.map_err(|e| format!("reading the master: {e}"))
            })
            .boxed();
        Ok(body)
    }

    async fn probe_input(
        &self,
        path: &Path,
        clip: &Clip,
        expect: Expect,
    ) -> Result<probe::Probed, ProviderError> {
        probe::check(&self.ffprobe, path, expect)
            .await
            .map_err(|e| failed(format!("{} ({}): {}", clip.label, clip.location, e.message)))
    }

    /// Store a sidecar file at `<season>/<group>/<name>.<ext>`.
    async fn put(
        &self,
        season: &str,
        group: &str,
        name: &str,
        ext: &str,
        path: PathBuf,
    ) -> Result<(), ProviderError> {
        let location =
            Location::new(season, group, name, ext).map_err(|e| failed(e.to_string()))?;
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
        self.storage
            .put(&location, storage::once(Bytes::from(bytes)))
            .await
            .map_err(crate::finish::store_failure)?;
        debug!(location = location.as_str(), "stored beside the master");
        Ok(())
    }
}

/// Records written before the master plan: a line's scene from its label (`ep01/sc02/line01`
/// belongs to `ep01/sc02`); the first scene when none matches.
fn scene_by_label(scenes: &[Input], line_label: &str) -> usize {
    scenes
        .iter()
        .position(|s| {
            line_label
                .strip_prefix(s.record.label.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .unwrap_or(0)
}

/// A music bed for ffmpeg: URLs as they are, anything else as a local file (the `file:` prefix
/// keeps a name from being read as another ffmpeg protocol).
fn music_input(m: &str) -> String {
    if m.starts_with("http://") || m.starts_with("https://") {
        m.to_string()
    } else {
        format!("file:{m}")
    }
}
