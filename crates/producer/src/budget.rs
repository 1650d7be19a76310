//! `dramaq budget set|show SEASON` and the budget part of `dramaq status`: a season's cap, what
//! is reserved by tasks in flight, what settled attempts cost (by episode, account, kind and
//! key), and whether the season is parked over its budget.

use crate::out::outln;
use clap::Subcommand;
use dramaq_common::budget::{Budget, CapChange, Spend};
use dramaq_common::config::Config;
use dramaq_common::queue::{Queue, QueueError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BudgetCmd {
    /// Set a season's budget (USD) while it runs; a parked season (and every parked episode)
    /// resumes. `--none` removes the cap; `--per-episode` sets each episode's.
    Set {
        season: String,
        /// The new cap in US dollars.
        #[arg(required_unless_present_any = ["none", "per_episode", "per_episode_none"])]
        usd: Option<f64>,
        /// Remove the cap (spend is still tracked).
        #[arg(long, conflicts_with = "usd")]
        none: bool,
        /// The cap of every episode in US dollars (character sheets count against the season
        /// only).
        #[arg(long, value_name = "USD")]
        per_episode: Option<f64>,
        /// Remove the per-episode cap.
        #[arg(long, conflicts_with = "per_episode")]
        per_episode_none: bool,
    },
    /// A season's budget: cap, reserved, spent, remaining, parked, spend breakdown.
    Show { season: String },
}

/// A season's budget as `status` and `budget show` print it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BudgetView {
    pub cap_usd: Option<f64>,
    /// Estimates reserved by attempts in flight.
    pub reserved_usd: f64,
    /// What settled attempts cost (stored tasks; re-rolls and retries included).
    pub spent_usd: f64,
    /// Cap minus reserved minus spent (may be below zero by at most one task's estimate error).
    pub remaining_usd: Option<f64>,
    /// `budget` while claims of the season are parked, else `null`.
    pub parked: Option<String>,
    /// The cap of every episode, when the season has one.
    pub per_episode_cap_usd: Option<f64>,
    /// Episodes parked over their cap.
    pub parked_episodes: Vec<String>,
    /// Reserved by attempts in flight, per episode.
    pub reserved_by_episode: BTreeMap<String, f64>,
    pub spend_by_episode: BTreeMap<String, f64>,
    pub spend_by_account: BTreeMap<String, f64>,
    pub spend_by_kind: BTreeMap<String, f64>,
    pub spend_by_key: BTreeMap<String, f64>,
}

fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl BudgetView {
    pub fn build(b: &Budget, ledger: &[Spend]) -> BudgetView {
        let mut v = BudgetView {
            cap_usd: b.cap_usd,
            reserved_usd: cents(b.reserved_usd),
            spent_usd: cents(b.spent_usd),
            remaining_usd: b.cap_usd.map(|c| cents(c - b.reserved_usd - b.spent_usd)),
            parked: b.parked.clone(),
            per_episode_cap_usd: b.per_episode_cap_usd,
            parked_episodes: b
                .episodes
                .iter()
                .filter(|(_, e)| e.parked.is_some())
                .map(|(ep, _)| ep.clone())
                .collect(),
            reserved_by_episode: b
                .episodes
                .iter()
                .filter(|(_, e)| e.reserved_usd > 0.0)
                .map(|(ep, e)| (ep.clone(), cents(e.reserved_usd)))
                .collect(),
            ..BudgetView::default()
        };
        for s in ledger {
            let key = format!(
                "{}/{}",
                s.account,
                if s.key.is_empty() { "default" } else { &s.key }
            );
            for (map, k) in [
                (&mut v.spend_by_episode, &s.group),
                (&mut v.spend_by_account, &s.account),
                (&mut v.spend_by_kind, &s.kind),
                (&mut v.spend_by_key, &key),
            ] {
                *map.entry(k.clone()).or_default() += s.usd;
            }
        }
        for map in [
            &mut v.spend_by_episode,
            &mut v.spend_by_account,
            &mut v.spend_by_kind,
            &mut v.spend_by_key,
        ] {
            map.values_mut().for_each(|x| *x = cents(*x));
        }
        v
    }

    /// One line for `status` and `budget show`.
    pub fn line(&self) -> String {
        let cap = match (self.cap_usd, self.remaining_usd) {
            (Some(c), Some(r)) => format!("budget ${c:.2}: ${r:.2} left"),
            _ => "no budget".to_string(),
        };
        let per_episode = match self.per_episode_cap_usd {
            Some(c) => format!(" · ${c:.2} per episode"),
            None => String::new(),
        };
        let parked = match &self.parked {
            Some(why) => format!(" · PARKED ({why}): raise it with `dramaq budget set`"),
            None => String::new(),
        };
        let episodes = if self.parked_episodes.is_empty() {
            String::new()
        } else {
            format!(
                " · episodes PARKED over their cap: {} (raise it with `dramaq budget set --per-episode`)",
                self.parked_episodes
                    .iter()
                    .map(|e| dramaq_common::text::shown_default(e))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "{cap}{per_episode} · spent ${:.2}, reserved ${:.2}{parked}{episodes}",
            self.spent_usd, self.reserved_usd
        )
    }
}

pub async fn budget_view(queue: &Queue, season: &str) -> Result<BudgetView, QueueError> {
    let b = queue.budget(season).await?;
    let ledger = queue.budget_ledger(season).await?;
    Ok(BudgetView::build(&b, &ledger))
}

pub async fn run_budget(cfg: &Config, cmd: BudgetCmd, json: bool) -> anyhow::Result<ExitCode> {
    let queue = Queue::connect(&cfg.redis).await?;
    let season = match cmd {
        BudgetCmd::Set {
            season,
            usd,
            none,
            per_episode,
            per_episode_none,
        } => {
            for (what, v) in [("the budget", usd), ("--per-episode", per_episode)] {
                if let Some(u) = v {
                    if !u.is_finite() || u < 0.0 {
                        anyhow::bail!(
                            "{what}: {u} is not a budget: give a number of US dollars ≥ 0"
                        );
                    }
                }
            }
            let change = |set: Option<f64>, remove: bool| match (set, remove) {
                (_, true) => CapChange::Remove,
                (Some(u), false) => CapChange::Set(u),
                (None, false) => CapChange::Keep,
            };
            queue
                .budget_set(
                    &season,
                    change(usd, none),
                    change(per_episode, per_episode_none),
                )
                .await?;
            season
        }
        BudgetCmd::Show { season } => season,
    };
    let view = budget_view(&queue, &season).await?;
    if json {
        outln!("{}", serde_json::to_string(&view)?);
    } else {
        outln!(
            "{}: {}",
            dramaq_common::text::shown_default(&season),
            view.line()
        );
        for (title, map) in [
            ("episode", &view.spend_by_episode),
            ("account", &view.spend_by_account),
            ("kind", &view.spend_by_kind),
            ("key", &view.spend_by_key),
        ] {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} ${v:.2}")).collect();
            if !parts.is_empty() {
                outln!("  by {title}: {}", parts.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
