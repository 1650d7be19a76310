//! Family `runway`: Runway's task API (`/v1/image_to_video`, `/v1/text_to_video`,
//! `/v1/tasks/{id}`) and relay passthroughs of it (docs/providers.md, "runway").
//!
//! Quirks handled here:
//! - Every request carries `X-Runway-Version: 2024-11-06` besides the bearer key.
//! - Fields are camelCase; `ratio` is a pixel string (`1280:720`, `720:1280`, `960:960`), not an
//!   aspect; `duration` is an integer; the first frame goes out as a `data:` URI in `promptImage`.
//! - Over-concurrency is not an error: the task is accepted and sits in `THROTTLED`, which stays
//!   pending with `THROTTLED` as its sub-status. HTTP 429 means the rolling daily generation cap
//!   is used up, so it is `quota_exceeded`, not `rate_limited`.
//! - Failures carry a `failureCode`: `SAFETY.*` / `INPUT_PREPROCESSING.SAFETY.*` are moderation,
//!   `ASSET.INVALID` (and other input preprocessing codes) a bad input, and `INTERNAL*` /
//!   `THIRD_PARTY.UNAVAILABLE` provider faults. `CANCELLED` and `CANCELED` are both accepted.
//! - `SUCCEEDED` without `output` is a failure, never a success.
//! - Relays answer either the native task or an envelope
//!   `{"code":"success","data":{"task_id","status","progress":"45%","fail_reason","data":{…}}}`;
//!   the native task inside is preferred. Their first polls may say `task_not_exist` (in the body
//!   or as a 404): that is reported as `not_found`, which the worker retries within its grace window.
//! - Output URLs are signed and expire within 24–48 h. A download that answers 403/404/410 is
//!   `result_expired`; the worker then polls again, and a re-GET of the task returns fresh URLs.
//! - [`Runway::cancel`] is `DELETE /v1/tasks/{id}` (which also deletes a finished task).

use super::billing::{Bill, Bills};
use super::http::{self, openai, Scrubber, IDEMPOTENCY_KEY};
use super::{
    video_args, Download, InputImage, PollOutcome, Provider, ProviderError, RenderPhase, ResultRef,
    SubmitOutcome, SubmitRequest,
};
use async_trait::async_trait;
use base64::Engine;
use dramaq_common::config::{AccountConfig, Family, Secret};
use dramaq_common::{FailureClass, TaskPayload};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

/// Header naming the API version; Runway refuses requests without it.
pub const VERSION_HEADER: &str = "X-Runway-Version";
pub const API_VERSION: &str = "2024-11-06";

/// Cap on a cancel answer's body, which is never used.
const CANCEL_BODY_CAP: usize = 64 * 1024;

pub struct Runway {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    scrub: Scrubber,
    /// `cost` (credits, as USD) of renders seen succeeded and not settled yet, by task id.
    bills: Bills,
}

/// USD per Runway credit.
const USD_PER_CREDIT: f64 = 0.01;

/// The `cost` (credits) of a finished task: on the native task or inside a relay's envelope.
fn reported_credits(body: &Value) -> Option<f64> {
    [
        body.get("cost"),
        body.pointer("/data/cost"),
        body.pointer("/data/data/cost"),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_f64)
    .filter(|c| c.is_finite() && *c >= 0.0)
}

/// Runway's pixel-string ratio for an aspect ratio.
pub fn ratio_for(aspect_ratio: &str) -> Result<&'static str, ProviderError> {
    match aspect_ratio.trim() {
        "16:9" => Ok("1280:720"),
        "9:16" => Ok("720:1280"),
        "1:1" => Ok("960:960"),
        other => Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("aspect ratio {other:?} is not supported by Runway (16:9, 9:16 or 1:1)"),
        )
        .with_code("unsupported_aspect_ratio")),
    }
}

fn data_uri(img: &InputImage) -> String {
    format!(
        "data:{};base64,{}",
        img.mime,
        base64::engine::general_purpose::STANDARD.encode(&img.bytes)
    )
}

/// The create path and JSON body for one video payload.
pub fn submit_body(
    model: &str,
    payload: &TaskPayload,
    image: Option<&InputImage>,
) -> Result<(&'static str, Value), ProviderError> {
    let v = video_args("runway", payload, image)?;
    let mut body = json!({
        "promptText": v.prompt,
        "ratio": ratio_for(v.aspect_ratio)?,
        "duration": v.duration_s,
    });
    if !model.is_empty() {
        body["model"] = json!(model);
    }
    if let Some(seed) = v.seed {
        body["seed"] = json!(seed);
    }
    // Only the Veo models behind Runway take a negative prompt; Gen-4 refuses unknown fields.
    if model.to_ascii_lowercase().starts_with("veo") {
        if let Some(neg) = v.negative_prompt {
            body["negativePrompt"] = json!(neg);
        }
    }
    Ok(match v.image {
        Some(img) => {
            body["promptImage"] = json!(data_uri(img));
            ("/v1/image_to_video", body)
        }
        None => ("/v1/text_to_video", body),
    })
}

