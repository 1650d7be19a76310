//! Duty: due retries. Moves tasks whose retry time has come from the delayed schedule to ready.

use dramaq_common::queue::{Queue, QueueError};

#[derive(Debug, Clone)]
pub struct Config {
    /// How often due retries are promoted. Default 250 ms.
    pub interval: std::time::Duration,
    /// Retries promoted per round and account.
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: std::time::Duration::from_millis(250),
            batch: 500,
        }
    }
}

/// How many tasks were promoted.
pub async fn run_once(queue: &Queue, account: &str, cfg: &Config) -> Result<usize, QueueError> {
    queue.promote_due(account, cfg.batch).await
}
