//! Veo through the Gemini API's long-running operations (docs/providers.md, "veo"), under `/gemini`.
//!
//! `POST /v1beta/models/{model}:predictLongRunning` takes `{"instances":[{prompt, image?}],
//! "parameters":{…}}` and answers `{"name":"models/{model}/operations/{id}"}`;
//! `GET /v1beta/models/{model}/operations/{id}` is the operation: no `done` while queued,
//! `done:false` while rendering, then `done:true` with either `response.generateVideoResponse.
//! generatedSamples[0].video.uri` or an `error` (`google.rpc` code). The URI,
//! `/v1beta/files/{id}:download?alt=media`, needs the key and answers 302 to the bytes (a signed
//! link outside `/gemini`, so a client must not need to send its key there).
//!
//! Auth is `x-goog-api-key` (or `?key=`): none → 403 `PERMISSION_DENIED`, an unknown one → 400
//! `INVALID_ARGUMENT` with reason `API_KEY_INVALID`. Errors are Google's
//! `{"error":{"code","message","status","details"}}`. Validation follows the Gemini API:
//! `aspectRatio` 16:9 or 9:16 (1:1 → 400 `INVALID_ARGUMENT`), `durationSeconds` a number (or a
//! numeric string) of 4, 6 or 8 on Veo 3.x (5–8 on Veo 2), `resolution` 720p/1080p (4k on 3.1 at
//! 8 s only), `personGeneration` `allow_all` for text-to-video and `allow_adult` for
//! image-to-video, the image as `{bytesBase64Encoded, mimeType}` (`inlineData` is refused, as the
//! live API does), and the Vertex-only fields (`seed`, `generateAudio`, `fps`, `outputGcsUri`,
//! `pubsubTopic`, `compressionQuality`, `mask`) refused.
//!
//! Scenarios: `moderation_input` and `moderation_output` finish `done:true` with zero samples
//! and `raiMediaFilteredCount`/`raiMediaFilteredReasons` (the RAI filter: looks like success);
//! `fail` (and the random failure rate) `done:true` with `error {code: 13}`;
//! `success_without_output` `done:true` with a sample that has no URI; `rate_limited` (and the
//! per-key rate or concurrency limit) 429 `RESOURCE_EXHAUSTED` exactly as Gemini words a
//! per-minute limit — its message speaks of "quota" and "billing" too, only the `QuotaFailure`
//! detail's `quotaId` (`…PerMinute…`) and the `RetryInfo` delay tell it from a daily cap;
//! `out_of_credits` 429 `RESOURCE_EXHAUSTED` "prepayment credits are depleted";
//! `server_error` 503 `UNAVAILABLE` on the first submit; `not_found_first_polls` 404
//! `NOT_FOUND` on the first two polls; `url_expired` (or `url_ttl_ms` after the render) 403
//! `PERMISSION_DENIED` on the download, as for a file the service already removed.

use crate::scenario::Scenario;
use crate::state::{
    idempotency_key, lock, origin, query_param, scenario_header, unix_ms, Api, Job, Phase, Shared,
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

const RESPONSE_TYPE: &str =
    "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse";
/// Parameters only Vertex accepts; the Gemini API refuses them.
const VERTEX_ONLY: [&str; 7] = [
    "seed",
    "generateAudio",
    "fps",
    "outputGcsUri",
    "storageUri",
    "pubsubTopic",
    "compressionQuality",
];
const IMAGE_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];
/// How long the signed download link a redirect points at stays valid.
const CDN_LINK_MS: i64 = 10 * 60 * 1000;

fn google_error(status: StatusCode, word: &str, message: &str) -> Response {
    google_error_with(status, word, message, Vec::new())
}

fn google_error_with(
    status: StatusCode,
    word: &str,
    message: &str,
    details: Vec<Value>,
) -> Response {
    let mut e = json!({"code": status.as_u16(), "message": message, "status": word});
    if !details.is_empty() {
        e["details"] = Value::Array(details);
    }
    (status, Json(json!({ "error": e }))).into_response()
}

fn invalid(message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// 429 the way Gemini words a per-minute limit (quota words included) with its `quotaId` and
/// `retryDelay`.
fn per_minute_limit(model: &str, wait_ms: u64) -> Response {
    google_error_with(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        vec![
            json!({
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/predict_long_running_requests",
                    "quotaId": "PredictLongRunningRequestsPerMinutePerProjectPerModel",
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": "2"
                }]
            }),
            json!({
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]
            }),
            json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{}s", wait_ms.div_ceil(1000).max(1))
            }),
        ],
    )
}

fn credits_depleted() -> Response {
    google_error(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects to manage your project and billing.",
    )
}

