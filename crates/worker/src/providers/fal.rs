//! Family `fal`: the fal.ai queue (`queue.fal.run`; docs/providers.md, "fal"); Pika is served
//! here too.
//!
//! Quirks handled here:
//! - Auth is `Authorization: Key <FAL_KEY>`, not `Bearer`.
//! - The account's `model` is the model id path, possibly with a subpath
//!   (`fal-ai/kling-video/v2.1/pro/image-to-video`); submit posts the model's own input JSON
//!   there (`duration` is a string, the first frame a `data:` URL in `image_url`).
//! - Status and result URLs drop the subpath. The `status_url` / `response_url` / `cancel_url`
//!   the submit returns are authoritative and are stored as the poll locator
//!   `{"status_url","response_url","cancel_url"}`; only when they are missing are they derived
//!   from the first two segments of the model id (`{base}/{owner}/{name}/requests/{id}/status`).
//! - Locator URLs come back from Redis, so they are only used when they are on the same origin
//!   as the account's base URL (anything else is `invalid_request`): a record cannot send the key
//!   elsewhere.
//! - Statuses are `IN_QUEUE`, `IN_PROGRESS`, `COMPLETED` only; there is no failed state. A failed
//!   request ends `COMPLETED` and the failure shows on the result GET: a 4xx/5xx with `detail`,
//!   an `error_type` / `X-Fal-Error-Type` (`request_timeout`, `runner_disconnected`, …), or a
//!   body without a video URL. 422 is `invalid_request`, moderation words `content_policy`,
//!   runner faults `provider_error`. A gateway error without fal's error shape is reported as a
//!   failed poll instead, so the worker polls again rather than re-rendering.
//! - fal never rejects for concurrency (requests wait in `IN_QUEUE`).
//! - [`Fal::cancel`] is `PUT cancel_url` (only effective while queued).

use super::http::{self, openai, Auth, Scrubber, IDEMPOTENCY_KEY, JSON_BODY_CAP};
use super::{
    video_args, Download, InputImage, PollOutcome, Provider, ProviderError, RenderPhase, ResultRef,
    SubmitOutcome, SubmitRequest,
};
use async_trait::async_trait;
use base64::Engine;
use dramaq_common::config::{AccountConfig, Family, Secret};
use dramaq_common::{FailureClass, TaskPayload};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Header fal uses to say what kind of failure a result is.
pub const ERROR_TYPE_HEADER: &str = "x-fal-error-type";

pub struct Fal {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    scrub: Scrubber,
    /// `accounts.<name>.callback_url`: sent as the `fal_webhook` query parameter (with the task
    /// id appended); fal signs its callbacks (ED25519).
    callback_url: Option<String>,
}

/// The poll locator stored with the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    pub status_url: String,
    pub response_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<String>,
}

impl Locator {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<Locator, ProviderError> {
        serde_json::from_str(text).map_err(|_| {
            ProviderError::new(
                FailureClass::InvalidRequest,
                "fal poll locator is not {\"status_url\",\"response_url\"}",
            )
            .with_code("bad_poll_locator")
        })
    }
}

/// True when `url` has the same scheme, host and port as `base` (http or https only, no
/// user info): the only URLs the account's key may be sent to.
pub fn same_origin(url: &str, base: &str) -> bool {
    let (Ok(u), Ok(b)) = (reqwest::Url::parse(url), reqwest::Url::parse(base)) else {
        return false;
    };
    matches!(u.scheme(), "http" | "https")
        && u.scheme() == b.scheme()
        && u.username().is_empty()
        && u.password().is_none()
        && u.host_str().is_some()
        && u.host_str() == b.host_str()
        && u.port_or_known_default() == b.port_or_known_default()
}

fn foreign_url() -> ProviderError {
    ProviderError::new(
        FailureClass::InvalidRequest,
        "fal queue URL is not on the account's base_url host",
    )
    .with_code("foreign_queue_url")
}

