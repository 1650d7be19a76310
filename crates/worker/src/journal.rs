//! What this worker recently paid for, replayed when Redis restarts.
//!
//! With AOF `everysec`, a Redis host that loses power restarts without its last second or so of
//! writes. A render accepted in that second (`mark_accepted`), or a synchronous answer stored and
//! completed in it (`complete`), is then unknown to the queue: the task looks unsubmitted and
//! another worker would pay for it again, with nothing to show it happened. The worker that paid
//! still knows. It keeps the paid transitions of the last [`KEEP`] here, watches the server's
//! `run_id`, and when it changes (the server restarted) replays them: both scripts are
//! idempotent, and on a record that went back in time they adopt the paid render or output, or
//! flag the task `possible_duplicate` when another claim got there first. A double payment is
//! then prevented or counted, never silent.

use crate::context::Ctx;
use dramaq_common::queue::{Accepted, Completion};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a paid transition is kept: comfortably more than AOF `everysec` can lose.
pub(crate) const KEEP: Duration = Duration::from_secs(10);

/// How often the server's `run_id` is read.
const WATCH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
enum Paid {
    Accepted {
        attempt: u32,
        provider_task_id: String,
        poll_locator: Option<String>,
        first_poll_ms: u64,
    },
    Completed {
        output: String,
        sha256: String,
        bytes: u64,
        by: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    at: Instant,
    account: String,
    id: String,
    fence: u64,
    paid: Paid,
}

#[derive(Default)]
pub(crate) struct Journal {
    entries: Mutex<VecDeque<Entry>>,
}

impl Journal {
    pub(crate) fn accepted(
        &self,
        lease: &crate::finish::Lease,
        attempt: u32,
        provider_task_id: &str,
        poll_locator: Option<&str>,
        first_poll_ms: u64,
    ) {
        self.push(
            lease,
            Paid::Accepted {
                attempt,
                provider_task_id: provider_task_id.to_string(),
                poll_locator: poll_locator.map(str::to_string),
                first_poll_ms,
            },
        );
    }

    pub(crate) fn completed(&self, lease: &crate::finish::Lease, done: &Completion<'_>) {
        self.push(
            lease,
            Paid::Completed {
                output: done.output.to_string(),
                sha256: done.sha256.to_string(),
                bytes: done.bytes,
                by: done.by.to_string(),
            },
        );
    }

    fn push(&self, lease: &crate::finish::Lease, paid: Paid) {
        let mut entries = self.lock();
        let now = Instant::now();
        while entries.front().is_some_and(|e| now - e.at > KEEP) {
            entries.pop_front();
        }
        entries.push_back(Entry {
            at: now,
            account: lease.account.clone(),
            id: lease.id.clone(),
            fence: lease.fence,
            paid,
        });
    }

    /// The entries still within [`KEEP`].
    fn recent(&self) -> Vec<Entry> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|e| now - e.at <= KEEP)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Still recorded: the write survived.
    pub(crate) intact: usize,
    /// Lost and attached again (no second payment).
    pub(crate) adopted: usize,
    /// Lost, and another claim got there first: flagged `possible_duplicate`.
    pub(crate) flagged: usize,
    pub(crate) errors: usize,
}

/// Replay every paid transition of the last [`KEEP`].
pub(crate) async fn replay(ctx: &Ctx) -> Replayed {
    let mut out = Replayed::default();
    for e in ctx.journal.recent() {
        let result = match &e.paid {
            Paid::Accepted {
                attempt,
                provider_task_id,
                poll_locator,
                first_poll_ms,
            } => ctx
                .queue
                .mark_accepted_attempt(
                    &e.account,
                    &e.id,
                    e.fence,
                    *attempt,
                    provider_task_id,
                    poll_locator.as_deref(),
                    *first_poll_ms,
                )
                .await
                .map(|a| match a {
                    Accepted::Accepted => 0,
                    Accepted::Adopted => 1,
                    Accepted::Orphaned => 2,
                }),
            Paid::Completed {
                output,
                sha256,
                bytes,
                by,
            } => {
                let done = Completion {
                    fence: e.fence,
                    output,
                    sha256,
                    bytes: *bytes,
                    paid: true,
                    by,
                };
                // Stored again, or refused (and then flagged by the script).
                match ctx.queue.complete(&e.account, &e.id, &done).await {
                    Ok(_) => Ok(0),
                    Err(dramaq_common::queue::QueueError::Fenced(_)) => Ok(2),
                    Err(err) => Err(err),
                }
            }
        };
        match result {
            Ok(0) => out.intact += 1,
            Ok(1) => {
                ctx.metrics.adopted_after_regression(&e.account);
                out.adopted += 1
            }
            Ok(_) => {
                ctx.metrics.possible_duplicates(&e.account, 1);
                out.flagged += 1
            }
            Err(err) => {
                warn!(task = %e.id, error = %err, "replaying a paid transition failed");
                out.errors += 1
            }
        }
    }
    out
}

/// Watch the server's `run_id`; replay the journal when it changes (the server restarted).
pub(crate) async fn watch(ctx: std::sync::Arc<Ctx>) {
    let mut known: Option<String> = None;
    while !ctx.stopping.is_cancelled() {
        if let Ok(id) = run_id(&ctx).await {
            if known.as_ref().is_some_and(|k| *k != id) {
                let r = replay(&ctx).await;
                info!(
                    adopted = r.adopted,
                    flagged = r.flagged,
                    intact = r.intact,
                    errors = r.errors,
                    "Redis restarted; replayed the paid transitions of the last seconds"
                );
            }
            known = Some(id);
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = ctx.stopping.cancelled() => {}
        }
    }
}

async fn run_id(ctx: &Ctx) -> Result<String, dramaq_common::redis_conn::ConnError> {
    ctx.queue.redis().server_info("run_id").await
}
