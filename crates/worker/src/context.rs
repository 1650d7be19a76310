//! What every worker loop shares: configuration, the queue, adapters, storage, held leases and
//! the shutdown signals.

use crate::decide::Backoff;
use crate::held::HeldLeases;
use crate::metrics::Metrics;
use crate::providers::Provider;
use crate::storage::Storage;
use dramaq_common::config::{AccountConfig, Config};
use dramaq_common::queue::Queue;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub(crate) struct Ctx {
    pub cfg: Config,
    pub queue: Queue,
    /// Unique per process: `<host>-<pid>-<random>`.
    pub worker_id: String,
    /// Accounts this worker serves, with their adapter (HTTP, or in-process for assembly).
    pub accounts: BTreeMap<String, Arc<dyn Provider>>,
    /// Adapters of the named keys of accounts with a key pool, by (account, key name).
    pub keyed: BTreeMap<(String, String), Arc<dyn Provider>>,
    pub storage: Arc<dyn Storage>,
    pub held: HeldLeases,
    /// Paid transitions of the last seconds, replayed when Redis restarts.
    pub(crate) journal: crate::journal::Journal,
    /// Slots for claimed work (submits, downloads of sync results, assembly).
    pub slots: Arc<Semaphore>,
    /// Fired on SIGINT/SIGTERM: stop claiming and polling, finish what is in flight.
    pub stopping: CancellationToken,
    /// Fired when the shutdown grace period is over: abandon in-flight work (leases expire and
    /// the reaper moves it on).
    pub abort: CancellationToken,
    pub metrics: Metrics,
    /// Each account's poll schedule, learned from its finished renders.
    pub plans: crate::await_plan::Plans,
    /// Wakes this process's idle pollers when its callback receiver moved a poll to now.
    pub poll_wake: Arc<tokio::sync::Notify>,
    /// Wakes this process's fetchers that wait for a render slot when this process freed one
    /// (a render seen finished, a task stored or failed), so the slot is claimed again at once
    /// instead of at the next quota check.
    pub slot_freed: Arc<tokio::sync::Notify>,
}

impl Ctx {
    /// The account's configuration. Records name their account; one missing from this
    /// worker's config is reported, never a panic.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.cfg.accounts.get(name)
    }

    pub fn provider(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.accounts.get(name).cloned()
    }

    /// The adapter for a task's attempt: the one of the pool key its claim recorded (`key`), or
    /// the account's own for an account without a pool. A key this worker does not know (a
    /// config changed under a running render) gives `None`, never another key's adapter.
    pub fn provider_for(&self, account: &str, key: Option<&str>) -> Option<Arc<dyn Provider>> {
        match key {
            None => self.provider(account),
            Some(k) => self
                .keyed
                .get(&(account.to_string(), k.to_string()))
                .cloned(),
        }
    }

    pub fn backoff(&self) -> Backoff {
        Backoff {
            base_ms: self.cfg.worker.retry_base_ms,
            max_ms: self.cfg.worker.retry_max_ms,
        }
    }

    /// Whether the account's renders call back (the webhook receiver is configured and the
    /// family sends callbacks): then polls are a safety net only.
    pub fn callbacks(&self, account: &str) -> bool {
        self.account(account)
            .is_some_and(|a| a.callback_url.is_some() && crate::webhooks::calls_back(a.family))
    }

    /// The await plan of `account` (configured as `acct`): when to poll its renders.
    pub(crate) async fn await_plan(
        &self,
        account: &str,
        acct: &AccountConfig,
    ) -> Arc<crate::await_plan::Plan> {
        self.plans
            .get(
                &self.queue,
                account,
                self.callbacks(account),
                acct.poll_points,
            )
            .await
    }

    pub fn lease_ms(&self) -> u64 {
        self.cfg.worker.lease_ms
    }
}

/// A worker id unique across hosts and restarts.
pub fn new_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}