/// The model id path, checked segment by segment (it goes into URLs verbatim).
pub fn model_path(model: &str) -> Result<Vec<&str>, ProviderError> {
    let segments: Vec<&str> = model.trim().trim_matches('/').split('/').collect();
    let ok = segments.len() >= 2
        && segments.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if ok {
        Ok(segments)
    } else {
        Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("fal model id {model:?} is not an owner/name[/subpath] path"),
        )
        .with_code("bad_model_id"))
    }
}

/// Queue URLs from the model id when the submit answer did not give them: the subpath is
/// dropped, only `{owner}/{name}` stays.
pub fn derived_locator(
    base: &str,
    model: &str,
    request_id: &str,
) -> Result<Locator, ProviderError> {
    let segments = model_path(model)?;
    let requests = http::join_url(
        base,
        &format!(
            "/{}/{}/requests/{}",
            segments[0],
            segments[1],
            http::path_segment(request_id)
        ),
    );
    Ok(Locator {
        status_url: format!("{requests}/status"),
        response_url: requests.clone(),
        cancel_url: Some(format!("{requests}/cancel")),
    })
}

/// The model input for one video payload.
pub fn submit_body(
    payload: &TaskPayload,
    image: Option<&InputImage>,
) -> Result<Value, ProviderError> {
    let v = video_args("fal", payload, image)?;
    let mut body = json!({
        "prompt": v.prompt,
        "duration": v.duration_s.to_string(),
        "aspect_ratio": v.aspect_ratio,
    });
    if let Some(neg) = v.negative_prompt {
        body["negative_prompt"] = json!(neg);
    }
    if let Some(img) = v.image {
        body["image_url"] = json!(format!(
            "data:{};base64,{}",
            img.mime,
            base64::engine::general_purpose::STANDARD.encode(&img.bytes)
        ));
    }
    Ok(body)
}

/// `detail` as text: a string, or FastAPI's `[{"loc","msg","type"}]`.
fn detail_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(_) => i
                        .get("msg")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| Some(i.to_string())),
                    _ => None,
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Value::Object(_) => v
            .get("message")
            .and_then(http::json_string)
            .or_else(|| Some(v.to_string())),
        _ => None,
    }
}

