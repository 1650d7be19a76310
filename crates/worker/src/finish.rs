//! The way out of a worker's hands: every path a task leaves by runs through here.
//!
//! A task leaves a worker in one of three ways: its output is stored and recorded
//! ([`complete`]), it fails and the one failure decision ([`crate::decide`]) says what becomes of
//! it ([`fail`]), or it is given back unsubmitted at shutdown (`release`, in [`crate::submit`]).
//! Submit ([`crate::submit`]) and poll ([`crate::poll`]) only produce results and failures; how
//! a result is streamed into storage ([`store`], [`download`]), how a completion tells the
//! task's dependents, and how a fallback's move is finished all live in this one module.
//!
//! Who may finish a task is named by a [`Holder`]: the lease a worker holds (`account, id,
//! fence`) or, for a render in the await schedule, the provider task id a poll was about. The
//! scripts refuse a holder whose right has passed (fencing).

use crate::context::Ctx;
use crate::decide::{self, Decision, Failure, History, Phase};
use crate::metrics::FailOutcome;
use crate::probe;
use crate::providers::{Provider, ProviderError, ResultRef};
use crate::storage::{self, Location, StoreError, Stored};
use backon::{ExponentialBuilder, Retryable};
use dramaq_common::budget::{Settle, Spend};
use dramaq_common::model::{FailureClass, TaskKind, TaskRecord, TaskState};
use dramaq_common::ops::Ops;
use dramaq_common::queue::{Completion, FailDecision, FailGuard, FailInfo, QueueError};
use dramaq_common::text::Shown;
use futures::StreamExt;
use std::time::Duration;
use tracing::{debug, info, warn};

/// A claim a worker holds: the task's account, its id and the fencing token of the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) account: String,
    pub(crate) id: String,
    pub(crate) fence: u64,
}

impl Lease {
    /// The lease a claimed record carries.
    pub(crate) fn of(rec: &TaskRecord) -> Lease {
        Lease {
            account: rec.account.clone(),
            id: rec.id.clone(),
            fence: rec.fence,
        }
    }
}

/// Who finishes a task: a lease holder, or a poller by the render's provider task id.
#[derive(Debug, Clone)]
pub(crate) enum Holder {
    Lease(Lease),
    Render { provider_task_id: String },
}

impl Holder {
    fn guard(&self) -> FailGuard {
        match self {
            Holder::Lease(l) => FailGuard::Held { fence: l.fence },
            Holder::Render { provider_task_id } => FailGuard::Render {
                provider_task_id: provider_task_id.clone(),
            },
        }
    }
}

/// Stream a body into the task's storage location. A paid result gets a location of its own,
/// `<season>/<group>/<id>-<8 hex>.<ext>`; an episode master keeps `<id>.<ext>`, beside the
/// sidecars and posters the assembly stored under that name.
///
/// A paid result never replaces bytes under a record that names them: when a lost write lets a
/// second worker pay for the same task again (Redis came back without its last second), its
/// answer lands beside the first one, and whichever `complete` wins names its own file with its
/// own checksum. The price is a file per paid attempt that lost, which is worth keeping anyway.
/// The assembly pays nothing, so rebuilding a master in place is harmless.
pub(crate) async fn store(
    ctx: &Ctx,
    rec: &TaskRecord,
    ext: &str,
    body: storage::Body,
) -> Result<Stored, StoreError> {
    let name = match rec.kind {
        TaskKind::Assembly => rec.id.clone(),
        _ => format!("{}-{:08x}", rec.id, rand::random::<u32>()),
    };
    let location = Location::new(&rec.season, &rec.group, &name, ext)?;
    ctx.storage.put(&location, body).await
}

