//! The documents behind the pages: each is what its `/api/` route answers as JSON and what its
//! page renders as HTML, so the two can never disagree.
//!
//! Reads are sized for a real season: the season page reads the takes hash (one `HGETALL`), the
//! state counters and the records of the episodes on the requested page only (one `HMGET` of
//! the season index and one `MGET` per account), never the whole season.

use crate::Studio;
use dramaq_common::model::{AttemptError, TaskPayload, TaskRecord, TaskState};
use dramaq_common::ops::{AccountStatus, DeadFilter, DeadList, WorkerList};
use dramaq_common::takes::{
    AssemblyState, CharacterRef, EpisodePlan, SceneTakes, SceneView, SeasonTakes,
};
use dramaq_common::TaskKind;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Episodes shown with their scene cards per page of the season page.
pub const EPISODES_PER_PAGE: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
}

impl From<dramaq_common::takes::TakesError> for ViewError {
    fn from(e: dramaq_common::takes::TakesError) -> Self {
        use dramaq_common::takes::TakesError as T;
        match e {
            T::NotFound(m) => ViewError::NotFound(m),
            T::Conflict(m) => ViewError::Conflict(m),
            T::Invalid(m) => ViewError::Invalid(m),
            other => ViewError::Internal(other.to_string()),
        }
    }
}

impl From<dramaq_common::queue::QueueError> for ViewError {
    fn from(e: dramaq_common::queue::QueueError) -> Self {
        ViewError::Internal(e.to_string())
    }
}

impl From<dramaq_common::ops::OpsError> for ViewError {
    fn from(e: dramaq_common::ops::OpsError) -> Self {
        ViewError::Invalid(e.to_string())
    }
}

