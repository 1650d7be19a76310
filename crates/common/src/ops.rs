//! Operator actions on the queue: the dead-letter queue (list, show, requeue, purge), pausing and
//! draining an account's intake, per-account status and the worker registry.
//!
//! These are rare, operator-driven actions, so they favour safety over speed: every change to a
//! task is a guarded Lua script (`scripts/ops_*.lua`, prepended with `prelude.lua`) that acts only
//! while the task is still `dead`, so two operators at once never requeue or purge a task twice.
//! Listings never scan the keyspace: they page through each account's dead-letter ZSET and read
//! the records with one pipelined `GET` per page.
//!
//! # Moving a task to another account
//!
//! A move (a provider fallback recorded by `fail.lua` or `reap_lease.lua`, or `dlq requeue` with
//! a target account) crosses hash tags, so it is a sequence of idempotent steps, each one script
//! (or plain idempotent commands) on a single tag:
//!
//! 0. **reserve** (operator moves only, `ops_move_reserve.lua`, source tag): the dead task
//!    becomes `moving` with `moving_to = <target>`, leaves the dead-letter set and enters the
//!    account's moves outbox. A fallback gets the same state from the script that fails it.
//! 1. **create** (`ops_move_in.lua`, target tag): the record is written under the target account
//!    (`account`, `chain`, `chain_pos` name the target; attempts, failure, stalls, duplicate flag
//!    and provider fields reset; error history kept) as `ready` with one new stream entry, and the
//!    task's dependents set is copied. Does nothing but refresh the dependents set when the record
//!    already exists there, so a re-run never adds a second stream entry.
//! 2. **index**: the season index field `id → target`, the target added to the season's and the
//!    fleet's account sets.
//! 3. **retarget**: every dependent's `deps` entry for the task is pointed at the target
//!    (`ops_retarget_dep.lua`; workers read a dependency's output through that entry), and every
//!    dependency's dependents set renames `source|id` to `target|id` (`ops_rename_member.lua`).
//! 4. **remove** (`ops_move_out.lua`, source tag): the source copy is deleted (record, its
//!    deps/dependents sets, `moving` counter) with its outbox entry, only while it is still
//!    `moving` to this target.
//!
//! A crash between any two steps leaves the source copy `moving` in the outbox, live in at most
//! one place (the source copy cannot run; the target copy is the only one that can), and
//! [`Ops::finish_moving`] (the worker right away, else the reaper's moves duty) repeats the
//! steps and finishes the move. In-place requeue and purge leave a moving task alone; a requeue
//! that matches it finishes its move. A dead record marked `moving_to` by an older version is
//! taken over by step 0 with its target kept.
//!
//! `enqueue` respects a move: a task the season index already places in another account is not
//! created again in its chain's first account.

use crate::config::Config;
use crate::keys::{fleet, AccountKeys, SeasonKeys, GROUP};
use crate::model::{AttemptError, FailureClass, TaskKind, TaskRecord, TaskState};
use crate::queue::{redis_time_ms, Queue, QueueError};
use crate::redis_conn::{Conn, ConnError};
use redis::Script;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;

/// Dead-set members read per `ZRANGEBYSCORE` page (and records per pipelined `GET`).
pub const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("unknown failure class '{given}'; valid classes: {valid}")]
    UnknownClass { given: String, valid: String },
    #[error("unknown account '{given}'; configured accounts: {known}")]
    UnknownAccount { given: String, known: String },
    #[error(
        "cannot move task {id} ({label}, a {kind} task) to account '{account}': its family \
         '{family}' produces only {produces}"
    )]
    WrongKind {
        id: String,
        label: String,
        kind: TaskKind,
        account: String,
        family: String,
        produces: String,
    },
    #[error("task {id} not found{scope}")]
    NotFound { id: String, scope: String },
    #[error("unexpected reply from {script}: {detail}")]
    Reply {
        script: &'static str,
        detail: String,
    },
    /// A value could not be encoded for Redis; nothing was written.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl From<redis::RedisError> for OpsError {
    fn from(e: redis::RedisError) -> Self {
        OpsError::Queue(QueueError::Redis(e))
    }
}

impl From<ConnError> for OpsError {
    fn from(e: ConnError) -> Self {
        OpsError::Queue(QueueError::Conn(e))
    }
}

pub type Result<T> = std::result::Result<T, OpsError>;

macro_rules! ops_lua {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("scripts/prelude.lua"),
            "\n",
            include_str!(concat!("scripts/", $name, ".lua"))
        ))
    };
}

struct OpsScripts {
    requeue: Script,
    move_reserve: Script,
    move_in: Script,
    move_out: Script,
    retarget_dep: Script,
    rename_member: Script,
    purge: Script,
    unindex: Script,
}

static SCRIPTS: LazyLock<OpsScripts> = LazyLock::new(|| OpsScripts {
    requeue: ops_lua!("ops_requeue"),
    move_reserve: ops_lua!("ops_move_reserve"),
    move_in: ops_lua!("ops_move_in"),
    move_out: ops_lua!("ops_move_out"),
    retarget_dep: ops_lua!("ops_retarget_dep"),
    rename_member: ops_lua!("ops_rename_member"),
    purge: ops_lua!("ops_purge"),
    unindex: ops_lua!("ops_unindex"),
});

