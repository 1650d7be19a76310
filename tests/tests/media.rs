//! Episode masters and broken outputs end to end, with real ffmpeg: the sample season plus a
//! small season of mixed providers, music, burnt-in CJK subtitles and bad-output scenarios,
//! through real processes (`dramaq enqueue`, two workers, the sandbox, redis-server).
//!
//! Checked on the masters themselves (ffprobe, ffmpeg's `silencedetect` and `ebur128`): H.264 +
//! AAC 48 kHz at the season's size, length = the sum of its scenes, every voice line heard inside
//! its own scene and in step with its subtitle, one SRT cue per line inside its scene, integrated
//! loudness near −14 LUFS with true peak under −1 dBTP, posters and a contact sheet stored beside
//! it. A truncated MP4, an HTML page served with 200, an empty body and a clip of the wrong length
//! each end `bad_output` after falling back to the next account, with nothing published.

use dramaq_e2e::{sample_script, Env, SandboxArgs};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SAMPLE: &str = "moonlit-harbor";
const CHECKS: &str = "media-checks";
const FINISH: Duration = Duration::from_secs(240);

/// Mixed providers (Sora-shaped portrait clips with their own sound, from an account marked
/// `native_audio`, and silent MiniMax landscape ones, of different sizes) with burnt-in CJK and
/// Vietnamese subtitles; an episode with a music bed; and an episode of broken outputs whose
/// scenes fall back from Kling to MiniMax.
const CHECKS_SCRIPT: &str = r#"
id: media-checks
title: Media checks
subtitles: burn
defaults:
  aspect_ratio: "9:16"
  resolution: "720p"
  duration: 4
  providers:
    image: [sandbox-image]
    video: [sandbox-sora]
    voice: [sandbox-tts]
characters:
  - { name: Mira, appearance: "yellow oilskin coat", seed: 1 }
episodes:
  - id: mixed
    scenes:
      - description: Harbour at dusk.
        providers: { video: [sandbox-sora-sound] }
        dialogue:
          - { speaker: Mira, line: "灯塔熄了。" }
      - description: The lamp room, wide.
        duration: 6
        providers: { video: [sandbox-minimax] }
        dialogue:
          - { speaker: Mira, line: "Đèn tắt rồi.", at: 2 }
  - id: bed
    music: MUSIC
    scenes:
      - description: The empty pier.
  - id: broken
    scenes:
      - { description: "A [sandbox:truncated_mp4] clip.", duration: 10, providers: { video: [sandbox-kling, sandbox-minimax] } }
      - { description: "A [sandbox:html_200] clip.", duration: 10, providers: { video: [sandbox-kling, sandbox-minimax] } }
      - { description: "A [sandbox:zero_bytes] clip.", duration: 10, providers: { video: [sandbox-kling, sandbox-minimax] } }
      - { description: "A [sandbox:wrong_duration] clip.", duration: 10, providers: { video: [sandbox-kling, sandbox-minimax] } }
"#;

fn tool(program: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn probe(path: &Path) -> Value {
    let p = path.to_str().unwrap();
    let (out, _) = tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            p,
        ],
    );
    serde_json::from_str(&out).unwrap()
}

/// What an analysis filter on the file's audio prints (ffmpeg's stderr).
fn audio_analysis(path: &Path, filter: &str) -> String {
    let p = path.to_str().unwrap();
    let args = [
        "-hide_banner",
        "-nostats",
        "-i",
        p,
        "-map",
        "0:a",
        "-af",
        filter,
        "-f",
        "null",
        "-",
    ];
    tool("ffmpeg", &args).1
}

/// Where sound starts after silence (`silencedetect`'s `silence_end`), plus 0 when the file
/// opens with sound.
fn sound_onsets(path: &Path) -> Vec<f64> {
    let err = audio_analysis(path, "silencedetect=noise=-50dB:duration=0.15");
    let value = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace()
            .next()?
            .trim_end_matches('|')
            .parse()
            .ok()
    };
    let starts: Vec<f64> = err
        .lines()
        .filter_map(|l| value(l, "silence_start: "))
        .collect();
    let mut onsets: Vec<f64> = err
        .lines()
        .filter_map(|l| value(l, "silence_end: "))
        .collect();
    if starts.first().is_none_or(|s| *s > 0.05) {
        onsets.insert(0, 0.0);
    }
    // A file that ends in silence reports a silence end at its very end: not a line.
    let length: f64 = probe(path)["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(f64::MAX);
    onsets.retain(|t| *t < length - 0.05);
    onsets
}

