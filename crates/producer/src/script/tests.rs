//! Properties of parsing and expansion that hold for any script: ids are stable and change only
//! where the content changed, JSON reads like YAML, and no input makes the parser panic.

use std::collections::BTreeSet;
use std::path::Path;

use dramaq_common::config::Config;
use dramaq_common::{TaskKind, TaskPayload};

use super::*;

const SAMPLE: &str = include_str!("../../../../examples/season-sample.yaml");

fn config() -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/dramaq.toml");
    match Config::load(Some(Path::new(path))) {
        Ok(cfg) => cfg,
        Err(e) => panic!("sandbox config: {e}"),
    }
}

fn expand_ok(text: &str) -> Expanded {
    match parse_str(text, "season.yaml", &config()) {
        Ok(x) => x,
        Err(e) => panic!("script should be valid:\n{e}"),
    }
}

fn ids(x: &Expanded) -> BTreeSet<String> {
    x.tasks.iter().map(|t| t.id.clone()).collect()
}

fn id_of(x: &Expanded, label: &str) -> String {
    x.tasks
        .iter()
        .find(|t| t.label == label)
        .map(|t| t.id.clone())
        .unwrap_or_else(|| panic!("no task {label}"))
}

/// Labels of tasks whose id differs between `a` and `b` (same labels on both sides).
fn changed(a: &Expanded, b: &Expanded) -> BTreeSet<String> {
    assert_eq!(a.tasks.len(), b.tasks.len());
    a.tasks
        .iter()
        .zip(&b.tasks)
        .filter(|(x, y)| {
            assert_eq!(x.label, y.label);
            x.id != y.id
        })
        .map(|(x, _)| x.label.clone())
        .collect()
}

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sample_expands_in_dependency_order() {
    let x = expand_ok(SAMPLE);
    assert_eq!(x.season, "moonlit-harbor");
    assert_eq!(x.title, "Moonlit Harbor");
    let count = |k: TaskKind| x.tasks.iter().filter(|t| t.kind() == k).count();
    assert_eq!(count(TaskKind::Image), 3);
    assert_eq!(count(TaskKind::Video), 12);
    assert_eq!(count(TaskKind::Voice), 18);
    assert_eq!(count(TaskKind::Assembly), 3);
    assert_eq!(ids(&x).len(), x.tasks.len(), "ids are unique");

    // Every dependency comes earlier in the list, and names its dependency's first account.
    for (i, t) in x.tasks.iter().enumerate() {
        for d in &t.deps {
            let Some(pos) = x.tasks.iter().position(|u| u.id == d.id) else {
                panic!("{} depends on unknown {}", t.label, d.id);
            };
            assert!(pos < i, "{} comes before its dependency", t.label);
            assert_eq!(x.tasks[pos].chain[0], d.account);
        }
    }
    let kinds: Vec<TaskKind> = x.tasks.iter().map(|t| t.kind()).collect();
    let first_assembly = kinds.iter().position(|k| *k == TaskKind::Assembly);
    assert_eq!(first_assembly, Some(x.tasks.len() - 3));
    assert!(kinds[..3].iter().all(|k| *k == TaskKind::Image));
}

