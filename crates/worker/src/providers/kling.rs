//! Family `kling`: Kling's official video API and relay passthroughs of it (docs/providers.md,
//! "kling").
//!
//! Quirks handled here:
//! - Auth is a fresh HS256 JWT per request (`iss` = access key, `exp` = now+30 min, `nbf` =
//!   now−5 s, signed with the secret key); relays (`jwt = false`) take their key as a plain bearer.
//! - The poll path must match the submit path (`text2video` vs `image2video`), so the action is
//!   the poll locator: `{"action":"text2video"}`.
//! - `image` is raw base64 with no `data:` prefix; `duration` is a string; `aspect_ratio` is
//!   text-to-video only.
//! - Every answer is an envelope `{code,message,request_id,data}` and `code != 0` is an error even
//!   with HTTP 200. HTTP 429 is ambiguous: 1302 is a rate limit and 1303 a concurrency limit, but
//!   1100/1101/1102 are account and credit problems that must not be retried.
//! - Success is spelled `succeed`; a success without a video URL is a failure.
//! - Our task id goes out as `external_task_id`, which Kling accepts in place of its own id when
//!   querying: that is how [`Kling::reconcile`] finds a task whose submit answer was lost.

use super::billing::{seconds_field, Bill, Bills};
use super::http::{self, Auth, Scrubber, IDEMPOTENCY_KEY, JSON_BODY_CAP};
use super::{
    video_args, PollOutcome, Provider, ProviderError, RenderPhase, ResultRef, SubmitOutcome,
    SubmitRequest,
};
use async_trait::async_trait;
use base64::Engine;
use dramaq_common::config::{AccountConfig, Family, Secret};
use dramaq_common::{FailureClass, TaskPayload};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// JWT lifetime; Kling's documented value.
const JWT_TTL_S: i64 = 1800;
/// Backdating `nbf` absorbs clock skew between us and Kling (error 1003 "not yet valid").
const JWT_SKEW_S: i64 = 5;

pub struct Kling {
    client: reqwest::Client,
    base_url: String,
    model: String,
    jwt: bool,
    access_key: Option<Secret>,
    secret_key: Option<Secret>,
    scrub: Scrubber,
    /// `accounts.<name>.callback_url`: sent as `callback_url` (with the task id appended).
    callback_url: Option<String>,
    /// Output seconds of renders seen succeeded (Kling bills per second), until settled.
    bills: Bills,
}

/// The two submit paths; the poll path must repeat the one used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Text2video,
    Image2video,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Text2video => "text2video",
            Action::Image2video => "image2video",
        }
    }

    fn for_payload(payload: &TaskPayload) -> Action {
        match payload {
            TaskPayload::Video {
                first_frame: Some(_),
                ..
            } => Action::Image2video,
            _ => Action::Text2video,
        }
    }
}

/// The poll locator stored with the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    pub action: Action,
}

impl Locator {
    pub fn to_json(&self) -> String {
        json!({ "action": self.action.as_str() }).to_string()
    }