/// `type` fields inside a FastAPI `detail` list (`content_policy_violation`, …).
fn detail_types(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("type").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What a failed result said.
#[derive(Debug, Default)]
pub struct FalError {
    pub message: Option<String>,
    pub error_type: Option<String>,
    pub detail_types: Vec<String>,
}

impl FalError {
    fn from_body(body: &Value, headers: Option<&HeaderMap>) -> FalError {
        let header_type = headers
            .and_then(|h| h.get(ERROR_TYPE_HEADER))
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let error = body.get("error").filter(|e| !e.is_null());
        let message = body
            .get("detail")
            .and_then(detail_text)
            .or_else(|| error.and_then(detail_text));
        FalError {
            message,
            error_type: header_type.or_else(|| body.get("error_type").and_then(http::json_string)),
            detail_types: body.get("detail").map(detail_types).unwrap_or_default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.message.is_none() && self.error_type.is_none()
    }
}

/// Class of a failed fal request.
pub fn classify(http_status: Option<u16>, err: &FalError) -> FailureClass {
    let lower = format!(
        "{} {} {}",
        err.error_type.as_deref().unwrap_or(""),
        err.detail_types.join(" "),
        err.message.as_deref().unwrap_or("")
    )
    .to_ascii_lowercase();
    if openai::mentions_content_policy(&lower) || lower.contains("nsfw") {
        return FailureClass::ContentPolicy;
    }
    // fal locks an account whose balance ran out ("User is locked. Reason: Exhausted balance").
    if lower.contains("exhausted balance") || lower.contains("top up") {
        return FailureClass::InsufficientCredits;
    }
    if let Some(t) = err.error_type.as_deref() {
        let t = t.to_ascii_lowercase();
        if t.contains("timeout")
            || t.starts_with("runner")
            || t.starts_with("internal")
            || t.contains("unavailable")
        {
            return FailureClass::ProviderError;
        }
    }
    match http_status {
        Some(422) => FailureClass::InvalidRequest,
        Some(s) if !(200..300).contains(&s) => http::class_for_status(s),
        _ => FailureClass::ProviderError,
    }
}

fn fal_failure(http_status: Option<u16>, err: &FalError, scrub: &Scrubber) -> ProviderError {
    let class = classify(http_status, err);
    let message = match &err.message {
        Some(m) => scrub.clean(m),
        None => match http_status {
            Some(s) => format!("fal request failed with HTTP {s}"),
            None => "fal request failed".to_string(),
        },
    };
    let code = err
        .error_type
        .as_deref()
        .map(|t| scrub.clean(t))
        .or_else(|| http_status.map(|s| s.to_string()))
        .unwrap_or_else(|| "failed".to_string());
    let mut e = ProviderError::new(class, message).with_code(code);
    e.http_status = http_status;
    e
}

/// A failed request to the queue itself (submit, status): classified from the status and
/// fal's `detail`. A 404 on status is `not_found` for the worker's grace window.
pub fn request_error(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
    on_poll: bool,
) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = FalError::from_body(&v, Some(headers));
    let mut e = if err.is_empty() {
        openai::error_from_response(status, headers, body, scrub)
    } else {
        fal_failure(Some(status), &err, scrub)
    };
    if on_poll && status == 404 {
        e.class = FailureClass::ProviderError;
        e.code = Some("not_found".into());
    }
    e.http_status = Some(status);
    if matches!(
        e.class,
        FailureClass::RateLimited | FailureClass::ProviderError
    ) {
        e.retry_after = http::retry_after(headers);
    }
    e
}

/// The result GET of a `COMPLETED` request → the render's outcome. `Err` means the GET itself
/// should be retried (auth, throttling, a gateway without fal's error shape).
pub fn result_outcome(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
) -> Result<PollOutcome, ProviderError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = FalError::from_body(&v, Some(headers));
    if !(200..300).contains(&status) {
        let retry_get = match status {
            401 | 403 | 404 | 408 | 429 => true,
            500..=599 => err.is_empty(),
            _ => false,
        };
        if retry_get {
            return Err(request_error(status, headers, body, scrub, true));
        }
        return Ok(PollOutcome::Failed(fal_failure(Some(status), &err, scrub)));
    }
    if !err.is_empty() {
        return Ok(PollOutcome::Failed(fal_failure(None, &err, scrub)));
    }
    let url = ["/video/url", "/videos/0/url", "/output/video/url"]
        .iter()
        .find_map(|p| v.pointer(p))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|u| !u.is_empty());
    Ok(match url {
        Some(url) => PollOutcome::Succeeded(ResultRef::Url {
            url: url.to_string(),
        }),
        None => PollOutcome::Failed(
            ProviderError::new(FailureClass::ProviderError, "success without output")
                .with_code("success_without_output"),
        ),
    })
}

/// What a status body means before the result GET.
#[derive(Debug)]
pub enum Status {
    Pending(PollOutcome),
    Completed,
    /// `COMPLETED` with an error already in the status body.
    Failed(ProviderError),
}

pub fn status_step(v: &Value, scrub: &Scrubber) -> Result<Status, ProviderError> {
    let Some(status) = v.get("status").and_then(Value::as_str).map(str::trim) else {
        return Err(ProviderError::new(
            FailureClass::ProviderError,
            "fal status response without a status field",
        )
        .with_code("malformed_response"));
    };
    if status.eq_ignore_ascii_case("COMPLETED") {
        let err = FalError::from_body(v, None);
        if v.get("error").is_some_and(|e| !e.is_null()) && !err.is_empty() {
            return Ok(Status::Failed(fal_failure(None, &err, scrub)));
        }
        return Ok(Status::Completed);
    }
    // IN_QUEUE, IN_PROGRESS, and anything new: keep polling.
    Ok(Status::Pending(PollOutcome::Pending {
        phase: if status.eq_ignore_ascii_case("IN_QUEUE") {
            RenderPhase::Queued
        } else {
            RenderPhase::Running
        },
        sub_status: super::sub_status(status),
        progress: None,
        poll_after: None,
    }))
}

