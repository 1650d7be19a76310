//! Reading an LLM's answer leniently, and validating it with the script validator.
//!
//! Models wrap JSON in code fences, add a sentence before or after it, and relays put blank
//! keep-alive lines in front of it; [`extract_json`] finds the object anyway. What it finds is
//! then checked with the *same* validator as `dramaq plan` ([`crate::script::parse_as`]): the
//! answer is put into a small season (the outline's characters and this one episode, with the
//! accounts and defaults the final file will carry), so every rule of a hand-written script
//! (durations the video accounts render, characters that exist, `first_frame` among the scene's
//! characters, numbers that are numbers) holds for a generated one. The validator's messages,
//! with paths relative to the answer, are what the worker sends back in a repair.

use super::brief::{episode_id, Brief, Step};
use crate::script::{parse_as, Format};
use dramaq_common::config::Config;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The outline as the model writes it (characters get seeds and voices from the brief).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outline {
    pub title: String,
    #[serde(default)]
    pub logline: String,
    pub characters: Vec<OutlineCharacter>,
    pub episodes: Vec<OutlineEpisode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlineCharacter {
    pub name: String,
    pub appearance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Filled in from the brief when the outline is checked.
    #[serde(default)]
    pub seed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlineEpisode {
    pub title: String,
    pub synopsis: String,
    #[serde(default)]
    pub cliffhanger: String,
}

/// Why an answer is not usable, as messages for the model (and the dead-letter entry).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckError {
    pub messages: Vec<String>,
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.messages.join("; "))
    }
}

fn fail(message: impl Into<String>) -> CheckError {
    CheckError {
        messages: vec![message.into()],
    }
}

/// The JSON object inside `text`: leading whitespace, keep-alive lines (`: keep-alive`), code
/// fences and prose around it are skipped. The first `{` that starts a complete JSON value
/// wins.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with(": keep-alive"))
        .collect::<Vec<_>>()
        .join("\n");
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err("the answer is empty".into());
    }
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(trimmed) {
        return Ok(v);
    }
    let mut last_err = None;
    for (i, _) in trimmed.match_indices('{') {
        let mut de = serde_json::Deserializer::from_str(&trimmed[i..]).into_iter::<Value>();
        match de.next() {
            Some(Ok(v @ Value::Object(_))) => return Ok(v),
            Some(Err(e)) if last_err.is_none() => last_err = Some(e.to_string()),
            _ => {}
        }
    }
    Err(match last_err {
        Some(e) => format!("the answer holds no complete JSON object ({e})"),
        None => "the answer holds no JSON object".into(),
    })
}

/// Check an answer for `step`. On success the cleaned object comes back: the outline with
/// seeds and voices filled in, or the episode as it will appear in the script (ids set).
pub fn check_answer(
    step: Step,
    brief: &Brief,
    outline: Option<&Outline>,
    text: &str,
    cfg: &Config,
) -> Result<Value, CheckError> {
    let v = extract_json(text).map_err(fail)?;
    match step {
        Step::Outline => check_outline(brief, v, cfg),
        Step::Episode(n) => {
            let outline = outline.ok_or_else(|| fail("the episode's outline is not available"))?;
            check_episode(brief, outline, n, v, cfg)
        }
    }
}

fn check_outline(brief: &Brief, v: Value, cfg: &Config) -> Result<Value, CheckError> {
    let mut outline: Outline =
        serde_json::from_value(v).map_err(|e| fail(format!("wrong shape: {e}")))?;
    let mut messages = Vec::new();
    if outline.characters.len() != brief.characters as usize {
        messages.push(format!(
            "characters: {} listed, {} wanted",
            outline.characters.len(),
            brief.characters
        ));
    }
    if outline.episodes.len() != brief.episodes as usize {
        messages.push(format!(
            "episodes: {} listed, {} wanted (one synopsis per episode)",
            outline.episodes.len(),
            brief.episodes
        ));
    }
    if outline.title.trim().is_empty() {
        messages.push("title: must not be empty".into());
    }
    for (i, c) in outline.characters.iter_mut().enumerate() {
        c.seed = brief.seed_for(&c.name);
        let known = c.voice.as_ref().is_some_and(|v| brief.voices.contains(v));
        if !known {
            c.voice = brief
                .voices
                .get(i % brief.voices.len().max(1))
                .cloned()
                .filter(|_| !brief.voices.is_empty());
        }
    }
    // The characters go through the script validator with one placeholder scene.
    let placeholder = json!({
        "id": "ep01", "title": "placeholder",
        "scenes": [{"id": "sc01", "description": "placeholder",
                    "duration": brief.durations.first().copied().unwrap_or(5)}]
    });
    messages.extend(validate(brief, &outline, placeholder, cfg, None));
    if !messages.is_empty() {
        return Err(CheckError { messages });
    }
    serde_json::to_value(&outline).map_err(|e| fail(e.to_string()))
}

