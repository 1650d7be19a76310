//! Processing one claimed task: record the attempt, submit, and hand the task on.
//!
//! The order is what makes "never pay twice" hold (design-notes invariant 2): `mark_submitting`
//! before the HTTP call, `mark_accepted` (the provider's id) right after it. An asynchronous
//! render then leaves this worker for the await schedule ([`crate::poll`]); a synchronous result
//! is stored here and the task completed. Every failure goes through [`crate::retry::decide`].

use crate::assemble;
use crate::context::Ctx;
use crate::metrics::{FailOutcome, ProviderOperation};
use crate::providers::{
    InputImage, Provider, ProviderError, ResultRef, SubmitOutcome, SubmitRequest, SyncResult,
};
use crate::retry;
use crate::storage::{self, Location, StoreError};
use backon::{ExponentialBuilder, Retryable};
use dramaq_common::config::Family;
use dramaq_common::model::{FailureClass, TaskPayload, TaskRecord, TaskState};
use dramaq_common::queue::{FailDecision, FailGuard, FailInfo, QueueError};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn, Instrument};

/// Run a claimed task to its next resting state. Holds one worker slot (`permit`) throughout.
pub async fn run_claimed(ctx: Arc<Ctx>, rec: TaskRecord, permit: OwnedSemaphorePermit) {
    let span = tracing::info_span!("task", season = %rec.season, label = %rec.label, task = %rec.id, provider = %rec.account);
    async move {
        ctx.held.insert(&rec.id, &rec.account, rec.fence);
        let _held = ctx.metrics.track_held(&rec.account);
        let outcome = handle(&ctx, &rec).await;
        ctx.held.remove(&rec.id);
        drop(permit);
        match outcome {
            Ok(()) => {}
            Err(QueueError::Fenced(_)) => {
                warn!("lost the task's lease to another worker; its late result is discarded")
            }
            Err(e) => warn!(error = %e, "task step failed; its lease will expire and the reaper moves it on"),
        }
    }
    .instrument(span)
    .await
}

async fn handle(ctx: &Ctx, rec: &TaskRecord) -> Result<(), QueueError> {
    if ctx.stopping.is_cancelled() {
        // Shutting down before anything reached the provider: give it back at once.
        return ctx.queue.release(&rec.account, &rec.id, rec.fence).await;
    }
    let Some(acct) = ctx.account(&rec.account) else {
        let msg = format!(
            "account {} is not in this worker's configuration",
            rec.account
        );
        return fail_held(
            ctx,
            rec,
            rec.fence,
            rec.attempt,
            ProviderError::new(FailureClass::InvalidRequest, msg),
        )
        .await;
    };
    if acct.family == Family::Assembly {
        return assemble::run(ctx, rec).await;
    }
    let Some(provider) = ctx.provider(&rec.account) else {
        let msg = format!("no adapter for account {}", rec.account);
        return fail_held(
            ctx,
            rec,
            rec.fence,
            rec.attempt,
            ProviderError::new(FailureClass::InvalidRequest, msg),
        )
        .await;
    };
    let first_frame = match load_first_frame(ctx, rec).await {
        Ok(img) => img,
        // Nothing reached the provider, so no attempt was recorded; count the task's failures
        // instead, so an image that never becomes readable ends in the DLQ, not in a loop.
        Err(e) => {
            let tries = rec.attempt.max(rec.errors.len() as u32) + 1;
            return fail_held(ctx, rec, rec.fence, tries, e).await;
        }
    };
    let attempt = ctx
        .queue
        .mark_submitting(&rec.account, &rec.id, rec.fence)
        .await?;
    let req = SubmitRequest {
        task_id: &rec.id,
        attempt,
        payload: &rec.payload,
        first_frame,
    };
    let started = std::time::Instant::now();
    let submitted = provider.submit(req).await;
    ctx.metrics.submit_duration(&rec.account, started.elapsed());
    let status = match &submitted {
        Ok(_) => Some(200),
        Err(e) => e.http_status,
    };
    ctx.metrics
        .provider_request(&rec.account, ProviderOperation::Submit, status);
    match submitted {
        Ok(SubmitOutcome::Accepted {
            provider_task_id,
            poll_locator,
            poll_after,
        }) => {
            let first_poll = poll_after
                .map(|d| d.as_millis() as u64)
                .unwrap_or(acct.poll_first_ms);
            ctx.queue
                .mark_accepted(
                    &rec.account,
                    &rec.id,
                    rec.fence,
                    &provider_task_id,
                    poll_locator.as_deref(),
                    first_poll,
                )
                .await?;
            info!(attempt, provider_task_id = %provider_task_id, "submitted; awaiting render");
            Ok(())
        }
        Ok(SubmitOutcome::Finished(SyncResult::Bytes { bytes, ext })) => {
            let ext = if ext.is_empty() { rec.ext.clone() } else { ext };
            match store(ctx, rec, &ext, storage::once(bytes)).await {
                Ok(stored) => complete(ctx, rec, rec.fence, stored).await,
                Err(e) => fail_held(ctx, rec, rec.fence, attempt, store_failure(e)).await,
            }
        }
        Ok(SubmitOutcome::Finished(SyncResult::Ref(result))) => {
            match download(ctx, provider.as_ref(), rec, &result).await {
                Ok(stored) => complete(ctx, rec, rec.fence, stored).await,
                Err(e) => fail_held(ctx, rec, rec.fence, attempt, e).await,
            }
        }
        Err(e) => fail_held(ctx, rec, rec.fence, attempt, e).await,
    }
}

