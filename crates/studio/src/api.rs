//! `/api/`: the JSON API behind every page, and the actions.
//!
//! Every GET answers the document its page renders ([`crate::views`]). Every action is a POST
//! that takes JSON (with the `X-CSRF-Token` header) or a form (with a `csrf` field) and calls
//! the shared operation: `dramaq_common::takes` for re-roll, select, approve and re-assemble
//! (the CLI's `dramaq reroll | select | approve`), `dramaq_common::ops` for dead letters and
//! accounts (`dramaq dlq | queue`). A form gets a redirect back to its page (or an error page);
//! JSON gets the operation's report, or `{"error": …}` with 400, 404 or 409.

use crate::views::{self, ViewError};
use crate::Studio;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use dramaq_common::ops::{self, DeadFilter, PurgeReport, RequeueReport};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How an action arrived.
pub enum Mode {
    Json,
    /// A form; where to go back to afterwards.
    Form {
        next: String,
    },
}

impl IntoResponse for ViewError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

fn status_of(e: &ViewError) -> StatusCode {
    match e {
        ViewError::NotFound(_) => StatusCode::NOT_FOUND,
        ViewError::Conflict(_) => StatusCode::CONFLICT,
        ViewError::Invalid(_) => StatusCode::BAD_REQUEST,
        ViewError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Parse an action's body: JSON (CSRF checked from the header by [`crate::auth::guard`]) or a
/// form, whose `csrf` field is checked here.
pub fn parse<T: DeserializeOwned>(
    studio: &Studio,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(T, Mode), Box<Response>> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/x-www-form-urlencoded") {
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| bad(format!("unreadable form: {e}")))?;
        let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if !field("csrf").is_some_and(|t| studio.auth.csrf_ok(t)) {
            return Err(Box::new(
                (StatusCode::FORBIDDEN, "missing or wrong CSRF token\n").into_response(),
            ));
        }
        let next = field("next")
            .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
            .unwrap_or("/")
            .to_string();
        // Empty fields are absent (a select left on "any").
        let kept: Vec<&(String, String)> = fields
            .iter()
            .filter(|(k, v)| !v.is_empty() && k != "csrf" && k != "next")
            .collect();
        let encoded = serde_urlencoded::to_string(&kept).unwrap_or_default();
        let value: T =
            serde_urlencoded::from_str(&encoded).map_err(|e| bad(format!("form fields: {e}")))?;
        return Ok((value, Mode::Form { next }));
    }
    let value: T = if body.is_empty() {
        serde_json::from_str("{}")
    } else {
        serde_json::from_slice(body)
    }
    .map_err(|e| bad(format!("request body: {e}")))?;
    Ok((value, Mode::Json))
}

fn bad(msg: String) -> Box<Response> {
    Box::new(
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": msg })),
        )
            .into_response(),
    )
}

/// The answer to an action in the way it arrived.
pub fn respond<T: Serialize>(mode: Mode, result: views::Result<T>) -> Response {
    match (mode, result) {
        (Mode::Json, Ok(v)) => Json(v).into_response(),
        (Mode::Json, Err(e)) => e.into_response(),
        (Mode::Form { next }, Ok(_)) => Redirect::to(&next).into_response(),
        (Mode::Form { next }, Err(e)) => (
            status_of(&e),
            crate::pages::error_page(&e.to_string(), &next),
        )
            .into_response(),
    }
}

macro_rules! parse_or_return {
    ($studio:expr, $headers:expr, $body:expr) => {
        match parse(&$studio, &$headers, &$body) {
            Ok(v) => v,
            Err(resp) => return *resp,
        }
    };
}

pub async fn seasons(State(studio): State<Studio>) -> Response {
    match crate::live::current(&studio).await {
        Ok(s) => Json(&*s).into_response(),
        Err(e) => ViewError::Internal(format!("{e:#}")).into_response(),
    }
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    pub page: Option<usize>,
}

pub async fn season(
    State(studio): State<Studio>,
    Path(season): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    to_json(views::season_page(&studio, &season, q.page.unwrap_or(1)).await)
}

pub async fn scene(
    State(studio): State<Studio>,
    Path((season, ep, sc)): Path<(String, String, String)>,
) -> Response {
    to_json(views::scene_page(&studio, &season, &format!("{ep}/{sc}")).await)
}

pub async fn episode(
    State(studio): State<Studio>,
    Path((season, ep)): Path<(String, String)>,
) -> Response {
    to_json(views::episode_page(&studio, &season, &ep).await)
}

