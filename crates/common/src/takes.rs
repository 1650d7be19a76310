//! Takes and approval: a scene has numbered takes, one of them selected, some approved; an
//! episode's assembly is made of its scenes' selected takes.
//!
//! Take 1 of a scene is the video task the season script expands to. A re-roll creates take
//! `n + 1` as a new task: the same request with a seed derived from the scene and the take
//! number (and an optional note appended to the prompt). Its id is content-addressed like every
//! other id and covers the take number and the seed, so the same re-roll asked twice (a double
//! click carries the same take number) enqueues one task and pays once. Older takes and their
//! files are kept.
//!
//! An episode's assembly lists its scenes' *selected* takes: the one chosen explicitly, else the
//! newest. Its id covers them, so changing a selection creates exactly one new assembly task, of
//! that episode. With `review: scenes` in the script, an episode is only assembled once every
//! scene's selected take is approved.
//!
//! The state lives in one hash per season (`dq:{season:<s>}:takes`, see
//! [`crate::keys::SeasonKeys::takes`]). Decisions are made here, in Rust, and written with one
//! compare-and-set script (`takes_cas.lua`), so two people acting on one scene at once cannot
//! both win; the loser decides again on the new state. Re-enqueueing the script keeps every
//! scene whose take 1 is unchanged (its takes, selection and approvals) and starts afresh the
//! scenes that were edited. The web studio and the CLI (`dramaq reroll | takes | select |
//! approve`) both call this module.

use crate::ids::{self, IdInput};
use crate::keys::SeasonKeys;
use crate::model::{DepRef, NewTask, TaskKind, TaskPayload, TaskRecord, TaskState};
use crate::queue::{Queue, QueueError};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::LazyLock;

static CAS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/takes_cas.lua")));

/// How many times a decision is made again when another writer changed the same fields.
const CAS_ROUNDS: usize = 8;

/// Longest prompt note kept (characters); the rest is cut.
pub const MAX_NOTE_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum TakesError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state (a take number already used by another
    /// re-roll, a take not stored yet); reload and decide again.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("takes of {field} are unreadable: {source}")]
    Decode {
        field: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, TakesError>;

/// One take of a scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Take {
    pub n: u32,
    pub id: String,
    /// The account the task was created in (the season index says where it is now).
    pub account: String,
    /// Seed given to the provider (re-rolls only; take 1 renders as the script says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// Text appended to the prompt for this take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A scene's takes, selection and approvals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneTakes {
    /// `ep01/sc03`.
    pub scene: String,
    /// `ep01`.
    pub group: String,
    /// Take 1's task id: the script's scene. A re-enqueue with another id starts afresh.
    pub base: String,
    pub takes: Vec<Take>,
    /// The take chosen explicitly; `None`: the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved: Vec<u32>,
}

impl SceneTakes {
    fn fresh(t: &NewTask) -> SceneTakes {
        SceneTakes {
            scene: t.label.clone(),
            group: t.group.clone(),
            base: t.id.clone(),
            takes: vec![Take {
                n: 1,
                id: t.id.clone(),
                account: t.account().to_string(),
                seed: None,
                note: None,
            }],
            selected: None,
            approved: Vec::new(),
        }
    }

    pub fn newest(&self) -> u32 {
        self.takes.iter().map(|t| t.n).max().unwrap_or(1)
    }

    /// The take the episode's assembly uses.
    pub fn effective(&self) -> u32 {
        self.selected
            .filter(|n| self.take(*n).is_some())
            .unwrap_or_else(|| self.newest())
    }

    pub fn take(&self, n: u32) -> Option<&Take> {
        self.takes.iter().find(|t| t.n == n)
    }

    pub fn is_approved(&self) -> bool {
        self.approved.contains(&self.effective())
    }
}

/// A dependency of an episode's assembly as the script gave it: a scene (replaced by its
/// selected take) or anything else (a voice line), kept as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    pub id: String,
    pub account: String,
}

