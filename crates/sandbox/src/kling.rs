//! Kling-shaped routes (docs/providers.md, "kling"): HS256 JWT per request (`iss` = access
//! key, `exp`, `nbf`), the `{code, message, request_id, data}` envelope with errors inside it (even on
//! HTTP 429: 1102 out of credits, 1302 rate, 1303 concurrency), `text2video` and `image2video`
//! whose poll path must match the submit path, `external_task_id` unique per account and usable
//! in place of the task id, `succeed` spelled Kling's way, millisecond timestamps.

use crate::scenario::Scenario;
use crate::state::{lock, unix_ms, Api, Job, Phase, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

const ACTIONS: [&str; 2] = ["text2video", "image2video"];

fn envelope(status: StatusCode, code: u32, message: &str, data: Value) -> Response {
    let request_id = format!("req-{:x}", unix_ms());
    (
        status,
        Json(json!({"code": code, "message": message, "request_id": request_id, "data": data})),
    )
        .into_response()
}

fn fail(status: StatusCode, code: u32, message: &str) -> Response {
    envelope(status, code, message, Value::Null)
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
}

/// Verify the per-request JWT; returns the access key (the account) or the 401 to answer.
#[allow(clippy::result_large_err)]
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return Err(fail(
            StatusCode::UNAUTHORIZED,
            1001,
            "Authorization is empty",
        ));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "iss"]);
    let key = DecodingKey::from_secret(shared.opts.kling_secret_key.as_bytes());
    match decode::<Claims>(token, &key, &validation) {
        Ok(data) if data.claims.iss == shared.opts.kling_access_key => Ok(data.claims.iss),
        Ok(_) => Err(fail(
            StatusCode::UNAUTHORIZED,
            1002,
            "Authorization is invalid",
        )),
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            Err(match e.kind() {
                ErrorKind::ImmatureSignature => fail(
                    StatusCode::UNAUTHORIZED,
                    1003,
                    "Authorization is not yet valid",
                ),
                ErrorKind::ExpiredSignature => {
                    fail(StatusCode::UNAUTHORIZED, 1004, "Authorization has expired")
                }
                _ => fail(StatusCode::UNAUTHORIZED, 1002, "Authorization is invalid"),
            })
        }
    }
}