/// Fetch a result (retrying network blips in-process) and store it.
pub(crate) async fn download(
    ctx: &Ctx,
    provider: &dyn Provider,
    rec: &TaskRecord,
    result: &ResultRef,
) -> Result<Stored, ProviderError> {
    let fetch = || async { provider.fetch(result).await };
    let dl = fetch
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(3)
                .with_jitter(),
        )
        .when(|e: &ProviderError| e.class == FailureClass::Network)
        .await?;
    let ext = dl
        .ext
        .clone()
        .filter(|e| dramaq_common::ids::is_safe_component(e))
        .unwrap_or_else(|| rec.ext.clone());
    let body = dl.body.map(|chunk| chunk.map_err(|e| e.message)).boxed();
    store_checked(ctx, rec, &ext, body).await
}

/// Store a result, probing it first when it is a clip or a voice line ([`crate::probe`]): the
/// body is spooled to a temporary file, probed, and only a good file is streamed into storage,
/// so a broken one is never published. A broken file is a `bad_output` failure.
pub(crate) async fn store_checked(
    ctx: &Ctx,
    rec: &TaskRecord,
    ext: &str,
    body: storage::Body,
) -> Result<Stored, ProviderError> {
    let expect = probe::Expect::of(&rec.payload, ext).filter(|_| ctx.cfg.assembly.probe);
    let Some(expect) = expect else {
        return store(ctx, rec, ext, body).await.map_err(store_failure);
    };
    let dir = tempfile::tempdir().map_err(|e| {
        ProviderError::new(
            FailureClass::Unknown,
            format!("no temporary directory to probe the result in: {e}"),
        )
    })?;
    let spooled = dir.path().join(format!("result.{ext}"));
    spool(body, &spooled, ctx.cfg.storage.max_bytes).await?;
    let probed = probe::check(&ctx.cfg.worker.ffprobe, &spooled, expect).await?;
    debug!(duration_s = probed.duration_s, "result probed");
    let file = tokio::fs::File::open(&spooled).await.map_err(|e| {
        ProviderError::new(
            FailureClass::Unknown,
            format!("reading the spooled result: {e}"),
        )
    })?;
    let body = tokio_util::io::ReaderStream::new(file)
        .map(|chunk| chunk.map_err(|e| format!("reading the spooled result: {e}")))
        .boxed();
    store(ctx, rec, ext, body).await.map_err(store_failure)
}

/// Write `body` to `path`, refusing more than `max` bytes.
async fn spool(
    mut body: storage::Body,
    path: &std::path::Path,
    max: u64,
) -> Result<(), ProviderError> {
    use tokio::io::AsyncWriteExt;
    let local = |e: std::io::Error| {
        ProviderError::new(FailureClass::Unknown, format!("spooling the result: {e}"))
    };
    let mut file = tokio::fs::File::create(path).await.map_err(local)?;
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| store_failure(StoreError::Body(e)))?;
        written += chunk.len() as u64;
        if max > 0 && written > max {
            return Err(store_failure(StoreError::TooLarge { max }));
        }
        file.write_all(&chunk).await.map_err(local)?;
    }
    file.flush().await.map_err(local)?;
    Ok(())
}

/// A storage failure as a classified error: too large is final (`invalid_request`), a broken
/// body is the network's, anything else unknown (retried with backoff).
pub(crate) fn store_failure(e: StoreError) -> ProviderError {
    let class = match e {
        StoreError::TooLarge { .. } => FailureClass::InvalidRequest,
        StoreError::Body(_) => FailureClass::Network,
        _ => FailureClass::Unknown,
    };
    ProviderError::new(class, e.to_string())
}

