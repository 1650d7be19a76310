//! The `/metrics`, `/healthz` and `/readyz` HTTP endpoint of a dramaq process.
//!
//! `GET /metrics` answers with [`Metrics::encode`] in the OpenMetrics text format; `GET /healthz`
//! answers `ok` while the process runs (a liveness probe: restart me only if this fails).
//! `GET /readyz` answers `ready` when the process can work right now: Redis answers a `PING` and,
//! for a worker, the storage accepts a small write ([`Readiness`]); otherwise `503` naming what
//! failed. Encoding reads only in-process atomics (the queue-state gauges are refreshed in the
//! background by `crate::metrics::spawn_queue_gauges`), so a scrape never waits on Redis or a
//! provider; only `/readyz` does, each check bounded by [`READY_TIMEOUT`].
//!
//! Default addresses (`--metrics-addr`): workers `127.0.0.1:9464`, the reaper `127.0.0.1:9465`,
//! the sandbox `127.0.0.1:9466`; `deploy/prometheus/prometheus.yml` scrapes exactly these.

use crate::metrics::{self, Metrics};
use crate::storage::Storage;
use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use dramaq_common::redis_conn::RedisHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one readiness check (Redis, storage) may take before it counts as failed.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` checks. Empty, it answers `ready` like `/healthz`.
#[derive(Clone, Default)]
pub struct Readiness {
    redis: Option<RedisHandle>,
    storage: Option<Arc<dyn Storage>>,
}

impl Readiness {
    /// Ready only while `redis` answers a `PING`.
    pub fn redis(mut self, redis: RedisHandle) -> Readiness {
        self.redis = Some(redis);
        self
    }

    /// Ready only while `storage` accepts a write ([`Storage::check_writable`]).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Readiness {
        self.storage = Some(storage);
        self
    }

    /// The failed checks, one word each (`redis`, `storage`); empty when ready. Details go to
    /// the log, not to the HTTP answer.
    async fn failures(&self) -> Vec<&'static str> {
        let mut failed = Vec::new();
        if let Some(redis) = &self.redis {
            let ping = async {
                let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
                redis::cmd("PING")
                    .query_async::<redis::Value>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(READY_TIMEOUT, ping).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "not ready: Redis does not answer");
                    failed.push("redis");
                }
                Err(_) => {
                    tracing::warn!("not ready: Redis did not answer in time");
                    failed.push("redis");
                }
            }
        }
        if let Some(storage) = &self.storage {
            match tokio::time::timeout(READY_TIMEOUT, storage.check_writable()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "not ready: storage is not writable");
                    failed.push("storage");
                }
                Err(_) => {
                    tracing::warn!("not ready: a storage write did not finish in time");
                    failed.push("storage");
                }
            }
        }
        failed
    }
}

#[derive(Clone)]
struct Served {
    metrics: Metrics,
    readiness: Readiness,
}

/// Default address of a worker's endpoint.
pub const DEFAULT_WORKER_ADDR: &str = "127.0.0.1:9464";
/// Default address of `dramaq-worker reaper`'s endpoint.
pub const DEFAULT_REAPER_ADDR: &str = "127.0.0.1:9465";
/// Default address of the sandbox's endpoint.
pub const DEFAULT_SANDBOX_ADDR: &str = "127.0.0.1:9466";

/// The endpoint's routes, for embedding or testing without a socket.
pub(crate) fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Served { metrics, readiness })
}

async fn scrape(State(served): State<Served>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        served.metrics.encode(),
    )
}

async fn readyz(State(served): State<Served>) -> impl IntoResponse {
    let failed = served.readiness.failures().await;
    let text = [(CONTENT_TYPE, "text/plain; charset=utf-8")];
    if failed.is_empty() {
        (StatusCode::OK, text, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            format!("not ready: {}\n", failed.join(", ")),
        )
    }
}

async fn healthz() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n")
}

/// Bind `addr` now (port 0 picks a free port) and serve in a background task until `stop`
/// fires. Returns the bound address; a port already in use is an error here, at start-up.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics endpoint: cannot listen on {addr}"))?;
    let bound = listener
        .local_addr()
        .context("metrics endpoint: no local address")?;
    let app = router(metrics, readiness);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, addr = %bound, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "metrics endpoint listening");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dramaq_common::model::TaskKind;
    use std::time::Duration;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn metrics_server_serves_metrics_and_health() {
        let metrics = Metrics::new();
        metrics.task_claimed("acct", TaskKind::Video);
        metrics.render_duration("acct", Duration::from_secs(42));
        let stop = CancellationToken::new();
        let addr = serve(
            "127.0.0.1:0".parse().expect("addr"),
            metrics,
            Readiness::default(),
            stop.clone(),
        )
        .await
        .expect("serve");
        assert_ne!(addr.port(), 0);
        let http = client();

        let resp = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(metrics::CONTENT_TYPE)
        );
        let body = resp.text().await.expect("body");
        for want in [
            "dramaq_tasks_claimed_total{account=\"acct\",kind=\"video\"} 1",
            "dramaq_render_duration_seconds_bucket{le=\"60.0\",account=\"acct\"} 1",
            "# HELP dramaq_tasks_claimed Tasks this process claimed",
            "# TYPE dramaq_render_duration_seconds histogram",
        ] {
            assert!(body.contains(want), "missing {want:?} in\n{body}");
        }
        assert!(body.ends_with("# EOF\n"));

        let health = http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("GET /healthz");
        assert_eq!(health.status(), 200);
        assert_eq!(health.text().await.expect("body"), "ok\n");

        let missing = http
            .get(format!("http://{addr}/nope"))
            .send()
            .await
            .expect("GET /nope");
        assert_eq!(missing.status(), 404);

        stop.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "still listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn metrics_server_busy_port_is_an_error() {
        let stop = CancellationToken::new();
        let addr = serve(
            "127.0.0.1:0".parse().expect("addr"),
            Metrics::new(),
            Readiness::default(),
            stop.clone(),
        )
        .await
        .expect("serve");
        let again = serve(addr, Metrics::new(), Readiness::default(), stop.clone()).await;
        assert!(again.is_err());
        stop.cancel();
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let resp = client()
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    #[tokio::test]
    async fn readyz_needs_redis_and_writable_storage() {
        use crate::storage::LocalDir;
        use dramaq_common::testkit::RedisServer;

        let redis = RedisServer::start().expect("redis-server");
        let handle = RedisHandle::connect(&redis.url(), 2)
            .await
            .expect("connect");
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::new(dir.path(), 1 << 20));
        // A "folder" that is a file: nothing can be written under it.
        let blocked = dir.path().join("not-a-dir");
        std::fs::write(&blocked, b"x").expect("file");
        let broken: Arc<dyn Storage> = Arc::new(LocalDir::new(&blocked, 1 << 20));
        let stop = CancellationToken::new();
        let any = "127.0.0.1:0".parse().expect("addr");
        let ready = Readiness::default()
            .redis(handle.clone())
            .storage(storage.clone());
        let good = serve(any, Metrics::new(), ready, stop.clone())
            .await
            .expect("serve");
        let no_storage = Readiness::default().redis(handle.clone()).storage(broken);
        let bad = serve(any, Metrics::new(), no_storage, stop.clone())
            .await
            .expect("serve");

        assert_eq!(get(good, "/readyz").await, (200, "ready\n".into()));
        let probe = dir
            .path()
            .join(crate::storage::probe_location().expect("loc").as_str());
        assert_eq!(std::fs::read(&probe).expect("probe written"), b"ok\n");
        assert_eq!(
            get(bad, "/readyz").await,
            (503, "not ready: storage\n".into())
        );
        // Liveness does not depend on either.
        assert_eq!(get(bad, "/healthz").await, (200, "ok\n".into()));

        drop(redis);
        let (status, body) = get(good, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not ready: redis\n"));
        assert_eq!(get(good, "/healthz").await, (200, "ok\n".into()));
        stop.cancel();
    }
}
