//! Season budgets: what a season (and each of its episodes) may spend, reserved at claim time
//! and settled with what each attempt actually cost.
//!
//! A season's tasks live under many account hash tags, so the budget cannot be checked in the
//! same script that claims from an account's stream. Admission is two steps (ARCHITECTURE.md,
//! "Season budgets"): `claim.lua` claims in the account's slot, skipping seasons and episodes in
//! the account's `parked` set; then [`Queue::budget_reserve`] reserves the task's cost ceiling
//! in the season's slot. A task that does not fit is given back and the season (or episode) is
//! parked: the flag in the season's budget hash, then a copy in each of its accounts' `parked`
//! sets so their claims put its deliveries back without claiming them. Settling an attempt
//! ([`Queue::budget_settle`]) resumes a parked season or episode once what it was waiting for
//! fits again; raising the budget ([`Queue::budget_set`]) resumes everything. Every step is
//! idempotent; amounts are integer micro-USD.

use crate::keys::{AccountKeys, SeasonKeys};
use crate::model::CHARACTER_GROUP;
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

/// The episode a task of `group` counts against under a per-episode cap; `None` for the
/// season-wide character sheets, which only the season's cap holds.
pub fn episode_of(group: &str) -> Option<&str> {
    (group != CHARACTER_GROUP && !group.is_empty()).then_some(group)
}

/// The member of an account's `parked` set that holds back `season`, or one of its episodes.
pub fn parked_member(season: &str, episode: Option<&str>) -> String {
    match episode {
        Some(ep) => format!("{season}/{ep}"),
        None => season.to_string(),
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
    /// The cap of every episode (character sheets count against the season only).
    pub per_episode_cap_usd: Option<f64>,
    /// Reserved and spent per episode, and which episodes are parked over their cap.
    pub episodes: BTreeMap<String, EpisodeBudget>,
}

/// One episode's share of the season's budget.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EpisodeBudget {
    pub reserved_usd: f64,
    pub spent_usd: f64,
    /// `episode_budget` while the episode's claims stop.
    pub parked: Option<String>,
}

/// A change to one of a season's caps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapChange {
    Keep,
    Set(f64),
    Remove,
}

/// What [`Queue::budget_reserve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The ceiling is reserved (or already was): the task may start.
    Reserved,
    /// The season's cap cannot hold it: the season is parked.
    SeasonOver,
    /// The episode's cap cannot hold it: the episode is parked.
    EpisodeOver,
}

