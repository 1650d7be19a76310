//! Family `minimax`: MiniMax Hailuo video generation, API v1 (docs/providers.md, "minimax").
//!
//! Quirks handled here:
//! - Errors arrive as HTTP 200 with `base_resp.status_code != 0`: 1002 is a rate limit,
//!   1004/2049 a bad key, 1008 an empty balance, 1026 sensitive input, 2013 bad parameters,
//!   1000/1001 server faults. Every answer is checked, not just the HTTP status.
//! - `duration` is an integer (6 or 10); resolution is MiniMax's own `512P` / `768P` / `1080P`
//!   for our 480p / 720p / 1080p; the first frame goes out as a `data:` URL in
//!   `first_frame_image`; `prompt_optimizer` is on. There is no negative prompt or seed.
//! - Statuses are capitalised (`Preparing`, `Queueing`, `Processing`, `Success`, `Fail`) and
//!   compared case-insensitively; unknown words keep the task polling.
//! - `Success` carries a `file_id`, not a URL: one more hop, `GET /v1/files/retrieve?file_id=`,
//!   gives `file.download_url` (a temporary URL, fetched without credentials). `file_id` may be
//!   a JSON number; it is carried as its exact decimal text. A success without `file_id`, or a
//!   file without `download_url`, is a failure.
//! - Output moderation shows up as `Fail`; a failure message about sensitive content is
//!   `content_policy`.

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
use serde_json::{json, Value};

pub struct Minimax {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    scrub: Scrubber,
    /// `accounts.<name>.callback_url`: sent as `callback_url` (with the task id appended).
    /// MiniMax first checks it with a `challenge` the receiver echoes, then posts status changes.
    callback_url: Option<String>,
}

/// MiniMax's resolution word for ours.
pub fn resolution_for(resolution: &str) -> Result<&'static str, ProviderError> {
    match resolution.trim().to_ascii_lowercase().as_str() {
        "480p" => Ok("512P"),
        "720p" => Ok("768P"),
        "1080p" => Ok("1080P"),
        other => Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("resolution {other:?} is not supported by MiniMax (480p, 720p or 1080p)"),
        )
        .with_code("unsupported_resolution")),
    }
}

/// The create body for one video payload.
pub fn submit_body(
    model: &str,
    payload: &TaskPayload,
    image: Option<&InputImage>,
) -> Result<Value, ProviderError> {
    let v = video_args("minimax", payload, image)?;
    let duration_s = v.duration_s;
    if !matches!(duration_s, 6 | 10) {
        return Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("duration {duration_s}s is not supported by MiniMax (6 or 10)"),
        )
        .with_code("unsupported_duration"));
    }
    let mut body = json!({
        "prompt": v.prompt,
        "duration": duration_s,
        "resolution": resolution_for(v.resolution)?,
        "prompt_optimizer": true,
    });
    if !model.is_empty() {
        body["model"] = json!(model);
    }
    if let Some(img) = v.image {
        body["first_frame_image"] = json!(format!(
            "data:{};base64,{}",
            img.mime,
            base64::engine::general_purpose::STANDARD.encode(&img.bytes)
        ));
    }
    Ok(body)
}

fn mentions_sensitive(text: &str) -> bool {
    openai::mentions_content_policy(text)
}

/// Class of a `base_resp.status_code`.
pub fn class_for_code(code: i64, message: &str, http_status: u16) -> FailureClass {
    match code {
        1002 => FailureClass::RateLimited,
        1004 | 2049 => FailureClass::Auth,
        1008 => FailureClass::InsufficientCredits,
        1026 | 1027 => FailureClass::ContentPolicy,
        2013 => FailureClass::InvalidRequest,
        1000 | 1001 => FailureClass::ProviderError,
        _ if mentions_sensitive(message) => FailureClass::ContentPolicy,
        _ => match http_status {
            200..=299 => FailureClass::ProviderError,
            s => http::class_for_status(s),
        },
    }
}

