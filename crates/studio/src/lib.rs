//! The review studio (`dramaq studio`): one web app where a studio watches its season, re-rolls
//! and approves scenes, and an operator runs the fleet.
//!
//! Server-rendered HTML ([`pages`], maud) over a JSON API under `/api/` ([`api`]): every page is
//! built from the same document its API route answers, so other tools see what people see. Live
//! state comes as server-sent events (`/api/events`) from one background refresher ([`live`]).
//! Media is served only from locations recorded in task records ([`media`]). Every action
//! goes through the shared operations (`dramaq_common::takes`, `dramaq_common::ops`), the same
//! code as the CLI. [`auth`] keeps it safe by default: loopback unless a token is set, a CSRF
//! token on every state-changing request.

pub mod api;
pub mod auth;
pub mod bench;
pub mod live;
pub mod media;
pub mod pages;
pub mod views;

use anyhow::Context;
use axum::routing::{get, post};
use axum::Router;
use dramaq_common::config::Config;
use dramaq_common::ops::Ops;
use dramaq_common::queue::Queue;
use dramaq_common::takes::Takes;
use std::net::SocketAddr;
use std::sync::Arc;

/// Environment variable holding the sign-in token (required on a non-loopback address).
pub const TOKEN_ENV: &str = "DRAMAQ_STUDIO_TOKEN";

/// What every handler shares.
#[derive(Clone)]
pub struct Studio {
    pub cfg: Arc<Config>,
    pub queue: Queue,
    pub ops: Ops,
    pub takes: Takes,
    pub auth: Arc<auth::Auth>,
    pub live: live::Live,
}

impl Studio {
    pub async fn connect(cfg: Config, token: Option<String>) -> anyhow::Result<Studio> {
        let queue = Queue::connect(&cfg.redis)
            .await
            .context("connecting to Redis")?;
        Ok(Studio::new(cfg, queue, token))
    }

    pub fn new(cfg: Config, queue: Queue, token: Option<String>) -> Studio {
        let takes = Takes::new(queue.clone(), cfg.worker.max_attempts);
        Studio {
            cfg: Arc::new(cfg),
            ops: Ops::new(queue.clone()),
            takes,
            queue,
            auth: Arc::new(auth::Auth::new(token)),
            live: live::Live::default(),
        }
    }
}

/// Refuse to listen beyond this host without a token: the studio can spend money.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && token.is_none_or(|t| t.trim().is_empty()) {
        anyhow::bail!(
            "refusing to listen on {addr}: it is not a loopback address and {TOKEN_ENV} is not \
             set (anyone who can reach the port could re-roll paid renders); set {TOKEN_ENV} to \
             a long random value, or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// The whole app.
pub fn router(studio: Studio) -> Router {
    let api = Router::new()
        .route("/seasons", get(api::seasons))
        .route("/seasons/{season}", get(api::season))
        .route("/seasons/{season}/scenes/{ep}/{sc}", get(api::scene))
        .route(
            "/seasons/{season}/scenes/{ep}/{sc}/{action}",
            post(api::scene_action),
        )
        .route("/seasons/{season}/episodes/{ep}", get(api::episode))
        .route(
            "/seasons/{season}/episodes/{ep}/reassemble",
            post(api::reassemble),
        )
        .route("/dead", get(api::dead))
        .route("/dead/preview", post(api::dead_preview))
        .route("/dead/apply", post(api::dead_apply))
        .route("/accounts", get(api::accounts))
        .route("/accounts/{account}/{action}", post(api::account_action))
        .route("/events", get(live::events));
    Router::new()
        .route("/", get(pages::seasons))
        .route("/seasons/{season}", get(pages::season))
        .route("/seasons/{season}/scenes/{ep}/{sc}", get(pages::scene))
        .route("/seasons/{season}/episodes/{ep}", get(pages::episode))
        .route("/dead", get(pages::dead))
        .route("/accounts", get(pages::accounts))
        .route("/login", get(pages::login).post(auth::login))
        .route("/media/{season}/{id}", get(media::output))
        .route("/media/{season}/{id}/{part}", get(media::part))
        .route("/assets/{file}", get(pages::asset))
        .nest("/api", api)
        .layer(axum::middleware::from_fn_with_state(
            studio.clone(),
            auth::guard,
        ))
        .with_state(studio)
}

/// `dramaq studio`: connect, check the address, serve until Ctrl-C.
pub async fn serve(cfg: Config, addr: SocketAddr) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty());
    check_bind(&addr, token.as_deref())?;
    let studio = Studio::connect(cfg, token).await?;
    live::spawn_refresher(studio.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    println!("dramaq studio on http://{local}/");
    axum::serve(listener, router(studio))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
