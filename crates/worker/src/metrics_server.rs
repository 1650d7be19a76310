//! The `/metrics` and `/healthz` HTTP endpoint of a dramaq process.
//!
//! `GET /metrics` answers with [`Metrics::encode`] in the OpenMetrics text format; `GET /healthz`
//! answers `ok` while the process runs. Encoding reads only in-process atomics (the queue-state
//! gauges are refreshed in the background by `crate::metrics::spawn_queue_gauges`), so a
//! scrape never waits on Redis or a provider.
//!
//! Default addresses (`--metrics-addr`): workers `127.0.0.1:9464`, the reaper `127.0.0.1:9465`,
//! the sandbox `127.0.0.1:9466`; `deploy/prometheus/prometheus.yml` scrapes exactly these.

use crate::metrics::{self, Metrics};
use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Default address of a worker's endpoint.
pub const DEFAULT_WORKER_ADDR: &str = "127.0.0.1:9464";
/// Default address of `dramaq-worker reaper`'s endpoint.
pub const DEFAULT_REAPER_ADDR: &str = "127.0.0.1:9465";
/// Default address of the sandbox's endpoint.
pub const DEFAULT_SANDBOX_ADDR: &str = "127.0.0.1:9466";

/// The endpoint's routes, for embedding or testing without a socket.
pub(crate) fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics.encode())
}

async fn healthz() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n")
}

/// Bind `addr` now (port 0 picks a free port) and serve in a background task until `stop`
/// fires. Returns the bound address; a port already in use is an error here, at start-up.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics endpoint: cannot listen on {addr}"))?;
    let bound = listener
        .local_addr()
        .context("metrics endpoint: no local address")?;
    let app = router(metrics);
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
        let addr = serve("127.0.0.1:0".parse().expect("addr"), metrics, stop.clone())
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
            stop.clone(),
        )
        .await
        .expect("serve");
        let again = serve(addr, Metrics::new(), stop.clone()).await;
        assert!(again.is_err());
        stop.cancel();
    }
}
