//! Maintenance duties that keep every task moving when a process dies or a timer is due.
//!
//! One file per duty, each with a documented `Config` (its own interval among them), one
//! `run_once` per account and an explicit outcome, in the manner of River's maintenance
//! services. Each duty runs in its own loop: a slow or failing duty never delays another, and an
//! error for one account is logged and the duty goes on with the next. Every duty acts through
//! idempotent, guarded scripts, so any number of reapers — the role inside each worker, and
//! `dramaq-worker reaper` — can run at once without handling anything twice.
//!
//! | duty | what it moves on | default interval |
//! |---|---|---|
//! | [`leases`] | tasks whose holder's lease expired | 500 ms |
//! | [`delayed`] | due retries to ready | 250 ms |
//! | [`notify`] | stored tasks whose dependents were not told | 1 s |
//! | [`waiting`] | waiting tasks told of a stored dependency in a write that was lost | 5 s |
//! | [`moves`] | fallbacks and operator moves cut short | 1 s |
//! | [`orphans`] | stream deliveries read but never claimed | 5 s |
//! | [`retention`] | dead tasks past `worker.dead_retention_days` (off by default) | 1 h |

pub mod delayed;
pub mod leases;
pub mod moves;
pub mod notify;
pub mod orphans;
pub mod retention;
pub mod waiting;

use crate::metrics::{Metrics, ReaperAction, ReaperDuty};
use crate::providers::Provider;
use dramaq_common::queue::Queue;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Settings of all duties.
#[derive(Debug, Clone, Default)]
pub struct ReaperConfig {
    pub leases: leases::Config,
    pub orphans: orphans::Config,
    pub delayed: delayed::Config,
    pub notify: notify::Config,
    pub waiting: waiting::Config,
    pub moves: moves::Config,
    pub retention: retention::Config,
}