/// What an episode's assembly is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodePlan {
    pub group: String,
    /// Position in the script (episodes are listed in this order).
    pub order: u32,
    /// `review: scenes`: assemble only when every scene's selected take is approved.
    #[serde(default)]
    pub review: bool,
    pub label: String,
    pub chain: Vec<String>,
    pub ext: String,
    /// Scene labels in playback order.
    pub scenes: Vec<String>,
    /// The script's assembly payload; each scene's id is replaced by its selected take's.
    pub payload: TaskPayload,
    /// Dependencies in the script's order.
    pub deps: Vec<PlanDep>,
    /// Assembly id of the current selection; `None` while review holds it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Every assembly id this episode has had, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assemblies: Vec<String>,
}

/// A character sheet task of the season.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharacterRef {
    pub label: String,
    pub id: String,
    pub account: String,
}

/// Everything the takes hash holds for a season.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeasonTakes {
    /// In script order.
    pub episodes: Vec<EpisodePlan>,
    pub scenes: HashMap<String, SceneTakes>,
    pub characters: Vec<CharacterRef>,
}

/// A take with its task record, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct TakeView {
    #[serde(flatten)]
    pub take: Take,
    pub selected: bool,
    pub approved: bool,
    pub record: Option<TaskRecord>,
}

/// `dramaq takes` / the scene page.
#[derive(Debug, Clone, Serialize)]
pub struct SceneView {
    pub season: String,
    pub scene: String,
    pub group: String,
    pub selected: u32,
    pub explicit_selection: bool,
    pub review: bool,
    pub takes: Vec<TakeView>,
}

/// Where an episode's assembly stands after an action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AssemblyState {
    /// The assembly of the current selection exists (`new`: enqueued by this call).
    Queued { id: String, new: bool },
    /// `review: scenes` holds it back until these scenes' selected takes are approved.
    AwaitingApproval { scenes: Vec<String> },
}

