//! Runway-shaped routes and the CometAPI passthrough of them
//! (docs/providers.md, "runway").
//!
//! Native, under `/runway`: `POST /v1/image_to_video` and `/v1/text_to_video` answer `{"id"}`;
//! `GET /v1/tasks/{id}` is the task, discriminated by `status` (`PENDING`, `THROTTLED`,
//! `RUNNING` with a 0–1 `progress`, `SUCCEEDED` with `output[]`, `FAILED` with `failure` and
//! `failureCode`, `CANCELLED`), with an ISO-8601 `createdAt`; `DELETE /v1/tasks/{id}` cancels an
//! unfinished task and deletes a finished one (204 either way). Every request needs
//! `X-Runway-Version: 2024-11-06` and a bearer key. Bodies are camelCase and validated per model
//! like Runway's strict schema: unknown keys are refused, `ratio` is a pixel string from the
//! model's list, `duration` an integer from the model's range, `promptImage` an HTTPS URL (a
//! domain, not an IP), a `runway://` URI or a base64 `data:` URI of at most 5 MB. Errors are
//! `{"error": "..."}` (400 input, 401 key, 404 unknown task).
//!
//! Limits the Runway way: over `max_concurrent` a task is accepted and waits as `THROTTLED` until
//! one of the key's renders finishes; HTTP 429 only means the rolling daily generation cap, which
//! the per-key rate option and the `rate_limited` scenario stand in for (Runway has no
//! per-second limit).
//!
//! Scenarios: `moderation_input` fails the task with `SAFETY.INPUT.TEXT` as soon as it leaves
//! the queue, `moderation_output` with `SAFETY.OUTPUT.VIDEO`, `fail` (and the random failure
//! rate) with `INTERNAL.BAD_OUTPUT.CODE01`; `out_of_credits` is Runway's 400 "You do not have
//! enough credits to run this task."; `server_error` answers the first submit of an idempotency
//! key with 503; `success_without_output` succeeds with an empty `output`; `not_found_first_polls`
//! answers the first two polls with 404 (relay: `task_not_exist`).
//!
//! Output URLs are signed by the sandbox and expire `url_ttl_ms` (default 24 h) after they were
//! handed out, answering 403 afterwards. Every task GET signs a fresh URL, so a client that
//! re-polls after an expired download gets a working one; with `url_expired` the first URL handed
//! out is already expired and later ones work.
//!
//! The relay, under `/comet/runwayml`, takes the same requests (the CometAPI key as bearer, the
//! version header still required) and answers create with `{"id"}`. Its task GET always wraps
//! the native task in CometAPI's envelope `{"code":"success","message":"","data":{task_id,
//! action, status (QUEUED/IN_PROGRESS/SUCCESS/FAILURE), fail_reason, submit_time, start_time,
//! finish_time, progress: "45%", data: {native task}}}`, and its errors use the OpenAI-like
//! envelope `{"error":{"message","type","code"}}` (429 is the relay's own, retryable rate limit).
//! An unknown or not-yet-visible task is HTTP 400 `{"code":"task_not_exist",...}`.

use crate::scenario::Scenario;
use crate::state::{
    idempotency_key, iso8601, lock, origin, query_param, scenario_header, unix_ms, Api, Job, Phase,
    Shared,
};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

/// The API version Runway's SDK sends; the only one accepted.
pub const VERSION: &str = "2024-11-06";
const ACTIONS: [&str; 2] = ["image_to_video", "text_to_video"];
const GEN4_RATIOS: &[&str] = &[
    "1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672",
];
const VEO_RATIOS: &[&str] = &["1280:720", "720:1280", "1080:1920", "1920:1080"];
const GEN3_RATIOS: &[&str] = &["1280:768", "768:1280"];
const ANY_RATIOS: &[&str] = &[
    "1280:720",
    "720:1280",
    "1104:832",
    "960:960",
    "832:1104",
    "1584:672",
    "1080:1920",
    "1920:1080",
];
/// Longest `promptText`, in UTF-16 code units.
const MAX_PROMPT_UNITS: usize = 1000;
/// Largest `data:` URI accepted in `promptImage` (5 MB of image, base64-encoded).
const MAX_DATA_URI: usize = 5 * 1024 * 1024 / 3 * 4 + 256;
const DEFAULT_URL_TTL_MS: u64 = 24 * 3600 * 1000;

