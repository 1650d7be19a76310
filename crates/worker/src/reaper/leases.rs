//! Duty: expired leases. A holder whose heartbeat stopped loses its tasks.
//!
//! Only an expired lease (by the Redis clock) counts as stalled — never idle time alone
//! (docs/invariants.md, "Leases, not idle time"). What happens next depends on how far the
//! holder got, and is
//! decided inside `reap_lease.lua`; for a task caught mid-submit this duty first asks the
//! provider whether it already has it (Kling's `external_task_id`), so a render it accepted is
//! adopted instead of paid for twice. A task that stalled too often moves to the next account
//! of its chain in the same script (`moving`); the move is then finished here, or by the moves
//! duty.

use dramaq_common::model::TaskState;
use dramaq_common::ops::Ops;
use dramaq_common::queue::{LeaseAction, Queue, QueueError};
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct Config {
    /// How often expired leases are looked for. Default 500 ms.
    pub interval: std::time::Duration,
    /// Expired leases handled per round and account.
    pub batch: usize,
    /// Times a task may be taken back before it is dead as `stalled` (worker.max_stalls).
    pub max_stalls: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: std::time::Duration::from_millis(500),
            batch: 200,
            max_stalls: 3,
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub requeued: usize,
    pub adopted: usize,
    pub resubmitted: usize,
    pub repolled: usize,
    pub moved: usize,
    pub dead: usize,
}

pub async fn run_once(
    queue: &Queue,
    account: &str,
    adapters: &super::Adapters,
    cfg: &Config,
) -> Result<Outcome, QueueError> {
    let provider = adapters.default.as_deref();
    let mut out = Outcome::default();
    for id in queue.expired_leases(account, cfg.batch).await? {
        // Read once: reconciliation needs it, and so does the fallback (the next account of
        // its chain).
        let rec = match queue.get_task(account, &id).await {
            Ok(rec) => rec,
            Err(e @ QueueError::Decode { .. }) => {
                // One unreadable record must not stop this duty (and the later ones) for the
                // whole account; it stays expired and is reported every round.
                warn!(task = %id, error = %e, "cannot read the task of an expired lease; skipped");
                continue;
            }
            Err(e) => return Err(e),
        };
        // Asked with the key that submitted it: another key's account cannot see the task.
        let asked = rec
            .as_ref()
            .and_then(|r| adapters.for_key(r.key.as_deref()));
        let reconciled = match (asked, &rec) {
            (Some(p), Some(rec)) if rec.state == TaskState::Submitting => {
                match p.reconcile(&rec.id, rec.attempt, &rec.payload).await {
                    Ok(found) => found,
                    Err(e) => {
                        warn!(task = %id, error = %e, "reconciliation failed; resubmitting");
                        None
                    }
                }
            }
            _ => None,
        };
        let next_account = rec
            .as_ref()
            .and_then(|r| r.chain.get(r.chain_pos as usize + 1))
            .map(String::as_str);
        // No adapter means an in-process account (assembly): a resubmit there costs nothing.
        let charges = provider.is_some_and(|p| p.charges());
        let action = queue
            .reap_lease(
                account,
                &id,
                cfg.max_stalls,
                reconciled.as_ref().map(|(p, l)| (p.as_str(), l.as_deref())),
                next_account,
                charges,
            )
            .await?;
        // A task taken off this account for good (dead, or moved down its chain) gives its
        // budget reservation back; one requeued here keeps it for its next claim.
        if matches!(action, LeaseAction::Dead | LeaseAction::Moved) {
            if let Some(rec) = &rec {
                let episode = dramaq_common::budget::episode_of(&rec.group);
                if let Err(e) = queue
                    .budget_settle(&rec.season, &rec.id, episode, None)
                    .await
                {
                    warn!(task = %id, error = %e, "releasing the budget reservation failed; it stays held");
                }
            }
        }
        match action {
            LeaseAction::Requeued => out.requeued += 1,
            LeaseAction::Adopted => out.adopted += 1,
            LeaseAction::Resubmit => out.resubmitted += 1,
            LeaseAction::Repoll => out.repolled += 1,
            LeaseAction::Moved => {
                out.moved += 1;
                if let Some(rec) = &rec {
                    crate::finish::finish_move(&Ops::new(queue.clone()), rec).await;
                }
            }
            LeaseAction::Dead => out.dead += 1,
            LeaseAction::NotExpired | LeaseAction::Gone => continue,
        }
        info!(%account, task = %id, ?action, "expired lease handled");
    }
    Ok(out)
}