/// Integrated loudness (LUFS) and true peak (dBTP) from `ebur128`'s summary.
fn loudness(path: &Path) -> (f64, f64) {
    let err = audio_analysis(path, "ebur128=peak=true");
    let summary = &err[err.rfind("Summary:").expect("ebur128 summary")..];
    let after = |key: &str| -> f64 {
        let rest = &summary[summary
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {summary}"))
            + key.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (after("I:"), after("Peak:"))
}

/// `(start, end)` of each SRT cue, in seconds.
fn srt_cues(text: &str) -> Vec<(f64, f64)> {
    let stamp = |s: &str| -> f64 {
        let (hms, ms) = s.trim().split_once(',').unwrap();
        let parts: Vec<f64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2] + ms.parse::<f64>().unwrap() / 1000.0
    };
    text.lines()
        .filter_map(|l| l.split_once(" --> "))
        .map(|(a, b)| (stamp(a), stamp(b)))
        .collect()
}

fn by_id<'t>(tasks: &'t [Value], id: &str) -> &'t Value {
    tasks
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id}"))
}

/// Checks one master against its scenes and lines; returns (loudness, true peak, worst offset
/// between a line's subtitle and its sound). `dry`: no music bed, so every stretch of sound is a
/// voice line and can be told apart by silence detection.
fn check_master(
    env: &Env,
    tasks: &[Value],
    asm: &Value,
    size: (u64, u64),
    dry: bool,
) -> (f64, f64, f64) {
    let label = asm["label"].as_str().unwrap();
    assert_eq!(asm["state"], "stored", "{label}: {asm}");
    let output = asm["output"].as_str().unwrap();
    assert!(output.ends_with(".mp4"), "{label}: {output}");
    let master = env.out.join(output);
    let info = probe(&master);
    let streams = info["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
    assert_eq!(video["codec_name"], "h264", "{label}");
    assert_eq!(video["profile"], "High", "{label}");
    assert_eq!(video["pix_fmt"], "yuv420p", "{label}");
    assert_eq!(
        (
            video["width"].as_u64().unwrap(),
            video["height"].as_u64().unwrap()
        ),
        size,
        "{label}"
    );
    assert_eq!(audio["codec_name"], "aac", "{label}");
    assert_eq!(audio["sample_rate"], "48000", "{label}");

    // Scene slots from the scenes' asked lengths.
    let scenes = asm["payload"]["scenes"].as_array().unwrap();
    let mut slots = Vec::new();
    let mut at = 0.0;
    for id in scenes {
        let d = by_id(tasks, id.as_str().unwrap())["payload"]["duration_s"]
            .as_f64()
            .unwrap();
        slots.push((at, at + d));
        at += d;
    }
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - at).abs() <= 0.1,
        "{label}: {duration} s, scenes sum to {at} s"
    );

    // One cue per line, inside its scene; each line heard inside its scene, with its cue.
    let listed = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let lines = listed(&asm["payload"]["master"]["lines"]);
    let voice = listed(&asm["payload"]["voice"]);
    assert_eq!(lines.len(), voice.len(), "{label}");
    let base = master.with_extension("");
    let srt = std::fs::read_to_string(base.with_extension("srt")).unwrap();
    let cues = srt_cues(&srt);
    assert_eq!(cues.len(), voice.len(), "{label}: {srt}");
    let onsets = if dry {
        sound_onsets(&master)
    } else {
        cues.iter().map(|c| c.0).collect()
    };
    assert_eq!(
        onsets.len(),
        voice.len(),
        "{label}: sound starts at {onsets:?}"
    );
    let mut worst: f64 = 0.0;
    for (n, line) in lines.iter().enumerate() {
        let (start, end) = slots[line["scene"].as_u64().unwrap() as usize];
        let (cue_start, cue_end) = cues[n];
        assert!(
            cue_start >= start && cue_end <= end + 0.001 && cue_start < cue_end,
            "{label}: cue {n} {cues:?} outside {start}..{end}"
        );
        assert!(
            onsets[n] >= start && onsets[n] < end,
            "{label}: line {n} heard at {} outside {start}..{end}",
            onsets[n]
        );
        worst = worst.max((onsets[n] - cue_start).abs());
    }
    assert!(
        worst <= 0.1,
        "{label}: a line is {worst:.3} s off its subtitle"
    );
    assert!(std::fs::read_to_string(base.with_extension("vtt"))
        .unwrap()
        .starts_with("WEBVTT"));

    // Pictures beside the master.
    let dir = master.parent().unwrap();
    let id = asm["id"].as_str().unwrap();
    let mut pictures: Vec<PathBuf> = vec![
        dir.join(format!("{id}-poster.jpg")),
        dir.join(format!("{id}-contact.jpg")),
    ];
    // A scene's poster sits beside its clip as stored (the clip's name carries its attempt's
    // suffix): `<stem>-poster.jpg`.
    pictures.extend(scenes.iter().map(|s| {
        let clip = by_id(tasks, s.as_str().unwrap())["output"]
            .as_str()
            .unwrap()
            .to_string();
        let file = clip.rsplit('/').next().unwrap();
        let stem = file.rsplit_once('.').unwrap().0;
        dir.join(format!("{stem}-poster.jpg"))
    }));
    for p in pictures {
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(&bytes[..2], b"\xff\xd8", "{} is not a JPEG", p.display());
    }
    let (i, tp) = loudness(&master);
    (i, tp, worst)
}

