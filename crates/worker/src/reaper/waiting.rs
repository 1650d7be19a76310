//! Duty: waiting tasks whose notification was lost. A dependent is told its dependency is stored
//! on its own shard, and the dependency's outbox entry is then cleared on another; a failover or
//! restart that loses the first write afterwards would leave the dependent waiting for good. This
//! duty goes round each account's waiting index and tells a task each pending dependency it finds
//! stored (`Queue::recheck_waiting`); for a healthy task that changes nothing.

use dramaq_common::queue::{Queue, QueueError, Recheck};
use std::time::Duration;
use tracing::warn;

#[derive(Debug, Clone)]
pub struct Config {
    /// How often the index is read. Default 5 s.
    pub interval: Duration,
    /// A task is re-checked once it has waited, or gone unchecked, this long. Notifications
    /// normally arrive within milliseconds and the notify duty retries unsent ones after 2 s, so
    /// anything still waiting for a stored dependency after this was lost. Default 30 s.
    pub recheck_after_ms: u64,
    /// Tasks re-checked per round and account. Default 100 (a season with more waiting tasks is
    /// gone round in several rounds).
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(5),
            recheck_after_ms: 30_000,
            batch: 100,
        }
    }
}

/// What one round found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Entries re-checked.
    pub checked: usize,
    /// Tasks that had lost a notification and were told it again.
    pub told: usize,
    /// Of those, tasks that became ready.
    pub readied: usize,
}

pub async fn run_once(queue: &Queue, account: &str, cfg: &Config) -> Result<Outcome, QueueError> {
    let due = queue
        .waiting_due(account, cfg.recheck_after_ms, cfg.batch)
        .await?;
    let mut out = Outcome {
        checked: due.len(),
        ..Outcome::default()
    };
    for id in &due {
        match queue.recheck_waiting(account, id).await? {
            Recheck::NotWaiting | Recheck::StillWaiting => {}
            Recheck::Told { told } => {
                warn!(%account, task = %id, told, "a waiting task had not been told of stored dependencies; told it again");
                out.told += 1;
            }
            Recheck::Readied { told } => {
                warn!(%account, task = %id, told, "a waiting task whose dependencies were all stored had not been readied; it is ready now");
                out.told += 1;
                out.readied += 1;
            }
        }
    }
    Ok(out)
}
