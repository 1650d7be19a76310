//! Submitting one claimed task: record the attempt, submit, and hand the task on.
//!
//! The order is what makes "never pay twice" hold (docs/invariants.md, "Never pay twice"):
//! `mark_submitting` before the HTTP call (made durable first where `redis.durable_submit`
//! asks), `mark_accepted` (the provider's id) right after it. An asynchronous render then leaves
//! this worker for the await schedule ([`crate::poll`]); a synchronous result (or an in-process
//! family's, like episode assembly) is stored and the task completed. Every way out runs through
//! [`crate::finish`].

use crate::context::Ctx;
use crate::decide::Phase;
use crate::finish::{self, Context, Holder, Lease};
use crate::metrics::ProviderOperation;
use crate::providers::{InputImage, ProviderError, SubmitOutcome, SubmitRequest, SyncResult};
use crate::storage::{self, Location};
use dramaq_common::model::{FailureClass, TaskPayload, TaskRecord};
use dramaq_common::queue::{Accepted, QueueError};
use dramaq_common::text::Shown;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, info, warn, Instrument};

/// Run a claimed task to its next resting state. Holds one worker slot (`permit`) throughout.
pub(crate) async fn run_claimed(ctx: Arc<Ctx>, rec: TaskRecord, permit: OwnedSemaphorePermit) {
    let span = tracing::info_span!("task", season = %Shown::id(&rec.season), label = %Shown::id(&rec.label), task = %rec.id, account = %rec.account);
    async move {
        let lease = Lease::of(&rec);
        ctx.held.insert(&lease);
        let _held = ctx.metrics.track_held(&rec.account);
        let outcome = handle(&ctx, &lease, &rec).await;
        ctx.held.remove(&lease.id);
        drop(permit);
        match outcome {
            Ok(()) => {}
            Err(QueueError::Fenced(_)) => {
                warn!("lost the task's lease to another worker; nothing was paid, so nothing is lost")
            }
            Err(e) => warn!(error = %e, "task step failed; its lease will expire and the reaper moves it on"),
        }
    }
    .instrument(span)
    .await
}

async fn handle(ctx: &Ctx, lease: &Lease, rec: &TaskRecord) -> Result<(), QueueError> {
    let holder = Holder::Lease(lease.clone());
    if ctx.stopping.is_cancelled() {
        // Shutting down before anything reached the provider: give it back at once.
        ctx.queue
            .release(&lease.account, &lease.id, lease.fence)
            .await?;
        finish::settle_budget(ctx, rec, None).await;
        return Ok(());
    }
    let Some(provider) = ctx.provider_for(&lease.account, rec.key.as_deref()) else {
        let msg = format!(
            "account {} (key {}) is not in this worker's configuration",
            lease.account,
            rec.key.as_deref().unwrap_or("-")
        );
        let err = ProviderError::new(FailureClass::InvalidRequest, msg);
        let at = Context::new(Phase::Prepare, rec.attempt + 1);
        return finish::fail(ctx, &holder, rec, at, err).await;
    };
    let first_frame = match load_first_frame(ctx, rec).await {
        Ok(img) => img,
        // Nothing reached the provider, so no attempt was recorded; count the task's failures
        // instead, so an image that never becomes readable ends in the DLQ, not in a loop.
        Err(e) => {
            let tries = rec.attempt.max(rec.errors.len() as u32) + 1;
            return finish::fail(ctx, &holder, rec, Context::new(Phase::Prepare, tries), e).await;
        }
    };
    let attempt = match ctx
        .queue
        .mark_submitting(&lease.account, &lease.id, lease.fence)
        .await
    {
        Ok(attempt) => attempt,
        Err(e @ QueueError::Fenced(_)) => return Err(e),
        // Not known to be recorded (or not durable as `redis.durable_submit` asks): nothing is
        // sent, and the task is retried later like any failure before a submit.
        Err(e) => {
            let err = ProviderError::new(
                FailureClass::Network,
                format!("the submit was not sent: recording it failed: {e}"),
            )
            .with_code("submit_not_recorded");
            let at = Context::new(Phase::Prepare, rec.attempt + 1);
            return finish::fail(ctx, &holder, rec, at, err).await;
        }
    };
    let req = SubmitRequest {
        task_id: &rec.id,
        attempt,
        payload: &rec.payload,
        first_frame,
        season: &rec.season,
        group: &rec.group,
        deps: &rec.deps,
    };
    let started = std::time::Instant::now();
    let submitted = provider.submit(req).await;
    ctx.metrics
        .submit_duration(&lease.account, started.elapsed());
    let status = match &submitted {
        Ok(_) => Some(200),
        Err(e) => e.http_status,
    };
    ctx.metrics
        .provider_request(&lease.account, ProviderOperation::Submit, status);
    let failed_at = Context::new(Phase::Submit, attempt);
    let paid = provider.charges();
    match submitted {
        Ok(SubmitOutcome::Accepted {
            provider_task_id,
            poll_locator,
            poll_after,
        }) => {
            let hinted = poll_after.map_or(0, |d| d.as_millis() as u64);
            let planned = match ctx.account(&lease.account) {
                Some(acct) => ctx.await_plan(&lease.account, acct).await.first_delay(acct),
                None => 5_000,
            };
            let first_poll = planned.max(hinted);
            let accepted = ctx
                .queue
                .mark_accepted_attempt(
                    &lease.account,
                    &lease.id,
                    lease.fence,
                    attempt,
                    &provider_task_id,
                    poll_locator.as_deref(),
                    first_poll,
                )
                .await?;
            ctx.journal.accepted(
                lease,
                attempt,
                &provider_task_id,
                poll_locator.as_deref(),
                first_poll,
            );
            let ptid = Shown::id(&provider_task_id);
            match accepted {
                Accepted::Accepted => {
                    info!(attempt, provider_task_id = %ptid, "submitted; awaiting render")
                }
                Accepted::Adopted => {
                    ctx.metrics.adopted_after_regression(&lease.account);
                    warn!(attempt, provider_task_id = %ptid, "submitted, but the record had gone back in time (lost Redis writes) or been taken back; the render was attached to it, so it is not paid for again")
                }
                Accepted::Orphaned => {
                    ctx.metrics.possible_duplicates(&lease.account, 1);
                    error!(attempt, provider_task_id = %ptid, "submitted and paid, but the task had already moved on; this render is not awaited and the task is flagged possible_duplicate")
                }
            }
            Ok(())
        }
        Ok(SubmitOutcome::Finished(result)) => {
            let stored = match result {
                SyncResult::Bytes { bytes, ext } => {
                    store_sync(ctx, rec, &ext, storage::once(bytes)).await
                }
                SyncResult::Stream { body, ext } => store_sync(ctx, rec, &ext, body).await,
                SyncResult::Ref(result) => {
                    finish::download(ctx, provider.as_ref(), rec, &result).await
                }
            };
            match stored {
                Ok(stored) => finish::complete(ctx, lease, rec, stored, paid).await,
                Err(e) => finish::fail(ctx, &holder, rec, failed_at, e).await,
            }
        }
        Err(e) => finish::fail(ctx, &holder, rec, failed_at, e).await,
    }
}

/// Store a synchronous answer under the task's extension unless the family named its own.
async fn store_sync(
    ctx: &Ctx,
    rec: &TaskRecord,
    ext: &str,
    body: storage::Body,
) -> Result<storage::Stored, ProviderError> {
    let ext = if ext.is_empty() {
        rec.ext.as_str()
    } else {
        ext
    };
    finish::store_checked(ctx, rec, ext, body).await
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
