//! The check that a downloaded clip is a real, playable file, before it may be stored.
//!
//! Providers do answer "succeeded" with an empty body, an HTML error page served with status
//! 200, an MP4 cut off mid-download, or a clip of the wrong length. Stored and completed, such a
//! file passes as done until an editor opens it. So every video and audio result is spooled to a
//! temporary file and probed with `ffprobe` (container, streams, duration, and every packet of
//! the main stream actually present) before it reaches storage; a file that fails is a
//! `bad_output` failure ([`crate::decide`] retries it, then falls back) and is never published.
//!
//! The same probe reads the clips and the finished master during assembly
//! ([`crate::assemble`]).

use dramaq_common::model::{FailureClass, TaskPayload};
use dramaq_common::text::shown;
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;

use crate::providers::ProviderError;

/// What a probed file holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probed {
    /// Container duration in seconds.
    pub duration_s: f64,
    pub video: Option<VideoStream>,
    pub audio: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VideoStream {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Packets the container lists, and packets a demuxer could actually read.
    pub listed_packets: Option<u64>,
    pub read_packets: Option<u64>,
}

/// What the file should be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Expect {
    /// A clip of about `seconds`.
    Video { seconds: f64 },
    /// Speech: an audio stream of some length.
    Audio,
}

impl Expect {
    /// What a task's output should be; `None` for outputs that are not probed (images,
    /// manifests).
    pub(crate) fn of(payload: &TaskPayload, ext: &str) -> Option<Expect> {
        match payload {
            TaskPayload::Video { duration_s, .. } => Some(Expect::Video {
                seconds: f64::from(*duration_s),
            }),
            TaskPayload::Voice { .. } => Some(Expect::Audio),
            TaskPayload::Assembly { .. } | TaskPayload::Image { .. } => None,
        }
        .filter(|_| ext != "json")
    }
}

/// How far a clip's duration may be from the asked one: a second, or a fifth of it.
pub(crate) fn duration_tolerance(asked_s: f64) -> f64 {
    (asked_s * 0.2).max(1.0)
}

#[derive(Deserialize)]
struct Out {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Stream {
    #[serde(default)]
    codec_type: String,
    #[serde(default)]
    codec_name: String,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
    #[serde(default)]
    nb_frames: Option<String>,
    #[serde(default)]
    nb_read_packets: Option<String>,
}

#[derive(Deserialize)]
struct Format {
    #[serde(default)]
    duration: Option<String>,
}

/// Run ffprobe on `path`. An error here is the file's (it does not parse) or the machine's
/// (ffprobe cannot run): [`ProbeError`] says which.
pub(crate) async fn probe(ffprobe: &str, path: &Path) -> Result<Probed, ProbeError> {
    let out = tokio::process::Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-count_packets",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ProbeError::Tool(format!("running {}: {e}", shown(ffprobe, 200))))?;
    if !out.status.success() {
        return Err(ProbeError::Unreadable(stderr_text(&out.stderr)));
    }
    let parsed: Out = serde_json::from_slice(&out.stdout)
        .map_err(|e| ProbeError::Unreadable(format!("ffprobe's answer: {e}")))?;
    let duration_s = parsed
        .format
        .and_then(|f| f.duration)
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite())
        .unwrap_or(0.0);
    let video = parsed
        .streams
        .iter()
        .find(|s| s.codec_type == "video")
        .map(|s| VideoStream {
            codec: s.codec_name.clone(),
            width: s.width.unwrap_or(0),
            height: s.height.unwrap_or(0),
            listed_packets: s.nb_frames.as_deref().and_then(|n| n.parse().ok()),
            read_packets: s.nb_read_packets.as_deref().and_then(|n| n.parse().ok()),
        });
    let audio = parsed.streams.iter().any(|s| s.codec_type == "audio");
    Ok(Probed {
        duration_s,
        video,
        audio,
    })
}