/// The key from `x-goog-api-key` or `?key=`, or the answer to send.
fn api_key(
    shared: &Shared,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<String, Box<Response>> {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .or_else(|| query_param(query, "key").filter(|k| !k.is_empty()));
    let Some(key) = key else {
        return Err(Box::new(google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )));
    };
    let known = shared.opts.api_keys.is_empty() || shared.opts.api_keys.contains(&key);
    if !known {
        return Err(Box::new(google_error_with(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            })],
        )));
    }
    Ok(key)
}

fn valid_model(model: &str) -> bool {
    model.starts_with("veo-")
        && model.len() <= 64
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

struct Create {
    prompt: String,
    seconds: u32,
    size: String,
}

fn number_param(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn validate(model: &str, v: &Value) -> Result<Create, String> {
    let Some(obj) = v.as_object() else {
        return Err("Invalid JSON payload received. Expected an object.".into());
    };
    let instance = match obj.get("instances").and_then(Value::as_array) {
        Some(items) if items.len() == 1 => &items[0],
        Some(items) if items.len() > 1 => {
            return Err("Only one instance per request is supported.".into())
        }
        _ => return Err("instances is required and must hold one instance.".into()),
    };
    let Some(inst) = instance.as_object() else {
        return Err("instances[0] must be an object.".into());
    };
    let prompt = match inst.get("prompt") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err("instances[0].prompt is required.".into()),
    };
    let has_image = match inst.get("image") {
        None | Some(Value::Null) => false,
        Some(Value::Object(img)) => {
            if img.contains_key("inlineData") {
                return Err("`inlineData` isn't supported by this model. Use `bytesBase64Encoded` with `mimeType`.".into());
            }
            let data = img.get("bytesBase64Encoded").and_then(Value::as_str);
            let mime = img.get("mimeType").and_then(Value::as_str);
            match (data, mime) {
                (Some(d), Some(m)) if IMAGE_TYPES.contains(&m) => {
                    if base64::engine::general_purpose::STANDARD
                        .decode(d)
                        .map_or(true, |b| b.is_empty())
                    {
                        return Err(
                            "instances[0].image.bytesBase64Encoded is not valid base64.".into()
                        );
                    }
                }
                (Some(_), Some(m)) => {
                    return Err(format!(
                    "Unsupported image mimeType {m:?}; use image/png, image/jpeg or image/webp."
                ))
                }
                _ => return Err("instances[0].image needs bytesBase64Encoded and mimeType.".into()),
            }
            true
        }
        Some(_) => return Err("instances[0].image must be an object.".into()),
    };
    let empty = Map::new();
    let params = match obj.get("parameters") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err("parameters must be an object.".into()),
    };
    for field in VERTEX_ONLY.iter().chain(["mask"].iter()) {
        if params.contains_key(*field) {
            return Err(format!(
                "`{field}` isn't supported by the Gemini API (Vertex AI only)."
            ));
        }
    }
    let aspect = match params.get("aspectRatio") {
        None => "16:9",
        Some(Value::String(a)) if a == "16:9" || a == "9:16" => a.as_str(),
        Some(other) => {
            return Err(format!(
                "Aspect ratio {} is not supported. Supported values are 16:9 and 9:16.",
                other.as_str().map_or(other.to_string(), str::to_string)
            ))
        }
    };
    let veo3 = model.starts_with("veo-3");
    let seconds = match params.get("durationSeconds") {
        None => 8,
        Some(d) => match number_param(d) {
            Some(s @ (4 | 6 | 8)) if veo3 => s as u32,
            Some(s @ 5..=8) if !veo3 => s as u32,
            _ => {
                return Err(format!(
                    "durationSeconds {d} is out of range; supported values are {}.",
                    if veo3 { "4, 6 and 8" } else { "5 to 8" }
                ))
            }
        },
    };
    if params
        .get("referenceImages")
        .or_else(|| inst.get("referenceImages"))
        .is_some()
        && seconds != 8
    {
        return Err("Reference images require durationSeconds 8.".into());
    }
    let resolution = match params.get("resolution").map(|r| r.as_str().unwrap_or("")) {
        None => "720p",
        Some(r @ ("720p" | "1080p")) => r,
        Some("4k") if model.starts_with("veo-3.1") && seconds == 8 => "4k",
        Some(other) => {
            return Err(format!(
                "Resolution {other:?} is not supported for this model and duration."
            ))
        }
    };
    match params
        .get("personGeneration")
        .map(|p| p.as_str().unwrap_or(""))
    {
        None | Some("dont_allow") => {}
        Some("allow_all") if !has_image => {}
        Some("allow_adult") if has_image => {}
        Some(other) => {
            return Err(format!(
                "personGeneration {other:?} is currently not supported for {}.",
                if has_image {
                    "image-to-video (use allow_adult)"
                } else {
                    "text-to-video (use allow_all)"
                }
            ))
        }
    }
    if let Some(n) = params.get("sampleCount") {
        if !number_param(n).is_some_and(|n| (1..=4).contains(&n)) {
            return Err("sampleCount must be between 1 and 4.".into());
        }
    }
    if let Some(n) = params.get("negativePrompt") {
        if !n.is_string() {
            return Err("negativePrompt must be a string.".into());
        }
    }
    let (w, h) = match resolution {
        "1080p" => (1920, 1080),
        "4k" => (3840, 2160),
        _ => (1280, 720),
    };
    let size = if aspect == "9:16" {
        format!("{h}x{w}")
    } else {
        format!("{w}x{h}")
    };
    Ok(Create {
        prompt,
        seconds,
        size,
    })
}