struct Model {
    name: &'static str,
    ratios: &'static [&'static str],
    durations: std::ops::RangeInclusive<u32>,
    /// Only these durations within the range (empty: all of it).
    only: &'static [u32],
    text_to_video: bool,
    /// Veo models behind Runway also take `negativePrompt` and `audio`.
    veo: bool,
}

const MODELS: &[Model] = &[
    Model {
        name: "gen4.5",
        ratios: GEN4_RATIOS,
        durations: 2..=10,
        only: &[],
        text_to_video: true,
        veo: false,
    },
    Model {
        name: "gen4_turbo",
        ratios: GEN4_RATIOS,
        durations: 2..=10,
        only: &[],
        text_to_video: false,
        veo: false,
    },
    Model {
        name: "gen3a_turbo",
        ratios: GEN3_RATIOS,
        durations: 5..=10,
        only: &[5, 10],
        text_to_video: false,
        veo: false,
    },
    Model {
        name: "veo3",
        ratios: VEO_RATIOS,
        durations: 8..=8,
        only: &[],
        text_to_video: true,
        veo: true,
    },
    Model {
        name: "veo3.1",
        ratios: VEO_RATIOS,
        durations: 4..=8,
        only: &[4, 6, 8],
        text_to_video: true,
        veo: true,
    },
    Model {
        name: "veo3.1_fast",
        ratios: VEO_RATIOS,
        durations: 4..=8,
        only: &[4, 6, 8],
        text_to_video: true,
        veo: true,
    },
    Model {
        name: "seedance2",
        ratios: ANY_RATIOS,
        durations: 2..=15,
        only: &[],
        text_to_video: true,
        veo: false,
    },
    Model {
        name: "happyhorse_1_0",
        ratios: ANY_RATIOS,
        durations: 2..=15,
        only: &[],
        text_to_video: true,
        veo: false,
    },
    Model {
        name: "gemini_omni_flash",
        ratios: ANY_RATIOS,
        durations: 2..=15,
        only: &[],
        text_to_video: true,
        veo: false,
    },
];

impl Model {
    fn allows(&self, d: u32) -> bool {
        self.durations.contains(&d) && (self.only.is_empty() || self.only.contains(&d))
    }
}

// ---------------------------------------------------------------------------------------------
// Error shapes
// ---------------------------------------------------------------------------------------------

/// An error in the native shape (`{"error": text}`) or the relay's OpenAI-like envelope.
fn error(relay: bool, status: StatusCode, code: &str, message: &str) -> Response {
    let body = if relay {
        json!({"error": {"message": message, "type": "comet_api_error", "code": code}})
    } else {
        json!({"error": message})
    };
    (status, Json(body)).into_response()
}

fn bad_request(relay: bool, message: &str) -> Response {
    error(relay, StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// Native: the rolling daily cap. Relay: its own per-key rate limit (retryable).
fn too_many(relay: bool) -> Response {
    if relay {
        let mut r = error(
            true,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Rate limit reached for this token, please retry later.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else {
        error(
            false,
            StatusCode::TOO_MANY_REQUESTS,
            "daily_limit",
            "You have exceeded your daily generation limit for this model. The limit applies to a rolling 24-hour window.",
        )
    }
}

fn no_credits(relay: bool) -> Response {
    if relay {
        error(
            true,
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "Insufficient account balance, please top up.",
        )
    } else {
        error(
            false,
            StatusCode::BAD_REQUEST,
            "insufficient_credits",
            "You do not have enough credits to run this task.",
        )
    }
}

fn overloaded(relay: bool) -> Response {
    error(
        relay,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        "The service is temporarily overloaded; please retry.",
    )
}

/// An unknown (or not yet visible) task: 404 natively, CometAPI's `task_not_exist` on the relay.
fn task_missing(relay: bool) -> Response {
    if relay {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "task_not_exist", "message": "task_not_exist", "data": null})),
        )
            .into_response()
    } else {
        error(false, StatusCode::NOT_FOUND, "not_found", "Task not found.")
    }
}

