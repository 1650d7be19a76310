//! Family `veo`: Google Veo through the Gemini API's long-running operations
//! (`predictLongRunning`, docs/providers.md, "veo").
//!
//! Quirks handled here:
//! - Auth is the `x-goog-api-key` header (never `?key=`, which would put the key in URLs).
//! - The body is `{"instances":[{prompt, image?}], "parameters":{…}}`; the first frame is
//!   `{"bytesBase64Encoded","mimeType"}` (not `inlineData`, which the live API refuses).
//!   `aspectRatio` is 16:9 or 9:16 only, so 1:1 is refused before anything is sent;
//!   `durationSeconds` is a number; `personGeneration` is `allow_all` for text-to-video and
//!   `allow_adult` for image-to-video (the only values each accepts). `seed` is never sent: the
//!   Gemini API refuses it. 480p does not exist and is rendered at 720p.
//! - The task id is the operation `name`, a slash path (`models/…/operations/…`) polled as
//!   `GET /v1beta/{name}`; it is validated (`[A-Za-z0-9/_.-]`, no `..`) before it goes in a URL.
//! - There is no status word, only `done`. `done:true` can mean an `error` (a `google.rpc` code),
//!   samples, or zero samples with `raiMediaFilteredCount`/`raiMediaFilteredReasons`: the RAI
//!   filter blocked the output, which looks like a success but is `content_policy`.
//! - SDK-shaped relays flatten samples to `response.generated_videos[]`; both shapes are read.
//! - `429 RESOURCE_EXHAUSTED` is per-minute (`rate_limited`) unless the message speaks of daily,
//!   quota, spend or billing caps (`quota_exceeded`); 402 or `FAILED_PRECONDITION` about billing
//!   is `insufficient_credits`; a 404 on poll is `not_found` for the worker's grace window unless
//!   the model is gone (`model_retired`).
//! - The video `uri` needs the API key and answers with a redirect. The key is only sent to the
//!   account's own base URL; redirects are followed by hand so it never travels to another host.

use super::http::{self, openai, Auth, Scrubber, IDEMPOTENCY_KEY};
use super::{
    video_args, Download, InputImage, PollOutcome, Provider, ProviderError, RenderPhase, ResultRef,
    SubmitOutcome, SubmitRequest,
};
use async_trait::async_trait;
use base64::Engine;
use dramaq_common::config::{AccountConfig, Family, Secret};
use dramaq_common::{FailureClass, TaskPayload};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

/// The Gemini API key header.
pub const API_KEY_HEADER: &str = "x-goog-api-key";

pub struct Veo {
    client: reqwest::Client,
    /// Same settings as `client` but without automatic redirects, for downloads.
    fetch_client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    scrub: Scrubber,
}

/// Operation names go into URL paths verbatim (their slashes are the path), so only the
/// characters Google uses are accepted, and never `..`.
pub fn validate_operation_name(name: &str) -> Result<(), ProviderError> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.contains("..")
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::new(
            FailureClass::InvalidRequest,
            "Veo operation name has characters not allowed in a path",
        )
        .with_code("bad_operation_name"))
    }
}

fn aspect_for(aspect_ratio: &str) -> Result<&'static str, ProviderError> {
    match aspect_ratio.trim() {
        "16:9" => Ok("16:9"),
        "9:16" => Ok("9:16"),
        other => Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("aspect ratio {other:?} is not supported by Veo (16:9 or 9:16 only)"),
        )
        .with_code("unsupported_aspect_ratio")),
    }
}

fn resolution_for(resolution: &str) -> Result<&'static str, ProviderError> {
    match resolution.trim().to_ascii_lowercase().as_str() {
        // Veo's smallest output; asking for less still gets 720p.
        "480p" | "720p" => Ok("720p"),
        "1080p" => Ok("1080p"),
        other => Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("resolution {other:?} is not supported by Veo (720p or 1080p)"),
        )
        .with_code("unsupported_resolution")),
    }
}

/// The `predictLongRunning` body for one video payload.
pub fn submit_body(
    payload: &TaskPayload,
    image: Option<&InputImage>,
) -> Result<Value, ProviderError> {
    let v = video_args("veo", payload, image)?;
    let mut instance = json!({ "prompt": v.prompt });
    if let Some(img) = v.image {
        instance["image"] = json!({
            "bytesBase64Encoded": base64::engine::general_purpose::STANDARD.encode(&img.bytes),
            "mimeType": img.mime,
        });
    }
    let mut parameters = json!({
        "aspectRatio": aspect_for(v.aspect_ratio)?,
        "resolution": resolution_for(v.resolution)?,
        "durationSeconds": v.duration_s,
        "sampleCount": 1,
        "personGeneration": if v.image.is_some() { "allow_adult" } else { "allow_all" },
    });
    if let Some(neg) = v.negative_prompt {
        parameters["negativePrompt"] = json!(neg);
    }
    Ok(json!({ "instances": [instance], "parameters": parameters }))
}