/// Record a stored output (`complete.lua`) and tell the task's dependents (the notify outbox
/// covers a crash between the two). `paid` is true when the caller paid for this output itself
/// (a synchronous submit's answer): a refused completion is then flagged as a possible
/// duplicate payment by the script.
pub(crate) async fn complete(
    ctx: &Ctx,
    lease: &Lease,
    rec: &TaskRecord,
    stored: Stored,
    paid: bool,
) -> Result<(), QueueError> {
    // Unique per completion, not only per worker: after Redis lost writes the same worker may
    // claim the same task again under the same token, and a replay must not take that second
    // completion for its own.
    let by = format!(
        "{}.{}",
        ctx.worker_id,
        COMPLETIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let done = Completion {
        fence: lease.fence,
        output: stored.location.as_str(),
        sha256: &stored.sha256,
        bytes: stored.bytes,
        paid,
        by: &by,
    };
    // Journaled before the call, not after: the output is in storage and the payment made, so
    // if Redis goes down under this call (and comes back without its last second) the replay
    // is what still records it. A replay of a completion that did land is a no-op.
    if paid {
        ctx.journal.completed(lease, &done);
    }
    let has_dependents = ctx.queue.complete(&lease.account, &lease.id, &done).await?;
    ctx.slot_freed.notify_waiters();
    debug!(
        location = stored.location.as_str(),
        bytes = stored.bytes,
        "stored"
    );
    ctx.metrics.task_stored(&lease.account, rec.kind);
    // What the provider reported the attempt cost where the family reports it, else the
    // configured price.
    let cost = reported_cost(ctx, rec).unwrap_or_else(|| {
        ctx.account(&lease.account)
            .map_or(0.0, |acct| acct.price_usd(&rec.payload))
    });
    settle_budget(ctx, rec, Some(cost)).await;
    if has_dependents {
        if let Err(e) = ctx.queue.notify_dependents(&lease.account, &lease.id).await {
            warn!(error = %e, "telling dependents failed; the outbox will retry");
        }
    }
    Ok(())
}

/// What the provider reported this attempt cost (taken once), priced in USD.
fn reported_cost(ctx: &Ctx, rec: &TaskRecord) -> Option<f64> {
    let bill = ctx
        .provider_for(&rec.account, rec.key.as_deref())?
        .reported_bill(&rec.id, rec.provider_task_id.as_deref())?;
    let per_second = ctx
        .account(&rec.account)
        .map_or(0.0, |a| a.price.per_second);
    Some(bill.usd(per_second))
}

/// Settle the attempt's budget reservation and count its spend: with its cost once it is
/// stored, or release it (`None`) when the attempt ends without a charge. An error leaves the
/// reservation held (the season then looks a little poorer than it is, never richer).
pub(crate) async fn settle_budget(ctx: &Ctx, rec: &TaskRecord, cost: Option<f64>) {
    // A free task reserved nothing (budget_reserve.lua): with nothing spent either, there is
    // nothing to settle, and the round trip is skipped.
    let ceiling = ctx
        .account(&rec.account)
        .map_or(0.0, |a| a.reservation_usd(&rec.payload));
    if ceiling == 0.0 && cost.is_none_or(|usd| usd <= 0.0) {
        return;
    }
    if let Some(usd) = cost {
        ctx.metrics.spend(&rec.account, usd);
        ctx.metrics
            .key_spend(&rec.account, rec.kind, rec.key.as_deref(), usd);
    }
    let spend = cost.map(|usd| Spend {
        usd,
        group: rec.group.clone(),
        kind: rec.kind.as_str().to_string(),
        account: rec.account.clone(),
        key: rec.key.clone().unwrap_or_default(),
    });
    let settle = spend.as_ref().map(|spend| Settle {
        id: &rec.id,
        attempt: rec.attempt,
        spend,
    });
    if let Err(e) = ctx
        .queue
        .budget_settle(
            &rec.season,
            &rec.id,
            dramaq_common::budget::episode_of(&rec.group),
            settle.as_ref(),
        )
        .await
    {
        warn!(task = %rec.id, error = %e, "settling the season budget failed; the reservation stays held");
    }
}

/// Completions recorded by this process, numbering each one's `done_by`.
static COMPLETIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the caller knows of a failure besides the error: the phase, and for renders their age
/// and next poll cadence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub(crate) phase: Phase,
    /// The attempt the failure belongs to.
    pub(crate) attempt: u32,
    pub(crate) render_age_ms: i64,
    pub(crate) next_poll_ms: u64,
}

impl Context {
    pub(crate) fn new(phase: Phase, attempt: u32) -> Context {
        Context {
            phase,
            attempt,
            render_age_ms: 0,
            next_poll_ms: 0,
        }
    }
}

