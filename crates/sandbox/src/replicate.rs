//! Replicate predictions (docs/providers.md, "replicate"), under `/replicate`.
//!
//! `POST /v1/models/{owner}/{name}/predictions` (or `POST /v1/predictions` with `version`) takes
//! `{"input":{…}}` and answers 201 with the prediction object: `id`, `model`, `version`, the
//! echoed `input`, `status` (`starting`, `processing`, `succeeded`, `failed`, `canceled`,
//! `aborted`), `output` (a URL string once succeeded), `error`, `logs`, ISO-8601 `created_at` /
//! `started_at` / `completed_at`, `metrics.predict_time`, and absolute `urls.get` /
//! `urls.cancel`. `GET /v1/predictions/{id}` polls, `POST /v1/predictions/{id}/cancel` cancels
//! (a finished prediction is returned unchanged). A `Cancel-After` header (`30s`, `1m`, `1h30m`)
//! sets a deadline: a prediction that has not started by then ends `aborted`, one still running
//! ends `canceled`.
//!
//! Auth is `Authorization: Bearer <token>` (or the older `Token <token>`); errors are problem
//! JSON `{"title","detail","status"}` (401, 404, 422 with `invalid_fields`). Throttling answers
//! 429 `{"detail":"Request was throttled. Your rate limit resets in ~30s."}` with no header —
//! the wait is only in the text; over `max_concurrent` predictions wait in `starting` instead.
//!
//! Scenarios: `moderation_input` (as soon as the prediction starts) and `moderation_output`
//! fail with Replicate's "flagged as sensitive (E005)" error; `fail` (and the random failure
//! rate) fail with a model error; `success_without_output` succeeds with `output: null`;
//! `rate_limited` is the 429 above; `out_of_credits` 402 "insufficient credit"; `server_error`
//! 500 on the first create of an idempotency key; `not_found_first_polls` 404 on the first two
//! polls; `url_expired` (or `url_ttl_ms` after the render, standing in for the one-hour data
//! retention) 404 on the delivery link.

use crate::media;
use crate::scenario::Scenario;
use crate::state::{
    idempotency_key, iso8601, lock, origin, scenario_header, unix_ms, Api, Job, Phase, Shared,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deadlines beyond a day are refused.
const MAX_CANCEL_AFTER: Duration = Duration::from_secs(24 * 3600);

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({"title": title, "detail": detail, "status": status.as_u16()})),
    )
        .into_response()
}

fn throttled(wait_s: u64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "detail": format!("Request was throttled. Your rate limit resets in ~{wait_s}s.")
        })),
    )
        .into_response()
}

fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "Not found", "Not found.")
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("Token "))
        })
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() {
        return Err(Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "You did not pass an authentication token",
        )));
    }
    if !(shared.opts.api_keys.is_empty() || shared.opts.api_keys.iter().any(|k| k == key)) {
        return Err(Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "You did not pass a valid authentication token",
        )));
    }
    Ok(key.to_string())
}

/// A Go-style duration (`500ms`, `30s`, `1m`, `1h30m`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    (total.is_finite() && total > 0.0 && total <= MAX_CANCEL_AFTER.as_secs_f64())
        .then(|| Duration::from_secs_f64(total))
}

