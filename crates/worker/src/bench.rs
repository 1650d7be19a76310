//! `dramaq-worker bench`: measured figures for the queue itself, against a local redis-server.
//!
//! - enqueue throughput: `Queue::enqueue` of N tasks (~300-byte payloads) in bulk;
//! - Redis memory per queued task: `used_memory` after minus before, divided by N;
//! - no-op lifecycle throughput: the real fetch → claim → submit → store → complete path of the
//!   worker, with an in-process provider that answers at once and storage that only hashes.
//!
//! Figures vary with the machine; the command prints them with the parameters used. It starts a
//! throwaway redis-server on a free port unless `--redis-url` is given (whose data it flushes).

use crate::context::{new_worker_id, Ctx};
use crate::fetch;
use crate::held::HeldLeases;
use crate::providers::{
    Download, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome, SubmitRequest,
    SyncResult,
};
use crate::storage::{Location, Storage, StoreError, Stored};
use async_trait::async_trait;
use bytes::Bytes;
use dramaq_common::config::{Config, Family};
use dramaq_common::model::{NewTask, TaskPayload, TaskState};
use dramaq_common::queue::Queue;
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::RedisServer;
use futures::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ACCOUNT: &str = "bench";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub tasks: usize,
    pub concurrency: usize,
    pub redis_url: Option<String>,
    /// `redis.durable_submit` for the lifecycle (docs/durability.md).
    pub durable_submit: dramaq_common::config::DurableSubmit,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub tasks: usize,
    pub concurrency: usize,
    pub payload_bytes: usize,
    pub enqueue_secs: f64,
    pub enqueue_tasks_per_sec: f64,
    pub redis_bytes_per_queued_task: f64,
    pub lifecycle_secs: f64,
    pub lifecycle_tasks_per_sec: f64,
    pub redis_version: String,
}

/// A provider that renders instantly: the lifecycle without any provider latency.
struct InstantProvider;

#[async_trait]
impl Provider for InstantProvider {
    fn family(&self) -> Family {
        Family::OpenaiImages
    }
    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        Ok(SubmitOutcome::Finished(SyncResult::Bytes {
            bytes: Bytes::copy_from_slice(req.task_id.as_bytes()),
            ext: "bin".into(),
        }))
    }
    async fn poll(&self, _: &str, _: Option<&str>) -> Result<PollOutcome, ProviderError> {
        Err(ProviderError::new(
            dramaq_common::FailureClass::InvalidRequest,
            "nothing to poll",
        ))
    }
    async fn fetch(&self, _: &ResultRef) -> Result<Download, ProviderError> {
        Err(ProviderError::new(
            dramaq_common::FailureClass::InvalidRequest,
            "nothing to fetch",
        ))
    }
}

/// Storage that hashes and forgets: measures the queue, not the disk.
struct HashOnly;

#[async_trait]
impl Storage for HashOnly {
    async fn put(
        &self,
        location: &Location,
        mut body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
    ) -> Result<Stored, StoreError> {
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok(Stored {
            location: location.clone(),
            sha256: hex::encode(h.finalize()),
            bytes: n,
        })
    }
    async fn get(&self, _: &Location) -> Result<Bytes, StoreError> {
        Ok(Bytes::new())
    }
    fn local_path(&self, _: &Location) -> Option<std::path::PathBuf> {
        None
    }
}

fn synthetic_tasks(n: usize) -> Vec<NewTask> {
    // ~300 bytes of prompt, like the peers' benchmark jobs.
    let prompt = "Dusk over a small stone harbour; fishing boats rock at their moorings while the lighthouse flickers twice and goes dark. Gulls settle on the pier. Mira, a young lighthouse keeper in a yellow oilskin coat, runs along the quay toward the tower, lantern swinging, waves breaking white behind her.";
    (0..n)
        .map(|i| NewTask {
            id: format!("voc-{i:016x}"),
            season: "bench".into(),
            group: "ep01".into(),
            label: format!("ep01/line{i}"),
            chain: vec![ACCOUNT.into()],
            payload: TaskPayload::Voice {
                text: prompt.into(),
                voice: "alloy".into(),
                speaker: "mira".into(),
            },
            deps: vec![],
            ext: "bin".into(),
            est_cost_usd: 0.0,
        })
        .collect()
}

async fn used_memory(q: &Queue) -> anyhow::Result<f64> {
    let mut conn = q.redis().conn().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

async fn redis_version(q: &Queue) -> anyhow::Result<String> {
    Ok(q.redis().server_info("redis_version").await?)
}

pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let _server;
    let url = match &opts.redis_url {
        Some(u) => u.clone(),
        None => {
            _server = RedisServer::start()?;
            _server.url()
        }
    };
    let redis = RedisHandle::connect(&url, 8).await?;
    let queue = Queue::new(redis).with_durable_submit(opts.durable_submit, 5_000);
    queue.check_durability().await?;
    {
        let mut conn = queue.redis().conn().await?;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    }
    let tasks = synthetic_tasks(opts.tasks);
    let payload_bytes = serde_json::to_string(&tasks[0].payload)?.len();

    let mem_before = used_memory(&queue).await?;
    let start = Instant::now();
    let report = queue.enqueue("bench", "bench", &tasks, 8, |_| {}).await?;
    let enqueue_secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.new as usize == opts.tasks,
        "enqueued {} of {}",
        report.new,
        opts.tasks
    );
    let mem_after = used_memory(&queue).await?;

    let mut cfg = Config::from_toml_str(&format!(
        // No probe: the no-op results are not media, and the bench measures the queue core.
        "[accounts.{ACCOUNT}]\nfamily = \"openai-images\"\nbase_url = \"http://127.0.0.1:1\"\n\n[worker]\nconcurrency = {}\n\n[assembly]\nprobe = false\n",
        opts.concurrency
    ))?;
    cfg.worker.concurrency = opts.concurrency;
    let provider: Arc<dyn Provider> = Arc::new(InstantProvider);
    let ctx = Arc::new(Ctx {
        slots: Arc::new(Semaphore::new(opts.concurrency)),
        queue: queue.clone(),
        worker_id: new_worker_id(),
        accounts: BTreeMap::from([(ACCOUNT.to_string(), provider)]),
        keyed: Default::default(),
        storage: Arc::new(HashOnly),
        held: HeldLeases::default(),
        journal: Default::default(),
        stopping: CancellationToken::new(),
        abort: CancellationToken::new(),
        metrics: crate::metrics::Metrics::new(),
        plans: Default::default(),
        poll_wake: Default::default(),
        slot_freed: Default::default(),
        cfg,
    });
    let work = TaskTracker::new();
    let start = Instant::now();
    let fetcher = tokio::spawn(fetch::run(ctx.clone(), ACCOUNT.to_string(), work.clone()));
    loop {
        let counts = queue.account_counts(ACCOUNT, "bench").await?;
        if counts.get(&TaskState::Stored).copied().unwrap_or(0) as usize >= opts.tasks {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "lifecycle did not finish: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lifecycle_secs = start.elapsed().as_secs_f64();
    ctx.stopping.cancel();
    let _ = fetcher.await;
    work.close();
    work.wait().await;

    Ok(BenchReport {
        tasks: opts.tasks,
        concurrency: opts.concurrency,
        payload_bytes,
        enqueue_secs,
        enqueue_tasks_per_sec: opts.tasks as f64 / enqueue_secs,
        redis_bytes_per_queued_task: (mem_after - mem_before) / opts.tasks as f64,
        lifecycle_secs,
        lifecycle_tasks_per_sec: opts.tasks as f64 / lifecycle_secs,
        redis_version: redis_version(&queue).await?,
    })
}
