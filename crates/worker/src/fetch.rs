//! The fetcher: reads an account's ready stream and claims what it reads, one slot per task.
//!
//! One fetcher per served account, each on its own Redis connection because it may block in
//! `XREADGROUP … BLOCK` (a blocking read on a shared connection stalls everything else on it).
//! Each round takes every free worker slot, reads that many entries without blocking and claims
//! them with one `claim.lua` call. Only when the stream is empty does it block, holding a single
//! slot, so an idle account cannot starve the others.
//!
//! Admission is two steps: `claim.lua` (the account's slot: pause, parked seasons, a pool key
//! with room) and then the season budget (`Queue::budget_reserve`, the season's slot). A claim
//! whose estimate does not fit is given back and its season parked.

use crate::context::Ctx;
use crate::submit;
use dramaq_common::budget::{episode_of, Reservation, ReserveItem};
use dramaq_common::config::AccountConfig;
use dramaq_common::queue::{read_ready, Claim, PoolArgs, QuotaPeek};
use dramaq_common::TaskRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long one blocking read waits; also bounds how fast a fetcher notices shutdown.
const BLOCK: Duration = Duration::from_millis(1_000);

/// The reason `quota_peek.lua` and `claim.lua` give when every render slot is taken (from
/// `pool_key_wait` in `prelude.lua`): the wait a slot freed in this process can end.
const SLOTS_FULL: &str = "concurrency";

/// Most entries read and claimed in one round.
const MAX_BATCH: usize = 64;

