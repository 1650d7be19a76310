//! Property tests of the script parser and validator: whatever the text, `parse_as` returns a
//! plan or errors, never panics, and the error output stays bounded (at most
//! [`MAX_ERRORS`] errors plus one summary line, each of bounded length, no raw control
//! characters). Random bytes, random schema-shaped documents (as JSON and as YAML) and a valid
//! script mangled by byte edits, 256 cases each so CI time stays bounded, plus the hostile
//! scripts as fixed cases.

mod support;

use dramaq_common::config::Config;
use dramaq_producer::script::{parse_as, Format, MAX_ERRORS};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

fn cfg() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(support::config)
}

/// Bytes of error output allowed per error line: the message, a schema path of bounded depth
/// and quoted values cut to a few dozen characters each.
const LINE_BUDGET: usize = 8 * 1024;

/// Parse `text` both ways and check the bounds on whatever comes out.
fn check(text: &str) -> Result<(), TestCaseError> {
    for format in [Format::Yaml, Format::Json] {
        match parse_as(text, "fuzz.yaml", format, cfg()) {
            Ok(x) => prop_assert!(!x.season.is_empty()),
            Err(e) => {
                prop_assert!(!e.is_empty());
                prop_assert!(e.shown() <= MAX_ERRORS);
                let out = e.to_string();
                let lines = out.lines().count();
                prop_assert!(lines <= MAX_ERRORS + 1, "{lines} lines");
                prop_assert!(
                    out.len() <= 256 + lines * LINE_BUDGET,
                    "{} bytes of errors for {} bytes of input",
                    out.len(),
                    text.len()
                );
                prop_assert!(
                    !out.chars()
                        .any(|c| c.is_control() && c != '\n' && c != '\t' || c == '\u{1b}'),
                    "raw control character in:\n{out}"
                );
                for err in e.iter() {
                    prop_assert!(!err.message.contains('\n'), "{}", err.message);
                }
            }
        }
    }
    Ok(())
}

/// A small valid season for the sandbox configuration.
fn valid_season() -> Value {
    json!({
        "id": "s1",
        "title": "T",
        "defaults": {
            "aspect_ratio": "9:16",
            "resolution": "720p",
            "duration": 8,
            "providers": {
                "image": ["sandbox-image"],
                "video": ["sandbox-sora"],
                "voice": ["sandbox-tts"]
            }
        },
        "characters": [
            {"name": "Mira", "appearance": "a", "seed": 1, "voice": "nova"},
            {"name": "Jun", "appearance": "b", "seed": 2}
        ],
        "episodes": [{
            "id": "ep01",
            "scenes": [
                {"description": "d", "characters": ["Mira", "Jun"], "first_frame": "Mira",
                 "dialogue": [{"speaker": "Jun", "line": "hi"}]},
                {"description": "e", "duration": 4, "providers": {"video": ["sandbox-sora"]}}
            ]
        }]
    })
}

#[test]
fn the_valid_season_is_valid() {
    let text = serde_json::to_string_pretty(&valid_season()).unwrap();
    for format in [Format::Yaml, Format::Json] {
        if let Err(e) = parse_as(&text, "s.json", format, cfg()) {
            panic!("{e}");
        }
    }
}

const KEYS: &[&str] = &[
    "id",
    "title",
    "defaults",
    "characters",
    "episodes",
    "aspect_ratio",
    "resolution",
    "duration",
    "providers",
    "image",
    "video",
    "voice",
    "assembly",
    "name",
    "appearance",
    "seed",
    "reference_image",
    "scenes",
    "description",
    "camera",
    "negative_prompt",
    "first_frame",
    "dialogue",
    "speaker",
    "line",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => any::<String>(),
        1 => Just("\u{1b}[2J\u{1b}[31mred".to_string()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..30).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(
            &[
                "Mira",
                "mira",
                "Jun",
                "Ghost",
                "sandbox-sora",
                "sandbox-kling",
                "sandbox-tts",
                "sandbox-image",
                "assembly",
                "9:16",
                "720p",
                "",
                " ",
                "\u{1b}]0;title\u{7}",
                "line\nbreak\r\n",
                "\u{202e}evil",
            ][..]
        )
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The valid season with some of its values swapped for generated ones.
fn mangled_season() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), document()), 1..6),
        any::<bool>(),
    )
        .prop_map(|(edits, drop)| {
            let mut v = valid_season();
            for (at, with) in edits {
                let mut slots = Vec::new();
                collect_slots(&v, &mut Vec::new(), &mut slots);
                let path = at.get(&slots).clone();
                if let Some(slot) = slot_mut(&mut v, &path) {
                    if drop {
                        *slot = Value::Null;
                    } else {
                        *slot = with;
                    }
                }
            }
            v
        })
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_slots(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                here.push(Step::Index(i));
                collect_slots(item, here, out);
                here.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                here.push(Step::Key(k.clone()));
                collect_slots(item, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn slot_mut<'v>(v: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    let mut cur = v;
    for step in path {
        cur = match (step, cur) {
            (Step::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Byte-level damage to a text: cut, duplicate or insert YAML-significant tokens.
fn mangle(text: &str, edits: &[(prop::sample::Index, u8, usize)]) -> String {
    const TOKENS: &[&str] = &[
        ":",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "\n",
        "  ",
        "\t",
        "&a ",
        "*a",
        "!!int ",
        "!!str ",
        "? ",
        "---\n",
        "\"",
        "'",
        "#",
        "|\n",
        "\u{1b}[31m",
        "\u{0}",
        "9999999999999999999999",
        "1e999",
        "-",
        "~",
        "<<: *a\n",
    ];
    let mut bytes = text.as_bytes().to_vec();
    for (at, op, n) in edits {
        let i = at.index(bytes.len() + 1);
        match op % 3 {
            0 => {
                let end = (i + n % 16).min(bytes.len());
                bytes.drain(i..end);
            }
            1 => {
                let end = (i + n % 32).min(bytes.len());
                let copy = bytes[i..end].to_vec();
                bytes.splice(i..i, copy);
            }
            _ => {
                let t = TOKENS[n % TOKENS.len()].as_bytes();
                bytes.splice(i..i, t.iter().copied());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_text(text in ".{0,512}") {
        check(&text)?;
    }

    #[test]
    fn schema_shaped_documents(doc in document()) {
        check(&serde_json::to_string(&doc).unwrap())?;
        check(&serde_json::to_string_pretty(&doc).unwrap())?;
    }

    #[test]
    fn mangled_seasons(doc in mangled_season()) {
        check(&serde_json::to_string_pretty(&doc).unwrap())?;
    }

    #[test]
    fn byte_damaged_seasons(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<usize>()), 1..8),
        yaml in any::<bool>(),
    ) {
        let text = if yaml {
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../examples/season-sample.yaml"
            ))
            .unwrap()
        } else {
            serde_json::to_string_pretty(&valid_season()).unwrap()
        };
        check(&mangle(&text, &edits))?;
    }
}

/// Fixed regression cases: the hostile scripts, control characters and a huge number.
#[test]
fn hostile_inputs_stay_bounded() {
    let cases = [
        support::hostile_script(8_000, 40_000),
        support::hostile_script(20_000, 100_000),
        support::hostile_script(0, 5_000),
        format!("id: s1\ntitle: T\nseed: {}\n", "9".repeat(1 << 20)),
        format!("id: [{}]\n", "\u{1b}[31m, ".repeat(50_000)),
    ];
    for text in &cases {
        if let Err(e) = check(text) {
            panic!("{e}");
        }
    }
}
