//! openai-chat: OpenAI-compatible `POST {base_url}/chat/completions` (DeepSeek, GPT, Gemini's
//! compatibility endpoint, relays), writing season scripts for `dramaq generate`.
//!
//! A script task (the outline, or one episode) is one submit that answers synchronously with a
//! JSON file. Inside it:
//!
//! - **Pay once.** Each request is hashed (sha256 of account and body); an answer that arrived
//!   is saved under that hash in Redis before anything else happens to it
//!   ([`dramaq_common::chat`]), and every request looks there first. A worker killed after an
//!   answer, a retry after a later repair call failed, or the same generation run again reuse
//!   the answer instead of paying for it again.
//! - **Lenient reading.** Blank keep-alive lines before the body, code fences and prose around
//!   the object are skipped ([`dramaq_producer::generate::extract_json`]).
//! - **Quirks as failures** (docs/llm.md): empty content, `finish_reason: length`,
//!   `insufficient_system_resource` and 5xx are `provider_error` (retried with backoff), 429 is
//!   `rate_limited` (the account's shared cool-down), 402 is `insufficient_credits` (the account
//!   is paused), a refusal or `content_filter` is `content_policy`. The decision itself is
//!   `decide.rs`'s, like for every family.
//! - **Repair loop.** The answer is validated with the script validator `dramaq plan` uses; its
//!   messages are sent back and a corrected object asked for, at most [`MAX_REPAIRS`] times;
//!   then the task fails as `invalid_output` with the messages (dead at once).
//! - **Metering.** Every paid call's tokens and cost (from the account's per-million prices) go
//!   to the season's totals in Redis and to the metrics; the stored file carries the task's own.

use super::billing::{Bill, Bills};
use super::http::{self, openai, Scrubber, IDEMPOTENCY_KEY, JSON_BODY_CAP};
use super::{
    nothing_to_poll, Download, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome,
    SubmitRequest, SyncResult,
};
use crate::metrics::Metrics;
use crate::storage::{Location, Storage};
use async_trait::async_trait;
use bytes::Bytes;
use dramaq_common::chat::{self, ChatUsage};
use dramaq_common::config::{AccountConfig, Config, Family, JsonMode, Price, Secret};
use dramaq_common::queue::Queue;
use dramaq_common::FailureClass;
use dramaq_producer::generate::{check_answer, prompt, Outline, Step};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::{debug, info};

/// Most repair requests per task after the first answer.
pub const MAX_REPAIRS: usize = dramaq_common::config::CHAT_MAX_REPAIRS;

/// Sampling temperature for creative writing.
const TEMPERATURE: f64 = 0.8;

pub(crate) struct OpenaiChat {
    account: String,
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    scrub: Scrubber,
    max_tokens: u32,
    json_mode: JsonMode,
    price: Price,
    cfg: Arc<Config>,
    queue: Queue,
    storage: Arc<dyn Storage>,
    metrics: Metrics,
    /// What the current attempt of each task paid so far (every call, repairs included), by
    /// task id, until the attempt is settled.
    bills: Bills,
}

/// One chat answer with content, as kept in the answer cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Answer {
    content: String,
}

