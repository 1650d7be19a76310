//! The fal.ai queue (docs/providers.md, "fal"), under `/fal`.
//!
//! `POST /fal/{model_id}[/{subpath}]` (any depth, at least `owner/name`) takes the model's input
//! JSON and answers `{request_id, response_url, status_url, cancel_url, queue_position}`. The
//! queue URLs drop the subpath: `{base}/fal/{owner}/{name}/requests/{id}[/status|/cancel]`;
//! asking with the subpath kept answers 404. `GET …/status[?logs=1]` is `IN_QUEUE` (HTTP 202,
//! with `queue_position`), `IN_PROGRESS` (202) or `COMPLETED` (200) — there is no failed state:
//! a failure only shows at `GET …/requests/{id}` (the result), as 422 with a FastAPI `detail`
//! list (input validation, content policy) or 500 with `detail` and an `X-Fal-Error-Type` header
//! (runner faults). A good result is `{"video":{url, content_type, file_name, file_size}}`, the
//! URL a public media link. `PUT …/cancel` answers 202 `CANCELLATION_REQUESTED` while queued and
//! 400 `ALREADY_COMPLETED` otherwise.
//!
//! Auth is `Authorization: Key <key>` (401 otherwise). fal never refuses for concurrency: over
//! `max_concurrent` a request waits `IN_QUEUE` with its position until a slot frees. The per-key
//! rate option answers 429 `{"detail"}`.
//!
//! Scenarios: `moderation_input` and `moderation_output` complete and then answer 422 with
//! `type: content_policy_violation` at the result; `fail` (and the random failure rate) 500
//! `runner_disconnected`; `success_without_output` a 200 result with `video: null`;
//! `rate_limited` 429; `out_of_credits` 403 "User is locked. Reason: Exhausted balance";
//! `server_error` 503 on the first submit of an idempotency key; `not_found_first_polls` 404 on
//! the first two status polls; `url_expired` (or `url_ttl_ms` after the render) 404 on the media
//! link. A missing `prompt` or a malformed `image_url` is accepted and fails at the result with
//! 422, as fal validates inside the runner.

use crate::scenario::Scenario;
use crate::state::{
    idempotency_key, iso8601, lock, origin, query_param, scenario_header, unix_ms, Api, Job, Phase,
    Shared,
};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Header naming the kind of a failed request.
pub const ERROR_TYPE_HEADER: &str = "x-fal-error-type";

fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Box::new(detail(
            StatusCode::UNAUTHORIZED,
            "Missing Authorization header. Send `Authorization: Key <FAL_KEY>`.",
        )));
    };
    let Some(key) = value
        .strip_prefix("Key ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(Box::new(detail(
            StatusCode::UNAUTHORIZED,
            "Invalid Authorization header format; expected `Key <FAL_KEY>`.",
        )));
    };
    if !(shared.opts.api_keys.is_empty() || shared.opts.api_keys.iter().any(|k| k == key)) {
        return Err(Box::new(detail(
            StatusCode::UNAUTHORIZED,
            "Invalid API key.",
        )));
    }
    Ok(key.to_string())
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The queue URLs of a request (subpath dropped).
fn request_url(base: &str, app: &str, id: &str) -> String {
    format!("{base}/fal/{app}/requests/{id}")
}

fn seconds_of(input: &Value) -> u32 {
    let d = match input.get("duration") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(5.0),
        Some(Value::String(s)) => s.trim().trim_end_matches('s').parse().unwrap_or(5.0),
        _ => 5.0,
    };
    if d.is_finite() {
        d.clamp(1.0, 20.0) as u32
    } else {
        5
    }
}

fn size_of(input: &Value) -> &'static str {
    match input.get("aspect_ratio").and_then(Value::as_str) {
        Some("9:16") => "720x1280",
        Some("1:1") => "960x960",
        _ => "1280x720",
    }
}

