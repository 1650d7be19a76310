//! dramaq-sandbox: a local stand-in for the provider APIs dramaq drives, faithful to their wire
//! shapes (docs/providers.md), so the whole system runs and is tested offline.
//!
//! One server, path-routed per family: `/openai/v1/videos*` (Sora shape, multipart and JSON),
//! `/openai/v1/images/generations`, `/openai/v1/audio/speech`, `/kling/v1/videos/*` (JWT),
//! `/runway/v1/{image_to_video,text_to_video,tasks/{id}}` and its CometAPI passthrough
//! `/comet/runwayml/v1/*` (wrapped envelope), `/gemini/v1beta/models/{model}:predictLongRunning`
//! with its operations and file downloads (Veo), `/minimax/v1/{video_generation,
//! query/video_generation,files/retrieve}`, the fal queue `/fal/{model_id...}` and
//! `/replicate/v1/{models/{owner}/{name}/predictions,predictions/{id}[/cancel]}`. Render
//! time, failure rate and per-key rate and concurrency limits are options; per-job scenarios
//! (`[sandbox:<name>]` in a prompt, or the `X-Sandbox-Scenario` header) reproduce moderation,
//! 429s, out-of-credits, success without output, expired URLs, transient not-found and 5xx.
//! Results are real files (MP4 with an H.264 track, PNG, WAV, MP3), unique per job. `/admin/stats`
//! counts paid submissions per idempotency key, so tests can prove nothing was paid for twice,
//! and reports the renders in flight; `POST /admin/finish` completes every unfinished render at
//! once, so a test can hold thousands in flight and then release them.

pub mod chat;
pub mod fal;
pub mod kling;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod minimax;
pub mod openai;
pub mod replicate;
pub mod runway;
pub mod scenario;
pub mod state;
pub mod veo;
pub mod webhook;

pub use state::{KeyLimit, KeyStats, SandboxOptions, Stats};

use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use state::{lock, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The HTTP routes over shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/openai/v1/videos",
            post(openai::create_video).get(openai::list_videos),
        )
        .route("/openai/v1/videos/{id}", get(openai::get_video))
        .route("/openai/v1/videos/{id}/content", get(openai::video_content))
        .route(
            "/openai/v1/images/generations",
            post(openai::generate_image),
        )
        .route("/openai/files/{file}", get(openai::image_file))
        .route("/openai/v1/audio/speech", post(openai::speech))
        .route(
            "/kling/v1/videos/{action}",
            post(kling::create).get(kling::list),
        )
        .route("/kling/v1/videos/{action}/{id}", get(kling::get))
        .route("/kling/files/{file}", get(kling::file))
        .route("/runway/v1/{action}", post(runway::create))
        .route(
            "/runway/v1/tasks/{id}",
            get(runway::get_task).delete(runway::delete_task),
        )
        .route("/runway/files/{file}", get(runway::file))
        .route("/comet/runwayml/v1/{action}", post(runway::relay_create))
        .route(
            "/comet/runwayml/v1/tasks/{id}",
            get(runway::relay_get_task).delete(runway::relay_delete_task),
        )
        .route("/gemini/v1beta/models/{model}", post(veo::predict))
        .route(
            "/gemini/v1beta/models/{model}/operations/{id}",
            get(veo::operation),
        )
        .route("/gemini/v1beta/files/{file}", get(veo::download))
        .route("/gemini-cdn/{file}", get(veo::cdn))
        .route("/minimax/v1/video_generation", post(minimax::create))
        .route("/minimax/v1/query/video_generation", get(minimax::query))
        .route("/minimax/v1/files/retrieve", get(minimax::retrieve))
        .route("/minimax/files/{file}", get(minimax::file))
        .route(
            "/fal/{*path}",
            post(fal::submit).get(fal::get).put(fal::cancel),
        )
        .route("/fal-media/{id}/{name}", get(fal::media))
        .route("/fal-rest/.well-known/jwks.json", get(webhook::fal_jwks))
        .route(
            "/replicate/v1/models/{owner}/{name}/predictions",
            post(replicate::create_for_model),
        )
        .route(
            "/replicate/v1/predictions",
            post(replicate::create_for_version),
        )
        .route("/replicate/v1/predictions/{id}", get(replicate::get))
        .route(
            "/replicate/v1/predictions/{id}/cancel",
            post(replicate::cancel),
        )
        .route("/replicate/delivery/{id}/{name}", get(replicate::delivery))
        .route("/admin/stats", get(stats))
        .route("/metrics", get(serve_metrics))
        .route("/admin/reset", post(reset))
        .route("/admin/finish", post(finish))
        .layer(DefaultBodyLimit::max(openai::MAX_BODY))
        .with_state(shared)
        .merge(chat::router(chat::LATENCY))
}

async fn serve_metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode_metrics(&shared),
    )
}

async fn stats(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let in_flight = shared.in_flight(None, std::time::Instant::now());
    let mut stats = lock(&shared.stats).clone();
    stats.in_flight = in_flight;
    Json(stats)
}

async fn finish(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let finished = shared.finish_all(std::time::Instant::now());
    Json(serde_json::json!({"finished": finished}))
}

async fn reset(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    *lock(&shared.stats) = Stats::default();
    lock(&shared.jobs).clear();
    lock(&shared.external).clear();
    lock(&shared.first_submit).clear();
    Json(serde_json::json!({"reset": true}))
}

/// A running sandbox.
pub struct Sandbox {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Bind `addr` (port 0 picks a free one) and serve in the background.
    pub async fn start(addr: SocketAddr, opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts));
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Sandbox {
            addr,
            shared,
            stop: Some(stop),
            task,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Also serve `/metrics` on a separate address (the deploy layout's scrape port).
    pub async fn serve_metrics(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(serve_metrics))
            .with_state(self.shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(bound)
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_are_served_on_both_addresses() {
        let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default())
            .await
            .unwrap();
        let extra = sandbox
            .serve_metrics("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        for url in [
            format!("{}/metrics", sandbox.base_url()),
            format!("http://{extra}/metrics"),
        ] {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            for name in [
                "dramaq_sandbox_requests_total",
                "dramaq_sandbox_submissions_total",
                "dramaq_sandbox_rate_limited_total",
                "dramaq_sandbox_renders_in_flight",
                "dramaq_sandbox_renders_in_flight_max",
            ] {
                assert!(text.contains(name), "{url} lacks {name}:\n{text}");
            }
        }
        sandbox.shutdown().await;
    }
}