/// Relays' "this task is not visible (yet)".
fn says_task_not_exist(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("task_not_exist") || t.contains("task not exist")
}

fn not_found(message: String, http_status: Option<u16>) -> ProviderError {
    let mut e = ProviderError::new(FailureClass::ProviderError, message).with_code("not_found");
    e.http_status = http_status;
    e
}

/// A non-2xx answer as a classified error. Runway's own body is `{"error": "text"}`; relays send
/// the OpenAI envelope. 429 is the daily generation cap (`quota_exceeded`).
pub fn error_from_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
) -> ProviderError {
    let err = openai::parse_error_body(body);
    let text = err.message.as_deref().unwrap_or("").to_ascii_lowercase();
    let out_of_credits = text.contains("enough credits") || text.contains("insufficient credit");
    let class = match (status, openai::classify(status, &err)) {
        _ if out_of_credits => FailureClass::InsufficientCredits,
        (429, FailureClass::InsufficientCredits) => FailureClass::InsufficientCredits,
        // A relay's own per-minute limit (OpenAI envelope) is retryable; Runway's native 429
        // (`{"error": "..."}`) is the daily generation cap.
        (429, _) if err.code.as_deref() == Some("rate_limit_exceeded") => FailureClass::RateLimited,
        (429, _) => FailureClass::QuotaExceeded,
        (_, class) => class,
    };
    let message = match &err.message {
        Some(m) => scrub.clean(m),
        None => format!("HTTP {status}"),
    };
    let hint = match class {
        FailureClass::QuotaExceeded | FailureClass::RateLimited | FailureClass::ProviderError => {
            http::retry_after(headers)
        }
        _ => None,
    };
    ProviderError::new(class, message)
        .with_code(
            err.code
                .map(|c| scrub.clean(&c))
                .unwrap_or_else(|| status.to_string()),
        )
        .with_status(status)
        .with_retry_after(hint)
}

/// Class of a failed task from its `failureCode` (and, without one, its text).
pub fn failure_class(code: &str, message: &str) -> FailureClass {
    let c = code.trim().to_ascii_uppercase();
    if c.starts_with("SAFETY") || c.starts_with("INPUT_PREPROCESSING.SAFETY") {
        FailureClass::ContentPolicy
    } else if c.starts_with("ASSET.") || c.starts_with("INPUT_PREPROCESSING") {
        FailureClass::InvalidRequest
    } else if c.starts_with("INTERNAL") || c.starts_with("THIRD_PARTY") {
        FailureClass::ProviderError
    } else if openai::mentions_content_policy(message) || openai::mentions_content_policy(&c) {
        FailureClass::ContentPolicy
    } else {
        FailureClass::ProviderError
    }
}

/// Progress as Runway's float 0–1, a relay's `"45%"`, or a percentage number.
fn progress(v: Option<&Value>) -> Option<f32> {
    let (value, percent) = match v? {
        Value::Number(n) => (n.as_f64()?, false),
        Value::String(s) => {
            let s = s.trim();
            (
                s.trim_end_matches('%').trim().parse::<f64>().ok()?,
                s.ends_with('%'),
            )
        }
        _ => return None,
    };
    if !value.is_finite() {
        return None;
    }
    let fraction = if percent || value > 1.0 {
        value / 100.0
    } else {
        value
    };
    Some(fraction.clamp(0.0, 1.0) as f32)
}

fn non_empty_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The first output URL: `output` is an array of URLs (a bare string is tolerated).
fn first_output(v: &Value) -> Option<String> {
    match v.get("output") {
        Some(Value::Array(items)) => items.iter().find_map(|i| non_empty_str(Some(i))),
        Some(s @ Value::String(_)) => non_empty_str(Some(s)),
        _ => None,
    }
}

/// A wrapped envelope: `code` but no task `status` at the top.
fn is_envelope(v: &Value) -> bool {
    v.get("code").is_some() && v.get("status").is_none()
}

