//! Duty: the moves outbox. A task that fails over to another account is recorded `moving` (by
//! `fail.lua`, `reap_lease.lua` or an operator's `dlq requeue --to-provider`) with an entry in
//! its account's `moves` outbox, and the recorder finishes the move at once. Should it crash or
//! fail between the steps, the entry stays; this duty finishes the move. Every step is
//! idempotent (`Ops::finish_moving`), so a move finished twice is a move finished once.

use dramaq_common::ops::{Ops, OpsError};
use dramaq_common::queue::Queue;
use std::time::Duration;
use tracing::info;

#[derive(Debug, Clone)]
pub struct Config {
    /// How often the outbox is read. Default 1 s.
    pub interval: Duration,
    /// Leave fresh entries to the process that recorded them. Default 2 s.
    pub older_than_ms: u64,
    /// Moves finished per round and account. Default 100.
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(1),
            older_than_ms: 2_000,
            batch: 100,
        }
    }
}

/// How many unfinished moves were finished.
pub async fn run_once(queue: &Queue, account: &str, cfg: &Config) -> Result<usize, OpsError> {
    let backlog = queue
        .moves_backlog(account, cfg.older_than_ms, cfg.batch)
        .await?;
    let ops = Ops::new(queue.clone());
    let mut finished = 0;
    for id in &backlog {
        if let Some(now_in) = ops.finish_moving(account, id).await? {
            info!(%account, task = %id, to = %now_in, "finished an interrupted move");
            finished += 1;
        }
    }
    Ok(finished)
}
