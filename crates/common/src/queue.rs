//! The typed front of the Lua transition scripts: every state change of a task goes through here.
//!
//! Each method runs one script (or, for batches, one script per batch) whose keys all share the
//! account's hash tag. Steps that cross accounts — registering dependents, telling a waiting task
//! that a dependency is stored — are separate idempotent calls, so a crash between them repeats
//! work instead of losing it (ARCHITECTURE.md, "Dependencies").

mod waiting;
pub use waiting::Recheck;

use crate::coalesce::Coalescer;
use crate::config::DurableSubmit;
use crate::keys::{self, fleet, AccountKeys, SeasonKeys, GROUP};
use crate::model::{DepRef, FailureClass, NewTask, TaskRecord, TaskState};
use crate::redis_conn::{ConnError, RedisHandle};
use redis::{AsyncCommands, Script};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The caller no longer holds the task (stale fencing token or state moved on).
    #[error("task {0} is no longer held by this caller")]
    Fenced(String),
    #[error("task record {key} is unreadable: {source}")]
    Decode {
        key: String,
        #[source]
        source: crate::model::RecordCodecError,
    },
    /// A record could not be encoded; nothing was written for it.
    #[error("task record {key} cannot be encoded: {source}")]
    Encode {
        key: String,
        #[source]
        source: crate::model::RecordCodecError,
    },
    /// A batched call failed as a whole (connection lost, script error).
    #[error("batched Redis call failed: {0}")]
    Batch(String),
    /// `redis.durable_submit` could not be confirmed: the submit must not be sent.
    #[error("{0}")]
    NotDurable(String),
    #[error("unexpected reply from script {script}: {detail}")]
    Reply {
        script: &'static str,
        detail: String,
    },
}

pub type Result<T> = std::result::Result<T, QueueError>;

macro_rules! lua {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("scripts/prelude.lua"),
            "\n",
            include_str!(concat!("scripts/", $name, ".lua"))
        ))
    };
}

/// Every transition script, loaded once per process.
pub struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub heartbeat: Script,
    pub mark_submitting: Script,
    pub mark_accepted: Script,
    pub poll_take: Script,
    pub poll_drop: Script,
    pub poll_again: Script,
    pub poll_now: Script,
    pub render_done: Script,
    pub complete: Script,
    pub fail: Script,
    pub promote: Script,
    pub release: Script,
    pub dep_done: Script,
    pub reap_lease: Script,
    pub redeliver: Script,
    pub quota_peek: Script,
    pub quota_take: Script,
}

pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: lua!("enqueue"),
    claim: lua!("claim"),
    heartbeat: lua!("heartbeat"),
    mark_submitting: lua!("mark_submitting"),
    mark_accepted: lua!("mark_accepted"),
    poll_take: lua!("poll_take"),
    poll_drop: lua!("poll_drop"),
    poll_again: lua!("poll_again"),
    poll_now: lua!("poll_now"),
    render_done: lua!("render_done"),
    complete: lua!("complete"),
    fail: lua!("fail"),
    promote: lua!("promote"),
    release: lua!("release"),
    dep_done: lua!("dep_done"),
    reap_lease: lua!("reap_lease"),
    redeliver: lua!("redeliver"),
    quota_peek: lua!("quota_peek"),
    quota_take: lua!("quota_take"),
});

/// Tasks per enqueue script call: large enough to amortise the round trip, small enough to keep
/// each script well under a millisecond or two of server time.
pub const ENQUEUE_BATCH: usize = 256;

/// Result of [`Queue::enqueue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnqueueReport {
    pub new: u64,
    pub existing: u64,
}

/// Result of claiming one delivery.
#[derive(Debug)]
pub enum Claim {
    Claimed(Box<TaskRecord>),
    /// The task moved on while the entry waited; the entry is gone.
    Stale,
    /// The account is paused; the entry went back to the stream.
    Paused,
    /// The account's quota has no room now; the entry went back to the stream. Try again after
    /// `wait_ms`.
    Throttled {
        wait_ms: u64,
        reason: String,
    },
    /// The task's season is parked over its budget; the entry went back to the stream.
    Parked {
        season: String,
    },
}

/// An account's quota as the scripts take it (0 = unlimited), from
/// [`crate::config::Quota`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaArgs {
    pub interval_us: u64,
    pub tolerance_us: u64,
    pub max_concurrent: u32,
    /// How long a render slot is leased: past this a crashed holder's slot returns.
    pub slot_ms: u64,
    pub daily_cap: u64,
}

impl QuotaArgs {
    pub fn from_account(acct: &crate::config::AccountConfig) -> QuotaArgs {
        QuotaArgs::from_quota(&acct.quota, acct.render_deadline_ms + 60_000)
    }

    fn from_quota(q: &crate::config::Quota, slot_ms: u64) -> QuotaArgs {
        let interval_us = if q.fleet_wide {
            q.emission_interval_us()
        } else {
            0
        };
        QuotaArgs {
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(q.burst.max(1)) - 1),
            max_concurrent: q.max_concurrent,
            slot_ms,
            daily_cap: q.daily_cap,
        }
    }
}

/// An account's key pool as `claim.lua` and `quota_peek.lua` take it: each key's name (`""` for
/// the one key of an account without a pool) and quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolArgs {
    /// How long a render slot is leased (the same for every key of the account).
    pub slot_ms: u64,
    pub keys: Vec<(String, QuotaArgs)>,
}

impl PoolArgs {
    pub fn from_account(acct: &crate::config::AccountConfig) -> PoolArgs {
        let slot_ms = acct.render_deadline_ms + 60_000;
        PoolArgs {
            slot_ms,
            keys: acct
                .pool()
                .iter()
                .map(|k| (k.name.to_string(), QuotaArgs::from_quota(k.quota, slot_ms)))
                .collect(),
        }
    }

    /// True when no key has any limit and there is no pool to choose from: nothing to peek at.
    pub fn is_unlimited(&self) -> bool {
        self.keys.len() == 1
            && self.keys[0].0.is_empty()
            && QuotaArgs {
                slot_ms: 0,
                ..self.keys[0].1
            } == QuotaArgs::default()
    }

    /// KEYS (4 per pool key) and ARGV (`m`, then 5 per key), as the scripts' headers list them.
    fn push(&self, k: &AccountKeys, inv: &mut redis::ScriptInvocation<'_>) {
        inv.arg(self.keys.len());
        for (name, q) in &self.keys {
            inv.key(k.key_paused(name))
                .key(k.key_cooldown(name))
                .key(k.key_gcra(name))
                .key(k.key_daily(name));
            inv.arg(name)
                .arg(q.interval_us)
                .arg(q.tolerance_us)
                .arg(q.max_concurrent)
                .arg(q.daily_cap);
        }
    }
}

impl From<&QuotaArgs> for PoolArgs {
    /// An account without a pool: its quota is its one key's.
    fn from(q: &QuotaArgs) -> PoolArgs {
        PoolArgs {
            slot_ms: q.slot_ms,
            keys: vec![(String::new(), *q)],
        }
    }
}

