//! Family `openai-images`: `POST /v1/images/generations`, synchronous (docs/providers.md, "openai-images").
//!
//! Quirks handled here:
//! - The answer is the result itself: GPT-image models return `b64_json`, dall-e models (asked
//!   with `response_format: "url"`) and many relays return a `url`, valid for about an hour.
//!   Both are accepted; an answer with neither is a failure, never a success.
//! - Sizes are fixed shapes: square 1024x1024, landscape 1536x1024, portrait 1024x1536
//!   (dall-e-3: 1792x1024 / 1024x1792); other aspect ratios get the nearest shape.
//! - Moderation is a synchronous HTTP 400 `moderation_blocked` → `content_policy`.
//! - There is nothing to poll.

use super::http::{self, openai, Scrubber, IDEMPOTENCY_KEY};
use super::{
    nothing_to_poll, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome, SubmitRequest,
    SyncResult,
};
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use dramaq_common::config::{AccountConfig, Family, Secret};
use dramaq_common::{FailureClass, TaskPayload};
use serde_json::{json, Value};

/// Base64 of a 4K PNG is tens of megabytes; leave room.
const IMAGE_BODY_CAP: usize = 128 * 1024 * 1024;

pub struct OpenaiImages {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    scrub: Scrubber,
}

/// `WxH` for an aspect ratio `W:H`.
pub fn image_size(model: &str, aspect_ratio: &str) -> Result<&'static str, ProviderError> {
    let bad = || {
        ProviderError::new(
            FailureClass::InvalidRequest,
            format!("aspect ratio {aspect_ratio:?} is not of the form W:H"),
        )
        .with_code("unsupported_aspect_ratio")
    };
    let (w, h) = aspect_ratio.trim().split_once(':').ok_or_else(bad)?;
    let w: f64 = w.trim().parse().map_err(|_| bad())?;
    let h: f64 = h.trim().parse().map_err(|_| bad())?;
    if !(w > 0.0 && h > 0.0 && w.is_finite() && h.is_finite()) {
        return Err(bad());
    }
    let dalle3 = model.trim().eq_ignore_ascii_case("dall-e-3");
    Ok(if w == h {
        "1024x1024"
    } else if w > h {
        if dalle3 {
            "1792x1024"
        } else {
            "1536x1024"
        }
    } else if dalle3 {
        "1024x1792"
    } else {
        "1024x1536"
    })
}

fn is_dalle(model: &str) -> bool {
    model.trim().to_ascii_lowercase().starts_with("dall-e")
}

fn ext_for_format(format: Option<&str>) -> &'static str {
    match format.map(|f| f.trim().to_ascii_lowercase()).as_deref() {
        Some("jpeg") | Some("jpg") => "jpg",
        Some("webp") => "webp",
        _ => "png",
    }
}

/// The generation answer → the result, or why there is none.
pub fn parse_answer(v: &Value, scrub: &Scrubber) -> Result<SyncResult, ProviderError> {
    let item = v.pointer("/data/0");
    if let Some(b64) = item
        .and_then(|i| i.get("b64_json"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| {
                ProviderError::new(FailureClass::ProviderError, "b64_json is not valid base64")
                    .with_code("malformed_response")
            })?;
        let ext = ext_for_format(v.get("output_format").and_then(Value::as_str));
        return Ok(SyncResult::Bytes {
            bytes: Bytes::from(bytes),
            ext: ext.to_string(),
        });
    }
    if let Some(url) = item
        .and_then(|i| i.get("url"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        return Ok(SyncResult::Ref(ResultRef::Url {
            url: url.to_string(),
        }));
    }
    // Some relays answer 200 with an error object; read it as a server-side failure unless its
    // code says otherwise (moderation, bad request).
    if v.get("error").is_some_and(|e| !e.is_null()) {
        let err = openai::error_object(v);
        let class = openai::classify(500, &err);
        let message = err
            .message
            .as_deref()
            .map(|m| scrub.clean(m))
            .unwrap_or_else(|| "error object in a successful response".into());
        let mut e = ProviderError::new(class, message);
        e.code = err.code.map(|c| scrub.clean(&c));
        return Err(e);
    }
    Err(
        ProviderError::new(FailureClass::ProviderError, "success without output")
            .with_code("no_image_data"),
    )
}

impl OpenaiImages {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        OpenaiImages {
            client,
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: acct.model.clone(),
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
        }
    }

    fn auth(&self) -> Result<Option<http::Auth>, ProviderError> {
        http::auth_header("Bearer", self.api_key.as_ref())
    }
}