/// `base_resp` of an answer: `(status_code, status_msg)`; `None` when absent.
fn base_resp(v: &Value) -> Option<(i64, String)> {
    let b = v.get("base_resp")?;
    let code = match b.get("status_code")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let msg = b
        .get("status_msg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    Some((code, msg))
}

fn code_error(
    code: i64,
    msg: &str,
    http_status: u16,
    headers: &HeaderMap,
    scrub: &Scrubber,
) -> ProviderError {
    let class = class_for_code(code, msg, http_status);
    let hint = match class {
        FailureClass::RateLimited | FailureClass::ProviderError => http::retry_after(headers),
        _ => None,
    };
    let text = if msg.is_empty() {
        format!("MiniMax error {code}")
    } else {
        scrub.clean(msg)
    };
    ProviderError::new(class, text)
        .with_code(code.to_string())
        .with_status(http_status)
        .with_retry_after(hint)
}

/// Open an answer: the JSON, or the classified error (`base_resp.status_code != 0` or a
/// non-2xx status).
pub fn open_response(
    http_status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
) -> Result<Value, ProviderError> {
    let ok_http = (200..300).contains(&http_status);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some((code, msg)) = parsed.as_ref().and_then(base_resp) {
        if code != 0 {
            return Err(code_error(code, &msg, http_status, headers, scrub));
        }
    }
    if !ok_http {
        let mut err = openai::error_from_response(http_status, headers, body, scrub);
        if http_status == 404 {
            err.class = FailureClass::ProviderError;
            err.code = Some("not_found".into());
        }
        return Err(err);
    }
    match parsed {
        Some(v) if v.is_object() => Ok(v),
        _ => Err(http::parse_json(body, "MiniMax response", scrub)
            .err()
            .unwrap_or_else(|| {
                ProviderError::new(
                    FailureClass::ProviderError,
                    "MiniMax response is not a JSON object",
                )
                .with_code("malformed_response")
            })),
    }
}

/// What a query answer means: done, or one more hop to the file.
#[derive(Debug)]
pub enum Step {
    Done(PollOutcome),
    Retrieve { file_id: String },
}

fn success_without_output() -> PollOutcome {
    PollOutcome::Failed(
        ProviderError::new(FailureClass::ProviderError, "success without output")
            .with_code("success_without_output"),
    )
}

/// One query body (already checked by [`open_response`] when the status is not `Fail`).
pub fn query_step(v: &Value, scrub: &Scrubber) -> Step {
    let status = v.get("status").and_then(Value::as_str).unwrap_or("").trim();
    match status.to_ascii_lowercase().as_str() {
        "success" | "succeeded" | "succeed" => match v.get("file_id").and_then(http::json_string) {
            Some(file_id) => Step::Retrieve { file_id },
            None => Step::Done(success_without_output()),
        },
        "fail" | "failed" | "failure" | "error" => {
            Step::Done(PollOutcome::Failed(render_failure(v, scrub)))
        }
        lower => Step::Done(PollOutcome::Pending {
            // v1 `Preparing`/`Queueing`, v2 `queued`: not started yet.
            phase: match lower {
                "preparing" | "queueing" | "queued" => RenderPhase::Queued,
                _ => RenderPhase::Running,
            },
            sub_status: super::sub_status(status),
            progress: None,
            poll_after: None,
        }),
    }
}

fn is_fail(v: &Value) -> bool {
    v.get("status")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_ascii_lowercase())
        .is_some_and(|s| matches!(s.as_str(), "fail" | "failed" | "failure" | "error"))
}

