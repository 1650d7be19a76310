//! Duty: dead-letter retention. With `worker.dead_retention_days` set, dead tasks older than that
//! are purged (record, index entry, counters), as `dramaq dlq purge --yes` would. The default, 0,
//! keeps every dead task until an operator acts: no silent cap, unlike queues that drop failures
//! past a fixed size.

use dramaq_common::ops::{DeadFilter, Ops, OpsError};
use dramaq_common::queue::{redis_time_ms, Queue};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// How long a dead task is kept; `None` keeps it until an operator purges it.
    pub max_age: Option<Duration>,
    /// How often the (O(dead tasks)) sweep runs. Default 1 h.
    pub interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_age: None,
            interval: Duration::from_secs(3_600),
        }
    }
}

/// How many dead tasks were purged (0 when retention is off).
pub async fn run_once(queue: &Queue, account: &str, cfg: &Config) -> Result<usize, OpsError> {
    let Some(max_age) = cfg.max_age else {
        return Ok(0);
    };
    let now = {
        let mut conn = queue
            .redis()
            .conn()
            .await
            .map_err(dramaq_common::queue::QueueError::from)?;
        redis_time_ms(&mut conn).await?
    };
    let filter = DeadFilter {
        account: Some(account.to_string()),
        died_before_ms: Some(now - max_age.as_millis() as i64),
        ..DeadFilter::default()
    };
    Ok(Ops::new(queue.clone()).purge(&filter, true).await?.purged as usize)
}
