//! The ffmpeg side of a master: the season's picture format, the filter graphs, and running
//! ffmpeg so that a failure is a task failure carrying ffmpeg's own words.
//!
//! A master is made in three runs (docs/media.md): the audio mix alone (voice lines at their
//! timeline places, clip sound where the account renders it, the music bed ducked under the
//! dialogue) into a WAV; a loudness measurement of that WAV; and one encode that normalizes
//! every scene to the season's format, concatenates them, applies the measured loudness
//! correction and writes H.264 High / AAC 48 kHz with `+faststart`. Every scene is re-encoded
//! exactly once, so clips of different sizes, frame rates and profiles concatenate correctly.

use super::timeline::Timeline;
use crate::probe::stderr_text;
use crate::providers::ProviderError;
use dramaq_common::model::FailureClass;
use serde::Deserialize;
use std::ffi::OsString;
use std::fmt::Write;
use std::path::Path;
use std::process::Stdio;

/// The master's picture: size and frame rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// `9:16` + `720p` → 720×1280: the resolution names the short side, the aspect ratio gives the
/// long one (rounded to an even number, as yuv420p needs).
pub(crate) fn format_of(aspect: &str, resolution: &str, fps: u32) -> Result<Format, String> {
    let short: u32 = resolution
        .strip_suffix('p')
        .and_then(|n| n.parse().ok())
        .filter(|n| (16..=4320).contains(n))
        .ok_or_else(|| format!("resolution {resolution:?} is not like 720p"))?;
    let (a, b) = aspect
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .filter(|(a, b)| *a > 0 && *b > 0 && *a <= 64 && *b <= 64)
        .ok_or_else(|| format!("aspect ratio {aspect:?} is not like 9:16"))?;
    let long =
        |num: u32, den: u32| (u64::from(short) * u64::from(num) / u64::from(den)) as u32 / 2 * 2;
    let (width, height) = if a <= b {
        (short, long(b, a))
    } else {
        (long(a, b), short)
    };
    Ok(Format {
        width,
        height,
        fps: fps.clamp(1, 120),
    })
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The video graph: each scene input `0..n` scaled into the frame (never stretched: scaled to fit
/// and padded), at one frame rate, trimmed or held to its slot, then concatenated; `subtitles`
/// (a file name in ffmpeg's working directory) burns the cues in. Output label `[vout]`.
pub(crate) fn video_graph(t: &Timeline, f: Format, subtitles: Option<&str>) -> String {
    let mut g = String::new();
    for (i, s) in t.scenes.iter().enumerate() {
        let d = secs(s.duration_ms);
        let _ = write!(
            g,
            "[{i}:v]fps={fps},scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,\
             pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,format=yuv420p,\
             tpad=stop_mode=clone:stop_duration={d},trim=duration={d},setpts=PTS-STARTPTS[v{i}];",
            fps = f.fps,
            w = f.width,
            h = f.height,
        );
    }
    for i in 0..t.scenes.len() {
        let _ = write!(g, "[v{i}]");
    }
    let _ = write!(g, "concat=n={}:v=1:a=0", t.scenes.len());
    match subtitles {
        Some(file) => {
            let size = (f.height.min(f.width) / 24).max(8);
            let _ = write!(
                g,
                "[vc];[vc]subtitles=filename={file}:force_style='FontSize={size},Outline=2,MarginV={margin}',\
                 format=yuv420p[vout]",
                margin = size * 2
            );
        }
        None => g.push_str("[vout]"),
    }
    g
}

/// Where the audio graph finds its inputs (ffmpeg input indexes).
pub(crate) struct AudioInputs<'a> {
    /// Scenes whose own sound is kept: (scene index, input index).
    pub native: &'a [(usize, usize)],
    /// Voice lines, in timeline order: input index of each.
    pub voice: &'a [usize],
    /// The looped music bed's input index.
    pub music: Option<usize>,
}

/// Every audio stream inside the graphs: 48 kHz float stereo.
pub(crate) const FMT: &str = "aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo";

/// The audio mix graph, output label `[aout]`: dialogue at its timeline places over silence; the
/// bed (clip sound and music) ducked under the dialogue by a sidechain compressor; the sum
/// trimmed to the episode's length. Loudness is corrected later, on the measured mix.
pub(crate) fn audio_graph(t: &Timeline, inputs: &AudioInputs<'_>) -> String {
    let total = secs(t.total_ms);
    let mut g = String::new();
    let _ = write!(
        g,
        "anullsrc=r=48000:cl=stereo,atrim=duration={total},{FMT},asplit=2[sil0][sil1];"
    );
    let mut dialogue = String::from("[sil0]");
    for (n, (input, line)) in inputs.voice.iter().zip(&t.lines).enumerate() {
        let _ = write!(g, "[{input}:a]{FMT},adelay={}:all=1[l{n}];", line.start_ms);
        let _ = write!(dialogue, "[l{n}]");
    }
    let _ = write!(
        g,
        "{dialogue}amix=inputs={}:duration=first:normalize=0[dlg];",
        inputs.voice.len() + 1
    );
    let mut bed = String::from("[sil1]");
    let mut bed_inputs = 1;
    for &(scene, input) in inputs.native {
        let s = t.scenes[scene];
        let _ = write!(
            g,
            "[{input}:a]{FMT},apad,atrim=duration={},asetpts=PTS-STARTPTS,adelay={}:all=1[n{scene}];",
            secs(s.duration_ms),
            s.start_ms
        );
        let _ = write!(bed, "[n{scene}]");
        bed_inputs += 1;
    }
    if let Some(input) = inputs.music {
        let _ = write!(
            g,
            "[{input}:a]{FMT},atrim=duration={total},volume=0.35[mus];"
        );
        bed.push_str("[mus]");
        bed_inputs += 1;
    }
    if bed_inputs == 1 {
        let _ = write!(
            g,
            "[sil1]anullsink;[dlg]atrim=duration={total},asetpts=N/SR/TB[aout]"
        );
        return g;
    }
    let _ = write!(
        g,
        "{bed}amix=inputs={bed_inputs}:duration=first:normalize=0[bed];\
         [dlg]asplit=2[dlg_a][dlg_sc];\
         [bed][dlg_sc]sidechaincompress=threshold=0.02:ratio=8:attack=20:release=400[ducked];\
         [ducked][dlg_a]amix=inputs=2:duration=first:normalize=0,atrim=duration={total},asetpts=N/SR/TB[aout]"
    );
    g
}

/// loudnorm's first-pass measurement.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Loudness {
    pub input_i: String,
    pub input_tp: String,
    pub input_lra: String,
    pub input_thresh: String,
    pub target_offset: String,
}

