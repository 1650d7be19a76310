//! `dramaq-worker run`: wire the loops together and shut down gracefully.
//!
//! Per served account: a fetcher (claims) and a poller (await schedule). Per process: the
//! heartbeat and the maintenance role. On SIGINT/SIGTERM the process stops claiming and polling,
//! gives back claimed tasks that were not submitted yet, lets in-flight submits and downloads
//! finish within `worker.shutdown_grace_ms`, and leaves awaited renders in Redis for the other
//! workers. Whatever is still held after the grace period is abandoned to lease expiry.

use crate::assemble::Assembler;
use crate::context::{new_worker_id, Ctx};
use crate::held::HeldLeases;
use crate::metrics::{spawn_queue_gauges, Metrics, QUEUE_GAUGES_EVERY};
use crate::providers::{self, Provider};
use crate::{fetch, heartbeat, metrics_server, poll, reaper};
use anyhow::{bail, Context};
use dramaq_common::config::{Config, Family};
use dramaq_common::model::TaskKind;
use dramaq_common::queue::Queue;
use dramaq_common::text::Shown;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub struct RunOptions {
    /// Provider accounts to serve (`--accounts`); empty = every configured account.
    pub accounts: Vec<String>,
    pub concurrency: Option<usize>,
    /// Run the maintenance role inside this worker.
    pub reaper: bool,
    /// Where to serve `/metrics`; `None` serves nothing.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Build the adapters for the accounts to serve.
pub fn build_accounts(
    cfg: &Config,
    only: &[String],
) -> anyhow::Result<BTreeMap<String, Option<Arc<dyn Provider>>>> {
    for name in only {
        if !cfg.accounts.contains_key(name) {
            let known: Vec<&str> = cfg.accounts.keys().map(|s| s.as_str()).collect();
            bail!(
                "--accounts names unknown account '{name}' (configured: {})",
                known.join(", ")
            );
        }
    }
    let mut out = BTreeMap::new();
    for (name, acct) in &cfg.accounts {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let adapter = providers::build(name, acct).with_context(|| format!("account {name}"))?;
        out.insert(name.clone(), adapter);
    }
    Ok(out)
}

/// The reaper's view of `adapters`: each account's own adapter and one per pool key.
pub fn reaper_accounts(
    cfg: &Config,
    adapters: &BTreeMap<String, Option<Arc<dyn Provider>>>,
) -> anyhow::Result<reaper::Accounts> {
    let mut out = reaper::Accounts::new();
    for (name, default) in adapters {
        let keys = match cfg.accounts.get(name) {
            Some(acct) => providers::build_pool(name, acct)
                .with_context(|| format!("account {name}"))?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        out.insert(
            name.clone(),
            reaper::Adapters {
                default: default.clone(),
                keys,
            },
        );
    }
    Ok(out)
}

pub async fn run(
    mut cfg: Config,
    opts: RunOptions,
    signal: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(c) = opts.concurrency {
        if c == 0 {
            bail!("--concurrency must be at least 1");
        }
        cfg.worker.concurrency = c;
    }
    let adapters = build_accounts(&cfg, &opts.accounts)?;
    require_media_tools(&cfg, adapters.keys()).await?;
    let storage = crate::storage::from_config(&cfg.storage)
        .await
        .context("output storage")?;
    let queue = Queue::connect(&cfg.redis).await?;
    // Every account has a provider: HTTP adapters, the chat writer (openai-chat: it needs the
    // queue, storage and metrics) and the in-process assembler (the assembly account).
    let metrics = Metrics::new();
    let shared_cfg = Arc::new(cfg.clone());
    let mut accounts: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    for (name, adapter) in &adapters {
        let provider: Arc<dyn Provider> = match (adapter, cfg.accounts.get(name)) {
            (Some(a), _) => a.clone(),
            (None, Some(acct)) if acct.family == Family::OpenaiChat => {
                Arc::new(crate::providers::openai_chat::OpenaiChat::new(
                    name,
                    acct,
                    acct.api_key(name)
                        .with_context(|| format!("account {name}"))?,
                    shared_cfg.clone(),
                    queue.clone(),
                    storage.clone(),
                    metrics.clone(),
                ))
            }
            (None, _) => Arc::new(Assembler::new(queue.clone(), storage.clone(), &cfg)),
        };
        accounts.insert(name.clone(), provider);
    }
    let mut keyed = BTreeMap::new();
    for name in accounts.keys() {
        if let Some(acct) = cfg.accounts.get(name) {
            for (key, adapter) in
                providers::build_pool(name, acct).with_context(|| format!("account {name}"))?
            {
                keyed.insert((name.clone(), key), adapter);
            }
        }
    }
    for name in accounts.keys() {
        if let Some(acct) = cfg.accounts.get(name) {
            metrics.init_account(name, acct.family.kinds());
            metrics.init_keys(name, acct.pool().iter().map(|k| k.name));
            // The effective submit rate (per second; 0 = unlimited). The adaptive mode that
            // would lower it after repeated 429s is not built yet, so it is the configured rate.
            metrics.set_adaptive_rate(name, acct.quota.submit_per_sec);
        }
    }
    let ctx = Arc::new(Ctx {
        metrics: metrics.clone(),
        slots: Arc::new(Semaphore::new(cfg.worker.concurrency)),
        queue: queue.clone(),
        worker_id: new_worker_id(),
        accounts: accounts.clone(),
        keyed,
        storage,
        held: HeldLeases::default(),
        journal: Default::default(),
        plans: Default::default(),
        poll_wake: Default::default(),
        slot_freed: Default::default(),
        stopping: CancellationToken::new(),
        abort: CancellationToken::new(),
        cfg,
    });
    info!(worker = %ctx.worker_id, accounts = ?ctx.accounts.keys().collect::<Vec<_>>(), concurrency = ctx.cfg.worker.concurrency, redis = %queue.redis().url_redacted(), "worker started");

    if let Some(addr) = opts.metrics_addr {
        let ready = metrics_server::Readiness::default()
            .redis(queue.redis().clone())
            .storage(ctx.storage.clone());
        let bound = metrics_server::serve(addr, metrics.clone(), ready, ctx.abort.clone()).await?;
        info!(%bound, "serving /metrics");
    }
    if let Some(addr) = &ctx.cfg.worker.webhook_addr {
        let addr: std::net::SocketAddr = addr.parse().map_err(|e| {
            anyhow::anyhow!(
                "worker.webhook_addr: {} is not host:port: {e}",
                Shown::id(addr)
            )
        })?;
        let served: Vec<String> = ctx.accounts.keys().cloned().collect();
        let app = crate::webhooks::router(&ctx.cfg, &served, queue.clone(), ctx.poll_wake.clone())?;
        crate::webhooks::serve(addr, app, ctx.abort.clone()).await?;
    }
    // Temporary files of writers killed mid-write (this host's dead processes, or anyone's
    // untouched for an hour) go at start and every ten minutes.
    let sweeper = {
        let (storage, stopping) = (ctx.storage.clone(), ctx.stopping.clone());
        tokio::spawn(async move {
            while !stopping.is_cancelled() {
                match storage.sweep_leftovers().await {
                    Ok(0) => {}
                    Ok(n) => info!(removed = n, "removed temporary files of dead writers"),
                    Err(e) => tracing::warn!(error = %e, "sweeping temporary files failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                    _ = stopping.cancelled() => {}
                }
            }
        })
    };
    let work = TaskTracker::new();
    let loops = TaskTracker::new();
    for account in ctx.accounts.keys() {
        loops.spawn(fetch::run(ctx.clone(), account.clone(), work.clone()));
        loops.spawn(poll::run(ctx.clone(), account.clone(), work.clone()));
    }
    let beat = tokio::spawn(heartbeat::run(ctx.clone()));
    loops.spawn(crate::journal::watch(ctx.clone()));
    if opts.reaper {
        loops.spawn(reaper::run(
            queue.clone(),
            format!("{}-reaper", ctx.worker_id),
            reaper_accounts(&ctx.cfg, &adapters)?,
            reaper::ReaperConfig::from_worker(&ctx.cfg.worker),
            metrics.clone(),
            ctx.stopping.clone(),
        ));
        spawn_queue_gauges(
            queue.clone(),
            accounts.keys().cloned().collect(),
            QUEUE_GAUGES_EVERY,
            metrics.clone(),
            ctx.stopping.clone(),
        );
    }

    signal.cancelled().await;
    info!(
        in_flight = ctx.held.len(),
        "stopping: no new claims; finishing in-flight work"
    );
    ctx.stopping.cancel();
    loops.close();
    loops.wait().await;
    work.close();
    let grace = Duration::from_millis(ctx.cfg.worker.shutdown_grace_ms);
    if tokio::time::timeout(grace, work.wait()).await.is_err() {
        info!(
            abandoned = ctx.held.len(),
            "grace period over; leases of unfinished work will expire"
        );
    }
    ctx.abort.cancel();
    let _ = beat.await;
    let _ = sweeper.await;
    info!("worker stopped");
    Ok(())
}

/// A token fired by the first SIGINT or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        t.cancel();
    });
    token
}

