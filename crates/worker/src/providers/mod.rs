//! Provider adapters: one trait, one file per protocol family.
//!
//! The worker core never speaks a provider's wire format. It calls [`Provider::submit`] once per
//! attempt, [`Provider::poll`] on the await schedule, and [`Provider::fetch`] to stream the result
//! into storage. Each family maps its own status words and error codes onto
//! [`crate::providers::PollOutcome`] and [`dramaq_common::FailureClass`] (docs/providers.md, "The common frame"), so a
//! user switches model or relay in the config, not in code.

pub mod billing;
pub mod fal;
pub mod http;
pub mod kling;
pub mod minimax;
pub(crate) mod openai_chat;
pub mod openai_images;
pub mod openai_speech;
pub mod openai_videos;
pub mod replicate;
pub mod runway;
pub mod veo;

use async_trait::async_trait;
use bytes::Bytes;
use dramaq_common::config::{AccountConfig, ConfigError, Family, Secret};
use dramaq_common::text::shown;
use dramaq_common::{DepRef, FailureClass, TaskPayload};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// An input image handed to image-to-video submits (the character sheet of the first frame).
#[derive(Debug, Clone)]
pub struct InputImage {
    pub bytes: Bytes,
    /// `image/png`, `image/jpeg`, ...
    pub mime: String,
}

/// Everything an adapter needs for one submit.
#[derive(Debug, Clone)]
pub struct SubmitRequest<'a> {
    /// Our task id: sent as the idempotency/external id where the family has one (Kling
    /// `external_task_id`).
    pub task_id: &'a str,
    /// Attempt number (1-based). Families whose external id must be unique per account (Kling)
    /// derive it from task id and attempt, so a resubmit after a failed render is accepted.
    pub attempt: u32,
    pub payload: &'a TaskPayload,
    /// The first-frame image for image-to-video payloads, read from storage by the worker.
    pub first_frame: Option<InputImage>,
    /// The task's season and group (episode folder), and its dependencies with the accounts
    /// holding them: what an in-process family (assembly) reads its inputs from. HTTP families
    /// ignore them.
    pub season: &'a str,
    pub group: &'a str,
    pub deps: &'a [DepRef],
}

/// Where a finished result's bytes are. Serialised into the task record's `result` field, so it
/// must carry no secret: authenticated downloads re-add credentials from the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResultRef {
    /// A plain (often signed, time-limited) URL.
    Url { url: String },
    /// A URL that needs the account's credentials (OpenAI `/content`, Veo files).
    AuthedUrl { url: String },
}

/// What a submit produced.
#[derive(Debug)]
pub enum SubmitOutcome {
    /// An asynchronous render was accepted. The worker saves `provider_task_id` and the locator
    /// before anything else, then the task waits on the await schedule.
    Accepted {
        provider_task_id: String,
        /// Family-specific data `poll` needs besides the id (Kling action path, ...), as JSON text.
        poll_locator: Option<String>,
        /// Provider hint for the first poll (`openai-poll-after-ms`).
        poll_after: Option<Duration>,
    },
    /// A synchronous family answered with the result itself.
    Finished(SyncResult),
}

/// A synchronous result: bytes in hand, a stream (an in-process family's file), or a URL to
/// fetch.
pub enum SyncResult {
    Bytes {
        bytes: Bytes,
        ext: String,
    },
    Stream {
        body: crate::storage::Body,
        ext: String,
    },
    Ref(ResultRef),
}

impl std::fmt::Debug for SyncResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncResult::Bytes { bytes, ext } => f
                .debug_struct("Bytes")
                .field("len", &bytes.len())
                .field("ext", ext)
                .finish(),
            SyncResult::Stream { ext, .. } => f.debug_struct("Stream").field("ext", ext).finish(),
            SyncResult::Ref(r) => f.debug_tuple("Ref").field(r).finish(),
        }
    }
}

/// Where a pending render is, as its family reads its own status words: still waiting in the
/// provider's queue, or being rendered. The poller acts on this (a render queued past the
/// account's `max_queued_ms` is given up), never on the words themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderPhase {
    /// Accepted but not started: queued, submitted, pending, throttled, starting, …
    Queued,
    /// Rendering, or a word the family does not know (keep polling, never give up as queued).
    Running,
}

/// Longest [`PollOutcome::Pending`] `sub_status` kept (characters, before escaping).
pub const SUB_STATUS_MAX_CHARS: usize = 60;