#[test]
fn sample_payloads_follow_the_script() {
    let x = expand_ok(SAMPLE);
    let mira = id_of(&x, "char/mira");
    let find = |label: &str| {
        x.tasks
            .iter()
            .find(|t| t.label == label)
            .unwrap_or_else(|| panic!("no task {label}"))
    };
    let old_tomas = find("char/old-tomas");
    assert_eq!(old_tomas.group, "characters");
    assert_eq!(old_tomas.ext, "png");
    assert!((old_tomas.est_cost_usd - 0.04).abs() < 1e-9);

    let sc02 = find("ep01/sc02");
    match &sc02.payload {
        TaskPayload::Video {
            first_frame,
            seed,
            duration_s,
            prompt,
            ..
        } => {
            assert_eq!(first_frame.as_deref(), Some(mira.as_str()));
            assert_eq!(*seed, Some(1234));
            assert_eq!(*duration_s, 8);
            assert!(prompt.contains("\nCamera: handheld"), "{prompt}");
            assert!(
                prompt.contains("\nMira: Young lighthouse keeper"),
                "{prompt}"
            );
        }
        other => panic!("not a video: {other:?}"),
    }
    assert_eq!(sc02.deps.len(), 1);
    assert_eq!(sc02.deps[0].account, "sandbox-image");
    assert!((sc02.est_cost_usd - 0.8).abs() < 1e-9);

    let kling = find("ep01/sc04");
    assert_eq!(kling.chain, vec!["sandbox-kling".to_string()]);
    assert!(kling.deps.is_empty());

    // Mira names her own voice; Jun falls back to the account's.
    match &find("ep01/sc03/line01").payload {
        TaskPayload::Voice { voice, speaker, .. } => {
            assert_eq!((voice.as_str(), speaker.as_str()), ("nova", "mira"));
        }
        other => panic!("not a voice line: {other:?}"),
    }
    match &find("ep01/sc03/line02").payload {
        TaskPayload::Voice { voice, speaker, .. } => {
            assert_eq!((voice.as_str(), speaker.as_str()), ("alloy", "jun"));
        }
        other => panic!("not a voice line: {other:?}"),
    }

    let asm = find("ep01/assembly");
    assert_eq!(asm.chain, vec!["assembly".to_string()]);
    match &asm.payload {
        TaskPayload::Assembly {
            scenes,
            voice,
            master,
        } => {
            assert_eq!(scenes.len(), 4);
            assert_eq!(voice.len(), 5);
            assert_eq!(scenes[1], sc02.id);
            assert_eq!(asm.deps.len(), 9);
            let plan = master.as_deref().expect("a master plan");
            assert_eq!(
                (plan.aspect_ratio.as_str(), plan.resolution.as_str()),
                ("9:16", "720p")
            );
            // Lines of ep01: two in scene 2, three in scene 3.
            let scenes_of: Vec<u32> = plan.lines.iter().map(|c| c.scene).collect();
            assert_eq!(scenes_of, [1, 1, 2, 2, 2]);
            assert!(plan.music.is_none() && !plan.burn_subtitles);
        }
        other => panic!("not an assembly: {other:?}"),
    }
}

#[test]
fn same_text_same_ids() {
    let a = expand_ok(SAMPLE);
    let b = expand_ok(SAMPLE);
    assert_eq!(a, b);
}

#[test]
fn editing_a_description_changes_that_scene_and_its_assembly_only() {
    let edited = SAMPLE.replace(
        "Close on Jun's hands as the saw bites",
        "Close on Jun's steady hands as the saw bites",
    );
    assert_ne!(edited, SAMPLE);
    let a = expand_ok(SAMPLE);
    let b = expand_ok(&edited);
    assert_eq!(changed(&a, &b), set(&["ep01/sc04", "ep01/assembly"]));
}

#[test]
fn editing_an_appearance_changes_its_image_scenes_and_assemblies() {
    let edited = SAMPLE.replace("white beard, navy peacoat", "grey beard, navy peacoat");
    assert_ne!(edited, SAMPLE);
    let a = expand_ok(SAMPLE);
    let b = expand_ok(&edited);
    // Old Tomas appears in ep02/sc01 (first frame) and ep03/sc03; his lines are unchanged.
    assert_eq!(
        changed(&a, &b),
        set(&[
            "char/old-tomas",
            "ep02/sc01",
            "ep02/assembly",
            "ep03/sc03",
            "ep03/assembly",
        ])
    );
}

#[test]
fn editing_a_line_changes_that_voice_task_and_its_assembly_only() {
    let edited = SAMPLE.replace("Mind the ninth step, it wobbles.", "Mind the ninth step.");
    let a = expand_ok(SAMPLE);
    let b = expand_ok(&edited);
    assert_eq!(changed(&a, &b), set(&["ep03/sc01/line01", "ep03/assembly"]));
}

const SMALL_YAML: &str = r#"
id: tiny
title: Tiny
defaults:
  aspect_ratio: "16:9"
  resolution: 1080p
  providers: { image: [sandbox-image], video: [sandbox-sora], voice: [sandbox-tts] }
characters:
  - { name: Ana Lee, appearance: "tall, red scarf", seed: 7, reference_image: "https://x.invalid/a.png" }
episodes:
  - scenes:
      - description: A quiet street 🌙.
        characters: [ana lee]
        duration: 12
        dialogue: [{ speaker: Ana Lee, line: Hello. }]
      - description: Rain.
        duration: 4
"#;

