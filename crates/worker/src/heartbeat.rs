//! The heartbeat: renews every lease this process holds and keeps it in the worker registry.
//!
//! One `heartbeat.lua` call per account per beat, whatever the number of held tasks. A lease
//! the script reports lost (the reaper gave the task away after this process paused too long) is
//! no longer renewed; the fencing token refuses that task's late transition.

use crate::context::Ctx;
use dramaq_common::keys::fleet;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

pub async fn run(ctx: Arc<Ctx>) {
    let every = Duration::from_millis(ctx.cfg.worker.heartbeat_ms);
    while !ctx.abort.is_cancelled() {
        for (account, held) in ctx.held.by_account() {
            match ctx
                .queue
                .heartbeat(&account, &ctx.worker_id, ctx.lease_ms(), &held)
                .await
            {
                Ok(alive) => {
                    for ((id, _), ok) in held.iter().zip(alive) {
                        if !ok {
                            warn!(task = %id, %account, "lease lost; the task's late result will be refused");
                            ctx.held.remove(id);
                        }
                    }
                }
                Err(e) => warn!(%account, error = %e, "heartbeat failed"),
            }
        }
        if let Err(e) = register(&ctx).await {
            warn!(error = %e, "worker registry update failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = ctx.abort.cancelled() => {}
        }
    }
    let _ = unregister(&ctx).await;
}

async fn register(ctx: &Ctx) -> Result<(), dramaq_common::queue::QueueError> {
    let mut conn = ctx.queue.redis().conn().await?;
    let now = dramaq_common::queue::redis_time_ms(&mut conn).await?;
    let expires = now + 3 * ctx.cfg.worker.heartbeat_ms as i64;
    let accounts: Vec<&str> = ctx.accounts.keys().map(|s| s.as_str()).collect();
    redis::pipe()
        .zadd(fleet::workers(), &ctx.worker_id, expires)
        .ignore()
        .hset_multiple(
            fleet::worker(&ctx.worker_id),
            &[
                ("pid", std::process::id().to_string()),
                ("accounts", accounts.join(",")),
                ("held", ctx.held.len().to_string()),
                ("stopping", ctx.stopping.is_cancelled().to_string()),
                ("seen_ms", now.to_string()),
            ],
        )
        .ignore()
        .pexpire(
            fleet::worker(&ctx.worker_id),
            3 * ctx.cfg.worker.heartbeat_ms as i64,
        )
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

async fn unregister(ctx: &Ctx) -> Result<(), dramaq_common::queue::QueueError> {
    let mut conn = ctx.queue.redis().conn().await?;
    redis::pipe()
        .zrem(fleet::workers(), &ctx.worker_id)
        .ignore()
        .del(fleet::worker(&ctx.worker_id))
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}
