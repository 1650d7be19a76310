//! Family `replicate`: Replicate predictions (docs/providers.md, "replicate").
//!
//! Quirks handled here:
//! - The account's `model` is `owner/name`; submit posts `{"input":{…}}` to
//!   `/v1/models/{owner}/{name}/predictions` (an `owner/name:version` model goes to
//!   `/v1/predictions` with `version`). The first frame is a `data:` URL in `input.image`.
//! - The prediction carries ready-made `urls.get` / `urls.cancel`; they are stored as the poll
//!   locator `{"get","cancel"}` and only used when on the same origin as the base URL (anything
//!   else is `invalid_request`), so a record cannot send the token elsewhere. Without a locator
//!   the adapter polls `/v1/predictions/{id}`.
//! - Statuses: `starting`/`processing` pending, `succeeded` with `output` as a URL or an array
//!   of URLs (the first is taken; none is a failure), `failed` with `error` text (moderation
//!   words are `content_policy`), and `canceled` / `aborted` (deadline hit before start) as
//!   `provider_error` with the status as code.
//! - Throttling says when to come back only in text: a 429 body
//!   `{"detail":"Request was throttled. Your rate limit resets in ~30s."}` gives the retry hint
//!   when there is no `Retry-After` header. 402 is `insufficient_credits`.
//! - Output files are removed an hour after an API prediction: downloads that answer
//!   403/404/410 are `result_expired`.
//! - [`Replicate::cancel`] is `POST urls.cancel`.

use super::fal::same_origin;
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
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// Throttling hints beyond this are not believed.
const MAX_TEXT_HINT: Duration = Duration::from_secs(3600);

pub struct Replicate {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    scrub: Scrubber,
    /// `accounts.<name>.callback_url`: sent as `webhook` (with the task id appended), for the
    /// `completed` event only.
    callback_url: Option<String>,
}

/// The poll locator stored with the task: the prediction's own URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    pub get: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
}

impl Locator {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<Locator, ProviderError> {
        serde_json::from_str(text).map_err(|_| {
            ProviderError::new(
                FailureClass::InvalidRequest,
                "Replicate poll locator is not {\"get\",\"cancel\"}",
            )
            .with_code("bad_poll_locator")
        })
    }
}

/// Where a model submits: `owner/name` (official model route) or `owner/name:version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Model { owner: String, name: String },
    Version(String),
}

pub fn target(model: &str) -> Result<Target, ProviderError> {
    let bad = || {
        ProviderError::new(
            FailureClass::InvalidRequest,
            format!("Replicate model {model:?} is not owner/name or owner/name:version"),
        )
        .with_code("bad_model_id")
    };
    let safe = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let (path, version) = match model.trim().split_once(':') {
        Some((p, v)) => (p, Some(v)),
        None => (model.trim(), None),
    };
    let Some((owner, name)) = path.split_once('/') else {
        return Err(bad());
    };
    if !safe(owner) || !safe(name) {
        return Err(bad());
    }
    match version {
        Some(v) if safe(v) => Ok(Target::Version(v.to_string())),
        Some(_) => Err(bad()),
        None => Ok(Target::Model {
            owner: owner.to_string(),
            name: name.to_string(),
        }),
    }
}

/// The prediction input for one video payload.
pub fn input(payload: &TaskPayload, image: Option<&InputImage>) -> Result<Value, ProviderError> {
    let v = video_args("replicate", payload, image)?;
    let mut input = json!({
        "prompt": v.prompt,
        "duration": v.duration_s,
        "aspect_ratio": v.aspect_ratio,
    });
    if let Some(neg) = v.negative_prompt {
        input["negative_prompt"] = json!(neg);
    }
    if let Some(seed) = v.seed {
        input["seed"] = json!(seed);
    }
    if let Some(img) = v.image {
        input["image"] = json!(format!(
            "data:{};base64,{}",
            img.mime,
            base64::engine::general_purpose::STANDARD.encode(&img.bytes)
        ));
    }
    Ok(input)
}

