//! The waiting index, and the re-check that readies a waiting task whose notification was lost.
//!
//! Telling a dependent that a dependency is stored crosses hash tags (ARCHITECTURE.md,
//! "Dependencies across hash tags"): `dep_done.lua` runs on the dependent's shard, then the
//! dependency's outbox entry is cleared on its own shard. Should the dependent's shard lose that
//! write afterwards (a failover to a replica that had not received it, a restart without the last
//! second of AOF), nothing would tell the dependent again and it would wait forever. Every waiting
//! task is therefore listed in its account's `waiting` index, and the reaper re-checks those that
//! have waited a while: each pending dependency found stored is told again. Telling is
//! idempotent, so a re-check of a healthy task changes nothing.

use super::{AccountKeys, Queue, Result};
use crate::model::{DepRef, TaskState};
use redis::AsyncCommands;
use std::collections::HashSet;

/// What re-checking one entry of the waiting index found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// The record is gone or no longer waiting: its stale index entry was removed.
    NotWaiting,
    /// No pending dependency is stored: it waits, as it should.
    StillWaiting,
    /// Stored dependencies had not been told; `told` of them were, and it still waits for others.
    Told { told: usize },
    /// Its last pending dependencies were stored: told, it is ready now.
    Readied { told: usize },
}

impl Queue {
    /// Up to `limit` entries of `account`'s waiting index not checked for `older_than_ms`
    /// (Redis clock). Each is marked checked now, so successive calls go round the index.
    pub async fn waiting_due(
        &self,
        account: &str,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>> {
        let key = AccountKeys::new(account).waiting();
        let (now, due) = self.scored_before(&key, older_than_ms, limit).await?;
        if !due.is_empty() {
            // XX: an entry removed meanwhile (readied) is not brought back.
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&key).arg("XX");
            for id in &due {
                cmd.arg(now).arg(id);
            }
            cmd.query_async::<()>(&mut self.redis.conn().await?).await?;
        }
        Ok(due)
    }

    /// Re-check waiting task `id` of `account`: tell it each pending dependency that is stored.
    pub async fn recheck_waiting(&self, account: &str, id: &str) -> Result<Recheck> {
        let k = AccountKeys::new(account);
        let record = self.get_task(account, id).await?;
        let Some(record) = record.filter(|r| r.state == TaskState::Waiting) else {
            let _: i64 = self.redis.conn().await?.zrem(k.waiting(), id).await?;
            return Ok(Recheck::NotWaiting);
        };
        let pending: HashSet<String> = self.redis.conn().await?.smembers(k.deps(id)).await?;
        let dependent = DepRef {
            id: id.to_string(),
            account: account.to_string(),
        };
        if pending.is_empty() {
            // Nothing left to wait for, yet waiting: readying is all that is missing.
            let any = record.deps.first().map(|d| d.id.as_str()).unwrap_or("");
            let state = self.dep_done(&dependent, any).await?;
            return Ok(match state.as_str() {
                "ready" => Recheck::Readied { told: 0 },
                _ => Recheck::StillWaiting,
            });
        }
        // Where each pending dependency lives: the record's entries follow moves; the season
        // index is asked for any the record does not name.
        let mut deps: Vec<DepRef> = record
            .deps
            .iter()
            .filter(|d| pending.contains(&d.id))
            .cloned()
            .collect();
        for dep_id in &pending {
            if deps.iter().any(|d| &d.id == dep_id) {
                continue;
            }
            if let Some(dep_account) = self.task_account(&record.season, dep_id).await? {
                deps.push(DepRef {
                    id: dep_id.clone(),
                    account: dep_account,
                });
            }
        }
        let stored = self.stored_among(deps.iter()).await?;
        let mut told = 0;
        let mut readied = false;
        for dep_id in &stored {
            told += 1;
            if self.dep_done(&dependent, dep_id).await? == "ready" {
                readied = true;
            }
        }
        Ok(match (told, readied) {
            (0, _) => Recheck::StillWaiting,
            (told, true) => Recheck::Readied { told },
            (told, false) => Recheck::Told { told },
        })
    }
}