/// A provider's pending status word as kept in `sub_status`: escaped and capped (it goes to
/// logs), `unknown` when the provider sent none.
pub fn sub_status(word: &str) -> String {
    let word = word.trim();
    if word.is_empty() {
        "unknown".to_string()
    } else {
        shown(word, SUB_STATUS_MAX_CHARS)
    }
}

/// What one poll saw.
#[derive(Debug)]
pub enum PollOutcome {
    /// Still queued or running. `sub_status` is the provider's own word (e.g. `THROTTLED`),
    /// kept for logs only (escape it with `dramaq_common::text::Shown` when showing it).
    Pending {
        phase: RenderPhase,
        sub_status: String,
        progress: Option<f32>,
        poll_after: Option<Duration>,
    },
    /// Finished with output.
    Succeeded(ResultRef),
    /// Finished without usable output; never `Succeeded` without a result.
    Failed(ProviderError),
}

/// Longest [`ProviderError::message`] kept (characters, before escaping).
pub const ERROR_MESSAGE_MAX_CHARS: usize = 500;

/// Longest [`ProviderError::code`] kept (characters, before escaping).
pub const ERROR_CODE_MAX_CHARS: usize = 100;

/// A failed provider call, already classified. `message` is the provider's text with anything
/// secret removed; it is stored in Redis and shown to operators.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ProviderError {
    pub class: FailureClass,
    /// Provider's own code (`1302`, `moderation_blocked`, `SAFETY.INPUT.TEXT`, HTTP status).
    pub code: Option<String>,
    pub message: String,
    /// Provider's hint for when to try again (`Retry-After`, `retry-after-ms`).
    pub retry_after: Option<Duration>,
    pub http_status: Option<u16>,
}

impl ProviderError {
    /// `message` is stored escaped (control characters) and capped at
    /// [`ERROR_MESSAGE_MAX_CHARS`]: it often quotes the provider.
    pub fn new(class: FailureClass, message: impl Into<String>) -> ProviderError {
        ProviderError {
            class,
            code: None,
            message: shown(&message.into(), ERROR_MESSAGE_MAX_CHARS),
            retry_after: None,
            http_status: None,
        }
    }

    /// The code is escaped and capped like the message (provider codes are provider text).
    pub fn with_code(mut self, code: impl Into<String>) -> ProviderError {
        self.code = Some(shown(&code.into(), ERROR_CODE_MAX_CHARS));
        self
    }

    pub fn with_status(mut self, status: u16) -> ProviderError {
        self.http_status = Some(status);
        self
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> ProviderError {
        self.retry_after = after;
        self
    }
}

/// A video payload's fields, checked once for every video family: the payload must be a video,
/// and an image-to-video task must come with its first-frame image.
#[derive(Debug, Clone, Copy)]
pub struct VideoArgs<'a> {
    pub prompt: &'a str,
    /// The negative prompt, `None` when absent or blank.
    pub negative_prompt: Option<&'a str>,
    pub duration_s: u32,
    pub aspect_ratio: &'a str,
    pub resolution: &'a str,
    pub seed: Option<u32>,
    /// The first-frame image the worker supplied, if any.
    pub image: Option<&'a InputImage>,
}

/// Unpack a video payload for `family` (its name in the "renders video tasks only" error), with
/// the first-frame image read from storage.
pub fn video_args<'a>(
    family: &str,
    payload: &'a TaskPayload,
    image: Option<&'a InputImage>,
) -> Result<VideoArgs<'a>, ProviderError> {
    let TaskPayload::Video {
        prompt,
        negative_prompt,
        duration_s,
        aspect_ratio,
        resolution,
        first_frame,
        seed,
    } = payload
    else {
        return Err(ProviderError::new(
            FailureClass::InvalidRequest,
            format!("{family} renders video tasks only"),
        ));
    };
    if first_frame.is_some() && image.is_none() {
        return Err(ProviderError::new(
            FailureClass::InvalidRequest,
            "image-to-video task submitted without its first-frame image",
        )
        .with_code("missing_first_frame"));
    }
    Ok(VideoArgs {
        prompt,
        negative_prompt: negative_prompt.as_deref().filter(|n| !n.trim().is_empty()),
        duration_s: *duration_s,
        aspect_ratio,
        resolution,
        seed: *seed,
        image,
    })
}

/// The answer of a synchronous family (the result came with the submit) to a poll.
pub fn nothing_to_poll() -> ProviderError {
    ProviderError::new(
        FailureClass::InvalidRequest,
        "synchronous family has nothing to poll",
    )
}