const SMALL_JSON: &str = "{\n\t\"id\": \"tiny\", \"title\": \"Tiny\",\n\t\"defaults\": {\"aspect_ratio\":\"16:9\",\"resolution\":\"1080p\",\
     \"providers\":{\"image\":[\"sandbox-image\"],\"video\":[\"sandbox-sora\"],\"voice\":[\"sandbox-tts\"]}},\
     \"characters\":[{\"name\":\"Ana Lee\",\"appearance\":\"tall, red scarf\",\"seed\":7,\"reference_image\":\"https:\\/\\/x.invalid\\/a.png\"}],\
     \"episodes\":[{\"scenes\":[{\"description\":\"A quiet street \\ud83c\\udf19.\",\"characters\":[\"ana lee\"],\"duration\":12,\
     \"dialogue\":[{\"speaker\":\"Ana Lee\",\"line\":\"Hello.\"}]},{\"description\":\"Rain.\",\"duration\":4}]}]}";

#[test]
fn json_and_yaml_give_the_same_tasks() {
    let cfg = config();
    let y = match parse_str(SMALL_YAML, "s.yaml", &cfg) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    let j = match parse_str(SMALL_JSON, "s.json", &cfg) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(y, j);
    // Content detection when the name says nothing.
    assert_eq!(Format::detect("-", SMALL_JSON), Format::Json);
    assert_eq!(Format::detect("-", SMALL_YAML), Format::Yaml);
    assert_eq!(Format::detect("s.yml", SMALL_JSON), Format::Yaml);
    // A byte order mark is tolerated in both formats.
    let with_bom = |t: &str| format!("\u{feff}{t}");
    for (text, file) in [(SMALL_YAML, "s.yaml"), (SMALL_JSON, "s.json")] {
        match parse_str(&with_bom(text), file, &cfg) {
            Ok(x) => assert_eq!(x, y),
            Err(e) => panic!("{file} with a BOM: {e}"),
        }
    }
    let labels: Vec<&str> = y.tasks.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "char/ana-lee",
            "ep01/sc01",
            "ep01/sc01/line01",
            "ep01/sc02",
            "ep01/assembly"
        ]
    );
}

#[test]
fn json_syntax_errors_have_positions() {
    let cfg = config();
    let Err(e) = parse_str("{\n  \"id\": \"x\",\n  \"title\" \"y\"\n}", "s.json", &cfg) else {
        panic!("accepted broken JSON");
    };
    assert_eq!(e.len(), 1);
    let e = &e.errors[0];
    assert_eq!((e.line, e.column), (3, 11), "{e}");
    assert!(e.message.contains("JSON syntax error"), "{e}");
}

#[test]
fn load_reads_files_and_refuses_bad_ones() {
    let cfg = config();
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/season-sample.yaml"
    );
    let x = match load(Path::new(sample), &cfg) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(x.tasks.len(), 36);

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let bad = dir.path().join("bad.yaml");
    let write = |bytes: &[u8]| {
        if let Err(e) = std::fs::write(&bad, bytes) {
            panic!("{e}");
        }
    };
    write(b"id: x\ntitle: \"caf\xe9\"\n");
    let Err(e) = load(&bad, &cfg) else {
        panic!("accepted non-UTF-8")
    };
    assert_eq!((e.errors[0].line, e.errors[0].column), (2, 12), "{e}");
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");

    let big = vec![b'#'; usize::try_from(MAX_SCRIPT_BYTES).unwrap_or(0) + 1];
    write(&big);
    let Err(e) = load(&bad, &cfg) else {
        panic!("accepted an oversized file")
    };
    assert!(e.to_string().contains("larger than"), "{e}");

    let Err(e) = load(&dir.path().join("missing.yaml"), &cfg) else {
        panic!("accepted a missing file")
    };
    assert!(e.to_string().contains("missing.yaml: cannot read"), "{e}");
}

#[test]
fn odd_documents_are_errors_not_panics() {
    let cfg = config();
    let cases: &[&str] = &[
        "",
        "   \n# only a comment\n",
        "42",
        "just text",
        "[1, 2, 3]",
        "~",
        "---\n...\n",
        "\u{feff}",
        "{",
        "a: [",
        "a: *nope",
        "&a [*a]",
        "? [complex, key]\n: value\n",
        "!!binary aGVsbG8=",
        "id: !custom x",
        "\0\u{1}\u{2}",
        "id: x\n\tbad: tab\n",
        "key: \"\\ud800\"",
    ];
    for text in cases {
        for file in ["s.yaml", "s.json", "s"] {
            let r = parse_str(text, file, &cfg);
            let Err(e) = r else {
                panic!("{text:?} accepted");
            };
            assert!(!e.is_empty(), "{text:?}");
            for err in e.iter() {
                assert!(err.line >= 1 && err.column >= 1, "{err}");
            }
        }
    }
}

