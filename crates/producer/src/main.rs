//! `dramaq`: the operator CLI. Plan and enqueue seasons, watch their status.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dramaq_common::config::Config;
use dramaq_common::logging::{self, LogFormat};
use dramaq_producer::{budget, commands, ops, script, status_view};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dramaq",
    version,
    about = "dramaq operator CLI: plan, enqueue and watch seasons"
)]
struct Cli {
    /// Configuration file (TOML); its accounts are the providers a script may name.
    #[arg(long, global = true, env = "DRAMAQ_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    /// Print a JSON document instead of a table (any subcommand; before or after it).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a season script and show the tasks it expands to, with estimated cost. Writes
    /// nothing.
    Plan { script: PathBuf },
    /// Validate a season script and enqueue its tasks. Re-running adds only what changed.
    /// Prints the plan's estimated cost; above `enqueue.confirm_above_usd` or the season's
    /// budget it asks first (refuses without a terminal unless --yes).
    Enqueue {
        script: PathBuf,
        /// Enqueue without asking, whatever the estimated cost.
        #[arg(long)]
        yes: bool,
    },
    /// A season's progress: per episode stored/total, states and failures, spend so far and
    /// remaining, ETA. Every season without --season.
    Status {
        #[arg(long)]
        season: Option<String>,
        /// Redraw every second until no task is live, then exit 0 (with --json: one document
        /// per line, printed when it changes).
        #[arg(long)]
        watch: bool,
        /// Wait until the season has no live task (every task stored or dead) for a second, then
        /// print.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit code 3).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// List a season's tasks with their state and stored output.
    Tasks {
        #[arg(long)]
        season: String,
    },
    /// Dead-letter queue: list, show, requeue and purge dead tasks.
    Dlq {
        #[command(subcommand)]
        cmd: ops::DlqCmd,
    },
    /// An account's intake: pause, resume, drain; per-account status.
    Queue {
        #[command(subcommand)]
        cmd: ops::QueueCmd,
    },
    /// The worker registry: live workers.
    Worker {
        #[command(subcommand)]
        cmd: ops::WorkerCmd,
    },
    /// Season budgets: set (resumes a parked season) or show.
    Budget {
        #[command(subcommand)]
        cmd: budget::BudgetCmd,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, "warn");
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let json = cli.json;
    match cli.cmd {
        Cmd::Plan { script: path } => match script::load(&path, &cfg) {
            Ok(expanded) => {
                commands::plan(&expanded, json)?;
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => Ok(report_script_errors(&errors)),
        },
        Cmd::Enqueue { script: path, yes } => match script::load(&path, &cfg) {
            Ok(expanded) => commands::enqueue(&cfg, &expanded, json, yes).await,
            Err(errors) => Ok(report_script_errors(&errors)),
        },
        Cmd::Status {
            season,
            watch,
            wait,
            timeout_secs,
        } => {
            status_view::run_status(&cfg, season.as_deref(), json, watch, wait, timeout_secs).await
        }
        Cmd::Tasks { season } => {
            commands::tasks(&cfg, &season, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dlq { cmd } => ops::run_dlq(&cfg, cmd, json).await,
        Cmd::Queue { cmd } => ops::run_queue(&cfg, cmd, json).await,
        Cmd::Worker { cmd } => ops::run_worker(&cfg, cmd, json).await,
        Cmd::Budget { cmd } => budget::run_budget(&cfg, cmd, json).await,
    }
}

fn report_script_errors(errors: &script::ScriptErrors) -> ExitCode {
    eprintln!("{errors}");
    eprintln!(
        "{} problem{} found; nothing was enqueued.",
        script::thousands(errors.len()),
        if errors.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        match Cli::try_parse_from(std::iter::once("dramaq").chain(args.iter().copied())) {
            Ok(cli) => cli,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn json_is_one_global_flag_accepted_before_or_after_the_subcommand() {
        for args in [
            &["status", "--json"][..],
            &["--json", "status"],
            &["--json", "plan", "s.yaml"],
            &["plan", "s.yaml", "--json"],
            &["enqueue", "--json", "s.yaml"],
            &["tasks", "--season", "s", "--json"],
            &["dlq", "list", "--json"],
            &["--json", "dlq", "show", "x"],
            &["dlq", "requeue", "--json", "--dry-run"],
            &["dlq", "purge", "--json"],
            &["queue", "pause", "a", "--json"],
            &["queue", "resume", "a", "--json"],
            &["queue", "drain", "a", "--json"],
            &["queue", "status", "--json"],
            &["budget", "show", "s", "--json"],
            &["enqueue", "--yes", "s.yaml", "--json"],
            &["--json", "worker", "list"],
        ] {
            assert!(parse(args).json, "{args:?}");
        }
        assert!(!parse(&["status"]).json);
        assert!(!parse(&["worker", "list"]).json);
        // One definition: --help of a subcommand lists it once.
        let help = match Cli::try_parse_from(["dramaq", "queue", "status", "--help"]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("--help parsed"),
        };
        assert_eq!(help.matches("--json").count(), 1, "{help}");
    }
}