impl From<&PoolArgs> for PoolArgs {
    fn from(p: &PoolArgs) -> PoolArgs {
        p.clone()
    }
}

/// What [`Queue::quota_peek`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaPeek {
    Go,
    Paused,
    Wait { ms: u64, reason: String },
}

/// What a provider callback did to the await schedule ([`Queue::poll_now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollNow {
    /// The render's next poll is now.
    Moved,
    /// Its finish was announced already; nothing changed.
    Duplicate,
    /// No render is awaited under that task and provider task id.
    Unknown,
}

/// Renders [`Queue::poll_take`] took from an await schedule, with the Redis clock at the take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueRenders {
    /// Redis time of the take (ms).
    pub taken_ms: i64,
    /// When the earliest render left in the schedule is due (ms, Redis clock); `None` when the
    /// schedule is empty.
    pub next_due_ms: Option<i64>,
    /// Task id and the time its poll was due (ms, Redis clock).
    pub renders: Vec<(String, i64)>,
}

impl DueRenders {
    fn from_reply(reply: Vec<redis::Value>) -> Result<DueRenders> {
        let bad = |detail: String| QueueError::Reply {
            script: "poll_take",
            detail,
        };
        let mut items = reply.into_iter();
        let mut int = |what: &str| match items.next() {
            Some(redis::Value::Int(n)) => Ok(n),
            other => Err(bad(format!("expected {what}, got {other:?}"))),
        };
        let taken_ms = int("the Redis time first")?;
        let next_due_ms = Some(int("the next due time second")?).filter(|n| *n >= 0);
        let rest: Vec<redis::Value> = items.collect();
        let mut renders = Vec::with_capacity(rest.len() / 2);
        for pair in rest.chunks(2) {
            let [id, due] = pair else {
                return Err(bad("odd number of id/score items".into()));
            };
            let id: String = redis::from_redis_value_ref(id).map_err(|e| bad(e.to_string()))?;
            let due: String = redis::from_redis_value_ref(due).map_err(|e| bad(e.to_string()))?;
            let due = due
                .parse::<f64>()
                .map_err(|_| bad(format!("score {due:?} of {id} is not a number")))?;
            renders.push((id, due as i64));
        }
        Ok(DueRenders {
            taken_ms,
            next_due_ms,
            renders,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.renders.is_empty()
    }
}

/// Who may apply a failure: the lease holder (by fencing token) or a poller (by provider id).
#[derive(Debug, Clone)]
pub enum FailGuard {
    Held { fence: u64 },
    Render { provider_task_id: String },
}

/// What to do with a failed attempt; decided by the worker's one failure decision
/// (`crates/worker/src/decide.rs`) and applied by `fail.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailDecision {
    /// Submit again after `delay_ms`; `refund_attempt` for rate/concurrency limits.
    Retry { delay_ms: u64, refund_attempt: bool },
    /// Keep the provider's render and poll again after `delay_ms` (e.g. to refresh a URL).
    Repoll { delay_ms: u64 },
    /// The account cannot work (out of credits, spend cap): pause it and put the task back
    /// to wait, not dead.
    Pause,
    /// Fall back: fail here and move to account `to` (the next of the task's provider chain).
    /// Recorded atomically as `moving` with an outbox entry; the move itself is finished by
    /// [`crate::ops::Ops::finish_moving`].
    Move { to: String },
    /// Dead-letter it.
    Dead,
}

/// The failure to record; the message must already be free of secrets.
#[derive(Debug, Clone)]
pub struct FailInfo<'a> {
    pub class: FailureClass,
    pub code: Option<&'a str>,
    pub message: &'a str,
    /// Start (or extend) the account's shared cool-down, so one 429 slows every worker.
    pub cooldown_ms: u64,
}

/// A stored output to record with [`Queue::complete`].
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The caller's fencing token.
    pub fence: u64,
    /// Storage location, sha256 hex and size of the stored output.
    pub output: &'a str,
    pub sha256: &'a str,
    pub bytes: u64,
    /// True when the caller paid for this output itself (a synchronous submit's answer): a
    /// refused completion then flags the task as a possible duplicate payment.
    pub paid: bool,
    /// Who records it, unique per completion (worker id and a sequence number), kept in the
    /// record (`done_by`), so a replayed completion recognises its own.
    pub by: &'a str,
}

/// What became of a render the provider accepted (`mark_accepted.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The normal path: the record was `submitting` under the caller's token.
    Accepted,
    /// The record had gone back in time (lost writes) or been taken back; the render was
    /// attached to it anyway, so it is not paid for again.
    Adopted,
    /// The task already has a render or an output (or is gone): this paid render cannot be
    /// attached; the record is flagged `possible_duplicate` and counted.
    Orphaned,
}

/// What the reaper did with one expired lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    NotExpired,
    Requeued,
    Adopted,
    Resubmit,
    Repoll,
    /// Stalled too often, and moving to the next account of its chain.
    Moved,
    Dead,
    Gone,
}

type SubmitCoalescer = Coalescer<(String, u64), u32, QueueError>;
type CompleteCoalescer = Coalescer<CompleteReq, bool, QueueError>;
type PollAgainCoalescer = Coalescer<(String, u64), bool, QueueError>;

struct CompleteReq {
    id: String,
    fence: u64,
    output: String,
    sha256: String,
    bytes: u64,
    paid: bool,
    by: String,
}

/// One `T` per account name, created on first use.
type PerAccount<T> = Mutex<HashMap<String, Arc<T>>>;

/// Per-account coalescers of the hot transitions, created on first use.
#[derive(Default)]
struct Coalescers {
    submitting: PerAccount<SubmitCoalescer>,
    complete: PerAccount<CompleteCoalescer>,
    poll_again: PerAccount<PollAgainCoalescer>,
}

#[derive(Clone)]
pub struct Queue {
    redis: RedisHandle,
    coalescers: Arc<Coalescers>,
    durable: Durability,
}

/// `redis.durable_submit` and its timeout.
#[derive(Debug, Clone, Copy, Default)]
struct Durability {
    mode: DurableSubmit,
    timeout_ms: u64,
}

impl Durability {
    /// Wait until the writes made so far on `conn` are durable as configured. Run on the very
    /// connection the `submitting` records were written on: `WAIT`/`WAITAOF` cover the writes
    /// of the calling connection.
    ///
    /// On Redis Cluster the wait goes to the primary that holds `key`'s slot, where the records
    /// were written. Sent without a key, the client would ask every primary and take the
    /// smallest answer: one shard left without a replica after a failover would then refuse the
    /// submits of every account, on every shard.
    async fn wait(&self, conn: &mut crate::redis_conn::Conn, key: &str) -> Result<()> {
        let (cmd, needed) = match self.mode {
            DurableSubmit::None => return Ok(()),
            DurableSubmit::Fsync => {
                let mut c = redis::cmd("WAITAOF");
                c.arg(1).arg(0).arg(self.timeout_ms);
                (c, "the local AOF fsync")
            }
            DurableSubmit::Replica => {
                let mut c = redis::cmd("WAIT");
                c.arg(1).arg(self.timeout_ms);
                (c, "one replica")
            }
        };
        let acked: redis::Value = match conn {
            crate::redis_conn::Conn::Cluster(c) => {
                use redis::cluster_routing::{
                    Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
                };
                let node = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(node));
                c.route_command(cmd, routing).await?
            }
            other => cmd.query_async(other).await?,
        };
        // WAIT answers the replica count; WAITAOF [local fsyncs, replica fsyncs].
        let first = match &acked {
            redis::Value::Array(v) => v.first().cloned(),
            other => Some(other.clone()),
        };
        match first {
            Some(redis::Value::Int(n)) if n >= 1 => Ok(()),
            _ => Err(QueueError::NotDurable(format!(
                "redis.durable_submit: {needed} did not confirm the write within {} ms",
                self.timeout_ms
            ))),
        }
    }
}