impl Fal {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        Fal {
            client,
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: acct.model.trim().trim_matches('/').to_string(),
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
            callback_url: acct.callback_url.clone(),
        }
    }

    fn auth(&self) -> Result<Option<Auth>, ProviderError> {
        http::auth_header("Key", self.api_key.as_ref())
    }

    /// The locator to poll with: the stored one (its URLs checked) or one derived from the model.
    fn locator(&self, request_id: &str, stored: Option<&str>) -> Result<Locator, ProviderError> {
        let loc = match stored {
            Some(text) => Locator::parse(text)?,
            None => derived_locator(&self.base_url, &self.model, request_id)?,
        };
        let urls = [
            Some(&loc.status_url),
            Some(&loc.response_url),
            loc.cancel_url.as_ref(),
        ];
        if urls
            .into_iter()
            .flatten()
            .any(|u| !same_origin(u, &self.base_url))
        {
            return Err(foreign_url());
        }
        Ok(loc)
    }

    /// The submit answer's URLs when they are on our host, else derived ones.
    fn locator_from_submit(&self, v: &Value, request_id: &str) -> Result<Locator, ProviderError> {
        let derived = derived_locator(&self.base_url, &self.model, request_id)?;
        let given = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|u| !u.is_empty() && same_origin(u, &self.base_url))
                .map(str::to_string)
        };
        Ok(Locator {
            status_url: given("status_url").unwrap_or(derived.status_url),
            response_url: given("response_url").unwrap_or(derived.response_url),
            cancel_url: given("cancel_url").or(derived.cancel_url),
        })
    }

    async fn get(&self, url: &str) -> Result<http::Answer, ProviderError> {
        http::exchange(
            http::with_auth(self.client.get(url), self.auth()?),
            JSON_BODY_CAP,
        )
        .await
    }

    /// Ask fal to cancel a queued request (`PUT cancel_url`). fal answers 202 when the request
    /// had not started (it may still run) and 400 `ALREADY_COMPLETED` otherwise, reported as
    /// `invalid_request` with code `already_completed`.
    pub async fn cancel(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<(), ProviderError> {
        let loc = self.locator(provider_task_id, poll_locator)?;
        let url = match loc.cancel_url {
            Some(u) => u,
            None => format!("{}/cancel", loc.response_url.trim_end_matches('/')),
        };
        if !same_origin(&url, &self.base_url) {
            return Err(foreign_url());
        }
        let rb = http::with_auth(self.client.put(url), self.auth()?);
        let http::Answer {
            status,
            headers,
            body,
        } = http::exchange(rb, JSON_BODY_CAP).await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let done = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string))
            .is_some_and(|s| s.eq_ignore_ascii_case("ALREADY_COMPLETED"));
        if done {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "fal request already completed; nothing to cancel",
            )
            .with_code("already_completed")
            .with_status(status));
        }
        Err(request_error(status, &headers, &body, &self.scrub, true))
    }
}

#[async_trait]
impl Provider for Fal {
    fn family(&self) -> Family {
        Family::Fal
    }