/// A `Fail` task: its reason is in `error_message`/`fail_reason` or `base_resp.status_msg`.
fn render_failure(v: &Value, scrub: &Scrubber) -> ProviderError {
    let base = base_resp(v).filter(|(c, _)| *c != 0);
    let reason = ["error_message", "fail_reason", "failure_reason", "message"]
        .iter()
        .find_map(|k| v.get(*k).and_then(http::json_string))
        .or_else(|| {
            base.as_ref()
                .map(|(_, m)| m.clone())
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_default();
    let class = if mentions_sensitive(&reason) {
        FailureClass::ContentPolicy
    } else {
        match &base {
            Some((code, msg)) => match class_for_code(*code, msg, 200) {
                // A failed render is not a request problem to wait out.
                FailureClass::RateLimited => FailureClass::ProviderError,
                c => c,
            },
            None => FailureClass::ProviderError,
        }
    };
    let message = if reason.is_empty() {
        "render failed".to_string()
    } else {
        scrub.clean(&reason)
    };
    ProviderError::new(class, message).with_code(
        base.map(|(c, _)| c.to_string())
            .unwrap_or_else(|| "failed".to_string()),
    )
}

/// A files/retrieve body → the download URL, or a failure.
pub fn retrieve_outcome(v: &Value) -> PollOutcome {
    match v
        .pointer("/file/download_url")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        Some(url) => PollOutcome::Succeeded(ResultRef::Url {
            url: url.to_string(),
        }),
        None => success_without_output(),
    }
}

impl Minimax {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        Minimax {
            client,
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: acct.model.trim().to_string(),
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
            callback_url: acct.callback_url.clone(),
        }
    }

    fn auth(&self) -> Result<Option<Auth>, ProviderError> {
        http::auth_header("Bearer", self.api_key.as_ref())
    }

    /// Send, read and open one request. A `Fail` query body is returned even when its
    /// `base_resp` carries the failure code, so the render failure is reported as such.
    async fn call(
        &self,
        rb: reqwest::RequestBuilder,
        keep_fail: bool,
    ) -> Result<Value, ProviderError> {
        let a = http::exchange(http::with_auth(rb, self.auth()?), JSON_BODY_CAP).await?;
        if keep_fail && a.is_success() {
            if let Ok(v) = serde_json::from_slice::<Value>(&a.body) {
                if is_fail(&v) {
                    return Ok(v);
                }
            }
        }
        open_response(a.status, &a.headers, &a.body, &self.scrub)
    }

    fn url(&self, path: &str) -> String {
        http::join_url(&self.base_url, path)
    }
}

#[async_trait]
impl Provider for Minimax {
    fn family(&self) -> Family {
        Family::Minimax
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let mut body = submit_body(&self.model, req.payload, req.first_frame.as_ref())?;
        if let Some(url) = &self.callback_url {
            body["callback_url"] = json!(super::callback_for(url, req.task_id));
        }
        let rb = self
            .client
            .post(self.url("/v1/video_generation"))
            .header(IDEMPOTENCY_KEY, req.task_id)
            .json(&body);
        let v = self.call(rb, false).await?;
        match v.get("task_id").and_then(http::json_string) {
            Some(id) => Ok(SubmitOutcome::Accepted {
                provider_task_id: http::accept_task_id(id)?,
                poll_locator: None,
                poll_after: None,
            }),
            None => Err(ProviderError::new(
                FailureClass::ProviderError,
                "MiniMax accepted the task without a task_id",
            )
            .with_code("malformed_response")),
        }
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        let rb = self
            .client
            .get(self.url("/v1/query/video_generation"))
            .query(&[("task_id", provider_task_id)]);
        let v = self.call(rb, true).await?;
        match query_step(&v, &self.scrub) {
            Step::Done(outcome) => Ok(outcome),
            Step::Retrieve { file_id } => {
                let rb = self
                    .client
                    .get(self.url("/v1/files/retrieve"))
                    .query(&[("file_id", file_id.as_str())]);
                let file = self.call(rb, false).await?;
                Ok(retrieve_outcome(&file))
            }
        }
    }

    /// `download_url` is a temporary signed URL: fetched without credentials; 403/404/410 is
    /// `result_expired` (the re-poll then retrieves the file again).
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

    fn payload(duration_s: u32, resolution: &str, first_frame: bool) -> TaskPayload {
        TaskPayload::Video {
            prompt: "a paper boat in the rain".into(),
            negative_prompt: Some("blur".into()),
            duration_s,
            aspect_ratio: "16:9".into(),
            resolution: resolution.into(),
            first_frame: first_frame.then(|| "img-1".to_string()),
            seed: Some(3),
        }
    }