/// A streamed download.
pub struct Download {
    pub content_length: Option<u64>,
    /// File extension taken from the content type when the adapter knows better than the task.
    pub ext: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, ProviderError>>,
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn family(&self) -> Family;

    /// Whether a submit costs money. An in-process family (assembly) does not, so a resubmit
    /// after a crash there is no possible duplicate payment.
    fn charges(&self) -> bool {
        true
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError>;

    /// What the provider reported the attempt cost, when the family reports it (Runway's
    /// `cost` in credits, Kling's and OpenAI videos' output seconds, the chat family's token
    /// usage): keyed by the render's provider task id, or by the task id for a synchronous
    /// call. Taken once, when the attempt is settled (`billing`). `None`: the configured price
    /// stands.
    fn reported_bill(
        &self,
        _task_id: &str,
        _provider_task_id: Option<&str>,
    ) -> Option<billing::Bill> {
        None
    }

    async fn poll(
        &self,
        provider_task_id: &str,
        poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError>;

    async fn fetch(&self, result: &ResultRef) -> Result<Download, ProviderError>;

    /// Cancel a render that is no longer wanted (stuck in the provider's queue). `Ok(true)`
    /// when the family could cancel it, `Ok(false)` when it has no way to (Veo, Kling, MiniMax,
    /// OpenAI: the render may still finish and be billed).
    async fn cancel(
        &self,
        _provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<bool, ProviderError> {
        Ok(false)
    }

    /// After a crash mid-submit of attempt `attempt`: ask the provider whether it already has
    /// this task (by our id),
    /// returning its provider task id and locator. `Ok(None)` means "no way to know" or "not
    /// there"; the caller then resubmits and counts a possible duplicate.
    async fn reconcile(
        &self,
        _task_id: &str,
        _attempt: u32,
        _payload: &TaskPayload,
    ) -> Result<Option<(String, Option<String>)>, ProviderError> {
        Ok(None)
    }
}

/// The callback URL of one task: the account's `callback_url` (`…/hooks/<account>`) and the
/// task id, which the receiver (`crate::webhooks`) reads from the path.
pub(crate) fn callback_for(base: &str, task_id: &str) -> String {
    format!("{}/{task_id}", base.trim_end_matches('/'))
}

/// Build the HTTP adapter for an account. `Assembly` and `OpenaiChat` return `None`: they are
/// built by the runner with the queue and storage ([`crate::assemble::Assembler`],
/// [`openai_chat::OpenaiChat`]).
pub fn build(name: &str, acct: &AccountConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    build_with(acct, acct.api_key(name)?, acct.secret_key(name)?)
}

/// Adapters by pool key name.
pub type KeyedAdapters = Vec<(String, Arc<dyn Provider>)>;

/// One adapter per named key of the account's key pool (empty without a pool), each holding
/// only its own key: a provider task id belongs to the key that created it.
pub fn build_pool(name: &str, acct: &AccountConfig) -> Result<KeyedAdapters, ConfigError> {
    let mut out = Vec::new();
    for key in &acct.keys {
        let (api, secret) = acct.key_secrets(name, &key.name)?;
        if let Some(adapter) = build_with(acct, api, secret)? {
            out.push((key.name.clone(), adapter));
        }
    }
    Ok(out)
}

fn build_with(
    acct: &AccountConfig,
    api_key: Option<Secret>,
    secret_key: Option<Secret>,
) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let client = http::client(acct);
    Ok(match acct.family {
        Family::OpenaiVideos => Some(Arc::new(openai_videos::OpenaiVideos::new(
            client, acct, api_key,
        ))),
        Family::Kling => Some(Arc::new(kling::Kling::new(
            client, acct, api_key, secret_key,
        ))),
        Family::OpenaiImages => Some(Arc::new(openai_images::OpenaiImages::new(
            client, acct, api_key,
        ))),
        Family::OpenaiSpeech => Some(Arc::new(openai_speech::OpenaiSpeech::new(
            client, acct, api_key,
        ))),
        Family::Runway => Some(Arc::new(runway::Runway::new(client, acct, api_key))),
        Family::Veo => Some(Arc::new(veo::Veo::new(client, acct, api_key))),
        Family::Minimax => Some(Arc::new(minimax::Minimax::new(client, acct, api_key))),
        Family::Fal => Some(Arc::new(fal::Fal::new(client, acct, api_key))),
        Family::Replicate => Some(Arc::new(replicate::Replicate::new(client, acct, api_key))),
        // In-process ones: they need the queue and storage (and the chat family the metrics),
        // so the runner builds them.
        Family::Assembly | Family::OpenaiChat => None,
    })
}
