//! MiniMax Hailuo video, API v1 (docs/providers.md, "minimax"), under `/minimax`.
//!
//! `POST /v1/video_generation` answers `{"task_id","base_resp"}` with a numeric `task_id`;
//! `GET /v1/query/video_generation?task_id=` reports `Preparing`, `Queueing`, `Processing`, then
//! `Success` with a `file_id` (a decimal string here) or `Fail`; `GET /v1/files/retrieve?file_id=`
//! turns the file id into `file.download_url` (its `file_id` a JSON number), a temporary link
//! fetched without credentials.
//!
//! Every answer is HTTP 200 and errors live in `base_resp.status_code`: 1004 missing key, 2049
//! unknown key, 2013 invalid parameters (a non-integer `duration`, a duration or resolution the
//! model does not render, a missing first frame for an image-to-video model), 1002 rate limit (the
//! `rate_limited` scenario and the per-key rate and concurrency limits: MiniMax has no separate
//! concurrency code), 1008 insufficient balance (`out_of_credits`), 1026 sensitive input
//! (`moderation_input`, refused at submit) and 1000 unknown error (`server_error`, the first
//! submit of an idempotency key). Output moderation is a `Fail` whose `base_resp` carries 1027;
//! `fail` is a plain `Fail`. `success_without_output` reports `Success` with an empty `file_id`.
//! `url_expired` (or `url_ttl_ms` after the render) makes the download link answer 403.
//! `not_found_first_polls` has no MiniMax shape and behaves like `ok`.

use crate::media;
use crate::scenario::Scenario;
use crate::state::{
    idempotency_key, lock, origin, query_param, scenario_header, Api, Job, Phase, Shared,
};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

const MAX_PROMPT_CHARS: usize = 2000;

struct Model {
    name: &'static str,
    /// Resolution and the durations it renders.
    resolutions: &'static [(&'static str, &'static [u32])],
    default_resolution: &'static str,
    needs_image: bool,
}

const HAILUO_23: &[(&str, &[u32])] = &[("768P", &[6, 10]), ("1080P", &[6])];
const HAILUO_02: &[(&str, &[u32])] = &[("512P", &[6, 10]), ("768P", &[6, 10]), ("1080P", &[6])];
const GEN_01: &[(&str, &[u32])] = &[("720P", &[6])];

const MODELS: &[Model] = &[
    Model {
        name: "MiniMax-Hailuo-2.3",
        resolutions: HAILUO_23,
        default_resolution: "768P",
        needs_image: false,
    },
    Model {
        name: "MiniMax-Hailuo-2.3-Fast",
        resolutions: HAILUO_23,
        default_resolution: "768P",
        needs_image: true,
    },
    Model {
        name: "MiniMax-Hailuo-02",
        resolutions: HAILUO_02,
        default_resolution: "768P",
        needs_image: false,
    },
    Model {
        name: "T2V-01-Director",
        resolutions: GEN_01,
        default_resolution: "720P",
        needs_image: false,
    },
    Model {
        name: "T2V-01",
        resolutions: GEN_01,
        default_resolution: "720P",
        needs_image: false,
    },
    Model {
        name: "I2V-01-Director",
        resolutions: GEN_01,
        default_resolution: "720P",
        needs_image: true,
    },
    Model {
        name: "I2V-01-live",
        resolutions: GEN_01,
        default_resolution: "720P",
        needs_image: true,
    },
    Model {
        name: "I2V-01",
        resolutions: GEN_01,
        default_resolution: "720P",
        needs_image: true,
    },
];

/// An answer with `base_resp` (HTTP 200, like every MiniMax answer).
fn base_resp(code: u32, message: &str, mut body: Value) -> Response {
    body["base_resp"] = json!({"status_code": code, "status_msg": message});
    (StatusCode::OK, Json(body)).into_response()
}

fn refuse(code: u32, message: &str) -> Response {
    base_resp(code, message, json!({"task_id": ""}))
}

fn invalid(message: &str) -> Response {
    refuse(2013, &format!("invalid params, {message}"))
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() {
        return Err(Box::new(refuse(
            1004,
            "login fail: Please carry the API secret key in the 'Authorization' field of the request header",
        )));
    }
    if !(shared.opts.api_keys.is_empty() || shared.opts.api_keys.iter().any(|k| k == key)) {
        return Err(Box::new(refuse(2049, "invalid api key")));
    }
    Ok(key.to_string())
}

struct Create {
    model: &'static str,
    prompt: String,
    duration: u32,
    size: String,
}