#[test]
fn masters_are_in_sync_at_loudness_and_broken_outputs_fall_back_unpublished() {
    let env = Env::start(SandboxArgs {
        render_ms: 150,
        render_jitter_ms: 100,
        ..Default::default()
    })
    .expect("env");
    env.edit_config(|t| t.replace("\nffmpeg = false\n", "\nffmpeg = true\n"))
        .unwrap();
    env.set_in_table("worker", "retry_base_ms = 200\nretry_max_ms = 1000")
        .unwrap();
    env.add_config(&format!(
        "[accounts.sandbox-sora-sound]\nfamily = \"openai-videos\"\nbase_url = \"{}/openai\"\n\
         model = \"sora-2\"\napi_key_env = \"DRAMAQ_SANDBOX_KEY\"\nnative_audio = true\n\
         poll_first_ms = 200\npoll_max_ms = 500",
        env.sandbox_url
    ))
    .unwrap();
    env.add_config(&format!(
        "[accounts.sandbox-minimax]\nfamily = \"minimax\"\nbase_url = \"{}/minimax\"\n\
         model = \"MiniMax-Hailuo-02\"\napi_key_env = \"DRAMAQ_SANDBOX_KEY\"\n\
         poll_first_ms = 200\npoll_max_ms = 500",
        env.sandbox_url
    ))
    .unwrap();
    let music = env.dir.path().join("bed.wav");
    tool(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=110:duration=3",
            music.to_str().unwrap(),
        ],
    );
    let script = env
        .write_script(
            "checks.yaml",
            &CHECKS_SCRIPT.replace("MUSIC", music.to_str().unwrap()),
        )
        .unwrap();

    for s in [sample_script(), script] {
        env.dramaq_json(&["enqueue", s.to_str().unwrap()])
            .expect("enqueue");
    }
    let _w1 = env.worker(&["--concurrency", "8"]).unwrap();
    let _w2 = env.worker(&["--concurrency", "8"]).unwrap();

    // The sample: every master right.
    let status = env.wait_done(SAMPLE, FINISH).expect("sample finishes");
    assert_eq!(status["dead"], 0, "{status}");
    let tasks = env.tasks(SAMPLE).unwrap();
    let mut figures = Vec::new();
    for asm in tasks.iter().filter(|t| t["kind"] == "assembly") {
        let (i, tp, off) = check_master(&env, &tasks, asm, (720, 1280), true);
        assert!((i + 14.0).abs() <= 1.0, "{}: {i} LUFS", asm["label"]);
        assert!(tp <= -1.0, "{}: true peak {tp} dBTP", asm["label"]);
        figures.push((asm["label"].as_str().unwrap().to_string(), i, tp, off));
    }
    assert_eq!(figures.len(), 3);
    eprintln!("masters (label, LUFS, dBTP, worst line offset s): {figures:?}");

    // Mixed providers with music and burnt-in CJK subtitles.
    env.wait_done(CHECKS, FINISH).expect("checks finish");
    let tasks = env.tasks(CHECKS).unwrap();
    let mixed = tasks
        .iter()
        .find(|t| t["label"] == "mixed/assembly")
        .unwrap();
    let (i, tp, _) = check_master(&env, &tasks, mixed, (720, 1280), false);
    assert!(
        (i + 14.0).abs() <= 1.0 && tp <= -1.0,
        "mixed: {i} LUFS, {tp} dBTP"
    );
    let srt = std::fs::read_to_string(
        env.out
            .join(mixed["output"].as_str().unwrap())
            .with_extension("srt"),
    )
    .unwrap();
    assert!(
        srt.contains("灯塔熄了。") && srt.contains("Đèn tắt rồi."),
        "{srt}"
    );
    let sizes: Vec<(u64, u64)> = mixed["payload"]["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let clip = probe(
                &env.out.join(
                    by_id(&tasks, id.as_str().unwrap())["output"]
                        .as_str()
                        .unwrap(),
                ),
            );
            let v = &clip["streams"][0];
            (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
        })
        .collect();
    assert_ne!(
        sizes[0], sizes[1],
        "the two providers' clips should differ in size"
    );
    // The Sora clip's own sound is kept under its scene (before the first line starts at
    // 0.3 s); the silent MiniMax scene stays silent until its line (at 2 s into it: 6 s).
    let master = env.out.join(mixed["output"].as_str().unwrap());
    let level = |from: &str, to: &str| -> f64 {
        let err = audio_analysis(&master, &format!("atrim={from}:{to},volumedetect"));
        let v = &err[err.rfind("mean_volume: ").expect("volumedetect") + 13..];
        v.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (clip_sound, quiet) = (level("0.05", "0.25"), level("4.5", "5.8"));
    assert!(
        clip_sound > -45.0,
        "no clip sound under scene 1: {clip_sound} dB"
    );
    assert!(quiet < -70.0, "sound under the silent scene: {quiet} dB");

    // A music bed alone is a master at the loudness target.
    let bed = tasks.iter().find(|t| t["label"] == "bed/assembly").unwrap();
    let (i, tp, _) = check_master(&env, &tasks, bed, (720, 1280), false);
    assert!(
        (i + 14.0).abs() <= 1.0 && tp <= -1.0,
        "bed: {i} LUFS, {tp} dBTP"
    );

    // Broken outputs: retried, fell back from Kling to MiniMax, dead as bad_output, unpublished.
    let broken: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["group"] == "broken" && t["kind"] == "video")
        .collect();
    assert_eq!(broken.len(), 4);
    let episode_dir = env.out.join(CHECKS).join("broken");
    let published: Vec<String> = std::fs::read_dir(&episode_dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    for t in broken {
        let label = t["label"].as_str().unwrap();
        assert_eq!(t["state"], "dead", "{label}: {t}");
        assert_eq!(t["failure"], "bad_output", "{label}");
        assert!(t["output"].is_null(), "{label}");
        let errors = t["errors"].as_array().unwrap();
        for account in ["sandbox-kling", "sandbox-minimax"] {
            let here = errors
                .iter()
                .filter(|e| e["account"] == account && e["class"] == "bad_output")
                .count();
            assert_eq!(
                here, 2,
                "{label}: retried once on {account}, then moved on: {errors:?}"
            );
        }
        let id = t["id"].as_str().unwrap();
        assert!(
            !published.iter().any(|f| f.starts_with(id)),
            "{label} was published: {published:?}"
        );
    }
}
