//! Chat completions: `/openai/v1/chat/completions` (OpenAI shape) and
//! `/deepseek/chat/completions` (DeepSeek shape: no json_schema, JSON mode needs the word
//! "json", cache-hit token counts).
//!
//! Answers are deterministic seasons derived from the request: the `Parameters (JSON):` block
//! of the first user message says what is wanted (an outline with N episodes and M characters,
//! or episode n with k scenes, the durations and the cast), and the sandbox writes exactly that.
//! A repair request (the last user message lists problems) gets the correct object.
//!
//! Scenarios, by a `[sandbox:<name>]` keyword in the premise (found in the parameters block):
//! `chat_empty` (first call per request: empty content), `chat_fences` (code fences and prose
//! around the JSON), `chat_keepalive` (blank keep-alive lines before the body),
//! `chat_truncate` (first call: `finish_reason: length`), `chat_insufficient` (first call:
//! `insufficient_system_resource`), `chat_drift` (an episode's first answer has a duration as
//! a string and an unknown character; the repair fixes it), `chat_drift_forever` (episode 2 is
//! always drifted), `chat_429` (first call: 429 with Retry-After), `chat_402` (every call: 402
//! insufficient balance), `chat_503` (first call: 503), `chat_slow` (every call takes 1.5 s).
//!
//! `GET /admin/chat` returns the counters tests read: calls (every request), answered (200 with
//! content), repairs, and calls per Idempotency-Key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Marker of the parameters block in the first user message.
const PARAMETERS: &str = "Parameters (JSON):";
/// Marker of a repair request.
const REPAIR: &str = "Your JSON has these problems";

/// Latency of an ordinary answer: short, so a generated season takes seconds.
pub const LATENCY: Duration = Duration::from_millis(20);

/// Counters a test reads through `GET /admin/chat`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ChatStats {
    pub calls: u64,
    pub answered: u64,
    pub repairs: u64,
    pub by_key: BTreeMap<String, u64>,
    /// Calls per request (parameters block and turn), for "first call" scenarios.
    #[serde(skip)]
    seen: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct ChatState {
    stats: Mutex<ChatStats>,
    /// Latency of every answer.
    latency: Duration,
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Openai,
    Deepseek,
}

pub fn router(latency: Duration) -> Router {
    let state = Arc::new(ChatState {
        stats: Mutex::default(),
        latency,
    });
    Router::new()
        .route("/openai/v1/chat/completions", post(openai))
        .route("/deepseek/chat/completions", post(deepseek))
        .route("/admin/chat", get(stats))
        .with_state(state)
}

async fn stats(State(s): State<Arc<ChatState>>) -> Json<ChatStats> {
    Json(s.stats.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

async fn openai(s: State<Arc<ChatState>>, h: HeaderMap, b: Json<Value>) -> Response {
    complete(s, h, b, Shape::Openai).await
}

async fn deepseek(s: State<Arc<ChatState>>, h: HeaderMap, b: Json<Value>) -> Response {
    complete(s, h, b, Shape::Deepseek).await
}

fn error(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": Value::Null}})),
    )
        .into_response()
}

fn has(params: &Value, scenario: &str) -> bool {
    params["premise"]
        .as_str()
        .is_some_and(|p| p.contains(&format!("[sandbox:{scenario}]")))
}

fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

async fn complete(
    State(state): State<Arc<ChatState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
    shape: Shape,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let first_user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let repair = last.starts_with(REPAIR);
    let params: Value = first_user
        .find(PARAMETERS)
        .and_then(|i| serde_json::from_str(first_user[i + PARAMETERS.len()..].trim()).ok())
        .unwrap_or(Value::Null);
    let turn = format!("{params}|{}", messages.len());
    let nth = {
        let mut st = state.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.calls += 1;
        *st.by_key.entry(key).or_default() += 1;
        if repair {
            st.repairs += 1;
        }
        let n = st.seen.entry(turn).or_default();
        *n += 1;
        *n
    };
    let slow = has(&params, "chat_slow");
    tokio::time::sleep(if slow {
        Duration::from_millis(1500)
    } else {
        state.latency
    })
    .await;

    if !headers.contains_key("authorization") {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing API key",
            "authentication_error",
        );
    }
    let all_text: String = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let format = body["response_format"]["type"].as_str().unwrap_or("");
    if shape == Shape::Deepseek && format == "json_schema" {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "response_format json_schema is not supported",
            "invalid_request_error",
        );
    }
    if format.starts_with("json") && !all_text.to_lowercase().contains("json") {
        return error(
            StatusCode::BAD_REQUEST,
            "Prompt must contain the word 'json' in some form to use 'response_format' of type 'json_object'.",
            "invalid_request_error",
        );
    }
    if has(&params, "chat_402") {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "Insufficient Balance",
            "unknown_error",
        );
    }
    if has(&params, "chat_429") && nth == 1 {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests",
            "rate_limit_error",
        );
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return r;
    }
    if has(&params, "chat_503") && nth == 1 {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Server overloaded",
            "server_error",
        );
    }

    let episode = params["episode"].as_u64().unwrap_or(0);
    let drifted = params["task"] == "episode"
        && ((has(&params, "chat_drift") && !repair)
            || (has(&params, "chat_drift_forever") && episode == 2));
    let answer = match params["task"].as_str() {
        Some("outline") => outline(&params),
        Some("episode") => episode_answer(&params, drifted),
        _ => json!({"note": "no parameters block found"}),
    };
    let mut content = answer.to_string();
    let mut finish = "stop";
    if has(&params, "chat_empty") && nth == 1 {
        content.clear();
    } else if has(&params, "chat_truncate") && nth == 1 {
        content.truncate(content.len() / 2);
        finish = "length";
    } else if has(&params, "chat_insufficient") && nth == 1 {
        content.clear();
        finish = "insufficient_system_resource";
    } else if has(&params, "chat_fences") {
        content = format!("Here is the JSON you asked for:\n```json\n{content}\n```\nLet me know if you want changes.");
    }
    let prompt_tokens = tokens(&all_text);
    let completion_tokens = tokens(&content);
    let system_tokens = messages
        .first()
        .and_then(|m| m["content"].as_str())
        .map(tokens)
        .unwrap_or(0);
    let cached = if nth > 1 || repair { system_tokens } else { 0 };
    let mut usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    match shape {
        Shape::Deepseek => {
            usage["prompt_cache_hit_tokens"] = json!(cached);
            usage["prompt_cache_miss_tokens"] = json!(prompt_tokens - cached.min(prompt_tokens));
        }
        Shape::Openai => usage["prompt_tokens_details"] = json!({"cached_tokens": cached}),
    }
    if !content.is_empty() && finish == "stop" {
        state
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered += 1;
    }
    let envelope = json!({
        "id": format!("chatcmpl-{}", nth),
        "object": "chat.completion",
        "created": 1_730_000_000,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish}],
        "usage": usage,
    });
    let mut text = envelope.to_string();
    if has(&params, "chat_keepalive") {
        text = format!("\n\n\n\n{text}");
    }
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