/// `POST /v1beta/models/{model}:predictLongRunning` (the route captures `{model}:{method}`).
pub async fn predict(
    State(shared): State<Arc<Shared>>,
    Path(action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_request();
    let Some((model, method)) = action.split_once(':') else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.");
    };
    if method != "predictLongRunning" {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Method {method:?} is not served for Veo models."),
        );
    }
    let key = match api_key(&shared, &headers, query.as_deref()) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    if !valid_model(model) {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("models/{model} is not found for API version v1beta, or is not supported for predictLongRunning."),
        );
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(&format!("Invalid JSON payload received. {e}")),
    };
    let create = match validate(model, &v) {
        Ok(c) => c,
        Err(m) => return invalid(&m),
    };
    let scenario = Scenario::pick(scenario_header(&headers), &create.prompt);
    let id = shared.new_id("");
    let idem = idempotency_key(&headers, &id);
    match scenario {
        Scenario::RateLimited => {
            lock(&shared.stats).rate_limited_total += 1;
            return per_minute_limit(model, 1_000);
        }
        Scenario::OutOfCredits => return credits_depleted(),
        Scenario::ServerError if shared.first_attempt(&idem) => {
            return google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            )
        }
        _ => {}
    }
    if let Err(wait) = shared.check_rate(&key) {
        return per_minute_limit(model, wait);
    }
    if !shared.check_concurrency(&key) {
        return per_minute_limit(model, 1_000);
    }
    let job = Job {
        model: model.to_string(),
        prompt: create.prompt,
        seconds: create.seconds,
        size: create.size,
        ..shared.new_job(&id, Api::Veo, key, scenario, Instant::now())
    };
    shared.count_submission(&idem);
    shared.insert_job(job);
    Json(json!({ "name": format!("models/{model}/operations/{id}") })).into_response()
}

fn operation_json(job: &Job, base: &str, now: Instant) -> Value {
    let name = format!("models/{}/operations/{}", job.model, job.id);
    let filtered = |reason: &str| {
        json!({
            "name": name,
            "done": true,
            "response": {
                "@type": RESPONSE_TYPE,
                "generateVideoResponse": {
                    "raiMediaFilteredCount": 1,
                    "raiMediaFilteredReasons": [reason]
                }
            }
        })
    };
    match job.phase_after_input_check(now) {
        Phase::Queued => json!({ "name": name }),
        Phase::Running(_) => json!({ "name": name, "done": false }),
        Phase::Succeeded => {
            let video = if job.scenario == Scenario::SuccessWithoutOutput {
                json!({})
            } else {
                json!({"uri": format!("{base}/gemini/v1beta/files/{}:download?alt=media", job.id)})
            };
            json!({
                "name": name,
                "done": true,
                "response": {
                    "@type": RESPONSE_TYPE,
                    "generateVideoResponse": {"generatedSamples": [{"video": video}]}
                }
            })
        }
        Phase::Failed => match job.scenario {
            Scenario::ModerationInput => filtered(
                "Your prompt could not be submitted because it violates the Gemini API usage guidelines. You have not been charged.",
            ),
            Scenario::ModerationOutput => filtered(
                "The generated video was blocked by our safety filters. You have not been charged.",
            ),
            _ => json!({
                "name": name,
                "done": true,
                "error": {"code": 13, "message": "Internal error encountered while generating the video."}
            }),
        },
    }
}