/// Bearer key and API version; the key, or the answer to send.
fn gate(shared: &Shared, headers: &HeaderMap, relay: bool) -> Result<String, Box<Response>> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() {
        return Err(Box::new(error(
            relay,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "No API key provided. Send it as `Authorization: Bearer <key>`.",
        )));
    }
    let known = shared.opts.api_keys.is_empty() || shared.opts.api_keys.iter().any(|k| k == key);
    if !known {
        return Err(Box::new(error(
            relay,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key.",
        )));
    }
    match headers
        .get("x-runway-version")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None => Err(Box::new(bad_request(
            relay,
            "The X-Runway-Version header is required (use 2024-11-06).",
        ))),
        Some(v) if v.trim() != VERSION => Err(Box::new(bad_request(
            relay,
            &format!(
                "Unsupported X-Runway-Version {:?}; use {VERSION}.",
                v.trim()
            ),
        ))),
        Some(_) => Ok(key.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

struct Create {
    model: &'static str,
    prompt: String,
    /// `WxH`, from the pixel-string ratio.
    size: String,
    duration: u32,
}

fn check_image_uri(uri: &str) -> Result<(), String> {
    if let Some(rest) = uri.strip_prefix("data:") {
        if uri.len() > MAX_DATA_URI {
            return Err("promptImage: data URIs may be at most 5 MB".into());
        }
        let Some((mime, data)) = rest.split_once(";base64,") else {
            return Err("promptImage: a data URI must be base64 encoded".into());
        };
        if !mime.starts_with("image/") {
            return Err(format!("promptImage: {mime:?} is not an image type"));
        }
        return match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(bytes) if !bytes.is_empty() => Ok(()),
            _ => Err("promptImage: the data URI is not valid base64".into()),
        };
    }
    if uri.starts_with("runway://") {
        return Ok(());
    }
    let Some(rest) = uri.strip_prefix("https://") else {
        return Err(
            "promptImage: must be an HTTPS URL, a runway:// upload URI or a data URI".into(),
        );
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .split(':')
        .next()
        .unwrap_or("");
    let is_ip = authority.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
    if host.is_empty() || is_ip || !host.contains('.') {
        return Err("promptImage: URLs must name a domain, not an IP address".into());
    }
    Ok(())
}

fn validate(action: &str, v: &Value) -> Result<Create, String> {
    let Some(obj) = v.as_object() else {
        return Err("body: expected a JSON object".into());
    };
    let model_name = match obj.get("model") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("model: expected a string".into()),
        None => return Err("model: required".into()),
    };
    let Some(model) = MODELS.iter().find(|m| m.name == model_name) else {
        let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        return Err(format!(
            "model: invalid value {model_name:?}; expected one of {}",
            names.join(", ")
        ));
    };
    if action == "text_to_video" && !model.text_to_video {
        return Err(format!(
            "model: {model_name} does not support text_to_video"
        ));
    }
    let mut allowed = vec![
        "model",
        "promptText",
        "ratio",
        "duration",
        "seed",
        "contentModeration",
    ];
    if action == "image_to_video" {
        allowed.push("promptImage");
    }
    if model.veo {
        allowed.extend(["negativePrompt", "audio"]);
    }
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "Unrecognized key(s) in object: {}",
            unknown
                .iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let prompt = match obj.get("promptText") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("promptText: expected a string".into()),
    };
    if prompt.encode_utf16().count() > MAX_PROMPT_UNITS {
        return Err(format!(
            "promptText: must be at most {MAX_PROMPT_UNITS} UTF-16 code units"
        ));
    }
    if prompt.trim().is_empty() && (action == "text_to_video" || model.name == "gen4.5") {
        return Err("promptText: required for this model and endpoint".into());
    }
    let ratio = match obj.get("ratio") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("ratio: expected a string such as \"1280:720\"".into()),
        None => return Err("ratio: required".into()),
    };
    if !model.ratios.contains(&ratio) {
        return Err(format!(
            "ratio: {ratio:?} is not supported by {}; expected one of {}",
            model.name,
            model.ratios.join(", ")
        ));
    }
    let duration = match obj.get("duration") {
        None => {
            let d = *model.durations.end();
            if model.allows(d) {
                d
            } else {
                *model.durations.start()
            }
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(d) if d <= u64::from(u32::MAX) && model.allows(d as u32) => d as u32,
            _ => {
                return Err(format!(
                    "duration: {n} is not supported by {} ({}-{} seconds{})",
                    model.name,
                    model.durations.start(),
                    model.durations.end(),
                    if model.only.is_empty() {
                        String::new()
                    } else {
                        format!(", one of {:?}", model.only)
                    }
                ))
            }
        },
        Some(Value::String(_)) => {
            return Err("duration: expected an integer, received a string".into())
        }
        Some(_) => return Err("duration: expected an integer".into()),
    };
    if let Some(seed) = obj.get("seed") {
        if seed.as_u64().is_none_or(|s| s > u64::from(u32::MAX)) {
            return Err("seed: expected an integer between 0 and 4294967295".into());
        }
    }
    if let Some(cm) = obj.get("contentModeration") {
        let ok = cm.as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| {
                k == "publicFigureThreshold" && matches!(v.as_str(), Some("auto" | "low"))
            })
        });
        if !ok {
            return Err(
                "contentModeration: expected {\"publicFigureThreshold\": \"auto\" | \"low\"}"
                    .into(),
            );
        }
    }
    if let Some(n) = obj.get("negativePrompt") {
        if !n.is_string() {
            return Err("negativePrompt: expected a string".into());
        }
    }
    if let Some(a) = obj.get("audio") {
        if !a.is_boolean() {
            return Err("audio: expected a boolean".into());
        }
    }
    if action == "image_to_video" {
        match obj.get("promptImage") {
            None | Some(Value::Null) => return Err("promptImage: required".into()),
            Some(Value::String(uri)) => check_image_uri(uri)?,
            Some(Value::Array(items)) => {
                if items.is_empty() || items.len() > 2 {
                    return Err("promptImage: expected one or two images".into());
                }
                for item in items {
                    let uri = item.get("uri").and_then(Value::as_str).unwrap_or("");
                    let position = item.get("position").and_then(Value::as_str);
                    if !matches!(position, Some("first" | "last")) {
                        return Err("promptImage: position must be \"first\" or \"last\"".into());
                    }
                    check_image_uri(uri)?;
                }
            }
            Some(_) => return Err("promptImage: expected a string or an array".into()),
        }
    }
    Ok(Create {
        model: model.name,
        prompt,
        size: ratio.replace(':', "x"),
        duration,
    })
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create_task(&shared, &action, &headers, &body, false)
}