/// Parse a failure class name; the error lists the valid ones.
pub fn parse_class(s: &str) -> Result<FailureClass> {
    FailureClass::parse(s).ok_or_else(|| OpsError::UnknownClass {
        given: s.to_string(),
        valid: FailureClass::ALL
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn configured_list(cfg: &Config) -> String {
    if cfg.accounts.is_empty() {
        "(none)".to_string()
    } else {
        cfg.accounts.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// An account must be configured to be a move target or to be paused.
pub fn check_configured(cfg: &Config, account: &str) -> Result<()> {
    if cfg.accounts.contains_key(account) {
        Ok(())
    } else {
        Err(OpsError::UnknownAccount {
            given: account.to_string(),
            known: configured_list(cfg),
        })
    }
}

/// Which dead tasks an operation applies to: all filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadFilter {
    pub season: Option<String>,
    /// The record's `group`: `ep01`, or `characters` for character images.
    pub episode: Option<String>,
    /// The account whose dead-letter set holds the task.
    pub account: Option<String>,
    pub class: Option<FailureClass>,
    /// Only tasks that died before this time (ms; the retention duty's cut-off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub died_before_ms: Option<i64>,
}

impl DeadFilter {
    pub fn matches(&self, r: &TaskRecord) -> bool {
        self.season.as_ref().is_none_or(|s| &r.season == s)
            && self.episode.as_ref().is_none_or(|e| &r.group == e)
            && self.account.as_ref().is_none_or(|a| &r.account == a)
            && self.class.is_none_or(|c| r.failure == Some(c))
            && self
                .died_before_ms
                .is_none_or(|cut| r.done_ms.unwrap_or(r.updated_ms) < cut)
    }
}

/// One dead task as `dlq list --json` prints it (an element of [`DeadList::tasks`]):
///
/// ```json
/// {"id":"vid-…","label":"ep01/sc03","season":"s1","episode":"ep01","kind":"video",
///  "account":"kling-main","class":"content_policy","attempts":1,"errors":1,
///  "last_error":{"attempt":1,"class":"content_policy","code":"1301","message":"…",
///                "at_ms":1700000000000,"account":"kling-main"},
///  "died_at_ms":1700000000000}
/// ```
///
/// `moving_to` appears only for a task whose move to another account has not finished.
#[derive(Debug, Clone, Serialize)]
pub struct DeadTask {
    pub id: String,
    pub label: String,
    pub season: String,
    pub episode: String,
    pub kind: TaskKind,
    pub account: String,
    pub class: Option<FailureClass>,
    pub attempts: u32,
    /// How many attempt errors the record keeps.
    pub errors: usize,
    pub last_error: Option<AttemptError>,
    pub died_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
    /// The whole record (for requeue and purge; not printed by `list`).
    #[serde(skip)]
    pub record: TaskRecord,
}

/// `dlq list --json`: `{"count": n, "tasks": [DeadTask, …]}`, oldest death first per account,
/// accounts in name order.
#[derive(Debug, Clone, Serialize)]
pub struct DeadList {
    pub count: usize,
    pub tasks: Vec<DeadTask>,
}

/// `dlq show --json`: the whole record (every field of the task record, every attempt's error)
/// plus `died_at_ms` (its score in the dead-letter set, `null` when not there) and `moving_to`
/// when a move to another account is unfinished. `also_in` lists other accounts holding a copy
/// (only while a move is unfinished).
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub record: TaskRecord,
    pub died_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_in: Vec<String>,
}

/// What `requeue` did (or, with `dry_run`, would do) with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeueOutcome {
    /// Dry run: would go back on its own account's stream.
    WouldRequeue,
    /// Dry run: would move to another account.
    WouldMove,
    /// Back on its own account's stream.
    Requeued,
    /// Now ready in another account (`to`).
    Moved,
    /// Someone else acted first: the task is no longer dead.
    NotDead,
    /// The record is gone (purged meanwhile).
    Gone,
}

/// One line of [`RequeueReport`]: `{"id","label","from","to","outcome"}`.
#[derive(Debug, Clone, Serialize)]
pub struct RequeueItem {
    pub id: String,
    pub label: String,
    pub from: String,
    pub to: String,
    pub outcome: RequeueOutcome,
}

/// `dlq requeue --json`:
/// `{"dry_run":bool,"to_provider":null|"acct","matched":n,"requeued":n,"moved":n,"skipped":n,
///   "tasks":[RequeueItem,…]}`. `skipped` counts tasks another operator took first.
#[derive(Debug, Clone, Serialize)]
pub struct RequeueReport {
    pub dry_run: bool,
    pub to_provider: Option<String>,
    pub matched: usize,
    pub requeued: usize,
    pub moved: usize,
    pub skipped: usize,
    pub tasks: Vec<RequeueItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeOutcome {
    /// Not confirmed: would be deleted.
    WouldPurge,
    Purged,
    /// Someone requeued it first.
    NotDead,
    /// A move to another account is unfinished; `dlq requeue` finishes it.
    Moving,
    Gone,
}

/// One line of [`PurgeReport`]: `{"id","label","account","dependents","outcome"}`;
/// `dependents` counts tasks waiting for this one (they will wait forever once it is purged).
#[derive(Debug, Clone, Serialize)]
pub struct PurgeItem {
    pub id: String,
    pub label: String,
    pub account: String,
    pub dependents: u64,
    pub outcome: PurgeOutcome,
}

/// `dlq purge --json`: `{"confirmed":bool,"matched":n,"purged":n,"tasks":[PurgeItem,…]}`.
/// Without confirmation nothing is deleted and every outcome is `would_purge`.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    pub confirmed: bool,
    pub matched: usize,
    pub purged: usize,
    pub tasks: Vec<PurgeItem>,
}

/// The value of `dq:{A}:paused`: `{"since_ms":…,"reason":…,"by":…}` (Redis clock); a worker
/// that pauses an account (out of credits) adds `"message"` and `"by":"worker"`. A value set by
/// hand that is not this JSON reads as `reason` = the raw value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseInfo {
    #[serde(default)]
    pub since_ms: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PauseInfo {
    fn parse(raw: &str) -> PauseInfo {
        serde_json::from_str(raw).unwrap_or_else(|_| PauseInfo {
            since_ms: None,
            reason: Some(raw.to_string()),
            by: None,
            message: None,
        })
    }
}

/// `queue pause --json`: `{"account","paused":PauseInfo,"already_paused":bool}`. Pausing a
/// paused account keeps the original pause (its time and reason).
#[derive(Debug, Clone, Serialize)]
pub struct PauseReport {
    pub account: String,
    pub paused: PauseInfo,
    pub already_paused: bool,
}

/// `queue resume --json`: `{"account","was_paused":bool}`.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    pub account: String,
    pub was_paused: bool,
}

/// Work of one account, summed over seasons from its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InFlight {
    pub ready: u64,
    pub claimed: u64,
    pub submitting: u64,
    pub rendering: u64,
    pub downloading: u64,
    pub delayed: u64,
}