fn envelope_ok(code: &Value) -> bool {
    match code {
        Value::String(s) => {
            let s = s.trim();
            s.eq_ignore_ascii_case("success") || s == "0" || s.eq_ignore_ascii_case("ok")
        }
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// A relay envelope whose `code` is not success.
fn envelope_error(v: &Value, scrub: &Scrubber) -> ProviderError {
    let code = v
        .get("code")
        .and_then(http::json_string)
        .unwrap_or_default();
    let message = v
        .get("message")
        .and_then(http::json_string)
        .unwrap_or_default();
    if says_task_not_exist(&code) || says_task_not_exist(&message) {
        return not_found(
            format!("task not visible yet: {}", scrub.clean(&code)),
            None,
        );
    }
    let err = openai::ApiError {
        message: Some(message.clone()).filter(|m| !m.is_empty()),
        code: Some(code.clone()).filter(|c| !c.is_empty()),
        kind: None,
    };
    let class = match openai::classify(500, &err) {
        FailureClass::ProviderError if openai::mentions_content_policy(&message) => {
            FailureClass::ContentPolicy
        }
        FailureClass::ProviderError if openai::mentions_model_retired(&message) => {
            FailureClass::ModelRetired
        }
        class => class,
    };
    let text = if message.is_empty() {
        format!("relay error {}", scrub.clean(&code))
    } else {
        scrub.clean(&message)
    };
    ProviderError::new(class, text).with_code(scrub.clean(&code))
}

/// One status body (native task or relay envelope) → what the worker should do.
pub fn poll_outcome(body: &Value, scrub: &Scrubber) -> Result<PollOutcome, ProviderError> {
    let (task, wrapper) = if is_envelope(body) {
        let code = body.get("code").cloned().unwrap_or_default();
        if !envelope_ok(&code) {
            return Err(envelope_error(body, scrub));
        }
        let Some(data) = body.get("data").filter(|d| d.is_object()) else {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                "relay envelope without a data object",
            )
            .with_code("malformed_response"));
        };
        match data.get("data") {
            Some(inner) if inner.get("status").and_then(Value::as_str).is_some() => {
                (inner, Some(data))
            }
            _ => (data, None),
        }
    } else {
        (body, None)
    };
    let Some(status) = task.get("status").and_then(Value::as_str).map(str::trim) else {
        return Err(ProviderError::new(
            FailureClass::ProviderError,
            "task response without a status field",
        )
        .with_code("malformed_response"));
    };
    let field = |name: &str| {
        non_empty_str(task.get(name)).or_else(|| wrapper.and_then(|w| non_empty_str(w.get(name))))
    };
    Ok(match status.to_ascii_uppercase().as_str() {
        "SUCCEEDED" | "SUCCESS" | "SUCCEED" | "COMPLETED" => {
            let url = first_output(task)
                .or_else(|| wrapper.and_then(first_output))
                .or_else(|| field("result_url"))
                .or_else(|| field("video_url"));
            match url {
                Some(url) => PollOutcome::Succeeded(ResultRef::Url { url }),
                None => PollOutcome::Failed(
                    ProviderError::new(FailureClass::ProviderError, "success without output")
                        .with_code("success_without_output"),
                ),
            }
        }
        "FAILED" | "FAILURE" | "ERROR" => {
            let code = field("failureCode");
            let text = field("failure").or_else(|| field("fail_reason"));
            let class = failure_class(code.as_deref().unwrap_or(""), text.as_deref().unwrap_or(""));
            let message = match (&text, &code) {
                (Some(t), _) => scrub.clean(t),
                (None, Some(c)) => format!("render failed ({})", scrub.clean(c)),
                (None, None) => "render failed".to_string(),
            };
            let mut e = ProviderError::new(class, message);
            e.code = Some(
                code.map(|c| scrub.clean(&c))
                    .unwrap_or_else(|| "failed".to_string()),
            );
            PollOutcome::Failed(e)
        }
        "CANCELLED" | "CANCELED" => PollOutcome::Failed(
            ProviderError::new(
                FailureClass::ProviderError,
                "task was cancelled or deleted at Runway",
            )
            .with_code("cancelled"),
        ),
        // PENDING, THROTTLED, RUNNING, relay QUEUED/IN_PROGRESS/NOT_START, and words we do not
        // know yet: keep polling.
        upper => PollOutcome::Pending {
            phase: match upper {
                "PENDING" | "THROTTLED" | "QUEUED" | "NOT_START" | "SUBMITTED" => {
                    RenderPhase::Queued
                }
                _ => RenderPhase::Running,
            },
            sub_status: super::sub_status(status),
            progress: progress(task.get("progress"))
                .or_else(|| wrapper.and_then(|w| progress(w.get("progress")))),
            poll_after: None,
        },
    })
}

