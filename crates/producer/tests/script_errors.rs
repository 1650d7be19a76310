//! Broken season scripts and the errors they must produce: schema path, line and a piece of the
//! message, for every validation rule. Run against the sandbox configuration the sample uses.

mod support;

use std::path::Path;

use dramaq_common::config::Config;
use dramaq_common::TaskKind;
use dramaq_producer::script::{load, parse_str, ScriptErrors, MAX_ERRORS};

use support::{config, hostile_script};

struct Case {
    name: &'static str,
    file: &'static str,
    text: &'static str,
    /// (path, line, part of the message), in the order reported.
    want: &'static [(&'static str, usize, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "unknown field names the field and the allowed ones",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults: { aspect_ratio: "9:16", resolution: 720p, providers: { video: [sandbox-sora] } }
episodes:
  - scenes:
      - description: Harbour at dusk.
        durration: 8
"#,
        want: &[
            (
                "episodes[0].scenes[0].duration",
                6,
                "missing required field `duration` (there is no defaults.duration)",
            ),
            (
                "episodes[0].scenes[0].durration",
                7,
                "unknown field `durration` (allowed: id, description, characters, duration,",
            ),
        ],
    },
    Case {
        name: "missing required fields point at their mapping",
        file: "season.yaml",
        text: r#"id: s1
defaults: { aspect_ratio: "9:16", resolution: 720p, duration: 8, providers: { video: [sandbox-sora] } }
episodes:
  - scenes:
      - camera: slow pan
"#,
        want: &[
            ("title", 1, "missing required field `title`"),
            (
                "episodes[0].scenes[0].description",
                5,
                "missing required field `description`",
            ),
        ],
    },
    Case {
        name: "wrong types say what was expected and found",
        file: "season.yaml",
        text: r#"id: s1
title: [not, text]
defaults: { aspect_ratio: "9:16", resolution: 720p, duration: eight, providers: { video: sandbox-sora } }
episodes:
  - scenes: { description: x }
"#,
        want: &[
            ("title", 2, "expected text, found a list"),
            (
                "defaults.duration",
                3,
                "expected a whole number from 1 to 4294967295, found text",
            ),
            ("defaults.providers.video", 3, "expected a list, found text"),
            ("episodes[0].scenes", 5, "expected a list, found a mapping"),
        ],
    },
    Case {
        name: "unknown characters in scenes, first frames and dialogue",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { image: [sandbox-image], video: [sandbox-sora], voice: [sandbox-tts] }
characters:
  - { name: Mira, appearance: keeper, seed: 1 }
  - { name: Jun, appearance: builder, seed: 2 }
episodes:
  - scenes:
      - description: Pier.
        characters: [Mira, Mria]
        first_frame: Jun
        dialogue:
          - { speaker: Tomas, line: Hello. }
      - description: Jetty.
        characters: [Jun]
        first_frame: Ghost
"#,
        want: &[
            (
                "episodes[0].scenes[0].characters[1]",
                14,
                "unknown character `Mria` (did you mean `Mira`? declared: Mira, Jun)",
            ),
            (
                "episodes[0].scenes[0].first_frame",
                15,
                "first_frame `Jun` must also be listed in this scene's characters (listed: Mira)",
            ),
            (
                "episodes[0].scenes[0].dialogue[0].speaker",
                17,
                "unknown character `Tomas` (declared: Mira, Jun)",
            ),
            (
                "episodes[0].scenes[1].first_frame",
                20,
                "unknown character `Ghost` (declared: Mira, Jun)",
            ),
        ],
    },
    Case {
        name: "unknown account and wrong family",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers:
    video: [sandbox-runway]
    assembly: [sandbox-sora]
episodes:
  - scenes:
      - description: Pier.
        providers: { video: [sandbox-tts] }
"#,
        want: &[
            (
                "defaults.providers.video[0]",
                8,
                "unknown account `sandbox-runway` (accounts that can produce video: sandbox-kling, sandbox-sora)",
            ),
            (
                "defaults.providers.assembly[0]",
                9,
                "account `sandbox-sora` (openai-videos) cannot produce assembly (accounts that can: assembly)",
            ),
            (
                "episodes[0].scenes[0].providers.video[0]",
                13,
                "account `sandbox-tts` (openai-speech) cannot produce video",
            ),
        ],
    },
    Case {
        name: "duration not rendered by every account of the chain",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { video: [sandbox-sora] }
episodes:
  - scenes:
      - description: Pier.
        duration: 7
      - description: Boat.
        providers: { video: [sandbox-kling, sandbox-sora] }
        duration: 10
      - description: Moon.
        providers: { video: [sandbox-kling] }
"#,
        want: &[
            (
                "episodes[0].scenes[0].duration",
                11,
                "7 s cannot be rendered by account sandbox-sora (allowed: 4, 8, 12, 16, 20)",
            ),
            (
                "episodes[0].scenes[1].duration",
                14,
                "10 s cannot be rendered by account sandbox-sora (allowed: 4, 8, 12, 16, 20)",
            ),
            (
                "episodes[0].scenes[2].duration",
                15,
                "8 s (the default from defaults.duration) cannot be rendered by account sandbox-kling (allowed: 5, 10)",
            ),
        ],
    },
    Case {
        name: "empty and whitespace-only text",
        file: "season.yaml",
        text: r#"id: s1
title: "   "
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { image: [sandbox-image], video: [sandbox-sora], voice: [sandbox-tts] }
characters:
  - { name: Mira, appearance: "", seed: 1 }
episodes:
  - scenes:
      - description: "  \t "
        dialogue: [{ speaker: Mira, line: " " }]
"#,
        want: &[
            ("title", 2, "must not be empty or only whitespace"),
            ("characters[0].appearance", 9, "must not be empty"),
            ("episodes[0].scenes[0].description", 12, "must not be empty"),
            ("episodes[0].scenes[0].dialogue[0].line", 13, "must not be empty"),
        ],
    },
    Case {
        name: "duplicate character names ignore case",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { image: [sandbox-image], video: [sandbox-sora] }
characters:
  - { name: Mira, appearance: keeper, seed: 1 }
  - { name: MIRA, appearance: twin, seed: 2 }
  - { name: "Jun!", appearance: builder, seed: 3 }
  - { name: "Jun?", appearance: other, seed: 4 }
episodes:
  - scenes: [{ description: Pier. }]
"#,
        want: &[
            (
                "characters[1].name",
                10,
                "duplicate character `MIRA` (`Mira` was declared at line 9",
            ),
            (
                "characters[3].name",
                12,
                "character `Jun?` would get the id `jun-`, already taken by `Jun!`",
            ),
        ],
    },
    Case {
        name: "duplicate episode ids, explicit and default",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults: { aspect_ratio: "9:16", resolution: 720p, duration: 8, providers: { video: [sandbox-sora] } }
episodes:
  - id: ep02
    scenes: [{ description: One. }]
  - scenes: [{ description: Two. }]
  - id: ep02
    scenes: [{ description: Three. }]
"#,
        want: &[
            (
                "episodes[1].id",
                7,
                "duplicate episode id `ep02` (the default id for this position): already used at line 5",
            ),
            (
                "episodes[2].id",
                8,
                "duplicate episode id `ep02`: already used at line 5",
            ),
        ],
    },
    Case {
        name: "duplicate scene ids within an episode",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults: { aspect_ratio: "9:16", resolution: 720p, duration: 8, providers: { video: [sandbox-sora] } }
episodes:
  - scenes:
      - { id: dock, description: One. }
      - { id: dock, description: Two. }
  - scenes:
      - { id: dock, description: Fine in another episode. }
"#,
        want: &[(
            "episodes[0].scenes[1].id",
            7,
            "duplicate scene id `dock`: already used at line 6",
        )],
    },
    Case {
        name: "ids with bad characters",
        file: "season.yaml",
        text: r#"id: moon harbor
title: T
defaults: { aspect_ratio: "9:16", resolution: 720p, duration: 8, providers: { video: [sandbox-sora] } }
episodes:
  - id: ../ep1
    scenes: [{ id: -sc, description: One. }]
  - id: characters
    scenes: [{ description: Two. }]
"#,
        want: &[
            (
                "id",
                1,
                "`moon harbor` is not a valid id (allowed: 1 to 64 letters, digits, '_' or '-'",
            ),
            ("episodes[0].id", 5, "`../ep1` is not a valid id"),
            ("episodes[0].scenes[0].id", 6, "`-sc` is not a valid id"),
            (
                "episodes[1].id",
                7,
                "`characters` is reserved for the character images",
            ),
        ],
    },
    Case {
        name: "empty episode list",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults: { aspect_ratio: "9:16", resolution: 720p, providers: { video: [sandbox-sora] } }
episodes: []
"#,
        want: &[("episodes", 4, "must list at least one episode")],
    },
    Case {
        name: "empty scene list",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults: { aspect_ratio: "9:16", resolution: 720p, providers: { video: [sandbox-sora] } }
episodes:
  - title: Nothing happens
    scenes: []
"#,
        want: &[("episodes[0].scenes", 6, "must list at least one scene")],
    },
    Case {
        name: "empty provider chain",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { video: [] }
episodes:
  - scenes: [{ description: One. }]
"#,
        want: &[(
            "defaults.providers.video",
            7,
            "must list at least one account (accounts that can produce video: sandbox-kling, sandbox-sora)",
        )],
    },
    Case {
        name: "aspect ratio and resolution",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "4:3"
  resolution: 4k
  duration: 8
  providers: { video: [sandbox-sora] }
episodes:
  - scenes: [{ description: One. }]
"#,
        want: &[
            (
                "defaults.aspect_ratio",
                4,
                "`4:3` is not a supported aspect ratio (allowed: 16:9, 9:16, 1:1)",
            ),
            (
                "defaults.resolution",
                5,
                "`4k` is not a supported resolution (allowed: 480p, 720p, 1080p)",
            ),
        ],
    },
    Case {
        name: "seeds out of range",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { image: [sandbox-image], video: [sandbox-sora] }
characters:
  - { name: A, appearance: a, seed: 4294967296 }
  - { name: B, appearance: b, seed: -1 }
  - { name: C, appearance: c, seed: 123456789012345678901234567890 }
  - { name: D, appearance: d, seed: 1.5 }
episodes:
  - scenes: [{ description: One. }]
"#,
        want: &[
            (
                "characters[0].seed",
                9,
                "4294967296 is out of range (allowed: 0 to 4294967295)",
            ),
            ("characters[1].seed", 10, "-1 is out of range"),
            (
                "characters[2].seed",
                11,
                "123456789012345678901234567890 is out of range",
            ),
            ("characters[3].seed", 12, "found a number (1.5)"),
        ],
    },
    Case {
        name: "duplicate YAML keys",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  aspect_ratio: "16:9"
  duration: 8
  providers: { video: [sandbox-sora] }
episodes:
  - scenes: [{ description: One., description: Two. }]
"#,
        want: &[
            (
                "defaults.aspect_ratio",
                6,
                "duplicate key `aspect_ratio` (first given at line 4)",
            ),
            (
                "episodes[0].scenes[0].description",
                10,
                "duplicate key `description`",
            ),
        ],
    },
    Case {
        name: "syntax error with its position",
        file: "season.yaml",
        text: r#"id: s1
title: T
episodes:
  - scenes: [{ description: "unterminated }]
"#,
        want: &[("", 4, "syntax error: while scanning a quoted scalar")],
    },
    Case {
        name: "a provider chain is required once a kind has tasks",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { video: [sandbox-sora] }
characters:
  - { name: Mira, appearance: keeper, seed: 1 }
episodes:
  - scenes:
      - description: One.
        dialogue: [{ speaker: Mira, line: Hi. }]
"#,
        want: &[
            (
                "defaults.providers.image",
                7,
                "a provider chain for image tasks is required because the season declares characters",
            ),
            (
                "defaults.providers.voice",
                7,
                "a provider chain for voice tasks is required because the season has dialogue lines (accounts that can produce voice: sandbox-tts)",
            ),
        ],
    },
    Case {
        name: "scene providers only take video",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults: { aspect_ratio: "9:16", resolution: 720p, duration: 8, providers: { video: [sandbox-sora] } }
episodes:
  - scenes:
      - description: One.
        providers: { voice: [sandbox-tts], video: [sandbox-sora, sandbox-sora] }
"#,
        want: &[
            (
                "episodes[0].scenes[0].providers.voice",
                7,
                "unknown field `voice` (allowed: video)",
            ),
            (
                "episodes[0].scenes[0].providers.video[1]",
                7,
                "account `sandbox-sora` is listed twice in this chain",
            ),
        ],
    },
    Case {
        name: "three errors reported together, in position order",
        file: "season.yaml",
        text: r#"id: s1
title: T
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 8
  providers: { image: [sandbox-image], video: [sandbox-sora], voice: [sandbox-tts] }
characters:
  - { name: Mira, appearance: keeper, seed: 99999999999 }
episodes:
  - scenes:
      - description: One.
        characters: [Mira]
      - description: Two.
        duration: 5
        dialogue: [{ speaker: Jun, line: Hi. }]
"#,
        want: &[
            ("characters[0].seed", 9, "out of range"),
            (
                "episodes[0].scenes[1].duration",
                15,
                "5 s cannot be rendered by account sandbox-sora",
            ),
            (
                "episodes[0].scenes[1].dialogue[0].speaker",
                16,
                "unknown character `Jun`",
            ),
        ],
    },
    Case {
        name: "alias bombs are refused before they expand",
        file: "season.yaml",
        text: r#"id: s1
title: T
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"#,
        want: &[("", 8, "the document is too large")],
    },
    Case {
        name: "not a mapping at the top",
        file: "season.yaml",
        text: "just a sentence\n",
        want: &[(
            "",
            1,
            "expected a mapping with fields id, title, defaults, characters, episodes, music, subtitles, budget, found text",
        )],
    },
    Case {
        name: "empty file",
        file: "season.yaml",
        text: "# nothing yet\n",
        want: &[("", 1, "the script is empty")],
    },
    Case {
        name: "JSON errors carry positions too",
        file: "season.json",
        text: "{\n  \"id\": \"s1\",\n  \"title\": \"T\",\n  \"defaults\": {\"aspect_ratio\": \"9:16\", \"resolution\": \"720p\", \"duration\": 8,\n    \"providers\": {\"video\": [\"sandbox-sora\"]}},\n  \"episodes\": [{\"scenes\": [{\"description\": \"One.\", \"colour\": \"blue\"}]}]\n}\n",
        want: &[(
            "episodes[0].scenes[0].colour",
            6,
            "unknown field `colour`",
        )],
    },
    Case {
        name: "JSON syntax error",
        file: "season.json",
        text: "{\n  \"id\": \"s1\",\n  \"title\": \"T\",,\n}\n",
        want: &[("", 3, "JSON syntax error")],
    },
];

fn errors(case: &Case, cfg: &Config) -> ScriptErrors {
    match parse_str(case.text, case.file, cfg) {
        Ok(x) => panic!("case {:?}: accepted, {} tasks", case.name, x.tasks.len()),
        Err(e) => e,
    }
}

#[test]
fn broken_scripts_report_every_error_with_its_position() {
    let cfg = config();
    let mut failures = Vec::new();
    for case in CASES {
        let got = errors(case, &cfg);
        let matches = got.len() == case.want.len()
            && got.iter().zip(case.want).all(|(g, (path, line, part))| {
                g.path == *path && g.line == *line && g.message.contains(part)
            });
        if !matches {
            failures.push(format!(
                "case {:?}\n  want: {:?}\n  got:\n{}",
                case.name, case.want, got
            ));
        }
        for g in got.iter() {
            assert_eq!(g.file, case.file);
            assert!(g.line >= 1 && g.column >= 1, "{g}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_display_as_file_line_column_path_message() {
    let cfg = config();
    let text = "id: s1\ntitle: T\ndefaults: { aspect_ratio: \"9:16\", resolution: 720p, providers: { video: [sandbox-sora] } }\nepisodes:\n  - scenes:\n      - description: One.\n        duration: 7\n";
    let Err(e) = parse_str(text, "season.yaml", &cfg) else {
        panic!("accepted a 7 s scene");
    };
    assert_eq!(
        e.to_string(),
        "season.yaml:7:19: episodes[0].scenes[0].duration: 7 s cannot be rendered by account \
         sandbox-sora (allowed: 4, 8, 12, 16, 20)"
    );
    // Several errors: one per line.
    let two = text
        .replace("title: T", "title: \"\"")
        .replace("One.", "\"\"");
    let Err(e) = parse_str(&two, "season.yaml", &cfg) else {
        panic!("accepted empty text");
    };
    assert_eq!(e.to_string().lines().count(), 3, "{e}");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("season.yaml:2:8: title:"));
}

#[test]
fn sample_loads_with_expected_task_counts() {
    let cfg = config();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/season-sample.yaml"
    );
    let x = match load(Path::new(path), &cfg) {
        Ok(x) => x,
        Err(e) => panic!("sample is invalid:\n{e}"),
    };
    assert_eq!(x.season, "moonlit-harbor");
    let count = |k: TaskKind| x.tasks.iter().filter(|t| t.kind() == k).count();
    assert_eq!(count(TaskKind::Image), 3, "one per character");
    assert_eq!(count(TaskKind::Video), 12, "3 episodes x 4 scenes");
    assert_eq!(count(TaskKind::Voice), 18, "one per dialogue line");
    assert_eq!(count(TaskKind::Assembly), 3, "one per episode");
    let image_to_video = x
        .tasks
        .iter()
        .filter(|t| !t.deps.is_empty() && t.kind() == TaskKind::Video);
    assert!(image_to_video.count() >= 2);
    assert!(x
        .tasks
        .iter()
        .any(|t| t.chain == ["sandbox-kling".to_string()]));
}

/// 8,000 declared characters and 40,000 unknown references (~680 KB) once took 2.6 GB and printed
/// 2.5 GB of errors, each quoting every declared name; 20,000 and 100,000 (~1.7 MB) ran out of
/// memory. Now: the first errors by position, each with the closest names, then a count.
#[test]
fn hostile_script_gives_bounded_errors() {
    let cfg = config();
    for (declared, unknown) in [(8_000, 40_000), (20_000, 100_000)] {
        let text = hostile_script(declared, unknown);
        let started = std::time::Instant::now();
        let Err(e) = parse_str(&text, "hostile.yaml", &cfg) else {
            panic!("hostile script accepted");
        };
        assert_eq!(e.len(), unknown);
        assert_eq!(e.shown(), MAX_ERRORS);
        let out = e.to_string();
        let last = out.lines().last().unwrap_or_default();
        let more = dramaq_producer::script::thousands(unknown - MAX_ERRORS);
        assert_eq!(last, format!("… and {more} more errors"));
        assert_eq!(out.lines().count(), MAX_ERRORS + 1);
        assert!(out.len() < 64 * 1024, "{} bytes of errors", out.len());
        let first = &e.errors[0];
        assert_eq!(first.path, "episodes[0].scenes[0].characters[0]");
        assert!(
            first.message.starts_with(
                "unknown character `x00000` (did you mean `c00000`? declared: c00000, c00001,"
            ),
            "{}",
            first.message
        );
        assert!(
            first.message.ends_with(&format!(
                "and {} more)",
                dramaq_producer::script::thousands(declared - 10)
            )),
            "{}",
            first.message
        );
        // Linear: generous for a debug build on a busy machine, far under the quadratic time.
        assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    }
}

/// Script text reaches messages escaped and cut: no escape sequence, newline or megabyte of
/// digits gets to the terminal.
#[test]
fn user_text_in_messages_is_escaped_and_cut() {
    let cfg = config();
    let esc = "\u{1b}[2J\u{1b}]0;pwned\u{7}";
    let head = "id: s1\ntitle: T\ndefaults: { aspect_ratio: \"9:16\", resolution: 720p, duration: 8, \
                providers: { image: [sandbox-image], video: [sandbox-sora], voice: [sandbox-tts] } }\n";
    let texts = [
        // Unknown character in a scene and as a speaker, with ESC sequences and newlines.
        format!(
            "{head}characters:\n  - {{name: Mira, appearance: a, seed: 1}}\nepisodes:\n  - scenes:\n      \
             - description: d\n        characters: [\"{esc}\"]\n        dialogue:\n          \
             - {{speaker: \"Mi\\nra{esc}\", line: hi}}\n"
        ),
        // Duplicate and colliding character names, an account, a field name, a value.
        format!(
            "{head}characters:\n  - {{name: \"A{esc}\", appearance: a, seed: 1}}\n  \
             - {{name: \"a{esc}\", appearance: a, seed: 1}}\n  - {{name: \"A\\n\", appearance: a, seed: 1}}\n\
             episodes:\n  - scenes:\n      - description: d\n        providers: {{ video: [\"sora{esc}\", \"sora{esc}\"] }}\n        \
             \"k{esc}\": 1\n        camera: [\"{esc}\"]\n"
        ),
        // A character listed twice and a first frame not listed, with hostile names.
        format!(
            "{head}characters:\n  - {{name: \"B{esc}\", appearance: a, seed: 1}}\n  - {{name: \"C{esc}\", appearance: a, seed: 1}}\n\
             episodes:\n  - scenes:\n      - description: d\n        characters: [\"B{esc}\", \"b{esc}\"]\n        first_frame: \"C{esc}\"\n"
        ),
        // A one-megabyte number, as a seed and as a duration; a huge float.
        format!(
            "{head}characters:\n  - {{name: M, appearance: a, seed: {big}}}\nepisodes:\n  - scenes:\n      \
             - {{description: d, duration: -{big}}}\n      - {{description: d, duration: 1e300}}\n",
            big = "9".repeat(1 << 20)
        ),
    ];
    for text in &texts {
        let Err(e) = parse_str(text, "season.yaml", &cfg) else {
            panic!("accepted");
        };
        let out = e.to_string();
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out}");
        assert_eq!(out.lines().count(), e.shown(), "{out}");
        for err in e.iter() {
            assert!(err.message.len() < 1_000, "{}", err.message);
            assert!(err.path.len() < 1_000, "{}", err.path);
        }
        assert!(out.contains("\\u{1b}") || out.contains("…"), "{out}");
    }
    // The huge number is quoted cut, not in full.
    let Err(e) = parse_str(&texts[3], "season.yaml", &cfg) else {
        panic!("accepted");
    };
    let seed = e
        .iter()
        .find(|x| x.path == "characters[0].seed")
        .expect("seed error");
    assert!(
        seed.message.starts_with("999999") && seed.message.contains("… is out of range"),
        "{}",
        seed.message
    );
    let out = e.to_string();
    assert!(out.len() < 4_096, "{} bytes", out.len());
}