fn mentions_safety(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("blocked") || openai::mentions_content_policy(&t)
}

fn mentions_billing(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["billing", "prepay", "credit", "payment", "balance"]
        .iter()
        .any(|w| t.contains(w))
}

/// `RetryInfo.retryDelay` ("30s", "1.5s") as a duration.
fn parse_retry_delay(text: &str) -> Option<std::time::Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| std::time::Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Daily or spend caps, as opposed to a per-minute limit. Gemini's per-minute 429 text also
/// talks about "quota" and "billing", so those words alone decide nothing; the `QuotaFailure`
/// detail's `quotaId` (`…PerDay…` vs `…PerMinute…`) does, when present.
fn mentions_hard_cap(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "daily",
        "per day",
        "per_day",
        "perday",
        "spend cap",
        "spending cap",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Prepaid credit used up: the account cannot work until someone pays.
fn mentions_credits_gone(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "credits depleted",
        "credit balance",
        "prepayment",
        "insufficient credit",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Only explicit retirement wording: operation names contain `models/…`, so a generic
/// "not found" that echoes one must stay a (grace-windowed) not-found, not kill a live render.
fn mentions_gone_model(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("no longer available") || t.contains("not found for api version")
}

/// Class of a finished operation's `error` from its `google.rpc.Code` and message.
pub fn rpc_class(code: i64, message: &str) -> FailureClass {
    if mentions_safety(message) {
        return FailureClass::ContentPolicy;
    }
    match code {
        3 | 11 => FailureClass::InvalidRequest,
        5 if mentions_gone_model(message) => FailureClass::ModelRetired,
        5 | 12 => FailureClass::InvalidRequest,
        7 | 16 => FailureClass::Auth,
        8 => FailureClass::RateLimited,
        9 if mentions_billing(message) => FailureClass::InsufficientCredits,
        9 => FailureClass::InvalidRequest,
        // 1 CANCELLED, 2 UNKNOWN, 4 DEADLINE_EXCEEDED, 10 ABORTED, 13 INTERNAL,
        // 14 UNAVAILABLE, 15 DATA_LOSS, and anything new.
        _ => FailureClass::ProviderError,
    }
}

/// What a Google error body said: `{"error":{"code","message","status","details":[…]}}`.
#[derive(Debug, Default)]
struct GoogleError {
    message: Option<String>,
    /// The canonical status word (`RESOURCE_EXHAUSTED`, …), upper-case.
    status: Option<String>,
    /// `details[].reason` (`API_KEY_INVALID`, …).
    reasons: Vec<String>,
    quota_ids: Vec<String>,
    retry_delay: Option<std::time::Duration>,
}

fn google_error(body: &[u8]) -> GoogleError {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return GoogleError {
            message: openai::parse_error_body(body).message,
            ..GoogleError::default()
        };
    };
    match v.get("error") {
        Some(e @ Value::Object(_)) => GoogleError {
            message: e.get("message").and_then(http::json_string),
            status: e
                .get("status")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty()),
            reasons: e
                .get("details")
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(|x| x.get("reason").and_then(http::json_string))
                        .collect()
                })
                .unwrap_or_default(),
            quota_ids: e
                .get("details")
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(|x| x.get("violations").and_then(Value::as_array))
                        .flatten()
                        .filter_map(|v| v.get("quotaId").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            retry_delay: e
                .get("details")
                .and_then(Value::as_array)
                .and_then(|d| {
                    d.iter()
                        .find_map(|x| x.get("retryDelay").and_then(Value::as_str))
                })
                .and_then(parse_retry_delay),
        },
        _ => {
            let api = openai::error_object(&v);
            GoogleError {
                message: api.message,
                status: api.code,
                ..GoogleError::default()
            }
        }
    }
}

