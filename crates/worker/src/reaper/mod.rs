//! Maintenance duties that keep every task moving when a process dies or a timer is due.
//!
//! One file per duty, each with a documented config, one `run_once` and an explicit outcome (in
//! the manner of River's maintenance services). Every duty acts through an idempotent, guarded
//! script, so any number of reapers — the role inside each worker, and `dramaq-worker reaper` —
//! can run at once without handling anything twice.

pub mod delayed;
pub mod leases;
pub mod notify;
pub mod orphans;
pub mod retention;

use crate::metrics::{Metrics, ReaperAction, ReaperDuty};
use crate::providers::Provider;
use dramaq_common::queue::Queue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Settings of all duties.
#[derive(Debug, Clone)]
pub struct ReaperConfig {
    /// Pause between rounds over all accounts.
    pub interval: Duration,
    pub leases: leases::Config,
    pub orphans: orphans::Config,
    pub delayed: delayed::Config,
    pub notify: notify::Config,
    pub retention: retention::Config,
}

impl ReaperConfig {
    pub fn from_worker(cfg: &dramaq_common::config::WorkerConfig) -> ReaperConfig {
        ReaperConfig {
            interval: Duration::from_millis(500),
            leases: leases::Config {
                max_stalls: cfg.max_stalls,
                ..Default::default()
            },
            orphans: orphans::Config::default(),
            delayed: delayed::Config::default(),
            notify: notify::Config::default(),
            retention: retention::Config {
                max_age: (cfg.dead_retention_days > 0)
                    .then(|| Duration::from_secs(cfg.dead_retention_days * 86_400)),
                ..Default::default()
            },
        }
    }
}

/// Run every duty over `accounts` until `stop` fires.
pub async fn run(
    queue: Queue,
    reaper_id: String,
    accounts: BTreeMap<String, Option<Arc<dyn Provider>>>,
    cfg: ReaperConfig,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut retention_state: std::collections::HashMap<String, retention::State> =
        Default::default();
    while !stop.is_cancelled() {
        for (account, provider) in &accounts {
            let state = retention_state.entry(account.clone()).or_default();
            match retention::run_once(&queue, account, &cfg.retention, state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(%account, purged = n, "dead-letter retention"),
                Err(e) => warn!(%account, error = %e, "dead-letter retention failed"),
            }
            let round = run_once(
                &queue,
                &reaper_id,
                account,
                provider.as_deref(),
                &cfg,
                &metrics,
            );
            if let Err(e) = round.await {
                warn!(%account, error = %e, "maintenance round failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// One round of every duty for one account.
pub async fn run_once(
    queue: &Queue,
    reaper_id: &str,
    account: &str,
    provider: Option<&dyn Provider>,
    cfg: &ReaperConfig,
    metrics: &Metrics,
) -> Result<(), dramaq_common::queue::QueueError> {
    let leases = leases::run_once(queue, account, provider, &cfg.leases).await?;
    for (action, n) in [
        (ReaperAction::Requeued, leases.requeued),
        (ReaperAction::Adopted, leases.adopted),
        (ReaperAction::Resubmitted, leases.resubmitted),
        (ReaperAction::Repolled, leases.repolled),
        (ReaperAction::Dead, leases.dead),
    ] {
        if n > 0 {
            metrics.reaper_actions(ReaperDuty::Leases, action, n as u64);
        }
    }
    metrics.possible_duplicates(account, leases.resubmitted as u64);
    let redelivered = orphans::run_once(queue, account, reaper_id, &cfg.orphans).await?;
    let promoted = delayed::run_once(queue, account, &cfg.delayed).await?;
    let notified = notify::run_once(queue, account, &cfg.notify).await?;
    for (duty, action, n) in [
        (ReaperDuty::Orphans, ReaperAction::Redelivered, redelivered),
        (ReaperDuty::Delayed, ReaperAction::Promoted, promoted),
        (ReaperDuty::Notify, ReaperAction::Notified, notified),
    ] {
        if n > 0 {
            metrics.reaper_actions(duty, action, n as u64);
        }
    }
    Ok(())
}