/// The task id from a create answer: Runway's `{"id"}` or a relay envelope's `data.task_id`.
fn created_id(v: &Value, scrub: &Scrubber) -> Result<Option<String>, ProviderError> {
    if is_envelope(v) {
        if !envelope_ok(v.get("code").unwrap_or(&Value::Null)) {
            return Err(envelope_error(v, scrub));
        }
        let data = v.get("data").unwrap_or(&Value::Null);
        if let Some(d) = data.as_object() {
            return Ok(d
                .get("task_id")
                .or_else(|| d.get("id"))
                .and_then(http::json_string));
        }
        return Ok(http::json_string(data));
    }
    Ok(v.get("id")
        .or_else(|| v.get("task_id"))
        .and_then(http::json_string))
}

impl Runway {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        Runway {
            client,
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: acct.model.trim().to_string(),
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
            bills: Bills::default(),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let rb = self
            .client
            .request(method, http::join_url(&self.base_url, path))
            .header(VERSION_HEADER, API_VERSION);
        Ok(http::with_auth(rb, self.auth()?))
    }

    fn auth(&self) -> Result<Option<http::Auth>, ProviderError> {
        http::auth_header("Bearer", self.api_key.as_ref())
    }

    fn task_path(id: &str) -> String {
        format!("/v1/tasks/{}", http::path_segment(id))
    }

    /// Cancel a pending, throttled or running task (`DELETE /v1/tasks/{id}`). Runway deletes a
    /// task that already finished, so call this only for renders that are still wanted gone.
    pub async fn cancel(&self, provider_task_id: &str) -> Result<(), ProviderError> {
        let rb = self.request(Method::DELETE, &Self::task_path(provider_task_id))?;
        // The answer body is not needed; a small cap keeps an odd one from being read whole.
        let a = http::exchange(rb, CANCEL_BODY_CAP).await?;
        if a.is_success() {
            return Ok(());
        }
        Err(self.poll_error(a.status, &a.headers, &a.body))
    }

    /// A failed task GET/DELETE: 404 and `task_not_exist` are `not_found` for the grace window.
    fn poll_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let mut err = error_from_response(status, headers, body, &self.scrub);
        let relay_missing = says_task_not_exist(&String::from_utf8_lossy(body));
        if (status == 404 || relay_missing) && err.class != FailureClass::ModelRetired {
            err.class = FailureClass::ProviderError;
            err.code = Some("not_found".into());
            err.retry_after = None;
        }
        err
    }
}

#[async_trait]
impl Provider for Runway {
    fn family(&self) -> Family {
        Family::Runway
    }