pub async fn run(ctx: Arc<Ctx>, account: String, tracker: TaskTracker) {
    if let Err(e) = ctx.queue.ensure_group(&account).await {
        warn!(%account, error = %e, "cannot create the consumer group; fetcher not started");
        return;
    }
    let Some(acct) = ctx.account(&account) else {
        return;
    };
    let quota = PoolArgs::from_account(acct);
    let local = local_limiter(acct);
    let mut conn = None;
    while !ctx.stopping.is_cancelled() {
        // Listening before the quota check and the claim, so a slot this process frees while
        // they run still ends a wait for one after them.
        let slot_freed = ctx.slot_freed.notified();
        tokio::pin!(slot_freed);
        slot_freed.as_mut().enable();
        // Ask the fleet-wide quota first: a throttled account costs one cheap call per wait.
        if !quota.is_unlimited() {
            match ctx.queue.quota_peek(&account, &quota).await {
                Ok(QuotaPeek::Go) => {}
                Ok(QuotaPeek::Paused) => {
                    pause(&ctx, Duration::from_secs(1)).await;
                    continue;
                }
                Ok(QuotaPeek::Wait { ms, reason }) => {
                    debug!(%account, ms, %reason, "waiting for quota");
                    let wait = Duration::from_millis(ms.clamp(5, 1_000));
                    let started = std::time::Instant::now();
                    if reason == SLOTS_FULL {
                        wait_for_slot(slot_freed.as_mut(), &ctx.stopping, wait).await;
                    } else {
                        pause(&ctx, wait).await;
                    }
                    ctx.metrics.rate_limiter_wait(&account, started.elapsed());
                    continue;
                }
                Err(e) => {
                    warn!(%account, error = %e, "quota check failed");
                    pause(&ctx, Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if conn.is_none() {
            match ctx.queue.redis().blocking_conn(BLOCK).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn!(%account, error = %e, "fetcher cannot connect; retrying");
                    pause(&ctx, Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Hold every free slot (at least one) and read that many without blocking; only an
        // empty stream makes the fetcher block, and then on a single slot.
        let first = tokio::select! {
            p = ctx.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = ctx.stopping.cancelled() => return,
        };
        // The process-local limiter caps how many this process may try to claim now, so it never
        // floods Redis with claim attempts the fleet-wide limiter would refuse.
        if let Some(limiter) = &local {
            limiter.until_ready().await;
        }
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            if local.as_ref().is_some_and(|l| l.check().is_err()) {
                break;
            }
            match ctx.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let mut deliveries = match read_ready(c, &account, &ctx.worker_id, permits.len(), 0).await {
            Ok(d) => d,
            Err(e) => {
                warn!(%account, error = %e, "reading the ready stream failed; reconnecting");
                conn = None;
                pause(&ctx, Duration::from_millis(500)).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            permits.truncate(1);
            match read_ready(c, &account, &ctx.worker_id, 1, BLOCK.as_millis() as u64).await {
                Ok(d) => deliveries = d,
                Err(e) => {
                    warn!(%account, error = %e, "reading the ready stream failed; reconnecting");
                    conn = None;
                    pause(&ctx, Duration::from_millis(500)).await;
                    continue;
                }
            }
            if deliveries.is_empty() {
                continue;
            }
        }
        let claims = match ctx
            .queue
            .claim(
                &account,
                &ctx.worker_id,
                ctx.lease_ms(),
                &quota,
                &deliveries,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                // The deliveries stay pending; the reaper redelivers them once they idle.
                warn!(%account, error = %e, "claim failed");
                pause(&ctx, Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut wait = Duration::ZERO;
        // Whether every wait came from full render slots, which a slot freed here ends.
        let mut only_slots = true;
        let mut claimed = Vec::new();
        for claim in claims {
            match claim {
                Claim::Claimed(rec) => claimed.push(*rec),
                // Claims stop while the account is paused; entries went back to the stream.
                Claim::Paused => {
                    only_slots = false;
                    wait = wait.max(Duration::from_secs(1));
                }
                Claim::Throttled { wait_ms, reason } => {
                    debug!(%account, wait_ms, %reason, "quota full; delivery put back");
                    only_slots &= reason == SLOTS_FULL;
                    wait = wait.max(Duration::from_millis(wait_ms.clamp(5, 1_000)));
                }
                Claim::Parked { season } => {
                    debug!(%account, season = %dramaq_common::text::Shown::id(&season), "season parked over budget; delivery put back");
                    only_slots = false;
                    wait = wait.max(Duration::from_secs(1));
                }
                Claim::Stale => debug!(%account, "dropped a stale delivery"),
            }
        }
        let (admitted, refused) = within_budget(&ctx, acct, claimed).await;
        if refused {
            only_slots = false;
            wait = wait.max(Duration::from_secs(1));
        }
        for rec in admitted {
            let Some(permit) = permits.pop() else { break };
            ctx.metrics.task_claimed(&account, rec.kind);
            ctx.metrics.key_claimed(&account, rec.key.as_deref());
            if let Some(ready) = rec.ready_ms {
                let waited = (rec.updated_ms - ready).max(0) as u64;
                ctx.metrics
                    .queue_wait(&account, rec.kind, Duration::from_millis(waited));
            }
            tracker.spawn(submit::run_claimed(ctx.clone(), rec, permit));
        }
        if !wait.is_zero() {
            drop(permits);
            if only_slots {
                wait_for_slot(slot_freed.as_mut(), &ctx.stopping, wait).await;
            } else {
                pause(&ctx, wait).await;
            }
        }
    }
}

/// Step 2 of admission: reserve the claimed tasks' cost ceilings against their season's budget
/// and their episode's cap, one call per season of the batch. A task that does not fit is given
/// back and its season (episode) parked, so every account's claims put its tasks back until
/// room is made (settled attempts that cost less than reserved) or the budget is raised. A
/// Redis error gives the season's claims back too: a task is never admitted without its
/// reservation (fail closed), and a later claim tries again. Returns the admitted tasks (season
/// by season, in claim order within each) and whether any was refused.
async fn within_budget(
    ctx: &Ctx,
    acct: &AccountConfig,
    claimed: Vec<TaskRecord>,
) -> (Vec<TaskRecord>, bool) {
    let mut by_season: BTreeMap<String, Vec<TaskRecord>> = BTreeMap::new();
    for rec in claimed {
        by_season.entry(rec.season.clone()).or_default().push(rec);
    }
    let mut admitted = Vec::new();
    let mut refused = false;
    for (season, recs) in by_season {
        let items: Vec<ReserveItem<'_>> = recs
            .iter()
            .map(|r| ReserveItem {
                id: &r.id,
                episode: episode_of(&r.group),
                usd: acct.reservation_usd(&r.payload),
            })
            .collect();
        let decided = match ctx.queue.budget_reserve_many(&season, &items).await {
            Ok(d) => d,
            Err(e) => {
                warn!(season = %dramaq_common::text::Shown::id(&season), error = %e, "reserving the season budget failed; giving the claims back");
                Vec::new()
            }
        };
        let failed = decided.len() != recs.len();
        let mut parks: BTreeSet<Option<String>> = BTreeSet::new();
        for (i, rec) in recs.into_iter().enumerate() {
            match decided.get(i).copied() {
                Some(Reservation::Reserved) => admitted.push(rec),
                over => {
                    refused = true;
                    if let Err(e) = ctx.queue.release(&rec.account, &rec.id, rec.fence).await {
                        warn!(task = %rec.id, error = %e, "giving back a claim failed; its lease will expire");
                    }
                    if failed {
                        continue;
                    }
                    ctx.metrics.budget_parked(&rec.account);
                    parks.insert(match over {
                        Some(Reservation::EpisodeOver) => {
                            episode_of(&rec.group).map(str::to_string)
                        }
                        _ => None,
                    });
                }
            }
        }
        for episode in parks {
            if let Err(e) = ctx.queue.budget_park(&season, episode.as_deref()).await {
                warn!(error = %e, "parking the season's accounts failed; the next claim retries");
            }
        }
    }
    (admitted, refused)
}

type Limiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// The account's submit rate (the sum of its pool keys' rates) as a process-local `governor`
/// limiter; None when some key is unlimited.
fn local_limiter(acct: &AccountConfig) -> Option<Limiter> {
    let pool = acct.pool();
    if pool.iter().any(|k| k.quota.emission_interval_us() == 0) {
        return None;
    }
    let rate: f64 = pool.iter().map(|k| k.quota.submit_per_sec).sum();
    let interval = (1_000_000.0 / rate).round().max(1.0) as u64;
    let burst = NonZeroU32::new(pool.iter().map(|k| k.quota.burst.max(1)).sum())?;
    let quota = governor::Quota::with_period(Duration::from_micros(interval))?.allow_burst(burst);
    Some(governor::RateLimiter::direct(quota))
}

async fn pause(ctx: &Ctx, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = ctx.stopping.cancelled() => {}
    }
}

/// Wait for a render slot: `d` at most (a slot another process frees is seen at the next quota
/// check), less when this process frees one (`freed`, from `Ctx::slot_freed`).
async fn wait_for_slot(
    freed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    stopping: &CancellationToken,
    d: Duration,
) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = freed => {}
        _ = stopping.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slot_freed_in_this_process_ends_the_wait_for_one() {
        let freed = std::sync::Arc::new(tokio::sync::Notify::new());
        let stopping = CancellationToken::new();
        let long = Duration::from_secs(60);
        // Nothing freed: the whole wait (the paused clock jumps over it).
        let start = tokio::time::Instant::now();
        let listening = freed.notified();
        tokio::pin!(listening);
        listening.as_mut().enable();
        wait_for_slot(listening, &stopping, long).await;
        assert_eq!(start.elapsed(), long);
        // A slot freed 10 ms into the wait ends it then, not a minute later.
        let start = tokio::time::Instant::now();
        let waker = {
            let freed = freed.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                freed.notify_waiters();
            })
        };
        let listening = freed.notified();
        tokio::pin!(listening);
        listening.as_mut().enable();
        wait_for_slot(listening, &stopping, long).await;
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        waker.await.unwrap();
        // A slot freed after listening began but before the wait (during the claim) ends the
        // wait at once.
        let listening = freed.notified();
        tokio::pin!(listening);
        listening.as_mut().enable();
        freed.notify_waiters();
        let start = tokio::time::Instant::now();
        wait_for_slot(listening, &stopping, long).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
