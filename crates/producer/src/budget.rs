//! `dramaq budget set|show SEASON` and the budget part of `dramaq status`: a season's cap, what
//! is reserved by tasks in flight, what settled attempts cost (by episode, account, kind and
//! key), and whether the season is parked over its budget.

use clap::Subcommand;
use dramaq_common::budget::{Budget, Spend};
use dramaq_common::config::Config;
use dramaq_common::queue::{Queue, QueueError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BudgetCmd {
    /// Set a season's budget (USD) while it runs; a parked season resumes. `--none` removes it.
    Set {
        season: String,
        /// The new cap in US dollars.
        #[arg(required_unless_present = "none")]
        usd: Option<f64>,
        /// Remove the cap (spend is still tracked).
        #[arg(long, conflicts_with = "usd")]
        none: bool,
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
        let parked = match &self.parked {
            Some(why) => format!(" · PARKED ({why}): raise it with `dramaq budget set`"),
            None => String::new(),
        };
        format!(
            "{cap} · spent ${:.2}, reserved ${:.2}{parked}",
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
        BudgetCmd::Set { season, usd, none } => {
            let usd = if none { None } else { usd };
            if let Some(u) = usd {
                if !u.is_finite() || u < 0.0 {
                    anyhow::bail!("{u} is not a budget: give a number of US dollars ≥ 0");
                }
            }
            queue.budget_set(&season, usd).await?;
            season
        }
        BudgetCmd::Show { season } => season,
    };
    let view = budget_view(&queue, &season).await?;
    if json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!(
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
                println!("  by {title}: {}", parts.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
