//! `dramaq-studio bench`: how long the season page of a big season takes to serve.
//!
//! Starts a throwaway `redis-server`, enqueues a generated season (`--episodes` × `--scenes`,
//! one dialogue line per scene, three characters) through the real script parser and enqueue
//! path, serves the studio on a free loopback port and times `GET /seasons/<s>` (HTML) and
//! `GET /api/seasons/<s>` over HTTP: first page and a middle page, `--requests` times each,
//! printing median and worst.

use crate::{router, Studio};
use anyhow::Context;
use dramaq_common::config::Config;
use dramaq_common::queue::Queue;
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::RedisServer;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    #[arg(long, default_value_t = 30)]
    pub scenes: usize,
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
}

const CONFIG: &str = r#"
[storage]
dir = "/nonexistent-bench-out"
[accounts.vid]
family = "openai-videos"
base_url = "http://127.0.0.1:9/openai"
model = "sora-2"
api_key_env = "DRAMAQ_BENCH_UNUSED_KEY"
price = { per_second = 0.10 }
[accounts.img]
family = "openai-images"
base_url = "http://127.0.0.1:9/openai"
model = "gpt-image-1"
api_key_env = "DRAMAQ_BENCH_UNUSED_KEY"
price = { per_request = 0.04 }
[accounts.tts]
family = "openai-speech"
base_url = "http://127.0.0.1:9/openai"
model = "gpt-4o-mini-tts"
api_key_env = "DRAMAQ_BENCH_UNUSED_KEY"
voice = "alloy"
price = { per_1k_chars = 0.015 }
"#;

/// A season script of `episodes` × `scenes`.
pub fn season_yaml(id: &str, episodes: usize, scenes: usize) -> String {
    let mut y = format!(
        "id: {id}\ntitle: Benchmark season\ndefaults:\n  aspect_ratio: \"9:16\"\n  resolution: 720p\n  duration: 4\n  providers: {{ video: [vid], image: [img], voice: [tts] }}\ncharacters:\n"
    );
    for c in ["Mira", "Jun", "Ada"] {
        let _ = writeln!(
            y,
            "  - {{ name: {c}, appearance: \"a person called {c}\", seed: 7 }}"
        );
    }
    y.push_str("episodes:\n");
    for e in 1..=episodes {
        let _ = writeln!(y, "  - id: ep{e:03}\n    scenes:");
        for s in 1..=scenes {
            let _ = writeln!(
                y,
                "      - {{ id: sc{s:02}, description: \"episode {e} scene {s}: Mira walks along the harbour at dusk\", characters: [Mira], dialogue: [{{ speaker: Mira, line: \"Line {s} of episode {e}.\" }}] }}"
            );
        }
    }
    y
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    let mut cfg = Config::from_toml_str(CONFIG).context("bench config")?;
    cfg.redis.url = redis.url();
    let queue = Queue::new(RedisHandle::connect(&cfg.redis.url, 8).await?);
    let yaml = season_yaml("bench", args.episodes, args.scenes);
    let expanded = dramaq_producer::script::parse_str(&yaml, "bench.yaml", &cfg)
        .map_err(|e| anyhow::anyhow!("generated script refused: {e}"))?;
    let t0 = Instant::now();
    let studio = Studio::new(cfg.clone(), queue.clone(), None);
    let tasks = studio
        .takes
        .prepare_enqueue(&expanded.season, &expanded.tasks, false)
        .await?;
    queue
        .enqueue(&expanded.season, &expanded.title, &tasks, 3, |_| {})
        .await?;
    println!(
        "season: {} episodes × {} scenes, {} tasks enqueued in {:.1} s",
        args.episodes,
        args.scenes,
        tasks.len(),
        t0.elapsed().as_secs_f64()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router(studio)).await });
    let client = reqwest::Client::new();
    let middle = args
        .episodes
        .div_ceil(crate::views::EPISODES_PER_PAGE)
        .div_ceil(2)
        .max(1);
    for (what, path) in [
        ("season page, page 1 (HTML)", "/seasons/bench".to_string()),
        (
            "season page, middle page (HTML)",
            format!("/seasons/bench?page={middle}"),
        ),
        ("season document (JSON)", "/api/seasons/bench".to_string()),
    ] {
        let url = format!("http://{addr}{path}");
        let mut times: Vec<Duration> = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for _ in 0..args.requests.max(1) {
            let t = Instant::now();
            let resp = client.get(&url).send().await?;
            anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
            bytes = resp.bytes().await?.len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{what:<34} median {:>7.1} ms   worst {:>7.1} ms   ({} bytes, {} requests)",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            bytes,
            times.len()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