/// What the runner would refuse in this input (422 at the result GET).
fn input_problem(input: &Value) -> Option<Value> {
    let prompt_ok = input
        .get("prompt")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.trim().is_empty());
    if !prompt_ok {
        return Some(
            json!([{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]),
        );
    }
    if let Some(url) = input.get("image_url") {
        let ok = url.as_str().is_some_and(|u| {
            u.starts_with("https://")
                || u.starts_with("http://")
                || (u.starts_with("data:image/") && u.contains(";base64,"))
        });
        if !ok {
            return Some(
                json!([{"loc": ["body", "image_url"], "msg": "Input should be a valid URL", "type": "url_parsing"}]),
            );
        }
    }
    None
}

/// `POST /fal/{model_id...}`: queue a request.
pub async fn submit(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 || !segments.iter().all(|s| valid_segment(s)) {
        return detail(
            StatusCode::NOT_FOUND,
            "Application not found: model ids are owner/name[/subpath].",
        );
    }
    if segments.get(2) == Some(&"requests") {
        return detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let key = match authorize(&shared, &headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"detail": [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]})),
            )
                .into_response()
        }
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"detail": [{"loc": ["body"], "msg": format!("JSON decode error: {e}"), "type": "json_invalid"}]})),
            )
                .into_response()
        }
    };
    let app = format!("{}/{}", segments[0], segments[1]);
    let prompt = input
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let scenario = Scenario::pick(scenario_header(&headers), &prompt);
    let id = shared.new_uuid();
    let idem = idempotency_key(&headers, &id);
    match scenario {
        Scenario::RateLimited => {
            lock(&shared.stats).rate_limited_total += 1;
            return detail(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests; please retry shortly.",
            );
        }
        Scenario::OutOfCredits => {
            return detail(
                StatusCode::FORBIDDEN,
                "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.",
            )
        }
        Scenario::ServerError if shared.first_attempt(&idem) => {
            return detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service temporarily unavailable.",
            )
        }
        _ => {}
    }
    if shared.check_rate(&key).is_err() {
        return detail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests; please retry shortly.",
        );
    }
    let now = Instant::now();
    let start = shared.queued_start(&key, now, |j| matches!(j.api, Api::Fal { .. }));
    let job = Job {
        model: path.clone(),
        prompt,
        seconds: seconds_of(&input),
        size: size_of(&input).to_string(),
        ..shared.new_job(
            &id,
            Api::Fal { app: app.clone() },
            key.clone(),
            scenario,
            start,
        )
    };
    shared.with_extra(&id, |x| x.input = Some(input));
    shared.count_submission(&idem);
    shared.insert_job(job.clone());
    let hook = query_param(q.as_deref(), "fal_webhook").filter(|u| !u.is_empty());
    if let (Some(hook), Some(ends)) = (hook, job.ends_at()) {
        let (job_id, base) = (job.id.clone(), origin(&headers));
        let style = crate::webhook::Style::Fal;
        crate::webhook::send_at(shared.clone(), style, id.clone(), hook, ends, move |s| {
            let jobs = lock(&s.jobs);
            jobs.get(&job_id)
                .map_or(Value::Null, |j| callback_body(s, j, &base))
        });
    }
    let url = request_url(&origin(&headers), &app, &id);
    Json(json!({
        "request_id": id,
        "response_url": url,
        "status_url": format!("{url}/status"),
        "cancel_url": format!("{url}/cancel"),
        "queue_position": queue_position(&shared, &job, now),
    }))
    .into_response()
}

/// What fal posts to `fal_webhook` when a request ends.
fn callback_body(shared: &Shared, job: &Job, base: &str) -> Value {
    let succeeded = job.phase_after_input_check(Instant::now()) == Phase::Succeeded;
    let payload = if !succeeded {
        json!({"detail": [{"msg": "The request failed.", "type": "request_failed"}]})
    } else if job.scenario == Scenario::SuccessWithoutOutput {
        json!({"video": null})
    } else {
        json!({"video": {
            "url": format!("{base}/fal-media/{}/output.mp4", job.id),
            "content_type": "video/mp4",
            "file_name": "output.mp4",
            "file_size": job.video_bytes().len(),
        }, "seed": crate::media::mix(shared.opts.seed, &[job.id.as_bytes()]) % 1_000_000})
    };
    json!({
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": if succeeded { "OK" } else { "ERROR" },
        "payload": payload,
        "error": if succeeded { Value::Null } else { json!("Request failed") },
    })
}

