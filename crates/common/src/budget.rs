//! Season budgets: what a season may spend, reserved at claim time and settled with what each
//! attempt actually cost.
//!
//! A season's tasks live under many account hash tags, so the budget cannot be checked in the
//! same script that claims from an account's stream. Admission is two steps (ARCHITECTURE.md,
//! "Season budgets"): `claim.lua` claims in the account's slot, skipping seasons in the
//! account's `parked` set; then [`Queue::budget_reserve`] reserves the task's estimate in the
//! season's slot. A task that does not fit is given back and the season is parked: the flag in
//! the season's budget hash, then a copy in each of its accounts' `parked` sets so their claims
//! put its deliveries back without claiming them. Raising the budget ([`Queue::budget_set`])
//! clears both. Every step is idempotent; amounts are integer micro-USD.

use crate::keys::{AccountKeys, SeasonKeys};
use crate::queue::{Queue, Result};
use redis::{AsyncCommands, Script};
use std::collections::BTreeMap;
use std::sync::LazyLock;

static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/budget_reserve.lua")));
static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/budget_settle.lua")));

/// USD as integer micro-USD (what Redis holds), rounded; negative and non-finite become 0.
pub fn micros(usd: f64) -> i64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).round().min(9e15) as i64
    } else {
        0
    }
}

/// A season's budget as stored, in USD.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Budget {
    /// The cap; `None` when the season has no budget.
    pub cap_usd: Option<f64>,
    pub reserved_usd: f64,
    pub spent_usd: f64,
    /// Why claims of the season stop (`budget`), if they do.
    pub parked: Option<String>,
}

/// One settled attempt's cost, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spend {
    pub usd: f64,
    pub group: String,
    pub kind: String,
    pub account: String,
    #[serde(default)]
    pub key: String,
}

/// What to settle: the attempt and what it cost.
#[derive(Debug, Clone)]
pub struct Settle<'a> {
    pub id: &'a str,
    pub attempt: u32,
    pub spend: &'a Spend,
}

impl Queue {
    /// Reserve `usd` for task `id` of `season`. `Ok(false)`: it does not fit, the season is now
    /// parked — give the task back and call [`Queue::budget_park`].
    pub async fn budget_reserve(&self, season: &str, id: &str, usd: f64) -> Result<bool> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        let ok: i64 = RESERVE
            .key(s.budget())
            .key(s.reservations())
            .arg(id)
            .arg(micros(usd))
            .invoke_async(&mut conn)
            .await?;
        Ok(ok == 1)
    }

    /// Settle task `id`'s reservation with what its attempt cost (`settle`), or release it
    /// with nothing spent (`None`: given back unsubmitted, or refused before any charge).
    pub async fn budget_settle(
        &self,
        season: &str,
        id: &str,
        settle: Option<&Settle<'_>>,
    ) -> Result<()> {
        let s = SeasonKeys::new(season);
        let mut inv = SETTLE.prepare_invoke();
        inv.key(s.budget())
            .key(s.reservations())
            .key(s.ledger())
            .arg(id);
        match settle {
            Some(x) => inv
                .arg(format!("{}#{}", x.id, x.attempt))
                .arg(micros(x.spend.usd))
                .arg(serde_json::to_string(x.spend).unwrap_or_default()),
            None => inv.arg("").arg(0).arg(""),
        };
        let mut conn = self.redis().conn().await?;
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Copy the season's `parked` flag into each of its accounts' `parked` sets, so claims put
    /// its deliveries back. Re-reads the flag afterwards: when a concurrent
    /// [`Queue::budget_set`] cleared it meanwhile, the copies are removed again.
    pub async fn budget_park(&self, season: &str) -> Result<()> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        let accounts: Vec<String> = conn.smembers(s.accounts()).await?;
        for a in &accounts {
            let _: i64 = conn.sadd(AccountKeys::new(a).parked(), season).await?;
        }
        let still: bool = conn.hexists(s.budget(), "parked").await?;
        if !still {
            self.unpark_accounts(season, &accounts).await?;
        }
        Ok(())
    }

    async fn unpark_accounts(&self, season: &str, accounts: &[String]) -> Result<()> {
        let mut conn = self.redis().conn().await?;
        for a in accounts {
            let _: i64 = conn.srem(AccountKeys::new(a).parked(), season).await?;
        }
        Ok(())
    }

    /// Set the season's cap (`None` removes it) and resume it: the `parked` flag and its
    /// copies are cleared, so the next claim tries again (and parks again if the next task
    /// still does not fit).
    pub async fn budget_set(&self, season: &str, usd: Option<f64>) -> Result<Budget> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        match usd {
            Some(usd) => {
                let _: i64 = conn.hset(s.budget(), "cap", micros(usd)).await?;
            }
            None => {
                let _: i64 = conn.hdel(s.budget(), "cap").await?;
            }
        }
        let _: i64 = conn.hdel(s.budget(), "parked").await?;
        let accounts: Vec<String> = conn.smembers(s.accounts()).await?;
        self.unpark_accounts(season, &accounts).await?;
        self.budget(season).await
    }

    /// Set the cap only when the season has none yet (enqueue of a script with `budget:`; a
    /// cap changed with `dramaq budget set` is kept).
    pub async fn budget_init(&self, season: &str, usd: f64) -> Result<()> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        let _: bool = conn.hset_nx(s.budget(), "cap", micros(usd)).await?;
        Ok(())
    }

    pub async fn budget(&self, season: &str) -> Result<Budget> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        let h: BTreeMap<String, String> = conn.hgetall(s.budget()).await?;
        let usd = |f: &str| {
            h.get(f)
                .and_then(|v| v.parse::<i64>().ok())
                .map(|m| m as f64 / 1e6)
        };
        Ok(Budget {
            cap_usd: usd("cap"),
            reserved_usd: usd("reserved").unwrap_or(0.0),
            spent_usd: usd("spent").unwrap_or(0.0),
            parked: h.get("parked").cloned(),
        })
    }

    /// Every settled attempt of the season (its spend ledger).
    pub async fn budget_ledger(&self, season: &str) -> Result<Vec<Spend>> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        let h: BTreeMap<String, String> = conn.hgetall(s.ledger()).await?;
        Ok(h.values()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect())
    }
}
