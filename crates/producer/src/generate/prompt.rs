//! The messages sent to the chat model for each step, and for a repair.
//!
//! Every prompt says "JSON" (JSON mode refuses a request that does not), shows the wanted shape
//! by example, and ends with a `Parameters (JSON):` block that states the numbers the answer
//! must respect; the sandbox reads that block to write its deterministic seasons.

use super::brief::{Brief, Step};
use super::check::Outline;
use serde::Serialize;
use serde_json::{json, Value};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message {
            role: "system",
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: "user",
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message {
            role: "assistant",
            content: content.into(),
        }
    }
}

/// Marker the parameters block follows in the first user message.
pub const PARAMETERS: &str = "Parameters (JSON):";

/// Marker that opens a repair request.
pub const REPAIR: &str = "Your JSON has these problems";

const SYSTEM: &str = "You are the head writer of a studio that makes vertical short dramas \
(one to two minutes per episode). You answer with one JSON object only, no prose, no code \
fences. Every field named in the example is required; numbers are JSON numbers.";

/// The first messages of a step (system, user).
pub fn messages(step: Step, brief: &Brief, outline: Option<&Outline>) -> Vec<Message> {
    let user = match step {
        Step::Outline => outline_prompt(brief),
        Step::Episode(n) => episode_prompt(brief, outline, n),
    };
    vec![Message::system(SYSTEM), Message::user(user)]
}

/// The repair turn: the model's answer, then the validator's exact messages.
pub fn repair(answer: &str, problems: &[String]) -> [Message; 2] {
    let list: String = problems.iter().map(|p| format!("- {p}\n")).collect();
    [
        Message::assistant(answer),
        Message::user(format!(
            "{REPAIR} (from the script validator):\n{list}Return the corrected JSON object, \
             complete, in the same shape, and nothing else."
        )),
    ]
}

fn outline_prompt(brief: &Brief) -> String {
    let example = json!({
        "title": "Season title",
        "logline": "One sentence that sells the season.",
        "characters": [{"name": "Linh", "appearance": "Visual description for a character \
    sheet: age, face, hair, clothes, one distinctive detail.", "voice": brief.voices.first()}],
        "episodes": [{"title": "Episode title", "synopsis": "What happens, 2-3 sentences.",
                      "cliffhanger": "The hook the episode ends on."}]
    });
    let params = json!({
        "task": "outline",
        "premise": brief.premise,
        "episodes": brief.episodes,
        "characters": brief.characters,
        "language": brief.language,
        "style": brief.style,
        "voices": brief.voices,
    });
    format!(
        "Write the outline of a season as JSON: a title, a logline, exactly {} main \
         characters (names short and distinct; appearance written for an image model, in \
         English; voice chosen from the voices listed, if any) and exactly {} episodes, each \
         with a title, a synopsis and a cliffhanger. Titles, synopses and dialogue are in the \
         language `{}`. Style: {}.\n\nPremise:\n{}\n\nExample of the JSON shape:\n{}\n\n{PARAMETERS}\n{}",
        brief.characters,
        brief.episodes,
        brief.language,
        brief.style,
        brief.premise,
        example,
        params
    )
}

fn episode_prompt(brief: &Brief, outline: Option<&Outline>, n: u32) -> String {
    let (title, synopsis, cliffhanger, names, logline) = match outline {
        Some(o) => {
            let e = o.episodes.get(n as usize - 1);
            (
                e.map(|e| e.title.clone()).unwrap_or_default(),
                e.map(|e| e.synopsis.clone()).unwrap_or_default(),
                e.map(|e| e.cliffhanger.clone()).unwrap_or_default(),
                o.characters
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
                o.logline.clone(),
            )
        }
        None => Default::default(),
    };
    let cast: Vec<Value> = outline
        .map(|o| {
            o.characters
                .iter()
                .map(|c| json!({"name": c.name, "appearance": c.appearance}))
                .collect()
        })
        .unwrap_or_default();
    let example = json!({
        "title": title,
        "scenes": [{
            "description": "What the camera sees, for a video model, in English: place, light, \
    action, the characters' look.",
            "characters": names.iter().take(1).collect::<Vec<_>>(),
            "first_frame": names.first(),
            "camera": "slow push-in",
            "duration": brief.durations.first(),
            "dialogue": [{"speaker": names.first(), "line": "A line in the season's language."}]
        }]
    });
    let params = json!({
        "task": "episode",
        "premise": brief.premise,
        "episode": n,
        "episodes": brief.episodes,
        "scenes": brief.scenes_per_episode,
        "durations": brief.durations,
        "characters": names,
        "title": title,
        "language": brief.language,
    });
    format!(
        "Write episode {n} of {} of the season as JSON: exactly {} scenes. Each scene has a \
         description, the characters in it (only names from the cast, exactly as written), a \
         camera direction, a duration in seconds that is one of {:?}, and optional dialogue \
         lines spoken by characters of the scene. When a scene opens on one character, set \
         first_frame to that character. Dialogue is in the language `{}`. Style: {}. End on \
         the cliffhanger.\n\nSeason: {}\nCast: {}\nEpisode title: {title}\nSynopsis: \
         {synopsis}\nCliffhanger: {cliffhanger}\n\nExample of the JSON shape:\n{}\n\n{PARAMETERS}\n{}",
        brief.episodes,
        brief.scenes_per_episode,
        brief.durations,
        brief.language,
        brief.style,
        logline,
        Value::Array(cast),
        example,
        params
    )
}

/// The JSON schema of a step's answer, for accounts with `json_mode = "schema"`.
pub fn schema(step: Step) -> Value {
    let text = json!({"type": "string"});
    match step {
        Step::Outline => json!({
            "type": "object",
            "required": ["title", "logline", "characters", "episodes"],
            "properties": {
                "title": text, "logline": text,
                "characters": {"type": "array", "items": {"type": "object",
                    "required": ["name", "appearance"],
                    "properties": {"name": text, "appearance": text, "voice": text}}},
                "episodes": {"type": "array", "items": {"type": "object",
                    "required": ["title", "synopsis", "cliffhanger"],
                    "properties": {"title": text, "synopsis": text, "cliffhanger": text}}}
            }
        }),
        Step::Episode(_) => json!({
            "type": "object",
            "required": ["title", "scenes"],
            "properties": {
                "title": text,
                "scenes": {"type": "array", "items": {"type": "object",
                    "required": ["description", "characters", "camera", "duration"],
                    "properties": {
                        "description": text, "camera": text, "first_frame": text,
                        "characters": {"type": "array", "items": text},
                        "duration": {"type": "integer"},
                        "dialogue": {"type": "array", "items": {"type": "object",
                            "required": ["speaker", "line"],
                            "properties": {"speaker": text, "line": text}}}
                    }}}
            }
        }),
    }
}
