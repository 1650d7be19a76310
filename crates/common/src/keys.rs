//! The Redis key map. Every key dramaq writes is built here and nowhere else.
//!
//! Keys of one provider account share the hash tag `{<account>}` so every transition script
//! touches a single Cluster slot; season-wide indexes share `{season:<id>}`; fleet-wide registries
//! share `{dramaq}`. ARCHITECTURE.md lists each key with its type and the scripts that touch it;
//! keep the two in step.

/// Prefix of every key, so `dramaq`'s keys are easy to find and to prove absent.
pub const PREFIX: &str = "dq";

/// The consumer group every worker joins on every ready stream.
pub(crate) const GROUP: &str = "workers";

/// Keys of one provider account (one hash tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountKeys {
    account: String,
    tag: String,
}

impl AccountKeys {
    pub fn new(account: &str) -> AccountKeys {
        AccountKeys {
            account: account.to_string(),
            tag: format!("{PREFIX}:{{{account}}}"),
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// STRING (JSON): the task record.
    pub fn task(&self, id: &str) -> String {
        format!("{}:t:{id}", self.tag)
    }

    /// STREAM with consumer group [`GROUP`]: ready tasks (`id` field = task id).
    pub fn ready(&self) -> String {
        format!("{}:ready", self.tag)
    }

    /// ZSET task id → lease expiry (ms, Redis clock): claimed, submitting and downloading tasks.
    pub fn leases(&self) -> String {
        format!("{}:leases", self.tag)
    }

    /// ZSET task id → due time (ms): the retry schedule.
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.tag)
    }

    /// ZSET task id → next poll time (ms): the await schedule of submitted renders. Taking a due
    /// task moves its score forward by the poll lease, so a poller that dies gives it back.
    pub fn awaiting(&self) -> String {
        format!("{}:await", self.tag)
    }

    /// SET of dependency ids a waiting task still waits for.
    pub fn deps(&self, id: &str) -> String {
        format!("{}:deps:{id}", self.tag)
    }

    /// SET of `account|id` of the tasks that wait for this one.
    pub fn dependents(&self, id: &str) -> String {
        format!("{}:rdeps:{id}", self.tag)
    }

    /// ZSET task id → time it was last checked (at first: created): the account's `waiting`
    /// tasks, for the reaper's audit of notifications lost after they were sent.
    pub fn waiting(&self) -> String {
        format!("{}:waiting", self.tag)
    }

    /// ZSET task id → time stored: stored tasks whose dependents are not all told yet (outbox).
    pub fn notify(&self) -> String {
        format!("{}:notify", self.tag)
    }

    /// ZSET task id → time the move was recorded: outbox of `moving` tasks whose move to another
    /// account has not finished (fallback or an operator's move).
    pub fn moves(&self) -> String {
        format!("{}:moves", self.tag)
    }

    /// STRING (JSON, with a TTL): an LLM answer that arrived, keyed by the sha256 of the request
    /// that got it. An openai-chat worker looks here before paying for a call, so a request
    /// answered once (before a crash, or by a repeated run) is never paid again.
    pub fn chat_answer(&self, request_sha256: &str) -> String {
        format!("{}:chat:{request_sha256}", self.tag)
    }

    /// HASH `<season>|calls`, `<season>|input_tokens`, `<season>|cached_tokens`,
    /// `<season>|output_tokens`, `<season>|usd_micros` → totals: what the account's chat calls
    /// used and cost, per season (`dramaq generate`, `dramaq status`).
    pub fn chat_usage(&self) -> String {
        format!("{}:chat_usage", self.tag)
    }

    /// ZSET task id → time of death: the dead-letter set.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.tag)
    }

    /// HASH `<season>|<state>` → count, kept by every transition: O(1) status and gauges.
    pub fn counts(&self) -> String {
        format!("{}:counts", self.tag)
    }

    /// HASH of counters that are not per state (`possible_duplicates`, `stalls`, ...).
    pub fn stats(&self) -> String {
        format!("{}:stats", self.tag)
    }

    /// STRING (JSON reason): present while the account is paused (claims stop; renders still
    /// complete). Set by an operator, or by a worker when the provider says the account is out of
    /// credits or over its spend cap.
    pub fn paused(&self) -> String {
        format!("{}:paused", self.tag)
    }

    /// STRING with a TTL: present while the whole account cools down after a 429.
    pub fn cooldown(&self) -> String {
        format!("{}:cooldown", self.tag)
    }

    /// STRING: the GCRA limiter's theoretical arrival time (µs, Redis clock) for submits.
    pub fn gcra(&self) -> String {
        format!("{}:gcra", self.tag)
    }

    /// STRING: the GCRA state (µs) of the account's poll-rate limiter.
    pub(crate) fn gcra_poll(&self) -> String {
        format!("{}:gcra_poll", self.tag)
    }

    /// HASH bucket → count (and `n`, the total): the account's render-time histogram, one
    /// observation per finished render (`render_times`). The poller schedules polls from it.
    pub fn render_times(&self) -> String {
        format!("{}:rtimes", self.tag)
    }

    /// ZSET task id → time (ms): renders whose finish a provider callback announced, so a
    /// repeated callback is ignored. Left by `render_done`; entries older than an hour are
    /// trimmed by `poll_now`.
    pub fn hooked(&self) -> String {
        format!("{}:hooked", self.tag)
    }

    /// ZSET task id → slot lease expiry (ms): the renders holding a concurrency slot.
    pub fn slots(&self) -> String {
        format!("{}:slots", self.tag)
    }

    /// HASH UTC day number → submits that day (daily cap).
    pub fn daily(&self) -> String {
        format!("{}:daily", self.tag)
    }

    /// A per-key quota key of pool key `key`: `dq:{A}:key:<key>:<what>`. The unnamed key of an
    /// account without a pool (`""`) keeps the account's own names (`dq:{A}:<what>`), so a
    /// single-key account's state is where it always was.
    fn pool(&self, key: &str, what: &str) -> String {
        if key.is_empty() {
            format!("{}:{what}", self.tag)
        } else {
            format!("{}:key:{key}:{what}", self.tag)
        }
    }

    /// STRING (JSON reason): present while pool key `key` is paused (out of credits, auth).
    /// The unnamed key's is the account's own [`AccountKeys::paused`].
    pub fn key_paused(&self, key: &str) -> String {
        self.pool(key, "paused")
    }

    /// STRING with a TTL: pool key `key` cools down after a 429.
    pub fn key_cooldown(&self, key: &str) -> String {
        self.pool(key, "cooldown")
    }

    /// STRING: GCRA state (µs) of pool key `key`'s submit rate.
    pub fn key_gcra(&self, key: &str) -> String {
        self.pool(key, "gcra")
    }

    /// HASH UTC day number → submits through pool key `key` that day.
    pub fn key_daily(&self, key: &str) -> String {
        self.pool(key, "daily")
    }

    /// HASH task id → pool key name of the render holding that slot of [`AccountKeys::slots`]
    /// (a pool's per-key render count). Releasing scripts only `ZREM` the slot; `claim.lua`
    /// drops owners whose slot is gone.
    pub fn slot_keys(&self) -> String {
        format!("{}:slot_keys", self.tag)
    }

    /// SET of seasons parked (over budget) whose deliveries this account's claims put back.
    /// A copy, in this account's slot, of each season's `parked` flag.
    pub fn parked(&self) -> String {
        format!("{}:parked", self.tag)
    }
}

