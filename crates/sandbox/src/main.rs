//! `dramaq-sandbox`: serve the provider stand-in until SIGINT/SIGTERM.

use clap::Parser;
use dramaq_sandbox::{Sandbox, SandboxOptions};
use std::io::Write;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(
    name = "dramaq-sandbox",
    version,
    about = "Local stand-in for the video, image and speech provider APIs"
)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_ADDR",
        default_value = "127.0.0.1:8787",
        hide_env_values = true
    )]
    addr: SocketAddr,
    /// Render time of a video job.
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_RENDER_MS",
        default_value_t = 2_000,
        hide_env_values = true
    )]
    render_ms: u64,
    /// Extra render time, uniform in [0, N], fixed per job.
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_RENDER_JITTER_MS",
        default_value_t = 0,
        hide_env_values = true
    )]
    render_jitter_ms: u64,
    /// Probability that a render fails (deterministic per job from --seed).
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_FAILURE_RATE",
        default_value_t = 0.0,
        hide_env_values = true
    )]
    failure_rate: f64,
    /// Create requests per second allowed per API key (429 beyond).
    #[arg(long, env = "DRAMAQ_SANDBOX_RATE_PER_SEC", hide_env_values = true)]
    rate_per_sec: Option<f64>,
    /// Create requests allowed back to back per key.
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_BURST",
        default_value_t = 1,
        hide_env_values = true
    )]
    burst: u32,
    /// Unfinished renders allowed per key (Kling 1303 / 429 beyond).
    #[arg(long, env = "DRAMAQ_SANDBOX_MAX_CONCURRENT", hide_env_values = true)]
    max_concurrent: Option<u32>,
    /// Result URLs expire this long after the render finished.
    #[arg(long, env = "DRAMAQ_SANDBOX_URL_TTL_MS", hide_env_values = true)]
    url_ttl_ms: Option<u64>,
    /// Kling access key (the JWT's `iss`).
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_KLING_AK",
        default_value = "sandbox-ak",
        hide_env_values = true
    )]
    kling_access_key: String,
    /// Kling secret key (signs the JWT).
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_KLING_SK",
        default_value = "sandbox-sk",
        hide_env_values = true
    )]
    kling_secret_key: String,
    /// Extra time before a video create answers (holds clients mid-submit): `/v1/videos` and
    /// Kling creates.
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_SUBMIT_DELAY_MS",
        default_value_t = 0,
        hide_env_values = true
    )]
    submit_delay_ms: u64,
    /// Also serve /metrics on this address (it is always on the main address too).
    #[arg(long, env = "DRAMAQ_SANDBOX_METRICS_ADDR", hide_env_values = true)]
    metrics_addr: Option<SocketAddr>,
    /// A key's own limits, `KEY=RATE:BURST:CONCURRENT` (`-` for unlimited); repeatable. Other
    /// keys keep the global limits.
    #[arg(long = "key-limit", value_name = "KEY=RATE:BURST:CONCURRENT")]
    key_limits: Vec<String>,
    /// A key whose balance is exhausted: creates with it are refused as out of credits;
    /// repeatable.
    #[arg(long = "out-of-credits-key", value_name = "KEY")]
    broke_keys: Vec<String>,
    /// Seed for the failure draw, jitter and ids.
    #[arg(
        long,
        env = "DRAMAQ_SANDBOX_SEED",
        default_value_t = 0,
        hide_env_values = true
    )]
    seed: u64,
    /// Sign Replicate callbacks (`webhook`) with this Standard Webhooks secret (`whsec_…`).
    /// fal callbacks are always signed, with the sandbox's own ED25519 key (published at
    /// /fal-rest/.well-known/jwks.json); Kling and MiniMax callbacks are unsigned.
    #[arg(long, env = "DRAMAQ_SANDBOX_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Share of renders whose callback is never sent.
    #[arg(long, default_value_t = 0.0)]
    webhook_lost_rate: f64,
    /// Share of renders whose callback is signed with the wrong key (Replicate and fal).
    #[arg(long, default_value_t = 0.0)]
    webhook_bad_signature_rate: f64,
    /// Deliver every callback twice.
    #[arg(long)]
    webhook_replay: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if !(0.0..=1.0).contains(&cli.failure_rate) {
        anyhow::bail!("--failure-rate must be between 0 and 1");
    }
    if cli
        .rate_per_sec
        .is_some_and(|r| !(r > 0.0 && r.is_finite()))
    {
        anyhow::bail!("--rate-per-sec must be a positive number");
    }
    let mut key_limits = std::collections::HashMap::new();
    for spec in &cli.key_limits {
        let (key, limit) = spec.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--key-limit {spec:?}: expected KEY=RATE:BURST:CONCURRENT")
        })?;
        let limit = dramaq_sandbox::KeyLimit::parse(limit)
            .map_err(|e| anyhow::anyhow!("--key-limit for key {key:?}: {e}"))?;
        key_limits.insert(key.to_string(), limit);
    }
    let metrics_addr = cli.metrics_addr;
    let opts = SandboxOptions {
        render_ms: cli.render_ms,
        render_jitter_ms: cli.render_jitter_ms,
        failure_rate: cli.failure_rate,
        rate_per_sec: cli.rate_per_sec,
        burst: cli.burst.max(1),
        max_concurrent: cli.max_concurrent,
        url_ttl_ms: cli.url_ttl_ms,
        kling_access_key: cli.kling_access_key,
        kling_secret_key: cli.kling_secret_key,
        api_keys: Vec::new(),
        seed: cli.seed,
        submit_delay_ms: cli.submit_delay_ms,
        webhooks: dramaq_sandbox::webhook::WebhookOptions {
            secret: cli.webhook_secret,
            lost_rate: cli.webhook_lost_rate,
            bad_signature_rate: cli.webhook_bad_signature_rate,
            replay: cli.webhook_replay,
        },
        key_limits,
        broke_keys: cli.broke_keys,
    };
    let sandbox = Sandbox::start(cli.addr, opts).await?;
    if let Some(addr) = metrics_addr {
        let bound = sandbox.serve_metrics(addr).await?;
        tracing::info!(%bound, "serving /metrics");
    }
    println!("dramaq-sandbox listening on {}", sandbox.base_url());
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sandbox.shutdown().await;
    Ok(())
}