/// Why a file is not what was asked for; `None` when it is.
pub(crate) fn problem(p: &Probed, expect: Expect) -> Option<String> {
    if p.duration_s <= 0.0 {
        return Some("the file has zero duration".into());
    }
    match expect {
        Expect::Audio if !p.audio => Some("the file has no audio stream".into()),
        Expect::Audio => None,
        Expect::Video { seconds } => {
            let Some(v) = &p.video else {
                return Some("the file has no video stream".into());
            };
            if v.width == 0 || v.height == 0 {
                return Some(format!(
                    "the video stream ({}) has no picture size",
                    v.codec
                ));
            }
            if let (Some(listed), Some(read)) = (v.listed_packets, v.read_packets) {
                if read < listed {
                    return Some(format!(
                        "the file is truncated: {read} of {listed} video frames are present"
                    ));
                }
            }
            let off = (p.duration_s - seconds).abs();
            if off > duration_tolerance(seconds) {
                return Some(format!(
                    "the clip lasts {:.2} s but {seconds} s were asked for",
                    p.duration_s
                ));
            }
            None
        }
    }
}

/// Probe `path` and judge it: `Ok` for a good file, a `bad_output` failure for a broken one,
/// and an `unknown` failure (retried) when ffprobe itself could not run.
pub(crate) async fn check(
    ffprobe: &str,
    path: &Path,
    expect: Expect,
) -> Result<Probed, ProviderError> {
    match probe(ffprobe, path).await {
        Ok(p) => match problem(&p, expect) {
            None => Ok(p),
            Some(why) => Err(ProviderError::new(FailureClass::BadOutput, why)),
        },
        Err(ProbeError::Unreadable(why)) => Err(ProviderError::new(
            FailureClass::BadOutput,
            format!("the file is not a readable media file: {why}"),
        )),
        Err(ProbeError::Tool(why)) => Err(ProviderError::new(FailureClass::Unknown, why)),
    }
}

#[derive(Debug)]
pub(crate) enum ProbeError {
    /// The file does not parse (ffprobe's stderr, escaped and capped).
    Unreadable(String),
    /// ffprobe could not be run.
    Tool(String),
}

/// A tool's stderr for a log or an error history: the last lines (where the reason is),
/// escaped and capped.
pub(crate) fn stderr_text(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(6)
        .collect();
    let joined = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
    if joined.is_empty() {
        return "(no message)".into();
    }
    shown(&joined, 600)
}

/// `Ok` when `tool -version` runs; otherwise a sentence saying what is missing and how to get it.
pub(crate) async fn require_tool(tool: &str, why: &str) -> anyhow::Result<()> {
    let ran = tokio::process::Command::new(tool)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match ran {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => anyhow::bail!(
            "{} -version exited with {s}; it is needed {why} (Debian: apt-get install ffmpeg)",
            shown(tool, 200)
        ),
        Err(e) => anyhow::bail!(
            "{} is not installed or cannot run ({e}); it is needed {why} (Debian: apt-get install ffmpeg)",
            shown(tool, 200)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(duration_s: f64, listed: u64, read: u64) -> Probed {
        Probed {
            duration_s,
            video: Some(VideoStream {
                codec: "h264".into(),
                width: 48,
                height: 80,
                listed_packets: Some(listed),
                read_packets: Some(read),
            }),
            audio: false,
        }
    }

    #[test]
    fn judges_duration_streams_and_truncation() {
        let asked = Expect::Video { seconds: 8.0 };
        assert_eq!(problem(&clip(8.0, 192, 192), asked), None);
        assert_eq!(problem(&clip(8.9, 192, 192), asked), None);
        assert!(problem(&clip(4.0, 96, 96), asked)
            .unwrap()
            .contains("lasts 4.00 s"));
        assert!(problem(&clip(8.0, 192, 90), asked)
            .unwrap()
            .contains("truncated"));
        assert!(problem(&clip(0.0, 0, 0), asked).unwrap().contains("zero"));
        let sound = Probed {
            video: None,
            audio: true,
            duration_s: 2.0,
        };
        assert!(problem(&sound, asked).unwrap().contains("no video"));
        assert_eq!(problem(&sound, Expect::Audio), None);
        assert!(problem(&clip(2.0, 48, 48), Expect::Audio)
            .unwrap()
            .contains("no audio"));
    }

    #[test]
    fn stderr_keeps_the_last_lines_escaped() {
        let s = stderr_text(b"a\n\nb\x1b[31m\nc\n");
        assert!(s.contains('a') && s.contains('c'), "{s}");
        assert!(!s.contains('\x1b'), "{s}");
        assert_eq!(stderr_text(b""), "(no message)");
    }
}