fn validate(v: &Value) -> Result<Create, String> {
    let Some(obj) = v.as_object() else {
        return Err("body must be a JSON object".into());
    };
    let name = obj.get("model").and_then(Value::as_str).unwrap_or("");
    let Some(model) = MODELS.iter().find(|m| m.name == name) else {
        return Err(format!("model {name:?} is not supported"));
    };
    let prompt = match obj.get("prompt") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("prompt must be a string".into()),
    };
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(format!(
            "prompt is longer than {MAX_PROMPT_CHARS} characters"
        ));
    }
    let image = match obj.get("first_frame_image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("first_frame_image must be a string".into()),
    };
    if let Some(img) = image {
        let ok = img.starts_with("http://")
            || img.starts_with("https://")
            || (img.starts_with("data:image/") && img.contains(";base64,"));
        if !ok {
            return Err("first_frame_image must be a URL or a base64 data URL".into());
        }
    }
    if model.needs_image && image.is_none() {
        return Err(format!("{} requires first_frame_image", model.name));
    }
    if prompt.trim().is_empty() && image.is_none() {
        return Err("prompt is required".into());
    }
    let resolution = match obj.get("resolution") {
        None | Some(Value::Null) => model.default_resolution,
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("resolution must be a string".into()),
    };
    let Some((_, durations)) = model.resolutions.iter().find(|(r, _)| *r == resolution) else {
        return Err(format!(
            "resolution {resolution:?} is not supported by {}",
            model.name
        ));
    };
    let duration = match obj.get("duration") {
        None | Some(Value::Null) => 6,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(d) if durations.iter().any(|x| u64::from(*x) == d) => d as u32,
            _ => {
                return Err(format!(
                    "duration {n} is not supported by {} at {resolution}",
                    model.name
                ))
            }
        },
        Some(_) => return Err("duration must be an integer".into()),
    };
    if let Some(p) = obj.get("prompt_optimizer") {
        if !p.is_boolean() {
            return Err("prompt_optimizer must be a boolean".into());
        }
    }
    let size = match resolution {
        "512P" => "912x512",
        "720P" => "1280x720",
        "768P" => "1366x768",
        _ => "1920x1080",
    };
    Ok(Create {
        model: model.name,
        prompt,
        duration,
        size: size.to_string(),
    })
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    let key = match authorize(&shared, &headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return invalid("body is not valid JSON");
    };
    let create = match validate(&v) {
        Ok(c) => c,
        Err(m) => return invalid(&m),
    };
    let scenario = Scenario::pick(scenario_header(&headers), &create.prompt);
    let id = shared.new_numeric_id();
    let idem = idempotency_key(&headers, &id);
    match scenario {
        Scenario::ModerationInput => return refuse(1026, "input new_sensitive"),
        Scenario::RateLimited => {
            lock(&shared.stats).rate_limited_total += 1;
            return refuse(1002, "rate limit exceeded(RPM)");
        }
        Scenario::OutOfCredits => return refuse(1008, "insufficient balance"),
        Scenario::ServerError if shared.first_attempt(&idem) => {
            return refuse(1000, "unknown error")
        }
        _ => {}
    }
    if shared.check_rate(&key).is_err() || !shared.check_concurrency(&key) {
        return refuse(1002, "rate limit exceeded(RPM)");
    }
    let job = Job {
        model: create.model.to_string(),
        prompt: create.prompt,
        seconds: create.duration,
        size: create.size,
        ..shared.new_job(&id, Api::Minimax, key, scenario, Instant::now())
    };
    shared.count_submission(&idem);
    if let (Some(url), Some(ends)) = (v.get("callback_url").and_then(Value::as_str), job.ends_at())
    {
        let job_id = job.id.clone();
        let style = crate::webhook::Style::Minimax;
        crate::webhook::send_at(
            shared.clone(),
            style,
            id.clone(),
            url.into(),
            ends,
            move |s| {
                let jobs = lock(&s.jobs);
                jobs.get(&job_id)
                    .map_or(Value::Null, |j| callback_body(s, j))
            },
        );
    }
    shared.insert_job(job);
    base_resp(0, "success", json!({ "task_id": id }))
}

/// What MiniMax posts to a callback URL when a task ends.
fn callback_body(shared: &Shared, job: &Job) -> Value {
    // Callbacks say `success`/`failed`/`processing`, in lower case, unlike the query.
    let mut body = json!({"task_id": job.id});
    match job.phase(Instant::now()) {
        Phase::Succeeded if job.scenario != Scenario::SuccessWithoutOutput => {
            body["status"] = json!("success");
            body["file_id"] = json!(file_id(shared, job));
        }
        Phase::Succeeded => {
            body["status"] = json!("success");
            body["file_id"] = json!("");
        }
        Phase::Failed => body["status"] = json!("failed"),
        Phase::Queued | Phase::Running(_) => body["status"] = json!("processing"),
    }
    body["base_resp"] = json!({"status_code": 0, "status_msg": "success"});
    body
}

/// The job's file id (an int64, derived from the job id) and its alias entry.
fn file_id(shared: &Shared, job: &Job) -> String {
    let n = media::mix(shared.opts.seed, &[job.id.as_bytes(), b"minimax-file"]);
    let id = (200_000_000_000_000 + n % 700_000_000_000_000).to_string();
    lock(&shared.aliases).insert(id.clone(), job.id.clone());
    id
}

fn dimensions(job: &Job) -> (u32, u32) {
    job.size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .unwrap_or((1366, 768))
}