/// The account's coalescer from `map`, started on first use with `run`, which gets the Redis
/// handle, the account's keys and one batch of requests.
fn coalescer_for<Req, Resp, F, Fut>(
    map: &PerAccount<Coalescer<Req, Resp, QueueError>>,
    redis: &RedisHandle,
    account: &str,
    run: F,
) -> Arc<Coalescer<Req, Resp, QueueError>>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(RedisHandle, AccountKeys, Vec<Req>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<Result<Resp>>>> + Send + 'static,
{
    lock(map)
        .entry(account.to_string())
        .or_insert_with(|| {
            let redis = redis.clone();
            let k = AccountKeys::new(account);
            Arc::new(Coalescer::spawn(
                move |reqs| run(redis.clone(), k.clone(), reqs),
                batch_error,
            ))
        })
        .clone()
}

fn batch_error(e: &QueueError) -> QueueError {
    QueueError::Batch(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fenced_or(id: &str, e: redis::RedisError) -> QueueError {
    if e.to_string().contains("FENCED") {
        QueueError::Fenced(id.to_string())
    } else {
        QueueError::Redis(e)
    }
}

impl Queue {
    pub fn new(redis: RedisHandle) -> Queue {
        Queue {
            redis,
            coalescers: Arc::new(Coalescers::default()),
            durable: Durability::default(),
        }
    }

    /// Connect as `[redis]` says, refusing a server that may evict keys (unless allowed).
    pub async fn connect(cfg: &crate::config::RedisConfig) -> Result<Queue> {
        let redis = RedisHandle::connect(&cfg.url, cfg.pool_size).await?;
        redis.check_no_eviction(cfg.allow_eviction).await?;
        let mut queue = Queue::new(redis);
        queue.durable = Durability {
            mode: cfg.durable_submit,
            timeout_ms: cfg.durable_timeout_ms,
        };
        queue.check_durability().await?;
        Ok(queue)
    }

    /// Make `mark_submitting` wait for durability as `redis.durable_submit` says (tests and
    /// benchmarks that build a queue by hand; call [`Queue::check_durability`] next).
    pub fn with_durable_submit(mut self, mode: DurableSubmit, timeout_ms: u64) -> Queue {
        self.durable = Durability { mode, timeout_ms };
        self
    }

    /// Refuse at startup rather than fail every submit: `fsync` needs `WAITAOF` (Redis 7.2+,
    /// with `appendonly yes`).
    pub async fn check_durability(&self) -> Result<()> {
        if self.durable.mode != DurableSubmit::Fsync {
            return Ok(());
        }
        let mut conn = self.redis.conn().await?;
        let probe: redis::RedisResult<redis::Value> = redis::cmd("WAITAOF")
            .arg(0)
            .arg(0)
            .arg(1)
            .query_async(&mut conn)
            .await;
        match probe {
            Ok(_) => Ok(()),
            Err(e) => Err(QueueError::NotDurable(format!(
                "redis.durable_submit = \"fsync\" needs WAITAOF (Redis 7.2 or newer, with \
                 appendonly yes); the server said: {e}. Use \"replica\" with a replica, \
                 \"none\" with appendfsync always, or upgrade Redis"
            ))),
        }
    }

    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    /// Create the consumer group of an account's ready stream (and the stream) if missing.
    pub async fn ensure_group(&self, account: &str) -> Result<()> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let res: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k.ready())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_task(&self, account: &str, id: &str) -> Result<Option<TaskRecord>> {
        let key = AccountKeys::new(account).task(id);
        let mut conn = self.redis.conn().await?;
        let raw: Option<Vec<u8>> = conn.get(&key).await?;
        raw.map(|s| {
            TaskRecord::from_msgpack(&s).map_err(|source| QueueError::Decode { key, source })
        })
        .transpose()
    }

    /// Several task records of one account in one round trip: per id, the record, `None` when it
    /// is gone, or the error that keeps it from being decoded (one bad record spoils no other).
    pub async fn get_tasks(
        &self,
        account: &str,
        ids: &[String],
    ) -> Result<Vec<Result<Option<TaskRecord>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let k = AccountKeys::new(account);
        let keys: Vec<String> = ids.iter().map(|id| k.task(id)).collect();
        let mut conn = self.redis.conn().await?;
        let raw: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(raw
            .into_iter()
            .zip(keys)
            .map(|(raw, key)| {
                raw.map(|s| {
                    TaskRecord::from_msgpack(&s)
                        .map_err(|source| QueueError::Decode { key, source })
                })
                .transpose()
            })
            .collect())
    }

    /// Which account holds task `id` of `season` (from the season index).
    pub async fn task_account(&self, season: &str, id: &str) -> Result<Option<String>> {
        let mut conn = self.redis.conn().await?;
        Ok(conn.hget(SeasonKeys::new(season).index(), id).await?)
    }

    /// Enqueue expanded tasks, skipping those that exist. `on_progress` gets the number of tasks
    /// handled so far. Safe to re-run after a crash at any point: every step is idempotent.
    pub async fn enqueue(
        &self,
        season: &str,
        title: &str,
        tasks: &[NewTask],
        max_attempts: u32,
        mut on_progress: impl FnMut(usize),
    ) -> Result<EnqueueReport> {
        let mut conn = self.redis.conn().await?;
        let sk = SeasonKeys::new(season);

        // 0. A task the index already places in another account (an operator moved it there
        //    with `dlq requeue --to-provider`) exists: it is not created again in chain[0].
        let mut moved: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for chunk in tasks.chunks(1024) {
            let ids: Vec<&str> = chunk.iter().map(|t| t.id.as_str()).collect();
            let placed: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(sk.index())
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
            for (t, at) in chunk.iter().zip(placed) {
                if at.is_some_and(|a| a != t.account()) {
                    moved.insert(t.id.as_str());
                }
            }
        }
        let report_moved = moved.len() as u64;
        let owned: Vec<NewTask>;
        let tasks: &[NewTask] = if moved.is_empty() {
            tasks
        } else {
            owned = tasks
                .iter()
                .filter(|t| !moved.contains(t.id.as_str()))
                .cloned()
                .collect();
            &owned
        };

        // 1. Registries and the season index, so every later step can find a task by id.
        let mut accounts: Vec<&str> = tasks.iter().map(|t| t.account()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        // One pipeline per hash tag: a cluster refuses pipelines that cross slots.
        let mut fleet_pipe = redis::pipe();
        fleet_pipe.sadd(fleet::seasons(), season).ignore();
        let mut season_pipe = redis::pipe();
        season_pipe.hset(sk.meta(), "title", title).ignore();
        for a in &accounts {
            season_pipe.sadd(sk.accounts(), *a).ignore();
            fleet_pipe.sadd(fleet::accounts(), *a).ignore();
        }
        for chunk in tasks.chunks(1024) {
            let pairs: Vec<(&str, &str)> =
                chunk.iter().map(|t| (t.id.as_str(), t.account())).collect();
            season_pipe.hset_multiple(sk.index(), &pairs).ignore();
        }
        fleet_pipe.query_async::<()>(&mut conn).await?;
        season_pipe.query_async::<()>(&mut conn).await?;

        // 2. Register each task as a dependent of its dependencies *before* it exists, so a
        //    dependency stored from now on will tell it.
        let mut by_dep_account: BTreeMap<&str, redis::Pipeline> = BTreeMap::new();
        for t in tasks {
            for d in &t.deps {
                let member = format!("{}|{}", t.account(), t.id);
                by_dep_account
                    .entry(d.account.as_str())
                    .or_insert_with(redis::pipe)
                    .sadd(AccountKeys::new(&d.account).dependents(&d.id), member)
                    .ignore();
            }
        }
        for pipe in by_dep_account.values() {
            pipe.query_async::<()>(&mut conn).await?;
        }
        // The calls below take pooled connections of their own; holding this one across them
        // could exhaust a small pool.
        drop(conn);

        // 3. Dependencies already stored (from an earlier enqueue) are not pending.
        let stored = self
            .stored_among(tasks.iter().flat_map(|t| t.deps.iter()))
            .await?;

        // 4. Create, one script per account batch.
        let mut report = EnqueueReport {
            new: 0,
            existing: report_moved,
        };
        let mut by_account: BTreeMap<&str, Vec<&NewTask>> = BTreeMap::new();
        for t in tasks {
            by_account.entry(t.account()).or_default().push(t);
        }
        let mut done = 0usize;
        for (account, list) in by_account {
            // enqueue.lua creates the stream's consumer group itself.
            let mut conn = self.redis.conn().await?;
            let k = AccountKeys::new(account);
            for chunk in list.chunks(ENQUEUE_BATCH) {
                let mut inv = SCRIPTS.enqueue.prepare_invoke();
                inv.key(k.ready()).key(k.counts()).key(k.waiting());
                inv.arg(GROUP).arg(chunk.len());
                for t in chunk {
                    inv.key(k.task(&t.id)).key(k.deps(&t.id));
                    let pending: Vec<&str> = t
                        .deps
                        .iter()
                        .filter(|d| !stored.contains(&d.id))
                        .map(|d| d.id.as_str())
                        .collect();
                    let record =
                        initial_record(t, max_attempts)
                            .to_msgpack()
                            .map_err(|source| QueueError::Encode {
                                key: k.task(&t.id),
                                source,
                            })?;
                    inv.arg(record);
                    inv.arg(pending.len());
                    for p in pending {
                        inv.arg(p);
                    }
                }
                let (new, existing): (u64, u64) = inv.invoke_async(&mut conn).await?;
                report.new += new;
                report.existing += existing;
                done += chunk.len();
                on_progress(done);
            }
        }

        // 5. A dependency may have been stored between step 3 and the dependent's creation; its
        //    notifier then found no record to tell. Tell those now (idempotent).
        let stored_now = self
            .stored_among(tasks.iter().flat_map(|t| t.deps.iter()))
            .await?;
        for t in tasks {
            for d in &t.deps {
                if stored_now.contains(&d.id) && !stored.contains(&d.id) {
                    self.dep_done(
                        &DepRef {
                            id: t.id.clone(),
                            account: t.account().to_string(),
                        },
                        &d.id,
                    )
                    .await?;
                }
            }
        }
        Ok(report)
    }

    /// The ids among `deps` whose records are `stored`.
    async fn stored_among<'a>(
        &self,
        deps: impl Iterator<Item = &'a DepRef>,
    ) -> Result<std::collections::HashSet<String>> {
        let mut unique: Vec<&DepRef> = deps.collect();
        unique.sort();
        unique.dedup();
        let mut out = std::collections::HashSet::new();
        if unique.is_empty() {
            return Ok(out);
        }
        let mut conn = self.redis.conn().await?;
        unique.sort_by(|a, b| a.account.cmp(&b.account));
        for same_account in unique.chunk_by(|a, b| a.account == b.account) {
            for chunk in same_account.chunks(512) {
                let mut pipe = redis::pipe();
                for d in chunk {
                    pipe.get(AccountKeys::new(&d.account).task(&d.id));
                }
                let raws: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
                for (d, raw) in chunk.iter().zip(raws) {
                    let rec = raw.and_then(|raw| TaskRecord::from_msgpack(&raw).ok());
                    if rec.is_some_and(|r| r.state == TaskState::Stored) {
                        out.insert(d.id.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Claim delivered stream entries `(entry id, task id)` under a lease, within the account's
    /// quota: each claim takes a key of the account's pool with room (recorded as the record's
    /// `key`). A delivery of a season parked over budget goes back ([`Claim::Parked`]).
    pub async fn claim(
        &self,
        account: &str,
        worker: &str,
        lease_ms: u64,
        pool: impl Into<PoolArgs>,
        deliveries: &[(String, String)],
    ) -> Result<Vec<Claim>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let pool: PoolArgs = pool.into();
        let k = AccountKeys::new(account);
        let mut inv = SCRIPTS.claim.prepare_invoke();
        inv.key(k.ready())
            .key(k.leases())
            .key(k.counts())
            .key(k.paused())
            .key(k.slots())
            .key(k.slot_keys())
            .key(k.parked());
        inv.arg(GROUP).arg(worker).arg(lease_ms).arg(pool.slot_ms);
        pool.push(&k, &mut inv);
        for (entry, id) in deliveries {
            inv.key(k.task(id));
            inv.arg(entry);
        }
        let mut conn = self.redis.conn().await?;
        let replies: Vec<(String, Vec<u8>)> = inv.invoke_async(&mut conn).await?;
        replies
            .into_iter()
            .map(|(status, packed)| match status.as_str() {
                "claimed" => TaskRecord::from_msgpack(&packed)
                    .map(|r| Claim::Claimed(Box::new(r)))
                    .map_err(|source| QueueError::Decode {
                        key: k.ready(),
                        source,
                    }),
                "paused" => Ok(Claim::Paused),
                "parked" => Ok(Claim::Parked {
                    season: String::from_utf8_lossy(&packed).into_owned(),
                }),
                "throttled" => {
                    let text = String::from_utf8_lossy(&packed);
                    let (ms, reason) = text.split_once(':').unwrap_or((&text, ""));
                    Ok(Claim::Throttled {
                        wait_ms: ms.parse().unwrap_or(1_000),
                        reason: reason.to_string(),
                    })
                }
                _ => Ok(Claim::Stale),
            })
            .collect()
    }

    /// Take up to `wanted` poll tokens from the account's fleet-wide poll limiter. Returns
    /// `(granted, ms until the next token)`.
    pub async fn take_poll_tokens(
        &self,
        account: &str,
        interval_us: u64,
        tolerance_us: u64,
        wanted: usize,
    ) -> Result<(usize, u64)> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let (granted, wait): (usize, u64) = SCRIPTS
            .quota_take
            .key(k.gcra_poll())
            .arg(interval_us)
            .arg(tolerance_us)
            .arg(wanted)
            .invoke_async(&mut conn)
            .await?;
        Ok((granted, wait))
    }

    /// How long until some key of the account may take another submit (fetchers ask before
    /// reading).
    pub async fn quota_peek(&self, account: &str, pool: impl Into<PoolArgs>) -> Result<QuotaPeek> {
        let pool: PoolArgs = pool.into();
        let k = AccountKeys::new(account);
        let mut inv = SCRIPTS.quota_peek.prepare_invoke();
        inv.key(k.paused()).key(k.slots()).key(k.slot_keys());
        pool.push(&k, &mut inv);
        let mut conn = self.redis.conn().await?;
        let (ms, reason): (i64, String) = inv.invoke_async(&mut conn).await?;
        Ok(match ms {
            m if m < 0 => QuotaPeek::Paused,
            0 => QuotaPeek::Go,
            m => QuotaPeek::Wait {
                ms: m as u64,
                reason,
            },
        })
    }

    /// Extend the leases `(task id, fence)` still held; returns which ones are still ours.
    pub async fn heartbeat(
        &self,
        account: &str,
        worker: &str,
        lease_ms: u64,
        held: &[(String, u64)],
    ) -> Result<Vec<bool>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let k = AccountKeys::new(account);
        let mut inv = SCRIPTS.heartbeat.prepare_invoke();
        inv.key(k.leases()).arg(worker).arg(lease_ms);
        for (id, fence) in held {
            inv.key(k.task(id)).arg(*fence);
        }
        let mut conn = self.redis.conn().await?;
        let out: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(out.into_iter().map(|v| v == 1).collect())
    }

    /// Record the attempt before the HTTP submit. Returns the attempt number. Concurrent calls
    /// for one account are coalesced into one script run.
    pub async fn mark_submitting(&self, account: &str, id: &str, fence: u64) -> Result<u32> {
        let durable = self.durable;
        let coalescer = coalescer_for(
            &self.coalescers.submitting,
            &self.redis,
            account,
            move |redis, k, reqs: Vec<(String, u64)>| async move {
                let mut inv = SCRIPTS.mark_submitting.prepare_invoke();
                inv.key(k.counts());
                for (id, fence) in &reqs {
                    inv.key(k.task(id)).arg(*fence);
                }
                let mut conn = redis.conn().await?;
                let attempts: Vec<u32> = inv.invoke_async(&mut conn).await?;
                // One durability wait covers the whole batch (group commit).
                durable.wait(&mut conn, &k.counts()).await?;
                Ok(reqs
                    .iter()
                    .zip(attempts)
                    .map(|((id, _), a)| {
                        if a == 0 {
                            Err(QueueError::Fenced(id.clone()))
                        } else {
                            Ok(a)
                        }
                    })
                    .collect())
            },
        );
        coalescer
            .call(
                (id.to_string(), fence),
                QueueError::Batch("queue closed".into()),
            )
            .await
    }

    /// Save the provider's task id and move the task to the await schedule. The caller paid
    /// for this render, so it is adopted when the record went back in time, and flagged when it
    /// cannot be attached (`mark_accepted.lua` explains).
    pub async fn mark_accepted(
        &self,
        account: &str,
        id: &str,
        fence: u64,
        provider_task_id: &str,
        poll_locator: Option<&str>,
        first_poll_ms: u64,
    ) -> Result<Accepted> {
        self.mark_accepted_attempt(
            account,
            id,
            fence,
            0,
            provider_task_id,
            poll_locator,
            first_poll_ms,
        )
        .await
    }

    /// [`Queue::mark_accepted`] for a submit recorded as attempt `attempt`, so a record that
    /// lost the write counting it counts it again.
    #[allow(clippy::too_many_arguments)]
    pub async fn mark_accepted_attempt(
        &self,
        account: &str,
        id: &str,
        fence: u64,
        attempt: u32,
        provider_task_id: &str,
        poll_locator: Option<&str>,
        first_poll_ms: u64,
    ) -> Result<Accepted> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let outcome: String = SCRIPTS
            .mark_accepted
            .key(k.task(id))
            .key(k.leases())
            .key(k.awaiting())
            .key(k.counts())
            .key(k.delayed())
            .key(k.stats())
            .arg(fence)
            .arg(provider_task_id)
            .arg(poll_locator.unwrap_or(""))
            .arg(first_poll_ms)
            .arg(attempt)
            .invoke_async(&mut conn)
            .await?;
        match outcome.as_str() {
            "accepted" => Ok(Accepted::Accepted),
            "adopted" => Ok(Accepted::Adopted),
            "orphaned" => Ok(Accepted::Orphaned),
            _ => Err(QueueError::Reply {
                script: "mark_accepted",
                detail: outcome,
            }),
        }
    }

    /// The account's render-time histogram (empty when nothing finished yet).
    pub async fn render_times(&self, account: &str) -> Result<crate::render_times::RenderTimes> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let fields: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(k.render_times())
            .query_async(&mut conn)
            .await?;
        Ok(crate::render_times::RenderTimes::from_fields(&fields))
    }

    /// Take up to `limit` renders due for a poll, under a poll lease.
    pub async fn poll_take(
        &self,
        account: &str,
        limit: usize,
        poll_lease_ms: u64,
    ) -> Result<DueRenders> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let reply: Vec<redis::Value> = SCRIPTS
            .poll_take
            .key(k.awaiting())
            .arg(limit)
            .arg(poll_lease_ms)
            .invoke_async(&mut conn)
            .await?;
        DueRenders::from_reply(reply)
    }

    /// Schedule the next poll of a render that is still running. Returns false when the render
    /// left the schedule meanwhile. Concurrent calls for one account are coalesced into one
    /// script run.
    pub async fn poll_again(&self, account: &str, id: &str, delay_ms: u64) -> Result<bool> {
        let coalescer = coalescer_for(
            &self.coalescers.poll_again,
            &self.redis,
            account,
            |redis, k, reqs: Vec<(String, u64)>| async move {
                let mut inv = SCRIPTS.poll_again.prepare_invoke();
                inv.key(k.awaiting());
                for (id, delay_ms) in &reqs {
                    inv.arg(id).arg(*delay_ms);
                }
                let mut conn = redis.conn().await?;
                let done: Vec<i64> = inv.invoke_async(&mut conn).await?;
                if done.len() != reqs.len() {
                    return Err(QueueError::Reply {
                        script: "poll_again",
                        detail: format!("{} results for {} renders", done.len(), reqs.len()),
                    });
                }
                Ok(done.into_iter().map(|d| Ok(d == 1)).collect())
            },
        );
        coalescer
            .call(
                (id.to_string(), delay_ms),
                QueueError::Batch("poll_again coalescer stopped".into()),
            )
            .await
    }

    /// A provider called back that render `id` (provider task id `provider_task_id`)
    /// finished: move its next poll to now, once (`poll_now.lua`).
    pub async fn poll_now(
        &self,
        account: &str,
        id: &str,
        provider_task_id: &str,
    ) -> Result<PollNow> {
        const FORGET_AFTER_MS: u64 = 3_600_000;
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let outcome: String = SCRIPTS
            .poll_now
            .key(k.awaiting())
            .key(k.task(id))
            .key(k.hooked())
            .arg(id)
            .arg(provider_task_id)
            .arg(FORGET_AFTER_MS)
            .invoke_async(&mut conn)
            .await?;
        match outcome.as_str() {
            "moved" => Ok(PollNow::Moved),
            "duplicate" => Ok(PollNow::Duplicate),
            "unknown" => Ok(PollNow::Unknown),
            _ => Err(QueueError::Reply {
                script: "poll_now",
                detail: outcome,
            }),
        }
    }

    /// Remove a schedule entry whose task no longer awaits a render (record gone or in another
    /// state, checked atomically). Returns true when it was removed.
    pub async fn poll_drop(&self, account: &str, id: &str) -> Result<bool> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let removed: i64 = SCRIPTS
            .poll_drop
            .key(k.awaiting())
            .key(k.task(id))
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok(removed == 1)
    }

    /// A poll saw success: take the task under a lease to download it. Returns the new fence.
    pub async fn render_done(
        &self,
        account: &str,
        id: &str,
        provider_task_id: &str,
        result_json: &str,
        worker: &str,
        lease_ms: u64,
    ) -> Result<u64> {
        self.render_done_timed(
            account,
            id,
            provider_task_id,
            result_json,
            worker,
            lease_ms,
            None,
        )
        .await
    }

    /// [`Queue::render_done`], adding `render_ms` (the poller's estimate of how long the render
    /// took) to the account's render-time histogram ([`crate::render_times`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn render_done_timed(
        &self,
        account: &str,
        id: &str,
        provider_task_id: &str,
        result_json: &str,
        worker: &str,
        lease_ms: u64,
        render_ms: Option<u64>,
    ) -> Result<u64> {
        let k = AccountKeys::new(account);
        let bucket = render_ms.map_or_else(String::new, |ms| {
            crate::render_times::bucket_of(ms).to_string()
        });
        let mut conn = self.redis.conn().await?;
        SCRIPTS
            .render_done
            .key(k.task(id))
            .key(k.awaiting())
            .key(k.leases())
            .key(k.counts())
            .key(k.slots())
            .key(k.render_times())
            .key(k.hooked())
            .arg(provider_task_id)
            .arg(result_json)
            .arg(worker)
            .arg(lease_ms)
            .arg(bucket)
            .arg(crate::render_times::DECAY_AT)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| fenced_or(id, e))
    }

    /// The output is stored: mark the task done. Returns true when it has dependents to tell
    /// (it is then in the notify outbox until [`Queue::notify_dependents`] runs). Concurrent
    /// calls for one account are coalesced into one script run.
    pub async fn complete(&self, account: &str, id: &str, done: &Completion<'_>) -> Result<bool> {
        let coalescer = coalescer_for(
            &self.coalescers.complete,
            &self.redis,
            account,
            |redis, k, reqs: Vec<CompleteReq>| async move {
                let mut inv = SCRIPTS.complete.prepare_invoke();
                inv.key(k.leases())
                    .key(k.counts())
                    .key(k.notify())
                    .key(k.slots())
                    .key(k.awaiting())
                    .key(k.delayed())
                    .key(k.stats());
                for r in &reqs {
                    inv.key(k.task(&r.id)).key(k.dependents(&r.id));
                    inv.arg(r.fence)
                        .arg(&r.output)
                        .arg(&r.sha256)
                        .arg(r.bytes)
                        .arg(if r.paid { "1" } else { "0" })
                        .arg(&r.by);
                }
                let mut conn = redis.conn().await?;
                let done: Vec<i64> = inv.invoke_async(&mut conn).await?;
                Ok(reqs
                    .iter()
                    .zip(done)
                    .map(|(r, d)| match d {
                        0 => Err(QueueError::Fenced(r.id.clone())),
                        d => Ok(d == 2),
                    })
                    .collect())
            },
        );
        let req = CompleteReq {
            id: id.to_string(),
            fence: done.fence,
            output: done.output.to_string(),
            sha256: done.sha256.to_string(),
            bytes: done.bytes,
            paid: done.paid,
            by: done.by.to_string(),
        };
        coalescer
            .call(req, QueueError::Batch("queue closed".into()))
            .await
    }

    /// Apply a failure decision. Returns the state the task is in afterwards.
    pub async fn fail(
        &self,
        account: &str,
        id: &str,
        guard: &FailGuard,
        decision: &FailDecision,
        info: &FailInfo<'_>,
    ) -> Result<TaskState> {
        self.fail_on_key(account, None, id, guard, decision, info)
            .await
    }

    /// [`Queue::fail`] for an attempt made with pool key `key` (the record's `key`): a 429
    /// cools only that key, and out of credits or a refused key pauses only that key.
    pub async fn fail_on_key(
        &self,
        account: &str,
        key: Option<&str>,
        id: &str,
        guard: &FailGuard,
        decision: &FailDecision,
        info: &FailInfo<'_>,
    ) -> Result<TaskState> {
        let pool_key = key.unwrap_or("");
        let k = AccountKeys::new(account);
        let mut inv = SCRIPTS.fail.prepare_invoke();
        inv.key(k.task(id))
            .key(k.leases())
            .key(k.awaiting())
            .key(k.delayed())
            .key(k.dead())
            .key(k.counts())
            .key(k.slots())
            .key(k.key_cooldown(pool_key))
            .key(k.key_paused(pool_key))
            .key(k.ready())
            .key(k.moves());
        match guard {
            FailGuard::Held { fence } => inv.arg("held").arg(*fence),
            FailGuard::Render { provider_task_id } => inv.arg("render").arg(provider_task_id),
        };
        let mut target = "";
        match decision {
            FailDecision::Retry {
                delay_ms,
                refund_attempt,
            } => inv
                .arg("retry")
                .arg(*delay_ms)
                .arg(if *refund_attempt { "1" } else { "0" }),
            FailDecision::Repoll { delay_ms } => inv.arg("repoll").arg(*delay_ms).arg("0"),
            FailDecision::Pause => inv.arg("pause").arg(0).arg("1"),
            FailDecision::Move { to } => {
                target = to;
                inv.arg("move").arg(0).arg("0")
            }
            FailDecision::Dead => inv.arg("dead").arg(0).arg("0"),
        };
        inv.arg(info.class.as_str())
            .arg(info.code.unwrap_or(""))
            .arg(info.message)
            .arg(info.cooldown_ms)
            .arg(GROUP)
            .arg(target);
        let mut conn = self.redis.conn().await?;
        let state: String = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| fenced_or(id, e))?;
        TaskState::parse(&state).ok_or(QueueError::Reply {
            script: "fail",
            detail: state,
        })
    }

    /// Give back a claimed task that was never submitted.
    pub async fn release(&self, account: &str, id: &str, fence: u64) -> Result<()> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        SCRIPTS
            .release
            .key(k.task(id))
            .key(k.leases())
            .key(k.ready())
            .key(k.counts())
            .key(k.slots())
            .arg(fence)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| fenced_or(id, e))
    }

    /// Tell `dependent` that dependency `dep_id` is stored.
    ///
    /// The notification is made as durable as a submit record (`redis.durable_submit`) before
    /// this returns: the caller clears its outbox entry next, on another shard, and a
    /// notification lost in a failover after that would leave the dependent waiting.
    pub async fn dep_done(&self, dependent: &DepRef, dep_id: &str) -> Result<String> {
        let k = AccountKeys::new(&dependent.account);
        let mut conn = self.redis.conn().await?;
        let state: String = SCRIPTS
            .dep_done
            .key(k.task(&dependent.id))
            .key(k.deps(&dependent.id))
            .key(k.ready())
            .key(k.counts())
            .key(k.waiting())
            .arg(dep_id)
            .arg(GROUP)
            .invoke_async(&mut conn)
            .await?;
        if state == "ready" || state == "waiting" {
            self.durable.wait(&mut conn, &k.counts()).await?;
        }
        Ok(state)
    }

    /// Tell every dependent of stored task `id` (in `account`), then clear its outbox entry.
    pub async fn notify_dependents(&self, account: &str, id: &str) -> Result<usize> {
        let k = AccountKeys::new(account);
        // Each dep_done takes its own pooled connection: holding one here while waiting for
        // another deadlocks once as many completions run at once as the pool has connections.
        let members: Vec<String> = self.redis.conn().await?.smembers(k.dependents(id)).await?;
        // Concurrently: a character image can have dozens of dependents, each in one round trip.
        let told = futures::future::join_all(members.iter().filter_map(|m| {
            let (acct, dep_id) = m.split_once('|')?;
            let dependent = DepRef {
                id: dep_id.to_string(),
                account: acct.to_string(),
            };
            Some(async move { self.dep_done(&dependent, id).await })
        }))
        .await;
        // The outbox entry stays until every dependent was told.
        for result in told {
            result?;
        }
        let _: i64 = self.redis.conn().await?.zrem(k.notify(), id).await?;
        Ok(members.len())
    }

    /// Stored tasks whose dependents are still being told, in the notify outboxes of the
    /// accounts holding `season`'s tasks (entries of other seasons sharing an account count too:
    /// callers use it to tell "waiting on a dead dependency" from "about to be readied").
    pub async fn notifications_pending(&self, season: &str) -> Result<u64> {
        let mut conn = self.redis.conn().await?;
        let accounts: Vec<String> = conn.smembers(SeasonKeys::new(season).accounts()).await?;
        let mut pending = 0;
        for a in accounts {
            let n: u64 = conn.zcard(AccountKeys::new(&a).notify()).await?;
            pending += n;
        }
        Ok(pending)
    }

    /// Tasks `moving` to another account whose move has been unfinished for at least
    /// `older_than_ms` (the worker that recorded it normally finishes it at once).
    pub async fn moves_backlog(
        &self,
        account: &str,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.outbox_backlog(AccountKeys::new(account).moves(), older_than_ms, limit)
            .await
    }

    /// Members of an outbox ZSET (scored by Redis time) at least `older_than_ms` old.
    async fn outbox_backlog(
        &self,
        key: String,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>> {
        Ok(self.scored_before(&key, older_than_ms, limit).await?.1)
    }

    /// The Redis time now, and up to `limit` members of ZSET `key` scored at least
    /// `older_than_ms` before it.
    async fn scored_before(
        &self,
        key: &str,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<(i64, Vec<String>)> {
        let mut conn = self.redis.conn().await?;
        let now = redis_time_ms(&mut conn).await?;
        let max = now - older_than_ms as i64;
        let members = conn
            .zrangebyscore_limit(key, "-inf", max, 0, limit as isize)
            .await?;
        Ok((now, members))
    }

    /// Stored tasks whose dependents have not all been told for at least `older_than_ms`.
    pub async fn notify_backlog(
        &self,
        account: &str,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.outbox_backlog(AccountKeys::new(account).notify(), older_than_ms, limit)
            .await
    }

    /// Promote up to `limit` due retries to ready. Returns how many moved.
    pub async fn promote_due(&self, account: &str, limit: usize) -> Result<usize> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let now = redis_time_ms(&mut conn).await?;
        let due: Vec<String> = conn
            .zrangebyscore_limit(k.delayed(), "-inf", now, 0, limit as isize)
            .await?;
        let mut moved = 0;
        for id in due {
            let n: i64 = SCRIPTS
                .promote
                .key(k.task(&id))
                .key(k.delayed())
                .key(k.ready())
                .key(k.counts())
                .arg(GROUP)
                .invoke_async(&mut conn)
                .await?;
            moved += n as usize;
        }
        Ok(moved)
    }

    /// Lease holders whose lease ran out (by the Redis clock).
    pub async fn expired_leases(&self, account: &str, limit: usize) -> Result<Vec<String>> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let now = redis_time_ms(&mut conn).await?;
        Ok(conn
            .zrangebyscore_limit(k.leases(), "-inf", now, 0, limit as isize)
            .await?)
    }

    /// Act on one expired lease. `reconciled` is the provider id (and locator) found for a task
    /// that was `submitting`, when the family could look it up.
    pub async fn reap_lease(
        &self,
        account: &str,
        id: &str,
        max_stalls: u32,
        reconciled: Option<(&str, Option<&str>)>,
        next_account: Option<&str>,
        charges: bool,
    ) -> Result<LeaseAction> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let (ptid, loc) = reconciled
            .map(|(p, l)| (p, l.unwrap_or("")))
            .unwrap_or(("", ""));
        let action: String = SCRIPTS
            .reap_lease
            .key(k.task(id))
            .key(k.leases())
            .key(k.ready())
            .key(k.awaiting())
            .key(k.dead())
            .key(k.counts())
            .key(k.stats())
            .key(k.slots())
            .key(k.moves())
            .arg(GROUP)
            .arg(max_stalls)
            .arg(ptid)
            .arg(loc)
            .arg(next_account.unwrap_or(""))
            .arg(if charges { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(match action.as_str() {
            "not_expired" => LeaseAction::NotExpired,
            "requeued" => LeaseAction::Requeued,
            "adopted" => LeaseAction::Adopted,
            "resubmit" => LeaseAction::Resubmit,
            "repoll" => LeaseAction::Repoll,
            "moved" => LeaseAction::Moved,
            "dead" => LeaseAction::Dead,
            _ => LeaseAction::Gone,
        })
    }

    /// Stream entries delivered more than `min_idle_ms` ago and never claimed (their reader
    /// died between XREADGROUP and claim.lua): put each task back as a fresh entry.
    pub async fn redeliver_orphans(
        &self,
        account: &str,
        min_idle_ms: u64,
        reaper: &str,
    ) -> Result<usize> {
        let k = AccountKeys::new(account);
        let mut conn = self.redis.conn().await?;
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(k.ready())
            .arg(GROUP)
            .arg(reaper)
            .arg(min_idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(100)
            .query_async(&mut conn)
            .await?;
        let entries = parse_xautoclaim(&reply);
        let mut readded = 0;
        for (entry, id) in entries {
            let n: i64 = SCRIPTS
                .redeliver
                .key(k.task(&id))
                .key(k.ready())
                .arg(GROUP)
                .arg(&entry)
                .invoke_async(&mut conn)
                .await?;
            readded += n as usize;
        }
        Ok(readded)
    }

    /// Per-state counts of a season, summed over its accounts (O(accounts × states)).
    pub async fn season_counts(&self, season: &str) -> Result<BTreeMap<TaskState, u64>> {
        // Not held across account_counts, which takes its own connection.
        let accounts: Vec<String> = self
            .redis
            .conn()
            .await?
            .smembers(SeasonKeys::new(season).accounts())
            .await?;
        let mut out: BTreeMap<TaskState, u64> =
            TaskState::ALL.into_iter().map(|s| (s, 0)).collect();
        for a in accounts {
            let counts = self.account_counts(&a, season).await?;
            for (s, n) in counts {
                *out.entry(s).or_default() += n;
            }
        }
        Ok(out)
    }

    /// Per-state counts of one account for one season.
    pub async fn account_counts(
        &self,
        account: &str,
        season: &str,
    ) -> Result<HashMap<TaskState, u64>> {
        let mut conn = self.redis.conn().await?;
        let fields: Vec<String> = TaskState::ALL
            .iter()
            .map(|s| keys::count_field(season, *s))
            .collect();
        let vals: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(AccountKeys::new(account).counts())
            .arg(&fields)
            .query_async(&mut conn)
            .await?;
        Ok(TaskState::ALL
            .into_iter()
            .zip(vals)
            .map(|(s, v)| (s, v.unwrap_or(0).max(0) as u64))
            .collect())
    }

    /// All seasons ever enqueued.
    pub async fn seasons(&self) -> Result<Vec<String>> {
        let mut conn = self.redis.conn().await?;
        let mut v: Vec<String> = conn.smembers(fleet::seasons()).await?;
        v.sort();
        Ok(v)
    }

    /// All accounts that ever had tasks.
    pub async fn accounts(&self) -> Result<Vec<String>> {
        let mut conn = self.redis.conn().await?;
        let mut v: Vec<String> = conn.smembers(fleet::accounts()).await?;
        v.sort();
        Ok(v)
    }

    /// Every task record of a season (for listings; O(tasks), never used by metrics).
    pub async fn season_tasks(&self, season: &str) -> Result<Vec<TaskRecord>> {
        let mut conn = self.redis.conn().await?;
        let mut index: Vec<(String, String)> =
            conn.hgetall(SeasonKeys::new(season).index()).await?;
        index.sort_by(|a, b| a.1.cmp(&b.1));
        let mut out = Vec::with_capacity(index.len());
        for same_account in index.chunk_by(|a, b| a.1 == b.1) {
            for chunk in same_account.chunks(512) {
                let mut pipe = redis::pipe();
                for (id, acct) in chunk {
                    pipe.get(AccountKeys::new(acct).task(id));
                }
                let raws: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
                for ((id, acct), raw) in chunk.iter().zip(raws) {
                    if let Some(raw) = raw {
                        out.push(TaskRecord::from_msgpack(&raw).map_err(|source| {
                            QueueError::Decode {
                                key: AccountKeys::new(acct).task(id),
                                source,
                            }
                        })?);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(out)
    }
}

/// The task record every new task starts from; the enqueue script sets state and times.
fn initial_record(t: &NewTask, max_attempts: u32) -> TaskRecord {
    TaskRecord {
        id: t.id.clone(),
        season: t.season.clone(),
        group: t.group.clone(),
        label: t.label.clone(),
        kind: t.kind(),
        state: TaskState::Waiting,
        account: t.account().to_string(),
        chain: t.chain.clone(),
        chain_pos: 0,
        fence: 0,
        attempt: 0,
        max_attempts,
        stalls: 0,
        entry: None,
        holder: None,
        key: None,
        provider_task_id: None,
        poll_locator: None,
        result: None,
        polls: 0,
        fetch_failures: 0,
        moving_to: None,
        deps: t.deps.clone(),
        payload: t.payload.clone(),
        ext: t.ext.clone(),
        output: None,
        sha256: None,
        bytes: None,
        done_by: None,
        failure: None,
        errors: Vec::new(),
        possible_duplicate: false,
        created_ms: 0,
        updated_ms: 0,
        ready_ms: None,
        submitted_ms: None,
        done_ms: None,
    }
}

/// Redis server time in ms (for range queries outside scripts).
pub async fn redis_time_ms(conn: &mut crate::redis_conn::Conn) -> Result<i64> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}

/// `(entry id, task id)` pairs from an XAUTOCLAIM reply; deleted entries come back as nil.
fn parse_xautoclaim(reply: &redis::Value) -> Vec<(String, String)> {
    use redis::Value;
    let mut out = Vec::new();
    let Value::Array(parts) = reply else {
        return out;
    };
    let Some(Value::Array(entries)) = parts.get(1) else {
        return out;
    };
    for e in entries {
        let Value::Array(pair) = e else { continue };
        let (Some(id), Some(Value::Array(fields))) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let Ok(entry) = redis::from_redis_value::<String>(id.clone()) else {
            continue;
        };
        let mut it = fields.iter();
        while let (Some(f), Some(v)) = (it.next(), it.next()) {
            if redis::from_redis_value::<String>(f.clone()).ok().as_deref() == Some("id") {
                if let Ok(task) = redis::from_redis_value::<String>(v.clone()) {
                    out.push((entry.clone(), task));
                }
            }
        }
    }
    out
}

/// Read up to `count` new deliveries for `worker` from an account's ready stream, blocking up to
/// `block_ms` (0: not at all) on `conn` (a dedicated connection from
/// [`RedisHandle::blocking_conn`]).
pub async fn read_ready(
    conn: &mut crate::redis_conn::Conn,
    account: &str,
    worker: &str,
    count: usize,
    block_ms: u64,
) -> Result<Vec<(String, String)>> {
    let k = AccountKeys::new(account);
    let mut opts = redis::streams::StreamReadOptions::default()
        .group(GROUP, worker)
        .count(count);
    // `BLOCK 0` means "forever" to Redis: 0 here means "do not block".
    if block_ms > 0 {
        opts = opts.block(block_ms as usize);
    }
    let reply: Option<redis::streams::StreamReadReply> =
        conn.xread_options(&[k.ready()], &[">"], &opts).await?;
    let mut out = Vec::new();
    if let Some(reply) = reply {
        for key in reply.keys {
            for entry in key.ids {
                if let Some(id) = entry.get::<String>("id") {
                    out.push((entry.id.clone(), id));
                }
            }
        }
    }
    Ok(out)
}
