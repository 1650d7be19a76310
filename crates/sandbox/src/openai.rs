//! OpenAI-shaped routes: `/v1/videos` (Sora and the relays that copy it; multipart and JSON),
//! `/v1/images/generations` and `/v1/audio/speech`, with OpenAI's error envelope, bearer auth,
//! `retry-after`/`retry-after-ms` on 429 and the `openai-poll-after-ms` hint (docs/providers.md,
//! "openai-videos", "openai-images", "openai-speech").

use crate::media;
use crate::scenario::Scenario;
use crate::state::{lock, unix_ms, Api, Job, Phase, Shared};
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

const SECONDS: [&str; 5] = ["4", "8", "12", "16", "20"];
const SIZES: [&str; 4] = ["720x1280", "1280x720", "1024x1792", "1792x1024"];
const PRO_SIZES: [&str; 2] = ["1080x1920", "1920x1080"];
/// Largest request body accepted (an input image plus fields).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn error(status: StatusCode, code: &str, typ: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": typ, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn rate_limited(wait_ms: u64) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        "requests",
        "Rate limit reached for requests. Please try again later.",
    );
    let h = r.headers_mut();
    h.insert("retry-after-ms", HeaderValue::from(wait_ms));
    h.insert("retry-after", HeaderValue::from(wait_ms.div_ceil(1000)));
    r
}

/// The bearer key, or the 401 to answer. (A handler helper's natural error is the response it
/// should send; it is built once per bad request, so its size does not matter.)
#[allow(clippy::result_large_err)]
pub fn bearer(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let known = shared.opts.api_keys.is_empty() || shared.opts.api_keys.iter().any(|k| k == key);
    if key.is_empty() || !known {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "invalid_request_error",
            "Incorrect API key provided.",
        ));
    }
    Ok(key.to_string())
}

fn scenario_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-sandbox-scenario")
        .and_then(|v| v.to_str().ok())
}

fn idempotency(headers: &HeaderMap, fallback: &str) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| fallback.to_string())
}

/// The create fields of `POST /v1/videos`, from multipart or JSON.
struct VideoCreate {
    prompt: String,
    model: String,
    seconds: String,
    size: String,
}

async fn read_create(req: Request) -> Result<VideoCreate, Response> {
    let bad = |m: &str| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid_request_error",
            m,
        )
    };
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    let mut out = VideoCreate {
        prompt: String::new(),
        model: "sora-2".into(),
        seconds: "4".into(),
        size: "720x1280".into(),
    };
    if is_multipart {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| bad(&format!("invalid multipart body: {e}")))?;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| bad(&format!("invalid multipart body: {e}")))?
        {
            let name = field.name().unwrap_or("").to_string();
            let data = field
                .bytes()
                .await
                .map_err(|e| bad(&format!("invalid multipart field {name}: {e}")))?;
            let text = || String::from_utf8_lossy(&data).into_owned();
            match name.as_str() {
                "prompt" => out.prompt = text(),
                "model" => out.model = text(),
                "seconds" => out.seconds = text(),
                "size" => out.size = text(),
                "input_reference" if data.is_empty() => {
                    return Err(bad("input_reference is empty"))
                }
                _ => {}
            }
        }
    } else {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| bad(&format!("unreadable body: {e}")))?;
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| bad(&format!("invalid JSON body: {e}")))?;
        out.prompt = v["prompt"].as_str().unwrap_or("").to_string();
        if let Some(m) = v["model"].as_str() {
            out.model = m.to_string();
        }
        match &v["seconds"] {
            Value::Null => {}
            Value::String(s) => out.seconds = s.clone(),
            other => {
                return Err(bad(&format!(
                    "Invalid type for 'seconds': expected one of \"4\", \"8\", \"12\", \"16\", \"20\" as a string, got {other}"
                )))
            }
        }
        if let Some(s) = v["size"].as_str() {
            out.size = s.to_string();
        }
        if let Some(r) = v.get("input_reference") {
            let has_one = r.get("image_url").is_some() != r.get("file_id").is_some();
            if !has_one {
                return Err(bad(
                    "input_reference must have exactly one of image_url or file_id",
                ));
            }
        }
    }
    if out.prompt.trim().is_empty() {
        return Err(bad("prompt is required"));
    }
    if !SECONDS.contains(&out.seconds.as_str()) {
        return Err(bad(&format!(
            "Invalid 'seconds': {:?}; allowed: 4, 8, 12, 16, 20",
            out.seconds
        )));
    }
    let pro = out.model.starts_with("sora-2-pro");
    let size_ok =
        SIZES.contains(&out.size.as_str()) || (pro && PRO_SIZES.contains(&out.size.as_str()));
    if !size_ok {
        return Err(bad(&format!("Invalid 'size': {:?}", out.size)));
    }
    Ok(out)
}