const CAMERAS: [&str; 3] = [
    "slow push-in",
    "handheld close-up",
    "wide establishing shot",
];
const COLOURS: [&str; 4] = ["red", "blue", "green", "grey"];

const NAMES: [&str; 12] = [
    "Linh", "Minh", "Anh", "Bao", "Chi", "Duc", "Hoa", "Khanh", "Lan", "Nam", "Phuong", "Quan",
];

fn name(i: usize) -> String {
    match NAMES.get(i) {
        Some(n) => n.to_string(),
        None => format!("{} {}", NAMES[i % NAMES.len()], i / NAMES.len() + 1),
    }
}

fn outline(p: &Value) -> Value {
    let n_chars = p["characters"].as_u64().unwrap_or(2) as usize;
    let n_eps = p["episodes"].as_u64().unwrap_or(1) as usize;
    let voices: Vec<Value> = p["voices"].as_array().cloned().unwrap_or_default();
    let premise = p["premise"].as_str().unwrap_or("a season");
    let words: Vec<&str> = premise
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .take(3)
        .collect();
    let title = if words.is_empty() {
        "Sandbox Season".to_string()
    } else {
        format!("Sandbox {}", words.join(" "))
    };
    let characters: Vec<Value> = (0..n_chars)
        .map(|i| {
            let mut c = json!({
                "name": name(i),
                "appearance": format!("Character {} of the sandbox season: age {}, dark hair, a {} jacket, a silver ring.", i + 1, 20 + 3 * i, COLOURS[i % COLOURS.len()]),
            });
            if !voices.is_empty() {
                c["voice"] = voices[i % voices.len()].clone();
            }
            c
        })
        .collect();
    let episodes: Vec<Value> = (1..=n_eps)
        .map(|e| {
            json!({
                "title": format!("Episode {e}"),
                "synopsis": format!("In episode {e}, {} and {} face a new obstacle.", name(e % n_chars.max(1)), name((e + 1) % n_chars.max(1))),
                "cliffhanger": format!("A secret from episode {e} comes out."),
            })
        })
        .collect();
    json!({"title": title, "logline": format!("From the premise: {premise}"),
           "characters": characters, "episodes": episodes})
}

fn episode_answer(p: &Value, drifted: bool) -> Value {
    let n = p["episode"].as_u64().unwrap_or(1) as usize;
    let scenes = p["scenes"].as_u64().unwrap_or(1) as usize;
    let durations: Vec<u64> = p["durations"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let cast: Vec<String> = p["characters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let scenes: Vec<Value> = (0..scenes)
        .map(|i| {
            let duration = durations.get((n + i) % durations.len().max(1)).copied().unwrap_or(5);
            let mut chars: Vec<String> = Vec::new();
            if !cast.is_empty() {
                chars.push(cast[(n + i) % cast.len()].clone());
                if i % 2 == 1 && cast.len() > 1 {
                    chars.push(cast[(n + i + 1) % cast.len()].clone());
                }
            }
            let dialogue: Vec<Value> = chars
                .iter()
                .map(|c| json!({"speaker": c, "line": format!("Line of {c} in episode {n}, scene {}.", i + 1)}))
                .collect();
            let mut s = json!({
                "description": format!("Episode {n}, scene {}: {} in a rainy city street at night, neon light.", i + 1, chars.join(" and ")),
                "characters": chars,
                "camera": CAMERAS[i % CAMERAS.len()],
                "duration": duration,
                "dialogue": dialogue,
            });
            if chars.len() == 1 {
                s["first_frame"] = json!(chars[0]);
            }
            if drifted && i == 0 {
                s["duration"] = json!(duration.to_string());
                s["characters"] = json!(["Stranger"]);
                s.as_object_mut().map(|o| o.remove("first_frame"));
                s["dialogue"] = json!([]);
            }
            s
        })
        .collect();
    json!({"title": p["title"], "scenes": scenes})
}