fn to_json<T: Serialize>(r: views::Result<T>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of every scene action; each uses the fields it needs.
#[derive(Deserialize)]
pub struct SceneBody {
    /// reroll: the take number to create (default: the next); select: the take (required);
    /// approve: the take (default: the selected one); requeue: the dead take (required).
    pub take: Option<u32>,
    /// reroll: text appended to the prompt.
    pub note: Option<String>,
    /// requeue: another account to move the dead take to.
    pub to: Option<String>,
}

#[derive(Serialize)]
pub struct RequeueTakeReport {
    pub id: String,
    pub outcome: ops::RequeueOutcome,
    pub account: String,
}

/// `POST /api/seasons/{season}/scenes/{ep}/{sc}/{reroll|select|approve|requeue}`.
pub async fn scene_action(
    State(studio): State<Studio>,
    Path((season, ep, sc, action)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (b, mode): (SceneBody, _) = parse_or_return!(studio, headers, body);
    let scene = format!("{ep}/{sc}");
    let takes = &studio.takes;
    let need_take = |what: &str| {
        b.take
            .ok_or_else(|| ViewError::Invalid(format!("{what} needs `take`")))
    };
    let r: views::Result<serde_json::Value> = async {
        Ok(match action.as_str() {
            "reroll" => json(
                takes
                    .reroll(&season, &scene, b.take, b.note.as_deref())
                    .await?,
            ),
            "select" => json(takes.select(&season, &scene, need_take("select")?).await?),
            "approve" => json(takes.approve(&season, &scene, b.take).await?),
            "requeue" => json(
                requeue_take(
                    &studio,
                    &season,
                    &scene,
                    need_take("requeue")?,
                    b.to.as_deref(),
                )
                .await?,
            ),
            other => {
                return Err(ViewError::NotFound(format!(
                    "unknown scene action `{}` (reroll, select, approve, requeue)",
                    dramaq_common::text::shown_default(other)
                )))
            }
        })
    }
    .await;
    respond(mode, r)
}

fn json<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Requeue a dead take (optionally moved to another account): `dramaq dlq requeue` for one task.
async fn requeue_take(
    studio: &Studio,
    season: &str,
    scene: &str,
    n: u32,
    to: Option<&str>,
) -> views::Result<RequeueTakeReport> {
    let entry = studio.takes.scene(season, scene).await?;
    let take = entry
        .take(n)
        .ok_or_else(|| ViewError::NotFound(format!("no take {n}")))?;
    let account = studio
        .queue
        .task_account(season, &take.id)
        .await?
        .unwrap_or_else(|| take.account.clone());
    if let Some(to) = to {
        ops::check_configured(&studio.cfg, to)?;
    }
    let (outcome, now) = studio.ops.requeue_task(&account, &take.id, to).await?;
    Ok(RequeueTakeReport {
        id: take.id.clone(),
        outcome,
        account: now,
    })
}

pub async fn reassemble(
    State(studio): State<Studio>,
    Path((season, ep)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_b, mode): (serde_json::Value, _) = parse_or_return!(studio, headers, body);
    let r = async {
        let state = studio.takes.reassemble(&season, &ep).await?;
        // A dead assembly of the current selection is requeued: that is what re-assembling it
        // means.
        if let dramaq_common::takes::AssemblyState::Queued { id, .. } = &state {
            if let Some(account) = studio.queue.task_account(&season, id).await? {
                if let Some(r) = studio.queue.get_task(&account, id).await? {
                    if r.state == dramaq_common::TaskState::Dead {
                        studio.ops.requeue_task(&account, id, None).await?;
                    }
                }
            }
        }
        Ok(state)
    }
    .await;
    respond(mode, r)
}

/// Dead-letter filter from a query or body; empty values mean "any".
#[derive(Deserialize, Default, Clone)]
pub struct FilterArgs {
    pub season: Option<String>,
    pub episode: Option<String>,
    pub account: Option<String>,
    pub class: Option<String>,
}

impl FilterArgs {
    pub fn to_filter(&self) -> views::Result<DeadFilter> {
        let some = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(DeadFilter {
            season: some(&self.season),
            episode: some(&self.episode),
            account: some(&self.account),
            class: match some(&self.class) {
                Some(c) => Some(ops::parse_class(&c)?),
                None => None,
            },
            died_before_ms: None,
        })
    }
}

pub async fn dead(State(studio): State<Studio>, Query(f): Query<FilterArgs>) -> Response {
    let r = async { views::dead_page(&studio, f.to_filter()?).await }.await;
    to_json(r)
}

#[derive(Deserialize)]
pub struct BulkBody {
    /// `requeue` or `purge`.
    pub action: String,
    #[serde(flatten)]
    pub filter: FilterArgs,
    /// Requeue onto another account.
    pub to: Option<String>,
    /// Apply only: the ids the preview showed, comma-separated. If the filter now matches
    /// anything else, nothing is applied and the answer is 409.
    pub ids: Option<String>,
}

#[derive(Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BulkReport {
    Requeue(RequeueReport),
    Purge(PurgeReport),
}

impl BulkReport {
    fn ids(&self) -> BTreeSet<String> {
        match self {
            BulkReport::Requeue(r) => r.tasks.iter().map(|t| t.id.clone()).collect(),
            BulkReport::Purge(r) => r.tasks.iter().map(|t| t.id.clone()).collect(),
        }
    }
}

/// What a bulk action would do, changing nothing.
pub async fn bulk_preview(studio: &Studio, b: &BulkBody) -> views::Result<BulkReport> {
    let filter = b.filter.to_filter()?;
    match b.action.as_str() {
        "requeue" => Ok(BulkReport::Requeue(
            studio
                .ops
                .requeue(
                    &studio.cfg,
                    &filter,
                    b.to.as_deref().filter(|t| !t.is_empty()),
                    true,
                )
                .await?,
        )),
        "purge" => Ok(BulkReport::Purge(studio.ops.purge(&filter, false).await?)),
        other => Err(ViewError::Invalid(format!(
            "unknown action `{}` (requeue, purge)",
            dramaq_common::text::shown_default(other)
        ))),
    }
}

pub async fn dead_preview(
    State(studio): State<Studio>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (b, mode): (BulkBody, _) = parse_or_return!(studio, headers, body);
    respond(mode, bulk_preview(&studio, &b).await)
}

/// Apply a bulk action previewed before: only when the filter still matches exactly the
/// previewed tasks.
pub async fn dead_apply(State(studio): State<Studio>, headers: HeaderMap, body: Bytes) -> Response {
    let (b, mode): (BulkBody, _) = parse_or_return!(studio, headers, body);
    let r = async {
        let expected: BTreeSet<String> = b
            .ids
            .as_deref()
            .ok_or_else(|| ViewError::Invalid("apply needs `ids` from the preview".into()))?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let now = bulk_preview(&studio, &b).await?.ids();
        if now != expected {
            return Err(ViewError::Conflict(format!(
                "the dead letters changed since the preview ({} previewed, {} match now); \
                 nothing was changed: preview again",
                expected.len(),
                now.len()
            )));
        }
        let filter = b.filter.to_filter()?;
        Ok(match b.action.as_str() {
            "requeue" => BulkReport::Requeue(
                studio
                    .ops
                    .requeue(
                        &studio.cfg,
                        &filter,
                        b.to.as_deref().filter(|t| !t.is_empty()),
                        false,
                    )
                    .await?,
            ),
            _ => BulkReport::Purge(studio.ops.purge(&filter, true).await?),
        })
    }
    .await;
    respond(mode, r)
}

pub async fn accounts(State(studio): State<Studio>) -> Response {
    to_json(views::accounts_page(&studio).await)
}

#[derive(Deserialize)]
pub struct AccountBody {
    pub reason: Option<String>,
}

/// `POST /api/accounts/{account}/{pause|resume|drain}`.
pub async fn account_action(
    State(studio): State<Studio>,
    Path((account, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (b, mode): (AccountBody, _) = parse_or_return!(studio, headers, body);
    let r = async {
        studio.ops.check_known(&studio.cfg, &account).await?;
        let reason = b.reason.as_deref().filter(|r| !r.is_empty());
        Ok(match action.as_str() {
            "pause" => {
                serde_json::to_value(studio.ops.pause(&account, reason, Some("studio")).await?)
            }
            "resume" => serde_json::to_value(studio.ops.resume(&account).await?),
            "drain" => {
                serde_json::to_value(studio.ops.drain(&account, reason, Some("studio")).await?)
            }
            other => {
                return Err(ViewError::NotFound(format!(
                    "unknown account action `{}` (pause, resume, drain)",
                    dramaq_common::text::shown_default(other)
                )))
            }
        }
        .unwrap_or_default())
    }
    .await;
    respond(mode, r)
}