    #[test]
    fn body_and_resolution_table() {
        for (ours, theirs) in [("480p", "512P"), ("720p", "768P"), ("1080p", "1080P")] {
            assert_eq!(resolution_for(ours).expect("res"), theirs);
        }
        assert!(resolution_for("4k").is_err());
        let img = InputImage {
            bytes: Bytes::from_static(b"PNG"),
            mime: "image/png".into(),
        };
        let v =
            submit_body("MiniMax-Hailuo-02", &payload(6, "720p", true), Some(&img)).expect("body");
        assert_eq!(v["model"], "MiniMax-Hailuo-02");
        assert_eq!(v["duration"], 6);
        assert!(v["duration"].is_u64());
        assert_eq!(v["resolution"], "768P");
        assert_eq!(v["prompt_optimizer"], true);
        assert_eq!(v["first_frame_image"], "data:image/png;base64,UE5H");
        assert!(v.get("negative_prompt").is_none());
        assert!(v.get("seed").is_none());
        let err = submit_body("m", &payload(5, "720p", false), None).expect_err("5 s");
        assert_eq!(err.code.as_deref(), Some("unsupported_duration"));
        let err = submit_body("m", &payload(6, "720p", true), None).expect_err("no image");
        assert_eq!(err.code.as_deref(), Some("missing_first_frame"));
    }