    /// A task saved without a locator was a text-to-video submit.
    pub fn parse(text: Option<&str>) -> Result<Locator, ProviderError> {
        match text {
            None => Ok(Locator {
                action: Action::Text2video,
            }),
            Some(t) => serde_json::from_str(t).map_err(|_| {
                ProviderError::new(
                    FailureClass::InvalidRequest,
                    "Kling poll locator is not {\"action\":\"text2video\"|\"image2video\"}",
                )
                .with_code("bad_poll_locator")
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub exp: i64,
    pub nbf: i64,
}

/// The per-request token Kling wants: HS256, `{"alg":"HS256","typ":"JWT"}`.
pub fn sign_jwt(access_key: &str, secret_key: &str, now_s: i64) -> Result<String, ProviderError> {
    let claims = Claims {
        iss: access_key.to_string(),
        exp: now_s + JWT_TTL_S,
        nbf: now_s - JWT_SKEW_S,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret_key.as_bytes()),
    )
    .map_err(|_| ProviderError::new(FailureClass::Auth, "could not sign the Kling JWT"))
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Class of a Kling error code (docs/providers.md, "kling", error table).
pub fn class_for_code(code: i64, message: &str, http_status: u16) -> FailureClass {
    match code {
        1000..=1004 => FailureClass::Auth,
        // Account exception, arrears, resource pack depleted: all arrive as HTTP 429, none is a
        // rate limit, and retrying only burns attempts.
        1100..=1102 => FailureClass::InsufficientCredits,
        1103 => FailureClass::Auth,
        1200..=1202 => FailureClass::InvalidRequest,
        1203 if http::openai::mentions_model_retired(message) => FailureClass::ModelRetired,
        1203 => FailureClass::InvalidRequest,
        1300 | 1301 => FailureClass::ContentPolicy,
        1302 => FailureClass::RateLimited,
        1303 => FailureClass::ConcurrencyLimited,
        // IP whitelist: a configuration problem on our side.
        1304 => FailureClass::Auth,
        5000..=5002 => FailureClass::ProviderError,
        _ => match http_status {
            200..=299 => FailureClass::ProviderError,
            s => http::class_for_status(s),
        },
    }
}

/// A failed render's class from its `task_status_msg`.
pub fn failure_class_for_message(msg: &str) -> FailureClass {
    let m = msg.to_ascii_lowercase();
    if ["risk", "content", "safety", "moderation", "sensitive"]
        .iter()
        .any(|w| m.contains(w))
    {
        FailureClass::ContentPolicy
    } else {
        FailureClass::ProviderError
    }
}

/// Open the envelope: the `data` object, or the classified error (HTTP status or `code != 0`).
pub fn open_envelope(
    http_status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
) -> Result<Value, ProviderError> {
    let ok_http = (200..300).contains(&http_status);
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if ok_http => {
            return Err(http::parse_json(body, "Kling response", scrub)
                .err()
                .unwrap_or_else(|| {
                    ProviderError::new(FailureClass::ProviderError, "malformed Kling response")
                }))
        }
        Err(_) => return Err(plain_http_error(http_status, headers, body, scrub)),
    };
    let code = v.get("code").and_then(|c| match c {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match code {
        Some(0) if ok_http => match v.get("data") {
            Some(d @ Value::Object(_)) => Ok(d.clone()),
            _ => Err(ProviderError::new(
                FailureClass::ProviderError,
                "Kling response without a data object",
            )
            .with_code("malformed_response")),
        },
        Some(code) if code != 0 => {
            let class = class_for_code(code, &message, http_status);
            let hint = match class {
                FailureClass::RateLimited
                | FailureClass::ConcurrencyLimited
                | FailureClass::ProviderError => http::retry_after(headers),
                _ => None,
            };
            let text = if message.is_empty() {
                format!("Kling error {code}")
            } else {
                scrub.clean(&message)
            };
            Err(ProviderError::new(class, text)
                .with_code(code.to_string())
                .with_status(http_status)
                .with_retry_after(hint))
        }
        // Some passthroughs drop `code` on success; a data object is answer enough.
        None if ok_http && v.get("data").is_some_and(Value::is_object) => {
            Ok(v.get("data").cloned().unwrap_or_default())
        }
        _ => Err(plain_http_error(http_status, headers, body, scrub)),
    }
}

/// An HTTP failure without a Kling code (gateway pages, relays' own errors).
fn plain_http_error(
    http_status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
) -> ProviderError {
    if (200..300).contains(&http_status) {
        return ProviderError::new(FailureClass::ProviderError, "Kling response without a code")
            .with_code("malformed_response")
            .with_status(http_status);
    }
    http::openai::error_from_response(http_status, headers, body, scrub)
}

/// "This task does not exist": HTTP 404, or Kling's resource-not-found codes about a task.
fn is_task_not_found(err: &ProviderError) -> bool {
    if err.class == FailureClass::ModelRetired {
        return false;
    }
    let m = err.message.to_ascii_lowercase();
    let says_missing = m.contains("not found") || m.contains("not exist") || m.contains("no such");
    err.http_status == Some(404)
        || matches!(err.code.as_deref(), Some("1202") | Some("1203"))
        || (err.code.as_deref() == Some("1201") && says_missing && m.contains("task"))
}

/// The output seconds a finished task reports (`task_result.videos[0].duration`, a string).
pub fn billed_seconds(data: &Value) -> Option<f64> {
    seconds_field(data.pointer("/task_result/videos/0/duration"))
}

/// One task `data` object → what the worker should do.
pub fn poll_outcome(data: &Value, scrub: &Scrubber) -> PollOutcome {
    let status = data
        .get("task_status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    match status.to_ascii_lowercase().as_str() {
        "succeed" | "succeeded" | "success" => {
            let url = data
                .pointer("/task_result/videos/0/url")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|u| !u.is_empty());
            match url {
                Some(url) => PollOutcome::Succeeded(ResultRef::Url {
                    url: url.to_string(),
                }),
                None => PollOutcome::Failed(
                    ProviderError::new(FailureClass::ProviderError, "success without output")
                        .with_code("succeed_without_video"),
                ),
            }
        }
        "failed" | "failure" => {
            let msg = data
                .get("task_status_msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim();
            let class = failure_class_for_message(msg);
            let text = if msg.is_empty() {
                "render failed".to_string()
            } else {
                scrub.clean(msg)
            };
            PollOutcome::Failed(ProviderError::new(class, text).with_code("failed"))
        }
        // submitted, processing, and words we do not know yet: keep polling.
        lower => PollOutcome::Pending {
            phase: if lower == "submitted" {
                RenderPhase::Queued
            } else {
                RenderPhase::Running
            },
            sub_status: super::sub_status(status),
            progress: None,
            poll_after: None,
        },
    }
}

impl Kling {
    pub fn new(
        client: reqwest::Client,
        acct: &AccountConfig,
        access_key: Option<Secret>,
        secret_key: Option<Secret>,
    ) -> Self {
        Kling {
            client,
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: acct.model.clone(),
            jwt: acct.jwt,
            scrub: Scrubber::new([access_key.as_ref(), secret_key.as_ref()]),
            access_key,
            secret_key,
            callback_url: acct.callback_url.clone(),
            bills: Bills::default(),
        }
    }

    /// A fresh JWT as the bearer, or (relays, `jwt = false`) the access key itself.
    fn auth(&self) -> Result<Option<Auth>, ProviderError> {
        if !self.jwt {
            return http::auth_header("Bearer", self.access_key.as_ref());
        }
        let (Some(ak), Some(sk)) = (&self.access_key, &self.secret_key) else {
            return Err(ProviderError::new(
                FailureClass::Auth,
                "Kling JWT auth needs both the access key and the secret key",
            )
            .with_code("missing_credentials"));
        };
        let token = sign_jwt(ak.expose(), sk.expose(), now_s())?;
        Auth::bearer(&token).map(Some)
    }

    fn task_url(&self, action: Action, id: &str) -> String {
        http::join_url(
            &self.base_url,
            &format!("/v1/videos/{}/{}", action.as_str(), http::path_segment(id)),
        )
    }

    /// GET one task by Kling's id or our `external_task_id`.
    async fn get_task(&self, action: Action, id: &str) -> Result<Value, ProviderError> {
        let rb = http::with_auth(self.client.get(self.task_url(action, id)), self.auth()?);
        let a = http::exchange(rb, JSON_BODY_CAP).await?;
        open_envelope(a.status, &a.headers, &a.body, &self.scrub)
    }

    /// The create body. After [`video_args`] an image is in hand exactly when the action is
    /// [`Action::Image2video`].
    fn submit_body(&self, req: &SubmitRequest<'_>) -> Result<Value, ProviderError> {
        let v = video_args("kling", req.payload, req.first_frame.as_ref())?;
        let mut body = json!({
            "prompt": v.prompt,
            "duration": v.duration_s.to_string(),
            "external_task_id": external_id(req.task_id, req.attempt),
        });
        if !self.model.is_empty() {
            body["model_name"] = json!(self.model);
        }
        if let Some(url) = &self.callback_url {
            body["callback_url"] = json!(super::callback_for(url, req.task_id));
        }
        if let Some(neg) = v.negative_prompt {
            body["negative_prompt"] = json!(neg);
        }
        match v.image {
            // Kling rejects data URLs: raw base64 only.
            Some(img) => {
                body["image"] = json!(base64::engine::general_purpose::STANDARD.encode(&img.bytes))
            }
            None => body["aspect_ratio"] = json!(v.aspect_ratio),
        }
        Ok(body)
    }

    /// `external_task_id` must be unique per account, so a resubmit of a task Kling already has
    /// is refused. If that task is alive (or done), adopt it instead of failing.
    async fn adopt_existing(
        &self,
        action: Action,
        task_id: &str,
    ) -> Option<(String, Option<String>)> {
        let data = self.get_task(action, task_id).await.ok()?;
        let id = data.get("task_id").and_then(http::json_string)?;
        let status = data
            .get("task_status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        (status != "failed").then(|| (id, Some(Locator { action }.to_json())))
    }
}

/// The `external_task_id` of one attempt. Kling keeps it unique per account forever, so the first
/// attempt uses the task id as is (what reconciliation looks up) and later attempts add `-a<N>`.
pub fn external_id(task_id: &str, attempt: u32) -> String {
    if attempt <= 1 {
        task_id.to_string()
    } else {
        format!("{task_id}-a{attempt}")
    }
}

fn is_duplicate_external_id(err: &ProviderError) -> bool {
    let m = err.message.to_ascii_lowercase();
    err.class == FailureClass::InvalidRequest
        && (m.contains("external_task_id") || m.contains("external task id"))
        && (m.contains("exist")
            || m.contains("duplicate")
            || m.contains("unique")
            || m.contains("used"))
}

#[async_trait]
impl Provider for Kling {
    fn family(&self) -> Family {
        Family::Kling
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let action = if req.first_frame.is_some() {
            Action::Image2video
        } else {
            Action::for_payload(req.payload)
        };
        let body = self.submit_body(&req)?;
        let url = http::join_url(&self.base_url, &format!("/v1/videos/{}", action.as_str()));
        let rb = self
            .client
            .post(url)
            .header(IDEMPOTENCY_KEY, req.task_id)
            .json(&body);
        let a = http::exchange(http::with_auth(rb, self.auth()?), JSON_BODY_CAP).await?;
        let status = a.status;
        let data = match open_envelope(a.status, &a.headers, &a.body, &self.scrub) {
            Ok(d) => d,
            Err(e) if is_duplicate_external_id(&e) => {
                return match self
                    .adopt_existing(action, &external_id(req.task_id, req.attempt))
                    .await
                {
                    Some((provider_task_id, poll_locator)) => Ok(SubmitOutcome::Accepted {
                        provider_task_id: http::accept_task_id(provider_task_id)?,
                        poll_locator,
                        poll_after: None,
                    }),
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let failed_at_once = data
            .get("task_status")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("failed"));
        if failed_at_once {
            if let PollOutcome::Failed(e) = poll_outcome(&data, &self.scrub) {
                return Err(e);
            }
        }
        let Some(id) = data.get("task_id").and_then(http::json_string) else {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                "Kling accepted the task without a task_id",
            )
            .with_code("malformed_response")
            .with_status(status));
        };
        Ok(SubmitOutcome::Accepted {
            provider_task_id: http::accept_task_id(id)?,
            poll_locator: Some(Locator { action }.to_json()),
            poll_after: None,
        })
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        let loc = Locator::parse(poll_locator)?;
        match self.get_task(loc.action, provider_task_id).await {
            Ok(data) => {
                let outcome = poll_outcome(&data, &self.scrub);
                if let (PollOutcome::Succeeded(_), Some(s)) = (&outcome, billed_seconds(&data)) {
                    self.bills.note(provider_task_id, Bill::Seconds(s));
                }
                Ok(outcome)
            }
            Err(mut e) if is_task_not_found(&e) => {
                // The worker's grace window decides when "not found" is final.
                e.class = FailureClass::ProviderError;
                e.code = Some("not_found".into());
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch(&self, result: &ResultRef) -> Result<super::Download, ProviderError> {
        let auth = || self.auth();
        http::fetch_result(&self.client, result, &self.base_url, auth, &self.scrub).await
    }

    fn reported_bill(&self, _task_id: &str, provider_task_id: Option<&str>) -> Option<Bill> {
        self.bills.take(provider_task_id?)
    }

    async fn reconcile(
        &self,
        task_id: &str,
        attempt: u32,
        payload: &TaskPayload,
    ) -> Result<Option<(String, Option<String>)>, ProviderError> {
        let action = Action::for_payload(payload);
        let task_id = &external_id(task_id, attempt);
        match self.get_task(action, task_id).await {
            Ok(data) => {
                // Guard against a relay that ignores external ids and answers with another task.
                let external = data
                    .pointer("/task_info/external_task_id")
                    .and_then(Value::as_str);
                if external.is_some_and(|e| e != task_id) {
                    return Ok(None);
                }
                data.get("task_id")
                    .and_then(http::json_string)
                    .map(|id| {
                        http::accept_task_id(id).map(|id| (id, Some(Locator { action }.to_json())))
                    })
                    .transpose()
            }
            Err(e) if is_task_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::testing::{self, account, json, reply};
    use crate::providers::InputImage;
    use bytes::Bytes;
    use reqwest::header::HeaderValue;

    #[test]
    fn jwt_claims_and_header() {
        let now = 1_722_769_557;
        let token = sign_jwt("ak-123", "sk-secret", now).expect("signed");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        // The fixed clock in this test is in the past: check the numbers, not expiry.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "exp", "nbf"]);
        validation.set_issuer(&["ak-123"]);
        let data = jsonwebtoken::decode::<Claims>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"sk-secret"),
            &validation,
        )
        .expect("valid signature");
        assert_eq!(data.claims.iss, "ak-123");
        assert_eq!(data.claims.exp, now + 1800);
        assert_eq!(data.claims.nbf, now - 5);
        // A fresh token passes full validation (exp and nbf against the real clock).
        let fresh = sign_jwt("ak-123", "sk-secret", now_s()).expect("signed");
        let mut strict = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        strict.validate_nbf = true;
        strict.leeway = 0;
        assert!(jsonwebtoken::decode::<Claims>(
            &fresh,
            &jsonwebtoken::DecodingKey::from_secret(b"sk-secret"),
            &strict
        )
        .is_ok());
        assert!(jsonwebtoken::decode::<Claims>(
            &fresh,
            &jsonwebtoken::DecodingKey::from_secret(b"wrong"),
            &strict
        )
        .is_err());
    }

    #[test]
    fn envelope_code_table() {
        let table: &[(u16, i64, &str, FailureClass)] = &[
            (401, 1000, "Authentication failed", FailureClass::Auth),
            (401, 1004, "token expired", FailureClass::Auth),
            (
                429,
                1100,
                "account exception",
                FailureClass::InsufficientCredits,
            ),
            (
                429,
                1101,
                "account in arrears",
                FailureClass::InsufficientCredits,
            ),
            (
                429,
                1102,
                "resource pack exhausted",
                FailureClass::InsufficientCredits,
            ),
            (403, 1103, "no permission", FailureClass::Auth),
            (400, 1200, "invalid params", FailureClass::InvalidRequest),
            (400, 1201, "invalid params", FailureClass::InvalidRequest),
            (404, 1202, "invalid method", FailureClass::InvalidRequest),
            (
                404,
                1203,
                "resource not exist",
                FailureClass::InvalidRequest,
            ),
            (
                404,
                1203,
                "model kling-v1-5 not found",
                FailureClass::ModelRetired,
            ),
            (400, 1300, "platform policy", FailureClass::ContentPolicy),
            (400, 1301, "content security", FailureClass::ContentPolicy),
            (429, 1302, "too fast", FailureClass::RateLimited),
            (
                429,
                1303,
                "parallel task over resource pack limit",
                FailureClass::ConcurrencyLimited,
            ),
            (429, 1304, "ip whitelist", FailureClass::Auth),
            (500, 5000, "internal", FailureClass::ProviderError),
            (503, 5001, "maintenance", FailureClass::ProviderError),
            (504, 5002, "backlog timeout", FailureClass::ProviderError),
            // Errors inside HTTP 200.
            (200, 1301, "content security", FailureClass::ContentPolicy),
            (
                200,
                1102,
                "resource pack exhausted",
                FailureClass::InsufficientCredits,
            ),
            (200, 9999, "something new", FailureClass::ProviderError),
        ];
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        for (status, code, msg, want) in table {
            let body = json!({"code": code, "message": msg, "request_id": "r1"}).to_string();
            let err = open_envelope(*status, &h, body.as_bytes(), &Scrubber::default())
                .expect_err("error envelope");
            assert_eq!(err.class, *want, "HTTP {status} code {code}");
            assert_eq!(err.code, Some(code.to_string()));
            // Only retryable classes carry the hint; 1102-as-429 must not look like a rate limit.
            let hinted = matches!(
                want,
                FailureClass::RateLimited
                    | FailureClass::ConcurrencyLimited
                    | FailureClass::ProviderError
            );
            assert_eq!(err.retry_after.is_some(), hinted, "code {code}");
        }
    }

    #[test]
    fn envelope_without_code() {
        let s = Scrubber::default();
        let h = HeaderMap::new();
        let err = open_envelope(502, &h, b"<html>bad gateway</html>", &s).expect_err("502");
        assert_eq!(err.class, FailureClass::ProviderError);
        let err = open_envelope(200, &h, b"{not json", &s).expect_err("bad json");
        assert_eq!(err.class, FailureClass::ProviderError);
        let err = open_envelope(200, &h, br#"{"code":0,"message":"ok"}"#, &s).expect_err("no data");
        assert_eq!(err.class, FailureClass::ProviderError);
        let ok = open_envelope(200, &h, br#"{"code":0,"data":{"task_id":"1"}}"#, &s).expect("ok");
        assert_eq!(ok["task_id"], "1");
        let ok = open_envelope(
            200,
            &h,
            br#"{"code":"0","message":"SUCCEED","data":{"task_id":"2"}}"#,
            &s,
        )
        .expect("string code");
        assert_eq!(ok["task_id"], "2");
    }

    #[test]
    fn render_phases() {
        let table = [
            ("submitted", RenderPhase::Queued),
            ("processing", RenderPhase::Running),
            ("warming", RenderPhase::Running),
        ];
        for (word, want) in table {
            match poll_outcome(&json!({"task_status": word}), &Scrubber::default()) {
                PollOutcome::Pending { phase, .. } => assert_eq!(phase, want, "{word}"),
                other => panic!("{word}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_table() {
        enum Want {
            Pending(&'static str),
            Url(&'static str),
            Failed(FailureClass),
        }
        let table = vec![
            (
                json!({"task_id":"1","task_status":"submitted"}),
                Want::Pending("submitted"),
            ),
            (
                json!({"task_id":"1","task_status":"processing"}),
                Want::Pending("processing"),
            ),
            (
                json!({"task_id":"1","task_status":"warming"}),
                Want::Pending("warming"),
            ),
            (
                json!({"task_status":"succeed","task_result":{"videos":[{"id":"v","url":"https://cdn/k.mp4","duration":"5"}]}}),
                Want::Url("https://cdn/k.mp4"),
            ),
            (
                json!({"task_status":"succeed","task_result":{"videos":[]}}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"task_status":"succeed"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"task_status":"failed","task_status_msg":"Failure to pass the risk control system"}),
                Want::Failed(FailureClass::ContentPolicy),
            ),
            (
                json!({"task_status":"failed","task_status_msg":"internal render error"}),
                Want::Failed(FailureClass::ProviderError),
            ),
            (
                json!({"task_status":"failed"}),
                Want::Failed(FailureClass::ProviderError),
            ),
        ];
        for (data, want) in table {
            match (poll_outcome(&data, &Scrubber::default()), want) {
                (PollOutcome::Pending { sub_status, .. }, Want::Pending(w)) => {
                    assert_eq!(sub_status, w)
                }
                (PollOutcome::Succeeded(ResultRef::Url { url }), Want::Url(w)) => {
                    assert_eq!(url, w)
                }
                (PollOutcome::Failed(e), Want::Failed(c)) => assert_eq!(e.class, c, "{data}"),
                (got, _) => panic!("{data} gave {got:?}"),
            }
        }
        match poll_outcome(&json!({"task_status":"succeed"}), &Scrubber::default()) {
            PollOutcome::Failed(e) => assert_eq!(e.message, "success without output"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn locator_round_trip() {
        for action in [Action::Text2video, Action::Image2video] {
            let text = Locator { action }.to_json();
            assert_eq!(Locator::parse(Some(&text)).expect("parse").action, action);
        }
        assert_eq!(
            Locator {
                action: Action::Image2video
            }
            .to_json(),
            r#"{"action":"image2video"}"#
        );
        assert_eq!(
            Locator::parse(None).expect("default").action,
            Action::Text2video
        );
        assert!(Locator::parse(Some(r#"{"action":"../../admin"}"#)).is_err());
    }

    fn payload(first_frame: bool) -> TaskPayload {
        TaskPayload::Video {
            prompt: "rain on neon".into(),
            negative_prompt: Some("blur".into()),
            duration_s: 5,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: first_frame.then(|| "img-9".to_string()),
            seed: Some(7),
        }
    }

    fn adapter(base: &str, jwt: bool) -> Kling {
        let acct = account(
            "kling",
            base,
            &format!("model = \"kling-v2-1\"\njwt = {jwt}\nsecret_key_env = \"UNUSED\""),
        );
        Kling::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("AKtest0123")),
            Some(Secret::new("SKtest4567")),
        )
    }

    fn accepted(id: &str) -> axum::response::Response {
        json(
            200,
            json!({"code":0,"message":"SUCCEED","request_id":"r","data":{"task_id":id,"task_status":"submitted","created_at":1722769557708u64}}),
        )
    }

    #[tokio::test]
    async fn text2video_submit_body_and_jwt() {
        let server = testing::serve(|_| accepted("k-1")).await;
        let k = adapter(&server.base, true);
        let p = payload(false);
        let out = k
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-7",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect("accepted");
        match out {
            SubmitOutcome::Accepted {
                provider_task_id,
                poll_locator,
                ..
            } => {
                assert_eq!(provider_task_id, "k-1");
                assert_eq!(poll_locator.as_deref(), Some(r#"{"action":"text2video"}"#));
            }
            other => panic!("{other:?}"),
        }
        let r = &server.requests()[0];
        assert_eq!(
            (r.method.as_str(), r.uri.as_str()),
            ("POST", "/v1/videos/text2video")
        );
        assert_eq!(r.header("idempotency-key").as_deref(), Some("vid-7"));
        let v = r.json();
        assert_eq!(v["model_name"], "kling-v2-1");
        assert_eq!(v["prompt"], "rain on neon");
        assert_eq!(v["negative_prompt"], "blur");
        assert_eq!(v["duration"], "5");
        assert_eq!(v["aspect_ratio"], "9:16");
        assert_eq!(v["external_task_id"], "vid-7");
        assert!(v.get("image").is_none());
        let auth = r.header("authorization").expect("auth");
        let token = auth.strip_prefix("Bearer ").expect("bearer");
        let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        val.set_issuer(&["AKtest0123"]);
        jsonwebtoken::decode::<Claims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"SKtest4567"),
            &val,
        )
        .expect("JWT signed with the secret key");
    }

    #[tokio::test]
    async fn image2video_submit_uses_raw_base64_and_relay_bearer() {
        let server = testing::serve(|_| accepted("k-2")).await;
        let k = adapter(&server.base, false);
        let p = payload(true);
        let img = InputImage {
            bytes: Bytes::from_static(b"PNGDATA"),
            mime: "image/png".into(),
        };
        let out = k
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-8",
                payload: &p,
                first_frame: Some(img),
            })
            .await
            .expect("accepted");
        assert!(
            matches!(out, SubmitOutcome::Accepted { ref poll_locator, .. }
            if poll_locator.as_deref() == Some(r#"{"action":"image2video"}"#))
        );
        let r = &server.requests()[0];
        assert_eq!(r.uri, "/v1/videos/image2video");
        assert_eq!(
            r.header("authorization").as_deref(),
            Some("Bearer AKtest0123")
        );
        let v = r.json();
        assert_eq!(
            v["image"],
            base64::engine::general_purpose::STANDARD.encode(b"PNGDATA")
        );
        assert!(v.get("aspect_ratio").is_none());
        // Without the image an image-to-video task is refused, not sent as text-to-video.
        let err = k
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-8",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect_err("missing image");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn out_of_credits_429_is_not_a_rate_limit() {
        let server = testing::serve(|_| {
            reply(
                429,
                &[("content-type", "application/json"), ("retry-after", "10")],
                json!({"code":1102,"message":"resource pack exhausted","request_id":"r"})
                    .to_string(),
            )
        })
        .await;
        let k = adapter(&server.base, true);
        let p = payload(false);
        let err = k
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-9",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect_err("1102");
        assert_eq!(err.class, FailureClass::InsufficientCredits);
        assert_eq!(err.code.as_deref(), Some("1102"));
        assert_eq!(err.http_status, Some(429));
        assert_eq!(err.retry_after, None);
    }

    #[tokio::test]
    async fn poll_follows_locator_and_reconcile_finds_by_external_id() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/v1/videos/image2video/k-5" => json(200, json!({"code":0,"message":"SUCCEED","data":{
                "task_id":"k-5","task_status":"succeed",
                "task_result":{"videos":[{"id":"v","url":"https://cdn/k5.mp4","duration":"5"}]}}})),
            "/v1/videos/text2video/vid-known" => json(200, json!({"code":0,"data":{
                "task_id":"k-6","task_status":"processing","task_info":{"external_task_id":"vid-known"}}})),
            "/v1/videos/text2video/k-ok" => json(200, json!({"code":0,"data":{"task_id":"k-ok","task_status":"processing"}})),
            _ => json(404, json!({"code":1203,"message":"task not found","request_id":"r"})),
        })
        .await;
        let k = adapter(&server.base, true);
        match k
            .poll("k-5", Some(r#"{"action":"image2video"}"#))
            .await
            .expect("poll")
        {
            PollOutcome::Succeeded(ResultRef::Url { url }) => assert_eq!(url, "https://cdn/k5.mp4"),
            other => panic!("{other:?}"),
        }
        // Kling bills per second of output: the finished task's duration is noted, taken once.
        assert_eq!(
            k.reported_bill("task", Some("k-5")),
            Some(Bill::Seconds(5.0))
        );
        assert_eq!(k.reported_bill("task", Some("k-5")), None);
        match k.poll("k-ok", None).await.expect("poll") {
            PollOutcome::Pending { sub_status, .. } => assert_eq!(sub_status, "processing"),
            other => panic!("{other:?}"),
        }
        let err = k
            .poll("k-5", Some(r#"{"action":"text2video"}"#))
            .await
            .expect_err("wrong path");
        assert_eq!(err.class, FailureClass::ProviderError);
        assert_eq!(err.code.as_deref(), Some("not_found"));

        let found = k
            .reconcile("vid-known", 1, &payload(false))
            .await
            .expect("reconcile");
        assert_eq!(
            found,
            Some((
                "k-6".to_string(),
                Some(r#"{"action":"text2video"}"#.to_string())
            ))
        );
        let none = k
            .reconcile("vid-unknown", 1, &payload(false))
            .await
            .expect("reconcile");
        assert_eq!(none, None);
        let uris: Vec<String> = server.requests().into_iter().map(|r| r.uri).collect();
        assert!(uris.contains(&"/v1/videos/text2video/vid-unknown".to_string()));
        assert!(server
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_some()));
    }

    #[tokio::test]
    async fn duplicate_external_id_adopts_the_live_task() {
        let server = testing::serve(|r| match (r.method.as_str(), r.uri.as_str()) {
            ("POST", _) => json(400, json!({"code":1201,"message":"external_task_id already exists"})),
            ("GET", "/v1/videos/text2video/vid-dup") => json(200, json!({"code":0,"data":{
                "task_id":"k-dup","task_status":"processing","task_info":{"external_task_id":"vid-dup"}}})),
            _ => json(404, json!({"code":1203,"message":"task not found"})),
        })
        .await;
        let k = adapter(&server.base, true);
        let p = payload(false);
        let out = k
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "vid-dup",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect("adopted");
        assert!(
            matches!(out, SubmitOutcome::Accepted { ref provider_task_id, .. } if provider_task_id == "k-dup")
        );
    }

    #[tokio::test]
    async fn fetch_expired_result() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/ok.mp4" => reply(200, &[("content-type", "video/mp4")], "KLING"),
            _ => reply(404, &[], ""),
        })
        .await;
        let k = adapter(&server.base, true);
        let dl = k
            .fetch(&ResultRef::Url {
                url: format!("{}/ok.mp4", server.base),
            })
            .await
            .expect("fetch");
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"KLING");
        assert!(server.requests()[0].header("authorization").is_none());
        let err = k
            .fetch(&ResultRef::Url {
                url: format!("{}/old.mp4", server.base),
            })
            .await
            .err()
            .expect("expired");
        assert_eq!(err.class, FailureClass::ResultExpired);
    }
}
