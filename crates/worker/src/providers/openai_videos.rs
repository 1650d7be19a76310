//! Family `openai-videos`: the OpenAI Sora `/v1/videos` shape and the relays that copy it
//! (CometAPI and new-api derivatives); docs/providers.md, "openai-videos".
//!
//! Quirks handled here:
//! - Create is multipart (the SDK's way, `input_reference` as a file part) or JSON
//!   (`input_reference: {"image_url": "data:…;base64,…"}`), per `acct.multipart`.
//! - `seconds` is a string; size encodes the aspect (`720x1280`), there is no aspect field, and
//!   1:1 does not exist, so it is refused before anything is sent (and paid for).
//! - Relays answer with both `id` and `task_id`, use `SUBMITTED`/`IN_PROGRESS`/`SUCCESS`/`ERROR`
//!   spellings, and put a signed `video_url` on the finished object; without one the bytes come
//!   from `/v1/videos/{id}/content` with the account's key ([`ResultRef::AuthedUrl`]).
//! - Unknown status words keep the task polling; `openai-poll-after-ms` paces polls.
//! - 404 on poll is `provider_error`/`not_found` (the worker applies its grace window), unless the
//!   body says the model is gone (`model_retired`).

use super::billing::{seconds_field, Bill, Bills};
use super::http::{self, openai, Auth, Scrubber, IDEMPOTENCY_KEY};
use super::{
    video_args, InputImage, PollOutcome, Provider, ProviderError, RenderPhase, ResultRef,
    SubmitOutcome, SubmitRequest,
};
use async_trait::async_trait;
use base64::Engine;
use dramaq_common::config::{AccountConfig, Family, Secret};
use dramaq_common::FailureClass;
use serde_json::{json, Value};
use std::time::Duration;

pub struct OpenaiVideos {
    client: reqwest::Client,
    base_url: String,
    model: String,
    multipart: bool,
    api_key: Option<Secret>,
    scrub: Scrubber,
    /// `seconds` of renders seen completed (billed per second of output), until settled.
    bills: Bills,
}

impl OpenaiVideos {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        OpenaiVideos {
            client,
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: acct.model.clone(),
            multipart: acct.multipart,
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
            bills: Bills::default(),
        }
    }

    fn auth(&self) -> Result<Option<Auth>, ProviderError> {
        http::auth_header("Bearer", self.api_key.as_ref())
    }

    fn url(&self, path: &str) -> String {
        http::join_url(&self.base_url, path)
    }

    fn content_url(&self, id: &str) -> String {
        self.url(&format!("/v1/videos/{}/content", http::path_segment(id)))
    }

    fn request_body(
        &self,
        prompt: &str,
        seconds: String,
        size: &str,
        image: Option<&InputImage>,
    ) -> Result<Body, ProviderError> {
        if self.multipart {
            let mut form = reqwest::multipart::Form::new().text("prompt", prompt.to_string());
            if !self.model.is_empty() {
                form = form.text("model", self.model.clone());
            }
            form = form.text("seconds", seconds).text("size", size.to_string());
            if let Some(img) = image {
                let part = reqwest::multipart::Part::bytes(img.bytes.to_vec())
                    .file_name(format!("first_frame.{}", image_ext(&img.mime)))
                    .mime_str(&img.mime)
                    .map_err(|_| {
                        ProviderError::new(
                            FailureClass::InvalidRequest,
                            format!("first-frame image has an invalid MIME type {:?}", img.mime),
                        )
                    })?;
                form = form.part("input_reference", part);
            }
            Ok(Body::Multipart(form))
        } else {
            let mut body = json!({ "prompt": prompt, "seconds": seconds, "size": size });
            if !self.model.is_empty() {
                body["model"] = json!(self.model);
            }
            if let Some(img) = image {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&img.bytes);
                body["input_reference"] =
                    json!({ "image_url": format!("data:{};base64,{b64}", img.mime) });
            }
            Ok(Body::Json(body))
        }
    }
}

enum Body {
    Multipart(reqwest::multipart::Form),
    Json(Value),
}

fn image_ext(mime: &str) -> &'static str {
    http::ext_for_content_type(mime).unwrap_or("png")
}

