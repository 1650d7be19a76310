//! The poller: watches submitted renders without holding a worker slot for them.
//!
//! Renders wait in their account's await schedule (a sorted set by next poll time). Each worker
//! process takes what is due in batches under a short poll lease and polls them concurrently, so
//! one process can watch tens of thousands of renders (docs/invariants.md, "Submit, then
//! await"). A poll only observes: what a success, a failure or a failed poll request becomes is
//! decided and applied by [`crate::finish`] and [`crate::decide`]. When to poll is
//! [`crate::await_plan`]'s answer: near the render's expected finish, learned from the account's
//! finished renders (each success adds its estimated render time, in `render_done`). A provider's own hint (`openai-poll-after-ms`) is a floor: never poll sooner
//! than it asks, nor sooner than the cadence, which is what bounds the poll traffic of tens of
//! thousands of renders (the OpenAI sandbox and some relays answer 200 ms on every poll).
//!
//! Poll lateness (sent − due, `dramaq_poll_lateness_seconds`) is measured against the Redis
//! clock of the take, so it includes the wait for a poll permit: it is the number that shows a
//! process watching more renders than it can poll.

use crate::await_plan::cadence_ms;
use crate::context::Ctx;
use crate::decide::Phase;
use crate::finish::{self, Context, Holder, Lease};
use crate::metrics::ProviderOperation;
use crate::providers::{PollOutcome, Provider, ProviderError, RenderPhase, ResultRef};
use dramaq_common::model::{FailureClass, TaskRecord, TaskState};
use dramaq_common::queue::QueueError;
use dramaq_common::text::Shown;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// An awaited task whose record cannot be decoded is looked at again after this long.
const UNREADABLE_RETRY_MS: u64 = 600_000;

/// Most renders taken from the schedule in one call.
const TAKE_BATCH: usize = 256;