pub async fn relay_create(
    State(shared): State<Arc<Shared>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create_task(&shared, &action, &headers, &body, true)
}

fn create_task(
    shared: &Shared,
    action: &str,
    headers: &HeaderMap,
    body: &[u8],
    relay: bool,
) -> Response {
    shared.count_request();
    if !ACTIONS.contains(&action) {
        return error(relay, StatusCode::NOT_FOUND, "not_found", "Not found.");
    }
    let key = match gate(shared, headers, relay) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(relay, &format!("Invalid JSON body: {e}")),
    };
    let create = match validate(action, &v) {
        Ok(c) => c,
        Err(m) => return bad_request(relay, &m),
    };
    let scenario = Scenario::pick(scenario_header(headers), &create.prompt);
    let id = shared.new_uuid();
    let idem = idempotency_key(headers, &id);
    match scenario {
        Scenario::RateLimited => {
            lock(&shared.stats).rate_limited_total += 1;
            return too_many(relay);
        }
        Scenario::OutOfCredits => return no_credits(relay),
        Scenario::ServerError if shared.first_attempt(&idem) => return overloaded(relay),
        _ => {}
    }
    if shared.check_rate(&key).is_err() {
        return too_many(relay);
    }
    let now = Instant::now();
    let start = shared.queued_start(&key, now, |j| matches!(j.api, Api::Runway { .. }));
    let job = Job {
        model: create.model.to_string(),
        prompt: create.prompt,
        seconds: create.duration,
        size: create.size,
        ..shared.new_job(
            &id,
            Api::Runway {
                action: action.to_string(),
                relay,
            },
            key,
            scenario,
            start,
        )
    };
    shared.count_submission(&idem);
    shared.insert_job(job);
    (StatusCode::OK, Json(json!({ "id": id }))).into_response()
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