/// A non-2xx answer as a classified error. `on_poll`: a 404 is the operation (grace window),
/// not the request.
pub fn error_from_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
    on_poll: bool,
) -> ProviderError {
    let GoogleError {
        message,
        status: word,
        reasons,
        quota_ids,
        retry_delay,
    } = google_error(body);
    let text = message.as_deref().unwrap_or("");
    let word = word.unwrap_or_default();
    let bad_key = reasons.iter().any(|r| r.contains("API_KEY"))
        || text.to_ascii_lowercase().contains("api key not valid");
    let exhausted = status == 429 || word == "RESOURCE_EXHAUSTED";
    let per_day = quota_ids.iter().any(|q| q.contains("PerDay"));
    let per_minute = quota_ids.iter().any(|q| q.contains("PerMinute"));
    let class = if bad_key {
        FailureClass::Auth
    } else if exhausted {
        if mentions_credits_gone(text) {
            FailureClass::InsufficientCredits
        } else if per_day || (!per_minute && mentions_hard_cap(text)) {
            FailureClass::QuotaExceeded
        } else {
            FailureClass::RateLimited
        }
    } else if status == 402 || (word == "FAILED_PRECONDITION" && mentions_billing(text)) {
        FailureClass::InsufficientCredits
    } else if status == 404 || word == "NOT_FOUND" {
        if mentions_gone_model(text) {
            FailureClass::ModelRetired
        } else if on_poll {
            FailureClass::ProviderError
        } else {
            FailureClass::InvalidRequest
        }
    } else if status == 400 && mentions_safety(text) {
        FailureClass::ContentPolicy
    } else {
        match word.as_str() {
            "UNAUTHENTICATED" | "PERMISSION_DENIED" => FailureClass::Auth,
            "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" => FailureClass::ProviderError,
            _ => http::class_for_status(status),
        }
    };
    let code = if on_poll && class == FailureClass::ProviderError && status == 404 {
        "not_found".to_string()
    } else if !word.is_empty() {
        scrub.clean(&word)
    } else {
        status.to_string()
    };
    let hint = match class {
        FailureClass::RateLimited | FailureClass::ProviderError => {
            http::retry_after(headers).or(retry_delay)
        }
        _ => None,
    };
    let message = match &message {
        Some(m) => scrub.clean(m),
        None => format!("HTTP {status}"),
    };
    ProviderError::new(class, message)
        .with_code(code)
        .with_status(status)
        .with_retry_after(hint)
}

/// The first sample's video URI, in REST or SDK shape.
fn sample_uri(response: &Value) -> Option<String> {
    [
        "/generateVideoResponse/generatedSamples/0/video/uri",
        "/generated_videos/0/video/uri",
        "/generatedVideos/0/video/uri",
        "/generatedSamples/0/video/uri",
    ]
    .iter()
    .find_map(|p| response.pointer(p))
    .and_then(Value::as_str)
    .map(str::trim)
    .filter(|u| !u.is_empty())
    .map(str::to_string)
}

fn sample_count(response: &Value) -> usize {
    [
        "/generateVideoResponse/generatedSamples",
        "/generated_videos",
        "/generatedVideos",
        "/generatedSamples",
    ]
    .iter()
    .find_map(|p| response.pointer(p).and_then(Value::as_array))
    .map_or(0, Vec::len)
}

/// The RAI filter's verdict, wherever the response put it.
fn rai_filter(response: &Value) -> (u64, Vec<String>) {
    let inner = response.get("generateVideoResponse").unwrap_or(response);
    let count = ["raiMediaFilteredCount", "rai_media_filtered_count"]
        .iter()
        .find_map(|k| inner.get(*k).and_then(Value::as_u64))
        .unwrap_or(0);
    let reasons = ["raiMediaFilteredReasons", "rai_media_filtered_reasons"]
        .iter()
        .find_map(|k| inner.get(*k).and_then(Value::as_array))
        .map(|a| a.iter().filter_map(http::json_string).collect())
        .unwrap_or_default();
    (count, reasons)
}

/// A finished operation's `error` (`{"code": <google.rpc.Code>, "message"}`).
fn operation_error(err: &Value, scrub: &Scrubber) -> ProviderError {
    let code = err.get("code").and_then(Value::as_i64).unwrap_or(2);
    let message = err
        .get("message")
        .and_then(http::json_string)
        .unwrap_or_default();
    let class = rpc_class(code, &message);
    let text = if message.is_empty() {
        format!("operation failed with google.rpc code {code}")
    } else {
        scrub.clean(&message)
    };
    ProviderError::new(class, text).with_code(code.to_string())
}

