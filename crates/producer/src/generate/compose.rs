//! The compose step: the stored outline and episodes merged into one commented YAML script.
//!
//! The file is meant to be read and edited by people before anything is paid for: a header
//! with the premise and how the file was made, the synopsis and cliffhanger above each episode,
//! and a comment where an episode could not be generated. Every scalar is written as a JSON
//! string or number (valid YAML, and safe whatever the model wrote); lists of names are JSON
//! flow lists. `dramaq plan` reads the result unchanged.

use super::brief::{episode_id, Brief};
use super::check::{script_id, season_doc, Outline};
use serde_json::Value;
use std::fmt::Write;

/// An episode as compose gets it: the checked answer, or why there is none.
pub enum EpisodeText {
    Written(Value),
    Missing(String),
}

/// Longest text kept in a comment line.
const COMMENT_MAX: usize = 300;

fn comment(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > COMMENT_MAX {
        let cut: String = flat.chars().take(COMMENT_MAX).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

fn q(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into())
}

/// The script text.
pub fn compose(brief: &Brief, outline: &Outline, episodes: &[EpisodeText]) -> String {
    let doc = season_doc(brief, outline, Vec::new());
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Season script written by `dramaq generate` (model {}, take {}).",
        comment(&brief.model),
        brief.take
    );
    let _ = writeln!(
        w,
        "# An ordinary season script: review and edit it, then `dramaq plan` and `dramaq enqueue` it."
    );
    let _ = writeln!(w, "#");
    for line in brief
        .premise
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(20)
    {
        let _ = writeln!(w, "# Premise: {}", comment(line));
    }
    if !outline.logline.is_empty() {
        let _ = writeln!(w, "# Logline: {}", comment(&outline.logline));
    }
    let _ = writeln!(
        w,
        "# {} episodes × {} scenes, {} characters, language {}, style: {}",
        brief.episodes,
        brief.scenes_per_episode,
        brief.characters,
        comment(&brief.language),
        comment(&brief.style)
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "id: {}", q(&Value::String(script_id(brief, outline))));
    let _ = writeln!(w, "title: {}", q(&doc["title"]));
    let _ = writeln!(w);
    let _ = writeln!(w, "defaults:");
    let _ = writeln!(w, "  aspect_ratio: {}", q(&doc["defaults"]["aspect_ratio"]));
    let _ = writeln!(w, "  resolution: {}", q(&doc["defaults"]["resolution"]));
    let _ = writeln!(
        w,
        "  # Provider chains per kind; scene durations are ones every video account renders ({:?} s).",
        brief.durations
    );
    let _ = writeln!(w, "  providers:");
    if let Value::Object(p) = &doc["defaults"]["providers"] {
        for (kind, chain) in p {
            let _ = writeln!(w, "    {kind}: {}", q(chain));
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "# Seeds and voices are fixed per character, so every sheet and line stays the same."
    );
    let _ = writeln!(w, "characters:");
    if let Value::Array(chars) = &doc["characters"] {
        for c in chars {
            let _ = writeln!(w, "  - name: {}", q(&c["name"]));
            let _ = writeln!(w, "    appearance: {}", q(&c["appearance"]));
            let _ = writeln!(w, "    seed: {}", q(&c["seed"]));
            if !c["voice"].is_null() {
                let _ = writeln!(w, "    voice: {}", q(&c["voice"]));
            }
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "episodes:");
    for (i, ep) in episodes.iter().enumerate() {
        let n = i + 1;
        if let Some(o) = outline.episodes.get(i) {
            let _ = writeln!(
                w,
                "  # {} synopsis: {}",
                episode_id(n as u32),
                comment(&o.synopsis)
            );
            if !o.cliffhanger.is_empty() {
                let _ = writeln!(w, "  # cliffhanger: {}", comment(&o.cliffhanger));
            }
        }
        match ep {
            EpisodeText::Written(e) => write_episode(w, e),
            EpisodeText::Missing(why) => {
                let _ = writeln!(
                    w,
                    "  # {} is MISSING: its generation failed ({}). Write it here by hand, or \
                     requeue it (`dramaq dlq requeue`) and run the same `dramaq generate` again.",
                    episode_id(n as u32),
                    comment(why)
                );
            }
        }
    }
    out
}

const SCENE_KEYS: [&str; 8] = [
    "id",
    "description",
    "characters",
    "first_frame",
    "camera",
    "duration",
    "negative_prompt",
    "dialogue",
];

fn write_episode(w: &mut String, e: &Value) {
    let _ = writeln!(w, "  - id: {}", q(&e["id"]));
    let _ = writeln!(w, "    title: {}", q(&e["title"]));
    let _ = writeln!(w, "    scenes:");
    let Value::Array(scenes) = &e["scenes"] else {
        return;
    };
    for s in scenes {
        let Value::Object(s) = s else { continue };
        let mut first = true;
        let keys = SCENE_KEYS.iter().map(|k| k.to_string()).chain(
            s.keys()
                .filter(|k| !SCENE_KEYS.contains(&k.as_str()))
                .cloned(),
        );
        for k in keys {
            let Some(v) = s.get(&k) else { continue };
            let lead = if first { "      - " } else { "        " };
            first = false;
            if k == "dialogue" {
                let Value::Array(lines) = v else { continue };
                if lines.is_empty() {
                    continue;
                }
                let _ = writeln!(w, "{lead}dialogue:");
                for l in lines {
                    let _ = writeln!(w, "          - speaker: {}", q(&l["speaker"]));
                    let _ = writeln!(w, "            line: {}", q(&l["line"]));
                }
            } else {
                let _ = writeln!(w, "{lead}{k}: {}", q(v));
            }
        }
    }
}