fn is_runway(job: &Job, relay: bool) -> bool {
    matches!(&job.api, Api::Runway { relay: r, .. } if *r == relay)
}

/// Unix milliseconds of an instant, from the current pair (`now_unix`, `now`).
fn unix_at(now_unix: i64, now: Instant, at: Instant) -> i64 {
    if at >= now {
        now_unix.saturating_add(at.duration_since(now).as_millis() as i64)
    } else {
        now_unix.saturating_sub(now.duration_since(at).as_millis() as i64)
    }
}

/// A freshly signed output URL (each task GET hands out a new one).
fn output_url(shared: &Shared, job: &Job, base: &str) -> String {
    let n = shared.with_extra(&job.id, |x| {
        x.urls_issued += 1;
        x.urls_issued
    });
    let ttl = shared.opts.url_ttl_ms.unwrap_or(DEFAULT_URL_TTL_MS);
    let now = unix_ms();
    let exp = if job.scenario == Scenario::UrlExpired && n == 1 {
        now - 1
    } else {
        now.saturating_add(ttl.min(i64::MAX as u64) as i64)
    };
    let exp = exp.to_string();
    let sig = shared.sign(&[job.id.as_bytes(), exp.as_bytes()]);
    format!(
        "{base}/runway/files/{}.mp4?exp={exp}&n={n}&sig={sig}",
        job.id
    )
}

/// Where a Runway job is: `THROTTLED` while waiting for a slot, then its clock.
enum Status {
    Cancelled,
    Throttled,
    At(Phase),
}

fn status_of(shared: &Shared, job: &Job, now: Instant) -> Status {
    if shared.extra(&job.id).cancelled_ms.is_some() {
        Status::Cancelled
    } else if job.created > now {
        Status::Throttled
    } else {
        Status::At(job.phase_after_input_check(now))
    }
}

fn failure(job: &Job) -> (&'static str, &'static str) {
    match job.scenario {
        Scenario::ModerationInput => (
            "SAFETY.INPUT.TEXT",
            "The prompt text did not pass content moderation.",
        ),
        Scenario::ModerationOutput => (
            "SAFETY.OUTPUT.VIDEO",
            "The generated video did not pass content moderation.",
        ),
        _ => (
            "INTERNAL.BAD_OUTPUT.CODE01",
            "The output did not pass quality checks. Please try again.",
        ),
    }
}

/// Credits a second of video costs on `model` ($0.01 a credit), as Runway prices them.
fn credits_per_second(model: &str) -> u32 {
    match model {
        "gen4.5" => 12,
        "veo3" => 40,
        "veo3.1" => 40,
        "veo3.1_fast" => 15,
        _ => 5,
    }
}

/// The native task object. Like the API, an unfinished task carries `estimatedCost` and a
/// succeeded one its `cost`, both in credits (the SDK's typed task expects them).
fn task_json(shared: &Shared, job: &Job, base: &str, now: Instant) -> Value {
    let credits = credits_per_second(&job.model) * job.seconds.max(1);
    let mut t = Map::new();
    t.insert("id".into(), json!(job.id));
    t.insert("createdAt".into(), json!(iso8601(job.created_unix_ms)));
    match status_of(shared, job, now) {
        Status::Cancelled => {
            t.insert("status".into(), json!("CANCELLED"));
        }
        Status::Throttled => {
            t.insert("status".into(), json!("THROTTLED"));
            t.insert("estimatedCost".into(), json!(credits));
        }
        Status::At(Phase::Queued) => {
            t.insert("status".into(), json!("PENDING"));
            t.insert("estimatedCost".into(), json!(credits));
        }
        Status::At(Phase::Running(p)) => {
            t.insert("status".into(), json!("RUNNING"));
            t.insert("progress".into(), json!(f64::from(p.min(99)) / 100.0));
            t.insert("estimatedCost".into(), json!(credits));
        }
        Status::At(Phase::Succeeded) => {
            t.insert("status".into(), json!("SUCCEEDED"));
            t.insert("cost".into(), json!(credits));
            let output = if job.scenario == Scenario::SuccessWithoutOutput {
                json!([])
            } else {
                json!([output_url(shared, job, base)])
            };
            t.insert("output".into(), output);
        }
        Status::At(Phase::Failed) => {
            let (code, text) = failure(job);
            t.insert("status".into(), json!("FAILED"));
            t.insert("failure".into(), json!(text));
            t.insert("failureCode".into(), json!(code));
        }
    }
    Value::Object(t)
}

