//! The operator commands behind `dramaq plan | enqueue | tasks` (`status` is
//! [`crate::status_view`]).
//!
//! Each prints a human table by default and a stable JSON document with `--json`, so scripts and
//! tests read the same facts an operator sees.

use crate::out::outln;
use crate::script::Expanded;
use anyhow::Context;
use dramaq_common::config::Config;
use dramaq_common::model::TaskKind;
use dramaq_common::queue::Queue;
use dramaq_common::takes::Takes;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;

pub fn plan(expanded: &Expanded, as_json: bool) -> anyhow::Result<()> {
    let mut by_kind: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    let mut by_account: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    let mut total = 0.0;
    for t in &expanded.tasks {
        let k = by_kind.entry(t.kind().as_str()).or_default();
        k.0 += 1;
        k.1 += t.est_cost_usd;
        let a = by_account.entry(t.account()).or_default();
        a.0 += 1;
        a.1 += t.est_cost_usd;
        total += t.est_cost_usd;
    }
    // Warnings go to stderr (one a line, like script errors), so JSON on stdout stays clean.
    for w in &expanded.warnings {
        eprintln!("warning: {w}");
    }
    if as_json {
        let tasks: Vec<_> = expanded
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id, "label": t.label, "kind": t.kind(), "account": t.account(),
                    "chain": t.chain, "deps": t.deps.iter().map(|d| &d.id).collect::<Vec<_>>(),
                    "est_cost_usd": round_cents(t.est_cost_usd),
                })
            })
            .collect();
        let doc = json!({
            "season": expanded.season,
            "title": expanded.title,
            "total": expanded.tasks.len(),
            "by_kind": by_kind.iter().map(|(k, (n, c))| (k.to_string(), json!({"count": n, "est_cost_usd": round_cents(*c)}))).collect::<serde_json::Map<_, _>>(),
            "by_account": by_account.iter().map(|(k, (n, c))| (k.to_string(), json!({"count": n, "est_cost_usd": round_cents(*c)}))).collect::<serde_json::Map<_, _>>(),
            "est_cost_usd": round_cents(total),
            "warnings": expanded.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "tasks": tasks,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    outln!("season {} — {}", expanded.season, expanded.title);
    outln!(
        "{:<24} {:<9} {:<16} {:<21} {:>9}",
        "TASK",
        "KIND",
        "ACCOUNT",
        "ID",
        "EST USD"
    );
    for t in &expanded.tasks {
        outln!(
            "{:<24} {:<9} {:<16} {:<21} {:>9.2}",
            t.label,
            t.kind().as_str(),
            t.account(),
            t.id,
            t.est_cost_usd
        );
    }
    outln!();
    for (k, (n, c)) in &by_kind {
        outln!("{k:<10} {n:>5} tasks  ${c:>9.2}");
    }
    for (a, (n, c)) in &by_account {
        outln!("{a:<16} {n:>5} tasks  ${c:>9.2}");
    }
    outln!(
        "total      {:>5} tasks  ${total:>9.2} (estimated from configured prices)",
        expanded.tasks.len()
    );
    Ok(())
}

fn round_cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Exit code of an enqueue refused for its cost (no terminal to ask and no `--yes`).
pub const EXIT_COST_REFUSED: u8 = 4;

/// The plan's estimated cost, and why it needs a yes (above `enqueue.confirm_above_usd`, or
/// above the season's budget — the stored one, else the script's), if it does.
fn needs_confirmation(cfg: &Config, estimate: f64, budget: Option<f64>) -> Option<String> {
    if let Some(b) = budget {
        if estimate > b {
            return Some(format!(
                "the plan is estimated at ${estimate:.2}, above the season's budget of ${b:.2}                  (the season will park when the budget runs out)"
            ));
        }
    }
    match cfg.enqueue.confirm_above_usd {
        Some(limit) if estimate > limit => Some(format!(
            "the plan is estimated at ${estimate:.2}, above enqueue.confirm_above_usd (${limit:.2})"
        )),
        _ => None,
    }
}

/// Ask on the terminal; false without one (or on anything but yes).
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} Enqueue anyway? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

pub async fn enqueue(
    cfg: &Config,
    expanded: &Expanded,
    as_json: bool,
    yes: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let queue = Queue::connect(&cfg.redis).await?;
    let estimate: f64 = expanded.tasks.iter().map(|t| t.est_cost_usd).sum();
    let stored = queue.budget(&expanded.season).await?.cap_usd;
    if let Some(why) = needs_confirmation(cfg, estimate, stored.or(expanded.budget_usd)) {
        if !yes && !confirm(&why) {
            eprintln!("{why}; nothing was enqueued (pass --yes to enqueue anyway)");
            return Ok(std::process::ExitCode::from(EXIT_COST_REFUSED));
        }
    }
    // The caps first: a worker may claim the first task before the enqueue returns.
    if expanded.budget_usd.is_some() || expanded.budget_per_episode_usd.is_some() {
        queue
            .budget_init(
                &expanded.season,
                expanded.budget_usd,
                expanded.budget_per_episode_usd,
            )
            .await
            .context("setting the season's budget")?;
    }
    // Scenes keep their takes, selection and approvals across re-enqueues; each episode's
    // assembly is made of the selected takes (or held back for review).
    let tasks = Takes::new(queue.clone(), cfg.worker.max_attempts)
        .prepare_enqueue(&expanded.season, &expanded.tasks, expanded.review)
        .await
        .context("registering the season's scenes and takes (safe to re-run)")?;
    let bar = if as_json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(tasks.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} tasks")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("enqueueing {}", expanded.season));
        bar
    };
    let report = queue
        .enqueue(
            &expanded.season,
            &expanded.title,
            &tasks,
            cfg.worker.max_attempts,
            |done| bar.set_position(done as u64),
        )
        .await
        .context("enqueue (safe to re-run: existing tasks are skipped)")?;
    bar.finish_and_clear();
    if as_json {
        outln!(
            "{}",
            json!({"season": expanded.season, "new": report.new, "existing": report.existing,
                   "est_cost_usd": round_cents(estimate), "budget_usd": stored.or(expanded.budget_usd)})
        );
    } else {
        outln!(
            "season {}: {} new tasks enqueued, {} already present; plan estimated at ${estimate:.2}",
            expanded.season, report.new, report.existing
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

pub async fn tasks(cfg: &Config, season: &str, as_json: bool) -> anyhow::Result<()> {
    let queue = Queue::connect(&cfg.redis).await?;
    let records = queue.season_tasks(season).await?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    outln!(
        "{:<24} {:<9} {:<12} {:<16} OUTPUT",
        "TASK",
        "KIND",
        "STATE",
        "ACCOUNT"
    );
    for r in &records {
        let out = match (&r.output, &r.failure) {
            (Some(o), _) => o.clone(),
            (None, Some(f)) => format!("failed: {f}"),
            _ => String::new(),
        };
        outln!(
            "{:<24} {:<9} {:<12} {:<16} {}",
            r.label,
            r.kind.as_str(),
            r.state.as_str(),
            r.account,
            out
        );
    }
    let images = records.iter().filter(|r| r.kind == TaskKind::Image).count();
    outln!("{} tasks ({} character images)", records.len(), images);
    Ok(())
}
