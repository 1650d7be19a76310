//! Operator commands: the dead-letter queue (`dramaq dlq list | show | requeue | purge`), an
//! account's intake (`dramaq queue pause | resume | drain | status`) and the worker registry
//! (`dramaq worker list`).
//!
//! The work is done by [`dramaq_common::ops`]; this module parses and checks the operator's
//! input (failure classes, account names), prints a human table or, with the global `--json`, the very
//! struct the library returned (their doc comments show the shapes), and picks the exit code:
//! 0 done, 1 error (printed by `main`), 2 `dlq purge` refused without `--yes`, 3 `queue drain
//! --wait` timed out. Each command is a function taking the [`Ops`] handle and writers, so tests
//! drive them without spawning the binary.

use clap::{Args, Subcommand};
use dramaq_common::config::Config;
use dramaq_common::ops::{
    self as core, DeadFilter, DeadList, DrainReport, Ops, PauseInfo, PauseReport, PurgeOutcome,
    PurgeReport, QueueStatus, RequeueOutcome, RequeueReport, ResumeReport, TaskDetail, WorkerList,
};
use dramaq_common::queue::Queue;
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code of `dlq purge` without `--yes`.
pub const EXIT_REFUSED: u8 = 2;
/// Exit code of `queue drain --wait` when the timeout passes first.
pub const EXIT_TIMEOUT: u8 = 3;

/// Filters shared by `dlq list | requeue | purge`; a task must match all given.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only tasks of this season.
    #[arg(long)]
    pub season: Option<String>,
    /// Only tasks of this episode (the task's group: `ep01`, or `characters`).
    #[arg(long)]
    pub episode: Option<String>,
    /// Only tasks dead in this provider account.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only tasks that died with this failure class (e.g. content_policy, provider_error).
    #[arg(long)]
    pub class: Option<String>,
}

/// `dramaq dlq …`: the dead-letter queue.
#[derive(Subcommand, Debug, Clone)]
pub enum DlqCmd {
    /// List dead tasks: id, label, account, failure class, attempts, last error, time of death.
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Show one task's whole record, with every attempt's error.
    Show {
        id: String,
        /// The task's season, to find it through the season index (else every account is tried).
        #[arg(long)]
        season: Option<String>,
    },
    /// Put matching dead tasks back on the queue: attempts reset, error history kept.
    Requeue {
        #[command(flatten)]
        filter: FilterArgs,
        /// Move the tasks to this configured account (its family must produce their kind).
        #[arg(long)]
        to_provider: Option<String>,
        /// Print what would be requeued; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete matching dead tasks for good. Refuses (exit code 2) without --yes.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Really delete them.
        #[arg(long)]
        yes: bool,
    },
}