/// CometAPI's envelope around a native task.
fn wrap(job: &Job, native: Value, now: Instant) -> Value {
    let now_unix = unix_ms();
    let status = native["status"].as_str().unwrap_or("PENDING");
    let (relay_status, percent) = match status {
        "RUNNING" => (
            "IN_PROGRESS",
            (native["progress"].as_f64().unwrap_or(0.0) * 100.0).round() as u32,
        ),
        "SUCCEEDED" => ("SUCCESS", 100),
        "FAILED" | "CANCELLED" => ("FAILURE", 100),
        _ => ("QUEUED", 0),
    };
    let fail_reason = match status {
        "FAILED" => native["failure"].as_str().unwrap_or("").to_string(),
        "CANCELLED" => "task cancelled".to_string(),
        _ => String::new(),
    };
    let started = job.started_at();
    let start_time = if started <= now && relay_status != "QUEUED" {
        unix_at(now_unix, now, started) / 1000
    } else {
        0
    };
    let finish_time = if matches!(relay_status, "SUCCESS" | "FAILURE") {
        job.finished_at()
            .filter(|f| *f <= now)
            .map_or(now_unix, |f| unix_at(now_unix, now, f))
            / 1000
    } else {
        0
    };
    let action = match &job.api {
        Api::Runway { action, .. } => action.to_ascii_uppercase(),
        _ => String::new(),
    };
    json!({
        "code": "success",
        "message": "",
        "data": {
            "task_id": job.id,
            "action": action,
            "status": relay_status,
            "fail_reason": fail_reason,
            "submit_time": job.created_unix_ms / 1000,
            "start_time": start_time,
            "finish_time": finish_time,
            "progress": format!("{percent}%"),
            "data": native,
        }
    })
}

pub async fn get_task(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    read_task(&shared, &id, &headers, false)
}

pub async fn relay_get_task(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    read_task(&shared, &id, &headers, true)
}

fn read_task(shared: &Shared, id: &str, headers: &HeaderMap, relay: bool) -> Response {
    shared.count_request();
    if let Err(r) = gate(shared, headers, relay) {
        return *r;
    }
    let now = Instant::now();
    let job = {
        let mut jobs = lock(&shared.jobs);
        let Some(job) = jobs.get_mut(id).filter(|j| is_runway(j, relay)) else {
            return task_missing(relay);
        };
        job.polls += 1;
        job.clone()
    };
    if shared.extra(id).deleted || (job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2)
    {
        return task_missing(relay);
    }
    let native = task_json(shared, &job, &origin(headers), now);
    let body = if relay {
        wrap(&job, native, now)
    } else {
        native
    };
    (StatusCode::OK, Json(body)).into_response()
}

pub async fn delete_task(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    remove_task(&shared, &id, &headers, false)
}

pub async fn relay_delete_task(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    remove_task(&shared, &id, &headers, true)
}

