//! The chat completion shapes the sandbox serves, as an OpenAI-compatible client sees them:
//! DeepSeek refuses structured outputs and JSON mode without the word "json", reports cache hits
//! its own way, and the quirk scenarios arrive in each shape.

use dramaq_sandbox::{Sandbox, SandboxOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn body(premise: &str, format: &str) -> Value {
    let params = json!({"task": "episode", "premise": premise, "episode": 1, "scenes": 2,
                        "durations": [5, 10], "characters": ["Mai", "Tu"], "title": "One"});
    json!({
        "model": "deepseek-chat",
        "messages": [
            {"role": "system", "content": "Answer with one JSON object."},
            {"role": "user", "content": format!("Write it.\n\nParameters (JSON):\n{params}")}
        ],
        "response_format": {"type": format},
        "max_tokens": 100,
    })
}

async fn post(url: &str, body: &Value) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth("k")
        .json(body)
        .send()
        .await
        .expect("request");
    (resp.status(), resp.text().await.expect("body"))
}

#[tokio::test]
async fn chat_shapes_and_quirks() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default())
        .await
        .unwrap();
    let base = sb.base_url();
    let deepseek = format!("{base}/deepseek/chat/completions");
    let openai = format!("{base}/openai/v1/chat/completions");

    // DeepSeek: no json_schema; the same request in JSON mode is answered, deterministically.
    let (status, _) = post(&deepseek, &body("p", "json_schema")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, text) = post(&deepseek, &body("p", "json_object")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_cache_hit_tokens"].is_u64(), "{v}");
    let answer: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(answer["scenes"].as_array().unwrap().len(), 2);
    assert_eq!(answer["scenes"][0]["duration"], 10);
    let (_, again) = post(&deepseek, &body("p", "json_object")).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        again["choices"][0]["message"]["content"],
        v["choices"][0]["message"]["content"]
    );

    // JSON mode without the word "json" anywhere is refused.
    let mut no_word = body("p", "json_object");
    no_word["messages"][0]["content"] = json!("Answer.");
    no_word["messages"][1]["content"] = json!("Write it.");
    assert_eq!(post(&openai, &no_word).await.0, StatusCode::BAD_REQUEST);

    // OpenAI: structured outputs accepted, cache hits under prompt_tokens_details.
    let (status, text) = post(&openai, &body("p", "json_schema")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64(),
        "{v}"
    );

    // Quirks: keep-alive lines before the body, empty content once, truncation once, 429 with
    // Retry-After once, 402 always.
    let (_, text) = post(&deepseek, &body("[sandbox:chat_keepalive]", "json_object")).await;
    assert!(text.starts_with("\n\n"), "{text:?}");
    assert!(serde_json::from_str::<Value>(text.trim()).is_ok());
    let (_, text) = post(&deepseek, &body("[sandbox:chat_empty]", "json_object")).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "");
    let (_, text) = post(&deepseek, &body("[sandbox:chat_truncate]", "json_object")).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let resp = reqwest::Client::new()
        .post(&openai)
        .bearer_auth("k")
        .json(&body("[sandbox:chat_429]", "json_object"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        post(&openai, &body("[sandbox:chat_429]", "json_object"))
            .await
            .0,
        StatusCode::OK
    );
    for _ in 0..2 {
        assert_eq!(
            post(&deepseek, &body("[sandbox:chat_402]", "json_object"))
                .await
                .0,
            StatusCode::PAYMENT_REQUIRED
        );
    }
    // Every request was counted.
    let stats: Value = reqwest::get(format!("{base}/admin/chat"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["calls"], 12, "{stats}");
}