/// Field of [`AccountKeys::counts`].
pub(crate) fn count_field(season: &str, state: crate::model::TaskState) -> String {
    format!("{season}|{}", state.as_str())
}

/// Keys of one season (one hash tag).
#[derive(Debug, Clone)]
pub struct SeasonKeys {
    tag: String,
}

impl SeasonKeys {
    pub fn new(season: &str) -> SeasonKeys {
        SeasonKeys {
            tag: format!("{PREFIX}:{{season:{season}}}"),
        }
    }

    /// HASH: title, created_ms, script digest of the last enqueue.
    pub fn meta(&self) -> String {
        format!("{}:meta", self.tag)
    }

    /// HASH task id → account holding its record: lookups by id from the CLI and the notifier.
    pub fn index(&self) -> String {
        format!("{}:index", self.tag)
    }

    /// SET of accounts that hold this season's tasks (status sums their counts).
    pub fn accounts(&self) -> String {
        format!("{}:accounts", self.tag)
    }

    /// HASH of the season's takes and review state (`crate::takes`): `scene:<label>` → the
    /// scene's numbered takes, selection and approvals (JSON); `episode:<group>` → what its
    /// assembly is made of and the assembly id of the current selection (JSON); `characters` →
    /// the character sheet tasks (JSON).
    pub fn takes(&self) -> String {
        format!("{}:takes", self.tag)
    }

    /// HASH: the season's budget in micro-USD (`cap`, `reserved`, `spent`) and `parked` while
    /// the next task did not fit (see ARCHITECTURE.md, "Season budgets").
    pub fn budget(&self) -> String {
        format!("{}:budget", self.tag)
    }

    /// HASH task id → micro-USD reserved for its attempt in flight.
    pub fn reservations(&self) -> String {
        format!("{}:resv", self.tag)
    }

    /// HASH `<id>#<attempt>` → spend record (JSON: usd, group, kind, account, key): what each
    /// settled attempt cost; settling the same attempt twice is a no-op.
    pub fn ledger(&self) -> String {
        format!("{}:ledger", self.tag)
    }
}

/// Fleet-wide keys.
pub mod fleet {
    use super::PREFIX;

    /// SET of season ids ever enqueued.
    pub fn seasons() -> String {
        format!("{PREFIX}:{{dramaq}}:seasons")
    }

    /// SET of accounts that have a ready stream (the reaper's worklist).
    pub fn accounts() -> String {
        format!("{PREFIX}:{{dramaq}}:accounts")
    }

    /// ZSET worker id → heartbeat expiry (ms).
    pub fn workers() -> String {
        format!("{PREFIX}:{{dramaq}}:workers")
    }

    /// HASH per worker: host, pid, started, providers, held tasks count.
    pub fn worker(id: &str) -> String {
        format!("{PREFIX}:{{dramaq}}:worker:{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_account_keys_share_one_tag() {
        let k = AccountKeys::new("kling-main");
        for key in [
            k.task("vid-1"),
            k.ready(),
            k.leases(),
            k.delayed(),
            k.awaiting(),
            k.deps("vid-1"),
            k.dependents("vid-1"),
            k.notify(),
            k.dead(),
            k.counts(),
            k.stats(),
            k.paused(),
            k.cooldown(),
            k.gcra(),
            k.gcra_poll(),
            k.slots(),
            k.daily(),
            k.key_paused("k1"),
            k.key_cooldown("k1"),
            k.key_gcra("k1"),
            k.key_daily("k1"),
            k.slot_keys(),
            k.parked(),
        ] {
            assert!(key.starts_with("dq:{kling-main}:"), "{key}");
        }
        assert_eq!(
            k.key_gcra(""),
            k.gcra(),
            "a single key keeps the account's names"
        );
        assert_eq!(k.key_paused(""), k.paused());
    }
}