/// Requests of the same key waiting before this one.
fn queue_position(shared: &Shared, job: &Job, now: Instant) -> usize {
    let start = job.started_at();
    lock(&shared.jobs)
        .values()
        .filter(|j| j.key == job.key && j.id != job.id && matches!(j.api, Api::Fal { .. }))
        .filter(|j| {
            let s = j.started_at();
            s > now && (s < start || (s == start && j.created_unix_ms < job.created_unix_ms))
        })
        .count()
}

/// A request whose path names the right app.
fn find(shared: &Shared, app: &str, id: &str) -> Option<Job> {
    lock(&shared.jobs)
        .get(id)
        .filter(|j| matches!(&j.api, Api::Fal { app: a } if a == app))
        .cloned()
}

fn not_found(id: &str) -> Response {
    detail(StatusCode::NOT_FOUND, &format!("Request {id} not found."))
}

/// `GET /fal/{owner}/{name}/requests/{id}[/status]`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    let segments: Vec<&str> = path.split('/').collect();
    let (app, id, what) = match segments.as_slice() {
        [owner, name, "requests", id] => (format!("{owner}/{name}"), *id, "result"),
        [owner, name, "requests", id, "status"] => (format!("{owner}/{name}"), *id, "status"),
        s if s.iter().skip(3).any(|x| *x == "requests") => return detail(
            StatusCode::NOT_FOUND,
            "Not Found: status and result URLs take owner/name only, without the model's subpath.",
        ),
        s if s.len() >= 2 => return detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let base = origin(&headers);
    if what == "status" {
        status(&shared, &app, id, &base, q.as_deref())
    } else {
        result(&shared, &app, id, &base)
    }
}

fn status(shared: &Shared, app: &str, id: &str, base: &str, q: Option<&str>) -> Response {
    let job = {
        let mut jobs = lock(&shared.jobs);
        let Some(job) = jobs
            .get_mut(id)
            .filter(|j| matches!(&j.api, Api::Fal { app: a } if a == app))
        else {
            return not_found(id);
        };
        job.polls += 1;
        if !(job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2) {
            shared.observe_status(job, Instant::now());
        }
        job.clone()
    };
    if job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2 {
        return not_found(id);
    }
    let now = Instant::now();
    let url = request_url(base, app, id);
    let with_logs = query_param(q, "logs").as_deref() == Some("1");
    let logs = |lines: &[&str]| {
        if with_logs {
            json!(lines
                .iter()
                .map(|m| json!({"message": m, "level": "INFO", "source": "user", "timestamp": iso8601(unix_ms())}))
                .collect::<Vec<_>>())
        } else {
            Value::Null
        }
    };
    let cancelled = shared.extra(id).cancelled_ms.is_some();
    if !cancelled && now < job.started_at() {
        return (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "IN_QUEUE",
                "queue_position": queue_position(shared, &job, now),
                "response_url": url,
                "status_url": format!("{url}/status"),
                "cancel_url": format!("{url}/cancel"),
            })),
        )
            .into_response();
    }
    match job.phase_after_input_check(now) {
        Phase::Queued | Phase::Running(_) if !cancelled => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "IN_PROGRESS",
                "logs": logs(&["Generating video..."]),
                "response_url": url,
                "status_url": format!("{url}/status"),
                "cancel_url": format!("{url}/cancel"),
            })),
        )
            .into_response(),
        _ => {
            let inference = job.render.map_or(0.0, |r| r.as_secs_f64() * 0.8);
            Json(json!({
                "status": "COMPLETED",
                "logs": logs(&["Generating video...", "Done."]),
                "metrics": {"inference_time": inference},
                "response_url": url,
                "status_url": format!("{url}/status"),
                "cancel_url": format!("{url}/cancel"),
            }))
            .into_response()
        }
    }
}

fn unprocessable(items: Value) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "detail": items })),
    )
        .into_response()
}