/// Poll one account's due renders until shutdown.
pub async fn run(ctx: Arc<Ctx>, account: String, tracker: TaskTracker) {
    let Some(provider) = ctx.provider(&account) else {
        return;
    };
    if !provider.family().is_async() {
        return;
    }
    let permits = Arc::new(Semaphore::new(ctx.cfg.worker.poll_concurrency.max(1)));
    let poll_rate = ctx.account(&account).and_then(|a| a.quota.poll_gcra_us());
    while !ctx.stopping.is_cancelled() {
        let free = permits.available_permits();
        if free == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let due = ctx
            .queue
            .poll_take(&account, free.min(TAKE_BATCH), ctx.cfg.worker.poll_lease_ms)
            .await;
        let taken_at = std::time::Instant::now();
        let due = match due {
            Ok(due) => due,
            Err(e) => {
                warn!(%account, error = %e, "taking due renders failed");
                sleep_or_stop(&ctx, Duration::from_secs(1)).await;
                continue;
            }
        };
        if due.is_empty() {
            // A callback received by this process wakes it at once; other processes find the
            // moved render within MAX_IDLE.
            tokio::select! {
                _ = sleep_or_stop(&ctx, idle_wait(due.taken_ms, due.next_due_ms)) => {}
                _ = ctx.poll_wake.notified() => {}
            }
            continue;
        }
        let taken_ms = due.taken_ms;
        let mut renders = due.renders;
        // Providers that count polls: the fleet shares one poll rate per account. Tokens are
        // taken only for renders actually due; the rest are rescheduled for when one frees up.
        if let Some((interval, tolerance)) = poll_rate {
            match ctx
                .queue
                .take_poll_tokens(&account, interval, tolerance, renders.len())
                .await
            {
                Ok((granted, wait)) if granted < renders.len() => {
                    // Concurrently, so the coalescer sends them as one call.
                    let later = renders.split_off(granted);
                    futures::future::join_all(
                        later
                            .iter()
                            .map(|(id, _)| ctx.queue.poll_again(&account, id, wait.max(5))),
                    )
                    .await;
                    ctx.metrics
                        .rate_limiter_wait(&account, Duration::from_millis(wait));
                    if renders.is_empty() {
                        sleep_or_stop(&ctx, Duration::from_millis(wait.clamp(5, 1_000))).await;
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(%account, error = %e, "poll rate check failed; polling anyway"),
            }
        }
        // One round trip for the whole batch's records instead of one per render.
        let ids: Vec<String> = renders.iter().map(|(id, _)| id.clone()).collect();
        let records = match ctx.queue.get_tasks(&account, &ids).await {
            Ok(records) => records,
            Err(e) => {
                // Taken under the poll lease: they are due again for any poller when it ends.
                warn!(%account, error = %e, "reading taken renders failed");
                sleep_or_stop(&ctx, Duration::from_secs(1)).await;
                continue;
            }
        };
        for ((id, due_ms), rec) in renders.into_iter().zip(records) {
            let schedule = Scheduled {
                due_ms,
                taken_ms,
                taken_at,
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let ctx = ctx.clone();
            let provider = provider.clone();
            let account = account.clone();
            tracker.spawn(async move {
                let _in_flight = ctx.metrics.track_render(&account);
                let polled = match rec {
                    Ok(Some(rec)) if rec.state == TaskState::Rendering => {
                        // A render is polled, downloaded and cancelled with the key that
                        // created it.
                        let provider = match &rec.key {
                            None => Some(provider),
                            Some(k) => ctx.provider_for(&account, Some(k)),
                        };
                        match provider {
                            Some(p) => poll_one(&ctx, p.as_ref(), &account, rec, schedule).await,
                            None => {
                                warn!(%account, key = %Shown::id(rec.key.as_deref().unwrap_or("")), "render of a key this worker does not know; left to the fleet");
                                Ok(())
                            }
                        }
                    }
                    // Purged, or finished through another path: the entry has nothing to await.
                    Ok(_) => ctx.queue.poll_drop(&account, &id).await.map(drop),
                    Err(e) => {
                        // Unreadable here, perhaps written by a newer version mid-deploy: look
                        // again much later instead of at every poll lease end.
                        warn!(task = %id, error = %e, "cannot read the awaited task; skipping it for 10 minutes");
                        ctx.queue
                            .poll_again(&account, &id, UNREADABLE_RETRY_MS)
                            .await
                            .map(drop)
                    }
                };
                if let Err(e) = polled {
                    match e {
                        QueueError::Fenced(_) => debug!(task = %id, "render moved on meanwhile"),
                        e => warn!(task = %id, error = %e, "poll step failed; the render stays scheduled"),
                    }
                }
                drop(permit);
            });
        }
    }
}

/// Nothing was due: sleep until the earliest render is, but at most `MAX_IDLE` so renders added
/// meanwhile (by this or another process) are not kept waiting, and at least `MIN_IDLE`.
fn idle_wait(now_ms: i64, next_due_ms: Option<i64>) -> Duration {
    const MIN_IDLE: Duration = Duration::from_millis(5);
    const MAX_IDLE: Duration = Duration::from_millis(500);
    match next_due_ms {
        Some(due) => Duration::from_millis((due - now_ms).max(0) as u64).clamp(MIN_IDLE, MAX_IDLE),
        None => MAX_IDLE,
    }
}

async fn sleep_or_stop(ctx: &Ctx, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = ctx.stopping.cancelled() => {}
    }
}

/// When a taken render's poll was due, against the Redis clock of its take.
#[derive(Debug, Clone, Copy)]
struct Scheduled {
    due_ms: i64,
    taken_ms: i64,
    taken_at: std::time::Instant,
}

impl Scheduled {
    /// The Redis clock now, from the take's Redis time and the local time elapsed since.
    fn redis_now_ms(&self) -> i64 {
        self.taken_ms + self.taken_at.elapsed().as_millis() as i64
    }

    /// How late a request sent now is: late at the take, plus the time since.
    fn lateness(&self) -> Duration {
        let at_take = Duration::from_millis((self.taken_ms - self.due_ms).max(0) as u64);
        at_take + self.taken_at.elapsed()
    }
}

async fn poll_one(
    ctx: &Ctx,
    provider: &dyn Provider,
    account: &str,
    rec: TaskRecord,
    schedule: Scheduled,
) -> Result<(), QueueError> {
    let Some(acct) = ctx.account(account) else {
        return Ok(());
    };
    let Some(ptid) = rec.provider_task_id.clone() else {
        return Ok(());
    };
    let span = tracing::info_span!("render", season = %Shown::id(&rec.season), label = %Shown::id(&rec.label), task = %rec.id, account = %account, provider_task_id = %Shown::id(&ptid));
    async move {
        let holder = Holder::Render {
            provider_task_id: ptid.clone(),
        };
        // On the Redis clock, like submitted_ms: a host with a skewed clock must not time out,
        // cancel or back off renders early.
        let age_ms = schedule.redis_now_ms() - rec.submitted_ms.unwrap_or(rec.updated_ms);
        let at = |phase| Context {
            phase,
            attempt: rec.attempt,
            render_age_ms: age_ms,
            next_poll_ms: cadence_ms(acct, age_ms),
        };
        // A render whose download failed has finished: the deadline is for renders only.
        if rec.fetch_failures == 0 && age_ms > acct.render_deadline_ms as i64 {
            let err = ProviderError::new(
                FailureClass::Timeout,
                format!(
                    "render not finished after {} s (render_deadline_ms)",
                    age_ms / 1000
                ),
            );
            return finish::fail(ctx, &holder, &rec, at(Phase::Render), err).await;
        }
        ctx.metrics.poll_lateness(account, schedule.lateness());
        let polled = provider.poll(&ptid, rec.poll_locator.as_deref()).await;
        let status = match &polled {
            Ok(_) => Some(200),
            Err(e) => e.http_status,
        };
        ctx.metrics
            .provider_request(account, ProviderOperation::Poll, status);
        match polled {
            Ok(PollOutcome::Pending {
                phase,
                sub_status,
                poll_after,
                ..
            }) => {
                let stuck = acct
                    .max_queued_ms
                    .is_some_and(|max| phase == RenderPhase::Queued && age_ms > max as i64);
                if stuck {
                    let err = give_up_queued(provider, &rec, &ptid, &sub_status, age_ms).await;
                    return finish::fail(ctx, &holder, &rec, at(Phase::Render), err).await;
                }
                let hinted = poll_after.map_or(0, |d| d.as_millis() as u64);
                let plan = ctx.await_plan(account, acct).await;
                let delay = plan.next_delay(acct, age_ms).max(hinted);
                debug!(sub_status = %Shown::id(&sub_status), delay_ms = delay, "still rendering");
                ctx.queue
                    .poll_again(account, &rec.id, delay)
                    .await
                    .map(drop)
            }
            Ok(PollOutcome::Succeeded(result)) => {
                let rendered = Duration::from_millis(age_ms.max(0) as u64);
                ctx.metrics.render_duration(account, rendered);
                let plan = ctx.await_plan(account, acct).await;
                let due_age_ms = schedule.due_ms - rec.submitted_ms.unwrap_or(rec.updated_ms);
                let took_ms = plan.estimate_ms(acct, due_age_ms, age_ms, rand::random());
                let done = Rendered {
                    ptid: &ptid,
                    result: &result,
                    took_ms,
                };
                download_rendered(ctx, provider, &rec, done, at(Phase::Download)).await
            }
            Ok(PollOutcome::Failed(err)) => {
                finish::fail(ctx, &holder, &rec, at(Phase::Render), err).await
            }
            Err(err) => finish::fail(ctx, &holder, &rec, at(Phase::Poll), err).await,
        }
    }
    .instrument(span)
    .await
}

/// A render still queued past the account's `max_queued_ms`: cancel it where the family can;
/// the failure (`timeout`, code `queued_too_long`) moves it to the next provider of its chain.
async fn give_up_queued(
    provider: &dyn Provider,
    rec: &TaskRecord,
    ptid: &str,
    sub_status: &str,
    age_ms: i64,
) -> ProviderError {
    let cancelled = match provider.cancel(ptid, rec.poll_locator.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cancelling the queued render failed");
            false
        }
    };
    ProviderError::new(
        FailureClass::Timeout,
        format!(
            "still {} at the provider after {} s (max_queued_ms); {}",
            Shown::id(sub_status),
            age_ms / 1000,
            if cancelled {
                "cancelled"
            } else {
                "the family cannot cancel: it may still run"
            }
        ),
    )
    .with_code("queued_too_long")
}

/// The render succeeded: take it under a download lease (`render_done`, first poller wins),
/// store it, complete.
/// A render a poll saw finished: its provider id, result and estimated render time.
struct Rendered<'a> {
    ptid: &'a str,
    result: &'a ResultRef,
    took_ms: u64,
}