impl InFlight {
    /// Work that a pause does not stop: held by workers or rendering at the provider.
    pub fn busy(&self) -> u64 {
        self.claimed + self.submitting + self.rendering + self.downloading
    }

    fn from_counts(c: &BTreeMap<TaskState, u64>) -> InFlight {
        let g = |s| c.get(&s).copied().unwrap_or(0);
        InFlight {
            ready: g(TaskState::Ready),
            claimed: g(TaskState::Claimed),
            submitting: g(TaskState::Submitting),
            rendering: g(TaskState::Rendering),
            downloading: g(TaskState::Downloading),
            delayed: g(TaskState::Delayed),
        }
    }
}

/// `queue drain --json`:
/// `{"account","paused":PauseInfo,"already_paused":bool,"in_flight":{"ready","claimed",
///   "submitting","rendering","downloading","delayed"},"busy":n,"drained":bool}`;
/// `busy` = claimed + submitting + rendering + downloading, `drained` = busy is 0.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub account: String,
    pub paused: Option<PauseInfo>,
    pub already_paused: bool,
    pub in_flight: InFlight,
    pub busy: u64,
    pub drained: bool,
}

/// One account in `queue status --json` (`{"accounts":[AccountStatus,…]}`):
/// `{"account","configured":bool,"paused":null|PauseInfo,"counts":{"waiting":n,…,"dead":n},
///   "dead_set":n}`; `counts` sums the state counters over seasons, `dead_set` is the size of the
/// dead-letter ZSET.
#[derive(Debug, Clone, Serialize)]
pub struct AccountStatus {
    pub account: String,
    pub configured: bool,
    pub paused: Option<PauseInfo>,
    pub counts: BTreeMap<TaskState, u64>,
    pub dead_set: u64,
    /// The account's pool keys by name (never their values), when it has a pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
}

/// One key of an account's pool in `queue status`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub name: String,
    /// Why the key is paused (out of credits, refused), if it is.
    pub paused: Option<PauseInfo>,
    /// Milliseconds left of the key's cool-down after a 429 (0 when none).
    pub cooldown_ms: u64,
}

/// `queue status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub accounts: Vec<AccountStatus>,
}

/// One live worker in `worker list --json` (`{"now_ms":…,"workers":[WorkerInfo,…]}`):
/// `{"id","pid","accounts":[…],"held","stopping","seen_ms","age_ms","expires_ms"}`; fields the
/// registry hash lacks are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub pid: Option<u32>,
    pub accounts: Vec<String>,
    pub held: Option<u64>,
    pub stopping: bool,
    pub seen_ms: Option<i64>,
    /// Redis time now minus `seen_ms`: age of the last heartbeat.
    pub age_ms: Option<i64>,
    /// Heartbeat expiry (the registry ZSET's score).
    pub expires_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerList {
    pub now_ms: i64,
    pub workers: Vec<WorkerInfo>,
}

/// The operator front of the queue.
#[derive(Clone)]
pub struct Ops {
    queue: Queue,
}

/// The `moving_to` mark of a raw record (`[u16 len][header][body]`), if any.
fn moving_to(raw: &[u8]) -> Option<String> {
    let (len, rest) = raw.split_at_checked(2)?;
    let hlen = u16::from_be_bytes([len[0], len[1]]) as usize;
    let header = rest.get(..hlen)?;
    let map: serde_json::Map<String, serde_json::Value> = rmp_serde::from_slice(header).ok()?;
    map.get("moving_to")?.as_str().map(str::to_string)
}

fn decode(account: &str, id: &str, raw: &[u8]) -> Result<TaskRecord> {
    TaskRecord::from_msgpack(raw).map_err(|source| {
        OpsError::Queue(QueueError::Decode {
            key: AccountKeys::new(account).task(id),
            source,
        })
    })
}

/// `ops_move_out.lua` for task `id` of the source account `src`, moving to `target`.
fn move_out(src: &AccountKeys, id: &str, target: &str) -> redis::ScriptInvocation<'static> {
    let mut inv = SCRIPTS.move_out.prepare_invoke();
    inv.key(src.task(id))
        .key(src.moves())
        .key(src.counts())
        .key(src.deps(id))
        .key(src.dependents(id))
        .key(src.slots())
        .arg(target)
        .arg(id);
    inv
}

