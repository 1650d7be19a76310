//! The OpenAI error envelope, shared by the `openai-videos`, `openai-images` and `openai-speech`
//! families and the relays that copy them.
//!
//! OpenAI answers `{"error":{"message","type","param","code"}}`; relays also send
//! `{"error":"text"}`, `{"message","code"}`, `{"detail": …}` or an HTML page. The class comes from
//! the code and words first (moderation → `content_policy`, a gone model → `model_retired`,
//! `insufficient_quota` → `insufficient_credits`) and from the HTTP status otherwise. CometAPI's
//! `500` with `code: "invalid_request"` is not retryable, whatever the status says.

use super::{class_for_status, json_string, retry_after, Scrubber};
use crate::providers::ProviderError;
use dramaq_common::FailureClass;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// What an error body said, in whichever shape it came.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ApiError {
    pub message: Option<String>,
    pub code: Option<String>,
    /// OpenAI's `type` (`invalid_request_error`, `image_generation_user_error`, …).
    pub kind: Option<String>,
}

pub fn parse_error_body(body: &[u8]) -> ApiError {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return ApiError {
            message: (!text.is_empty()).then(|| {
                if text.starts_with('<') {
                    // An HTML error page (proxy, wrong path): its markup says nothing useful.
                    "non-JSON (HTML) error body".to_string()
                } else {
                    text.to_string()
                }
            }),
            ..ApiError::default()
        };
    };
    error_object(&v)
}

/// The error inside a parsed body (also used for the `error` field of a failed video).
pub fn error_object(v: &Value) -> ApiError {
    let e = match v.get("error") {
        Some(e @ Value::Object(_)) => e,
        Some(Value::String(s)) => {
            return ApiError {
                message: Some(s.clone()),
                code: v.get("code").and_then(json_string),
                kind: None,
            }
        }
        _ => v,
    };
    let message = e
        .get("message")
        .and_then(json_string)
        .or_else(|| e.get("detail").and_then(detail_text))
        .or_else(|| e.get("fail_reason").and_then(json_string));
    ApiError {
        message,
        code: e.get("code").and_then(json_string),
        kind: e.get("type").and_then(json_string),
    }
}