impl Loudness {
    /// Integrated loudness in LUFS; `None` for silence (`-inf`).
    pub(crate) fn integrated(&self) -> Option<f64> {
        self.input_i
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > -70.0)
    }

    /// The second, linear loudnorm pass to `target` LUFS with true peak at most −1.5 dBTP (a
    /// margin under the −1 dBTP platforms ask for, for the AAC encoder's overshoot). loudnorm
    /// works at 192 kHz; the format after it is pinned (rate, sample format and stereo layout),
    /// else ffmpeg may fail to pick a channel layout for the AAC encoder.
    pub(crate) fn filter(&self, target: f64) -> String {
        format!(
            "loudnorm=I={target}:TP=-1.5:LRA=11:measured_I={}:measured_TP={}:measured_LRA={}:\
             measured_thresh={}:offset={}:linear=true,{FMT}",
            self.input_i, self.input_tp, self.input_lra, self.input_thresh, self.target_offset
        )
    }
}

/// The measurement filter for the first pass.
pub(crate) fn measure_filter(target: f64) -> String {
    format!("loudnorm=I={target}:TP=-1.5:LRA=11:print_format=json")
}

/// loudnorm prints its JSON last on stderr.
pub(crate) fn parse_loudness(stderr: &[u8]) -> Result<Loudness, String> {
    let text = String::from_utf8_lossy(stderr);
    let start = text
        .rfind('{')
        .ok_or("no loudness measurement in ffmpeg's output")?;
    let end = text[start..]
        .find('}')
        .map(|e| start + e + 1)
        .ok_or("an unfinished loudness measurement in ffmpeg's output")?;
    serde_json::from_str(&text[start..end]).map_err(|e| format!("the loudness measurement: {e}"))
}