/// Small deterministic generator, so the mutation test needs no extra crate and always runs the
/// same inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// The sample as JSON, built from its own tree so the two stay in step.
fn sample_as_json() -> String {
    fn to_json(node: &tree::Node) -> serde_json::Value {
        use serde_json::Value as J;
        use tree::{Resolved, Value};
        match &node.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Null => J::Null,
                Resolved::Bool(b) => J::Bool(b),
                Resolved::Int(i) => i.map_or(J::Null, J::from),
                Resolved::Float(f) => J::from(f),
                Resolved::Str(t) => J::from(t),
            },
            Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), to_json(&e.value)))
                    .collect(),
            ),
        }
    }
    let mut sink = error::Sink::new("sample");
    let Some(root) = tree::build_yaml(SAMPLE, &mut sink) else {
        panic!("{}", sink.finish());
    };
    match serde_json::to_string_pretty(&to_json(&root)) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn sample_as_json_expands_identically() {
    let json = sample_as_json();
    let from_json = match parse_str(&json, "season.json", &config()) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    let from_yaml = expand_ok(SAMPLE);
    assert_eq!(from_json.tasks, from_yaml.tasks);
    assert_eq!(from_json.warnings.len(), from_yaml.warnings.len());
}

/// Truncations at every 37th byte, then `rounds` copies with a few random edits each: bit flips,
/// deletions, inserted structural characters, duplicated and deleted runs.
fn mutations(base: &[u8], specials: &[u8], rng: &mut XorShift, rounds: usize) -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = (0..base.len())
        .step_by(37)
        .map(|cut| base.get(..cut).unwrap_or_default().to_vec())
        .collect();
    for _ in 0..rounds {
        let mut v = base.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(v.len());
            match rng.below(5) {
                0 => {
                    if let Some(b) = v.get_mut(at) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                1 => {
                    if at < v.len() {
                        v.remove(at);
                    }
                }
                2 => {
                    let s = specials
                        .get(rng.below(specials.len()))
                        .copied()
                        .unwrap_or(b' ');
                    v.insert(at, s);
                }
                3 => {
                    let end = (at + rng.below(80)).min(v.len());
                    let chunk = v.get(at..end).unwrap_or_default().to_vec();
                    let to = rng.below(v.len());
                    v.splice(to..to, chunk);
                }
                _ => {
                    let end = (at + rng.below(40)).min(v.len());
                    v.drain(at..end);
                }
            }
        }
        inputs.push(v);
    }
    inputs
}

