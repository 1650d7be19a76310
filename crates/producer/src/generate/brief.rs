//! The generation brief and the task graph built from it.
//!
//! The brief holds everything that changes what the LLM writes: premise, counts, language,
//! style, the accounts the script will name, the durations they render, the chat model and a
//! take number. It travels as JSON in each script task's payload, so task ids (hashed over the
//! payload) are content-addressed: the same command again finds every task stored and pays for
//! nothing; `--fresh` changes the take and makes new ones.

use dramaq_common::ids::{task_id, IdInput};
use dramaq_common::{DepRef, NewTask, TaskPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Group (output folder) of every script task.
pub const GROUP: &str = "script";

/// The provider chains the generated script names, per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Providers {
    pub image: Vec<String>,
    pub video: Vec<String>,
    pub voice: Vec<String>,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Brief {
    pub premise: String,
    pub episodes: u32,
    pub scenes_per_episode: u32,
    pub characters: u32,
    pub language: String,
    pub style: String,
    pub aspect_ratio: String,
    pub resolution: String,
    /// Clip lengths every account of the video chain can render.
    pub durations: Vec<u32>,
    /// Voices the voice chain's first account speaks (empty: the account's default).
    pub voices: Vec<String>,
    pub providers: Providers,
    /// The chat model (part of the ids: another model is another take).
    pub model: String,
    /// 0 for the first take; `--fresh` picks a new one.
    pub take: u64,
}

/// Which node of the graph a script task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Outline,
    /// 1-based episode number.
    Episode(u32),
}

impl Step {
    pub fn label(self) -> String {
        match self {
            Step::Outline => format!("{GROUP}/outline"),
            Step::Episode(n) => format!("{GROUP}/{}", episode_id(n)),
        }
    }

    /// The step a payload describes, with its brief.
    pub fn of(payload: &TaskPayload) -> Result<(Step, Brief), String> {
        let TaskPayload::Script {
            step,
            episode,
            brief,
        } = payload
        else {
            return Err("not a script task".into());
        };
        let brief: Brief =
            serde_json::from_str(brief).map_err(|e| format!("unreadable brief: {e}"))?;
        let step = match step.as_str() {
            "outline" => Step::Outline,
            "episode" if *episode >= 1 && *episode <= brief.episodes => Step::Episode(*episode),
            other => {
                return Err(format!(
                    "unknown script step `{}` (episode {episode})",
                    dramaq_common::text::shown_default(other)
                ))
            }
        };
        Ok((step, brief))
    }
}

/// `ep01` … `ep100`: two digits at least, like hand-written scripts.
pub fn episode_id(n: u32) -> String {
    format!("ep{n:02}")
}

impl Brief {
    /// sha256 of the brief, hex.
    pub fn digest(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// The queue season the script tasks belong to (not the generated script's own id).
    pub fn season(&self) -> String {
        format!("gen-{}", &self.digest()[..12])
    }

    /// A fixed seed per character, derived from the brief and the name.
    pub fn seed_for(&self, name: &str) -> u32 {
        let d = Sha256::digest(format!("{}|{name}", self.digest()).as_bytes());
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000_000
    }

    /// The outline task and one episode task per episode, depending on it. `chat` is the chain
    /// of openai-chat accounts; `price` estimates one task.
    pub fn tasks(&self, chat: &[String], price: f64) -> Vec<NewTask> {
        let season = self.season();
        let brief = serde_json::to_string(self).unwrap_or_default();
        let make = |step: Step, deps: Vec<DepRef>| {
            let payload = TaskPayload::Script {
                step: match step {
                    Step::Outline => "outline".into(),
                    Step::Episode(_) => "episode".into(),
                },
                episode: match step {
                    Step::Outline => 0,
                    Step::Episode(n) => n,
                },
                brief: brief.clone(),
            };
            let label = step.label();
            let dep_ids: Vec<String> = deps.iter().map(|d| d.id.clone()).collect();
            let id = task_id(&IdInput {
                season: &season,
                group: GROUP,
                label: &label,
                chain: chat,
                payload: &payload,
                deps: &dep_ids,
            });
            NewTask {
                id,
                season: season.clone(),
                group: GROUP.into(),
                label,
                chain: chat.to_vec(),
                payload,
                deps,
                ext: "json".into(),
                est_cost_usd: price,
            }
        };
        let outline = make(Step::Outline, Vec::new());
        let dep = DepRef {
            id: outline.id.clone(),
            account: outline.chain[0].clone(),
        };
        let mut out = vec![outline];
        for n in 1..=self.episodes {
            out.push(make(Step::Episode(n), vec![dep.clone()]));
        }
        out
    }
}