/// One operation body → what the worker should do.
pub fn poll_outcome(op: &Value, scrub: &Scrubber) -> Result<PollOutcome, ProviderError> {
    if !op.is_object() {
        return Err(ProviderError::new(
            FailureClass::ProviderError,
            "operation response is not a JSON object",
        )
        .with_code("malformed_response"));
    }
    if !op.get("done").and_then(Value::as_bool).unwrap_or(false) {
        // No status word, only `done`: a queued operation cannot be told from a running one.
        return Ok(PollOutcome::Pending {
            phase: RenderPhase::Running,
            sub_status: "running".to_string(),
            progress: None,
            poll_after: None,
        });
    }
    if let Some(err) = op.get("error").filter(|e| !e.is_null()) {
        return Ok(PollOutcome::Failed(operation_error(err, scrub)));
    }
    let Some(response) = op.get("response").filter(|r| r.is_object()) else {
        return Ok(PollOutcome::Failed(
            ProviderError::new(FailureClass::ProviderError, "success without output")
                .with_code("success_without_output"),
        ));
    };
    if let Some(uri) = sample_uri(response) {
        return Ok(PollOutcome::Succeeded(ResultRef::AuthedUrl { url: uri }));
    }
    if sample_count(response) > 0 {
        // Samples without a URI (inline bytes only): nothing this adapter can download.
        return Ok(PollOutcome::Failed(
            ProviderError::new(FailureClass::ProviderError, "success without output")
                .with_code("success_without_output"),
        ));
    }
    let (count, reasons) = rai_filter(response);
    let message = if reasons.is_empty() {
        format!("no video returned: filtered by the safety (RAI) filter ({count} filtered)")
    } else {
        format!(
            "filtered by the safety (RAI) filter: {}",
            scrub.clean(&reasons.join("; "))
        )
    };
    Ok(PollOutcome::Failed(
        ProviderError::new(FailureClass::ContentPolicy, message).with_code("rai_media_filtered"),
    ))
}

impl Veo {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        let model = acct.model.trim();
        Veo {
            client,
            fetch_client: http::no_redirect_client(acct),
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: model.strip_prefix("models/").unwrap_or(model).to_string(),
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
        }
    }

    /// The `x-goog-api-key` header (never `?key=`, which would put the key in URLs).
    fn auth(&self) -> Result<Option<Auth>, ProviderError> {
        self.api_key
            .as_ref()
            .map(|k| Auth::header(API_KEY_HEADER, k.expose()))
            .transpose()
    }

    fn submit_url(&self) -> Result<String, ProviderError> {
        if self.model.is_empty() {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "the Veo account has no model configured",
            )
            .with_code("missing_model"));
        }
        Ok(http::join_url(
            &self.base_url,
            &format!(
                "/v1beta/models/{}:predictLongRunning",
                http::path_segment(&self.model)
            ),
        ))
    }
}

