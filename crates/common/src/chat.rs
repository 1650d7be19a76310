//! What LLM calls used and cost, and the answers they got, kept in Redis.
//!
//! `dramaq generate` writes season scripts through openai-chat accounts. Two things about those
//! calls must outlive any one process: the answers (so a call that was answered is never paid
//! again, whoever asks next: a worker that took over after a crash, or the same command run
//! twice) and the running totals of tokens and dollars per season (shown by `dramaq generate`
//! and `dramaq status`). Both live under the account's hash tag ([`crate::keys::AccountKeys`]).

use crate::keys::AccountKeys;
use crate::queue::{Queue, QueueError};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// How long a received answer is kept for reuse (seconds): long enough to cover retries,
/// crashes and re-runs of a generation, short enough not to pile up.
pub const ANSWER_TTL_SECS: u64 = 30 * 24 * 3600;

/// Token usage and cost of one or more chat calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatUsage {
    /// Calls paid for (answers reused from the cache are not counted).
    pub calls: u64,
    pub input_tokens: u64,
    /// Input tokens the provider served from its prompt cache (billed lower).
    #[serde(default)]
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl ChatUsage {
    pub fn add(&mut self, other: &ChatUsage) {
        self.calls += other.calls;
        self.input_tokens += other.input_tokens;
        self.cached_tokens += other.cached_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

const FIELDS: [&str; 5] = [
    "calls",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "usd_micros",
];

/// A saved answer for the request whose sha256 is `request_sha256`, if one arrived.
pub async fn cached_answer(
    queue: &Queue,
    account: &str,
    request_sha256: &str,
) -> Result<Option<String>, QueueError> {
    let mut conn = queue.redis().conn().await?;
    Ok(conn
        .get(AccountKeys::new(account).chat_answer(request_sha256))
        .await?)
}

/// Save an answer before anything else is done with it.
pub async fn save_answer(
    queue: &Queue,
    account: &str,
    request_sha256: &str,
    answer: &str,
) -> Result<(), QueueError> {
    let mut conn = queue.redis().conn().await?;
    let _: () = conn
        .set_ex(
            AccountKeys::new(account).chat_answer(request_sha256),
            answer,
            ANSWER_TTL_SECS,
        )
        .await?;
    Ok(())
}

/// Add one paid call's usage to the season's totals of `account` (one atomic transaction).
pub async fn record_usage(
    queue: &Queue,
    account: &str,
    season: &str,
    usage: &ChatUsage,
) -> Result<(), QueueError> {
    let key = AccountKeys::new(account).chat_usage();
    let values = [
        usage.calls,
        usage.input_tokens,
        usage.cached_tokens,
        usage.output_tokens,
        (usage.cost_usd * 1_000_000.0).round().max(0.0) as u64,
    ];
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (field, v) in FIELDS.iter().zip(values) {
        pipe.hincr(&key, format!("{season}|{field}"), v).ignore();
    }
    let mut conn = queue.redis().conn().await?;
    let _: () = pipe.query_async(&mut conn).await?;
    Ok(())
}

/// The season's chat totals over `accounts` (those of the openai-chat family).
pub async fn season_usage(
    queue: &Queue,
    season: &str,
    accounts: &[String],
) -> Result<ChatUsage, QueueError> {
    let mut total = ChatUsage::default();
    let mut conn = queue.redis().conn().await?;
    for account in accounts {
        let fields: Vec<String> = FIELDS.iter().map(|f| format!("{season}|{f}")).collect();
        let v: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(AccountKeys::new(account).chat_usage())
            .arg(&fields)
            .query_async(&mut conn)
            .await?;
        let at = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
        total.add(&ChatUsage {
            calls: at(0),
            input_tokens: at(1),
            cached_tokens: at(2),
            output_tokens: at(3),
            cost_usd: at(4) as f64 / 1_000_000.0,
        });
    }
    Ok(total)
}