    async fn cancel(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<bool, ProviderError> {
        Fal::cancel(self, provider_task_id, poll_locator)
            .await
            .map(|_| true)
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let segments = model_path(&self.model)?;
        let body = submit_body(req.payload, req.first_frame.as_ref())?;
        let url = http::join_url(&self.base_url, &segments.join("/"));
        let mut rb = self
            .client
            .post(url)
            .header(IDEMPOTENCY_KEY, req.task_id)
            .json(&body);
        if let Some(hook) = &self.callback_url {
            rb = rb.query(&[("fal_webhook", super::callback_for(hook, req.task_id))]);
        }
        let rb = http::with_auth(rb, self.auth()?);
        let scrub = &self.scrub;
        let (answer, v) = http::call_json(rb, "fal submit response", scrub, |a| {
            request_error(a.status, &a.headers, &a.body, scrub, false)
        })
        .await?;
        let status = answer.status;
        let Some(request_id) = v.get("request_id").and_then(http::json_string) else {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                "fal submit response without a request_id",
            )
            .with_code("malformed_response")
            .with_status(status));
        };
        let loc = self.locator_from_submit(&v, &request_id)?;
        Ok(SubmitOutcome::Accepted {
            provider_task_id: http::accept_task_id(request_id)?,
            poll_locator: Some(loc.to_json()),
            poll_after: None,
        })
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        let loc = self.locator(provider_task_id, poll_locator)?;
        let rb = http::with_auth(self.client.get(&loc.status_url), self.auth()?);
        let scrub = &self.scrub;
        let (_, v) = http::call_json(rb, "fal status response", scrub, |a| {
            request_error(a.status, &a.headers, &a.body, scrub, true)
        })
        .await?;
        match status_step(&v, &self.scrub)? {
            Status::Pending(p) => Ok(p),
            Status::Failed(e) => Ok(PollOutcome::Failed(e)),
            Status::Completed => {
                let a = self.get(&loc.response_url).await?;
                result_outcome(a.status, &a.headers, &a.body, &self.scrub)
            }
        }
    }

    /// fal media URLs are public CDN links: fetched without credentials.
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
    use reqwest::header::HeaderValue;

    fn scrub() -> Scrubber {
        Scrubber::default()
    }

    #[test]
    fn origins() {
        let base = "https://queue.fal.run";
        assert!(same_origin(
            "https://queue.fal.run/fal-ai/x/requests/1/status",
            base
        ));
        assert!(same_origin("https://QUEUE.fal.run:443/x", base));
        assert!(!same_origin("http://queue.fal.run/x", base));
        assert!(!same_origin("https://queue.fal.run.evil.com/x", base));
        assert!(!same_origin("https://evil.com/x", base));
        assert!(!same_origin("https://user:pw@queue.fal.run/x", base));
        assert!(!same_origin("https://queue.fal.run:8443/x", base));
        assert!(!same_origin("file:///etc/passwd", base));
        assert!(!same_origin("not a url", base));
        assert!(same_origin(
            "http://127.0.0.1:9000/fal/fal-ai/x/requests/1",
            "http://127.0.0.1:9000/fal"
        ));
    }

    #[test]
    fn model_ids_and_derived_urls() {
        let loc = derived_locator(
            "https://queue.fal.run/",
            "fal-ai/kling-video/v2.1/pro/image-to-video",
            "req-1",
        )
        .expect("derived");
        assert_eq!(
            loc.status_url,
            "https://queue.fal.run/fal-ai/kling-video/requests/req-1/status"
        );
        assert_eq!(
            loc.response_url,
            "https://queue.fal.run/fal-ai/kling-video/requests/req-1"
        );
        assert_eq!(
            loc.cancel_url.as_deref(),
            Some("https://queue.fal.run/fal-ai/kling-video/requests/req-1/cancel")
        );
        for bad in [
            "",
            "fal-ai",
            "fal-ai/../x",
            "fal-ai/x?y",
            "fal-ai//x",
            "a/b c",
        ] {
            assert!(model_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            model_path("/fal-ai/pika/v2.2/text-to-video/")
                .expect("ok")
                .len(),
            4
        );
    }

    #[test]
    fn locator_round_trip() {
        let loc = Locator {
            status_url: "https://q/a/b/requests/1/status".into(),
            response_url: "https://q/a/b/requests/1".into(),
            cancel_url: None,
        };
        let text = loc.to_json();
        assert_eq!(
            text,
            r#"{"status_url":"https://q/a/b/requests/1/status","response_url":"https://q/a/b/requests/1"}"#
        );
        assert_eq!(Locator::parse(&text).expect("parse"), loc);
        assert!(Locator::parse(r#"{"action":"x"}"#).is_err());
    }

    #[test]
    fn body_shape() {
        let p = TaskPayload::Video {
            prompt: "koi pond".into(),
            negative_prompt: Some("blur".into()),
            duration_s: 5,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: Some("img".into()),
            seed: Some(1),
        };
        let img = InputImage {
            bytes: Bytes::from_static(b"PNG"),
            mime: "image/png".into(),
        };
        let v = submit_body(&p, Some(&img)).expect("body");
        assert_eq!(v["duration"], "5");
        assert_eq!(v["aspect_ratio"], "9:16");
        assert_eq!(v["negative_prompt"], "blur");
        assert_eq!(v["image_url"], "data:image/png;base64,UE5H");
        assert!(submit_body(&p, None).is_err());
    }

    #[test]
    fn render_phases() {
        let table = [
            ("IN_QUEUE", RenderPhase::Queued),
            ("IN_PROGRESS", RenderPhase::Running),
            ("WARMING", RenderPhase::Running),
        ];
        for (word, want) in table {
            match status_step(&json!({"status": word}), &Scrubber::default()) {
                Ok(Status::Pending(PollOutcome::Pending { phase, .. })) => {
                    assert_eq!(phase, want, "{word}")
                }
                other => panic!("{word}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_table() {
        for (body, want) in [
            (
                json!({"status":"IN_QUEUE","queue_position":3}),
                Some("IN_QUEUE"),
            ),
            (
                json!({"status":"IN_PROGRESS","logs":[]}),
                Some("IN_PROGRESS"),
            ),
            (json!({"status":"WARMING"}), Some("WARMING")),
            (
                json!({"status":"COMPLETED","metrics":{"inference_time":1.5}}),
                None,
            ),
        ] {
            match (status_step(&body, &scrub()).expect("status"), want) {
                (Status::Pending(PollOutcome::Pending { sub_status, .. }), Some(w)) => {
                    assert_eq!(sub_status, w)
                }
                (Status::Completed, None) => {}
                (got, _) => panic!("{body} gave {got:?}"),
            }
        }
        match status_step(
            &json!({"status":"COMPLETED","error":"Runner disconnected","error_type":"runner_disconnected"}),
            &scrub(),
        )
        .expect("status")
        {
            Status::Failed(e) => {
                assert_eq!(e.class, FailureClass::ProviderError);
                assert_eq!(e.code.as_deref(), Some("runner_disconnected"));
            }
            other => panic!("{other:?}"),
        }
        assert!(status_step(&json!({"queue_position":1}), &scrub()).is_err());
    }

    #[test]
    fn result_table() {
        enum Want {
            Url(&'static str),
            Failed(FailureClass),
            Retry(FailureClass),
        }
        let typed = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(ERROR_TYPE_HEADER, HeaderValue::from_str(t).expect("value"));
            h
        };
        let none = HeaderMap::new();
        let table: Vec<(u16, HeaderMap, Value, Want)> = vec![
            (
                200,
                none.clone(),
                json!({"video":{"url":"https://v3.fal.media/files/o.mp4","content_type":"video/mp4"}}),
                Want::Url("https://v3.fal.media/files/o.mp4"),
            ),
            (
                200,
                none.clone(),
                json!({"videos":[{"url":"https://v3.fal.media/files/p.mp4"}]}),
                Want::Url("https://v3.fal.media/files/p.mp4"),
            ),
            (
                200,
                none.clone(),
                json!({"seed":1}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                200,
                none.clone(),
                json!({"detail":"Request timed out","error_type":"request_timeout"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                422,
                none.clone(),
                json!({"detail":[{"loc":["body","duration"],"msg":"unexpected value","type":"value_error"}]}),
                Want::Failed(FailureClass::InvalidRequest),
            ),
            (
                422,
                none.clone(),
                json!({"detail":[{"loc":["body","prompt"],"msg":"flagged","type":"content_policy_violation"}]}),
                Want::Failed(FailureClass::ContentPolicy),
            ),
            (
                500,
                typed("runner_disconnected"),
                json!({"detail":"Runner disconnected"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                504,
                typed("request_timeout"),
                Value::Null,
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                400,
                none.clone(),
                json!({"detail":"NSFW content detected in the output"}),
                Want::Failed(FailureClass::ContentPolicy),
            ),
            (
                502,
                none.clone(),
                Value::Null,
                Want::Retry(FailureClass::ProviderError),
            ),
            (
                403,
                none.clone(),
                json!({"detail":"User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."}),
                Want::Retry(FailureClass::InsufficientCredits),
            ),
            (
                401,
                none.clone(),
                json!({"detail":"Unauthorized"}),
                Want::Retry(FailureClass::Auth),
            ),
            (
                429,
                none.clone(),
                json!({"detail":"slow down"}),
                Want::Retry(FailureClass::RateLimited),
            ),
        ];
        for (status, headers, body, want) in table {
            let raw = if body.is_null() {
                b"<html>gateway</html>".to_vec()
            } else {
                body.to_string().into_bytes()
            };
            match (result_outcome(status, &headers, &raw, &scrub()), want) {
                (Ok(PollOutcome::Succeeded(ResultRef::Url { url })), Want::Url(w)) => {
                    assert_eq!(url, w)
                }
                (Ok(PollOutcome::Failed(e)), Want::Failed(c)) => {
                    assert_eq!(e.class, c, "{status} {body}")
                }
                (Err(e), Want::Retry(c)) => assert_eq!(e.class, c, "{status} {body}"),
                (got, _) => panic!("{status} {body} gave {got:?}"),
            }
        }
    }

    fn adapter(base: &str, model: &str) -> Fal {
        let acct = account("fal", base, &format!("model = \"{model}\""));
        Fal::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("falkey-0123456789:abcdef")),
        )
    }

    #[tokio::test]
    async fn submit_stores_returned_urls_and_polls_them() {
        let server = testing::serve(|r| {
            let base = format!(
                "http://{}",
                r.headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
            );
            if r.header("authorization").as_deref() != Some("Key falkey-0123456789:abcdef") {
                return json(401, json!({"detail":"Unauthorized"}));
            }
            match (r.method.as_str(), r.uri.as_str()) {
                ("POST", "/fal-ai/kling-video/v2.1/pro/image-to-video") => json(
                    200,
                    json!({
                        "request_id":"req-9",
                        "status_url": format!("{base}/fal-ai/kling-video/requests/req-9/status"),
                        "response_url": format!("{base}/fal-ai/kling-video/requests/req-9"),
                        "cancel_url": format!("{base}/fal-ai/kling-video/requests/req-9/cancel"),
                        "queue_position":0
                    }),
                ),
                ("GET", "/fal-ai/kling-video/requests/req-9/status") => {
                    json(200, json!({"status":"COMPLETED","metrics":{}}))
                }
                ("GET", "/fal-ai/kling-video/requests/req-9") => json(
                    200,
                    json!({"video":{"url":"https://v3.fal.media/files/k.mp4"}}),
                ),
                ("GET", "/fal-ai/kling-video/requests/req-q/status") => {
                    json(200, json!({"status":"IN_QUEUE","queue_position":4}))
                }
                ("PUT", "/fal-ai/kling-video/requests/req-q/cancel") => {
                    json(202, json!({"status":"CANCELLATION_REQUESTED"}))
                }
                ("PUT", "/fal-ai/kling-video/requests/req-9/cancel") => {
                    json(400, json!({"status":"ALREADY_COMPLETED"}))
                }
                _ => json(404, json!({"detail":"Request not found"})),
            }
        })
        .await;
        let f = adapter(&server.base, "fal-ai/kling-video/v2.1/pro/image-to-video");
        let p = TaskPayload::Video {
            prompt: "koi".into(),
            negative_prompt: None,
            duration_s: 10,
            aspect_ratio: "16:9".into(),
            resolution: "1080p".into(),
            first_frame: Some("img".into()),
            seed: None,
        };
        let out = f
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                task_id: "vid-1",
                attempt: 1,
                payload: &p,
                first_frame: Some(InputImage {
                    bytes: Bytes::from_static(b"PNG"),
                    mime: "image/png".into(),
                }),
            })
            .await
            .expect("accepted");
        let (id, locator) = match out {
            SubmitOutcome::Accepted {
                provider_task_id,
                poll_locator,
                ..
            } => (provider_task_id, poll_locator.expect("locator")),
            other => panic!("{other:?}"),
        };
        assert_eq!(id, "req-9");
        let loc = Locator::parse(&locator).expect("locator json");
        assert_eq!(
            loc.status_url,
            format!("{}/fal-ai/kling-video/requests/req-9/status", server.base)
        );
        let req = &server.requests()[0];
        assert_eq!(req.header("idempotency-key").as_deref(), Some("vid-1"));
        let v = req.json();
        assert_eq!(v["duration"], "10");
        assert!(v["image_url"]
            .as_str()
            .unwrap_or("")
            .starts_with("data:image/png;base64,"));

        match f.poll(&id, Some(&locator)).await.expect("poll") {
            PollOutcome::Succeeded(ResultRef::Url { url }) => {
                assert_eq!(url, "https://v3.fal.media/files/k.mp4")
            }
            other => panic!("{other:?}"),
        }
        // No locator: derived from the first two model segments.
        match f.poll("req-q", None).await.expect("poll") {
            PollOutcome::Pending { sub_status, .. } => assert_eq!(sub_status, "IN_QUEUE"),
            other => panic!("{other:?}"),
        }
        let err = f.poll("req-missing", None).await.expect_err("404");
        assert_eq!(err.code.as_deref(), Some("not_found"));
        f.cancel("req-q", None).await.expect("cancel requested");
        let err = f.cancel(&id, Some(&locator)).await.expect_err("done");
        assert_eq!(err.code.as_deref(), Some("already_completed"));
    }

    #[tokio::test]
    async fn foreign_locator_is_refused_without_a_request() {
        let server = testing::serve(|_| json(200, json!({"status":"IN_QUEUE"}))).await;
        let f = adapter(&server.base, "fal-ai/pika/v2.2/text-to-video");
        let evil = Locator {
            status_url: "http://evil.invalid/steal/status".into(),
            response_url: format!("{}/fal-ai/pika/requests/1", server.base),
            cancel_url: None,
        }
        .to_json();
        let err = f.poll("1", Some(&evil)).await.expect_err("foreign");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert_eq!(err.code.as_deref(), Some("foreign_queue_url"));
        let err = f.cancel("1", Some(&evil)).await.expect_err("foreign");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn submit_with_foreign_urls_falls_back_to_derived_ones() {
        let server = testing::serve(|r| match r.method.as_str() {
            "POST" => json(
                200,
                json!({"request_id":"r-2","status_url":"https://elsewhere.invalid/x/status",
                    "response_url":"https://elsewhere.invalid/x"}),
            ),
            _ => reply(500, &[], ""),
        })
        .await;
        let f = adapter(
            &format!("{}/fal", server.base),
            "fal-ai/pika/v2.2/text-to-video",
        );
        let p = TaskPayload::Video {
            prompt: "x".into(),
            negative_prompt: None,
            duration_s: 5,
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            first_frame: None,
            seed: None,
        };
        let out = f
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
        let SubmitOutcome::Accepted { poll_locator, .. } = out else {
            panic!("not accepted");
        };
        let loc = Locator::parse(&poll_locator.expect("locator")).expect("json");
        assert_eq!(
            loc.status_url,
            format!("{}/fal/fal-ai/pika/requests/r-2/status", server.base)
        );
        assert_eq!(
            server.requests()[0].uri,
            "/fal/fal-ai/pika/v2.2/text-to-video"
        );
    }
}