impl OpenaiChat {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        account: &str,
        acct: &AccountConfig,
        api_key: Option<Secret>,
        cfg: Arc<Config>,
        queue: Queue,
        storage: Arc<dyn Storage>,
        metrics: Metrics,
    ) -> OpenaiChat {
        OpenaiChat {
            account: account.to_string(),
            client: http::client(acct),
            base_url: acct.base_url.clone(),
            model: acct.model.clone(),
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
            max_tokens: acct.chat_max_tokens(),
            json_mode: acct.json_mode,
            price: acct.price.clone(),
            cfg,
            queue,
            storage,
            metrics,
            bills: Bills::default(),
        }
    }

    fn body(&self, step: Step, messages: &[prompt::Message]) -> Value {
        let response_format = match self.json_mode {
            JsonMode::Object => json!({"type": "json_object"}),
            JsonMode::Schema => json!({
                "type": "json_schema",
                "json_schema": {
                    "name": match step { Step::Outline => "season_outline", Step::Episode(_) => "episode" },
                    "strict": false,
                    "schema": prompt::schema(step),
                }
            }),
        };
        json!({
            "model": self.model,
            "messages": messages,
            "temperature": TEMPERATURE,
            "max_tokens": self.max_tokens,
            "response_format": response_format,
            "stream": false,
        })
    }

    /// The answer to `body`: from the cache when one arrived before, else paid for.
    /// Returns the content and whether it was paid now.
    async fn ask(
        &self,
        season: &str,
        task_id: &str,
        key: &str,
        body: &Value,
        usage: &mut ChatUsage,
    ) -> Result<String, ProviderError> {
        let text = body.to_string();
        let digest = hex::encode(Sha256::digest(format!("{}\n{text}", self.account)));
        let redis_err = |what: &str, e: dramaq_common::queue::QueueError| {
            ProviderError::new(FailureClass::Network, format!("{what}: {e}")).with_code("redis")
        };
        if let Some(saved) = chat::cached_answer(&self.queue, &self.account, &digest)
            .await
            .map_err(|e| redis_err("reading the answer cache", e))?
        {
            if let Ok(a) = serde_json::from_str::<Answer>(&saved) {
                debug!("chat answer reused from the cache");
                return Ok(a.content);
            }
        }
        let rb = self
            .client
            .post(http::join_url(&self.base_url, "/chat/completions"))
            .header(IDEMPOTENCY_KEY, key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(text);
        let rb = http::with_auth(rb, http::auth_header("Bearer", self.api_key.as_ref())?);
        let answer = http::exchange(rb, JSON_BODY_CAP).await?;
        if !answer.is_success() {
            return Err(openai::error_from_response(
                answer.status,
                &answer.headers,
                &answer.body,
                &self.scrub,
            ));
        }
        let envelope = envelope(&answer.body, &self.scrub)?;
        let call = call_usage(&envelope, &self.price);
        let choice = &envelope["choices"][0];
        let content = choice["message"]["content"].as_str().unwrap_or("");
        let finish = choice["finish_reason"].as_str().unwrap_or("");
        let outcome = judge(
            content,
            finish,
            &choice["message"]["refusal"],
            self.max_tokens,
        );
        if outcome.is_ok() {
            // Saved before anything else: from now on this request is never paid again.
            let saved = serde_json::to_string(&Answer {
                content: content.to_string(),
            })
            .unwrap_or_default();
            chat::save_answer(&self.queue, &self.account, &digest, &saved)
                .await
                .map_err(|e| redis_err("saving the answer", e))?;
        }
        usage.add(&call);
        self.bills.add_usd(task_id, call.cost_usd);
        self.metrics
            .llm_call(&self.account, call.input_tokens, call.output_tokens);
        if let Err(e) = chat::record_usage(&self.queue, &self.account, season, &call).await {
            tracing::warn!(error = %e, "chat usage not recorded");
        }
        outcome.map(|()| content.to_string())
    }

    /// The outline an episode task depends on, read from storage.
    async fn outline(&self, req: &SubmitRequest<'_>) -> Result<Outline, ProviderError> {
        let bad = |why: String| ProviderError::new(FailureClass::Unknown, why);
        let dep = req
            .deps
            .first()
            .ok_or_else(|| bad("an episode task without its outline dependency".into()))?;
        let rec = self
            .queue
            .get_task(&dep.account, &dep.id)
            .await
            .map_err(|e| bad(format!("reading the outline record: {e}")))?
            .ok_or_else(|| bad(format!("outline {} has no record", dep.id)))?;
        let output = rec
            .output
            .ok_or_else(|| bad(format!("outline {} is not stored", dep.id)))?;
        let location = Location::parse(&output).map_err(|e| bad(format!("outline: {e}")))?;
        let bytes = self
            .storage
            .get(&location)
            .await
            .map_err(crate::finish::store_failure)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("stored outline is not JSON: {e}")))?;
        serde_json::from_value(v["answer"].clone())
            .map_err(|e| bad(format!("stored outline has the wrong shape: {e}")))
    }
}

/// The response envelope, read leniently: blank keep-alive lines (and `: keep-alive` comments)
/// before the JSON are skipped.
fn envelope(body: &[u8], scrub: &Scrubber) -> Result<Value, ProviderError> {
    let text = String::from_utf8_lossy(body);
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n");
    http::parse_json(json.trim().as_bytes(), "chat completion", scrub)
}

/// Tokens and cost of one answer. DeepSeek reports cache hits as `prompt_cache_hit_tokens`,
/// OpenAI as `prompt_tokens_details.cached_tokens`.
fn call_usage(envelope: &Value, price: &Price) -> ChatUsage {
    let u = &envelope["usage"];
    let input = u["prompt_tokens"].as_u64().unwrap_or(0);
    let output = u["completion_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_cache_hit_tokens"]
        .as_u64()
        .or_else(|| u["prompt_tokens_details"]["cached_tokens"].as_u64())
        .unwrap_or(0);
    ChatUsage {
        calls: 1,
        input_tokens: input,
        cached_tokens: cached,
        output_tokens: output,
        cost_usd: price.chat_usd(input, cached, output),
    }
}

/// Whether a 200 answer holds a usable answer (docs/llm.md, "Quirks a client must survive").
fn judge(
    content: &str,
    finish: &str,
    refusal: &Value,
    max_tokens: u32,
) -> Result<(), ProviderError> {
    if let Some(r) = refusal.as_str().filter(|r| !r.trim().is_empty()) {
        return Err(ProviderError::new(
            FailureClass::ContentPolicy,
            format!("the model refused: {r}"),
        )
        .with_code("refusal"));
    }
    match finish {
        "length" => {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                format!("the answer was cut at the token limit ({max_tokens}); raise max_tokens or write fewer scenes"),
            )
            .with_code("length"))
        }
        "insufficient_system_resource" => {
            return Err(ProviderError::new(
                FailureClass::ProviderError,
                "the provider ran out of capacity mid-answer",
            )
            .with_code("insufficient_system_resource"))
        }
        "content_filter" => {
            return Err(ProviderError::new(
                FailureClass::ContentPolicy,
                "the answer was cut by the provider's moderation",
            )
            .with_code("content_filter"))
        }
        _ => {}
    }
    if content.trim().is_empty() {
        return Err(ProviderError::new(
            FailureClass::ProviderError,
            "the answer's content is empty (JSON mode sometimes answers nothing)",
        )
        .with_code("empty_content"));
    }
    Ok(())
}

