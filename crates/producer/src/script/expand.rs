//! Expansion of a validated season into content-addressed tasks.
//!
//! Every task id hashes the task's content and the ids of its dependencies
//! ([`dramaq_common::ids::task_id`]), so re-enqueueing an unchanged script adds nothing, and an
//! edit changes exactly the tasks whose output it changes: the edited task and, through their
//! payloads and dependency lists, the tasks built from it (a character's image → the scenes that
//! show the character → their episodes' assemblies).

use dramaq_common::config::{AccountConfig, Config};
use dramaq_common::ids::{task_id, IdInput};
use dramaq_common::model::{LineCue, MasterPlan};
use dramaq_common::{DepRef, NewTask, TaskPayload};

use super::season::{Character, Scene, Season};

/// Group of the character images; episodes use their own id.
pub use dramaq_common::model::CHARACTER_GROUP as IMAGE_GROUP;

/// Voice used when neither the character nor the voice account names one.
pub const FALLBACK_VOICE: &str = "alloy";

/// Tasks in dependency order: images, then each episode's videos and voice lines, then the
/// assemblies.
pub fn expand(season: &Season, cfg: &Config) -> Vec<NewTask> {
    let images: Vec<NewTask> = season
        .characters
        .iter()
        .map(|c| image_task(season, c, cfg))
        .collect();

    let mut assemblies = Vec::new();
    let mut middle = Vec::new();
    for episode in &season.episodes {
        let mut scene_ids = Vec::new();
        let mut voice_ids = Vec::new();
        let mut deps = Vec::new();
        let mut cues = Vec::new();
        for (scene_index, scene) in episode.scenes.iter().enumerate() {
            let video = video_task(season, &episode.id, scene, &images, cfg);
            scene_ids.push(video.id.clone());
            deps.push(dep_of(&video));
            middle.push(video);
            for (n, line) in scene.dialogue.iter().enumerate() {
                let Some(speaker) = season.characters.get(line.speaker) else {
                    continue;
                };
                let voice = voice_task(
                    season,
                    &format!("{}/{}/line{:02}", episode.id, scene.id, n + 1),
                    &episode.id,
                    speaker,
                    &line.text,
                    cfg,
                );
                voice_ids.push(voice.id.clone());
                cues.push(LineCue {
                    scene: scene_index as u32,
                    at_ms: line.at_ms,
                });
                deps.push(dep_of(&voice));
                middle.push(voice);
            }
        }
        let payload = TaskPayload::Assembly {
            scenes: scene_ids,
            voice: voice_ids,
            master: Some(Box::new(MasterPlan {
                aspect_ratio: season.aspect_ratio.clone(),
                resolution: season.resolution.clone(),
                lines: cues,
                music: episode.music.clone().or_else(|| season.music.clone()),
                burn_subtitles: season.burn_subtitles,
            })),
        };
        assemblies.push(task(
            season,
            Draft {
                group: &episode.id,
                label: format!("{}/assembly", episode.id),
                chain: season.assembly_chain.clone(),
                payload,
                deps,
                ext: "mp4",
                est_cost_usd: 0.0,
            },
        ));
    }

    let mut tasks = images;
    tasks.extend(middle);
    tasks.extend(assemblies);
    tasks
}

fn image_task(season: &Season, c: &Character, cfg: &Config) -> NewTask {
    let payload = TaskPayload::Image {
        prompt: format!(
            "{}: {}\nCharacter sheet, full body, front view, neutral background.",
            c.name, c.appearance
        ),
        seed: c.seed,
        aspect_ratio: season.aspect_ratio.clone(),
        reference_image: c.reference_image.clone(),
    };
    let cost = first_account(&season.image_chain, cfg).map_or(0.0, |a| a.price.per_request);
    task(
        season,
        Draft {
            group: IMAGE_GROUP,
            label: format!("char/{}", c.id),
            chain: season.image_chain.clone(),
            payload,
            deps: Vec::new(),
            ext: "png",
            est_cost_usd: cost,
        },
    )
}