impl From<redis::RedisError> for ViewError {
    fn from(e: redis::RedisError) -> Self {
        ViewError::Internal(format!("Redis: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, ViewError>;

/// A task as a card shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskCard {
    pub id: String,
    pub label: String,
    pub state: TaskState,
    pub account: String,
    pub cost_usd: f64,
    /// `/media/<season>/<id>` once stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// A poster image URL when the record has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl TaskCard {
    pub fn of(studio: &Studio, r: &TaskRecord) -> TaskCard {
        let stored = r.state == TaskState::Stored && r.output.is_some();
        TaskCard {
            id: r.id.clone(),
            label: r.label.clone(),
            state: r.state,
            account: r.account.clone(),
            cost_usd: studio
                .cfg
                .accounts
                .get(&r.account)
                .map_or(0.0, |a| a.price_usd(&r.payload)),
            media: stored.then(|| format!("/media/{}/{}", r.season, r.id)),
            poster: crate::media::poster_location(&studio.cfg, r)
                .map(|_| format!("/media/{}/{}/poster", r.season, r.id)),
            failure: r.failure.map(|f| f.as_str().to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SceneCard {
    pub scene: String,
    pub takes: u32,
    pub selected: u32,
    pub approved: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskCard>,
}

impl SceneCard {
    fn of(studio: &Studio, s: &SceneTakes, recs: &HashMap<String, TaskRecord>) -> SceneCard {
        SceneCard {
            scene: s.scene.clone(),
            takes: s.takes.len() as u32,
            selected: s.effective(),
            approved: s.is_approved(),
            task: s
                .take(s.effective())
                .and_then(|t| recs.get(&t.id))
                .map(|r| TaskCard::of(studio, r)),
        }
    }
}

/// (id, account created in) of the selected take of each of `plan`'s scenes.
fn selected_takes(plan: &EpisodePlan, takes: &SeasonTakes) -> Vec<(String, String)> {
    plan.scenes
        .iter()
        .filter_map(|label| takes.scenes.get(label))
        .filter_map(|s| s.take(s.effective()))
        .map(|t| (t.id.clone(), t.account.clone()))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodeRow {
    pub group: String,
    pub scenes: usize,
    pub approved: usize,
    pub review: bool,
    /// Assembly id of the current selection; `null` while review holds it back.
    pub assembly: Option<String>,
    /// Which page of the season page shows this episode's cards.
    pub page: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodeCards {
    pub group: String,
    pub review: bool,
    pub assembly: Option<TaskCard>,
    pub scenes: Vec<SceneCard>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeasonPage {
    pub season: String,
    pub title: String,
    pub total: u64,
    pub states: BTreeMap<TaskState, u64>,
    pub page: usize,
    pub pages: usize,
    pub episodes: Vec<EpisodeRow>,
    pub shown: Vec<EpisodeCards>,
    pub characters: Vec<TaskCard>,
}

/// The records of `ids` (id, account it was created in), wherever the season index places
/// them now: one `HMGET` and one `MGET` per account.
pub async fn records(
    studio: &Studio,
    season: &str,
    ids: &[(String, String)],
) -> Result<HashMap<String, TaskRecord>> {
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let mut conn = studio
        .queue
        .redis()
        .conn()
        .await
        .map_err(|e| ViewError::Internal(e.to_string()))?;
    let names: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    let placed: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(dramaq_common::keys::SeasonKeys::new(season).index())
        .arg(&names)
        .query_async(&mut conn)
        .await?;
    drop(conn);
    let mut by_account: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((id, created), now) in ids.iter().zip(placed) {
        by_account
            .entry(now.unwrap_or_else(|| created.clone()))
            .or_default()
            .push(id.clone());
    }
    for (account, ids) in by_account {
        for (id, rec) in ids
            .iter()
            .zip(studio.queue.get_tasks(&account, &ids).await?)
        {
            if let Ok(Some(r)) = rec {
                out.insert(id.clone(), r);
            }
        }
    }
    Ok(out)
}

async fn season_takes(studio: &Studio, season: &str) -> Result<SeasonTakes> {
    let t = studio.takes.season(season).await?;
    if t.episodes.is_empty() && t.scenes.is_empty() {
        return Err(ViewError::NotFound(format!(
            "no season {} (or it was enqueued before takes were recorded: enqueue its script again)",
            dramaq_common::text::shown_default(season)
        )));
    }
    Ok(t)
}

pub async fn season_page(studio: &Studio, season: &str, page: usize) -> Result<SeasonPage> {
    let takes = season_takes(studio, season).await?;
    let states = studio.queue.season_counts(season).await?;
    let title = season_title(studio, season).await?;
    let pages = takes.episodes.len().div_ceil(EPISODES_PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    let shown_plans: Vec<&EpisodePlan> = takes
        .episodes
        .iter()
        .skip((page - 1) * EPISODES_PER_PAGE)
        .take(EPISODES_PER_PAGE)
        .collect();
    let mut wanted: Vec<(String, String)> = Vec::new();
    for plan in &shown_plans {
        wanted.extend(selected_takes(plan, &takes));
        if let Some(a) = &plan.current {
            wanted.push((a.clone(), plan.chain.first().cloned().unwrap_or_default()));
        }
    }
    wanted.extend(
        takes
            .characters
            .iter()
            .map(|c| (c.id.clone(), c.account.clone())),
    );
    let recs = records(studio, season, &wanted).await?;
    let shown = shown_plans
        .iter()
        .map(|plan| EpisodeCards {
            group: plan.group.clone(),
            review: plan.review,
            assembly: plan
                .current
                .as_ref()
                .and_then(|a| recs.get(a))
                .map(|r| TaskCard::of(studio, r)),
            scenes: plan
                .scenes
                .iter()
                .filter_map(|label| takes.scenes.get(label))
                .map(|s| SceneCard::of(studio, s, &recs))
                .collect(),
        })
        .collect();
    let episodes = takes
        .episodes
        .iter()
        .enumerate()
        .map(|(i, plan)| EpisodeRow {
            group: plan.group.clone(),
            scenes: plan.scenes.len(),
            approved: plan
                .scenes
                .iter()
                .filter(|l| takes.scenes.get(*l).is_some_and(|s| s.is_approved()))
                .count(),
            review: plan.review,
            assembly: plan.current.clone(),
            page: i / EPISODES_PER_PAGE + 1,
        })
        .collect();
    let characters = character_cards(studio, &takes.characters, &recs);
    Ok(SeasonPage {
        season: season.to_string(),
        title,
        total: states.values().sum(),
        states,
        page,
        pages,
        episodes,
        shown,
        characters,
    })
}

fn character_cards(
    studio: &Studio,
    chars: &[CharacterRef],
    recs: &HashMap<String, TaskRecord>,
) -> Vec<TaskCard> {
    chars
        .iter()
        .filter_map(|c| recs.get(&c.id))
        .map(|r| TaskCard::of(studio, r))
        .collect()
}

pub async fn season_title(studio: &Studio, season: &str) -> Result<String> {
    let mut conn = studio
        .queue
        .redis()
        .conn()
        .await
        .map_err(|e| ViewError::Internal(e.to_string()))?;
    let title: Option<String> = redis::cmd("HGET")
        .arg(dramaq_common::keys::SeasonKeys::new(season).meta())
        .arg("title")
        .query_async(&mut conn)
        .await?;
    Ok(title.unwrap_or_default())
}

/// A voice line of a scene, with its player.
#[derive(Debug, Clone, Serialize)]
pub struct VoiceLine {
    pub speaker: String,
    pub text: String,
    pub task: TaskCard,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenePage {
    #[serde(flatten)]
    pub view: SceneView,
    pub prompt: String,
    pub selected_task: Option<TaskCard>,
    /// The takes' cards (cost, media), in take order.
    pub take_cards: Vec<TaskCard>,
    pub voice: Vec<VoiceLine>,
    pub errors: Vec<AttemptError>,
    /// Accounts a dead take may be moved to (same kind, configured).
    pub move_targets: Vec<String>,
    pub next_take: u32,
}

pub async fn scene_page(studio: &Studio, season: &str, scene: &str) -> Result<ScenePage> {
    let view = studio.takes.scene_view(season, scene).await?;
    let take_cards: Vec<TaskCard> = view
        .takes
        .iter()
        .filter_map(|t| t.record.as_ref())
        .map(|r| TaskCard::of(studio, r))
        .collect();
    let selected = view
        .takes
        .iter()
        .find(|t| t.selected)
        .and_then(|t| t.record.clone());
    let prompt = match selected.as_ref().map(|r| &r.payload) {
        Some(TaskPayload::Video { prompt, .. }) => prompt.clone(),
        _ => String::new(),
    };
    let errors = selected
        .as_ref()
        .map(|r| r.errors.clone())
        .unwrap_or_default();
    let plan = studio.takes.episode(season, &view.group).await.ok();
    let voice = match plan {
        Some(plan) => voice_lines(studio, season, &plan, scene).await?,
        None => Vec::new(),
    };
    let move_targets = studio
        .cfg
        .accounts
        .iter()
        .filter(|(_, a)| a.family.kinds().contains(&TaskKind::Video))
        .map(|(n, _)| n.clone())
        .collect();
    Ok(ScenePage {
        next_take: view.takes.iter().map(|t| t.take.n).max().unwrap_or(1) + 1,
        prompt,
        selected_task: selected.as_ref().map(|r| TaskCard::of(studio, r)),
        take_cards,
        voice,
        errors,
        move_targets,
        view,
    })
}

async fn voice_lines(
    studio: &Studio,
    season: &str,
    plan: &EpisodePlan,
    scene: &str,
) -> Result<Vec<VoiceLine>> {
    let prefix = format!("{scene}/line");
    let ids: Vec<(String, String)> = plan
        .deps
        .iter()
        .filter(|d| d.scene.is_none())
        .map(|d| (d.id.clone(), d.account.clone()))
        .collect();
    let recs = records(studio, season, &ids).await?;
    let mut lines: Vec<&TaskRecord> = recs
        .values()
        .filter(|r| r.label.starts_with(&prefix))
        .collect();
    lines.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(lines
        .into_iter()
        .map(|r| {
            let (speaker, text) = match &r.payload {
                TaskPayload::Voice { speaker, text, .. } => (speaker.clone(), text.clone()),
                _ => (String::new(), String::new()),
            };
            VoiceLine {
                speaker,
                text,
                task: TaskCard::of(studio, r),
            }
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodePage {
    pub season: String,
    pub group: String,
    pub review: bool,
    pub assembly: AssemblyState,
    /// State of the current selection's assembly task (`null` while review holds it back).
    pub assembly_state: Option<TaskState>,
    /// The master to watch: the current assembly once stored, else the newest stored one.
    pub master: Option<TaskCard>,
    /// WebVTT subtitles of the master, when its record has them.
    pub subtitles: Option<String>,
    /// Contact sheet image, when the record has one.
    pub contact_sheet: Option<String>,
    pub scenes: Vec<SceneCard>,
    /// Every assembly this episode has had, newest first.
    pub history: Vec<TaskCard>,
}

pub async fn episode_page(studio: &Studio, season: &str, group: &str) -> Result<EpisodePage> {
    let plan = studio.takes.episode(season, group).await?;
    let takes = season_takes(studio, season).await?;
    let account = plan.chain.first().cloned().unwrap_or_default();
    let mut wanted: Vec<(String, String)> = plan
        .assemblies
        .iter()
        .map(|a| (a.clone(), account.clone()))
        .collect();
    wanted.extend(selected_takes(&plan, &takes));
    let recs = records(studio, season, &wanted).await?;
    // The master of the current selection once stored; until then the newest stored one, so
    // the episode can be watched while it is re-assembled.
    let stored = |id: &String| recs.get(id).filter(|r| r.state == TaskState::Stored);
    let master_rec = plan
        .current
        .as_ref()
        .and_then(stored)
        .or_else(|| plan.assemblies.iter().rev().find_map(stored))
        .or_else(|| plan.current.as_ref().and_then(|a| recs.get(a)));
    let scenes: Vec<SceneCard> = plan
        .scenes
        .iter()
        .filter_map(|l| takes.scenes.get(l))
        .map(|s| SceneCard::of(studio, s, &recs))
        .collect();
    let assembly = match &plan.current {
        Some(id) => AssemblyState::Queued {
            id: id.clone(),
            new: false,
        },
        None => AssemblyState::AwaitingApproval {
            scenes: scenes
                .iter()
                .filter(|s| !s.approved)
                .map(|s| s.scene.clone())
                .collect(),
        },
    };
    Ok(EpisodePage {
        season: season.to_string(),
        group: group.to_string(),
        review: plan.review,
        assembly,
        assembly_state: plan
            .current
            .as_ref()
            .and_then(|a| recs.get(a))
            .map(|r| r.state),
        master: master_rec.map(|r| TaskCard::of(studio, r)),
        subtitles: master_rec
            .and_then(|r| crate::media::subtitles_location(&studio.cfg, r))
            .map(|_| {
                format!(
                    "/media/{season}/{}/subtitles",
                    master_rec.map_or("", |r| &r.id)
                )
            }),
        contact_sheet: master_rec
            .and_then(|r| crate::media::contact_sheet_location(&studio.cfg, r))
            .map(|_| {
                format!(
                    "/media/{season}/{}/contact",
                    master_rec.map_or("", |r| &r.id)
                )
            }),
        scenes,
        history: plan
            .assemblies
            .iter()
            .rev()
            .filter_map(|a| recs.get(a))
            .map(|r| TaskCard::of(studio, r))
            .collect(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadPage {
    pub filter: DeadFilter,
    #[serde(flatten)]
    pub list: DeadList,
    pub classes: Vec<String>,
    pub accounts: Vec<String>,
}

pub async fn dead_page(studio: &Studio, filter: DeadFilter) -> Result<DeadPage> {
    let list = studio.ops.dead_tasks(&filter).await?;
    Ok(DeadPage {
        filter,
        list,
        classes: dramaq_common::FailureClass::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        accounts: studio.cfg.accounts.keys().cloned().collect(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountRow {
    #[serde(flatten)]
    pub status: AccountStatus,
    /// Renders holding a concurrency slot now.
    pub slots_in_use: u64,
    pub max_concurrent: Option<u32>,
    pub submit_per_sec: Option<f64>,
    /// Submits today (UTC) and the daily cap.
    pub today: u64,
    pub daily_cap: Option<u64>,
    /// Milliseconds of cool-down left after a 429, if any.
    pub cooldown_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountsPage {
    pub accounts: Vec<AccountRow>,
    pub workers: WorkerList,
}

pub async fn accounts_page(studio: &Studio) -> Result<AccountsPage> {
    let configured: Vec<String> = studio.cfg.accounts.keys().cloned().collect();
    let status = studio.ops.queue_status(&configured).await?;
    let mut conn = studio
        .queue
        .redis()
        .conn()
        .await
        .map_err(|e| ViewError::Internal(e.to_string()))?;
    let now_ms = dramaq_common::queue::redis_time_ms(&mut conn).await?;
    let day = now_ms / 86_400_000;
    let mut accounts = Vec::with_capacity(status.accounts.len());
    for s in status.accounts {
        let k = dramaq_common::keys::AccountKeys::new(&s.account);
        let slots: u64 = redis::cmd("ZCOUNT")
            .arg(k.slots())
            .arg(now_ms)
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        let today: Option<u64> = redis::cmd("HGET")
            .arg(k.daily())
            .arg(day)
            .query_async(&mut conn)
            .await?;
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k.cooldown())
            .query_async(&mut conn)
            .await?;
        let quota = studio.cfg.accounts.get(&s.account).map(|a| &a.quota);
        accounts.push(AccountRow {
            slots_in_use: slots,
            max_concurrent: quota.map(|q| q.max_concurrent).filter(|v| *v > 0),
            submit_per_sec: quota.map(|q| q.submit_per_sec).filter(|v| *v > 0.0),
            today: today.unwrap_or(0),
            daily_cap: quota.map(|q| q.daily_cap).filter(|v| *v > 0),
            cooldown_ms: (ttl > 0).then_some(ttl),
            status: s,
        });
    }
    drop(conn);
    Ok(AccountsPage {
        accounts,
        workers: studio.ops.workers().await?,
    })
}