/// Cancel a throttled, pending or running task; delete any other.
fn remove_task(shared: &Shared, id: &str, headers: &HeaderMap, relay: bool) -> Response {
    shared.count_request();
    if let Err(r) = gate(shared, headers, relay) {
        return *r;
    }
    let now = Instant::now();
    let job = lock(&shared.jobs)
        .get(id)
        .filter(|j| is_runway(j, relay))
        .cloned();
    let Some(job) = job else {
        return task_missing(relay);
    };
    if shared.extra(id).deleted {
        return task_missing(relay);
    }
    let unfinished = matches!(
        status_of(shared, &job, now),
        Status::Throttled | Status::At(Phase::Queued | Phase::Running(_))
    );
    if unfinished {
        shared.stop_job(id, now);
    } else {
        shared.with_extra(id, |x| x.deleted = true);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The signed output URLs: 403 once expired or when the signature does not match.
pub async fn file(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Response {
    shared.count_request();
    let denied = |message: &str| {
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/xml")],
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
            ),
        )
            .into_response()
    };
    let id = file.strip_suffix(".mp4").unwrap_or(&file);
    let (Some(exp), Some(sig)) = (
        query_param(query.as_deref(), "exp"),
        query_param(query.as_deref(), "sig"),
    ) else {
        return denied("Missing signature");
    };
    if sig != shared.sign(&[id.as_bytes(), exp.as_bytes()]) {
        return denied("Signature does not match");
    }
    let Ok(exp) = exp.parse::<i64>() else {
        return denied("Bad expiry");
    };
    if unix_ms() > exp {
        return denied("Request has expired");
    }
    let now = Instant::now();
    let job = lock(&shared.jobs).get(id).cloned();
    let extra = shared.extra(id);
    match job {
        Some(j)
            if matches!(j.api, Api::Runway { .. })
                && !extra.deleted
                && extra.cancelled_ms.is_none()
                && j.phase_after_input_check(now) == Phase::Succeeded
                && j.scenario != Scenario::SuccessWithoutOutput =>
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
    fn validation_table() {
        let ok = |action: &str, v: Value| validate(action, &v).map(|c| (c.size, c.duration));
        assert_eq!(
            ok(
                "text_to_video",
                json!({"model":"gen4.5","promptText":"p","ratio":"1280:720","duration":5})
            ),
            Ok(("1280x720".to_string(), 5))
        );
        assert!(ok(
            "image_to_video",
            json!({"model":"gen4_turbo","promptImage":"data:image/png;base64,iVBORw0KGgo=","ratio":"960:960","duration":10})
        )
        .is_ok());
        let refused = [
            (
                "text_to_video",
                json!({"model":"gen4_turbo","promptText":"p","ratio":"1280:720"}),
            ),
            (
                "text_to_video",
                json!({"model":"gen4.5","promptText":"p","ratio":"16:9"}),
            ),
            (
                "text_to_video",
                json!({"model":"gen4.5","promptText":"p","ratio":"1280:720","duration":"5"}),
            ),
            (
                "text_to_video",
                json!({"model":"gen4.5","promptText":"p","ratio":"1280:720","duration":11}),
            ),
            (
                "text_to_video",
                json!({"model":"gen4.5","promptText":"p","ratio":"1280:720","negativePrompt":"x"}),
            ),
            (
                "text_to_video",
                json!({"model":"veo3.1","promptText":"p","ratio":"960:960","duration":8}),
            ),
            (
                "text_to_video",
                json!({"model":"veo3.1","promptText":"p","ratio":"1280:720","duration":5}),
            ),
            (
                "text_to_video",
                json!({"model":"gen4.5","ratio":"1280:720"}),
            ),
            (
                "image_to_video",
                json!({"model":"gen4_turbo","ratio":"1280:720"}),
            ),
            (
                "image_to_video",
                json!({"model":"gen4_turbo","ratio":"1280:720","promptImage":"http://example.com/a.png"}),
            ),
            (
                "image_to_video",
                json!({"model":"gen4_turbo","ratio":"1280:720","promptImage":"https://10.0.0.1/a.png"}),
            ),
            (
                "image_to_video",
                json!({"model":"gen4_turbo","ratio":"1280:720","promptImage":"data:image/png;base64,%%%"}),
            ),
            (
                "text_to_video",
                json!({"model":"nope","promptText":"p","ratio":"1280:720"}),
            ),
            ("text_to_video", json!([1, 2])),
        ];
        for (action, body) in refused {
            assert!(validate(action, &body).is_err(), "{action} {body}");
        }
        assert!(validate(
            "text_to_video",
            &json!({"model":"veo3.1","promptText":"p","ratio":"1080:1920","duration":6,"negativePrompt":"n","audio":true})
        )
        .is_ok());
    }

    #[test]
    fn unix_at_both_directions() {
        let now = Instant::now();
        let later = now + std::time::Duration::from_millis(1500);
        assert_eq!(unix_at(10_000, now, later), 11_500);
        assert_eq!(unix_at(10_000, later, now), 8_500);
    }
}