fn video_task(
    season: &Season,
    episode: &str,
    scene: &Scene,
    images: &[NewTask],
    cfg: &Config,
) -> NewTask {
    let mut prompt = scene.description.clone();
    if let Some(camera) = &scene.camera {
        prompt.push_str("\nCamera: ");
        prompt.push_str(camera);
    }
    for c in scene
        .characters
        .iter()
        .filter_map(|&i| season.characters.get(i))
    {
        prompt.push('\n');
        prompt.push_str(&c.name);
        prompt.push_str(": ");
        prompt.push_str(&c.appearance);
    }
    let first_frame = scene
        .first_frame
        .and_then(|i| Some((season.characters.get(i)?, images.get(i)?)));
    let payload = TaskPayload::Video {
        prompt,
        negative_prompt: scene.negative_prompt.clone(),
        duration_s: scene.duration_s,
        aspect_ratio: season.aspect_ratio.clone(),
        resolution: season.resolution.clone(),
        first_frame: first_frame.map(|(_, image)| image.id.clone()),
        seed: first_frame.map(|(c, _)| c.seed),
    };
    let deps = first_frame
        .map(|(_, image)| vec![dep_of(image)])
        .unwrap_or_default();
    let cost = first_account(&scene.video_chain, cfg)
        .map_or(0.0, |a| a.price.per_second * f64::from(scene.duration_s));
    task(
        season,
        Draft {
            group: episode,
            label: format!("{episode}/{}", scene.id),
            chain: scene.video_chain.clone(),
            payload,
            deps,
            ext: "mp4",
            est_cost_usd: cost,
        },
    )
}

fn voice_task(
    season: &Season,
    label: &str,
    episode: &str,
    speaker: &Character,
    text: &str,
    cfg: &Config,
) -> NewTask {
    let account = first_account(&season.voice_chain, cfg);
    let voice = speaker
        .voice
        .clone()
        .or_else(|| account.and_then(|a| a.voice.clone()))
        .unwrap_or_else(|| FALLBACK_VOICE.to_string());
    let chars = text.chars().count();
    let cost = account.map_or(0.0, |a| a.price.per_1k_chars * chars as f64 / 1000.0);
    let payload = TaskPayload::Voice {
        text: text.to_string(),
        voice,
        speaker: speaker.id.clone(),
    };
    task(
        season,
        Draft {
            group: episode,
            label: label.to_string(),
            chain: season.voice_chain.clone(),
            payload,
            deps: Vec::new(),
            ext: "wav",
            est_cost_usd: cost,
        },
    )
}

fn first_account<'c>(chain: &[String], cfg: &'c Config) -> Option<&'c AccountConfig> {
    chain.first().and_then(|name| cfg.account(name))
}

/// The edge to `t`, naming the account whose hash tag holds it when enqueued.
fn dep_of(t: &NewTask) -> DepRef {
    DepRef {
        id: t.id.clone(),
        account: t.chain.first().cloned().unwrap_or_default(),
    }
}

/// A task before its id is computed.
struct Draft<'a> {
    group: &'a str,
    label: String,
    chain: Vec<String>,
    payload: TaskPayload,
    deps: Vec<DepRef>,
    ext: &'static str,
    est_cost_usd: f64,
}

fn task(season: &Season, d: Draft<'_>) -> NewTask {
    let dep_ids: Vec<String> = d.deps.iter().map(|dep| dep.id.clone()).collect();
    let id = task_id(&IdInput {
        season: &season.id,
        group: d.group,
        label: &d.label,
        chain: &d.chain,
        payload: &d.payload,
        deps: &dep_ids,
    });
    NewTask {
        id,
        season: season.id.clone(),
        group: d.group.to_string(),
        label: d.label,
        chain: d.chain,
        payload: d.payload,
        deps: d.deps,
        ext: d.ext.to_string(),
        est_cost_usd: d.est_cost_usd,
    }
}