#[async_trait]
impl Provider for OpenaiImages {
    fn family(&self) -> Family {
        Family::OpenaiImages
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let TaskPayload::Image {
            prompt,
            aspect_ratio,
            ..
        } = req.payload
        else {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "openai-images renders image tasks only",
            ));
        };
        let size = image_size(&self.model, aspect_ratio)?;
        let mut body = json!({ "prompt": prompt, "n": 1, "size": size });
        if !self.model.is_empty() {
            body["model"] = json!(self.model);
        }
        if is_dalle(&self.model) {
            // GPT-image models reject this field; dall-e defaults to it anyway, but say so.
            body["response_format"] = json!("url");
        }
        let rb = self
            .client
            .post(http::join_url(&self.base_url, "/v1/images/generations"))
            .header(IDEMPOTENCY_KEY, req.task_id)
            .json(&body);
        let rb = http::with_auth(rb, self.auth()?);
        let scrub = &self.scrub;
        let (_, v) = http::call_json_capped(rb, IMAGE_BODY_CAP, "image response", scrub, |a| {
            openai::error_from_response(a.status, &a.headers, &a.body, scrub)
        })
        .await?;
        parse_answer(&v, &self.scrub).map(SubmitOutcome::Finished)
    }

    async fn poll(
        &self,
        _provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        Err(nothing_to_poll())
    }

    async fn fetch(&self, result: &ResultRef) -> Result<super::Download, ProviderError> {
        let auth = || self.auth();
        http::fetch_result(&self.client, result, &self.base_url, auth, &self.scrub).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::testing::{self, account, json, reply};

    #[test]
    fn size_table() {
        let table = [
            ("gpt-image-1", "1:1", "1024x1024"),
            ("gpt-image-1", "16:9", "1536x1024"),
            ("gpt-image-1", "9:16", "1024x1536"),
            ("gpt-image-1", "4:3", "1536x1024"),
            ("gpt-image-1", "2:3", "1024x1536"),
            ("dall-e-3", "16:9", "1792x1024"),
            ("dall-e-3", "9:16", "1024x1792"),
            ("dall-e-3", "1:1", "1024x1024"),
        ];
        for (model, aspect, want) in table {
            assert_eq!(
                image_size(model, aspect).expect("size"),
                want,
                "{model} {aspect}"
            );
        }
        for bad in ["square", "0:1", "16:", ""] {
            assert_eq!(
                image_size("gpt-image-1", bad).expect_err(bad).class,
                FailureClass::InvalidRequest
            );
        }
    }

    #[test]
    fn answer_table() {
        let s = Scrubber::default();
        let png = base64::engine::general_purpose::STANDARD.encode(b"PNGBYTES");
        match parse_answer(&json!({"data":[{"b64_json": png}]}), &s).expect("bytes") {
            SyncResult::Bytes { bytes, ext } => {
                assert_eq!(&bytes[..], b"PNGBYTES");
                assert_eq!(ext, "png");
            }
            other => panic!("{other:?}"),
        }
        match parse_answer(
            &json!({"data":[{"b64_json": png}],"output_format":"jpeg"}),
            &s,
        )
        .expect("bytes")
        {
            SyncResult::Bytes { ext, .. } => assert_eq!(ext, "jpg"),
            other => panic!("{other:?}"),
        }
        match parse_answer(
            &json!({"data":[{"b64_json": png}],"output_format":"webp"}),
            &s,
        )
        .expect("bytes")
        {
            SyncResult::Bytes { ext, .. } => assert_eq!(ext, "webp"),
            other => panic!("{other:?}"),
        }
        match parse_answer(&json!({"data":[{"url":"https://cdn/i.png"}]}), &s).expect("url") {
            SyncResult::Ref(ResultRef::Url { url }) => assert_eq!(url, "https://cdn/i.png"),
            other => panic!("{other:?}"),
        }
        for empty in [
            json!({"data":[]}),
            json!({}),
            json!({"data":[{"revised_prompt":"x"}]}),
        ] {
            let err = parse_answer(&empty, &s).expect_err("no output");
            assert_eq!(err.class, FailureClass::ProviderError);
            assert_eq!(err.message, "success without output");
        }
        let err = parse_answer(&json!({"data":[{"b64_json":"%%%"}]}), &s).expect_err("bad b64");
        assert_eq!(err.class, FailureClass::ProviderError);
        let err = parse_answer(
            &json!({"error":{"code":"moderation_blocked","message":"rejected by the safety system"}}),
            &s,
        )
        .expect_err("error in 200");
        assert_eq!(err.class, FailureClass::ContentPolicy);
    }

    fn adapter(base: &str, model: &str) -> OpenaiImages {
        let acct = account("openai-images", base, &format!("model = \"{model}\""));
        OpenaiImages::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("sk-img-0123456789abcdef")),
        )
    }

    fn payload(prompt: &str) -> TaskPayload {
        TaskPayload::Image {
            prompt: prompt.into(),
            seed: 42,
            aspect_ratio: "9:16".into(),
            reference_image: None,
        }
    }

    #[tokio::test]
    async fn submit_sends_generation_request() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"IMG");
        let server = testing::serve(move |r| {
            if String::from_utf8_lossy(&r.body).contains("forbidden") {
                json(400, json!({"error":{"type":"image_generation_user_error","code":"moderation_blocked",
                    "message":"Your request was rejected by the safety system."}}))
            } else {
                json(200, json!({"created":1,"data":[{"b64_json": png}],"output_format":"png"}))
            }
        })
        .await;
        let a = adapter(&server.base, "gpt-image-1");
        let p = payload("Mira, red coat");
        let out = a
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "img-1",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect("finished");
        match out {
            SubmitOutcome::Finished(SyncResult::Bytes { bytes, ext }) => {
                assert_eq!(&bytes[..], b"IMG");
                assert_eq!(ext, "png");
            }
            other => panic!("{other:?}"),
        }
        let r = &server.requests()[0];
        assert_eq!(r.uri, "/v1/images/generations");
        assert_eq!(r.header("idempotency-key").as_deref(), Some("img-1"));
        assert_eq!(
            r.header("authorization").as_deref(),
            Some("Bearer sk-img-0123456789abcdef")
        );
        let v = r.json();
        assert_eq!(v["model"], "gpt-image-1");
        assert_eq!(v["n"], 1);
        assert_eq!(v["size"], "1024x1536");
        assert!(v.get("response_format").is_none());

        let p = payload("forbidden thing");
        let err = a
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "img-2",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect_err("moderation");
        assert_eq!(err.class, FailureClass::ContentPolicy);
        assert_eq!(err.code.as_deref(), Some("moderation_blocked"));
        assert!(a.poll("x", None).await.is_err());
    }

    #[tokio::test]
    async fn dalle_asks_for_urls_and_fetches_them() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/v1/images/generations" => {
                json(200, json!({"data":[{"url": "https://cdn.example/i.png"}]}))
            }
            "/files/i.png" => reply(200, &[("content-type", "image/png")], "PNG"),
            _ => reply(404, &[], ""),
        })
        .await;
        let a = adapter(&server.base, "dall-e-3");
        let p = payload("a lighthouse");
        let out = a
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "img-3",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect("finished");
        assert!(
            matches!(out, SubmitOutcome::Finished(SyncResult::Ref(ResultRef::Url { ref url }))
            if url == "https://cdn.example/i.png")
        );
        let v = server.requests()[0].json();
        assert_eq!(v["response_format"], "url");
        assert_eq!(v["size"], "1024x1792");
        let dl = a
            .fetch(&ResultRef::Url {
                url: format!("{}/files/i.png", server.base),
            })
            .await
            .expect("fetch");
        assert_eq!(dl.ext.as_deref(), Some("png"));
        assert_eq!(testing::collect(dl).await.expect("bytes"), b"PNG");
    }
}
