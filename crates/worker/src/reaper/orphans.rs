//! Duty: deliveries read from a ready stream but never claimed.
//!
//! A reader that dies between `XREADGROUP` and `claim.lua` leaves an entry in the consumer
//! group's pending list while the task is still `ready`: no work started, so re-adding it is
//! safe. Idle time is the right test here precisely because nothing runs for such an entry.

use dramaq_common::queue::{Queue, QueueError};

#[derive(Debug, Clone)]
pub struct Config {
    /// How often the pending lists are scanned. Default 5 s.
    pub interval: std::time::Duration,
    /// A delivery idle this long is considered orphaned (a live reader claims within ms).
    pub min_idle_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: std::time::Duration::from_millis(5_000),
            min_idle_ms: 30_000,
        }
    }
}

/// How many tasks were put back on the stream.
pub async fn run_once(
    queue: &Queue,
    account: &str,
    reaper_id: &str,
    cfg: &Config,
) -> Result<usize, QueueError> {
    queue
        .redeliver_orphans(account, cfg.min_idle_ms, reaper_id)
        .await
}