/// `dramaq queue …`: an account's intake.
#[derive(Subcommand, Debug, Clone)]
pub enum QueueCmd {
    /// Stop workers claiming the account's tasks; submitted renders still complete.
    Pause {
        account: String,
        /// Why, shown by `queue status`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let workers claim the account's tasks again.
    Resume { account: String },
    /// Pause the account and report its in-flight work; with --wait, until none is left.
    Drain {
        account: String,
        #[arg(long)]
        reason: Option<String>,
        /// Wait until nothing is claimed, submitting, rendering or downloading, then print
        /// "drained".
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit code 3).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Per account: paused or not, task counts per state, dead-letter set size.
    Status,
}

/// `dramaq worker …`: the worker registry.
#[derive(Subcommand, Debug, Clone)]
pub enum WorkerCmd {
    /// Live workers: pid, accounts, held tasks, age of the last heartbeat.
    List,
}

/// Connect to the configured Redis (refusing an evicting server unless allowed).
pub async fn connect(cfg: &Config) -> anyhow::Result<Ops> {
    Ok(Ops::new(Queue::connect(&cfg.redis).await?))
}

/// Run a `dlq` command, printing to stdout/stderr.
pub async fn run_dlq(cfg: &Config, cmd: DlqCmd, json: bool) -> anyhow::Result<ExitCode> {
    let ops = connect(cfg).await?;
    run_dlq_to(
        &ops,
        cfg,
        cmd,
        json,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await
}

/// Run a `queue` command, printing to stdout/stderr.
pub async fn run_queue(cfg: &Config, cmd: QueueCmd, json: bool) -> anyhow::Result<ExitCode> {
    let ops = connect(cfg).await?;
    run_queue_to(
        &ops,
        cfg,
        cmd,
        json,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await
}

/// Run a `worker` command, printing to stdout.
pub async fn run_worker(cfg: &Config, cmd: WorkerCmd, json: bool) -> anyhow::Result<ExitCode> {
    let ops = connect(cfg).await?;
    run_worker_to(&ops, cmd, json, &mut std::io::stdout()).await
}

pub async fn run_dlq_to(
    ops: &Ops,
    cfg: &Config,
    cmd: DlqCmd,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCmd::List { filter } => {
            dlq_list(ops, cfg, &filter, json, out).await?;
        }
        DlqCmd::Show { id, season } => {
            dlq_show(ops, &id, season.as_deref(), json, out).await?;
        }
        DlqCmd::Requeue {
            filter,
            to_provider,
            dry_run,
        } => {
            dlq_requeue(
                ops,
                cfg,
                &filter,
                to_provider.as_deref(),
                dry_run,
                json,
                out,
            )
            .await?;
        }
        DlqCmd::Purge { filter, yes } => {
            let report = dlq_purge(ops, cfg, &filter, yes, json, out, err).await?;
            if !report.confirmed {
                return Ok(ExitCode::from(EXIT_REFUSED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_queue_to(
    ops: &Ops,
    cfg: &Config,
    cmd: QueueCmd,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match cmd {
        QueueCmd::Pause { account, reason } => {
            queue_pause(ops, cfg, &account, reason.as_deref(), json, out).await?;
        }
        QueueCmd::Resume { account } => {
            queue_resume(ops, cfg, &account, json, out).await?;
        }
        QueueCmd::Drain {
            account,
            reason,
            wait,
            timeout_secs,
        } => {
            let timeout = wait.then(|| Duration::from_secs(timeout_secs));
            let report = queue_drain(
                ops,
                cfg,
                &account,
                reason.as_deref(),
                timeout,
                json,
                out,
                err,
            )
            .await?;
            if wait && !report.drained {
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
        }
        QueueCmd::Status => {
            queue_status(ops, cfg, json, out).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_worker_to(
    ops: &Ops,
    cmd: WorkerCmd,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkerCmd::List => {
            worker_list(ops, json, out).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Check the filter's names (class, account) and turn it into the library's filter.
pub async fn dead_filter(ops: &Ops, cfg: &Config, f: &FilterArgs) -> anyhow::Result<DeadFilter> {
    let class = f.class.as_deref().map(core::parse_class).transpose()?;
    if let Some(p) = &f.provider {
        ops.check_known(cfg, p).await?;
    }
    Ok(DeadFilter {
        season: f.season.clone(),
        episode: f.episode.clone(),
        account: f.provider.clone(),
        class,
        died_before_ms: None,
    })
}

fn print_json<T: Serialize>(out: &mut dyn Write, v: &T) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// `dlq list`. JSON: [`DeadList`].
pub async fn dlq_list(
    ops: &Ops,
    cfg: &Config,
    filter: &FilterArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<DeadList> {
    let f = dead_filter(ops, cfg, filter).await?;
    let list = ops.dead_tasks(&f).await?;
    if json {
        print_json(out, &list)?;
        return Ok(list);
    }
    writeln!(
        out,
        "{:<22} {:<20} {:<16} {:<20} {:>4}  {:<20} LAST ERROR",
        "ID", "LABEL", "ACCOUNT", "CLASS", "ATT", "DIED AT (UTC)"
    )?;
    for t in &list.tasks {
        let mut last = t
            .last_error
            .as_ref()
            .map(|e| match &e.code {
                Some(c) => format!("[{c}] {}", e.message),
                None => e.message.clone(),
            })
            .unwrap_or_default();
        if let Some(m) = &t.moving_to {
            last = format!("(moving to {m}) {last}");
        }
        writeln!(
            out,
            "{:<22} {:<20} {:<16} {:<20} {:>4}  {:<20} {}",
            t.id,
            truncate(&t.label, 20),
            t.account,
            t.class.map(|c| c.as_str()).unwrap_or("-"),
            t.attempts,
            utc(t.died_at_ms),
            truncate(&one_line(&last), 60)
        )?;
    }
    writeln!(
        out,
        "{} dead task{}",
        list.count,
        if list.count == 1 { "" } else { "s" }
    )?;
    Ok(list)
}

/// `dlq show`. JSON: [`TaskDetail`] (the whole record).
pub async fn dlq_show(
    ops: &Ops,
    id: &str,
    season: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<TaskDetail> {
    let d = ops.show(id, season).await?;
    if json {
        print_json(out, &d)?;
        return Ok(d);
    }
    let r = &d.record;
    writeln!(out, "task      {}  {} ({})", r.id, r.label, r.kind)?;
    writeln!(out, "season    {}  episode {}", r.season, r.group)?;
    let failure = r.failure.map(|f| format!(" ({f})")).unwrap_or_default();
    writeln!(out, "state     {}{failure}  account {}", r.state, r.account)?;
    if let Some(m) = &d.moving_to {
        writeln!(
            out,
            "moving    to {m} (unfinished; `dramaq dlq requeue` finishes it)"
        )?;
    }
    if !d.also_in.is_empty() {
        writeln!(out, "also in   {}", d.also_in.join(", "))?;
    }
    if let Some(ms) = d.died_at_ms {
        writeln!(out, "died at   {}", utc(ms))?;
    }
    writeln!(
        out,
        "attempts  {}/{}  stalls {}{}",
        r.attempt,
        r.max_attempts,
        r.stalls,
        if r.possible_duplicate {
            "  possible duplicate submission"
        } else {
            ""
        }
    )?;
    if !r.chain.is_empty() {
        writeln!(
            out,
            "chain     {} (current: {})",
            r.chain.join(" -> "),
            r.chain
                .get(r.chain_pos as usize)
                .map_or("?", |s| s.as_str())
        )?;
    }
    if !r.deps.is_empty() {
        let deps: Vec<String> = r
            .deps
            .iter()
            .map(|d| format!("{} ({})", d.id, d.account))
            .collect();
        writeln!(out, "deps      {}", deps.join(", "))?;
    }
    if let Some(p) = &r.provider_task_id {
        writeln!(out, "provider  task {p}")?;
    }
    writeln!(
        out,
        "created   {}  updated {}",
        utc(r.created_ms),
        utc(r.updated_ms)
    )?;
    writeln!(out, "errors    {}", r.errors.len())?;
    for e in &r.errors {
        let code = e
            .code
            .as_deref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        writeln!(
            out,
            "  #{:<3} {}  {}{code} on {}: {}",
            e.attempt,
            utc(e.at_ms),
            e.class,
            e.account,
            one_line(&e.message)
        )?;
    }
    writeln!(out, "payload   {}", serde_json::to_string(&r.payload)?)?;
    Ok(d)
}

/// `dlq requeue`. JSON: [`RequeueReport`].
pub async fn dlq_requeue(
    ops: &Ops,
    cfg: &Config,
    filter: &FilterArgs,
    to_provider: Option<&str>,
    dry_run: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<RequeueReport> {
    let f = dead_filter(ops, cfg, filter).await?;
    if let Some(t) = to_provider {
        core::check_configured(cfg, t)?;
    }
    let report = ops.requeue(cfg, &f, to_provider, dry_run).await?;
    if json {
        print_json(out, &report)?;
        return Ok(report);
    }
    for t in &report.tasks {
        let what = match t.outcome {
            RequeueOutcome::WouldRequeue => "would requeue",
            RequeueOutcome::WouldMove => "would move",
            RequeueOutcome::Requeued => "requeued",
            RequeueOutcome::Moved => "moved",
            RequeueOutcome::NotDead => "skipped: no longer dead",
            RequeueOutcome::Gone => "skipped: gone",
        };
        let route = if t.from == t.to {
            t.from.clone()
        } else {
            format!("{} -> {}", t.from, t.to)
        };
        writeln!(
            out,
            "{:<22} {:<20} {:<34} {what}",
            t.id,
            truncate(&t.label, 20),
            route
        )?;
    }
    if report.dry_run {
        writeln!(
            out,
            "dry run: {} dead task{} would be requeued; nothing changed",
            report.matched,
            if report.matched == 1 { "" } else { "s" }
        )?;
    } else {
        writeln!(
            out,
            "{} matched: {} requeued, {} moved, {} skipped",
            report.matched, report.requeued, report.moved, report.skipped
        )?;
    }
    Ok(report)
}

/// `dlq purge`. JSON: [`PurgeReport`]. Without `yes` nothing changes; the caller exits 2.
pub async fn dlq_purge(
    ops: &Ops,
    cfg: &Config,
    filter: &FilterArgs,
    yes: bool,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<PurgeReport> {
    let f = dead_filter(ops, cfg, filter).await?;
    let report = ops.purge(&f, yes).await?;
    if json {
        print_json(out, &report)?;
    } else {
        for t in &report.tasks {
            let what = match t.outcome {
                PurgeOutcome::WouldPurge => "would purge",
                PurgeOutcome::Purged => "purged",
                PurgeOutcome::NotDead => "skipped: no longer dead",
                PurgeOutcome::Moving => "skipped: move unfinished (dlq requeue finishes it)",
                PurgeOutcome::Gone => "skipped: gone",
            };
            let waiting = if t.dependents > 0 {
                format!(" ({} dependent task(s) will wait forever)", t.dependents)
            } else {
                String::new()
            };
            writeln!(
                out,
                "{:<22} {:<20} {:<16} {what}{waiting}",
                t.id,
                truncate(&t.label, 20),
                t.account
            )?;
        }
        if yes {
            writeln!(out, "{} matched: {} purged", report.matched, report.purged)?;
        }
    }
    if !yes {
        writeln!(
            err,
            "refusing to purge without --yes: {} dead task{} would be purged; nothing changed",
            report.matched,
            if report.matched == 1 { "" } else { "s" }
        )?;
    }
    Ok(report)
}

/// Who is acting, for the pause flag: `$USER@<hostname>` where known.
fn operator() -> Option<String> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match (user, host) {
        (Some(u), Some(h)) => Some(format!("{u}@{h}")),
        (Some(u), None) => Some(u),
        (None, Some(h)) => Some(format!("@{h}")),
        (None, None) => None,
    }
}

fn describe_pause(p: &PauseInfo) -> String {
    let mut s = String::from("paused");
    if let Some(ms) = p.since_ms {
        s.push_str(&format!(" since {}", utc(ms)));
    }
    if let Some(by) = &p.by {
        s.push_str(&format!(" by {by}"));
    }
    if let Some(r) = &p.reason {
        s.push_str(&format!(": {}", one_line(r)));
    }
    if let Some(m) = &p.message {
        s.push_str(&format!(" ({})", one_line(m)));
    }
    s
}

/// `queue pause`. JSON: [`PauseReport`].
pub async fn queue_pause(
    ops: &Ops,
    cfg: &Config,
    account: &str,
    reason: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<PauseReport> {
    ops.check_known(cfg, account).await?;
    let report = ops.pause(account, reason, operator().as_deref()).await?;
    if json {
        print_json(out, &report)?;
    } else {
        writeln!(
            out,
            "{account}: {}{}",
            describe_pause(&report.paused),
            if report.already_paused {
                " (already paused; left as it was)"
            } else {
                ""
            }
        )?;
    }
    Ok(report)
}

/// `queue resume`. JSON: [`ResumeReport`].
pub async fn queue_resume(
    ops: &Ops,
    cfg: &Config,
    account: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ResumeReport> {
    ops.check_known(cfg, account).await?;
    let report = ops.resume(account).await?;
    if json {
        print_json(out, &report)?;
    } else if report.was_paused {
        writeln!(out, "{account}: resumed")?;
    } else {
        writeln!(out, "{account}: was not paused")?;
    }
    Ok(report)
}

fn print_in_flight(out: &mut dyn Write, r: &DrainReport) -> anyhow::Result<()> {
    let f = &r.in_flight;
    writeln!(
        out,
        "{}: ready {}, claimed {}, submitting {}, rendering {}, downloading {}, delayed {} \
         ({} in flight)",
        r.account, f.ready, f.claimed, f.submitting, f.rendering, f.downloading, f.delayed, r.busy
    )?;
    Ok(())
}

/// `queue drain`: pause, then report (and with `wait`, poll every 500 ms until nothing is in
/// flight or the timeout passes; `drained` in the result says which). JSON: [`DrainReport`].
#[allow(clippy::too_many_arguments)]
pub async fn queue_drain(
    ops: &Ops,
    cfg: &Config,
    account: &str,
    reason: Option<&str>,
    wait: Option<Duration>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<DrainReport> {
    ops.check_known(cfg, account).await?;
    let mut report = ops.drain(account, reason, operator().as_deref()).await?;
    if !json {
        if let Some(p) = &report.paused {
            let already = if report.already_paused {
                " (already paused)"
            } else {
                ""
            };
            writeln!(out, "{account}: {}{already}", describe_pause(p))?;
        }
        print_in_flight(out, &report)?;
    }
    if let Some(timeout) = wait {
        let deadline = Instant::now() + timeout;
        let mut last_busy = report.busy;
        while !report.drained {
            if Instant::now() >= deadline {
                writeln!(
                    err,
                    "timed out after {} s with {} task(s) still in flight on {account}",
                    timeout.as_secs(),
                    report.busy
                )?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let already = report.already_paused;
            report = ops.drain_status(account).await?;
            report.already_paused = already;
            if !json && report.busy != last_busy {
                print_in_flight(out, &report)?;
                last_busy = report.busy;
            }
        }
    }
    if json {
        print_json(out, &report)?;
    } else if report.drained {
        writeln!(out, "drained")?;
    }
    Ok(report)
}

/// `queue status`. JSON: [`QueueStatus`].
pub async fn queue_status(
    ops: &Ops,
    cfg: &Config,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<QueueStatus> {
    let configured: Vec<String> = cfg.accounts.keys().cloned().collect();
    let mut status = ops.queue_status(&configured).await?;
    for a in &mut status.accounts {
        if let Some(acct) = cfg.account(&a.account) {
            let names: Vec<&str> = acct.keys.iter().map(|k| k.name.as_str()).collect();
            a.keys = ops.key_status(&a.account, &names).await?;
        }
    }
    if json {
        print_json(out, &status)?;
        return Ok(status);
    }
    for a in &status.accounts {
        let state = match &a.paused {
            Some(p) => describe_pause(p),
            None if !a.keys.is_empty() && a.keys.iter().all(|k| k.paused.is_some()) => {
                "paused (every key)".to_string()
            }
            None => "running".to_string(),
        };
        let note = if a.configured {
            ""
        } else {
            " (not configured)"
        };
        let parts: Vec<String> = a
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let counts = if parts.is_empty() {
            "no tasks".to_string()
        } else {
            parts.join(", ")
        };
        writeln!(out, "{}{note}: {state}", a.account)?;
        writeln!(out, "    {counts}; dead-letter set {}", a.dead_set)?;
        for k in &a.keys {
            let state = match (&k.paused, k.cooldown_ms) {
                (Some(p), _) => describe_pause(p),
                (None, 0) => "ready".to_string(),
                (None, ms) => format!("cooling down ({ms} ms left)"),
            };
            writeln!(out, "    key {}: {state}", k.name)?;
        }
    }
    Ok(status)
}

/// `worker list`. JSON: [`WorkerList`].
pub async fn worker_list(ops: &Ops, json: bool, out: &mut dyn Write) -> anyhow::Result<WorkerList> {
    let list = ops.workers().await?;
    if json {
        print_json(out, &list)?;
        return Ok(list);
    }
    writeln!(
        out,
        "{:<32} {:>8} {:>5} {:<9} {:>9}  ACCOUNTS",
        "WORKER", "PID", "HELD", "STOPPING", "BEAT AGO"
    )?;
    for w in &list.workers {
        writeln!(
            out,
            "{:<32} {:>8} {:>5} {:<9} {:>9}  {}",
            w.id,
            w.pid.map_or("-".to_string(), |p| p.to_string()),
            w.held.map_or("-".to_string(), |h| h.to_string()),
            if w.stopping { "yes" } else { "no" },
            w.age_ms
                .map_or("-".to_string(), |a| format!("{:.1}s", a as f64 / 1000.0)),
            w.accounts.join(",")
        )?;
    }
    writeln!(
        out,
        "{} live worker{}",
        list.workers.len(),
        if list.workers.len() == 1 { "" } else { "s" }
    )?;
    Ok(list)
}

/// At most `max` characters, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in ms; `-` for 0 or less.
fn utc(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms).filter(|_| ms > 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_000), "1970-01-01 00:00:01");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn truncate_respects_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
