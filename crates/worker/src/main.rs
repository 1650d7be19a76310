//! `dramaq-worker`: run workers, the standalone reaper, or the benchmark.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dramaq_common::config::{Config, DurableSubmit};
use dramaq_common::logging::{self, LogFormat};
use dramaq_worker::{bench, metrics_server, reaper, runner};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dramaq-worker",
    version,
    about = "dramaq worker: claims, submits, awaits renders, downloads and stores"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "DRAMAQ_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Claim, submit, await, download and store until SIGINT/SIGTERM.
    Run {
        /// Tasks held at once (submits, downloads, assembly); awaited renders hold none.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Serve only these provider accounts (comma-separated names from the config);
        /// default: every configured account.
        // `--providers`, its old name, stays as a hidden alias for existing scripts.
        #[arg(long, value_delimiter = ',', alias = "providers")]
        accounts: Vec<String>,
        /// Do not run the maintenance (reaper) role in this process.
        #[arg(long)]
        no_reaper: bool,
        /// Serve Prometheus metrics at this address (`off` to disable).
        #[arg(long, default_value = metrics_server::DEFAULT_WORKER_ADDR)]
        metrics_addr: String,
    },
    /// Measure enqueue throughput, Redis memory per queued task and no-op lifecycle throughput
    /// against a throwaway local redis-server (or --redis-url, which is flushed).
    Bench {
        #[arg(long, default_value_t = 50_000)]
        tasks: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Use this Redis instead of a throwaway one. ITS DATA IS FLUSHED.
        #[arg(long)]
        redis_url: Option<String>,
        /// Wait for durability before each submit, as `redis.durable_submit` does: none, fsync
        /// (WAITAOF, Redis 7.2+) or replica (WAIT 1; point --redis-url at a server with one).
        #[arg(long, default_value = "none", value_parser = parse_durable)]
        durable_submit: DurableSubmit,
        #[arg(long)]
        json: bool,
    },
    /// Run only the maintenance duties: expired leases, orphaned deliveries, due retries, the
    /// dependency outbox. Safe to run several at once and beside workers.
    Reaper {
        /// Only these provider accounts (comma-separated names from the config); default:
        /// every configured account.
        // `--providers`, its old name, stays as a hidden alias for existing scripts.
        #[arg(long, value_delimiter = ',', alias = "providers")]
        accounts: Vec<String>,
        /// Serve Prometheus metrics at this address (`off` to disable).
        #[arg(long, default_value = metrics_server::DEFAULT_REAPER_ADDR)]
        metrics_addr: String,
    },
}

fn parse_durable(text: &str) -> Result<DurableSubmit, String> {
    match text {
        "none" => Ok(DurableSubmit::None),
        "fsync" => Ok(DurableSubmit::Fsync),
        "replica" => Ok(DurableSubmit::Replica),
        other => Err(format!(
            "unknown durability '{}' (use none, fsync or replica)",
            dramaq_common::text::shown_default(other)
        )),
    }
}

/// `off` or a socket address.
fn metrics_addr(text: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .with_context(|| format!("--metrics-addr {text:?} is neither `off` nor HOST:PORT"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The benchmark measures the queue, not the log writer.
    let level = if matches!(cli.cmd, Cmd::Bench { .. }) {
        "warn"
    } else {
        "info"
    };
    logging::init(cli.log_format, level);
    if let Cmd::Bench {
        tasks,
        concurrency,
        redis_url,
        durable_submit,
        json,
    } = cli.cmd
    {
        let report = bench::run(bench::BenchOptions {
            tasks,
            concurrency,
            redis_url,
            durable_submit,
        })
        .await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "dramaq bench: {} tasks, payload {} B, worker concurrency {}, Redis {}",
                report.tasks, report.payload_bytes, report.concurrency, report.redis_version
            );
            println!(
                "  enqueue (bulk)        {:>10.0} tasks/s  ({:.2} s)",
                report.enqueue_tasks_per_sec, report.enqueue_secs
            );
            println!(
                "  redis memory          {:>10.0} bytes per queued task",
                report.redis_bytes_per_queued_task
            );
            println!(
                "  no-op lifecycle       {:>10.0} tasks/s  ({:.2} s)",
                report.lifecycle_tasks_per_sec, report.lifecycle_secs
            );
        }
        return Ok(());
    }
    let cfg = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let signal = runner::shutdown_signal();
    match cli.cmd {
        Cmd::Bench { .. } => unreachable!("handled above"),
        Cmd::Run {
            concurrency,
            accounts,
            no_reaper,
            metrics_addr: addr,
        } => {
            runner::run(
                cfg,
                runner::RunOptions {
                    accounts,
                    concurrency,
                    reaper: !no_reaper,
                    metrics_addr: metrics_addr(&addr)?,
                },
                signal,
            )
            .await
        }
        Cmd::Reaper {
            accounts,
            metrics_addr: addr,
        } => {
            let adapters = runner::build_accounts(&cfg, &accounts)?;
            let accounts = runner::reaper_accounts(&cfg, &adapters)?;
            let queue = dramaq_common::queue::Queue::connect(&cfg.redis).await?;
            let metrics = dramaq_worker::metrics::Metrics::new();
            if let Some(addr) = metrics_addr(&addr)? {
                let ready = metrics_server::Readiness::default().redis(queue.redis().clone());
                metrics_server::serve(addr, metrics.clone(), ready, signal.clone()).await?;
            }
            dramaq_worker::metrics::spawn_queue_gauges(
                queue.clone(),
                accounts.keys().cloned().collect(),
                dramaq_worker::metrics::QUEUE_GAUGES_EVERY,
                metrics.clone(),
                signal.clone(),
            );
            let id = format!("{}-reaper", dramaq_worker::new_worker_id());
            reaper::run(
                queue,
                id,
                accounts,
                reaper::ReaperConfig::from_worker(&cfg.worker),
                metrics,
                signal,
            )
            .await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts_of(args: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(args).expect("parses").cmd {
            Cmd::Run { accounts, .. } | Cmd::Reaper { accounts, .. } => accounts,
            Cmd::Bench { .. } => panic!("not a serving command"),
        }
    }

    #[test]
    fn accounts_flag_and_its_old_name() {
        let want = vec!["a".to_string(), "b".to_string()];
        for cmd in ["run", "reaper"] {
            assert_eq!(
                accounts_of(&["dramaq-worker", cmd, "--accounts", "a,b"]),
                want
            );
            // Scripts written before the rename keep working.
            assert_eq!(
                accounts_of(&["dramaq-worker", cmd, "--providers", "a,b"]),
                want
            );
            assert!(accounts_of(&["dramaq-worker", cmd]).is_empty());
        }
        // The old name is not advertised.
        let help = <Cli as clap::CommandFactory>::command()
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        assert!(help.contains("--accounts"), "{help}");
        assert!(!help.contains("--providers"), "{help}");
    }
}