pub async fn create_video(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.count_request();
    if shared.opts.submit_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(
            shared.opts.submit_delay_ms,
        ))
        .await;
    }
    let headers = req.headers().clone();
    let key = match bearer(&shared, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let create = match read_create(req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let scenario = Scenario::pick(scenario_header(&headers), &create.prompt);
    let id = shared.new_id("video_");
    let idem = idempotency(&headers, &id);
    if let Some(r) = refuse(&shared, &key, scenario, &idem) {
        return r;
    }
    let job = Job {
        model: create.model,
        prompt: create.prompt,
        seconds: create.seconds.parse().unwrap_or(4),
        size: create.size,
        ..shared.new_job(&id, Api::OpenaiVideo, key, scenario, Instant::now())
    };
    shared.count_submission(&idem);
    let body = video_json(&shared, &job, Instant::now());
    shared.insert_job(job);
    (StatusCode::OK, Json(body)).into_response()
}

/// Submit-time refusals shared by the OpenAI routes: scenario, rate and concurrency limits.
fn refuse(shared: &Shared, key: &str, scenario: Scenario, idem: &str) -> Option<Response> {
    let scenario = if shared.out_of_credits(key) {
        Scenario::OutOfCredits
    } else {
        scenario
    };
    match scenario {
        Scenario::ModerationInput => {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "moderation_blocked",
                "invalid_request_error",
                "Your request was blocked by our moderation system.",
            ))
        }
        Scenario::RateLimited => {
            lock(&shared.stats).rate_limited_total += 1;
            return Some(rate_limited(1_000));
        }
        Scenario::OutOfCredits => {
            return Some(error(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            ))
        }
        Scenario::ServerError if shared.first_attempt(idem) => {
            return Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "server_error",
                "The server had an error.",
            ))
        }
        _ => {}
    }
    if let Err(wait) = shared.check_rate(key) {
        return Some(rate_limited(wait));
    }
    if !shared.check_concurrency(key) {
        return Some(rate_limited(1_000));
    }
    None
}

fn video_json(shared: &Shared, job: &Job, now: Instant) -> Value {
    let phase = job.phase(now);
    let (status, progress) = match phase {
        Phase::Queued => ("queued", 0),
        Phase::Running(p) => ("in_progress", p.min(99)),
        Phase::Succeeded => ("completed", 100),
        Phase::Failed => ("failed", 100),
    };
    let done_secs =
        |j: &Job| (j.created_unix_ms + j.render.map(|r| r.as_millis() as i64).unwrap_or(0)) / 1000;
    let error = match (phase, job.scenario) {
        (Phase::Failed, Scenario::ModerationOutput) => {
            json!({"code": "moderation_blocked", "message": "The generated video was blocked by our moderation system."})
        }
        (Phase::Failed, _) => {
            json!({"code": "internal_error", "message": "Video generation failed."})
        }
        _ => Value::Null,
    };
    let finished = matches!(phase, Phase::Succeeded | Phase::Failed);
    json!({
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": status,
        "progress": progress,
        "created_at": job.created_unix_ms / 1000,
        "completed_at": if finished { json!(done_secs(job)) } else { Value::Null },
        "expires_at": match (finished, shared.opts.url_ttl_ms) {
            (true, Some(ttl)) => json!(done_secs(job) + (ttl / 1000) as i64),
            (true, None) => json!(done_secs(job) + 3600),
            _ => Value::Null,
        },
        "seconds": job.seconds.to_string(),
        "size": job.size,
        "prompt": job.prompt,
        "remixed_from_video_id": null,
        "error": error,
    })
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "invalid_request_error",
        &format!("Video with id '{what}' not found."),
    )
}

pub async fn get_video(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    shared.count_request();
    if let Err(r) = bearer(&shared, &headers) {
        return r;
    }
    let now = Instant::now();
    let mut jobs = lock(&shared.jobs);
    let Some(job) = jobs.get_mut(&id).filter(|j| j.api == Api::OpenaiVideo) else {
        return not_found(&id);
    };
    job.polls += 1;
    if job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2 {
        return not_found(&id);
    }
    shared.observe_status(job, now);
    let body = video_json(&shared, job, now);
    let mut r = (StatusCode::OK, Json(body)).into_response();
    r.headers_mut()
        .insert("openai-poll-after-ms", HeaderValue::from(200u32));
    r
}

