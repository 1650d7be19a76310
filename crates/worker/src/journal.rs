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
//!
//! An entry is forgotten only once the same server (same `run_id`) has been seen alive [`KEEP`]
//! after it: by then `everysec` has written it to disk. Age alone is not enough: on a loaded
//! host, reconnecting to a restarted server and noticing the new `run_id` can take seconds, and
//! an entry dropped for its age before the replay is a double payment nobody sees.

use crate::context::Ctx;
use dramaq_common::queue::{Accepted, Completion};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the server must be seen alive after a paid transition before it is forgotten:
/// comfortably more than AOF `everysec` can lose.
pub(crate) const KEEP: Duration = Duration::from_secs(10);

/// Entries older than this are dropped even if the server was never seen alive since (`INFO`
/// refused or failing for that long): a bound on memory, far beyond any restart.
const MAX_KEEP: Duration = Duration::from_secs(300);

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
    /// The last time the server was seen with the `run_id` it had before (`None`: not yet).
    alive_at: Mutex<Option<Instant>>,
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
        self.push_at(Instant::now(), lease, paid);
    }

    fn push_at(&self, at: Instant, lease: &crate::finish::Lease, paid: Paid) {
        let alive_at = *self.alive_at.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = self.lock();
        while entries.front().is_some_and(|e| {
            at.saturating_duration_since(e.at) > MAX_KEEP
                || alive_at.is_some_and(|alive| alive.saturating_duration_since(e.at) > KEEP)
        }) {
            entries.pop_front();
        }
        entries.push_back(Entry {
            at,
            account: lease.account.clone(),
            id: lease.id.clone(),
            fence: lease.fence,
            paid,
        });
    }

    /// The server was seen alive at `at` with the `run_id` it had before.
    fn seen_alive(&self, at: Instant) {
        *self.alive_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// The entries not yet known to be on the server's disk: those the server has not been seen
    /// alive for [`KEEP`] after.
    fn recent(&self) -> Vec<Entry> {
        let alive_at = *self.alive_at.lock().unwrap_or_else(|p| p.into_inner());
        self.lock()
            .iter()
            .filter(|e| alive_at.is_none_or(|alive| alive.saturating_duration_since(e.at) <= KEEP))
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
        let asked_at = Instant::now();
        if let Ok(id) = run_id(&ctx).await {
            if known.as_ref().is_some_and(|k| *k == id) {
                ctx.journal.seen_alive(asked_at);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: &str) -> crate::finish::Lease {
        crate::finish::Lease {
            account: "acct".into(),
            id: id.into(),
            fence: 1,
        }
    }

    fn paid() -> Paid {
        Paid::Accepted {
            attempt: 1,
            provider_task_id: "p".into(),
            poll_locator: None,
            first_poll_ms: 0,
        }
    }

    fn ids(j: &Journal) -> Vec<String> {
        j.recent().into_iter().map(|e| e.id).collect()
    }

    #[test]
    fn kept_until_the_same_server_was_seen_alive_long_enough_after_it() {
        let t0 = Instant::now();
        let j = Journal::default();
        j.push_at(t0, &lease("a"), paid());
        j.push_at(t0 + Duration::from_secs(6), &lease("b"), paid());
        // The server goes away and nobody sees it for 30 s: a late replay still has both.
        assert_eq!(ids(&j), ["a", "b"]);
        // Seen alive 5 s after `a`: neither is known to be on disk yet.
        j.seen_alive(t0 + Duration::from_secs(5));
        assert_eq!(ids(&j), ["a", "b"]);
        // Seen alive 11 s after `a`: `a` is on disk, `b` (5 s before) is not.
        j.seen_alive(t0 + Duration::from_secs(11));
        assert_eq!(ids(&j), ["b"]);
        // The next push forgets `a` for good.
        j.push_at(t0 + Duration::from_secs(40), &lease("c"), paid());
        assert_eq!(j.lock().len(), 2);
        assert_eq!(ids(&j), ["b", "c"]);
    }

    #[test]
    fn a_server_never_seen_alive_bounds_the_journal_by_age() {
        let t0 = Instant::now();
        let j = Journal::default();
        j.push_at(t0, &lease("a"), paid());
        j.push_at(t0 + MAX_KEEP / 2, &lease("b"), paid());
        j.push_at(t0 + MAX_KEEP + Duration::from_secs(1), &lease("c"), paid());
        assert_eq!(ids(&j), ["b", "c"]);
    }
}