async fn download_rendered(
    ctx: &Ctx,
    provider: &dyn Provider,
    rec: &TaskRecord,
    done: Rendered<'_>,
    at: Context,
) -> Result<(), QueueError> {
    let Rendered {
        ptid,
        result,
        took_ms,
    } = done;
    let result_json = serde_json::to_string(result).map_err(|e| QueueError::Reply {
        script: "render_done",
        detail: format!("result reference not serialisable: {e}"),
    })?;
    let fence = ctx
        .queue
        .render_done_timed(
            &rec.account,
            &rec.id,
            ptid,
            &result_json,
            &ctx.worker_id,
            ctx.lease_ms(),
            Some(took_ms),
        )
        .await?;
    // The render no longer holds its provider slot.
    ctx.slot_freed.notify_waiters();
    let lease = Lease {
        account: rec.account.clone(),
        id: rec.id.clone(),
        fence,
    };
    ctx.held.insert(&lease);
    let started = std::time::Instant::now();
    let downloaded = finish::download(ctx, provider, rec, result).await;
    let status = match &downloaded {
        Ok(_) => Some(200),
        Err(e) => e.http_status,
    };
    ctx.metrics
        .provider_request(&rec.account, ProviderOperation::Fetch, status);
    let outcome = match downloaded {
        Ok(stored) => {
            ctx.metrics
                .download_duration(&rec.account, started.elapsed());
            info!("render downloaded");
            finish::complete(ctx, &lease, rec, stored, false).await
        }
        Err(err) => finish::fail(ctx, &Holder::Lease(lease.clone()), rec, at, err).await,
    };
    ctx.held.remove(&lease.id);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_wait_sleeps_until_the_next_render_is_due_within_bounds() {
        let now = 1_000_000;
        assert_eq!(idle_wait(now, None), Duration::from_millis(500));
        assert_eq!(idle_wait(now, Some(now + 120)), Duration::from_millis(120));
        assert_eq!(
            idle_wait(now, Some(now + 60_000)),
            Duration::from_millis(500)
        );
        assert_eq!(idle_wait(now, Some(now - 10)), Duration::from_millis(5));
    }

    #[test]
    fn lateness_counts_the_wait_before_the_take_and_after_it() {
        let s = Scheduled {
            due_ms: 1_000,
            taken_ms: 1_250,
            taken_at: std::time::Instant::now() - Duration::from_millis(100),
        };
        let late = s.lateness();
        assert!(
            late >= Duration::from_millis(350) && late < Duration::from_secs(5),
            "{late:?}"
        );
        let early = Scheduled {
            due_ms: 2_000,
            taken_ms: 1_990,
            taken_at: std::time::Instant::now(),
        };
        assert!(early.lateness() < Duration::from_secs(1));
    }
}