pub async fn video_content(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    shared.count_request();
    if let Err(r) = bearer(&shared, &headers) {
        return r;
    }
    let now = Instant::now();
    let job = lock(&shared.jobs).get(&id).cloned();
    let Some(job) = job.filter(|j| j.api == Api::OpenaiVideo) else {
        return not_found(&id);
    };
    if job.phase(now) != Phase::Succeeded
        || job.scenario == Scenario::SuccessWithoutOutput
        || job.url_expired(shared.opts.url_ttl_ms, now)
    {
        return not_found(&id);
    }
    if let Some(r) = job.redirect_loop(&uri) {
        return r;
    }
    ([(header::CONTENT_TYPE, "video/mp4")], job.video_bytes()).into_response()
}

pub async fn list_videos(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.count_request();
    let key = match bearer(&shared, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let now = Instant::now();
    let jobs = lock(&shared.jobs);
    let mut data: Vec<(i64, Value)> = jobs
        .values()
        .filter(|j| j.api == Api::OpenaiVideo && j.key == key)
        .map(|j| (j.created_unix_ms, video_json(&shared, j, now)))
        .collect();
    data.sort_by_key(|d| std::cmp::Reverse(d.0));
    let data: Vec<Value> = data.into_iter().map(|(_, v)| v).collect();
    Json(json!({"object": "list", "data": data, "has_more": false})).into_response()
}

fn image_size(size: &str) -> (u32, u32) {
    size.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .filter(|(w, h): &(u32, u32)| *w > 0 && *h > 0 && *w <= 4096 && *h <= 4096)
        .unwrap_or((1024, 1024))
}

pub async fn generate_image(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    let key = match bearer(&shared, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid_request_error",
            "invalid JSON body",
        );
    };
    let prompt = v["prompt"].as_str().unwrap_or("");
    if prompt.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid_request_error",
            "prompt is required",
        );
    }
    let model = v["model"].as_str().unwrap_or("gpt-image-1");
    let scenario = Scenario::pick(scenario_header(&headers), prompt);
    let id = shared.new_id("img_");
    let idem = idempotency(&headers, &id);
    if scenario == Scenario::ModerationInput {
        return error(
            StatusCode::BAD_REQUEST,
            "moderation_blocked",
            "image_generation_user_error",
            "Your request was rejected by the safety system.",
        );
    }
    if let Some(r) = refuse(&shared, &key, scenario, &idem) {
        return r;
    }
    shared.count_submission(&idem);
    let (w, h) = image_size(v["size"].as_str().unwrap_or("1024x1024"));
    let colour = media::colour_from(media::mix(shared.opts.seed, &[prompt.as_bytes()]));
    let png = media::png_solid(w.min(256), h.min(256), colour, &id);
    let created = unix_ms() / 1000;
    let wants_url = model.starts_with("dall-e") && v["response_format"].as_str() == Some("url");
    if wants_url {
        lock(&shared.files).insert(id.clone(), png);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let url = format!("http://{host}/openai/files/{id}.png");
        return Json(json!({"created": created, "data": [{"url": url, "revised_prompt": prompt}]}))
            .into_response();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    Json(json!({
        "created": created,
        "data": [{"b64_json": b64}],
        "output_format": "png",
        "size": format!("{w}x{h}"),
        "usage": {
            "input_tokens": prompt.len() / 4,
            "output_tokens": 272,
            "total_tokens": prompt.len() / 4 + 272,
            "input_tokens_details": {"text_tokens": prompt.len() / 4, "image_tokens": 0},
        },
    }))
    .into_response()
}

pub async fn image_file(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    shared.count_request();
    let id = file.trim_end_matches(".png");
    match lock(&shared.files).get(id) {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn speech(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    let key = match bearer(&shared, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let bad = |m: &str| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid_request_error",
            m,
        )
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad("invalid JSON body");
    };
    let input = v["input"].as_str().unwrap_or("");
    if input.trim().is_empty() {
        return bad("input is required");
    }
    if input.chars().count() > 4096 {
        return bad("input is longer than 4096 characters");
    }
    let format = v["response_format"].as_str().unwrap_or("mp3");
    if format != "wav" && format != "mp3" {
        return bad("the sandbox serves response_format wav or mp3");
    }
    let scenario = Scenario::pick(scenario_header(&headers), input);
    let id = shared.new_id("speech_");
    let idem = idempotency(&headers, &id);
    if let Some(r) = refuse(&shared, &key, scenario, &idem) {
        return r;
    }
    shared.count_submission(&idem);
    let spec = media::AudioSpec {
        duration_ms: (input.chars().count() as u32 * 60).clamp(500, 10_000),
        tag: &id,
    };
    if format == "wav" {
        (
            [(header::CONTENT_TYPE, "audio/wav")],
            media::wav_tone(&spec),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "audio/mpeg")],
            media::mp3_silence(&spec),
        )
            .into_response()
    }
}