/// The record as it is created in `target`: the task starts over there, its history kept.
fn moved_record(mut r: TaskRecord, target: &str) -> TaskRecord {
    if let Some(pos) = r.chain.iter().position(|a| a == target) {
        r.chain_pos = pos as u32;
    } else {
        // Right after the account it died in, so the rest of the chain stays as fallbacks.
        let at = (r.chain_pos as usize + 1).min(r.chain.len());
        r.chain.insert(at, target.to_string());
        r.chain_pos = at as u32;
    }
    r.account = target.to_string();
    r.attempt = 0;
    r.failure = None;
    r.stalls = 0;
    r.possible_duplicate = false;
    r.provider_task_id = None;
    r.poll_locator = None;
    r.result = None;
    r.holder = None;
    r.entry = None;
    r.polls = 0;
    r.fetch_failures = 0;
    r.moving_to = None;
    r.output = None;
    r.sha256 = None;
    r.bytes = None;
    r.done_by = None;
    r.ready_ms = None;
    r.submitted_ms = None;
    r.done_ms = None;
    r
}

impl Ops {
    pub fn new(queue: Queue) -> Ops {
        Ops { queue }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    async fn conn(&self) -> Result<Conn> {
        Ok(self.queue.redis().conn().await?)
    }

    /// Accounts that ever held tasks (`dq:{dramaq}:accounts`), sorted.
    async fn known_accounts(&self) -> Result<Vec<String>> {
        Ok(self.queue.accounts().await?)
    }

    /// An account named by a filter must be configured or have held tasks.
    pub async fn check_known(&self, cfg: &Config, account: &str) -> Result<()> {
        if cfg.accounts.contains_key(account)
            || self.known_accounts().await?.iter().any(|a| a == account)
        {
            Ok(())
        } else {
            Err(OpsError::UnknownAccount {
                given: account.to_string(),
                known: configured_list(cfg),
            })
        }
    }

    /// Every dead task matching `filter`: each relevant account's dead-letter set in pages of
    /// [`PAGE`] by score (time of death), records read with one pipelined `GET` per page.
    /// Unreadable records are skipped with a warning.
    pub async fn dead_tasks(&self, filter: &DeadFilter) -> Result<DeadList> {
        let accounts = match &filter.account {
            Some(a) => vec![a.clone()],
            None => self.known_accounts().await?,
        };
        let mut conn = self.conn().await?;
        let mut tasks = Vec::new();
        for account in &accounts {
            let k = AccountKeys::new(account);
            let mut min: Option<f64> = None;
            let mut skip = 0usize;
            loop {
                let lower = min.map_or_else(|| "-inf".to_string(), |m| m.to_string());
                let page: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                    .arg(k.dead())
                    .arg(&lower)
                    .arg("+inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(skip)
                    .arg(PAGE)
                    .query_async(&mut conn)
                    .await?;
                if page.is_empty() {
                    break;
                }
                let mut pipe = redis::pipe();
                for (id, _) in &page {
                    pipe.get(k.task(id));
                }
                let raws: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
                for ((id, score), raw) in page.iter().zip(raws) {
                    let Some(raw) = raw else { continue };
                    let record = match decode(account, id, &raw) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(%account, task = %id, error = %e, "skipping unreadable dead record");
                            continue;
                        }
                    };
                    if !filter.matches(&record) {
                        continue;
                    }
                    tasks.push(DeadTask {
                        id: record.id.clone(),
                        label: record.label.clone(),
                        season: record.season.clone(),
                        episode: record.group.clone(),
                        kind: record.kind,
                        account: record.account.clone(),
                        class: record.failure,
                        attempts: record.attempt,
                        errors: record.errors.len(),
                        last_error: record.errors.last().cloned(),
                        died_at_ms: *score as i64,
                        moving_to: moving_to(&raw),
                        record,
                    });
                }
                let full = page.len() == PAGE;
                // Next page: from the last score, skipping the members already seen with it.
                if let Some((_, last)) = page.last() {
                    let same = page.iter().filter(|(_, s)| s == last).count();
                    skip = if min == Some(*last) {
                        skip + same
                    } else {
                        same
                    };
                    min = Some(*last);
                }
                if !full {
                    break;
                }
            }
        }
        Ok(DeadList {
            count: tasks.len(),
            tasks,
        })
    }