#[derive(Debug, Clone, Serialize)]
pub struct RerollReport {
    pub season: String,
    pub scene: String,
    pub take: u32,
    pub id: String,
    pub seed: u32,
    /// False when this take existed already (the same re-roll asked again): nothing new to pay.
    pub new: bool,
    pub assembly: AssemblyState,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelectReport {
    pub season: String,
    pub scene: String,
    pub selected: u32,
    pub id: String,
    pub assembly: AssemblyState,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApproveReport {
    pub season: String,
    pub scene: String,
    pub take: u32,
    pub id: String,
    pub assembly: AssemblyState,
}

fn scene_field(label: &str) -> String {
    format!("scene:{label}")
}

fn episode_field(group: &str) -> String {
    format!("episode:{group}")
}

const CHARACTERS_FIELD: &str = "characters";

/// The seed of take `n` of the scene whose take 1 is `base`: the same for the same take, so a
/// repeated re-roll has the same id.
pub fn take_seed(base: &str, n: u32) -> u32 {
    let d = Sha256::digest(format!("{base}:take{n}").as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff
}

/// Control characters dropped, whitespace collapsed, cut at [`MAX_NOTE_CHARS`].
pub fn clean_note(note: &str) -> Option<String> {
    let words: Vec<&str> = note.split_whitespace().collect();
    let joined: String = words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NOTE_CHARS)
        .collect();
    (!joined.is_empty()).then_some(joined)
}

/// One field to compare and set: (field, value read, value to write).
type Change = (String, Option<String>, String);

/// Takes and approval of every season, over a [`Queue`].
#[derive(Clone)]
pub struct Takes {
    queue: Queue,
    max_attempts: u32,
}

impl Takes {
    pub fn new(queue: Queue, max_attempts: u32) -> Takes {
        Takes {
            queue,
            max_attempts,
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    async fn read(&self, season: &str, fields: &[String]) -> Result<Vec<Option<String>>> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.queue.redis().conn().await.map_err(QueueError::from)?;
        Ok(redis::cmd("HMGET")
            .arg(SeasonKeys::new(season).takes())
            .arg(fields)
            .query_async(&mut conn)
            .await?)
    }

    /// Write `changes` if every field still holds the value read; false when one changed.
    async fn cas(&self, season: &str, changes: &[Change]) -> Result<bool> {
        // Fields whose value stays are still compared: the decision was made from them.
        if changes
            .iter()
            .all(|(_, old, new)| old.as_deref() == Some(new.as_str()))
        {
            return Ok(true);
        }
        let mut inv = CAS.prepare_invoke();
        inv.key(SeasonKeys::new(season).takes());
        inv.arg(changes.len());
        for (field, old, new) in changes {
            inv.arg(field);
            inv.arg(match old {
                None => "-".to_string(),
                Some(v) => format!("={v}"),
            });
            if old.as_deref() == Some(new.as_str()) {
                inv.arg("?");
            } else {
                inv.arg(format!("={new}"));
            }
        }
        let mut conn = self.queue.redis().conn().await.map_err(QueueError::from)?;
        let at: i64 = inv.invoke_async(&mut conn).await?;
        Ok(at == 0)
    }

    /// Everything about a season's takes (one `HGETALL`).
    pub async fn season(&self, season: &str) -> Result<SeasonTakes> {
        let mut conn = self.queue.redis().conn().await.map_err(QueueError::from)?;
        let all: Vec<(String, String)> = conn.hgetall(SeasonKeys::new(season).takes()).await?;
        let mut out = SeasonTakes::default();
        for (field, value) in all {
            if let Some(label) = field.strip_prefix("scene:") {
                out.scenes
                    .insert(label.to_string(), decode(&field, Some(&value))?);
            } else if field.starts_with("episode:") {
                out.episodes.push(decode(&field, Some(&value))?);
            } else if field == CHARACTERS_FIELD {
                out.characters = decode(&field, Some(&value))?;
            }
        }
        out.episodes.sort_by_key(|e| e.order);
        Ok(out)
    }

    pub async fn scene(&self, season: &str, scene: &str) -> Result<SceneTakes> {
        let field = scene_field(scene);
        let raw = self.read(season, std::slice::from_ref(&field)).await?;
        match raw.into_iter().next().flatten() {
            Some(v) => decode(&field, Some(&v)),
            None => Err(missing("scene", season, scene)),
        }
    }

    pub async fn episode(&self, season: &str, group: &str) -> Result<EpisodePlan> {
        let field = episode_field(group);
        let raw = self.read(season, std::slice::from_ref(&field)).await?;
        match raw.into_iter().next().flatten() {
            Some(v) => decode(&field, Some(&v)),
            None => Err(missing("episode", season, group)),
        }
    }

    /// Register a script's scenes, episodes and characters before its tasks are enqueued, and
    /// return the tasks to enqueue: each episode's assembly made of the selected takes (scenes
    /// unchanged since the last enqueue keep theirs), left out while `review` holds it back.
    pub async fn prepare_enqueue(
        &self,
        season: &str,
        tasks: &[NewTask],
        review: bool,
    ) -> Result<Vec<NewTask>> {
        let scene_tasks: Vec<&NewTask> = tasks
            .iter()
            .filter(|t| t.kind() == TaskKind::Video)
            .collect();
        let by_id: HashMap<&str, &NewTask> =
            scene_tasks.iter().map(|t| (t.id.as_str(), *t)).collect();
        let assemblies: Vec<(usize, &NewTask)> = tasks
            .iter()
            .filter(|t| t.kind() == TaskKind::Assembly)
            .enumerate()
            .collect();
        let characters: Vec<CharacterRef> = tasks
            .iter()
            .filter(|t| t.kind() == TaskKind::Image)
            .map(|t| CharacterRef {
                label: t.label.clone(),
                id: t.id.clone(),
                account: t.account().to_string(),
            })
            .collect();
        let mut fields: Vec<String> = scene_tasks.iter().map(|t| scene_field(&t.label)).collect();
        fields.extend(assemblies.iter().map(|(_, a)| episode_field(&a.group)));
        fields.push(CHARACTERS_FIELD.to_string());

        for _ in 0..CAS_ROUNDS {
            let raw = self.read(season, &fields).await?;
            let mut changes: Vec<Change> = Vec::with_capacity(fields.len());
            let mut scenes: HashMap<String, SceneTakes> = HashMap::new();
            for (t, (field, old)) in scene_tasks.iter().zip(fields.iter().zip(&raw)) {
                let kept = match old {
                    Some(v) => Some(decode::<SceneTakes>(field, Some(v))?),
                    None => None,
                };
                let entry = match kept {
                    Some(e) if e.base == t.id => e,
                    _ => SceneTakes::fresh(t),
                };
                changes.push((field.clone(), old.clone(), encode(&entry)));
                scenes.insert(t.label.clone(), entry);
            }
            let accounts = self.placed(season, &scenes, &[]).await?;
            let mut out: Vec<NewTask> = tasks
                .iter()
                .filter(|t| t.kind() != TaskKind::Assembly)
                .cloned()
                .collect();
            for ((order, a), (field, old)) in assemblies.iter().zip(
                fields[scene_tasks.len()..]
                    .iter()
                    .zip(&raw[scene_tasks.len()..]),
            ) {
                let old_plan = match old {
                    Some(v) => Some(decode::<EpisodePlan>(field, Some(v))?),
                    None => None,
                };
                let mut plan = plan_of(a, &by_id, *order as u32, review)?;
                plan.assemblies = old_plan.map(|p| p.assemblies).unwrap_or_default();
                match build_assembly(season, &plan, &scenes, &accounts)? {
                    Built::Task(task) => {
                        plan.current = Some(task.id.clone());
                        if !plan.assemblies.contains(&task.id) {
                            plan.assemblies.push(task.id.clone());
                        }
                        out.push(*task);
                    }
                    Built::Awaiting(_) => plan.current = None,
                }
                changes.push((field.clone(), old.clone(), encode(&plan)));
            }
            let chars_old = raw.last().cloned().flatten();
            changes.push((CHARACTERS_FIELD.to_string(), chars_old, encode(&characters)));
            if self.cas(season, &changes).await? {
                return Ok(out);
            }
        }
        Err(contended(season))
    }

    /// Where each take and assembly dependency lives now (the season index), defaulting to the
    /// account it was created in.
    async fn placed(
        &self,
        season: &str,
        scenes: &HashMap<String, SceneTakes>,
        extra: &[&PlanDep],
    ) -> Result<HashMap<String, String>> {
        let mut ids: Vec<(String, String)> = scenes
            .values()
            .flat_map(|s| s.takes.iter().map(|t| (t.id.clone(), t.account.clone())))
            .collect();
        ids.extend(extra.iter().map(|d| (d.id.clone(), d.account.clone())));
        let mut out: HashMap<String, String> = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let mut conn = self.queue.redis().conn().await.map_err(QueueError::from)?;
        for chunk in ids.chunks(1024) {
            let names: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let at: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(SeasonKeys::new(season).index())
                .arg(&names)
                .query_async(&mut conn)
                .await?;
            for ((id, created), now) in chunk.iter().zip(at) {
                out.insert(id.clone(), now.unwrap_or_else(|| created.clone()));
            }
        }
        Ok(out)
    }

    async fn title(&self, season: &str) -> Result<String> {
        let mut conn = self.queue.redis().conn().await.map_err(QueueError::from)?;
        let title: Option<String> = conn.hget(SeasonKeys::new(season).meta(), "title").await?;
        Ok(title.unwrap_or_default())
    }

    async fn enqueue_one(&self, season: &str, task: &NewTask) -> Result<bool> {
        let title = self.title(season).await?;
        let report = self
            .queue
            .enqueue(
                season,
                &title,
                std::slice::from_ref(task),
                self.max_attempts,
                |_| {},
            )
            .await?;
        Ok(report.new > 0)
    }

    async fn record(&self, season: &str, id: &str, created_in: &str) -> Result<Option<TaskRecord>> {
        let account = self
            .queue
            .task_account(season, id)
            .await?
            .unwrap_or_else(|| created_in.to_string());
        Ok(self.queue.get_task(&account, id).await?)
    }

    /// A scene's takes with their records.
    pub async fn scene_view(&self, season: &str, scene: &str) -> Result<SceneView> {
        let entry = self.scene(season, scene).await?;
        let review = self
            .episode(season, &entry.group)
            .await
            .map(|p| p.review)
            .unwrap_or(false);
        let effective = entry.effective();
        let mut takes = Vec::with_capacity(entry.takes.len());
        for t in &entry.takes {
            takes.push(TakeView {
                take: t.clone(),
                selected: t.n == effective,
                approved: entry.approved.contains(&t.n),
                record: self.record(season, &t.id, &t.account).await?,
            });
        }
        Ok(SceneView {
            season: season.to_string(),
            scene: entry.scene.clone(),
            group: entry.group.clone(),
            selected: effective,
            explicit_selection: entry.selected.is_some(),
            review,
            takes,
        })
    }

    /// Create the next take of `scene`. `take` is the number the caller means to create (the
    /// page sends the one it showed): asking again for a take that exists with the same content
    /// changes nothing; a number another re-roll took first is a conflict. `None`: the next one.
    pub async fn reroll(
        &self,
        season: &str,
        scene: &str,
        take: Option<u32>,
        note: Option<&str>,
    ) -> Result<RerollReport> {
        let note = note.and_then(clean_note);
        for _ in 0..CAS_ROUNDS {
            let field = scene_field(scene);
            let old = self.read(season, std::slice::from_ref(&field)).await?;
            let old = old.into_iter().next().flatten();
            let mut entry: SceneTakes = match &old {
                Some(v) => decode(&field, Some(v))?,
                None => return Err(missing("scene", season, scene)),
            };
            let next = entry.newest() + 1;
            let n = take.unwrap_or(next);
            if n < 2 || n > next {
                return Err(TakesError::Conflict(format!(
                    "scene {} has takes 1..={}; take {n} cannot be created now (reload)",
                    crate::text::shown_default(scene),
                    entry.newest()
                )));
            }
            let base_take = entry.take(1).cloned().ok_or_else(|| {
                TakesError::NotFound(format!("scene {} has no take 1", entry.scene))
            })?;
            let base = self
                .record(season, &base_take.id, &base_take.account)
                .await?
                .ok_or_else(|| {
                    TakesError::NotFound(format!(
                        "take 1 of scene {} ({}) has no task record",
                        entry.scene, base_take.id
                    ))
                })?;
            let seed = take_seed(&entry.base, n);
            let task = take_task(&base, &entry.scene, n, seed, note.as_deref())?;
            if let Some(existing) = entry.take(n) {
                if existing.id == task.id {
                    // The same re-roll again: make sure its task exists (a crash may have come
                    // between registering and enqueueing), pay nothing new.
                    let created = self.enqueue_one(season, &task).await?;
                    let assembly = self.reassemble(season, &entry.group).await?;
                    return Ok(RerollReport {
                        season: season.to_string(),
                        scene: entry.scene,
                        take: n,
                        id: task.id,
                        seed,
                        new: created,
                        assembly,
                    });
                }
                return Err(TakesError::Conflict(format!(
                    "take {n} of scene {} was created by another re-roll (reload to see it)",
                    entry.scene
                )));
            }
            entry.takes.push(Take {
                n,
                id: task.id.clone(),
                account: task.account().to_string(),
                seed: Some(seed),
                note: note.clone(),
            });
            // A re-roll is asked for because the current take is not good enough: the new one
            // becomes the selection.
            entry.selected = None;
            if !self
                .cas(season, &[(field.clone(), old.clone(), encode(&entry))])
                .await?
            {
                continue;
            }
            let new = self.enqueue_one(season, &task).await?;
            let assembly = self.reassemble(season, &entry.group).await?;
            return Ok(RerollReport {
                season: season.to_string(),
                scene: entry.scene,
                take: n,
                id: task.id,
                seed,
                new,
                assembly,
            });
        }
        Err(contended(season))
    }

    /// Choose take `n` of `scene` for its episode's assembly (re-assembles that episode).
    pub async fn select(&self, season: &str, scene: &str, n: u32) -> Result<SelectReport> {
        let entry = self
            .update_scene(season, scene, |e| {
                if e.take(n).is_none() {
                    return Err(TakesError::NotFound(format!(
                        "scene {} has no take {n} (takes 1..={})",
                        e.scene,
                        e.newest()
                    )));
                }
                e.selected = Some(n);
                Ok(())
            })
            .await?;
        let assembly = self.reassemble(season, &entry.group).await?;
        let id = entry.take(n).map(|t| t.id.clone()).unwrap_or_default();
        Ok(SelectReport {
            season: season.to_string(),
            scene: entry.scene,
            selected: n,
            id,
            assembly,
        })
    }

    /// Approve take `n` (default: the selected one) of `scene`, selecting it. Only a stored take
    /// can be approved: approval means someone watched it.
    pub async fn approve(
        &self,
        season: &str,
        scene: &str,
        n: Option<u32>,
    ) -> Result<ApproveReport> {
        let current = self.scene(season, scene).await?;
        let n = n.unwrap_or_else(|| current.effective());
        let take = current.take(n).cloned().ok_or_else(|| {
            TakesError::NotFound(format!("scene {} has no take {n}", current.scene))
        })?;
        let state = self
            .record(season, &take.id, &take.account)
            .await?
            .map(|r| r.state);
        if state != Some(TaskState::Stored) {
            return Err(TakesError::Conflict(format!(
                "take {n} of scene {} is {}, not stored: only a rendered take can be approved",
                current.scene,
                state.map_or("missing", |s| s.as_str())
            )));
        }
        let entry = self
            .update_scene(season, scene, |e| {
                if e.take(n).is_none() {
                    return Err(TakesError::NotFound(format!(
                        "scene {} has no take {n}",
                        e.scene
                    )));
                }
                if e.effective() != n {
                    e.selected = Some(n);
                }
                if !e.approved.contains(&n) {
                    e.approved.push(n);
                    e.approved.sort_unstable();
                }
                Ok(())
            })
            .await?;
        let assembly = self.reassemble(season, &entry.group).await?;
        Ok(ApproveReport {
            season: season.to_string(),
            scene: entry.scene,
            take: n,
            id: take.id,
            assembly,
        })
    }

    async fn update_scene(
        &self,
        season: &str,
        scene: &str,
        mut change: impl FnMut(&mut SceneTakes) -> Result<()>,
    ) -> Result<SceneTakes> {
        let field = scene_field(scene);
        for _ in 0..CAS_ROUNDS {
            let old = self.read(season, std::slice::from_ref(&field)).await?;
            let old = old.into_iter().next().flatten();
            let Some(raw) = &old else {
                return Err(missing("scene", season, scene));
            };
            let mut entry: SceneTakes = decode(&field, Some(raw))?;
            change(&mut entry)?;
            if self
                .cas(season, &[(field.clone(), old.clone(), encode(&entry))])
                .await?
            {
                return Ok(entry);
            }
        }
        Err(contended(season))
    }

    /// Make the episode's assembly match its scenes' selected takes: enqueue it when it does not
    /// exist (idempotent), or report which approvals `review: scenes` still waits for. A dead
    /// assembly of the current selection is left for `dlq requeue` (the page offers it).
    pub async fn reassemble(&self, season: &str, group: &str) -> Result<AssemblyState> {
        let field = episode_field(group);
        for _ in 0..CAS_ROUNDS {
            let old = self.read(season, std::slice::from_ref(&field)).await?;
            let old = old.into_iter().next().flatten();
            let Some(raw) = &old else {
                return Err(missing("episode", season, group));
            };
            let mut plan: EpisodePlan = decode(&field, Some(raw))?;
            let scene_fields: Vec<String> = plan.scenes.iter().map(|s| scene_field(s)).collect();
            let raws = self.read(season, &scene_fields).await?;
            let mut scenes = HashMap::new();
            for (f, r) in scene_fields.iter().zip(&raws) {
                let e: SceneTakes = decode(f, r.as_deref())?;
                scenes.insert(e.scene.clone(), e);
            }
            let voice: Vec<&PlanDep> = plan.deps.iter().filter(|d| d.scene.is_none()).collect();
            let accounts = self.placed(season, &scenes, &voice).await?;
            let state = match build_assembly(season, &plan, &scenes, &accounts)? {
                Built::Task(task) => {
                    let new = self.enqueue_one(season, &task).await?;
                    plan.current = Some(task.id.clone());
                    if !plan.assemblies.contains(&task.id) {
                        plan.assemblies.push(task.id.clone());
                    }
                    AssemblyState::Queued { id: task.id, new }
                }
                Built::Awaiting(scenes) => {
                    plan.current = None;
                    AssemblyState::AwaitingApproval { scenes }
                }
            };
            // The scenes the decision was made from are compared too: a selection changed
            // meanwhile means deciding again.
            let mut changes: Vec<Change> = vec![(field.clone(), old.clone(), encode(&plan))];
            for (f, r) in scene_fields.iter().zip(raws) {
                if let Some(v) = r {
                    changes.push((f.clone(), Some(v.clone()), v));
                }
            }
            if self.cas(season, &changes).await? {
                return Ok(state);
            }
        }
        Err(contended(season))
    }
}

/// `season S has no scene|episode X`, both escaped.
fn missing(what: &str, season: &str, name: &str) -> TakesError {
    TakesError::NotFound(format!(
        "season {} has no {what} {}",
        crate::text::shown_default(season),
        crate::text::shown_default(name)
    ))
}

fn contended(season: &str) -> TakesError {
    TakesError::Conflict(format!(
        "takes of season {} changed {CAS_ROUNDS} times while deciding; try again",
        crate::text::shown_default(season)
    ))
}

fn decode<T: for<'de> Deserialize<'de>>(field: &str, raw: Option<&str>) -> Result<T> {
    let raw = raw.ok_or_else(|| TakesError::NotFound(format!("no takes entry {field}")))?;
    serde_json::from_str(raw).map_err(|source| TakesError::Decode {
        field: field.to_string(),
        source,
    })
}

fn encode<T: Serialize>(v: &T) -> String {
    // Plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// The plan of the assembly task `a` as the script expanded it.
fn plan_of(
    a: &NewTask,
    scenes_by_id: &HashMap<&str, &NewTask>,
    order: u32,
    review: bool,
) -> Result<EpisodePlan> {
    let TaskPayload::Assembly { scenes, .. } = &a.payload else {
        return Err(TakesError::Invalid(format!(
            "{} is not an assembly",
            a.label
        )));
    };
    let label_of = |id: &str| scenes_by_id.get(id).map(|t| t.label.clone());
    let scene_labels = scenes
        .iter()
        .map(|id| {
            label_of(id).ok_or_else(|| {
                TakesError::Invalid(format!("assembly {} lists unknown scene {id}", a.label))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EpisodePlan {
        group: a.group.clone(),
        order,
        review,
        label: a.label.clone(),
        chain: a.chain.clone(),
        ext: a.ext.clone(),
        scenes: scene_labels,
        payload: a.payload.clone(),
        deps: a
            .deps
            .iter()
            .map(|d| PlanDep {
                scene: label_of(&d.id),
                id: d.id.clone(),
                account: d.account.clone(),
            })
            .collect(),
        current: None,
        assemblies: Vec::new(),
    })
}

enum Built {
    Task(Box<NewTask>),
    Awaiting(Vec<String>),
}

/// The assembly task of `plan` with each scene's selected take, or the scenes review waits for.
fn build_assembly(
    season: &str,
    plan: &EpisodePlan,
    scenes: &HashMap<String, SceneTakes>,
    accounts: &HashMap<String, String>,
) -> Result<Built> {
    let selected = |label: &str| -> Result<(&SceneTakes, &Take)> {
        let s = scenes.get(label).ok_or_else(|| {
            TakesError::NotFound(format!(
                "episode {} lists unknown scene {label}",
                plan.group
            ))
        })?;
        let t = s
            .take(s.effective())
            .ok_or_else(|| TakesError::NotFound(format!("scene {label} has no takes")))?;
        Ok((s, t))
    };
    if plan.review {
        let mut waiting = Vec::new();
        for label in &plan.scenes {
            let (s, _) = selected(label)?;
            if !s.is_approved() {
                waiting.push(label.clone());
            }
        }
        if !waiting.is_empty() {
            return Ok(Built::Awaiting(waiting));
        }
    }
    let scene_ids = plan
        .scenes
        .iter()
        .map(|l| selected(l).map(|(_, t)| t.id.clone()))
        .collect::<Result<Vec<_>>>()?;
    let deps = plan
        .deps
        .iter()
        .map(|d| {
            let id = match &d.scene {
                Some(label) => selected(label)?.1.id.clone(),
                None => d.id.clone(),
            };
            let account = accounts
                .get(&id)
                .cloned()
                .unwrap_or_else(|| d.account.clone());
            Ok(DepRef { id, account })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut payload = plan.payload.clone();
    if let TaskPayload::Assembly { scenes, .. } = &mut payload {
        *scenes = scene_ids;
    }
    let dep_ids: Vec<String> = deps.iter().map(|d| d.id.clone()).collect();
    let id = ids::task_id(&IdInput {
        season,
        group: &plan.group,
        label: &plan.label,
        chain: &plan.chain,
        payload: &payload,
        deps: &dep_ids,
    });
    Ok(Built::Task(Box::new(NewTask {
        id,
        season: season.to_string(),
        group: plan.group.clone(),
        label: plan.label.clone(),
        chain: plan.chain.clone(),
        payload,
        deps,
        ext: plan.ext.clone(),
        est_cost_usd: 0.0,
    })))
}

/// Take `n` of the scene whose take 1 is `base`: the same request with `seed` and the note.
fn take_task(
    base: &TaskRecord,
    scene: &str,
    n: u32,
    seed: u32,
    note: Option<&str>,
) -> Result<NewTask> {
    let TaskPayload::Video {
        prompt,
        negative_prompt,
        duration_s,
        aspect_ratio,
        resolution,
        first_frame,
        ..
    } = &base.payload
    else {
        return Err(TakesError::Invalid(format!(
            "{} is not a scene video",
            base.label
        )));
    };
    let prompt = match note {
        Some(note) => format!("{prompt} {note}"),
        None => prompt.clone(),
    };
    let payload = TaskPayload::Video {
        prompt,
        negative_prompt: negative_prompt.clone(),
        duration_s: *duration_s,
        aspect_ratio: aspect_ratio.clone(),
        resolution: resolution.clone(),
        first_frame: first_frame.clone(),
        seed: Some(seed),
    };
    let label = format!("{scene}/take{n}");
    let chain = if base.chain.is_empty() {
        vec![base.account.clone()]
    } else {
        base.chain.clone()
    };
    let dep_ids: Vec<String> = base.deps.iter().map(|d| d.id.clone()).collect();
    let id = ids::task_id(&IdInput {
        season: &base.season,
        group: &base.group,
        label: &label,
        chain: &chain,
        payload: &payload,
        deps: &dep_ids,
    });
    Ok(NewTask {
        id,
        season: base.season.clone(),
        group: base.group.clone(),
        label,
        chain,
        payload,
        deps: base.deps.clone(),
        ext: base.ext.clone(),
        est_cost_usd: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_stable_per_take_and_differ_between_takes() {
        assert_eq!(take_seed("vid-1", 2), take_seed("vid-1", 2));
        assert_ne!(take_seed("vid-1", 2), take_seed("vid-1", 3));
        assert_ne!(take_seed("vid-1", 2), take_seed("vid-2", 2));
        assert!(take_seed("vid-1", 2) < 1 << 31);
    }

    #[test]
    fn notes_are_cleaned_and_capped() {
        assert_eq!(
            clean_note("  warmer\n\tlight \u{1b}[31m "),
            Some("warmer light [31m".into())
        );
        assert_eq!(clean_note(" \n "), None);
        assert_eq!(
            clean_note(&"x".repeat(900)).map(|s| s.len()),
            Some(MAX_NOTE_CHARS)
        );
    }
}