/// Stop at start-up, saying what is missing, when a tool this worker will need is not installed:
/// ffmpeg and ffprobe for the assembly account (unless `assembly.ffmpeg = false`), ffprobe for
/// accounts whose clips and voice lines are probed before they are stored.
async fn require_media_tools<'a>(
    cfg: &Config,
    served: impl Iterator<Item = &'a String>,
) -> anyhow::Result<()> {
    use dramaq_common::config::Family;
    let families: Vec<Family> = served
        .filter_map(|name| cfg.accounts.get(name))
        .map(|a| a.family)
        .collect();
    let assembles = families.contains(&Family::Assembly);
    let downloads_media = families.iter().any(|f| {
        f.kinds()
            .iter()
            .any(|k| matches!(k, TaskKind::Video | TaskKind::Voice))
    });
    if assembles && cfg.assembly.ffmpeg {
        let why = "to build episode masters (or set assembly.ffmpeg = false for a JSON manifest)";
        crate::probe::require_tool(&cfg.worker.ffmpeg, why).await?;
        crate::probe::require_tool(&cfg.worker.ffprobe, why).await?;
    }
    if downloads_media && cfg.assembly.probe {
        let why =
            "to check downloaded clips before they are stored (or set assembly.probe = false)";
        crate::probe::require_tool(&cfg.worker.ffprobe, why).await?;
    }
    Ok(())
}