#[async_trait]
impl Provider for OpenaiChat {
    fn family(&self) -> Family {
        Family::OpenaiChat
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let (step, brief) = Step::of(req.payload)
            .map_err(|why| ProviderError::new(FailureClass::InvalidRequest, why))?;
        let outline = match step {
            Step::Outline => None,
            Step::Episode(_) => Some(self.outline(&req).await?),
        };
        let mut messages = prompt::messages(step, &brief, outline.as_ref());
        let mut usage = ChatUsage::default();
        let mut calls = 0;
        for round in 0..=MAX_REPAIRS {
            let key = if round == 0 {
                req.task_id.to_string()
            } else {
                format!("{}:repair{round}", req.task_id)
            };
            let body = self.body(step, &messages);
            let content = self
                .ask(req.season, req.task_id, &key, &body, &mut usage)
                .await?;
            calls += 1;
            match check_answer(step, &brief, outline.as_ref(), &content, &self.cfg) {
                Ok(answer) => {
                    if round > 0 {
                        info!(repairs = round, "answer repaired");
                    }
                    let file = json!({
                        "step": match step { Step::Outline => "outline", Step::Episode(_) => "episode" },
                        "episode": match step { Step::Outline => 0, Step::Episode(n) => n },
                        "answer": answer,
                        "calls": calls,
                        "repairs": round,
                        "usage": usage,
                    });
                    let bytes = serde_json::to_vec_pretty(&file)
                        .map_err(|e| ProviderError::new(FailureClass::Unknown, e.to_string()))?;
                    return Ok(SubmitOutcome::Finished(SyncResult::Bytes {
                        bytes: Bytes::from(bytes),
                        ext: "json".into(),
                    }));
                }
                Err(problems) if round == MAX_REPAIRS => {
                    return Err(ProviderError::new(
                        FailureClass::InvalidOutput,
                        format!(
                            "still invalid after {MAX_REPAIRS} repairs: {}",
                            problems.messages.join("; ")
                        ),
                    )
                    .with_code("invalid_output"));
                }
                Err(problems) => {
                    debug!(
                        round,
                        problems = problems.messages.len(),
                        "asking for a repair"
                    );
                    messages.extend(prompt::repair(&content, &problems.messages));
                }
            }
        }
        unreachable!("the loop returns at its last round")
    }

    fn reported_bill(&self, task_id: &str, _: Option<&str>) -> Option<Bill> {
        self.bills.take(task_id)
    }

    async fn poll(&self, _: &str, _: Option<&str>) -> Result<PollOutcome, ProviderError> {
        Err(nothing_to_poll())
    }

    async fn fetch(&self, _: &ResultRef) -> Result<Download, ProviderError> {
        Err(nothing_to_poll())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quirks_are_classified() {
        let none = Value::Null;
        assert!(judge("{}", "stop", &none, 10).is_ok());
        for (content, finish, class, code) in [
            ("", "stop", FailureClass::ProviderError, "empty_content"),
            ("  \n", "stop", FailureClass::ProviderError, "empty_content"),
            ("{\"a\":", "length", FailureClass::ProviderError, "length"),
            (
                "{}",
                "insufficient_system_resource",
                FailureClass::ProviderError,
                "insufficient_system_resource",
            ),
            (
                "{}",
                "content_filter",
                FailureClass::ContentPolicy,
                "content_filter",
            ),
        ] {
            let e = judge(content, finish, &none, 10).unwrap_err();
            assert_eq!(
                (e.class, e.code.as_deref()),
                (class, Some(code)),
                "{finish}"
            );
        }
        let e = judge("", "stop", &json!("no"), 10).unwrap_err();
        assert_eq!(e.class, FailureClass::ContentPolicy);
    }

    #[test]
    fn envelope_skips_keepalive_and_usage_prices_cache_hits() {
        let body = b"\n\n: keep-alive\n\n{\"choices\":[],\"usage\":{\"prompt_tokens\":1000000,\"completion_tokens\":1000000,\"prompt_cache_hit_tokens\":500000}}";
        let v = envelope(body, &Scrubber::new([None])).unwrap();
        let price = Price {
            per_m_input: 0.28,
            per_m_output: 0.42,
            per_m_cache_hit: Some(0.028),
            ..Price::default()
        };
        let u = call_usage(&v, &price);
        assert_eq!(
            (u.input_tokens, u.cached_tokens, u.output_tokens),
            (1_000_000, 500_000, 1_000_000)
        );
        assert!(
            (u.cost_usd - (0.14 + 0.014 + 0.42)).abs() < 1e-9,
            "{}",
            u.cost_usd
        );
    }
}