/// One task to reserve for: its id, its episode (`None` for a season-wide task) and its
/// ceiling in USD.
#[derive(Debug, Clone, Copy)]
pub struct ReserveItem<'a> {
    pub id: &'a str,
    pub episode: Option<&'a str>,
    pub usd: f64,
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
    /// Reserve `usd` for task `id` of `season` (and of `episode`, under a per-episode cap).
    /// Anything but [`Reservation::Reserved`]: give the task back and call
    /// [`Queue::budget_park`] with the same episode (`None` for [`Reservation::SeasonOver`]).
    pub async fn budget_reserve(
        &self,
        season: &str,
        id: &str,
        episode: Option<&str>,
        usd: f64,
    ) -> Result<Reservation> {
        let got = self
            .budget_reserve_many(season, &[ReserveItem { id, episode, usd }])
            .await?;
        Ok(got.first().copied().unwrap_or(Reservation::SeasonOver))
    }

    /// [`Queue::budget_reserve`] for several tasks of one season in one round trip, in order:
    /// a fetcher's batch costs one call per season, not one per task.
    pub async fn budget_reserve_many(
        &self,
        season: &str,
        items: &[ReserveItem<'_>],
    ) -> Result<Vec<Reservation>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let s = SeasonKeys::new(season);
        let mut inv = RESERVE.prepare_invoke();
        inv.key(s.budget()).key(s.reservations());
        for it in items {
            inv.arg(it.id)
                .arg(micros(it.usd))
                .arg(it.episode.unwrap_or(""));
        }
        let mut conn = self.redis().conn().await?;
        let got: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(got
            .into_iter()
            .map(|v| match v {
                1 => Reservation::Reserved,
                2 => Reservation::EpisodeOver,
                _ => Reservation::SeasonOver,
            })
            .collect())
    }

    /// Settle task `id`'s reservation with what its attempt cost (`settle`), or release it
    /// with nothing spent (`None`: given back unsubmitted, or ended without a charge). A season
    /// or episode this makes room for is resumed (its accounts' `parked` entries removed).
    pub async fn budget_settle(
        &self,
        season: &str,
        id: &str,
        episode: Option<&str>,
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
        inv.arg(episode.unwrap_or(""));
        let mut conn = self.redis().conn().await?;
        let (_, season_resumed, episode_resumed): (i64, i64, i64) =
            inv.invoke_async(&mut conn).await?;
        if season_resumed == 1 || episode_resumed == 1 {
            let accounts: Vec<String> = conn.smembers(s.accounts()).await?;
            if season_resumed == 1 {
                Self::unpark_accounts(&mut conn, &[parked_member(season, None)], &accounts).await?;
            }
            if episode_resumed == 1 {
                Self::unpark_accounts(&mut conn, &[parked_member(season, episode)], &accounts)
                    .await?;
            }
        }
        Ok(())
    }

    /// Copy the season's (episode's) `parked` flag into each of its accounts' `parked` sets,
    /// so claims put its deliveries back. Re-reads the flag afterwards: when a concurrent
    /// settle or [`Queue::budget_set`] cleared it meanwhile, the copies are removed again.
    pub async fn budget_park(&self, season: &str, episode: Option<&str>) -> Result<()> {
        let s = SeasonKeys::new(season);
        let member = parked_member(season, episode);
        let flag = match episode {
            Some(ep) => format!("ep:{ep}:parked"),
            None => "parked".to_string(),
        };
        let mut conn = self.redis().conn().await?;
        let accounts: Vec<String> = conn.smembers(s.accounts()).await?;
        for a in &accounts {
            let _: i64 = conn.sadd(AccountKeys::new(a).parked(), &member).await?;
        }
        let still: bool = conn.hexists(s.budget(), &flag).await?;
        if !still {
            Self::unpark_accounts(&mut conn, &[member], &accounts).await?;
        }
        Ok(())
    }

    /// Takes the caller's connection: taking a second one from the pool while holding the
    /// first could wait forever on a small pool.
    async fn unpark_accounts(
        conn: &mut crate::redis_conn::Conn,
        members: &[String],
        accounts: &[String],
    ) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        for a in accounts {
            let _: i64 = conn.srem(AccountKeys::new(a).parked(), members).await?;
        }
        Ok(())
    }

    /// Change the season's cap and per-episode cap and resume it: every `parked` flag of the
    /// season and its episodes, and their copies, is cleared, so the next claims try again
    /// (and park again if their task still does not fit).
    pub async fn budget_set(
        &self,
        season: &str,
        cap: CapChange,
        per_episode: CapChange,
    ) -> Result<Budget> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        for (field, change) in [("cap", cap), ("ep_cap", per_episode)] {
            match change {
                CapChange::Keep => {}
                CapChange::Set(usd) => {
                    let _: i64 = conn.hset(s.budget(), field, micros(usd)).await?;
                }
                CapChange::Remove => {
                    let _: i64 = conn.hdel(s.budget(), field).await?;
                }
            }
        }
        let h: BTreeMap<String, String> = conn.hgetall(s.budget()).await?;
        let mut flags = vec!["parked".to_string(), "need".to_string()];
        let mut members = vec![parked_member(season, None)];
        for f in h.keys() {
            if let Some(ep) = f
                .strip_prefix("ep:")
                .and_then(|r| r.strip_suffix(":parked"))
            {
                flags.push(f.clone());
                flags.push(format!("ep:{ep}:need"));
                members.push(parked_member(season, Some(ep)));
            }
        }
        let _: i64 = conn.hdel(s.budget(), &flags).await?;
        let accounts: Vec<String> = conn.smembers(s.accounts()).await?;
        Self::unpark_accounts(&mut conn, &members, &accounts).await?;
        drop(conn);
        self.budget(season).await
    }

    /// Set the caps a script asks for where the season has none yet (enqueue of a script with
    /// `budget:`; a cap changed with `dramaq budget set` is kept).
    pub async fn budget_init(
        &self,
        season: &str,
        usd: Option<f64>,
        per_episode_usd: Option<f64>,
    ) -> Result<()> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        for (field, v) in [("cap", usd), ("ep_cap", per_episode_usd)] {
            if let Some(usd) = v {
                let _: bool = conn.hset_nx(s.budget(), field, micros(usd)).await?;
            }
        }
        Ok(())
    }

    pub async fn budget(&self, season: &str) -> Result<Budget> {
        let s = SeasonKeys::new(season);
        let mut conn = self.redis().conn().await?;
        let h: BTreeMap<String, String> = conn.hgetall(s.budget()).await?;
        Ok(parse_budget(&h))
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

/// A budget hash's fields → [`Budget`]. Unreadable amounts count as absent.
fn parse_budget(h: &BTreeMap<String, String>) -> Budget {
    let usd = |f: &str| {
        h.get(f)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|m| m as f64 / 1e6)
    };
    let mut episodes: BTreeMap<String, EpisodeBudget> = BTreeMap::new();
    for (f, v) in h {
        let Some((ep, what)) = f.strip_prefix("ep:").and_then(|r| r.rsplit_once(':')) else {
            continue;
        };
        let e = episodes.entry(ep.to_string()).or_default();
        let amount = v.parse::<i64>().map_or(0.0, |m| m as f64 / 1e6);
        match what {
            "reserved" => e.reserved_usd = amount,
            "spent" => e.spent_usd = amount,
            "parked" => e.parked = Some(v.clone()),
            _ => {}
        }
    }
    Budget {
        cap_usd: usd("cap"),
        reserved_usd: usd("reserved").unwrap_or(0.0),
        spent_usd: usd("spent").unwrap_or(0.0),
        parked: h.get("parked").cloned(),
        per_episode_cap_usd: usd("ep_cap"),
        episodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_into_season_and_episode_amounts() {
        let h: BTreeMap<String, String> = [
            ("cap", "20000000"),
            ("reserved", "1500000"),
            ("spent", "2000000"),
            ("ep_cap", "5000000"),
            ("ep:ep01:reserved", "1500000"),
            ("ep:ep01:spent", "2000000"),
            ("ep:ep02:parked", "episode_budget"),
            ("ep:ep02:need", "700000"),
            ("need", "garbage"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let b = parse_budget(&h);
        assert_eq!(b.cap_usd, Some(20.0));
        assert_eq!(b.per_episode_cap_usd, Some(5.0));
        assert_eq!(b.parked, None);
        assert_eq!(b.episodes["ep01"].spent_usd, 2.0);
        assert_eq!(b.episodes["ep01"].reserved_usd, 1.5);
        assert_eq!(b.episodes["ep02"].parked.as_deref(), Some("episode_budget"));
    }

    #[test]
    fn character_sheets_count_against_the_season_only() {
        assert_eq!(episode_of("ep01"), Some("ep01"));
        assert_eq!(episode_of(CHARACTER_GROUP), None);
        assert_eq!(parked_member("s", Some("ep01")), "s/ep01");
        assert_eq!(parked_member("s", None), "s");
    }
}