fn check_episode(
    brief: &Brief,
    outline: &Outline,
    n: u32,
    v: Value,
    cfg: &Config,
) -> Result<Value, CheckError> {
    let Value::Object(mut ep) = v else {
        return Err(fail("the answer must be one JSON object (the episode)"));
    };
    // Ids are ours: episode and scene numbers, so the model cannot get them wrong.
    ep.remove("id");
    let mut out = Map::new();
    out.insert("id".into(), json!(episode_id(n)));
    let title = ep.remove("title").unwrap_or_else(|| {
        json!(outline
            .episodes
            .get(n as usize - 1)
            .map(|e| e.title.clone())
            .unwrap_or_default())
    });
    out.insert("title".into(), title);
    let mut messages = Vec::new();
    match ep.remove("scenes") {
        Some(Value::Array(mut scenes)) => {
            if scenes.len() != brief.scenes_per_episode as usize {
                messages.push(format!(
                    "scenes: {} written, {} wanted",
                    scenes.len(),
                    brief.scenes_per_episode
                ));
            }
            for (i, s) in scenes.iter_mut().enumerate() {
                if let Value::Object(s) = s {
                    s.insert("id".into(), json!(format!("sc{:02}", i + 1)));
                    open_on_character(s);
                }
            }
            out.insert("scenes".into(), Value::Array(scenes));
        }
        Some(_) => messages.push("scenes: must be a list of scene objects".into()),
        None => messages.push("scenes: missing required field".into()),
    }
    // Unknown top-level fields go to the validator, which names them.
    out.extend(ep);
    let episode = Value::Object(out);
    messages.extend(validate(brief, outline, episode.clone(), cfg, Some(n)));
    if messages.is_empty() {
        Ok(episode)
    } else {
        Err(CheckError { messages })
    }
}

/// A scene with exactly one character opens on that character: its sheet is the first frame.
fn open_on_character(scene: &mut Map<String, Value>) {
    if scene.contains_key("first_frame") {
        return;
    }
    if let Some(Value::Array(chars)) = scene.get("characters") {
        if let [only @ Value::String(_)] = chars.as_slice() {
            let only = only.clone();
            scene.insert("first_frame".into(), only);
        }
    }
}

/// The season document an answer is validated in; also the skeleton [`super::compose`] writes.
pub fn season_doc(brief: &Brief, outline: &Outline, episodes: Vec<Value>) -> Value {
    let characters: Vec<Value> = outline
        .characters
        .iter()
        .map(|c| {
            let mut o = json!({"name": c.name, "appearance": c.appearance, "seed": c.seed});
            if let Some(v) = &c.voice {
                o["voice"] = json!(v);
            }
            o
        })
        .collect();
    let mut providers = Map::new();
    for (kind, chain) in [
        ("image", &brief.providers.image),
        ("video", &brief.providers.video),
        ("voice", &brief.providers.voice),
    ] {
        if !chain.is_empty() {
            providers.insert(kind.into(), json!(chain));
        }
    }
    json!({
        "id": script_id(brief, outline),
        "title": outline.title,
        "defaults": {
            "aspect_ratio": brief.aspect_ratio,
            "resolution": brief.resolution,
            "providers": providers,
        },
        "characters": characters,
        "episodes": episodes,
    })
}

/// The generated script's season id: the title's ASCII letters and digits, else `gen-…`.
pub fn script_id(brief: &Brief, outline: &Outline) -> String {
    let mut id = String::new();
    for c in outline.title.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_end_matches('-');
    let id: String = id.chars().take(40).collect();
    let id = id.trim_end_matches('-');
    if id.len() < 3 {
        brief.season()
    } else {
        format!("{id}-{}", &brief.digest()[..6])
    }
}