    #[test]
    fn base_resp_code_table() {
        let table: &[(i64, &str, FailureClass)] = &[
            (1002, "rate limit exceeded", FailureClass::RateLimited),
            (1004, "authentication failed", FailureClass::Auth),
            (2049, "invalid api key", FailureClass::Auth),
            (
                1008,
                "insufficient balance",
                FailureClass::InsufficientCredits,
            ),
            (1026, "input new_sensitive", FailureClass::ContentPolicy),
            (2013, "invalid params", FailureClass::InvalidRequest),
            (1000, "unknown error", FailureClass::ProviderError),
            (1001, "timeout", FailureClass::ProviderError),
            (9999, "brand new", FailureClass::ProviderError),
        ];
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("5"));
        for (code, msg, want) in table {
            let body =
                json!({"task_id":"","base_resp":{"status_code":code,"status_msg":msg}}).to_string();
            let err = open_response(200, &h, body.as_bytes(), &scrub()).expect_err("error");
            assert_eq!(err.class, *want, "{code}");
            assert_eq!(err.code, Some(code.to_string()));
            assert_eq!(err.http_status, Some(200));
            assert_eq!(
                err.retry_after.is_some(),
                matches!(
                    want,
                    FailureClass::RateLimited | FailureClass::ProviderError
                ),
                "{code}"
            );
        }
        let ok = open_response(
            200,
            &h,
            br#"{"task_id":"1","base_resp":{"status_code":0,"status_msg":"success"}}"#,
            &scrub(),
        )
        .expect("ok");
        assert_eq!(ok["task_id"], "1");
        let err = open_response(200, &h, b"not json", &scrub()).expect_err("garbage");
        assert_eq!(err.class, FailureClass::ProviderError);
        let err = open_response(502, &h, b"<html></html>", &scrub()).expect_err("502");
        assert_eq!(err.class, FailureClass::ProviderError);
        let err = open_response(404, &h, b"", &scrub()).expect_err("404");
        assert_eq!(err.code.as_deref(), Some("not_found"));
    }

    #[test]
    fn render_phases() {
        let table = [
            ("Preparing", RenderPhase::Queued),
            ("Queueing", RenderPhase::Queued),
            ("queued", RenderPhase::Queued),
            ("Processing", RenderPhase::Running),
            ("Thinking", RenderPhase::Running),
        ];
        for (word, want) in table {
            match query_step(&json!({"status": word}), &Scrubber::default()) {
                Step::Done(PollOutcome::Pending { phase, .. }) => {
                    assert_eq!(phase, want, "{word}")
                }
                other => panic!("{word}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_table() {
        enum Want {
            Pending(&'static str),
            Retrieve(&'static str),
            Failed(FailureClass),
        }
        let table: Vec<(Value, Want)> = vec![
            (
                json!({"task_id":"1","status":"Preparing"}),
                Want::Pending("Preparing"),
            ),
            (
                json!({"task_id":"1","status":"Queueing"}),
                Want::Pending("Queueing"),
            ),
            (
                json!({"task_id":"1","status":"Processing"}),
                Want::Pending("Processing"),
            ),
            (
                json!({"task_id":"1","status":"processing"}),
                Want::Pending("processing"),
            ),
            (
                json!({"task_id":"1","status":"Rendering"}),
                Want::Pending("Rendering"),
            ),
            (json!({"task_id":"1"}), Want::Pending("unknown")),
            (
                json!({"status":"Success","file_id":"205258526306433"}),
                Want::Retrieve("205258526306433"),
            ),
            (
                json!({"status":"SUCCESS","file_id":205258526306433u64}),
                Want::Retrieve("205258526306433"),
            ),
            (
                json!({"status":"success","file_id":9223372036854775807i64}),
                Want::Retrieve("9223372036854775807"),
            ),
            (
                json!({"status":"Success"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"status":"Success","file_id":""}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"status":"Fail"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"status":"Fail","base_resp":{"status_code":1026,"status_msg":"video contains sensitive content"}}),
                Want::Failed(FailureClass::ContentPolicy),
            ),
            (
                json!({"status":"fail","error_message":"output flagged as sensitive"}),
                Want::Failed(FailureClass::ContentPolicy),
            ),
            (
                json!({"status":"Fail","base_resp":{"status_code":1000,"status_msg":"unknown error"}}),
                Want::Failed(FailureClass::ProviderError),
            ),
        ];
        for (body, want) in table {
            match (query_step(&body, &scrub()), want) {
                (Step::Done(PollOutcome::Pending { sub_status, .. }), Want::Pending(w)) => {
                    assert_eq!(sub_status, w)
                }
                (Step::Retrieve { file_id }, Want::Retrieve(w)) => assert_eq!(file_id, w),
                (Step::Done(PollOutcome::Failed(e)), Want::Failed(c)) => {
                    assert_eq!(e.class, c, "{body}")
                }
                (got, _) => panic!("{body} gave {got:?}"),
            }
        }
        match retrieve_outcome(&json!({"file":{"file_id":1,"download_url":"https://cdn/m.mp4"}})) {
            PollOutcome::Succeeded(ResultRef::Url { url }) => assert_eq!(url, "https://cdn/m.mp4"),
            other => panic!("{other:?}"),
        }
        match retrieve_outcome(&json!({"file":{"file_id":1}})) {
            PollOutcome::Failed(e) => {
                assert_eq!(e.class, FailureClass::ProviderError);
                assert_eq!(e.message, "success without output");
            }
            other => panic!("{other:?}"),
        }
    }

    fn adapter(base: &str) -> Minimax {
        let acct = account("minimax", base, "model = \"MiniMax-Hailuo-02\"");
        Minimax::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("mmkey-0123456789abcdef")),
        )
    }

    fn ok_resp(extra: Value) -> axum::response::Response {
        let mut v = extra;
        v["base_resp"] = json!({"status_code":0,"status_msg":"success"});
        json(200, v)
    }

    #[tokio::test]
    async fn submit_sends_body_and_reads_errors_in_200() {
        let server = testing::serve(|r| {
            let body = String::from_utf8_lossy(&r.body).to_string();
            if body.contains("limit") {
                json(200, json!({"task_id":"","base_resp":{"status_code":1002,"status_msg":"rate limit"}}))
            } else if body.contains("unsafe") {
                json(200, json!({"task_id":"","base_resp":{"status_code":1026,"status_msg":"input new_sensitive"}}))
            } else if body.contains("broke") {
                json(200, json!({"task_id":"","base_resp":{"status_code":1008,"status_msg":"insufficient balance for mmkey-0123456789abcdef"}}))
            } else {
                ok_resp(json!({"task_id":"106916112212032"}))
            }
        })
        .await;
        let m = adapter(&server.base);
        let p = payload(10, "1080p", false);
        let out = m
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                task_id: "vid-1",
                attempt: 1,
                payload: &p,
                first_frame: None,
            })
            .await
            .expect("accepted");
        assert!(
            matches!(out, SubmitOutcome::Accepted { ref provider_task_id, .. } if provider_task_id == "106916112212032")
        );
        let req = &server.requests()[0];
        assert_eq!(
            (req.method.as_str(), req.uri.as_str()),
            ("POST", "/v1/video_generation")
        );
        assert_eq!(req.header("idempotency-key").as_deref(), Some("vid-1"));
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer mmkey-0123456789abcdef")
        );
        let v = req.json();
        assert_eq!(v["resolution"], "1080P");
        assert_eq!(v["duration"], 10);
        for (word, want) in [
            ("limit", FailureClass::RateLimited),
            ("unsafe", FailureClass::ContentPolicy),
            ("broke", FailureClass::InsufficientCredits),
        ] {
            let mut p = payload(6, "720p", false);
            if let TaskPayload::Video { prompt, .. } = &mut p {
                *prompt = word.into();
            }
            let err = m
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
                .expect_err(word);
            assert_eq!(err.class, want, "{word}");
            assert!(!err.message.contains("mmkey-0123"), "{}", err.message);
        }
    }

    #[tokio::test]
    async fn poll_follows_file_id_to_download_url() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/v1/query/video_generation?task_id=t-run" => {
                ok_resp(json!({"task_id":"t-run","status":"Queueing"}))
            }
            "/v1/query/video_generation?task_id=t-done" => {
                ok_resp(json!({"task_id":"t-done","status":"Success","file_id":205258526306433u64}))
            }
            "/v1/query/video_generation?task_id=t-nofile" => {
                ok_resp(json!({"task_id":"t-nofile","status":"Success","file_id":777}))
            }
            "/v1/query/video_generation?task_id=t-fail" => json(
                200,
                json!({"task_id":"t-fail","status":"Fail","base_resp":{"status_code":1026,"status_msg":"sensitive content"}}),
            ),
            "/v1/files/retrieve?file_id=205258526306433" => ok_resp(json!({"file":{
                "file_id":205258526306433u64,"filename":"output_aigc.mp4","purpose":"video_generation",
                "download_url":"https://cdn.example/out.mp4"}})),
            "/v1/files/retrieve?file_id=777" => ok_resp(json!({"file":{"file_id":777}})),
            "/cdn/out.mp4" if r.header("authorization").is_none() => {
                reply(200, &[("content-type", "video/mp4")], "HAILUO")
            }
            _ => json(
                200,
                json!({"base_resp":{"status_code":2013,"status_msg":"invalid params"}}),
            ),
        })
        .await;
        let m = adapter(&server.base);
        match m.poll("t-run", None).await.expect("poll") {
            PollOutcome::Pending { sub_status, .. } => assert_eq!(sub_status, "Queueing"),
            other => panic!("{other:?}"),
        }
        match m.poll("t-done", None).await.expect("poll") {
            PollOutcome::Succeeded(ResultRef::Url { url }) => {
                assert_eq!(url, "https://cdn.example/out.mp4")
            }
            other => panic!("{other:?}"),
        }
        match m.poll("t-nofile", None).await.expect("poll") {
            PollOutcome::Failed(e) => assert_eq!(e.message, "success without output"),
            other => panic!("{other:?}"),
        }
        match m.poll("t-fail", None).await.expect("poll") {
            PollOutcome::Failed(e) => assert_eq!(e.class, FailureClass::ContentPolicy),
            other => panic!("{other:?}"),
        }
        let err = m.poll("t-unknown", None).await.expect_err("bad id");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        let dl = m
            .fetch(&ResultRef::Url {
                url: format!("{}/cdn/out.mp4", server.base),
            })
            .await
            .expect("download");
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"HAILUO");
        assert!(server
            .requests()
            .iter()
            .filter(|r| r.uri.starts_with("/v1/"))
            .all(|r| r.header("authorization").is_some()));
    }
}