/// `WxH` for an aspect ratio and resolution. Only `sora-2-pro` renders 1080p; other models (and
/// relays, which read size as an orientation hint) get the 720p size of the same aspect.
pub fn video_size(
    model: &str,
    aspect_ratio: &str,
    resolution: &str,
) -> Result<&'static str, ProviderError> {
    let full_hd = resolution.trim().eq_ignore_ascii_case("1080p")
        && model.trim().to_ascii_lowercase().starts_with("sora-2-pro");
    match (aspect_ratio.trim(), full_hd) {
        ("9:16", false) => Ok("720x1280"),
        ("9:16", true) => Ok("1080x1920"),
        ("16:9", false) => Ok("1280x720"),
        ("16:9", true) => Ok("1920x1080"),
        (other, _) => Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("aspect ratio {other:?} is not supported by /v1/videos (9:16 or 16:9 only)"),
        )
        .with_code("unsupported_aspect_ratio")),
    }
}

/// Where a status word puts a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Succeeded,
    Failed,
}

/// Status words of OpenAI and the relays, case-insensitively. Unknown words stay pending: keep
/// polling rather than fail a render that may still finish.
pub fn phase(status: &str) -> Phase {
    match status.trim().to_ascii_lowercase().as_str() {
        "completed" | "success" | "succeeded" | "succeed" => Phase::Succeeded,
        "failed" | "failure" | "error" | "cancelled" | "canceled" => Phase::Failed,
        _ => Phase::Pending,
    }
}

/// A pending word's phase: OpenAI's `queued` and the relays' `SUBMITTED`/`PENDING`/`NOT_START`
/// are still waiting; `in_progress`, `processing`, `running` and unknown words are running.
pub fn render_phase(status: &str) -> RenderPhase {
    match status.trim().to_ascii_lowercase().as_str() {
        "queued" | "submitted" | "pending" | "not_start" => RenderPhase::Queued,
        _ => RenderPhase::Running,
    }
}

/// Relays of the new-api kind wrap the object in `{"code","message","data":{…}}`.
fn unwrap_data(v: &Value) -> &Value {
    match v.get("data") {
        Some(d @ Value::Object(_)) if v.get("status").is_none() && v.get("id").is_none() => d,
        _ => v,
    }
}

fn task_id(v: &Value) -> Option<String> {
    v.get("id")
        .and_then(http::json_string)
        .or_else(|| v.get("task_id").and_then(http::json_string))
}

/// OpenAI sends an integer 0–100; relays send `"45%"`.
fn progress(v: &Value) -> Option<f32> {
    let pct = match v.get("progress")? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok()?,
        _ => return None,
    };
    pct.is_finite()
        .then(|| (pct / 100.0).clamp(0.0, 1.0) as f32)
}

/// A failed render's error, classified from its code and message.
fn render_failure(v: &Value, status: &str, scrub: &Scrubber) -> ProviderError {
    let err = openai::error_object(v);
    let words = format!(
        "{} {}",
        err.code.as_deref().unwrap_or(""),
        err.message.as_deref().unwrap_or("")
    );
    let class = if openai::mentions_content_policy(&words) {
        FailureClass::ContentPolicy
    } else if openai::mentions_model_retired(&words) {
        FailureClass::ModelRetired
    } else {
        FailureClass::ProviderError
    };
    let message = match &err.message {
        Some(m) => scrub.clean(m),
        None => format!("render ended with status {}", scrub.clean(status)),
    };
    let mut e = ProviderError::new(class, message);
    e.code = err
        .code
        .map(|c| scrub.clean(&c))
        .or_else(|| Some(scrub.clean(&status.to_ascii_lowercase())));
    e
}

/// One status body → what the worker should do. `content_url` is where `/content` lives for this
/// video; `poll_after` is the header hint.
pub fn poll_outcome(
    body: &Value,
    content_url: &str,
    poll_after: Option<Duration>,
    scrub: &Scrubber,
) -> Result<PollOutcome, ProviderError> {
    let v = unwrap_data(body);
    let Some(status) = v.get("status").and_then(Value::as_str) else {
        return Err(ProviderError::new(
            FailureClass::ProviderError,
            "status response without a status field",
        )
        .with_code("malformed_response"));
    };
    Ok(match phase(status) {
        Phase::Pending => PollOutcome::Pending {
            phase: render_phase(status),
            sub_status: super::sub_status(status),
            progress: progress(v),
            poll_after,
        },
        Phase::Succeeded => match v
            .get("video_url")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            Some(url) => PollOutcome::Succeeded(ResultRef::Url {
                url: url.to_string(),
            }),
            None => PollOutcome::Succeeded(ResultRef::AuthedUrl {
                url: content_url.to_string(),
            }),
        },
        Phase::Failed => PollOutcome::Failed(render_failure(v, status, scrub)),
    })
}