/// The validator's messages for `episode` inside the season; paths are made relative to the
/// answer (`scenes[2].duration`) for an episode, and kept for the outline's characters.
fn validate(
    brief: &Brief,
    outline: &Outline,
    episode: Value,
    cfg: &Config,
    n: Option<u32>,
) -> Vec<String> {
    let doc = season_doc(brief, outline, vec![episode]);
    let text = doc.to_string();
    match parse_as(&text, "answer", Format::Json, cfg) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                let path = match n {
                    Some(_) => e.path.strip_prefix("episodes[0].").unwrap_or(&e.path),
                    None => &e.path,
                };
                if path.is_empty() {
                    e.message.clone()
                } else {
                    format!("{path}: {}", e.message)
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::brief::Providers;

    fn setup() -> (Brief, Outline, Config) {
        let cfg = Config::from_toml_str(
            "[accounts.img]\nfamily = \"openai-images\"\nbase_url = \"http://x\"\n\
             [accounts.vid]\nfamily = \"kling\"\nbase_url = \"http://x\"\njwt = false\n\
             [accounts.tts]\nfamily = \"openai-speech\"\nbase_url = \"http://x\"\n",
        )
        .unwrap();
        let brief = Brief {
            premise: "p".into(),
            episodes: 2,
            scenes_per_episode: 2,
            characters: 2,
            language: "en".into(),
            style: "s".into(),
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            durations: vec![5, 10],
            voices: vec!["nova".into(), "alloy".into()],
            providers: Providers {
                image: vec!["img".into()],
                video: vec!["vid".into()],
                voice: vec!["tts".into()],
            },
            model: "m".into(),
            take: 0,
        };
        let answer = r#"{"title":"T","logline":"L","characters":[
            {"name":"Mai","appearance":"a"},{"name":"Tu","appearance":"b","voice":"alloy"}],
            "episodes":[{"title":"1","synopsis":"s"},{"title":"2","synopsis":"s"}]}"#;
        let v = check_answer(Step::Outline, &brief, None, answer, &cfg).unwrap();
        let outline: Outline = serde_json::from_value(v).unwrap();
        (brief, outline, cfg)
    }

    #[test]
    fn outline_gets_seeds_and_voices() {
        let (brief, outline, _) = setup();
        assert_eq!(outline.characters[0].voice.as_deref(), Some("nova"));
        assert_eq!(outline.characters[1].voice.as_deref(), Some("alloy"));
        assert_eq!(outline.characters[0].seed, brief.seed_for("Mai"));
        assert_ne!(outline.characters[0].seed, outline.characters[1].seed);
    }

    #[test]
    fn episode_problems_come_from_the_validator_with_answer_paths() {
        let (brief, outline, cfg) = setup();
        let bad = r#"{"title":"E","scenes":[
            {"description":"d","characters":["Mai"],"duration":"5"},
            {"description":"d","characters":["Ghost"],"duration":7}]}"#;
        let e = check_answer(Step::Episode(1), &brief, Some(&outline), bad, &cfg).unwrap_err();
        let all = e.messages.join("\n");
        assert!(all.contains("scenes[0].duration: "), "{all}");
        assert!(
            all.contains("scenes[1].characters[0]: unknown character `Ghost`"),
            "{all}"
        );
        assert!(
            all.contains("scenes[1].duration: 7 s cannot be rendered by account vid"),
            "{all}"
        );
        assert!(!all.contains("episodes[0]"), "{all}");

        let good = "```json\n{\"title\":\"E\",\"scenes\":[\n\
            {\"description\":\"d\",\"characters\":[\"Mai\"],\"duration\":5},\n\
            {\"description\":\"d\",\"characters\":[\"Mai\",\"Tu\"],\"duration\":10,\n\
             \"dialogue\":[{\"speaker\":\"Tu\",\"line\":\"hi\"}]}]}\n```";
        let ep = check_answer(Step::Episode(1), &brief, Some(&outline), good, &cfg).unwrap();
        assert_eq!(ep["id"], "ep01");
        assert_eq!(ep["scenes"][1]["id"], "sc02");
        // Opens on one character: that character's sheet is the first frame.
        assert_eq!(ep["scenes"][0]["first_frame"], "Mai");
        assert!(ep["scenes"][1].get("first_frame").is_none());
        let text = crate::generate::compose::compose(
            &brief,
            &outline,
            &[
                crate::generate::compose::EpisodeText::Written(ep),
                crate::generate::compose::EpisodeText::Missing("invalid_output: x".into()),
            ],
        );
        assert!(text.contains("# ep02 is MISSING"), "{text}");
        let parsed = crate::script::parse_str(&text, "gen.yaml", &cfg).expect("plan accepts it");
        assert_eq!(parsed.title, "T");
    }

    #[test]
    fn finds_the_object_behind_fences_prose_and_keepalive() {
        for text in [
            "{\"a\":1}",
            "\n\n   \n{\"a\":1}",
            ": keep-alive\n: keep-alive\n{\"a\":1}",
            "Here is the season:\n```json\n{\"a\":1}\n```\nEnjoy!",
            "Sure {not json} then {\"a\":1} and more",
        ] {
            assert_eq!(extract_json(text).unwrap()["a"], 1, "{text:?}");
        }
        assert!(extract_json("   ").unwrap_err().contains("empty"));
        assert!(extract_json("{\"a\": [1, 2").is_err());
    }
}