fn safe(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The 64-hex version id of a model.
fn version_of(seed: u64, model: &str) -> String {
    (0u8..4)
        .map(|i| format!("{:016x}", media::mix(seed, &[model.as_bytes(), &[i]])))
        .collect()
}

pub async fn create_for_model(
    State(shared): State<Arc<Shared>>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    if !safe(&owner) || !safe(&name) {
        return not_found();
    }
    let model = format!("{owner}/{name}");
    let version = version_of(shared.opts.seed, &model);
    create(&shared, model, Some(version), &headers, &body)
}

pub async fn create_for_version(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    create(&shared, String::new(), None, &headers, &body)
}

fn create(
    shared: &Arc<Shared>,
    model: String,
    version: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let key = match authorize(shared, headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let invalid = |detail: &str, fields: Value| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"title": "Input validation failed", "detail": detail, "status": 422, "invalid_fields": fields})),
        )
            .into_response()
    };
    let v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return invalid(
                "The request body must be a JSON object.",
                json!([{"type": "invalid_json", "field": "", "description": "expected a JSON object"}]),
            )
        }
    };
    let (model, version) = match version {
        Some(version) => (model, version),
        None => match v.get("version").and_then(Value::as_str) {
            Some(ver) if safe(ver) => (
                format!("community/version-{}", &ver[..ver.len().min(8)]),
                ver.to_string(),
            ),
            _ => {
                return invalid(
                    "version is required",
                    json!([{"type": "required", "field": "version", "description": "version is required"}]),
                )
            }
        },
    };
    let Some(input) = v.get("input").filter(|i| i.is_object()).cloned() else {
        return invalid(
            "input is required",
            json!([{"type": "required", "field": "input", "description": "input is required and must be an object"}]),
        );
    };
    let prompt = match input.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        _ => {
            return invalid(
                "- input: prompt is required",
                json!([{"type": "required", "field": "input.prompt", "description": "prompt is required"}]),
            )
        }
    };
    let seconds = match input.get("duration") {
        None | Some(Value::Null) => 5,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(d @ 1..=20) => d as u32,
            _ => {
                return invalid(
                    "- input.duration: must be between 1 and 20",
                    json!([{"type": "number_range", "field": "input.duration", "description": "must be between 1 and 20"}]),
                )
            }
        },
        Some(_) => {
            return invalid(
                "- input.duration: Invalid type. Expected: integer, given: string",
                json!([{"type": "invalid_type", "field": "input.duration", "description": "Invalid type. Expected: integer"}]),
            )
        }
    };
    let deadline = match headers.get("cancel-after").map(|h| h.to_str().ok()) {
        None => None,
        Some(text) => match text.and_then(parse_duration) {
            Some(d) => Instant::now().checked_add(d),
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Invalid Cancel-After header",
                    "Cancel-After must be a duration such as 30s, 5m or 1h (at most 24h).",
                )
            }
        },
    };
    let scenario = Scenario::pick(scenario_header(headers), &prompt);
    let id = shared.new_id("");
    let idem = idempotency_key(headers, &id);
    match scenario {
        Scenario::RateLimited => {
            lock(&shared.stats).rate_limited_total += 1;
            return throttled(30);
        }
        Scenario::OutOfCredits => {
            return problem(
                StatusCode::PAYMENT_REQUIRED,
                "Insufficient credit",
                "You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing to purchase credit. Once you purchase credit, please wait a few minutes before trying again.",
            )
        }
        Scenario::ServerError if shared.first_attempt(&idem) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "An unexpected error occurred.",
            )
        }
        _ => {}
    }
    if let Err(wait) = shared.check_rate(&key) {
        return throttled(wait.div_ceil(1000).max(1));
    }
    let now = Instant::now();
    let start = shared.queued_start(&key, now, |j| j.api == Api::Replicate);
    let size = match input.get("aspect_ratio").and_then(Value::as_str) {
        Some("9:16") => "720x1280",
        Some("1:1") => "960x960",
        _ => "1280x720",
    };
    let job = Job {
        model,
        prompt,
        seconds,
        size: size.to_string(),
        external_id: Some(version),
        ..shared.new_job(&id, Api::Replicate, key, scenario, start)
    };
    shared.with_extra(&id, |x| {
        x.input = Some(input);
        x.deadline = deadline;
    });
    shared.count_submission(&idem);
    let base = origin(headers);
    let body = prediction_json(shared, &job, &base, now);
    if let (Some(url), Some(ends)) = (v.get("webhook").and_then(Value::as_str), job.ends_at()) {
        let id = id.clone();
        let url = url.to_string();
        crate::webhook::send_at(
            shared.clone(),
            crate::webhook::Style::Replicate,
            id.clone(),
            url,
            ends,
            move |s| {
                let jobs = lock(&s.jobs);
                jobs.get(&id).map_or(Value::Null, |j| {
                    prediction_json(s, j, &base, Instant::now())
                })
            },
        );
    }
    shared.insert_job(job);
    (StatusCode::CREATED, Json(body)).into_response()
}

fn unix_at(now_unix: i64, now: Instant, at: Instant) -> i64 {
    if at >= now {
        now_unix.saturating_add(at.duration_since(now).as_millis() as i64)
    } else {
        now_unix.saturating_sub(now.duration_since(at).as_millis() as i64)
    }
}

