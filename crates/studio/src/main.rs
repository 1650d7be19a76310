//! `dramaq-studio`: the review studio's server (what `dramaq studio` runs) and its benchmark.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dramaq_common::config::Config;
use dramaq_common::logging::{self, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dramaq-studio",
    version,
    about = "dramaq's review studio (web app)"
)]
struct Cli {
    /// Configuration file (TOML), as for `dramaq`.
    #[arg(long, global = true, env = "DRAMAQ_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on. Anything but loopback needs DRAMAQ_STUDIO_TOKEN.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time the season page of a generated season on a throwaway redis-server.
    Bench(dramaq_studio::bench::BenchArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, "warn");
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Some(Cmd::Bench(args)) => dramaq_studio::bench::run(args).await,
        None => {
            // Before anything else: an exposed address without a token is refused outright.
            let token = std::env::var(dramaq_studio::TOKEN_ENV).ok();
            dramaq_studio::check_bind(&cli.addr, token.as_deref())?;
            let cfg = Config::load(cli.config.as_deref()).context("loading configuration")?;
            dramaq_studio::serve(cfg, cli.addr).await
        }
    }
}