/// `GET /v1beta/models/{model}/operations/{id}`.
pub async fn operation(
    State(shared): State<Arc<Shared>>,
    Path((model, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    shared.count_request();
    if let Err(r) = api_key(&shared, &headers, query.as_deref()) {
        return *r;
    }
    // Google's generic wording: the operation path is not echoed back.
    let missing = || {
        google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
        )
    };
    let job = {
        let mut jobs = lock(&shared.jobs);
        let Some(job) = jobs
            .get_mut(&id)
            .filter(|j| j.api == Api::Veo && j.model == model)
        else {
            return missing();
        };
        job.polls += 1;
        job.clone()
    };
    if job.scenario == Scenario::NotFoundFirstPolls && job.polls <= 2 {
        return missing();
    }
    Json(operation_json(&job, &origin(&headers), Instant::now())).into_response()
}

/// `GET /v1beta/files/{id}:download?alt=media`: needs the key, answers 302 to a signed link.
pub async fn download(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    shared.count_request();
    let Some(id) = file.strip_suffix(":download") else {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Generated video files can only be downloaded (`files/{id}:download?alt=media`).",
        );
    };
    if let Err(r) = api_key(&shared, &headers, query.as_deref()) {
        return *r;
    }
    if query_param(query.as_deref(), "alt").as_deref() != Some("media") {
        return invalid("Downloads need alt=media.");
    }
    let now = Instant::now();
    let job = lock(&shared.jobs).get(id).cloned();
    let gone = || {
        google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!("You do not have permission to access the File {id} or it may not exist."),
        )
    };
    let Some(job) = job.filter(|j| {
        j.api == Api::Veo
            && j.phase_after_input_check(now) == Phase::Succeeded
            && j.scenario != Scenario::SuccessWithoutOutput
    }) else {
        return gone();
    };
    if let Some(r) = job.redirect_loop(&uri) {
        return r;
    }
    if job.url_expired(shared.opts.url_ttl_ms, now) {
        return gone();
    }
    let exp = (unix_ms() + CDN_LINK_MS).to_string();
    let sig = shared.sign(&[job.id.as_bytes(), exp.as_bytes(), b"veo"]);
    let location = format!(
        "{}/gemini-cdn/{}.mp4?exp={exp}&sig={sig}",
        origin(&headers),
        job.id
    );
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error encountered.",
        ),
    }
}

/// The signed link a download redirects to (no key needed, like a storage URL).
pub async fn cdn(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    shared.count_request();
    let id = file.strip_suffix(".mp4").unwrap_or(&file);
    let exp = query_param(query.as_deref(), "exp").unwrap_or_default();
    let sig = query_param(query.as_deref(), "sig").unwrap_or_default();
    let valid = sig == shared.sign(&[id.as_bytes(), exp.as_bytes(), b"veo"])
        && exp.parse::<i64>().is_ok_and(|e| unix_ms() <= e);
    if !valid {
        return (
            StatusCode::FORBIDDEN,
            "Access denied: link expired or invalid",
        )
            .into_response();
    }
    let job = lock(&shared.jobs).get(id).cloned();
    match job.filter(|j| j.api == Api::Veo) {
        Some(j) => ([(header::CONTENT_TYPE, "video/mp4")], j.video_bytes()).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let body = |params: Value| json!({"instances":[{"prompt":"p"}],"parameters": params});
        let c = validate(
            "veo-3.0-generate-001",
            &body(json!({"aspectRatio":"9:16","durationSeconds":6})),
        )
        .expect("ok");
        assert_eq!((c.seconds, c.size.as_str()), (6, "720x1280"));
        assert!(validate(
            "veo-3.0-generate-001",
            &body(json!({"durationSeconds":"8"}))
        )
        .is_ok());
        for params in [
            json!({"aspectRatio":"1:1"}),
            json!({"durationSeconds":5}),
            json!({"durationSeconds":10}),
            json!({"seed":1}),
            json!({"generateAudio":true}),
            json!({"personGeneration":"allow_adult"}),
            json!({"resolution":"4k","durationSeconds":8}),
            json!({"resolution":"480p"}),
        ] {
            assert!(
                validate("veo-3.0-generate-001", &body(params.clone())).is_err(),
                "{params}"
            );
        }
        assert!(validate(
            "veo-3.1-generate-preview",
            &body(json!({"resolution":"4k"}))
        )
        .is_ok());
        assert!(validate("veo-2.0-generate-001", &body(json!({"durationSeconds":5}))).is_ok());
        let inline = json!({"instances":[{"prompt":"p","image":{"inlineData":{"data":"AA=="}}}]});
        assert!(validate("veo-3.0-generate-001", &inline).is_err());
        let i2v = json!({"instances":[{"prompt":"p","image":{"bytesBase64Encoded":"iVBORw==","mimeType":"image/png"}}],
            "parameters":{"personGeneration":"allow_adult"}});
        assert!(validate("veo-3.0-generate-001", &i2v).is_ok());
        let i2v_all = json!({"instances":[{"prompt":"p","image":{"bytesBase64Encoded":"iVBORw==","mimeType":"image/png"}}],
            "parameters":{"personGeneration":"allow_all"}});
        assert!(validate("veo-3.0-generate-001", &i2v_all).is_err());
        assert!(validate("veo-3.0-generate-001", &json!({"instances":[]})).is_err());
        assert!(validate("veo-3.0-generate-001", &json!("x")).is_err());
    }
}