fn task_data(job: &Job, host: &str, now: Instant) -> Value {
    let phase = job.phase(now);
    let status = match phase {
        Phase::Queued => "submitted",
        Phase::Running(_) => "processing",
        Phase::Succeeded => "succeed",
        Phase::Failed => "failed",
    };
    let updated = match (phase, job.render) {
        (Phase::Succeeded | Phase::Failed, Some(r)) => job.created_unix_ms + r.as_millis() as i64,
        _ => unix_ms(),
    };
    let mut data = json!({
        "task_id": job.id,
        "task_status": status,
        "task_info": {"external_task_id": job.external_id},
        "created_at": job.created_unix_ms,
        "updated_at": updated,
    });
    match phase {
        Phase::Failed => {
            data["task_status_msg"] = json!(if job.scenario == Scenario::ModerationOutput {
                "Failure to pass the risk control system"
            } else {
                "internal error, please retry"
            });
        }
        Phase::Succeeded => {
            let videos = if job.scenario == Scenario::SuccessWithoutOutput {
                json!([])
            } else {
                json!([{"id": format!("{}-v", job.id), "url": format!("http://{host}/kling/files/{}.mp4", job.id), "duration": job.seconds.to_string()}])
            };
            data["task_result"] = json!({"videos": videos});
            data["final_unit_deduction"] = json!("1");
        }
        _ => {}
    }
    data
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string()
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    if shared.opts.submit_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(
            shared.opts.submit_delay_ms,
        ))
        .await;
    }
    if !ACTIONS.contains(&action.as_str()) {
        return fail(StatusCode::NOT_FOUND, 1202, "invalid request method");
    }
    let account = match authorize(&shared, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return fail(
            StatusCode::BAD_REQUEST,
            1200,
            "request body is not valid JSON",
        );
    };
    let prompt = v["prompt"].as_str().unwrap_or("");
    if prompt.trim().is_empty() || prompt.chars().count() > 2500 {
        return fail(
            StatusCode::BAD_REQUEST,
            1201,
            "prompt is required and must be at most 2500 characters",
        );
    }
    let duration = match &v["duration"] {
        Value::Null => "5".to_string(),
        Value::String(s) if s == "5" || s == "10" => s.clone(),
        Value::String(s) => {
            return fail(
                StatusCode::BAD_REQUEST,
                1201,
                &format!("duration {s:?} is not supported; use \"5\" or \"10\""),
            )
        }
        _ => return fail(StatusCode::BAD_REQUEST, 1201, "duration must be a string"),
    };
    if action == "image2video" {
        match v["image"].as_str() {
            None | Some("") => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    1201,
                    "image is required for image2video",
                )
            }
            Some(img) if img.starts_with("data:") => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    1201,
                    "image must be a URL or raw base64 without a data: prefix",
                )
            }
            _ => {}
        }
    }
    let external = v["external_task_id"].as_str().map(str::to_string);
    if let Some(ext) = &external {
        if lock(&shared.external).contains_key(ext) {
            return fail(
                StatusCode::BAD_REQUEST,
                1201,
                "external_task_id already exists",
            );
        }
    }
    let scenario = Scenario::pick(
        headers
            .get("x-sandbox-scenario")
            .and_then(|h| h.to_str().ok()),
        prompt,
    );
    let id = shared.new_id("");
    let idem = headers
        .get("idempotency-key")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| external.clone())
        .unwrap_or_else(|| id.clone());
    match scenario {
        Scenario::ModerationInput => {
            return fail(
                StatusCode::BAD_REQUEST,
                1301,
                "Failure to pass the risk control system",
            )
        }
        Scenario::RateLimited => {
            lock(&shared.stats).rate_limited_total += 1;
            return fail(
                StatusCode::TOO_MANY_REQUESTS,
                1302,
                "request too fast, please reduce the request frequency",
            );
        }
        Scenario::OutOfCredits => {
            return fail(
                StatusCode::TOO_MANY_REQUESTS,
                1102,
                "resource pack depleted or expired",
            )
        }
        Scenario::ServerError if shared.first_attempt(&idem) => {
            return fail(StatusCode::INTERNAL_SERVER_ERROR, 5000, "internal error")
        }
        _ => {}
    }
    if shared.check_rate(&account).is_err() {
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            1302,
            "request too fast, please reduce the request frequency",
        );
    }
    if !shared.check_concurrency(&account) {
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            1303,
            "parallel task over resource pack limit",
        );
    }
    let job = Job {
        model: v["model_name"].as_str().unwrap_or("kling-v1").to_string(),
        prompt: prompt.to_string(),
        seconds: duration.parse().unwrap_or(5),
        size: match v["aspect_ratio"].as_str() {
            Some("16:9") => "1280x720".into(),
            Some("1:1") => "960x960".into(),
            _ => "720x1280".into(),
        },
        external_id: external.clone(),
        ..shared.new_job(
            &id,
            Api::Kling {
                action: action.clone(),
            },
            account,
            scenario,
            Instant::now(),
        )
    };
    if let Some(ext) = external {
        lock(&shared.external).insert(ext, id.clone());
    }
    shared.count_submission(&idem);
    let data = task_data(&job, &host(&headers), Instant::now());
    if let Some(url) = v.get("callback_url").and_then(Value::as_str) {
        // Kling pushes every status change: processing, then the end.
        let ends = job.ends_at();
        for at in [Some(job.started_at()), ends].into_iter().flatten() {
            let (id, host) = (job.id.clone(), host(&headers));
            let style = crate::webhook::Style::Kling;
            crate::webhook::send_at(
                shared.clone(),
                style,
                id.clone(),
                url.into(),
                at,
                move |s| {
                    let jobs = lock(&s.jobs);
                    jobs.get(&id)
                        .map_or(Value::Null, |j| task_data(j, &host, Instant::now()))
                },
            );
        }
    }
    shared.insert_job(job);
    envelope(StatusCode::OK, 0, "SUCCEED", data)
}

pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path((action, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    let now = Instant::now();
    let job_id = lock(&shared.external)
        .get(&id)
        .cloned()
        .unwrap_or(id.clone());
    let mut jobs = lock(&shared.jobs);
    let Some(job) = jobs.get_mut(&job_id) else {
        return fail(StatusCode::NOT_FOUND, 1203, "task not found");
    };
    // The poll path must match the submit path: the task id alone is not enough.
    if job.api != (Api::Kling { action }) {
        return fail(StatusCode::NOT_FOUND, 1203, "task not found");
    }
    job.polls += 1;
    if job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2 {
        return fail(StatusCode::NOT_FOUND, 1203, "task not found");
    }
    shared.observe_status(job, Instant::now());
    envelope(
        StatusCode::OK,
        0,
        "SUCCEED",
        task_data(job, &host(&headers), now),
    )
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path(action): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    let now = Instant::now();
    let h = host(&headers);
    let jobs = lock(&shared.jobs);
    let data: Vec<Value> = jobs
        .values()
        .filter(|j| {
            j.api
                == (Api::Kling {
                    action: action.clone(),
                })
        })
        .map(|j| task_data(j, &h, now))
        .collect();
    envelope(StatusCode::OK, 0, "SUCCEED", json!(data))
}

pub async fn file(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    uri: Uri,
) -> Response {
    shared.count_request();
    let id = file.trim_end_matches(".mp4");
    let now = Instant::now();
    let job = lock(&shared.jobs).get(id).cloned();
    match job {
        Some(j)
            if j.phase(now) == Phase::Succeeded && j.scenario != Scenario::SuccessWithoutOutput =>
        {
            if let Some(r) = j.redirect_loop(&uri) {
                return r;
            }
            if j.url_expired(shared.opts.url_ttl_ms, now) {
                return (StatusCode::FORBIDDEN, "Request has expired").into_response();
            }
            ([(header::CONTENT_TYPE, "video/mp4")], j.video_bytes()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