/// Run ffmpeg with `args` in `dir`; its stderr on success (measurements print there). A failure
/// is the task's (`unknown`: retried with backoff), with ffmpeg's last lines, escaped and capped,
/// in the error history.
pub(crate) async fn run(
    ffmpeg: &str,
    dir: &Path,
    what: &str,
    args: Vec<OsString>,
) -> Result<Vec<u8>, ProviderError> {
    let out = tokio::process::Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-y"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            ProviderError::new(
                FailureClass::Unknown,
                format!("ffmpeg ({what}) could not run: {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(ProviderError::new(
            FailureClass::Unknown,
            format!(
                "ffmpeg ({what}) failed ({}): {}",
                out.status,
                stderr_text(&out.stderr)
            ),
        ));
    }
    Ok(out.stderr)
}

/// Arguments, from anything string-like.
pub(crate) fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::super::timeline::{build, LineIn};
    use super::*;

    #[test]
    fn season_formats() {
        let f = |a, r| format_of(a, r, 24).map(|f| (f.width, f.height));
        assert_eq!(f("9:16", "720p"), Ok((720, 1280)));
        assert_eq!(f("16:9", "1080p"), Ok((1920, 1080)));
        assert_eq!(f("1:1", "480p"), Ok((480, 480)));
        assert_eq!(f("9:16", "480p"), Ok((480, 852)));
        assert!(f("tall", "720p").is_err());
        assert!(f("9:16", "HD").is_err());
    }

    #[test]
    fn graphs_place_lines_and_duck_the_bed_only_when_there_is_one() {
        let t = build(
            &[4_000, 8_000],
            &[LineIn {
                scene: 1,
                at_ms: None,
                duration_ms: 1_000,
                text: "x".into(),
            }],
        )
        .unwrap();
        let dry = audio_graph(
            &t,
            &AudioInputs {
                native: &[],
                voice: &[2],
                music: None,
            },
        );
        assert!(
            dry.contains("[2:a]") && dry.contains("adelay=4300:all=1"),
            "{dry}"
        );
        assert!(!dry.contains("sidechaincompress"), "{dry}");
        let wet = audio_graph(
            &t,
            &AudioInputs {
                native: &[(0, 0)],
                voice: &[2],
                music: Some(3),
            },
        );
        assert!(
            wet.contains("sidechaincompress") && wet.contains("[3:a]"),
            "{wet}"
        );
        assert!(
            wet.contains("[0:a]") && wet.contains("atrim=duration=4.000"),
            "{wet}"
        );
        let v = video_graph(&t, format_of("9:16", "720p", 24).unwrap(), Some("subs.srt"));
        assert!(
            v.contains("concat=n=2") && v.contains("pad=720:1280"),
            "{v}"
        );
        assert!(v.contains("subtitles=filename=subs.srt"), "{v}");
    }

    #[test]
    fn reads_the_measurement_from_the_end_of_stderr() {
        let err = b"[Parsed_loudnorm_0 @ 0x1] \n{\n\t\"input_i\" : \"-23.10\",\n\t\"input_tp\" : \"-5.2\",\n\t\"input_lra\" : \"1.0\",\n\t\"input_thresh\" : \"-33.4\",\n\t\"output_i\" : \"-14.0\",\n\t\"target_offset\" : \"0.1\"\n}\n";
        let l = parse_loudness(err).unwrap();
        assert_eq!(l.integrated(), Some(-23.1));
        assert!(l.filter(-14.0).contains("measured_I=-23.10"));
        assert!(parse_loudness(b"nothing").is_err());
    }
}