/// "Your rate limit resets in ~30s." → 30 s. Also `~2m`, `in 1.5 seconds`.
pub fn parse_reset_hint(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("resets in")? + "resets in".len();
    let rest = lower[at..]
        .trim_start()
        .trim_start_matches('~')
        .trim_start();
    let num_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let value: f64 = rest[..num_len].parse().ok()?;
    let unit = rest[num_len..].trim_start();
    let secs = if unit.starts_with("ms") {
        value / 1000.0
    } else if unit.starts_with('m') {
        value * 60.0
    } else if unit.starts_with('h') {
        value * 3600.0
    } else {
        value
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_TEXT_HINT))
}

fn mentions_moderation(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    openai::mentions_content_policy(&t) || t.contains("nsfw") || t.contains("flagged")
}

/// A non-2xx answer as a classified error. Replicate sends problem JSON
/// `{"title","detail","status"}`. `on_poll`: a 404 is `not_found` for the grace window.
pub fn error_from_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
    on_poll: bool,
) -> ProviderError {
    let api = openai::parse_error_body(body);
    let title = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("title").and_then(http::json_string));
    let text = api.message.clone().or(title).unwrap_or_default();
    let class = match status {
        429 => FailureClass::RateLimited,
        402 => FailureClass::InsufficientCredits,
        404 if on_poll => FailureClass::ProviderError,
        400..=499 if mentions_moderation(&text) => FailureClass::ContentPolicy,
        s => http::class_for_status(s),
    };
    let hint = match class {
        FailureClass::RateLimited | FailureClass::ProviderError => {
            http::retry_after(headers).or_else(|| parse_reset_hint(&text))
        }
        _ => None,
    };
    let code = if status == 404 && on_poll {
        "not_found".to_string()
    } else {
        api.code
            .map(|c| scrub.clean(&c))
            .unwrap_or_else(|| status.to_string())
    };
    let message = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        scrub.clean(&text)
    };
    ProviderError::new(class, message)
        .with_code(code)
        .with_status(status)
        .with_retry_after(hint)
}

/// The first output URL: `output` is a URL, an array of URLs, or (some models) an object
/// holding one.
fn first_output(v: &Value) -> Option<String> {
    let pick = |x: &Value| {
        x.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match v.get("output")? {
        s @ Value::String(_) => pick(s),
        Value::Array(items) => items.iter().find_map(pick),
        o @ Value::Object(_) => ["video", "url"]
            .iter()
            .find_map(|k| o.get(*k).and_then(pick)),
        _ => None,
    }
}

fn error_text(v: &Value) -> Option<String> {
    match v.get("error")? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().to_string()),
        other => openai::error_object(&json!({ "error": other }))
            .message
            .or_else(|| Some(other.to_string())),
    }
}

/// One prediction object → what the worker should do.
pub fn poll_outcome(v: &Value, scrub: &Scrubber) -> Result<PollOutcome, ProviderError> {
    let Some(status) = v.get("status").and_then(Value::as_str).map(str::trim) else {
        return Err(ProviderError::new(
            FailureClass::ProviderError,
            "prediction without a status field",
        )
        .with_code("malformed_response"));
    };
    let lower = status.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "succeeded" => match first_output(v) {
            Some(url) => PollOutcome::Succeeded(ResultRef::Url { url }),
            None => PollOutcome::Failed(
                ProviderError::new(FailureClass::ProviderError, "success without output")
                    .with_code("success_without_output"),
            ),
        },
        "failed" => {
            let text = error_text(v).unwrap_or_default();
            let class = if mentions_moderation(&text) {
                FailureClass::ContentPolicy
            } else {
                FailureClass::ProviderError
            };
            let message = if text.is_empty() {
                "prediction failed".to_string()
            } else {
                scrub.clean(&text)
            };
            PollOutcome::Failed(ProviderError::new(class, message).with_code("failed"))
        }
        "canceled" | "cancelled" | "aborted" => PollOutcome::Failed(
            ProviderError::new(
                FailureClass::ProviderError,
                match error_text(v) {
                    Some(t) => format!("prediction {lower}: {}", scrub.clean(&t)),
                    None => format!("prediction {lower}"),
                },
            )
            .with_code(lower.clone()),
        ),
        // starting, processing, and words we do not know yet: keep polling.
        _ => PollOutcome::Pending {
            // `starting`: waiting for a machine (cold boot included), not rendering yet.
            phase: if lower == "starting" {
                RenderPhase::Queued
            } else {
                RenderPhase::Running
            },
            sub_status: super::sub_status(status),
            progress: None,
            poll_after: None,
        },
    })
}