/// Every mutated input gives `Ok` or a non-empty `Err`, never a panic. `FUZZ_ROUNDS` and
/// `FUZZ_SEED` widen a local run; the defaults keep the suite fast and deterministic.
#[test]
fn mutated_samples_never_panic() {
    let cfg = config();
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env("FUZZ_ROUNDS").map_or(600, |r| usize::try_from(r).unwrap_or(600));
    let mut rng = XorShift(env("FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15).max(1));
    let json = sample_as_json();
    let sets = [
        (
            mutations(
                SAMPLE.as_bytes(),
                b":-[]{}&*!|>'\"#,?\n\t \\%@`",
                &mut rng,
                rounds,
            ),
            ["s.yaml", "s"],
        ),
        (
            mutations(
                json.as_bytes(),
                b"{}[],:\"\\ \n\t0123456789.eE-+u",
                &mut rng,
                rounds,
            ),
            ["s.json", "s"],
        ),
    ];
    for (inputs, files) in &sets {
        let mut ok = 0usize;
        for input in inputs {
            let text = String::from_utf8_lossy(input);
            for file in files {
                match parse_str(&text, file, &cfg) {
                    Ok(_) => ok += 1,
                    Err(e) => assert!(!e.is_empty()),
                }
            }
        }
        // Some edits (inside prompts) leave the script valid; both arms must be reached.
        let total = inputs.len() * files.len();
        assert!(ok > 0 && ok < total, "{ok} of {total} valid");
    }
}

#[test]
fn hostile_sizes_are_errors() {
    let cfg = config();
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let deep_block: String = (0..300).map(|i| format!("{}- \n", " ".repeat(i))).collect();
    let wide = format!("id: [{}]", "1, ".repeat(300_000));
    let huge = "9".repeat(100_000);
    let huge_seed = SAMPLE.replace("seed: 1234", &format!("seed: {huge}"));
    for text in [&deep, &deep_block, &wide, &huge_seed] {
        for file in ["s.yaml", "s.json"] {
            assert!(parse_str(text, file, &cfg).is_err());
        }
    }
    let over = "#".repeat(usize::try_from(MAX_SCRIPT_BYTES).unwrap_or(0) + 1);
    let Err(e) = parse_str(&over, "s.yaml", &cfg) else {
        panic!("accepted an oversized script");
    };
    assert!(e.to_string().contains("larger than"), "{e}");
}

#[test]
fn a_budget_is_read_and_a_bad_one_is_reported_at_its_field() {
    let with = SAMPLE.replacen("\ndefaults:", "\nbudget:\n  usd: 19.5\ndefaults:", 1);
    assert_eq!(expand_ok(&with).budget_usd, Some(19.5));
    assert_eq!(expand_ok(SAMPLE).budget_usd, None);
    let both = SAMPLE.replacen(
        "\ndefaults:",
        "\nbudget:\n  usd: 40\n  per_episode_usd: 4.5\ndefaults:",
        1,
    );
    assert_eq!(expand_ok(&both).budget_per_episode_usd, Some(4.5));
    assert_eq!(expand_ok(&with).budget_per_episode_usd, None);
    for (budget, want) in [
        (
            "budget:\n  usd: 3\n  per_episode_usd: -1\n",
            "budget.per_episode_usd",
        ),
        ("budget:\n  per_episode_usd: 1\n", "budget.usd"),
        ("budget:\n  usd: -3\n", "budget.usd"),
        ("budget:\n  usd: lots\n", "budget.usd"),
        ("budget:\n  dollars: 3\n", "budget"),
    ] {
        let bad = SAMPLE.replacen("\ndefaults:", &format!("\n{budget}defaults:"), 1);
        let err = match parse_str(&bad, "season.yaml", &config()) {
            Ok(_) => panic!("{budget:?} should be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{budget:?}: {err}");
    }
}

#[test]
fn master_fields_reach_the_assembly_and_bad_ones_name_their_place() {
    let script = SMALL_YAML
        .replace(
            "defaults:",
            "music: beds/harbour.ogg\nsubtitles: burn\ndefaults:",
        )
        .replace("line: Hello. }", "line: Hello., at: 2.5 }");
    let x = expand_ok(&script);
    let asm = x.tasks.iter().find(|t| t.label == "ep01/assembly").unwrap();
    let TaskPayload::Assembly {
        master: Some(plan), ..
    } = &asm.payload
    else {
        panic!("no master plan: {:?}", asm.payload);
    };
    assert_eq!(
        (plan.aspect_ratio.as_str(), plan.resolution.as_str()),
        ("16:9", "1080p")
    );
    assert_eq!(plan.music.as_deref(), Some("beds/harbour.ogg"));
    assert!(plan.burn_subtitles);
    assert_eq!(plan.lines[0].at_ms, Some(2_500));
    assert!(x.warnings.is_empty(), "{:?}", x.warnings);

    let bad = SMALL_YAML
        .replace(
            "defaults:",
            "subtitles: loud\nmusic: ftp://x/y.mp3\ndefaults:",
        )
        .replace("line: Hello. }", "line: Hello., at: 12 }");
    let errors = parse_str(&bad, "season.yaml", &config())
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("season.yaml:4:12: subtitles: `loud` is not a supported subtitles mode"),
        "{errors}"
    );
    assert!(
        errors.contains("season.yaml:5:8: music: `ftp://x/y.mp3` is neither"),
        "{errors}"
    );
    assert!(
        errors.contains("episodes[0].scenes[0].dialogue[0].at: the line starts at 12.000 s, not inside its 12 s scene"),
        "{errors}"
    );
}

#[test]
fn plan_warns_about_a_scene_whose_lines_do_not_fit() {
    let long = "word ".repeat(40);
    let script = SMALL_YAML.replace("line: Hello. }", &format!("line: \"{long}\" }}"));
    let x = expand_ok(&script.replace("duration: 12", "duration: 8"));
    assert_eq!(x.warnings.len(), 1, "{:?}", x.warnings);
    let w = x.warnings[0].to_string();
    assert!(
        w.starts_with(
            "season.yaml:12:9: episodes[0].scenes[0]: the scene's 1 dialogue line need about"
        ),
        "{w}"
    );
}