pub async fn query(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let Some(task_id) = query_param(q.as_deref(), "task_id").filter(|t| !t.is_empty()) else {
        return invalid("task_id is required");
    };
    let job = {
        let mut jobs = lock(&shared.jobs);
        let Some(job) = jobs.get_mut(&task_id).filter(|j| j.api == Api::Minimax) else {
            return base_resp(
                2013,
                "invalid params, task not found",
                json!({"task_id": task_id, "status": ""}),
            );
        };
        job.polls += 1;
        shared.observe_status(job, Instant::now());
        job.clone()
    };
    let now = Instant::now();
    let mut body = json!({"task_id": job.id});
    match job.phase(now) {
        Phase::Queued => {
            let early = match job.render {
                Some(r) => now.saturating_duration_since(job.created) < r / 10,
                None => now.saturating_duration_since(job.created).as_millis() < 100,
            };
            body["status"] = json!(if early { "Preparing" } else { "Queueing" });
        }
        Phase::Running(_) => body["status"] = json!("Processing"),
        Phase::Succeeded => {
            body["status"] = json!("Success");
            if job.scenario == Scenario::SuccessWithoutOutput {
                body["file_id"] = json!("");
            } else {
                let (w, h) = dimensions(&job);
                body["file_id"] = json!(file_id(&shared, &job));
                body["video_width"] = json!(w);
                body["video_height"] = json!(h);
            }
        }
        Phase::Failed => {
            body["status"] = json!("Fail");
            body["file_id"] = json!("");
            if job.scenario == Scenario::ModerationOutput {
                return base_resp(1027, "output new_sensitive", body);
            }
        }
    }
    base_resp(0, "success", body)
}

pub async fn retrieve(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let Some(file_id) = query_param(q.as_deref(), "file_id") else {
        return invalid("file_id is required");
    };
    let Ok(number) = file_id.parse::<u64>() else {
        return invalid("file_id must be an integer");
    };
    let job_id = lock(&shared.aliases).get(&file_id).cloned();
    let job = job_id.and_then(|id| lock(&shared.jobs).get(&id).cloned());
    let Some(job) = job.filter(|j| j.api == Api::Minimax) else {
        return base_resp(1000, "file not found", json!({"file": null}));
    };
    let finished_s = job.render.map_or(job.created_unix_ms, |r| {
        job.created_unix_ms + r.as_millis() as i64
    }) / 1000;
    let sig = shared.sign(&[job.id.as_bytes(), b"minimax"]);
    base_resp(
        0,
        "success",
        json!({
            "file": {
                "file_id": number,
                "bytes": job.video_bytes().len(),
                "created_at": finished_s,
                "filename": "output_aigc.mp4",
                "purpose": "video_generation",
                "download_url": format!("{}/minimax/files/{}.mp4?sig={sig}", origin(&headers), job.id),
            }
        }),
    )
}

/// The temporary download link: 403 once expired.
pub async fn file(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    RawQuery(q): RawQuery,
    uri: Uri,
) -> Response {
    shared.count_request();
    let id = file.strip_suffix(".mp4").unwrap_or(&file);
    let denied = |m: &str| {
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/xml")],
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{m}</Message></Error>"),
        )
            .into_response()
    };
    if query_param(q.as_deref(), "sig").as_deref()
        != Some(shared.sign(&[id.as_bytes(), b"minimax"]).as_str())
    {
        return denied("Signature does not match");
    }
    let now = Instant::now();
    let job = lock(&shared.jobs).get(id).cloned();
    match job {
        Some(j)
            if j.api == Api::Minimax
                && j.phase(now) == Phase::Succeeded
                && j.scenario != Scenario::SuccessWithoutOutput =>
        {
            if let Some(r) = j.redirect_loop(&uri) {
                return r;
            }
            if j.url_expired(shared.opts.url_ttl_ms, now) {
                return denied("Request has expired");
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
    fn validation_table() {
        let c = validate(
            &json!({"model":"MiniMax-Hailuo-02","prompt":"p","duration":10,"resolution":"768P"}),
        )
        .expect("ok");
        assert_eq!((c.duration, c.size.as_str()), (10, "1366x768"));
        for body in [
            json!({"model":"MiniMax-Hailuo-02","prompt":"p","duration":"6"}),
            json!({"model":"MiniMax-Hailuo-02","prompt":"p","duration":10,"resolution":"1080P"}),
            json!({"model":"MiniMax-Hailuo-02","prompt":"p","duration":5}),
            json!({"model":"MiniMax-Hailuo-2.3","prompt":"p","resolution":"512P"}),
            json!({"model":"I2V-01","prompt":"p"}),
            json!({"model":"nope","prompt":"p"}),
            json!({"model":"T2V-01"}),
            json!({"model":"T2V-01","prompt":"p","first_frame_image":"ftp://x"}),
            json!([]),
        ] {
            assert!(validate(&body).is_err(), "{body}");
        }
        assert!(
            validate(&json!({"model":"I2V-01","first_frame_image":"https://x.test/a.png"})).is_ok()
        );
    }
}