impl Replicate {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        Replicate {
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

    fn prediction_url(&self, id: &str) -> String {
        http::join_url(
            &self.base_url,
            &format!("/v1/predictions/{}", http::path_segment(id)),
        )
    }

    fn foreign_url() -> ProviderError {
        ProviderError::new(
            FailureClass::InvalidRequest,
            "Replicate prediction URL is not on the account's base_url host",
        )
        .with_code("foreign_prediction_url")
    }

    /// The locator to poll with: the stored one (its URLs checked) or the plain prediction URL.
    fn locator(&self, id: &str, stored: Option<&str>) -> Result<Locator, ProviderError> {
        let loc = match stored {
            Some(text) => Locator::parse(text)?,
            None => Locator {
                get: self.prediction_url(id),
                cancel: None,
            },
        };
        if !same_origin(&loc.get, &self.base_url)
            || loc
                .cancel
                .as_deref()
                .is_some_and(|c| !same_origin(c, &self.base_url))
        {
            return Err(Self::foreign_url());
        }
        Ok(loc)
    }

    /// A prediction's `urls` when on our host, else the plain prediction URLs.
    fn locator_from_prediction(&self, v: &Value, id: &str) -> Locator {
        let given = |key: &str| {
            v.pointer(&format!("/urls/{key}"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|u| !u.is_empty() && same_origin(u, &self.base_url))
                .map(str::to_string)
        };
        let get = given("get").unwrap_or_else(|| self.prediction_url(id));
        Locator {
            cancel: given("cancel").or_else(|| Some(format!("{get}/cancel"))),
            get,
        }
    }

    async fn read(
        &self,
        rb: reqwest::RequestBuilder,
        on_poll: bool,
    ) -> Result<Value, ProviderError> {
        let rb = http::with_auth(rb, self.auth()?);
        let scrub = &self.scrub;
        let (_, v) = http::call_json(rb, "Replicate prediction", scrub, |a| {
            error_from_response(a.status, &a.headers, &a.body, scrub, on_poll)
        })
        .await?;
        Ok(v)
    }

    /// Cancel a prediction (`POST urls.cancel`); a finished one is left as it is.
    pub async fn cancel(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<(), ProviderError> {
        let loc = self.locator(provider_task_id, poll_locator)?;
        let url = loc
            .cancel
            .unwrap_or_else(|| format!("{}/cancel", loc.get.trim_end_matches('/')));
        if !same_origin(&url, &self.base_url) {
            return Err(Self::foreign_url());
        }
        self.read(self.client.post(url), true).await.map(|_| ())
    }
}

#[async_trait]
impl Provider for Replicate {
    fn family(&self) -> Family {
        Family::Replicate
    }

    async fn cancel(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<bool, ProviderError> {
        Replicate::cancel(self, provider_task_id, poll_locator)
            .await
            .map(|_| true)
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let target = target(&self.model)?;
        let input = input(req.payload, req.first_frame.as_ref())?;
        let (url, mut body) = match target {
            Target::Model { owner, name } => (
                http::join_url(
                    &self.base_url,
                    &format!("/v1/models/{owner}/{name}/predictions"),
                ),
                json!({ "input": input }),
            ),
            Target::Version(version) => (
                http::join_url(&self.base_url, "/v1/predictions"),
                json!({ "version": version, "input": input }),
            ),
        };
        if let Some(hook) = &self.callback_url {
            body["webhook"] = json!(super::callback_for(hook, req.task_id));
            body["webhook_events_filter"] = json!(["completed"]);
        }
        let rb = self
            .client
            .post(url)
            .header(IDEMPOTENCY_KEY, req.task_id)
            .json(&body);
        let v = self.read(rb, false).await?;
        let Some(id) = v.get("id").and_then(http::json_string) else {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                "Replicate create response without an id",
            )
            .with_code("malformed_response"));
        };
        // A prediction can fail (or be aborted) before the create call returns.
        if let Ok(PollOutcome::Failed(e)) = poll_outcome(&v, &self.scrub) {
            let status = v.get("status").and_then(Value::as_str).unwrap_or("");
            if !status.eq_ignore_ascii_case("succeeded") {
                return Err(e);
            }
        }
        Ok(SubmitOutcome::Accepted {
            poll_locator: Some(self.locator_from_prediction(&v, &id).to_json()),
            provider_task_id: http::accept_task_id(id)?,
            poll_after: None,
        })
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        let loc = self.locator(provider_task_id, poll_locator)?;
        let v = self.read(self.client.get(loc.get), true).await?;
        poll_outcome(&v, &self.scrub)
    }

    /// Output files live on Replicate's public delivery CDN: fetched without credentials.
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
    fn targets() {
        assert_eq!(
            target("minimax/video-01").expect("model"),
            Target::Model {
                owner: "minimax".into(),
                name: "video-01".into()
            }
        );
        assert_eq!(
            target("owner/model:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa")
                .expect("version"),
            Target::Version(
                "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa".into()
            )
        );
        for bad in [
            "", "justname", "a/b/c", "../x", "a/..", "a/b c", "a/b:", "a/b:x/y",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reset_hints() {
        let table = [
            (
                "Request was throttled. Your rate limit resets in ~30s.",
                Some(Duration::from_secs(30)),
            ),
            ("resets in ~2m", Some(Duration::from_secs(120))),
            (
                "Your rate limit resets in 1.5 seconds",
                Some(Duration::from_millis(1500)),
            ),
            ("resets in ~500ms", Some(Duration::from_millis(500))),
            ("resets in ~99999h", Some(MAX_TEXT_HINT)),
            ("Request was throttled.", None),
            ("resets in soon", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_reset_hint(text), want, "{text}");
        }
    }

    #[test]
    fn http_error_table() {
        let table: &[(u16, &str, bool, FailureClass)] = &[
            (
                429,
                r#"{"detail":"Request was throttled. Your rate limit resets in ~30s.","status":429}"#,
                false,
                FailureClass::RateLimited,
            ),
            (
                402,
                r#"{"title":"Insufficient credit","detail":"You have insufficient credit to run this model.","status":402}"#,
                false,
                FailureClass::InsufficientCredits,
            ),
            (
                401,
                r#"{"detail":"Unauthenticated","status":401}"#,
                false,
                FailureClass::Auth,
            ),
            (
                422,
                r#"{"title":"Input validation failed","detail":"- input.duration: must be one of 5, 10","status":422}"#,
                false,
                FailureClass::InvalidRequest,
            ),
            (
                422,
                r#"{"detail":"Prompt flagged as sensitive","status":422}"#,
                false,
                FailureClass::ContentPolicy,
            ),
            (
                404,
                r#"{"detail":"Not found."}"#,
                true,
                FailureClass::ProviderError,
            ),
            (
                404,
                r#"{"detail":"Not found."}"#,
                false,
                FailureClass::InvalidRequest,
            ),
            (500, "<html></html>", true, FailureClass::ProviderError),
        ];
        for (status, body, on_poll, want) in table {
            let err = error_from_response(
                *status,
                &HeaderMap::new(),
                body.as_bytes(),
                &scrub(),
                *on_poll,
            );
            assert_eq!(err.class, *want, "{status} {body}");
            assert_eq!(err.http_status, Some(*status));
        }
        let err = error_from_response(
            429,
            &HeaderMap::new(),
            br#"{"detail":"Request was throttled. Your rate limit resets in ~30s."}"#,
            &scrub(),
            false,
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("4"));
        let err = error_from_response(
            429,
            &h,
            br#"{"detail":"Request was throttled. Your rate limit resets in ~30s."}"#,
            &scrub(),
            false,
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(4)));
        let err = error_from_response(404, &h, b"{}", &scrub(), true);
        assert_eq!(err.code.as_deref(), Some("not_found"));
    }

    #[test]
    fn render_phases() {
        let table = [
            ("starting", RenderPhase::Queued),
            ("processing", RenderPhase::Running),
            ("queued_somewhere", RenderPhase::Running),
        ];
        for (word, want) in table {
            match poll_outcome(&json!({"id":"p","status":word}), &Scrubber::default()) {
                Ok(PollOutcome::Pending { phase, .. }) => assert_eq!(phase, want, "{word}"),
                other => panic!("{word}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_table() {
        enum Want {
            Pending(&'static str),
            Url(&'static str),
            Failed(FailureClass, &'static str),
        }
        let table: Vec<(Value, Want)> = vec![
            (
                json!({"id":"p","status":"starting"}),
                Want::Pending("starting"),
            ),
            (
                json!({"id":"p","status":"processing","logs":"50%"}),
                Want::Pending("processing"),
            ),
            (
                json!({"id":"p","status":"queued_somewhere"}),
                Want::Pending("queued_somewhere"),
            ),
            (
                json!({"id":"p","status":"succeeded","output":"https://replicate.delivery/a.mp4"}),
                Want::Url("https://replicate.delivery/a.mp4"),
            ),
            (
                json!({"id":"p","status":"succeeded","output":["https://replicate.delivery/b.mp4","https://x/c.mp4"]}),
                Want::Url("https://replicate.delivery/b.mp4"),
            ),
            (
                json!({"id":"p","status":"succeeded","output":null}),
                Want::Failed(FailureClass::ProviderError, "success_without_output"),
            ),
            (
                json!({"id":"p","status":"succeeded","output":[]}),
                Want::Failed(FailureClass::ProviderError, "success_without_output"),
            ),
            (
                json!({"id":"p","status":"failed","error":"CUDA out of memory"}),
                Want::Failed(FailureClass::ProviderError, "failed"),
            ),
            (
                json!({"id":"p","status":"failed","error":"NSFW content detected. Try a different prompt."}),
                Want::Failed(FailureClass::ContentPolicy, "failed"),
            ),
            (
                json!({"id":"p","status":"failed","error":null}),
                Want::Failed(FailureClass::ProviderError, "failed"),
            ),
            (
                json!({"id":"p","status":"canceled"}),
                Want::Failed(FailureClass::ProviderError, "canceled"),
            ),
            (
                json!({"id":"p","status":"aborted"}),
                Want::Failed(FailureClass::ProviderError, "aborted"),
            ),
        ];
        for (body, want) in table {
            match (poll_outcome(&body, &scrub()).expect("outcome"), want) {
                (PollOutcome::Pending { sub_status, .. }, Want::Pending(w)) => {
                    assert_eq!(sub_status, w)
                }
                (PollOutcome::Succeeded(ResultRef::Url { url }), Want::Url(w)) => {
                    assert_eq!(url, w)
                }
                (PollOutcome::Failed(e), Want::Failed(c, code)) => {
                    assert_eq!(e.class, c, "{body}");
                    assert_eq!(e.code.as_deref(), Some(code), "{body}");
                }
                (got, _) => panic!("{body} gave {got:?}"),
            }
        }
        assert!(poll_outcome(&json!({"id":"p"}), &scrub()).is_err());
    }

    fn adapter(base: &str) -> Replicate {
        let acct = account("replicate", base, "model = \"kwaivgi/kling-v2.1\"");
        Replicate::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("r8_testtoken0123456789")),
        )
    }

    fn payload(first_frame: bool) -> TaskPayload {
        TaskPayload::Video {
            prompt: "a fox in snow".into(),
            negative_prompt: Some("blur".into()),
            duration_s: 5,
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            first_frame: first_frame.then(|| "img".to_string()),
            seed: Some(9),
        }
    }

    #[tokio::test]
    async fn submit_poll_and_cancel_use_prediction_urls() {
        let server = testing::serve(|r| {
            let base = format!(
                "http://{}",
                r.headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
            );
            let pred = |status: &str, output: Value| {
                json!({"id":"pred-1","status":status,"output":output,"error":null,
                    "urls":{"get":format!("{base}/v1/predictions/pred-1"),
                            "cancel":format!("{base}/v1/predictions/pred-1/cancel")}})
            };
            match (r.method.as_str(), r.uri.as_str()) {
                ("POST", "/v1/models/kwaivgi/kling-v2.1/predictions") => {
                    if String::from_utf8_lossy(&r.body).contains("throttle") {
                        json(
                            429,
                            json!({"detail":"Request was throttled. Your rate limit resets in ~30s.","status":429}),
                        )
                    } else {
                        json(201, pred("starting", Value::Null))
                    }
                }
                ("GET", "/v1/predictions/pred-1") => json(
                    200,
                    pred("succeeded", json!(["https://replicate.delivery/x/out.mp4"])),
                ),
                ("POST", "/v1/predictions/pred-1/cancel") => json(200, pred("canceled", Value::Null)),
                _ => json(404, json!({"detail":"Not found."})),
            }
        })
        .await;
        let rp = adapter(&server.base);
        let p = payload(true);
        let out = rp
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
        assert_eq!(id, "pred-1");
        let loc = Locator::parse(&locator).expect("locator");
        assert_eq!(loc.get, format!("{}/v1/predictions/pred-1", server.base));
        let req = &server.requests()[0];
        assert_eq!(req.header("idempotency-key").as_deref(), Some("vid-1"));
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer r8_testtoken0123456789")
        );
        let v = req.json();
        assert_eq!(v["input"]["prompt"], "a fox in snow");
        assert_eq!(v["input"]["duration"], 5);
        assert_eq!(v["input"]["aspect_ratio"], "16:9");
        assert_eq!(v["input"]["negative_prompt"], "blur");
        assert_eq!(v["input"]["seed"], 9);
        assert_eq!(v["input"]["image"], "data:image/png;base64,UE5H");

        match rp.poll(&id, Some(&locator)).await.expect("poll") {
            PollOutcome::Succeeded(ResultRef::Url { url }) => {
                assert_eq!(url, "https://replicate.delivery/x/out.mp4")
            }
            other => panic!("{other:?}"),
        }
        // Without a locator the plain prediction URL is used.
        assert!(matches!(
            rp.poll(&id, None).await.expect("poll"),
            PollOutcome::Succeeded(_)
        ));
        let err = rp.poll("pred-missing", None).await.expect_err("404");
        assert_eq!(err.code.as_deref(), Some("not_found"));
        rp.cancel(&id, Some(&locator)).await.expect("cancel");
        assert!(server
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.uri == "/v1/predictions/pred-1/cancel"));

        let mut p = payload(false);
        if let TaskPayload::Video { prompt, .. } = &mut p {
            *prompt = "throttle".into();
        }
        let err = rp
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
            .expect_err("429");
        assert_eq!(err.class, FailureClass::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn foreign_locator_is_refused() {
        let server = testing::serve(|_| json(200, json!({"status":"starting"}))).await;
        let rp = adapter(&server.base);
        let evil = Locator {
            get: "https://attacker.invalid/v1/predictions/x".into(),
            cancel: None,
        }
        .to_json();
        let err = rp.poll("x", Some(&evil)).await.expect_err("foreign");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        let err = rp.cancel("x", Some(&evil)).await.expect_err("foreign");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn fetch_has_no_token_and_expires() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/d/out.mp4" if r.header("authorization").is_none() => {
                reply(200, &[("content-type", "video/mp4")], "REPL")
            }
            _ => reply(404, &[], ""),
        })
        .await;
        let rp = adapter(&server.base);
        let dl = rp
            .fetch(&ResultRef::Url {
                url: format!("{}/d/out.mp4", server.base),
            })
            .await
            .expect("fetch");
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"REPL");
        let err = rp
            .fetch(&ResultRef::Url {
                url: format!("{}/d/gone.mp4", server.base),
            })
            .await
            .err()
            .expect("expired");
        assert_eq!(err.class, FailureClass::ResultExpired);
    }
}