#[async_trait]
impl Provider for Veo {
    fn family(&self) -> Family {
        Family::Veo
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let body = submit_body(req.payload, req.first_frame.as_ref())?;
        let rb = self
            .client
            .post(self.submit_url()?)
            .header(IDEMPOTENCY_KEY, req.task_id)
            .json(&body);
        let rb = http::with_auth(rb, self.auth()?);
        let scrub = &self.scrub;
        let (answer, v) = http::call_json(rb, "predictLongRunning response", scrub, |a| {
            error_from_response(a.status, &a.headers, &a.body, scrub, false)
        })
        .await?;
        let status = answer.status;
        // An operation that failed at once comes back with its error.
        if let Some(err) = v.get("error").filter(|e| e.is_object()) {
            return Err(operation_error(err, &self.scrub).with_status(status));
        }
        let Some(name) = v.get("name").and_then(http::json_string) else {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                "predictLongRunning response without an operation name",
            )
            .with_code("malformed_response")
            .with_status(status));
        };
        validate_operation_name(&name).map_err(|e| {
            ProviderError::new(FailureClass::ProviderError, e.message)
                .with_code("malformed_response")
                .with_status(status)
        })?;
        Ok(SubmitOutcome::Accepted {
            provider_task_id: http::accept_task_id(name)?,
            poll_locator: None,
            poll_after: None,
        })
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        validate_operation_name(provider_task_id)?;
        let url = http::join_url(&self.base_url, &format!("/v1beta/{provider_task_id}"));
        let rb = http::with_auth(self.client.get(url), self.auth()?);
        let scrub = &self.scrub;
        let (_, v) = http::call_json(rb, "operation response", scrub, |a| {
            error_from_response(a.status, &a.headers, &a.body, scrub, true)
        })
        .await?;
        poll_outcome(&v, &self.scrub)
    }

    /// The video `uri` needs the key and answers with a redirect: the key goes only to the
    /// account's own base URL, so redirects are followed by hand.
    async fn fetch(&self, result: &ResultRef) -> Result<Download, ProviderError> {
        http::fetch_result_by_hand(
            &self.client,
            &self.fetch_client,
            result,
            &self.base_url,
            || self.auth(),
            &self.scrub,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::testing::{self, account, json, reply};
    use bytes::Bytes;
    use std::time::Duration;

    fn scrub() -> Scrubber {
        Scrubber::default()
    }

    fn payload(aspect: &str, resolution: &str, first_frame: bool) -> TaskPayload {
        TaskPayload::Video {
            prompt: "waves on basalt".into(),
            negative_prompt: Some("text overlays".into()),
            duration_s: 8,
            aspect_ratio: aspect.into(),
            resolution: resolution.into(),
            first_frame: first_frame.then(|| "img-1".to_string()),
            seed: Some(11),
        }
    }

    fn frame() -> InputImage {
        InputImage {
            bytes: Bytes::from_static(b"JPEGDATA"),
            mime: "image/jpeg".into(),
        }
    }

    #[test]
    fn body_shapes() {
        let v = submit_body(&payload("16:9", "1080p", false), None).expect("t2v");
        assert_eq!(v["instances"][0]["prompt"], "waves on basalt");
        assert!(v["instances"][0].get("image").is_none());
        let p = &v["parameters"];
        assert_eq!(p["aspectRatio"], "16:9");
        assert_eq!(p["resolution"], "1080p");
        assert_eq!(p["durationSeconds"], 8);
        assert!(p["durationSeconds"].is_number());
        assert_eq!(p["sampleCount"], 1);
        assert_eq!(p["negativePrompt"], "text overlays");
        assert_eq!(p["personGeneration"], "allow_all");
        assert!(p.get("seed").is_none());
        assert!(!v.to_string().contains("seed"));

        let img = frame();
        let v = submit_body(&payload("9:16", "480p", true), Some(&img)).expect("i2v");
        assert_eq!(v["parameters"]["personGeneration"], "allow_adult");
        assert_eq!(v["parameters"]["resolution"], "720p");
        let image = &v["instances"][0]["image"];
        assert_eq!(image["mimeType"], "image/jpeg");
        assert_eq!(
            image["bytesBase64Encoded"],
            base64::engine::general_purpose::STANDARD.encode(b"JPEGDATA")
        );

        for (aspect, res) in [("1:1", "720p"), ("4:3", "720p"), ("16:9", "4k")] {
            let err = submit_body(&payload(aspect, res, false), None).expect_err(aspect);
            assert_eq!(err.class, FailureClass::InvalidRequest, "{aspect} {res}");
        }
        let err = submit_body(&payload("16:9", "720p", true), None).expect_err("no image");
        assert_eq!(err.code.as_deref(), Some("missing_first_frame"));
    }

    #[test]
    fn operation_names() {
        for ok in [
            "models/veo-3.0-fast-generate-001/operations/abc123",
            "operations/x_y-z.1",
        ] {
            assert!(validate_operation_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/models/x",
            "models/../../admin",
            "models/x?key=1",
            "models/x#frag",
            "models/a b",
            "models//x",
            "models/%2e%2e/x",
        ] {
            let err = validate_operation_name(bad).expect_err(bad);
            assert_eq!(err.class, FailureClass::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn rpc_code_table() {
        let table = [
            (3, "Invalid durationSeconds", FailureClass::InvalidRequest),
            (8, "Resource exhausted", FailureClass::RateLimited),
            (13, "Internal error", FailureClass::ProviderError),
            (14, "Service unavailable", FailureClass::ProviderError),
            (4, "Deadline exceeded", FailureClass::ProviderError),
            (
                3,
                "The prompt was blocked by safety filters",
                FailureClass::ContentPolicy,
            ),
            (
                13,
                "Video generation blocked: sensitive content",
                FailureClass::ContentPolicy,
            ),
            (7, "permission denied", FailureClass::Auth),
            (
                9,
                "Billing account prepay balance depleted",
                FailureClass::InsufficientCredits,
            ),
            (99, "brand new", FailureClass::ProviderError),
        ];
        for (code, msg, want) in table {
            assert_eq!(rpc_class(code, msg), want, "{code} {msg}");
        }
    }

    enum Want {
        Pending,
        Authed(&'static str),
        Failed(FailureClass, &'static str),
    }

    #[test]
    fn operation_table() {
        let uri = "https://generativelanguage.googleapis.com/v1beta/files/xyz:download?alt=media";
        let table: Vec<(Value, Want)> = vec![
            (json!({"name":"models/m/operations/1"}), Want::Pending),
            (
                json!({"name":"models/m/operations/1","done":false}),
                Want::Pending,
            ),
            (
                json!({"name":"n","done":false,"metadata":{"@type":"x"}}),
                Want::Pending,
            ),
            (
                json!({"name":"n","done":true,"response":{"@type":"type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                    "generateVideoResponse":{"generatedSamples":[{"video":{"uri":uri}}]}}}),
                Want::Authed(uri),
            ),
            (
                json!({"name":"n","done":true,"response":{"generated_videos":[{"video":{"uri":"https://x/sdk.mp4"}}]}}),
                Want::Authed("https://x/sdk.mp4"),
            ),
            (
                json!({"name":"n","done":true,"error":{"code":3,"message":"bad request"}}),
                Want::Failed(FailureClass::InvalidRequest, "3"),
            ),
            (
                json!({"name":"n","done":true,"error":{"code":8,"message":"exhausted"}}),
                Want::Failed(FailureClass::RateLimited, "8"),
            ),
            (
                json!({"name":"n","done":true,"error":{"code":13,"message":"internal"}}),
                Want::Failed(FailureClass::ProviderError, "13"),
            ),
            (
                json!({"name":"n","done":true,"error":{"code":14}}),
                Want::Failed(FailureClass::ProviderError, "14"),
            ),
            (
                json!({"name":"n","done":true,"response":{"generateVideoResponse":{
                    "raiMediaFilteredCount":1,"raiMediaFilteredReasons":["Unsafe content: celebrity likeness"]}}}),
                Want::Failed(FailureClass::ContentPolicy, "rai_media_filtered"),
            ),
            (
                json!({"name":"n","done":true,"response":{"generateVideoResponse":{"generatedSamples":[]}}}),
                Want::Failed(FailureClass::ContentPolicy, "rai_media_filtered"),
            ),
            (
                json!({"name":"n","done":true,"response":{"generateVideoResponse":{"generatedSamples":[{"video":{"encoding":"video/mp4"}}]}}}),
                Want::Failed(FailureClass::ProviderError, "success_without_output"),
            ),
            (
                json!({"name":"n","done":true}),
                Want::Failed(FailureClass::ProviderError, "success_without_output"),
            ),
        ];
        for (body, want) in table {
            match (poll_outcome(&body, &scrub()).expect("outcome"), want) {
                (PollOutcome::Pending { .. }, Want::Pending) => {}
                (PollOutcome::Succeeded(ResultRef::AuthedUrl { url }), Want::Authed(w)) => {
                    assert_eq!(url, w)
                }
                (PollOutcome::Failed(e), Want::Failed(class, code)) => {
                    assert_eq!(e.class, class, "{body}");
                    assert_eq!(e.code.as_deref(), Some(code), "{body}");
                }
                (got, _) => panic!("{body} gave {got:?}"),
            }
        }
        let filtered = json!({"done":true,"response":{"generateVideoResponse":{
            "raiMediaFilteredCount":1,"raiMediaFilteredReasons":["Unsafe content: celebrity likeness"]}}});
        match poll_outcome(&filtered, &scrub()).expect("outcome") {
            PollOutcome::Failed(e) => {
                assert!(e.message.contains("celebrity likeness"), "{}", e.message)
            }
            other => panic!("{other:?}"),
        }
        assert!(poll_outcome(&json!("nope"), &scrub()).is_err());
    }

    #[test]
    fn http_error_table() {
        let g = |code: u16, status: &str, msg: &str| {
            json!({"error":{"code":code,"message":msg,"status":status}}).to_string()
        };
        let table: Vec<(u16, String, bool, FailureClass, &str)> = vec![
            (
                429,
                g(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted, try again later",
                ),
                false,
                FailureClass::RateLimited,
                "RESOURCE_EXHAUSTED",
            ),
            (
                429,
                g(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your daily request limit",
                ),
                false,
                FailureClass::QuotaExceeded,
                "RESOURCE_EXHAUSTED",
            ),
            (
                429,
                g(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Your project has exceeded its monthly spending cap",
                ),
                false,
                FailureClass::QuotaExceeded,
                "RESOURCE_EXHAUSTED",
            ),
            (
                402,
                g(402, "", "Payment required"),
                false,
                FailureClass::InsufficientCredits,
                "402",
            ),
            (
                400,
                g(
                    400,
                    "FAILED_PRECONDITION",
                    "Billing account prepayment credits are depleted",
                ),
                false,
                FailureClass::InsufficientCredits,
                "FAILED_PRECONDITION",
            ),
            (
                400,
                g(400, "FAILED_PRECONDITION", "User location is not supported"),
                false,
                FailureClass::InvalidRequest,
                "FAILED_PRECONDITION",
            ),
            (
                400,
                g(400, "INVALID_ARGUMENT", "seed is not supported"),
                false,
                FailureClass::InvalidRequest,
                "INVALID_ARGUMENT",
            ),
            (
                403,
                g(403, "PERMISSION_DENIED", "API key not valid"),
                false,
                FailureClass::Auth,
                "PERMISSION_DENIED",
            ),
            (
                404,
                g(404, "NOT_FOUND", "Operation not found"),
                true,
                FailureClass::ProviderError,
                "not_found",
            ),
            (
                404,
                g(
                    404,
                    "NOT_FOUND",
                    "models/veo-3.1-generate-preview is not found for API version v1beta",
                ),
                true,
                FailureClass::ModelRetired,
                "NOT_FOUND",
            ),
            (
                404,
                g(
                    404,
                    "NOT_FOUND",
                    "model veo-3.1-generate-preview is no longer available",
                ),
                false,
                FailureClass::ModelRetired,
                "NOT_FOUND",
            ),
            (
                503,
                g(503, "UNAVAILABLE", "The model is overloaded"),
                true,
                FailureClass::ProviderError,
                "UNAVAILABLE",
            ),
            (
                500,
                "<html>oops</html>".to_string(),
                true,
                FailureClass::ProviderError,
                "500",
            ),
        ];
        for (status, body, on_poll, want, code) in table {
            let err = error_from_response(
                status,
                &HeaderMap::new(),
                body.as_bytes(),
                &scrub(),
                on_poll,
            );
            assert_eq!(err.class, want, "{status} {body}");
            assert_eq!(err.code.as_deref(), Some(code), "{status} {body}");
            assert_eq!(err.http_status, Some(status));
        }
    }

    fn adapter(base: &str) -> Veo {
        let acct = account("veo", base, "model = \"veo-3.0-fast-generate-001\"");
        Veo::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("AIzaTestKey0123456789abcdefghijklmno")),
        )
    }

    #[tokio::test]
    async fn submit_posts_predict_long_running_with_key() {
        let server = testing::serve(|r| {
            if r.uri.contains("1:1") {
                return json(500, json!({}));
            }
            json(
                200,
                json!({"name":"models/veo-3.0-fast-generate-001/operations/op123"}),
            )
        })
        .await;
        let v = adapter(&server.base);
        let p = payload("9:16", "720p", true);
        let out = v
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                task_id: "vid-1",
                attempt: 1,
                payload: &p,
                first_frame: Some(frame()),
            })
            .await
            .expect("accepted");
        match out {
            SubmitOutcome::Accepted {
                provider_task_id, ..
            } => assert_eq!(
                provider_task_id,
                "models/veo-3.0-fast-generate-001/operations/op123"
            ),
            other => panic!("{other:?}"),
        }
        let req = &server.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.uri,
            "/v1beta/models/veo-3.0-fast-generate-001:predictLongRunning"
        );
        assert_eq!(
            req.header("x-goog-api-key").as_deref(),
            Some("AIzaTestKey0123456789abcdefghijklmno")
        );
        assert!(req.header("authorization").is_none());
        assert_eq!(req.header("idempotency-key").as_deref(), Some("vid-1"));
        assert!(!req.uri.contains("key="));
        let body = req.json();
        assert_eq!(body["parameters"]["personGeneration"], "allow_adult");
        assert!(body["parameters"].get("seed").is_none());

        let sq = payload("1:1", "720p", false);
        let err = v
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                task_id: "vid-2",
                attempt: 1,
                payload: &sq,
                first_frame: None,
            })
            .await
            .expect_err("square");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn submit_errors_are_classified_and_scrubbed() {
        let server = testing::serve(|r| {
            let body = String::from_utf8_lossy(&r.body).to_string();
            if body.contains("daily") {
                json(429, json!({"error":{"code":429,"status":"RESOURCE_EXHAUSTED",
                    "message":"Quota exceeded for metric: predict_long_running_requests_per_day"}}))
            } else if body.contains("minute") {
                reply(429, &[("content-type","application/json"),("retry-after","12")],
                    json!({"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"Too many requests, retry later"}}).to_string())
            } else if body.contains("badkey") {
                json(400, json!({"error":{"code":400,"status":"INVALID_ARGUMENT",
                    "message":"API key not valid: AIzaTestKey0123456789abcdefghijklmno",
                    "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}))
            } else if body.contains("refused") {
                json(200, json!({"name":"models/x/operations/r","done":true,
                    "error":{"code":3,"message":"durationSeconds out of range"}}))
            } else {
                json(200, json!({"name":"models/x/operations/../../etc"}))
            }
        })
        .await;
        let v = adapter(&server.base);
        let cases = [
            ("daily", FailureClass::QuotaExceeded),
            ("minute", FailureClass::RateLimited),
            ("badkey", FailureClass::Auth),
            ("refused", FailureClass::InvalidRequest),
            ("evil", FailureClass::ProviderError),
        ];
        for (word, want) in cases {
            let mut p = payload("16:9", "720p", false);
            if let TaskPayload::Video { prompt, .. } = &mut p {
                *prompt = word.into();
            }
            let err = v
                .submit(SubmitRequest {
                    season: "s",
                    group: "g",
                    deps: &[],
                    task_id: "vid-3",
                    attempt: 1,
                    payload: &p,
                    first_frame: None,
                })
                .await
                .expect_err(word);
            assert_eq!(err.class, want, "{word}: {err:?}");
            assert!(!err.message.contains("AIzaTestKey"), "{}", err.message);
            if word == "minute" {
                assert_eq!(err.retry_after, Some(Duration::from_secs(12)));
            }
        }
    }

    #[tokio::test]
    async fn poll_and_authed_download_with_redirect() {
        let server = testing::serve(|r| {
            let has_key = r.header("x-goog-api-key").is_some();
            match r.uri.as_str() {
                "/gemini/v1beta/models/veo/operations/running" => json(200, json!({"name":"models/veo/operations/running"})),
                "/gemini/v1beta/models/veo/operations/done" => json(200, json!({"name":"models/veo/operations/done","done":true,
                    "response":{"generateVideoResponse":{"generatedSamples":[{"video":{"uri":"URI"}}]}}})),
                "/gemini/v1beta/files/abc:download?alt=media" if has_key => {
                    reply(302, &[("location", "/storage/abc.mp4?sig=1")], "")
                }
                "/gemini/v1beta/files/abc:download?alt=media" => reply(401, &[], ""),
                "/storage/abc.mp4?sig=1" => reply(200, &[("content-type","video/mp4")], "VEO"),
                "/gemini/v1beta/files/old:download?alt=media" => reply(404, &[], ""),
                _ => json(404, json!({"error":{"code":404,"status":"NOT_FOUND","message":"Requested entity was not found."}})),
            }
        })
        .await;
        let base = format!("{}/gemini", server.base);
        let v = adapter(&base);
        assert!(matches!(
            v.poll("models/veo/operations/running", None)
                .await
                .expect("poll"),
            PollOutcome::Pending { .. }
        ));
        match v
            .poll("models/veo/operations/done", None)
            .await
            .expect("poll")
        {
            PollOutcome::Succeeded(ResultRef::AuthedUrl { url }) => assert_eq!(url, "URI"),
            other => panic!("{other:?}"),
        }
        let err = v
            .poll("models/veo/operations/missing", None)
            .await
            .expect_err("404");
        assert_eq!(err.class, FailureClass::ProviderError);
        assert_eq!(err.code.as_deref(), Some("not_found"));
        let err = v
            .poll("models/../secrets", None)
            .await
            .expect_err("bad name");
        assert_eq!(err.class, FailureClass::InvalidRequest);

        let dl = v
            .fetch(&ResultRef::AuthedUrl {
                url: format!("{base}/v1beta/files/abc:download?alt=media"),
            })
            .await
            .expect("download");
        assert_eq!(dl.ext.as_deref(), Some("mp4"));
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"VEO");
        let err = v
            .fetch(&ResultRef::AuthedUrl {
                url: format!("{base}/v1beta/files/old:download?alt=media"),
            })
            .await
            .err()
            .expect("expired");
        assert_eq!(err.class, FailureClass::ResultExpired);

        let reqs = server.requests();
        let hop = reqs
            .iter()
            .find(|r| r.uri.starts_with("/storage/"))
            .expect("redirect followed");
        // Same host as the base URL but outside its path: the key is not sent there.
        assert!(hop.header("x-goog-api-key").is_none());
        assert!(reqs
            .iter()
            .filter(|r| r.uri.starts_with("/gemini/v1beta/"))
            .all(|r| r.header("x-goog-api-key").is_some()));
    }

    #[tokio::test]
    async fn foreign_uri_is_fetched_without_the_key() {
        let cdn = testing::serve(|r| {
            if r.header("x-goog-api-key").is_some() {
                reply(400, &[], "key leaked")
            } else {
                reply(200, &[("content-type", "video/mp4")], "CDN")
            }
        })
        .await;
        let api = testing::serve(|_| reply(500, &[], "")).await;
        let v = adapter(&format!("{}/gemini", api.base));
        let dl = v
            .fetch(&ResultRef::AuthedUrl {
                url: format!("{}/files/x.mp4", cdn.base),
            })
            .await
            .expect("plain download");
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"CDN");
        assert!(cdn.requests()[0].header("x-goog-api-key").is_none());
    }
}