fn detail_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Words providers use when moderation stopped a request or a render.
pub fn mentions_content_policy(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "moderation",
        "content_policy",
        "content policy",
        "content_filter",
        "safety system",
        "safety",
        "policy violation",
        "sensitive",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Words relays and OpenAI use when the model itself is gone.
pub fn mentions_model_retired(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    if t.contains("model_not_found") || t.contains("is no longer available") {
        return true;
    }
    t.contains("model")
        && [
            "does not exist",
            "not found",
            "deprecated",
            "retired",
            "shut down",
            "no longer",
        ]
        .iter()
        .any(|w| t.contains(w))
}

/// Class of an OpenAI-style error.
pub fn classify(status: u16, err: &ApiError) -> FailureClass {
    let code = err.code.as_deref().unwrap_or("").to_ascii_lowercase();
    let kind = err.kind.as_deref().unwrap_or("").to_ascii_lowercase();
    let msg = err.message.as_deref().unwrap_or("");
    if mentions_content_policy(&code) || mentions_content_policy(&kind) {
        return FailureClass::ContentPolicy;
    }
    match code.as_str() {
        "insufficient_quota" => return FailureClass::InsufficientCredits,
        "billing_hard_limit_reached" => return FailureClass::QuotaExceeded,
        "invalid_api_key" => return FailureClass::Auth,
        "model_not_found" => return FailureClass::ModelRetired,
        // CometAPI: a 500 carrying this code is a bad request, not a server fault.
        "invalid_request" if status >= 500 => return FailureClass::InvalidRequest,
        _ => {}
    }
    if status == 400 && mentions_content_policy(msg) {
        return FailureClass::ContentPolicy;
    }
    if matches!(status, 400 | 404 | 410) && mentions_model_retired(msg) {
        return FailureClass::ModelRetired;
    }
    class_for_status(status)
}

/// A non-2xx response as a classified, scrubbed [`ProviderError`].
pub fn error_from_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    scrub: &Scrubber,
) -> ProviderError {
    let err = parse_error_body(body);
    let class = classify(status, &err);
    let message = match &err.message {
        Some(m) => scrub.clean(m),
        None => format!("HTTP {status}"),
    };
    let hint = match class {
        FailureClass::RateLimited
        | FailureClass::ConcurrencyLimited
        | FailureClass::ProviderError => retry_after(headers),
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::Duration;

    #[test]
    fn envelope_classes() {
        let table: &[(u16, &str, FailureClass)] = &[
            (
                400,
                r#"{"error":{"type":"image_generation_user_error","code":"moderation_blocked","message":"Your request was rejected by the safety system."}}"#,
                FailureClass::ContentPolicy,
            ),
            (
                400,
                r#"{"error":{"type":"invalid_request_error","code":null,"message":"Invalid size '1:1'"}}"#,
                FailureClass::InvalidRequest,
            ),
            (
                404,
                r#"{"error":{"message":"The model `sora-2` does not exist or you do not have access to it.","code":"model_not_found"}}"#,
                FailureClass::ModelRetired,
            ),
            (
                404,
                r#"{"error":{"message":"upstream model veo-3.1-generate-preview is no longer available"}}"#,
                FailureClass::ModelRetired,
            ),
            (
                401,
                r#"{"error":{"code":"invalid_api_key","message":"Incorrect API key"}}"#,
                FailureClass::Auth,
            ),
            (
                429,
                r#"{"error":{"code":"insufficient_quota","message":"You exceeded your current quota"}}"#,
                FailureClass::InsufficientCredits,
            ),
            (
                429,
                r#"{"error":{"code":"rate_limit_exceeded","message":"slow down"}}"#,
                FailureClass::RateLimited,
            ),
            (
                500,
                r#"{"error":{"code":"invalid_request","message":"bad seconds"}}"#,
                FailureClass::InvalidRequest,
            ),
            (
                503,
                r#"{"error":{"message":"overloaded"}}"#,
                FailureClass::ProviderError,
            ),
            (
                502,
                "<html><body>Bad gateway</body></html>",
                FailureClass::ProviderError,
            ),
            (
                400,
                r#"{"error":"model is required"}"#,
                FailureClass::InvalidRequest,
            ),
            (
                422,
                r#"{"detail":[{"msg":"field required"}]}"#,
                FailureClass::InvalidRequest,
            ),
        ];
        for (status, body, want) in table {
            let err = error_from_response(
                *status,
                &HeaderMap::new(),
                body.as_bytes(),
                &Scrubber::default(),
            );
            assert_eq!(err.class, *want, "{status} {body}");
            assert_eq!(err.http_status, Some(*status));
        }
    }

    #[test]
    fn rate_limit_prefers_retry_after_ms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        let body = br#"{"error":{"code":"rate_limit_exceeded","message":"Rate limit reached"}}"#;
        let err = error_from_response(429, &h, body, &Scrubber::default());
        assert_eq!(err.class, FailureClass::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_millis(250)));
        assert_eq!(err.code.as_deref(), Some("rate_limit_exceeded"));
        h.remove("retry-after-ms");
        let err = error_from_response(429, &h, body, &Scrubber::default());
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn messages_are_scrubbed() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-abcdefghijklmnopqrstuvwxyz0123. Authorization: Bearer sk-abcdefghijklmnopqrstuvwxyz0123","code":"invalid_api_key"}}"#;
        let err = error_from_response(401, &HeaderMap::new(), body, &Scrubber::default());
        assert!(!err.message.contains("sk-abc"), "{}", err.message);
        let html = b"<html>".repeat(10_000);
        let err = error_from_response(502, &HeaderMap::new(), &html, &Scrubber::default());
        assert_eq!(err.message, "non-JSON (HTML) error body");
    }
}