impl ReaperConfig {
    pub fn from_worker(cfg: &dramaq_common::config::WorkerConfig) -> ReaperConfig {
        ReaperConfig {
            leases: leases::Config {
                max_stalls: cfg.max_stalls,
                ..Default::default()
            },
            retention: retention::Config {
                max_age: (cfg.dead_retention_days > 0)
                    .then(|| Duration::from_secs(cfg.dead_retention_days * 86_400)),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// The accounts a reaper serves, with their HTTP adapters.
pub type Accounts = BTreeMap<String, Adapters>;

/// An account's HTTP adapters: the account's own (`None`: an in-process account such as
/// assembly, which charges nothing and cannot be asked about lost submits) and one per pool key,
/// since a provider task id belongs to the key that submitted it.
#[derive(Clone, Default)]
pub struct Adapters {
    pub default: Option<Arc<dyn Provider>>,
    pub keys: BTreeMap<String, Arc<dyn Provider>>,
}

impl Adapters {
    /// The adapter that speaks for a task submitted with pool key `key` (the account's own
    /// without one); `None` when this reaper has no adapter for that key.
    pub fn for_key(&self, key: Option<&str>) -> Option<&dyn Provider> {
        match key {
            Some(k) => self.keys.get(k).map(|p| p.as_ref()),
            None => self.default.as_deref(),
        }
    }
}

/// Run every duty over `accounts`, each in its own loop, until `stop` fires.
pub async fn run(
    queue: Queue,
    reaper_id: String,
    accounts: Accounts,
    cfg: ReaperConfig,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let duties = TaskTracker::new();
    let accounts = Arc::new(accounts);
    let every = |name: &'static str, interval: Duration| Every {
        name,
        interval,
        accounts: accounts.clone(),
        stop: stop.clone(),
    };

    let (q, c, m) = (queue.clone(), cfg.leases.clone(), metrics.clone());
    duties.spawn(every("leases", c.interval).run(move |account, adapters| {
        let (q, c, m) = (q.clone(), c.clone(), m.clone());
        async move {
            let out = leases::run_once(&q, &account, &adapters, &c).await?;
            for (action, n) in [
                (ReaperAction::Requeued, out.requeued),
                (ReaperAction::Adopted, out.adopted),
                (ReaperAction::Resubmitted, out.resubmitted),
                (ReaperAction::Repolled, out.repolled),
                (ReaperAction::Moved, out.moved),
                (ReaperAction::Dead, out.dead),
            ] {
                if n > 0 {
                    m.reaper_actions(ReaperDuty::Leases, action, n as u64);
                }
            }
            m.possible_duplicates(&account, out.resubmitted as u64);
            Ok::<_, dramaq_common::queue::QueueError>(())
        }
    }));

    let (q, c, m, id) = (
        queue.clone(),
        cfg.orphans.clone(),
        metrics.clone(),
        reaper_id.clone(),
    );
    duties.spawn(every("orphans", c.interval).run(move |account, _| {
        let (q, c, m, id) = (q.clone(), c.clone(), m.clone(), id.clone());
        async move {
            let n = orphans::run_once(&q, &account, &id, &c).await?;
            count(&m, ReaperDuty::Orphans, ReaperAction::Redelivered, n);
            Ok::<_, dramaq_common::queue::QueueError>(())
        }
    }));

    let (q, c, m) = (queue.clone(), cfg.delayed.clone(), metrics.clone());
    duties.spawn(every("delayed", c.interval).run(move |account, _| {
        let (q, c, m) = (q.clone(), c.clone(), m.clone());
        async move {
            let n = delayed::run_once(&q, &account, &c).await?;
            count(&m, ReaperDuty::Delayed, ReaperAction::Promoted, n);
            Ok::<_, dramaq_common::queue::QueueError>(())
        }
    }));

    let (q, c, m) = (queue.clone(), cfg.notify.clone(), metrics.clone());
    duties.spawn(every("notify", c.interval).run(move |account, _| {
        let (q, c, m) = (q.clone(), c.clone(), m.clone());
        async move {
            let n = notify::run_once(&q, &account, &c).await?;
            count(&m, ReaperDuty::Notify, ReaperAction::Notified, n);
            Ok::<_, dramaq_common::queue::QueueError>(())
        }
    }));

    let (q, c, m) = (queue.clone(), cfg.waiting.clone(), metrics.clone());
    duties.spawn(every("waiting", c.interval).run(move |account, _| {
        let (q, c, m) = (q.clone(), c.clone(), m.clone());
        async move {
            let out = waiting::run_once(&q, &account, &c).await?;
            count(&m, ReaperDuty::Waiting, ReaperAction::Notified, out.told);
            Ok::<_, dramaq_common::queue::QueueError>(())
        }
    }));

    let (q, c, m) = (queue.clone(), cfg.moves.clone(), metrics.clone());
    duties.spawn(every("moves", c.interval).run(move |account, _| {
        let (q, c, m) = (q.clone(), c.clone(), m.clone());
        async move {
            let n = moves::run_once(&q, &account, &c).await?;
            count(&m, ReaperDuty::Moves, ReaperAction::Moved, n);
            Ok::<_, dramaq_common::ops::OpsError>(())
        }
    }));

    if cfg.retention.max_age.is_some() {
        let (q, c) = (queue.clone(), cfg.retention.clone());
        duties.spawn(every("retention", c.interval).run(move |account, _| {
            let (q, c) = (q.clone(), c.clone());
            async move {
                let n = retention::run_once(&q, &account, &c).await?;
                if n > 0 {
                    info!(%account, purged = n, "dead-letter retention");
                }
                Ok::<_, dramaq_common::ops::OpsError>(())
            }
        }));
    }

    duties.close();
    duties.wait().await;
}

fn count(metrics: &Metrics, duty: ReaperDuty, action: ReaperAction, n: usize) {
    if n > 0 {
        metrics.reaper_actions(duty, action, n as u64);
    }
}

/// One duty's loop: every `interval`, one round over every account.
struct Every {
    name: &'static str,
    interval: Duration,
    accounts: Arc<Accounts>,
    stop: CancellationToken,
}

impl Every {
    async fn run<F, Fut, E>(self, round: F)
    where
        F: Fn(String, Adapters) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        while !self.stop.is_cancelled() {
            for (account, adapters) in self.accounts.iter() {
                if let Err(e) = round(account.clone(), adapters.clone()).await {
                    warn!(duty = self.name, %account, error = %e, "maintenance duty failed for this account; it runs again next round");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }
}