fn result(shared: &Shared, app: &str, id: &str, base: &str) -> Response {
    let Some(job) = find(shared, app, id) else {
        return not_found(id);
    };
    let now = Instant::now();
    let extra = shared.extra(id);
    if extra.cancelled_ms.is_some() {
        return (
            StatusCode::BAD_REQUEST,
            [(ERROR_TYPE_HEADER, "request_cancelled")],
            Json(json!({"detail": "Request was cancelled."})),
        )
            .into_response();
    }
    let phase = if now < job.started_at() {
        Phase::Queued
    } else {
        job.phase_after_input_check(now)
    };
    match phase {
        Phase::Queued | Phase::Running(_) => {
            detail(StatusCode::BAD_REQUEST, "Request is still in progress.")
        }
        Phase::Failed => match job.scenario {
            Scenario::ModerationInput => unprocessable(json!([{
                "loc": ["body", "prompt"],
                "msg": "The content could not be processed because it contained material flagged by a content checker.",
                "type": "content_policy_violation",
                "url": "https://docs.fal.ai/errors#content_policy_violation",
                "input": job.prompt,
            }])),
            Scenario::ModerationOutput => unprocessable(json!([{
                "loc": ["body"],
                "msg": "The generated video was flagged by a content checker.",
                "type": "content_policy_violation",
                "url": "https://docs.fal.ai/errors#content_policy_violation",
            }])),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(ERROR_TYPE_HEADER, "runner_disconnected")],
                Json(json!({"detail": "The runner disconnected while processing the request."})),
            )
                .into_response(),
        },
        Phase::Succeeded => {
            if let Some(problem) = extra.input.as_ref().and_then(input_problem) {
                return unprocessable(problem);
            }
            let seed = crate::media::mix(shared.opts.seed, &[job.id.as_bytes()]) % 1_000_000;
            if job.scenario == Scenario::SuccessWithoutOutput {
                return Json(json!({"video": null, "seed": seed})).into_response();
            }
            Json(json!({
                "video": {
                    "url": format!("{base}/fal-media/{}/output.mp4", job.id),
                    "content_type": "video/mp4",
                    "file_name": "output.mp4",
                    "file_size": job.video_bytes().len(),
                },
                "seed": seed,
            }))
            .into_response()
        }
    }
}

/// `PUT /fal/{owner}/{name}/requests/{id}/cancel`.
pub async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    let segments: Vec<&str> = path.split('/').collect();
    let [owner, name, "requests", id, "cancel"] = segments.as_slice() else {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let app = format!("{owner}/{name}");
    let Some(job) = find(&shared, &app, id) else {
        return not_found(id);
    };
    let now = Instant::now();
    let waiting = shared.extra(id).cancelled_ms.is_none() && now < job.started_at();
    if waiting {
        shared.stop_job(id, now);
        return (
            StatusCode::ACCEPTED,
            Json(json!({"status": "CANCELLATION_REQUESTED"})),
        )
            .into_response();
    }
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "ALREADY_COMPLETED"})),
    )
        .into_response()
}

/// Public media links (`v3.fal.media` in production): 404 once the object expired.
pub async fn media(
    State(shared): State<Arc<Shared>>,
    Path((id, _name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    shared.count_request();
    let now = Instant::now();
    let job = lock(&shared.jobs).get(&id).cloned();
    match job {
        Some(j)
            if matches!(j.api, Api::Fal { .. })
                && shared.extra(&id).cancelled_ms.is_none()
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
    fn inputs() {
        assert_eq!(seconds_of(&json!({"duration": "10"})), 10);
        assert_eq!(seconds_of(&json!({"duration": 6})), 6);
        assert_eq!(seconds_of(&json!({"duration": "x"})), 5);
        assert_eq!(seconds_of(&json!({"duration": 1e300})), 20);
        assert!(input_problem(&json!({"prompt": "p"})).is_none());
        assert!(input_problem(&json!({"prompt": ""})).is_some());
        assert!(input_problem(&json!({"prompt": "p", "image_url": 3})).is_some());
        assert!(valid_segment("kling-video") && !valid_segment("..") && !valid_segment("a b"));
    }
}