/// Image-to-video: the character image, read back from storage.
async fn load_first_frame(
    ctx: &Ctx,
    rec: &TaskRecord,
) -> Result<Option<InputImage>, ProviderError> {
    let TaskPayload::Video {
        first_frame: Some(image_id),
        ..
    } = &rec.payload
    else {
        return Ok(None);
    };
    let missing = |why: String| ProviderError::new(FailureClass::Unknown, why);
    let dep = rec.deps.iter().find(|d| &d.id == image_id).ok_or_else(|| {
        missing(format!(
            "first frame {image_id} is not among the task's dependencies"
        ))
    })?;
    let image = ctx
        .queue
        .get_task(&dep.account, &dep.id)
        .await
        .map_err(|e| missing(format!("reading first frame record {image_id}: {e}")))?
        .ok_or_else(|| missing(format!("first frame record {image_id} is missing")))?;
    let location = image
        .output
        .as_deref()
        .ok_or_else(|| missing(format!("first frame {image_id} is not stored yet")))
        .and_then(|o| Location::parse(o).map_err(|e| missing(e.to_string())))?;
    let bytes = ctx
        .storage
        .get(&location)
        .await
        .map_err(|e| missing(format!("reading first frame {image_id}: {e}")))?;
    let mime = match location.as_str().rsplit('.').next() {
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "image/png",
    };
    Ok(Some(InputImage {
        bytes,
        mime: mime.to_string(),
    }))
}

/// Stream a body into the task's storage location.
pub async fn store(
    ctx: &Ctx,
    rec: &TaskRecord,
    ext: &str,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, String>> + Send>>,
) -> Result<storage::Stored, StoreError> {
    let location = Location::new(&rec.season, &rec.group, &rec.id, ext)?;
    ctx.storage.put(&location, body).await
}

/// Fetch a result (retrying network blips in-process) and store it.
pub async fn download(
    ctx: &Ctx,
    provider: &dyn Provider,
    rec: &TaskRecord,
    result: &ResultRef,
) -> Result<storage::Stored, ProviderError> {
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
    store(ctx, rec, &ext, body).await.map_err(store_failure)
}

/// A storage failure as a provider-style error (retry with backoff; too large is final).
pub fn store_failure(e: StoreError) -> ProviderError {
    let class = match e {
        StoreError::TooLarge { .. } => FailureClass::InvalidRequest,
        StoreError::Body(_) => FailureClass::Network,
        _ => FailureClass::Unknown,
    };
    ProviderError::new(class, e.to_string())
}

/// Mark stored and tell dependents (the outbox covers a crash between the two).
pub async fn complete(
    ctx: &Ctx,
    rec: &TaskRecord,
    fence: u64,
    stored: storage::Stored,
) -> Result<(), QueueError> {
    let has_dependents = ctx
        .queue
        .complete(
            &rec.account,
            &rec.id,
            fence,
            stored.location.as_str(),
            &stored.sha256,
            stored.bytes,
        )
        .await?;
    debug!(
        location = stored.location.as_str(),
        bytes = stored.bytes,
        "stored"
    );
    ctx.metrics.task_stored(&rec.account, rec.kind);
    if let Some(acct) = ctx.account(&rec.account) {
        ctx.metrics
            .spend(&rec.account, acct.price_usd(&rec.payload));
    }
    if has_dependents {
        if let Err(e) = ctx.queue.notify_dependents(&rec.account, &rec.id).await {
            warn!(error = %e, "telling dependents failed; the outbox will retry");
        }
    }
    Ok(())
}

/// Apply the retry policy to a failure of a task this worker holds.
pub async fn fail_held(
    ctx: &Ctx,
    rec: &TaskRecord,
    fence: u64,
    attempt: u32,
    err: ProviderError,
) -> Result<(), QueueError> {
    apply_failure(ctx, rec, &FailGuard::Held { fence }, attempt, err).await
}

pub async fn apply_failure(
    ctx: &Ctx,
    rec: &TaskRecord,
    guard: &FailGuard,
    attempt: u32,
    err: ProviderError,
) -> Result<(), QueueError> {
    let decision = retry::decide(
        err.class,
        err.retry_after,
        attempt,
        rec.max_attempts,
        ctx.backoff(),
    );
    record_failure(ctx, rec, guard, decision, &err).await
}

pub async fn record_failure(
    ctx: &Ctx,
    rec: &TaskRecord,
    guard: &FailGuard,
    decision: FailDecision,
    err: &ProviderError,
) -> Result<(), QueueError> {
    let info = FailInfo {
        class: err.class,
        code: err.code.as_deref(),
        message: &err.message,
        cooldown_ms: retry::account_cooldown_ms(err.class, err.retry_after, ctx.backoff()),
    };
    let state = ctx
        .queue
        .fail(&rec.account, &rec.id, guard, decision, &info)
        .await?;
    if state == TaskState::Dead {
        crate::fallback::after_dead(&ctx.queue, rec, err.class).await;
    }
    ctx.metrics.task_failed(
        &rec.account,
        rec.kind,
        err.class,
        FailOutcome::from(&decision),
    );
    if info.cooldown_ms > 0 {
        ctx.metrics.rate_limited(&rec.account);
        ctx.metrics.cooldown(
            &rec.account,
            std::time::Duration::from_millis(info.cooldown_ms),
        );
    }
    warn!(class = %err.class, code = err.code.as_deref().unwrap_or(""), message = %err.message, ?decision, %state, "attempt failed");
    Ok(())
}