    async fn cancel(
        &self,
        provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<bool, ProviderError> {
        Runway::cancel(self, provider_task_id).await.map(|_| true)
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let (path, body) = submit_body(&self.model, req.payload, req.first_frame.as_ref())?;
        let rb = self
            .request(Method::POST, path)?
            .header(IDEMPOTENCY_KEY, req.task_id)
            .json(&body);
        let scrub = &self.scrub;
        let (answer, v) = http::call_json(rb, "Runway create response", scrub, |a| {
            error_from_response(a.status, &a.headers, &a.body, scrub)
        })
        .await?;
        let status = answer.status;
        match created_id(&v, &self.scrub)? {
            Some(id) => Ok(SubmitOutcome::Accepted {
                provider_task_id: http::accept_task_id(id)?,
                poll_locator: None,
                poll_after: None,
            }),
            None => Err(ProviderError::new(
                FailureClass::ProviderError,
                "Runway create response without an id",
            )
            .with_code("malformed_response")
            .with_status(status)),
        }
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        let rb = self.request(Method::GET, &Self::task_path(provider_task_id))?;
        let (_, v) = http::call_json(rb, "Runway task response", &self.scrub, |a| {
            self.poll_error(a.status, &a.headers, &a.body)
        })
        .await?;
        let outcome = poll_outcome(&v, &self.scrub)?;
        if let (PollOutcome::Succeeded(_), Some(credits)) = (&outcome, reported_credits(&v)) {
            self.bills
                .note(provider_task_id, Bill::Usd(credits * USD_PER_CREDIT));
        }
        Ok(outcome)
    }

    fn reported_bill(&self, _task_id: &str, provider_task_id: Option<&str>) -> Option<Bill> {
        self.bills.take(provider_task_id?)
    }

    /// Output URLs are signed CDN links: fetched without credentials. 403/404/410 means the
    /// signature lapsed (`result_expired`); the worker re-polls and the task GET signs anew.
    async fn fetch(&self, result: &ResultRef) -> Result<Download, ProviderError> {
        let auth = || self.auth();
        http::fetch_result(&self.client, result, &self.base_url, auth, &self.scrub).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::testing::{self, account, json, reply};
    use bytes::Bytes;

    fn scrub() -> Scrubber {
        Scrubber::default()
    }

    #[test]
    fn ratio_table() {
        for (aspect, want) in [
            ("16:9", "1280:720"),
            ("9:16", "720:1280"),
            ("1:1", "960:960"),
            (" 9:16 ", "720:1280"),
        ] {
            assert_eq!(ratio_for(aspect).expect("ratio"), want, "{aspect}");
        }
        for aspect in ["4:3", "", "1280:720"] {
            let err = ratio_for(aspect).expect_err("unsupported");
            assert_eq!(err.class, FailureClass::InvalidRequest);
        }
    }

    #[test]
    fn failure_code_table() {
        let table = [
            ("SAFETY.INPUT.TEXT", "", FailureClass::ContentPolicy),
            ("SAFETY.INPUT.IMAGE", "", FailureClass::ContentPolicy),
            ("SAFETY.OUTPUT.VIDEO", "", FailureClass::ContentPolicy),
            (
                "INPUT_PREPROCESSING.SAFETY.TEXT",
                "",
                FailureClass::ContentPolicy,
            ),
            ("ASSET.INVALID", "", FailureClass::InvalidRequest),
            (
                "INPUT_PREPROCESSING.INTERNAL",
                "",
                FailureClass::InvalidRequest,
            ),
            (
                "INTERNAL.BAD_OUTPUT.CODE01",
                "",
                FailureClass::ProviderError,
            ),
            ("THIRD_PARTY.UNAVAILABLE", "", FailureClass::ProviderError),
            ("INTERNAL", "", FailureClass::ProviderError),
            ("", "something broke", FailureClass::ProviderError),
            (
                "",
                "blocked by content moderation",
                FailureClass::ContentPolicy,
            ),
            ("NEW.CODE", "", FailureClass::ProviderError),
        ];
        for (code, msg, want) in table {
            assert_eq!(failure_class(code, msg), want, "{code} / {msg}");
        }
    }

    enum Want {
        Pending(&'static str, Option<f32>),
        Url(&'static str),
        Failed(FailureClass, &'static str),
    }

    #[test]
    fn render_phases() {
        let table = [
            ("PENDING", RenderPhase::Queued),
            ("THROTTLED", RenderPhase::Queued),
            ("QUEUED", RenderPhase::Queued),
            ("NOT_START", RenderPhase::Queued),
            ("RUNNING", RenderPhase::Running),
            ("IN_PROGRESS", RenderPhase::Running),
            ("BRAND_NEW_STATE", RenderPhase::Running),
        ];
        for (word, want) in table {
            match poll_outcome(&json!({"id":"t","status":word}), &Scrubber::default()) {
                Ok(PollOutcome::Pending { phase, .. }) => assert_eq!(phase, want, "{word}"),
                other => panic!("{word}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_table() {
        let table: Vec<(Value, Want)> = vec![
            (
                json!({"id":"t","createdAt":"2024-06-01T00:00:00Z","status":"PENDING"}),
                Want::Pending("PENDING", None),
            ),
            (
                json!({"id":"t","status":"THROTTLED"}),
                Want::Pending("THROTTLED", None),
            ),
            (
                json!({"id":"t","status":"RUNNING","progress":0.42}),
                Want::Pending("RUNNING", Some(0.42)),
            ),
            (
                json!({"id":"t","status":"BRAND_NEW_STATE"}),
                Want::Pending("BRAND_NEW_STATE", None),
            ),
            (
                json!({"id":"t","status":"SUCCEEDED","output":["https://cdn/a.mp4","https://cdn/b.mp4"]}),
                Want::Url("https://cdn/a.mp4"),
            ),
            (
                json!({"id":"t","status":"SUCCEEDED","output":[]}),
                Want::Failed(FailureClass::ProviderError, "success_without_output"),
            ),
            (
                json!({"id":"t","status":"SUCCEEDED"}),
                Want::Failed(FailureClass::ProviderError, "success_without_output"),
            ),
            (
                json!({"id":"t","status":"FAILED","failure":"text flagged","failureCode":"SAFETY.INPUT.TEXT"}),
                Want::Failed(FailureClass::ContentPolicy, "SAFETY.INPUT.TEXT"),
            ),
            (
                json!({"id":"t","status":"FAILED","failure":"bad","failureCode":"INTERNAL.BAD_OUTPUT.CODE01"}),
                Want::Failed(FailureClass::ProviderError, "INTERNAL.BAD_OUTPUT.CODE01"),
            ),
            (
                json!({"id":"t","status":"FAILED","failureCode":"ASSET.INVALID"}),
                Want::Failed(FailureClass::InvalidRequest, "ASSET.INVALID"),
            ),
            (
                json!({"id":"t","status":"FAILED"}),
                Want::Failed(FailureClass::ProviderError, "failed"),
            ),
            (
                json!({"id":"t","status":"CANCELLED"}),
                Want::Failed(FailureClass::ProviderError, "cancelled"),
            ),
            (
                json!({"id":"t","status":"CANCELED"}),
                Want::Failed(FailureClass::ProviderError, "cancelled"),
            ),
            // Relay envelope: the native task inside wins.
            (
                json!({"code":"success","message":"","data":{"task_id":"t","action":"IMAGE_TO_VIDEO",
                    "status":"SUCCESS","progress":"100%","data":{"id":"t","status":"SUCCEEDED","output":["https://cdn/w.mp4"]}}}),
                Want::Url("https://cdn/w.mp4"),
            ),
            (
                json!({"code":"success","message":"","data":{"task_id":"t","status":"QUEUED","progress":"0%","data":null}}),
                Want::Pending("QUEUED", Some(0.0)),
            ),
            (
                json!({"code":"success","data":{"task_id":"t","status":"IN_PROGRESS","progress":"45%"}}),
                Want::Pending("IN_PROGRESS", Some(0.45)),
            ),
            (
                json!({"code":"success","data":{"task_id":"t","status":"IN_PROGRESS","progress":"45%",
                    "data":{"id":"t","status":"RUNNING"}}}),
                Want::Pending("RUNNING", Some(0.45)),
            ),
            (
                json!({"code":"success","data":{"task_id":"t","status":"FAILURE","fail_reason":"content moderation rejected the prompt"}}),
                Want::Failed(FailureClass::ContentPolicy, "failed"),
            ),
            (
                json!({"code":"success","data":{"task_id":"t","status":"FAILURE","fail_reason":"x",
                    "data":{"id":"t","status":"FAILED","failureCode":"SAFETY.OUTPUT.VIDEO"}}}),
                Want::Failed(FailureClass::ContentPolicy, "SAFETY.OUTPUT.VIDEO"),
            ),
            (
                json!({"code":"success","data":{"task_id":"t","status":"SUCCESS"}}),
                Want::Failed(FailureClass::ProviderError, "success_without_output"),
            ),
        ];
        for (body, want) in table {
            let got = poll_outcome(&body, &scrub()).expect("outcome");
            match (&got, want) {
                (
                    PollOutcome::Pending {
                        sub_status,
                        progress,
                        ..
                    },
                    Want::Pending(w, p),
                ) => {
                    assert_eq!(sub_status, w, "{body}");
                    assert_eq!(*progress, p, "{body}");
                }
                (PollOutcome::Succeeded(ResultRef::Url { url }), Want::Url(w)) => {
                    assert_eq!(url, w)
                }
                (PollOutcome::Failed(e), Want::Failed(class, code)) => {
                    assert_eq!(e.class, class, "{body}");
                    assert_eq!(e.code.as_deref(), Some(code), "{body}");
                }
                (got, _) => panic!("{body} gave {got:?}"),
            }
        }
        match poll_outcome(
            &json!({"id":"t","status":"SUCCEEDED","output":[]}),
            &scrub(),
        )
        .expect("outcome")
        {
            PollOutcome::Failed(e) => assert_eq!(e.message, "success without output"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_and_relay_errors() {
        let err = poll_outcome(&json!({"id":"t"}), &scrub()).expect_err("no status");
        assert_eq!(err.class, FailureClass::ProviderError);
        assert_eq!(err.code.as_deref(), Some("malformed_response"));
        let err = poll_outcome(
            &json!({"code":"task_not_exist","message":"task_not_exist","data":null}),
            &scrub(),
        )
        .expect_err("not visible yet");
        assert_eq!(err.class, FailureClass::ProviderError);
        assert_eq!(err.code.as_deref(), Some("not_found"));
        let err = poll_outcome(
            &json!({"code":"success","message":"","data":null}),
            &scrub(),
        )
        .expect_err("no data");
        assert_eq!(err.code.as_deref(), Some("malformed_response"));
        let err = poll_outcome(
            &json!({"code":"invalid_request","message":"ratio not allowed"}),
            &scrub(),
        )
        .expect_err("relay error");
        assert_eq!(err.class, FailureClass::InvalidRequest);
    }

    #[test]
    fn http_error_table() {
        let table: &[(u16, &str, FailureClass)] = &[
            (
                400,
                r#"{"error":"promptText is too long"}"#,
                FailureClass::InvalidRequest,
            ),
            (401, r#"{"error":"Invalid API key"}"#, FailureClass::Auth),
            (
                429,
                r#"{"error":"You have exceeded your daily task limit"}"#,
                FailureClass::QuotaExceeded,
            ),
            (429, "", FailureClass::QuotaExceeded),
            (502, "<html>bad gateway</html>", FailureClass::ProviderError),
            (
                503,
                r#"{"error":"shedding load"}"#,
                FailureClass::ProviderError,
            ),
            (504, "", FailureClass::ProviderError),
            (
                500,
                r#"{"error":{"code":"invalid_request","message":"bad ratio"}}"#,
                FailureClass::InvalidRequest,
            ),
        ];
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("30"),
        );
        for (status, body, want) in table {
            let err = error_from_response(*status, &h, body.as_bytes(), &scrub());
            assert_eq!(err.class, *want, "{status} {body}");
            assert_eq!(err.http_status, Some(*status));
        }
        let err = error_from_response(429, &h, b"{}", &scrub());
        assert_eq!(err.retry_after, Some(std::time::Duration::from_secs(30)));
    }

    fn payload(aspect: &str, first_frame: bool, seed: Option<u32>) -> TaskPayload {
        TaskPayload::Video {
            prompt: "a lighthouse at dusk".into(),
            negative_prompt: Some("blur".into()),
            duration_s: 5,
            aspect_ratio: aspect.into(),
            resolution: "720p".into(),
            first_frame: first_frame.then(|| "img-1".to_string()),
            seed,
        }
    }

    fn adapter(base: &str) -> Runway {
        let acct = account("runway", base, "model = \"gen4_turbo\"");
        Runway::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("key_runway_0123456789")),
        )
    }

    fn frame() -> InputImage {
        InputImage {
            bytes: Bytes::from_static(b"\x89PNGframe"),
            mime: "image/png".into(),
        }
    }

    #[tokio::test]
    async fn image_to_video_submit_sends_camel_case_and_headers() {
        let server =
            testing::serve(|_| json(200, json!({"id":"0b7f1a2c-9d3e-4f5a-8b6c-7d8e9f0a1b2c"})))
                .await;
        let r = adapter(&server.base);
        let p = payload("9:16", true, Some(42));
        let out = r
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
                provider_task_id,
                poll_locator,
                ..
            } => {
                assert_eq!(provider_task_id, "0b7f1a2c-9d3e-4f5a-8b6c-7d8e9f0a1b2c");
                assert_eq!(poll_locator, None);
            }
            other => panic!("{other:?}"),
        }
        let req = &server.requests()[0];
        assert_eq!(
            (req.method.as_str(), req.uri.as_str()),
            ("POST", "/v1/image_to_video")
        );
        assert_eq!(req.header("idempotency-key").as_deref(), Some("vid-1"));
        assert_eq!(req.header("x-runway-version").as_deref(), Some(API_VERSION));
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer key_runway_0123456789")
        );
        let v = req.json();
        assert_eq!(v["model"], "gen4_turbo");
        assert_eq!(v["promptText"], "a lighthouse at dusk");
        assert_eq!(v["ratio"], "720:1280");
        assert_eq!(v["duration"], 5);
        assert_eq!(v["seed"], 42);
        assert!(v.get("negativePrompt").is_none());
        let uri = v["promptImage"].as_str().expect("promptImage");
        assert!(uri.starts_with("data:image/png;base64,"), "{uri}");
    }

    #[tokio::test]
    async fn text_to_video_submit_and_wrapped_create() {
        let server = testing::serve(|_| {
            json(
                200,
                json!({"code":"success","message":"","data":{"task_id":"relay-7","status":"QUEUED"}}),
            )
        })
        .await;
        let r = adapter(&server.base);
        let p = payload("16:9", false, None);
        let out = r
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                task_id: "vid-2",
                attempt: 1,
                payload: &p,
                first_frame: None,
            })
            .await
            .expect("accepted");
        assert!(
            matches!(out, SubmitOutcome::Accepted { ref provider_task_id, .. } if provider_task_id == "relay-7")
        );
        let req = &server.requests()[0];
        assert_eq!(req.uri, "/v1/text_to_video");
        let v = req.json();
        assert_eq!(v["ratio"], "1280:720");
        assert!(v.get("seed").is_none());
        assert!(v.get("promptImage").is_none());

        // An image-to-video payload without its image is refused before sending.
        let p = payload("16:9", true, None);
        let err = r
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                task_id: "vid-2",
                attempt: 1,
                payload: &p,
                first_frame: None,
            })
            .await
            .expect_err("missing image");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn submit_errors_map_429_to_quota() {
        let server = testing::serve(|r| {
            let body = String::from_utf8_lossy(&r.body).to_string();
            if body.contains("quota") {
                json(429, json!({"error":"Daily task limit reached"}))
            } else if body.contains("auth") {
                json(401, json!({"error":"Bad key key_runway_0123456789"}))
            } else {
                json(400, json!({"error":"duration must be 5 or 10"}))
            }
        })
        .await;
        let r = adapter(&server.base);
        for (word, want) in [
            ("quota", FailureClass::QuotaExceeded),
            ("auth", FailureClass::Auth),
            ("bad", FailureClass::InvalidRequest),
        ] {
            let mut p = payload("1:1", false, None);
            if let TaskPayload::Video { prompt, .. } = &mut p {
                *prompt = word.into();
            }
            let err = r
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
            assert_eq!(err.class, want, "{word}");
            assert!(!err.message.contains("key_runway"), "{}", err.message);
        }
    }

    #[tokio::test]
    async fn a_succeeded_tasks_cost_in_credits_is_reported_once() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/v1/tasks/t-paid" => json(
                200,
                json!({"id":"t-paid","status":"SUCCEEDED","output":["https://cdn/p.mp4"],"cost":50}),
            ),
            _ => json(
                200,
                json!({"id":"t-run","status":"RUNNING","progress":0.5,"estimatedCost":50}),
            ),
        })
        .await;
        let p = adapter(&server.base);
        assert!(matches!(
            p.poll("t-run", None).await.unwrap(),
            PollOutcome::Pending { .. }
        ));
        assert_eq!(
            p.reported_bill("x", Some("t-run")),
            None,
            "an estimate is not a cost"
        );
        assert!(matches!(
            p.poll("t-paid", None).await.unwrap(),
            PollOutcome::Succeeded(_)
        ));
        let usd = p
            .reported_bill("x", Some("t-paid"))
            .expect("cost reported")
            .usd(0.0);
        assert!((usd - 0.5).abs() < 1e-9, "{usd}");
        assert_eq!(p.reported_bill("x", Some("t-paid")), None, "taken once");
    }

    #[tokio::test]
    async fn poll_paths_not_found_and_cancel() {
        let server = testing::serve(|r| match (r.method.as_str(), r.uri.as_str()) {
            (_, _) if r.header("x-runway-version").as_deref() != Some(API_VERSION) => {
                json(400, json!({"error":"missing version"}))
            }
            ("GET", "/v1/tasks/t-run") => json(200, json!({"id":"t-run","status":"THROTTLED"})),
            ("GET", "/v1/tasks/t-done") => json(
                200,
                json!({"id":"t-done","status":"SUCCEEDED","output":["https://cdn/done.mp4"]}),
            ),
            ("GET", "/v1/tasks/t-new") => json(
                200,
                json!({"code":"task_not_exist","message":"task_not_exist","data":null}),
            ),
            ("GET", "/v1/tasks/t-new400") => json(
                400,
                json!({"code":"task_not_exist","message":"task_not_exist"}),
            ),
            ("DELETE", "/v1/tasks/t-run") => reply(204, &[], ""),
            _ => json(404, json!({"error":"Not found"})),
        })
        .await;
        let r = adapter(&server.base);
        match r.poll("t-run", None).await.expect("poll") {
            PollOutcome::Pending { sub_status, .. } => assert_eq!(sub_status, "THROTTLED"),
            other => panic!("{other:?}"),
        }
        match r.poll("t-done", None).await.expect("poll") {
            PollOutcome::Succeeded(ResultRef::Url { url }) => {
                assert_eq!(url, "https://cdn/done.mp4")
            }
            other => panic!("{other:?}"),
        }
        for id in ["t-new", "t-new400", "t-missing"] {
            let err = r.poll(id, None).await.expect_err(id);
            assert_eq!(err.class, FailureClass::ProviderError, "{id}");
            assert_eq!(err.code.as_deref(), Some("not_found"), "{id}");
        }
        r.cancel("t-run").await.expect("cancelled");
        let err = r.cancel("t-gone").await.expect_err("404");
        assert_eq!(err.code.as_deref(), Some("not_found"));
        let reqs = server.requests();
        assert!(reqs
            .iter()
            .any(|q| q.method == "DELETE" && q.uri == "/v1/tasks/t-run"));
        assert!(reqs.iter().all(|q| q.header("authorization").is_some()));
    }

    #[tokio::test]
    async fn fetch_plain_and_expired() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/cdn/ok.mp4" if r.header("authorization").is_none() => {
                reply(200, &[("content-type", "video/mp4")], "RUNWAY")
            }
            "/cdn/ok.mp4" => reply(400, &[], "key leaked"),
            _ => reply(403, &[], "<Error>Request has expired</Error>"),
        })
        .await;
        let r = adapter(&server.base);
        let dl = r
            .fetch(&ResultRef::Url {
                url: format!("{}/cdn/ok.mp4", server.base),
            })
            .await
            .expect("fetch");
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"RUNWAY");
        let err = r
            .fetch(&ResultRef::Url {
                url: format!("{}/cdn/old.mp4", server.base),
            })
            .await
            .err()
            .expect("expired");
        assert_eq!(err.class, FailureClass::ResultExpired);
    }
}