    /// Find a task by id: through the season index when `season` is given, else in every
    /// account of `dq:{dramaq}:accounts`. A copy not reserved for a move is preferred.
    pub async fn show(&self, id: &str, season: Option<&str>) -> Result<TaskDetail> {
        let mut conn = self.conn().await?;
        let mut candidates = Vec::new();
        if let Some(s) = season {
            let indexed: Option<String> = redis::cmd("HGET")
                .arg(SeasonKeys::new(s).index())
                .arg(id)
                .query_async(&mut conn)
                .await?;
            candidates.extend(indexed);
        }
        // known_accounts takes its own connection: release ours meanwhile.
        drop(conn);
        for a in self.known_accounts().await? {
            if !candidates.contains(&a) {
                candidates.push(a);
            }
        }
        let mut conn = self.conn().await?;
        let mut found: Vec<(String, Vec<u8>)> = Vec::new();
        for account in candidates {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(AccountKeys::new(&account).task(id))
                .query_async(&mut conn)
                .await?;
            if let Some(raw) = raw {
                found.push((account, raw));
                if season.is_some() && found.len() == 1 && moving_to(&found[0].1).is_none() {
                    break;
                }
            }
        }
        if found.is_empty() {
            return Err(OpsError::NotFound {
                id: id.to_string(),
                scope: match season {
                    Some(s) => format!(" in season {s} nor in any account"),
                    None => " in any account".to_string(),
                },
            });
        }
        let pick = found
            .iter()
            .position(|(_, raw)| moving_to(raw).is_none())
            .unwrap_or(0);
        let (account, raw) = found.swap_remove(pick);
        let record = decode(&account, id, &raw)?;
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(AccountKeys::new(&account).dead())
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(TaskDetail {
            record,
            died_at_ms: score.map(|s| s as i64),
            moving_to: moving_to(&raw),
            also_in: found.into_iter().map(|(a, _)| a).collect(),
        })
    }

