//! Duty: the dependency outbox. A stored task whose dependents were not told (the worker died
//! right after `complete.lua`) is found here and its dependents told; telling is idempotent.

use dramaq_common::queue::{Queue, QueueError};

#[derive(Debug, Clone)]
pub struct Config {
    /// How often the outbox is read. Default 1 s.
    pub interval: std::time::Duration,
    /// Leave fresh entries to the worker that stored them.
    pub older_than_ms: u64,
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: std::time::Duration::from_millis(1_000),
            older_than_ms: 2_000,
            batch: 200,
        }
    }
}

/// How many stored tasks had their dependents told.
pub async fn run_once(queue: &Queue, account: &str, cfg: &Config) -> Result<usize, QueueError> {
    let backlog = queue
        .notify_backlog(account, cfg.older_than_ms, cfg.batch)
        .await?;
    for id in &backlog {
        queue.notify_dependents(account, id).await?;
    }
    Ok(backlog.len())
}