#[async_trait]
impl Provider for OpenaiVideos {
    fn family(&self) -> Family {
        Family::OpenaiVideos
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let v = video_args("openai-videos", req.payload, req.first_frame.as_ref())?;
        let size = video_size(&self.model, v.aspect_ratio, v.resolution)?;
        let body = self.request_body(v.prompt, v.duration_s.to_string(), size, v.image)?;
        let rb = self
            .client
            .post(self.url("/v1/videos"))
            .header(IDEMPOTENCY_KEY, req.task_id);
        let rb = http::with_auth(rb, self.auth()?);
        let rb = match body {
            Body::Multipart(form) => rb.multipart(form),
            Body::Json(v) => rb.json(&v),
        };
        let scrub = &self.scrub;
        let (answer, v) = http::call_json(rb, "create response", scrub, |a| {
            openai::error_from_response(a.status, &a.headers, &a.body, scrub)
        })
        .await?;
        let (status, headers) = (answer.status, answer.headers);
        let v = unwrap_data(&v);
        if let Some(st) = v.get("status").and_then(Value::as_str) {
            if phase(st) == Phase::Failed {
                return Err(render_failure(v, st, &self.scrub));
            }
        }
        let Some(id) = task_id(v) else {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                "create response without an id",
            )
            .with_code("malformed_response")
            .with_status(status));
        };
        Ok(SubmitOutcome::Accepted {
            provider_task_id: http::accept_task_id(id)?,
            poll_locator: None,
            poll_after: http::poll_after(&headers),
        })
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        let url = self.url(&format!(
            "/v1/videos/{}",
            http::path_segment(provider_task_id)
        ));
        let rb = http::with_auth(self.client.get(url), self.auth()?);
        let scrub = &self.scrub;
        let (answer, v) = http::call_json(rb, "status response", scrub, |a| {
            let mut err = openai::error_from_response(a.status, &a.headers, &a.body, scrub);
            if a.status == 404 && err.class != FailureClass::ModelRetired {
                // Freshly created tasks can be briefly invisible on relays; the worker decides
                // when "not found" becomes final.
                err.class = FailureClass::ProviderError;
                err.code = Some("not_found".into());
            }
            err
        })
        .await?;
        let headers = answer.headers;
        let outcome = poll_outcome(
            &v,
            &self.content_url(provider_task_id),
            http::poll_after(&headers),
            &self.scrub,
        )?;
        if let (PollOutcome::Succeeded(_), Some(s)) =
            (&outcome, seconds_field(unwrap_data(&v).get("seconds")))
        {
            self.bills.note(provider_task_id, Bill::Seconds(s));
        }
        Ok(outcome)
    }

    async fn fetch(&self, result: &ResultRef) -> Result<super::Download, ProviderError> {
        let auth = || self.auth();
        http::fetch_result(&self.client, result, &self.base_url, auth, &self.scrub).await
    }

    fn reported_bill(&self, _task_id: &str, provider_task_id: Option<&str>) -> Option<Bill> {
        self.bills.take(provider_task_id?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::testing::{self, account, json, reply};
    use bytes::Bytes;
    use dramaq_common::TaskPayload;

    fn scrub() -> Scrubber {
        Scrubber::default()
    }

    #[test]
    fn size_table() {
        let ok = [
            ("sora-2", "9:16", "720p", "720x1280"),
            ("sora-2", "16:9", "720p", "1280x720"),
            ("sora-2", "9:16", "1080p", "720x1280"),
            ("sora-2-pro", "9:16", "1080p", "1080x1920"),
            ("sora-2-pro", "16:9", "1080p", "1920x1080"),
            ("sora-2-pro-2025-10-06", "16:9", "1080p", "1920x1080"),
            ("sora-2-pro", "16:9", "720p", "1280x720"),
            ("veo3-fast", "16:9", "1080p", "1280x720"),
        ];
        for (model, aspect, res, want) in ok {
            assert_eq!(
                video_size(model, aspect, res).expect("size"),
                want,
                "{model} {aspect} {res}"
            );
        }
        for aspect in ["1:1", "4:3", ""] {
            let err = video_size("sora-2", aspect, "720p").expect_err("unsupported");
            assert_eq!(err.class, FailureClass::InvalidRequest);
        }
    }

    enum Want {
        Pending(&'static str),
        Url(&'static str),
        Authed,
        Failed(FailureClass),
    }

    #[test]
    fn status_table() {
        let content = "http://h/v1/videos/video_1/content";
        let table: Vec<(Value, Want)> = vec![
            (
                json!({"id":"video_1","status":"queued","progress":0}),
                Want::Pending("queued"),
            ),
            (json!({"status":"SUBMITTED"}), Want::Pending("SUBMITTED")),
            (json!({"status":"pending"}), Want::Pending("pending")),
            (json!({"status":"QUEUED"}), Want::Pending("QUEUED")),
            (
                json!({"status":"in_progress","progress":40}),
                Want::Pending("in_progress"),
            ),
            (
                json!({"status":"IN_PROGRESS","progress":"45%"}),
                Want::Pending("IN_PROGRESS"),
            ),
            (json!({"status":"processing"}), Want::Pending("processing")),
            (json!({"status":"running"}), Want::Pending("running")),
            (json!({"status":"warming_up"}), Want::Pending("warming_up")),
            (json!({"status":"completed"}), Want::Authed),
            (json!({"status":"completed","video_url":""}), Want::Authed),
            (
                json!({"status":"SUCCESS","video_url":"https://cdn/x.mp4"}),
                Want::Url("https://cdn/x.mp4"),
            ),
            (
                json!({"status":"succeeded","video_url":"https://cdn/y.mp4"}),
                Want::Url("https://cdn/y.mp4"),
            ),
            (
                json!({"status":"failed","error":{"code":"moderation_blocked","message":"blocked by moderation"}}),
                Want::Failed(FailureClass::ContentPolicy),
            ),
            (
                json!({"status":"failed","error":{"code":"internal_error","message":"render crashed"}}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"status":"FAILED","fail_reason":"content policy violation"}),
                Want::Failed(FailureClass::ContentPolicy),
            ),
            (
                json!({"status":"ERROR"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"status":"failure","error":null}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"status":"cancelled"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"status":"canceled"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"code":"success","message":"","data":{"task_id":"t1","status":"SUCCESS","video_url":"https://cdn/z.mp4"}}),
                Want::Url("https://cdn/z.mp4"),
            ),
        ];
        for (body, want) in table {
            let got = poll_outcome(&body, content, Some(Duration::from_secs(2)), &scrub())
                .expect("outcome");
            match (&got, want) {
                (
                    PollOutcome::Pending {
                        sub_status,
                        poll_after,
                        ..
                    },
                    Want::Pending(w),
                ) => {
                    assert_eq!(sub_status, w);
                    let queued = ["queued", "submitted", "pending"]
                        .iter()
                        .any(|q| w.eq_ignore_ascii_case(q));
                    assert_eq!(render_phase(w) == RenderPhase::Queued, queued, "{w}");
                    assert_eq!(*poll_after, Some(Duration::from_secs(2)));
                }
                (PollOutcome::Succeeded(ResultRef::Url { url }), Want::Url(w)) => {
                    assert_eq!(url, w)
                }
                (PollOutcome::Succeeded(ResultRef::AuthedUrl { url }), Want::Authed) => {
                    assert_eq!(url, content)
                }
                (PollOutcome::Failed(e), Want::Failed(class)) => {
                    assert_eq!(e.class, class, "{body}")
                }
                (got, _) => panic!("{body} gave {got:?}"),
            }
        }
        let err = poll_outcome(&json!({"id":"x"}), content, None, &scrub()).expect_err("no status");
        assert_eq!(err.class, FailureClass::ProviderError);
    }

    #[test]
    fn progress_forms() {
        let p = |v: Value| progress(&v);
        assert_eq!(p(json!({"progress": 40})), Some(0.4));
        assert_eq!(p(json!({"progress": "45%"})), Some(0.45));
        assert_eq!(p(json!({"progress": 250})), Some(1.0));
        assert_eq!(p(json!({"progress": null})), None);
        assert_eq!(p(json!({})), None);
    }

    fn video_payload(aspect: &str, first_frame: Option<&str>) -> TaskPayload {
        TaskPayload::Video {
            prompt: "a cat on a roof".into(),
            negative_prompt: None,
            duration_s: 8,
            aspect_ratio: aspect.into(),
            resolution: "720p".into(),
            first_frame: first_frame.map(str::to_string),
            seed: None,
        }
    }

    fn adapter(base: &str, multipart: bool) -> OpenaiVideos {
        let acct = account(
            "openai-videos",
            base,
            &format!("model = \"sora-2\"\nmultipart = {multipart}"),
        );
        OpenaiVideos::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("sk-test-0123456789abcdef")),
        )
    }

    fn frame() -> InputImage {
        InputImage {
            bytes: Bytes::from_static(b"\x89PNGfakeimage"),
            mime: "image/png".into(),
        }
    }

    #[tokio::test]
    async fn multipart_submit_sends_fields_key_and_file() {
        let server = testing::serve(|_| {
            reply(
                200,
                &[
                    ("content-type", "application/json"),
                    ("openai-poll-after-ms", "1500"),
                ],
                json!({"id":"video_abc","task_id":"video_abc","status":"queued"}).to_string(),
            )
        })
        .await;
        let a = adapter(&server.base, true);
        let payload = video_payload("9:16", Some("img-1"));
        let out = a
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-1",
                payload: &payload,
                first_frame: Some(frame()),
            })
            .await
            .expect("accepted");
        match out {
            SubmitOutcome::Accepted {
                provider_task_id,
                poll_locator,
                poll_after,
            } => {
                assert_eq!(provider_task_id, "video_abc");
                assert_eq!(poll_locator, None);
                assert_eq!(poll_after, Some(Duration::from_millis(1500)));
            }
            other => panic!("{other:?}"),
        }
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!((r.method.as_str(), r.uri.as_str()), ("POST", "/v1/videos"));
        assert_eq!(r.header("idempotency-key").as_deref(), Some("vid-1"));
        assert_eq!(
            r.header("authorization").as_deref(),
            Some("Bearer sk-test-0123456789abcdef")
        );
        assert!(r
            .header("content-type")
            .unwrap_or_default()
            .starts_with("multipart/form-data"));
        let body = String::from_utf8_lossy(&r.body);
        for needle in [
            "name=\"prompt\"\r\n\r\na cat on a roof",
            "name=\"model\"\r\n\r\nsora-2",
            "name=\"seconds\"\r\n\r\n8",
            "name=\"size\"\r\n\r\n720x1280",
            "name=\"input_reference\"; filename=\"first_frame.png\"",
            "PNGfakeimage",
        ] {
            assert!(body.contains(needle), "missing {needle:?} in {body}");
        }
    }

    #[tokio::test]
    async fn json_submit_uses_data_url_and_task_id() {
        let server =
            testing::serve(|_| json(200, json!({"task_id":"task_pa9","status":"SUBMITTED"}))).await;
        let a = adapter(&server.base, false);
        let payload = video_payload("16:9", Some("img-1"));
        let out = a
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-2",
                payload: &payload,
                first_frame: Some(frame()),
            })
            .await
            .expect("accepted");
        assert!(
            matches!(out, SubmitOutcome::Accepted { ref provider_task_id, .. } if provider_task_id == "task_pa9")
        );
        let r = &server.requests()[0];
        let v = r.json();
        assert_eq!(v["seconds"], "8");
        assert_eq!(v["size"], "1280x720");
        assert_eq!(v["model"], "sora-2");
        let url = v["input_reference"]["image_url"]
            .as_str()
            .expect("image_url");
        assert!(url.starts_with("data:image/png;base64,"), "{url}");
    }

    #[tokio::test]
    async fn square_is_refused_before_sending() {
        let server = testing::serve(|_| json(200, json!({"id":"v"}))).await;
        let a = adapter(&server.base, true);
        let payload = video_payload("1:1", None);
        let err = a
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-3",
                payload: &payload,
                first_frame: None,
            })
            .await
            .expect_err("refused");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn submit_errors_are_classified() {
        let server = testing::serve(|r| {
            let prompt = String::from_utf8_lossy(&r.body).to_string();
            if prompt.contains("limit") {
                reply(
                    429,
                    &[("content-type", "application/json"), ("retry-after-ms", "900"), ("retry-after", "4")],
                    json!({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}).to_string(),
                )
            } else if prompt.contains("blocked") {
                json(400, json!({"error":{"message":"Your request was blocked by our moderation system.","type":"invalid_request_error","code":"moderation_blocked"}}))
            } else if prompt.contains("retired") {
                json(404, json!({"error":{"message":"model sora-2 is no longer available","code":null}}))
            } else {
                reply(200, &[], "not json")
            }
        })
        .await;
        let a = adapter(&server.base, false);
        let cases = [
            ("limit", FailureClass::RateLimited),
            ("blocked", FailureClass::ContentPolicy),
            ("retired", FailureClass::ModelRetired),
            ("garbage", FailureClass::ProviderError),
        ];
        for (word, class) in cases {
            let mut payload = video_payload("9:16", None);
            if let TaskPayload::Video { prompt, .. } = &mut payload {
                *prompt = word.into();
            }
            let err = a
                .submit(SubmitRequest {
                    season: "s",
                    group: "g",
                    deps: &[],
                    attempt: 1,
                    task_id: "vid-4",
                    payload: &payload,
                    first_frame: None,
                })
                .await
                .expect_err(word);
            assert_eq!(err.class, class, "{word}: {err:?}");
            if word == "limit" {
                assert_eq!(err.retry_after, Some(Duration::from_millis(900)));
                assert_eq!(err.http_status, Some(429));
            }
            assert!(!err.message.contains("sk-test"));
        }
    }

    #[tokio::test]
    async fn poll_and_fetch_paths() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/v1/videos/video_run" => reply(
                200,
                &[
                    ("content-type", "application/json"),
                    ("openai-poll-after-ms", "3000"),
                ],
                json!({"id":"video_run","status":"in_progress","progress":33}).to_string(),
            ),
            "/v1/videos/video_done" => json(200, json!({"id":"video_done","status":"completed"})),
            "/v1/videos/video_done/content" => {
                if r.header("authorization").is_some()
                    && r.header("accept").as_deref() == Some("application/binary")
                {
                    reply(200, &[("content-type", "video/mp4")], "MP4")
                } else {
                    reply(401, &[], "")
                }
            }
            "/v1/videos/video_gone/content" => reply(404, &[], ""),
            "/cdn/x.mp4" => {
                if r.header("authorization").is_some() {
                    reply(400, &[], "key leaked")
                } else {
                    reply(200, &[("content-type", "video/mp4")], "CDN")
                }
            }
            _ => json(
                404,
                json!({"error":{"message":"Video not found","type":"invalid_request_error"}}),
            ),
        })
        .await;
        let a = adapter(&server.base, true);
        match a.poll("video_run", None).await.expect("poll") {
            PollOutcome::Pending {
                phase,
                sub_status,
                progress,
                poll_after,
            } => {
                assert_eq!(phase, RenderPhase::Running);
                assert_eq!(sub_status, "in_progress");
                assert_eq!(progress, Some(0.33));
                assert_eq!(poll_after, Some(Duration::from_millis(3000)));
            }
            other => panic!("{other:?}"),
        }
        let result = match a.poll("video_done", None).await.expect("poll") {
            PollOutcome::Succeeded(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            result,
            ResultRef::AuthedUrl {
                url: format!("{}/v1/videos/video_done/content", server.base)
            }
        );
        let dl = a.fetch(&result).await.expect("fetch");
        assert_eq!(dl.ext.as_deref(), Some("mp4"));
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"MP4");

        let cdn = ResultRef::Url {
            url: format!("{}/cdn/x.mp4", server.base),
        };
        let dl = a.fetch(&cdn).await.expect("cdn fetch");
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"CDN");

        let gone = ResultRef::AuthedUrl {
            url: format!("{}/v1/videos/video_gone/content", server.base),
        };
        let err = a.fetch(&gone).await.err().expect("gone");
        assert_eq!(err.class, FailureClass::ResultExpired);

        let foreign = ResultRef::AuthedUrl {
            url: "http://elsewhere.invalid/v1/videos/x/content".into(),
        };
        assert_eq!(
            a.fetch(&foreign).await.err().expect("foreign").class,
            FailureClass::InvalidRequest
        );

        let err = a.poll("video_missing", None).await.expect_err("404");
        assert_eq!(err.class, FailureClass::ProviderError);
        assert_eq!(err.code.as_deref(), Some("not_found"));
        assert_eq!(err.http_status, Some(404));
    }
}