    /// Check that every task may go to `target`: a configured account whose family produces the
    /// task's kind. Nothing is changed when any task may not.
    fn check_target(cfg: &Config, target: &str, tasks: &[DeadTask]) -> Result<()> {
        check_configured(cfg, target)?;
        let Some(acct) = cfg.account(target) else {
            return Ok(());
        };
        let kinds = acct.family.kinds();
        for t in tasks {
            if t.account != target && !kinds.contains(&t.kind) {
                return Err(OpsError::WrongKind {
                    id: t.id.clone(),
                    label: t.label.clone(),
                    kind: t.kind,
                    account: target.to_string(),
                    family: acct.family.as_str().to_string(),
                    produces: kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(())
    }

    /// Requeue every dead task matching `filter`, onto its own account or moved to `to`
    /// (checked against `cfg` before anything changes). `dry_run` reads only.
    pub async fn requeue(
        &self,
        cfg: &Config,
        filter: &DeadFilter,
        to: Option<&str>,
        dry_run: bool,
    ) -> Result<RequeueReport> {
        let list = self.dead_tasks(filter).await?;
        if let Some(target) = to {
            Self::check_target(cfg, target, &list.tasks)?;
        }
        let mut report = RequeueReport {
            dry_run,
            to_provider: to.map(str::to_string),
            matched: list.count,
            requeued: 0,
            moved: 0,
            skipped: 0,
            tasks: Vec::with_capacity(list.count),
        };
        for t in &list.tasks {
            let (outcome, dest) = if dry_run {
                let dest = t
                    .moving_to
                    .clone()
                    .or_else(|| to.map(str::to_string))
                    .unwrap_or_else(|| t.account.clone());
                if dest == t.account {
                    (RequeueOutcome::WouldRequeue, dest)
                } else {
                    (RequeueOutcome::WouldMove, dest)
                }
            } else {
                self.requeue_task(&t.account, &t.id, to).await?
            };
            match outcome {
                RequeueOutcome::Requeued => report.requeued += 1,
                RequeueOutcome::Moved => report.moved += 1,
                RequeueOutcome::NotDead | RequeueOutcome::Gone => report.skipped += 1,
                RequeueOutcome::WouldRequeue | RequeueOutcome::WouldMove => {}
            }
            report.tasks.push(RequeueItem {
                id: t.id.clone(),
                label: t.label.clone(),
                from: t.account.clone(),
                to: dest,
                outcome,
            });
        }
        Ok(report)
    }

    /// Requeue one dead task of `account`, in place or moved to `to` (not checked against the
    /// configuration here: see [`Ops::check_target`]). A task with an unfinished move has that
    /// move finished, whatever `to` says. Returns the outcome and the account it is in now.
    pub async fn requeue_task(
        &self,
        account: &str,
        id: &str,
        to: Option<&str>,
    ) -> Result<(RequeueOutcome, String)> {
        match to {
            Some(target) if target != account => self.reserve_and_move(account, id, target).await,
            _ => {
                let mut conn = self.conn().await?;
                let k = AccountKeys::new(account);
                let (status, detail): (String, String) = SCRIPTS
                    .requeue
                    .key(k.task(id))
                    .key(k.ready())
                    .key(k.dead())
                    .key(k.leases())
                    .key(k.awaiting())
                    .key(k.delayed())
                    .key(k.counts())
                    .key(k.slots())
                    .arg(GROUP)
                    .invoke_async(&mut conn)
                    .await?;
                match status.as_str() {
                    "requeued" => Ok((RequeueOutcome::Requeued, account.to_string())),
                    "not_dead" => Ok((RequeueOutcome::NotDead, account.to_string())),
                    "gone" => Ok((RequeueOutcome::Gone, account.to_string())),
                    // Moving (or dead and marked by an older version): finish that move.
                    "moving" => {
                        drop(conn);
                        self.reserve_and_move(account, id, &detail).await
                    }
                    other => Err(OpsError::Reply {
                        script: "ops_requeue.lua",
                        detail: other.to_string(),
                    }),
                }
            }
        }
    }

    /// Step 0 (`ops_move_reserve.lua`) and the rest of a move to `target`; a task already moving
    /// elsewhere has that move finished instead.
    async fn reserve_and_move(
        &self,
        account: &str,
        id: &str,
        target: &str,
    ) -> Result<(RequeueOutcome, String)> {
        let mut conn = self.conn().await?;
        let k = AccountKeys::new(account);
        let (status, dest, raw): (String, String, Vec<u8>) = SCRIPTS
            .move_reserve
            .key(k.task(id))
            .key(k.dead())
            .key(k.moves())
            .key(k.counts())
            .arg(target)
            .invoke_async(&mut conn)
            .await?;
        drop(conn);
        match status.as_str() {
            "reserved" | "moving" => self.finish_move(account, id, &dest, &raw).await,
            "not_dead" => Ok((RequeueOutcome::NotDead, account.to_string())),
            "gone" => Ok((RequeueOutcome::Gone, account.to_string())),
            other => Err(OpsError::Reply {
                script: "ops_move_reserve.lua",
                detail: other.to_string(),
            }),
        }
    }

    /// Steps 1–4 of a move (module docs) for a source record already reserved for `target`.
    async fn finish_move(
        &self,
        source: &str,
        id: &str,
        target: &str,
        raw: &[u8],
    ) -> Result<(RequeueOutcome, String)> {
        let record = decode(source, id, raw)?;
        let season = record.season.clone();
        let deps = record.deps.clone();
        let src = AccountKeys::new(source);
        let dst = AccountKeys::new(target);
        let sk = SeasonKeys::new(&season);
        let mut conn = self.conn().await?;

        // 1. Create in the target (no-op if it exists), with the dependents carried over.
        let dependents: Vec<String> = redis::cmd("SMEMBERS")
            .arg(src.dependents(id))
            .query_async(&mut conn)
            .await?;
        let moved = moved_record(record, target)
            .to_msgpack()
            .map_err(|source| QueueError::Encode {
                key: dst.task(id),
                source,
            })?;
        let mut inv = SCRIPTS.move_in.prepare_invoke();
        inv.key(dst.task(id))
            .key(dst.ready())
            .key(dst.counts())
            .key(dst.dependents(id))
            .arg(GROUP)
            .arg(moved);
        for m in &dependents {
            inv.arg(m);
        }
        let _created: String = inv.invoke_async(&mut conn).await?;

        // 2. The index and the account registries point at the target.
        redis::pipe()
            .hset(sk.index(), id, target)
            .ignore()
            .sadd(sk.accounts(), target)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        redis::cmd("SADD")
            .arg(fleet::accounts())
            .arg(target)
            .query_async::<()>(&mut conn)
            .await?;

        // 3. Dependents read this task through their deps entries; dependencies notify it
        //    through their dependents sets.
        for member in &dependents {
            let Some((acct, dep_id)) = member.split_once('|') else {
                continue;
            };
            let at = self.locate(&mut conn, &season, dep_id, acct).await?;
            let _: i64 = SCRIPTS
                .retarget_dep
                .key(AccountKeys::new(&at).task(dep_id))
                .arg(id)
                .arg(target)
                .invoke_async(&mut conn)
                .await?;
        }
        for d in &deps {
            let at = self.locate(&mut conn, &season, &d.id, &d.account).await?;
            let _: i64 = SCRIPTS
                .rename_member
                .key(AccountKeys::new(&at).dependents(&d.id))
                .arg(format!("{source}|{id}"))
                .arg(format!("{target}|{id}"))
                .invoke_async(&mut conn)
                .await?;
        }

        // 4. Remove the source copy (only while dead and reserved for this target).
        let _removed: String = move_out(&src, id, target).invoke_async(&mut conn).await?;
        Ok((RequeueOutcome::Moved, target.to_string()))
    }

    /// Finish the move of a `moving` task of `account` (a provider fallback recorded by
    /// `fail.lua` / `reap_lease.lua`, or an operator's move cut short). Idempotent: a task that
    /// is gone or no longer moving only has its outbox entry cleared. Returns where the task is
    /// now, `None` when there was nothing to move.
    pub async fn finish_moving(&self, account: &str, id: &str) -> Result<Option<String>> {
        let src = AccountKeys::new(account);
        let mut conn = self.conn().await?;
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(src.task(id))
            .query_async(&mut conn)
            .await?;
        let target = match &raw {
            Some(raw) => {
                let rec = decode(account, id, raw)?;
                match (rec.state, rec.moving_to) {
                    (TaskState::Moving, Some(target)) => Some(target),
                    _ => None,
                }
            }
            None => None,
        };
        let (Some(raw), Some(target)) = (raw, target) else {
            let _: String = move_out(&src, id, "").invoke_async(&mut conn).await?;
            return Ok(None);
        };
        drop(conn);
        let (_, now_in) = self.finish_move(account, id, &target, &raw).await?;
        Ok(Some(now_in))
    }

    /// Where task `id` of `season` lives: the season index, else `fallback`.
    async fn locate(
        &self,
        conn: &mut Conn,
        season: &str,
        id: &str,
        fallback: &str,
    ) -> Result<String> {
        let at: Option<String> = redis::cmd("HGET")
            .arg(SeasonKeys::new(season).index())
            .arg(id)
            .query_async(conn)
            .await?;
        Ok(at.unwrap_or_else(|| fallback.to_string()))
    }

    /// Delete the dead tasks matching `filter` when `confirm`; otherwise only report them.
    pub async fn purge(&self, filter: &DeadFilter, confirm: bool) -> Result<PurgeReport> {
        let list = self.dead_tasks(filter).await?;
        let mut conn = self.conn().await?;
        let mut report = PurgeReport {
            confirmed: confirm,
            matched: list.count,
            purged: 0,
            tasks: Vec::with_capacity(list.count),
        };
        for t in &list.tasks {
            let k = AccountKeys::new(&t.account);
            let dependents: u64 = redis::cmd("SCARD")
                .arg(k.dependents(&t.id))
                .query_async(&mut conn)
                .await?;
            let outcome = if !confirm {
                PurgeOutcome::WouldPurge
            } else {
                self.purge_task(&mut conn, &t.record).await?
            };
            if outcome == PurgeOutcome::Purged {
                report.purged += 1;
            }
            report.tasks.push(PurgeItem {
                id: t.id.clone(),
                label: t.label.clone(),
                account: t.account.clone(),
                dependents,
                outcome,
            });
        }
        Ok(report)
    }

    async fn purge_task(&self, conn: &mut Conn, r: &TaskRecord) -> Result<PurgeOutcome> {
        let k = AccountKeys::new(&r.account);
        let status: String = SCRIPTS
            .purge
            .key(k.task(&r.id))
            .key(k.dead())
            .key(k.counts())
            .key(k.deps(&r.id))
            .key(k.dependents(&r.id))
            .key(k.slots())
            .invoke_async(conn)
            .await?;
        let outcome = match status.as_str() {
            "purged" => PurgeOutcome::Purged,
            "not_dead" => PurgeOutcome::NotDead,
            "moving" => PurgeOutcome::Moving,
            "gone" => PurgeOutcome::Gone,
            other => {
                return Err(OpsError::Reply {
                    script: "ops_purge.lua",
                    detail: other.to_string(),
                })
            }
        };
        if outcome != PurgeOutcome::Purged {
            return Ok(outcome);
        }
        // The record is gone; tidy the references to it (each step idempotent).
        let member = format!("{}|{}", r.account, r.id);
        for d in &r.deps {
            let at = self.locate(conn, &r.season, &d.id, &d.account).await?;
            redis::cmd("SREM")
                .arg(AccountKeys::new(&at).dependents(&d.id))
                .arg(&member)
                .query_async::<()>(conn)
                .await?;
        }
        let _: i64 = SCRIPTS
            .unindex
            .key(SeasonKeys::new(&r.season).index())
            .arg(&r.id)
            .arg(&r.account)
            .invoke_async(conn)
            .await?;
        Ok(outcome)
    }

    /// The account's pause flag, if set.
    pub async fn paused(&self, account: &str) -> Result<Option<PauseInfo>> {
        let mut conn = self.conn().await?;
        let raw: Option<String> = redis::cmd("GET")
            .arg(AccountKeys::new(account).paused())
            .query_async(&mut conn)
            .await?;
        Ok(raw.as_deref().map(PauseInfo::parse))
    }

    /// Pause an account's intake: claims stop; submitted renders still complete. Keeps an
    /// existing pause as it is.
    pub async fn pause(
        &self,
        account: &str,
        reason: Option<&str>,
        by: Option<&str>,
    ) -> Result<PauseReport> {
        let mut conn = self.conn().await?;
        let now = redis_time_ms(&mut conn).await?;
        let info = PauseInfo {
            since_ms: Some(now),
            reason: reason.map(str::to_string),
            by: by.map(str::to_string),
            message: None,
        };
        let value = serde_json::to_string(&info).map_err(|source| OpsError::Encode {
            what: "the pause reason",
            source,
        })?;
        let key = AccountKeys::new(account).paused();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        if set.is_some() {
            return Ok(PauseReport {
                account: account.to_string(),
                paused: info,
                already_paused: false,
            });
        }
        drop(conn);
        let existing = self.paused(account).await?.unwrap_or(info);
        Ok(PauseReport {
            account: account.to_string(),
            paused: existing,
            already_paused: true,
        })
    }

    pub async fn resume(&self, account: &str) -> Result<ResumeReport> {
        let mut conn = self.conn().await?;
        let n: i64 = redis::cmd("DEL")
            .arg(AccountKeys::new(account).paused())
            .query_async(&mut conn)
            .await?;
        Ok(ResumeReport {
            account: account.to_string(),
            was_paused: n > 0,
        })
    }

    /// Per-state counts of an account summed over seasons (`HGETALL` of its counts hash).
    pub async fn account_counts(&self, account: &str) -> Result<BTreeMap<TaskState, u64>> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(AccountKeys::new(account).counts())
            .query_async(&mut conn)
            .await?;
        Ok(sum_counts_by_state(&fields)
            .into_iter()
            .map(|(s, n)| (s, n as u64))
            .collect())
    }

    /// In-flight work of an account and its pause flag, without changing anything.
    pub async fn drain_status(&self, account: &str) -> Result<DrainReport> {
        let in_flight = InFlight::from_counts(&self.account_counts(account).await?);
        Ok(DrainReport {
            account: account.to_string(),
            paused: self.paused(account).await?,
            already_paused: false,
            in_flight,
            busy: in_flight.busy(),
            drained: in_flight.busy() == 0,
        })
    }

    /// Pause the account (see [`Ops::pause`]) and report its in-flight work.
    pub async fn drain(
        &self,
        account: &str,
        reason: Option<&str>,
        by: Option<&str>,
    ) -> Result<DrainReport> {
        let p = self.pause(account, reason, by).await?;
        let mut report = self.drain_status(account).await?;
        report.already_paused = p.already_paused;
        report.paused = report.paused.or(Some(p.paused));
        Ok(report)
    }

    /// The state of each named key of an account's pool (pause reason, cool-down left).
    pub async fn key_status(&self, account: &str, keys: &[&str]) -> Result<Vec<KeyStatus>> {
        let k = AccountKeys::new(account);
        let mut conn = self.conn().await?;
        let mut out = Vec::with_capacity(keys.len());
        for name in keys {
            let raw: Option<String> = redis::cmd("GET")
                .arg(k.key_paused(name))
                .query_async(&mut conn)
                .await?;
            let ttl: i64 = redis::cmd("PTTL")
                .arg(k.key_cooldown(name))
                .query_async(&mut conn)
                .await?;
            out.push(KeyStatus {
                name: name.to_string(),
                paused: raw.as_deref().map(PauseInfo::parse),
                cooldown_ms: ttl.max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Status of `accounts` plus every account that ever held tasks, in name order.
    pub async fn queue_status(&self, configured: &[String]) -> Result<QueueStatus> {
        let mut names: BTreeSet<String> = self.known_accounts().await?.into_iter().collect();
        names.extend(configured.iter().cloned());
        let mut out = Vec::with_capacity(names.len());
        for account in names {
            let counts = self.account_counts(&account).await?;
            let paused = self.paused(&account).await?;
            let mut conn = self.conn().await?;
            let dead_set: u64 = redis::cmd("ZCARD")
                .arg(AccountKeys::new(&account).dead())
                .query_async(&mut conn)
                .await?;
            out.push(AccountStatus {
                configured: configured.contains(&account),
                account,
                paused,
                counts,
                dead_set,
                keys: Vec::new(),
            });
        }
        Ok(QueueStatus { accounts: out })
    }

    /// Live workers: registry members whose heartbeat expiry is past Redis `TIME`.
    pub async fn workers(&self) -> Result<WorkerList> {
        let mut conn = self.conn().await?;
        let now = redis_time_ms(&mut conn).await?;
        let live: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(fleet::workers())
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let mut workers = Vec::with_capacity(live.len());
        for chunk in live.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for (id, _) in chunk {
                pipe.cmd("HGETALL").arg(fleet::worker(id));
            }
            let hashes: Vec<Vec<(String, String)>> = pipe.query_async(&mut conn).await?;
            for ((id, expires), fields) in chunk.iter().zip(hashes) {
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                let seen_ms = get("seen_ms").and_then(|v| v.parse::<i64>().ok());
                workers.push(WorkerInfo {
                    id: id.clone(),
                    pid: get("pid").and_then(|v| v.parse().ok()),
                    accounts: get("accounts")
                        .map(|v| {
                            v.split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                    held: get("held").and_then(|v| v.parse().ok()),
                    stopping: get("stopping") == Some("true"),
                    seen_ms,
                    age_ms: seen_ms.map(|s| (now - s).max(0)),
                    expires_ms: *expires as i64,
                });
            }
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(WorkerList {
            now_ms: now,
            workers,
        })
    }
}

/// Per-state totals of one account from its counts hash (`<season>|<state>` → n), summed over
/// seasons. Every state is present (0 when absent); unknown fields are ignored and negative
/// values read as 0.
pub fn sum_counts_by_state(counts: &HashMap<String, i64>) -> BTreeMap<TaskState, i64> {
    let mut out: BTreeMap<TaskState, i64> = TaskState::ALL.into_iter().map(|s| (s, 0)).collect();
    for (field, n) in counts {
        let Some((_, state)) = field.rsplit_once('|') else {
            continue;
        };
        if let Some(state) = TaskState::parse(state) {
            *out.entry(state).or_default() += (*n).max(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_summed_over_seasons() {
        let counts: HashMap<String, i64> = [
            ("s1|ready".to_string(), 3),
            ("s2|ready".to_string(), 4),
            ("s1|rendering".to_string(), 2),
            ("s1|stored".to_string(), -1),
            ("junk".to_string(), 9),
            ("s1|bogus".to_string(), 9),
        ]
        .into_iter()
        .collect();
        let by_state = sum_counts_by_state(&counts);
        assert_eq!(by_state[&TaskState::Ready], 7);
        assert_eq!(by_state[&TaskState::Rendering], 2);
        assert_eq!(by_state[&TaskState::Stored], 0);
        assert_eq!(by_state[&TaskState::Dead], 0);
        assert_eq!(by_state.len(), TaskState::ALL.len());
    }

    #[test]
    fn unknown_class_lists_valid_ones() {
        let e = parse_class("policy").unwrap_err().to_string();
        assert!(e.contains("'policy'"), "{e}");
        assert!(
            e.contains("content_policy") && e.contains("provider_error"),
            "{e}"
        );
        assert_eq!(
            parse_class("provider_error").unwrap(),
            FailureClass::ProviderError
        );
    }

    #[test]
    fn pause_value_reads_leniently() {
        let p = PauseInfo::parse(r#"{"since_ms":5,"reason":"quota"}"#);
        assert_eq!(p.since_ms, Some(5));
        assert_eq!(p.reason.as_deref(), Some("quota"));
        let p = PauseInfo::parse(
            r#"{"reason":"insufficient_credits","message":"top up","since_ms":9,"by":"worker"}"#,
        );
        assert_eq!(p.message.as_deref(), Some("top up"));
        assert_eq!(p.by.as_deref(), Some("worker"));
        let p = PauseInfo::parse("1");
        assert_eq!(p.reason.as_deref(), Some("1"));
    }

    #[test]
    fn moving_to_ignores_garbage() {
        assert_eq!(moving_to(b""), None);
        assert_eq!(moving_to(&[0, 200, 1]), None);
    }
}