/// The prediction object as it stands at `now`.
fn prediction_json(shared: &Shared, job: &Job, base: &str, now: Instant) -> Value {
    let extra = shared.extra(&job.id);
    let now_unix = unix_ms();
    let iso = |at: Instant| json!(iso8601(unix_at(now_unix, now, at)));
    let started = job.started_at();
    let finished = job.finished_at();
    let get = format!("{base}/replicate/v1/predictions/{}", job.id);
    let mut p = Map::new();
    p.insert("id".into(), json!(job.id));
    p.insert("model".into(), json!(job.model));
    p.insert("version".into(), json!(job.external_id));
    p.insert("input".into(), extra.input.clone().unwrap_or(json!({})));
    p.insert("logs".into(), json!(""));
    p.insert("output".into(), Value::Null);
    p.insert("data_removed".into(), json!(false));
    p.insert("error".into(), Value::Null);
    p.insert("created_at".into(), json!(iso8601(job.created_unix_ms)));
    p.insert(
        "urls".into(),
        json!({
            "get": get,
            "cancel": format!("{get}/cancel"),
            "web": format!("https://replicate.com/p/{}", job.id),
        }),
    );
    let mut set = |k: &str, v: Value| {
        p.insert(k.to_string(), v);
    };
    let stopped_by_deadline = extra
        .deadline
        .filter(|d| *d <= now && finished.is_none_or(|f| *d < f));
    if let Some(ms) = extra.cancelled_ms {
        set("status", json!("canceled"));
        set("completed_at", json!(iso8601(ms)));
        if started <= now && unix_at(now_unix, now, started) < ms {
            set("started_at", iso(started));
        }
    } else if let Some(deadline) = stopped_by_deadline {
        set("completed_at", iso(deadline));
        if deadline <= started {
            set("status", json!("aborted"));
        } else {
            set("status", json!("canceled"));
            set("started_at", iso(started));
        }
    } else {
        match job.phase_after_input_check(now) {
            Phase::Queued => set("status", json!("starting")),
            Phase::Running(p) => {
                set("status", json!("processing"));
                set("started_at", iso(started));
                set("logs", json!(format!("Generating video... {p}%\n")));
            }
            Phase::Succeeded => {
                set("status", json!("succeeded"));
                set("started_at", iso(started));
                if let Some(f) = finished {
                    set("completed_at", iso(f));
                    set(
                        "metrics",
                        json!({"predict_time": f.saturating_duration_since(started).as_secs_f64()}),
                    );
                }
                if job.scenario != Scenario::SuccessWithoutOutput {
                    set(
                        "output",
                        json!(format!("{base}/replicate/delivery/{}/output.mp4", job.id)),
                    );
                }
                set("logs", json!("Generating video... 100%\n"));
            }
            Phase::Failed => {
                set("status", json!("failed"));
                set("started_at", iso(started));
                set(
                    "completed_at",
                    iso(finished.filter(|f| *f <= now).unwrap_or(now)),
                );
                let error = match job.scenario {
                    Scenario::ModerationInput | Scenario::ModerationOutput => {
                        "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
                    }
                    _ => "Prediction failed: the model raised an unexpected error (E6716).",
                };
                set("error", json!(error));
            }
        }
    }
    Value::Object(p)
}

pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let job = {
        let mut jobs = lock(&shared.jobs);
        let Some(job) = jobs.get_mut(&id).filter(|j| j.api == Api::Replicate) else {
            return not_found();
        };
        job.polls += 1;
        if !(job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2) {
            shared.observe_status(job, Instant::now());
        }
        job.clone()
    };
    if job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2 {
        return not_found();
    }
    Json(prediction_json(
        &shared,
        &job,
        &origin(&headers),
        Instant::now(),
    ))
    .into_response()
}

pub async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let Some(job) = lock(&shared.jobs)
        .get(&id)
        .filter(|j| j.api == Api::Replicate)
        .cloned()
    else {
        return not_found();
    };
    let now = Instant::now();
    let base = origin(&headers);
    let current = prediction_json(&shared, &job, &base, now);
    let unfinished = matches!(current["status"].as_str(), Some("starting" | "processing"));
    if !unfinished {
        return Json(current).into_response();
    }
    shared.stop_job(&id, now);
    let job = lock(&shared.jobs).get(&id).cloned().unwrap_or(job);
    Json(prediction_json(&shared, &job, &base, now)).into_response()
}

/// Delivery links (`replicate.delivery` in production): 404 once the data is removed.
pub async fn delivery(
    State(shared): State<Arc<Shared>>,
    Path((id, _name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    shared.count_request();
    let now = Instant::now();
    let job = lock(&shared.jobs).get(&id).cloned();
    let extra = shared.extra(&id);
    let stopped = extra.cancelled_ms.is_some()
        || job
            .as_ref()
            .and_then(|j| {
                extra
                    .deadline
                    .map(|d| j.finished_at().is_none_or(|f| d < f))
            })
            .unwrap_or(false);
    match job {
        Some(j)
            if j.api == Api::Replicate
                && !stopped
                && j.phase_after_input_check(now) == Phase::Succeeded
                && j.scenario != Scenario::SuccessWithoutOutput
                && !j.url_expired(shared.opts.url_ttl_ms, now) =>
        {
            if let Some(r) = j.redirect_loop(&uri) {
                return r;
            }
            ([(header::CONTENT_TYPE, "video/mp4")], j.video_bytes()).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        for bad in ["", "5", "5x", "25h", "-1s", "s", "1.2.3s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