/// A failure of a task held by `holder`: decide ([`decide::decide`]) and apply the decision.
/// A fallback is recorded by `fail.lua` as `moving` with an outbox entry in the same step, then
/// finished here at once; should that be cut short, the reaper's moves duty finishes it.
pub(crate) async fn fail(
    ctx: &Ctx,
    holder: &Holder,
    rec: &TaskRecord,
    at: Context,
    err: ProviderError,
) -> Result<(), QueueError> {
    let failure = Failure {
        class: err.class,
        code: err.code.as_deref(),
        retry_after: err.retry_after,
        phase: at.phase,
    };
    let history = History {
        attempt: at.attempt,
        max_attempts: rec.max_attempts,
        fetch_failures: rec.fetch_failures,
        result_expired_before: rec
            .errors
            .iter()
            .any(|e| e.class == FailureClass::ResultExpired),
        bad_outputs_here: rec
            .errors
            .iter()
            .filter(|e| e.class == FailureClass::BadOutput && e.account == rec.account)
            .count() as u32,
        render_age_ms: at.render_age_ms,
        next_poll_ms: at.next_poll_ms,
        chain: &rec.chain,
        chain_pos: rec.chain_pos,
    };
    let (decision, class, cooldown_ms) = match decide::decide(&failure, &history, ctx.backoff()) {
        Decision::PollAgain { delay_ms } => {
            debug!(error = %err, delay_ms, "poll failed; trying again later");
            return ctx
                .queue
                .poll_again(&rec.account, &rec.id, delay_ms)
                .await
                .map(drop);
        }
        Decision::Fail {
            decision,
            class,
            cooldown_ms,
        } => (decision, class, cooldown_ms),
    };
    // A class changed by the decision (a download failing too often) says so in the history.
    let message = if class == err.class {
        err.message.clone()
    } else {
        format!(
            "{} (after {} failed downloads: {})",
            class,
            decide::MAX_FETCH_FAILURES,
            err.message
        )
    };
    let info = FailInfo {
        class,
        code: err.code.as_deref(),
        message: &message,
        cooldown_ms,
    };
    let state = ctx
        .queue
        .fail_on_key(
            &rec.account,
            rec.key.as_deref(),
            &rec.id,
            &holder.guard(),
            &decision,
            &info,
        )
        .await?;
    ctx.slot_freed.notify_waiters();
    // The attempt is over unless its render is kept (re-polled): settle its reservation with
    // what the provider billed for it (chat calls are paid whatever the answer), else give it
    // back.
    if !matches!(decision, FailDecision::Repoll { .. }) {
        settle_budget(ctx, rec, reported_cost(ctx, rec)).await;
    }
    ctx.metrics
        .task_failed(&rec.account, rec.kind, class, FailOutcome::from(&decision));
    if cooldown_ms > 0 {
        ctx.metrics.rate_limited(&rec.account);
        ctx.metrics
            .cooldown(&rec.account, Duration::from_millis(cooldown_ms));
    }
    warn!(%class, code = %Shown::id(err.code.as_deref().unwrap_or("")), error = %Shown(&message, 500), ?decision, %state, "attempt failed");
    if state == TaskState::Moving {
        finish_move(&Ops::new(ctx.queue.clone()), rec).await;
    }
    Ok(())
}

/// Finish the move of a task that `fail.lua` or `reap_lease.lua` left `moving`. An error leaves
/// it in the moves outbox for the reaper's moves duty.
pub(crate) async fn finish_move(ops: &Ops, rec: &TaskRecord) {
    match ops.finish_moving(&rec.account, &rec.id).await {
        Ok(Some(now_in)) => {
            info!(task = %rec.id, label = %Shown::id(&rec.label), from = %rec.account, to = %now_in, "fell back to the next provider")
        }
        Ok(None) => {}
        Err(e) => {
            warn!(task = %rec.id, error = %e, "finishing the move failed; the reaper's moves duty will retry")
        }
    }
}
