//! The task model: what a task is, the states it moves through and why it can fail.
//!
//! A season script expands into [`TaskRecord`]s. Each record lives in Redis as one MessagePack
//! string under `dq:{<account>}:t:<id>` (see [`crate::keys`]) and is only ever changed by a Lua
//! transition script, so the state machine below is enforced in one place, atomically.
//!
//! ```text
//!   waiting ──deps stored──► ready ──claim──► claimed ──► submitting ──id saved──► rendering ──► downloading ──► stored
//!                              ▲                 │            │                      (await)          │
//!                              │                 └────────────┴──── retryable ──► delayed ───────────┘
//!                              └──────────────── due ───────────────────────────────┘
//!   any live state ──non-retryable / attempts exhausted──► dead (failure class)
//! ```
//!
//! The record is decoded and re-encoded by Redis' built-in `cmsgpack` inside the scripts
//! (measured 1.5× faster than `cjson` on a 900-byte record, and 15 % smaller). Two rules keep
//! that lossless: empty lists and maps are never serialised (Lua cannot tell `[]` from `{}`),
//! and every integer stays below 2^53 (Lua numbers are doubles). Fields at their default value
//! are left out, which keeps a queued task's record small.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// What a task produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A character sheet image (fixed seed), reused by the scenes that show the character.
    Image,
    /// One scene's video clip.
    Video,
    /// One dialogue line's speech.
    Voice,
    /// One episode, put together from its scenes and voice lines once they are all stored.
    Assembly,
    /// A piece of a season script written by an LLM (`dramaq generate`): the outline or one
    /// episode, stored as JSON.
    Script,
}

impl TaskKind {
    pub const ALL: [TaskKind; 5] = [
        TaskKind::Image,
        TaskKind::Video,
        TaskKind::Voice,
        TaskKind::Assembly,
        TaskKind::Script,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Image => "image",
            TaskKind::Video => "video",
            TaskKind::Voice => "voice",
            TaskKind::Assembly => "assembly",
            TaskKind::Script => "script",
        }
    }

    /// Short prefix of task ids, so an id alone says what it is (`vid-3f9c…`).
    pub(crate) fn id_prefix(self) -> &'static str {
        match self {
            TaskKind::Image => "img",
            TaskKind::Video => "vid",
            TaskKind::Voice => "voc",
            TaskKind::Assembly => "asm",
            TaskKind::Script => "scr",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task is in its lifecycle. Exactly one at any instant (docs/invariants.md, "Nothing is lost").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Created; some dependency is not stored yet. Not in any stream.
    Waiting,
    /// An entry in its account's ready stream, not yet claimed.
    Ready,
    /// Held by a worker under a lease with a fencing token; nothing sent to the provider yet.
    Claimed,
    /// The worker recorded the attempt and is sending it to the provider. A crash here is the one
    /// window where a provider may have accepted work we never heard back about.
    Submitting,
    /// The provider accepted it; its task id is saved. Held by no worker: in the await schedule.
    Rendering,
    /// The render succeeded; a worker holds it under a lease while it downloads and stores.
    Downloading,
    /// Waiting in the retry schedule after a retryable failure or a rate-limit hint.
    Delayed,
    /// Stored in output storage with its checksum: done.
    Stored,
    /// Failed for good, with a failure class: in the dead-letter set.
    Dead,
    /// Leaving this account for another one (provider fallback, or an operator's move): failed
    /// here with a class, `moving_to` names the target, and the account's `moves` outbox holds
    /// it until the move's idempotent steps have run. Live, not finished: some process will
    /// finish the move (the worker right away, else the reaper's moves duty).
    Moving,
}

impl TaskState {
    pub const ALL: [TaskState; 10] = [
        TaskState::Waiting,
        TaskState::Ready,
        TaskState::Claimed,
        TaskState::Submitting,
        TaskState::Rendering,
        TaskState::Downloading,
        TaskState::Delayed,
        TaskState::Stored,
        TaskState::Dead,
        TaskState::Moving,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Ready => "ready",
            TaskState::Claimed => "claimed",
            TaskState::Submitting => "submitting",
            TaskState::Rendering => "rendering",
            TaskState::Downloading => "downloading",
            TaskState::Delayed => "delayed",
            TaskState::Stored => "stored",
            TaskState::Dead => "dead",
            TaskState::Moving => "moving",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Stored | TaskState::Dead)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed. Drives retry, the dead-letter queue and dashboards (ARCHITECTURE.md, "The failure decision").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    ContentPolicy,
    InvalidRequest,
    Auth,
    InsufficientCredits,
    QuotaExceeded,
    RateLimited,
    ConcurrencyLimited,
    ProviderError,
    Network,
    Timeout,
    ResultExpired,
    ModelRetired,
    Stalled,
    /// The provider answered "success" but the file is not a playable clip: the container does
    /// not parse, there is no video (or audio) stream, the duration is zero or far from what was
    /// asked (an HTML error page served with 200, zero bytes, a truncated MP4). The bytes are
    /// not stored; the task is retried, then falls back to the next account like `stalled`.
    BadOutput,
    /// The render finished at the provider but its result could not be fetched (redirect loop,
    /// URL refused again and again). The render was paid for: another provider would be paid
    /// again, so it does not fall back; an operator can requeue it.
    DownloadFailed,
    /// An LLM answered, but its answer is still not a valid piece of script after the bounded
    /// repair loop (each repair sends the validator's messages back). Asking again would pay
    /// for the same mistake, so it is dead at once.
    InvalidOutput,
    Unknown,
}

/// What the worker does with a failed attempt of a given class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Straight to the dead-letter set: the same request would fail the same way.
    Never,
    /// Wait (provider hint or backoff) and try again without using up an attempt.
    WaitWithoutAttempt,
    /// Exponential backoff with jitter, counted against the attempt limit.
    Backoff,
    /// The account itself cannot work (out of credits, over a spend cap): pause the account with
    /// the reason and put the task back to wait; retrying would only fail again.
    PauseAccount,
}

impl FailureClass {
    pub const ALL: [FailureClass; 17] = [
        FailureClass::ContentPolicy,
        FailureClass::InvalidRequest,
        FailureClass::Auth,
        FailureClass::InsufficientCredits,
        FailureClass::QuotaExceeded,
        FailureClass::RateLimited,
        FailureClass::ConcurrencyLimited,
        FailureClass::ProviderError,
        FailureClass::Network,
        FailureClass::Timeout,
        FailureClass::ResultExpired,
        FailureClass::ModelRetired,
        FailureClass::Stalled,
        FailureClass::BadOutput,
        FailureClass::DownloadFailed,
        FailureClass::InvalidOutput,
        FailureClass::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::ContentPolicy => "content_policy",
            FailureClass::InvalidRequest => "invalid_request",
            FailureClass::Auth => "auth",
            FailureClass::InsufficientCredits => "insufficient_credits",
            FailureClass::QuotaExceeded => "quota_exceeded",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::ConcurrencyLimited => "concurrency_limited",
            FailureClass::ProviderError => "provider_error",
            FailureClass::Network => "network",
            FailureClass::Timeout => "timeout",
            FailureClass::ResultExpired => "result_expired",
            FailureClass::ModelRetired => "model_retired",
            FailureClass::Stalled => "stalled",
            FailureClass::BadOutput => "bad_output",
            FailureClass::DownloadFailed => "download_failed",
            FailureClass::InvalidOutput => "invalid_output",
            FailureClass::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn retry_policy(self) -> RetryPolicy {
        match self {
            FailureClass::ContentPolicy
            | FailureClass::InvalidRequest
            | FailureClass::Auth
            | FailureClass::ModelRetired
            | FailureClass::DownloadFailed
            | FailureClass::InvalidOutput => RetryPolicy::Never,
            FailureClass::InsufficientCredits | FailureClass::QuotaExceeded => {
                RetryPolicy::PauseAccount
            }
            FailureClass::RateLimited | FailureClass::ConcurrencyLimited => {
                RetryPolicy::WaitWithoutAttempt
            }
            FailureClass::ProviderError
            | FailureClass::Network
            | FailureClass::Timeout
            | FailureClass::ResultExpired
            | FailureClass::Stalled
            | FailureClass::BadOutput
            | FailureClass::Unknown => RetryPolicy::Backoff,
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to send to the provider: everything that changes the output, and nothing else (it is
/// hashed into the task id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskPayload {
    Image {
        prompt: String,
        seed: u32,
        aspect_ratio: String,
        /// A reference picture for the character (local path or URL), when the script gives one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference_image: Option<String>,
    },
    Video {
        prompt: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        negative_prompt: Option<String>,
        duration_s: u32,
        aspect_ratio: String,
        resolution: String,
        /// Image-to-video: the character image task whose output is the first frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_frame: Option<String>,
        /// Seed of the character in the first frame, passed where the provider takes one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u32>,
    },
    Voice {
        text: String,
        voice: String,
        speaker: String,
    },
    Assembly {
        /// Scene video task ids in playback order.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            deserialize_with = "vec_or_empty_map"
        )]
        scenes: Vec<String>,
        /// Voice task ids in playback order.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            deserialize_with = "vec_or_empty_map"
        )]
        voice: Vec<String>,
        /// The master's format and timeline; absent in records written before it existed
        /// (assembled as 9:16 720p, each scene's lines one after another).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        master: Option<Box<MasterPlan>>,
    },
    /// One LLM call graph node of `dramaq generate`: `step` is `outline` or `episode`;
    /// `brief` is the generation brief as JSON text (premise, parameters, model, take), which
    /// the prompt is built from and which makes the id content-addressed.
    Script {
        step: String,
        #[serde(default, skip_serializing_if = "is_zero_u32")]
        episode: u32,
        brief: String,
    },
}

/// How an episode master is laid out: its picture format, where each voice line sits, music and
/// subtitles. Everything here changes the master, so it is part of the assembly's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterPlan {
    /// `9:16`, `16:9` or `1:1`.
    pub aspect_ratio: String,
    /// `480p`, `720p` or `1080p` (the short side).
    pub resolution: String,
    /// One per voice task, in the same order: the scene it belongs to and where it starts.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "vec_or_empty_map"
    )]
    pub lines: Vec<LineCue>,
    /// A music bed (local path or http(s) URL), ducked under dialogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub music: Option<String>,
    /// Burn the subtitles into the picture (the sidecars are written either way).
    #[serde(default, skip_serializing_if = "is_false")]
    pub burn_subtitles: bool,
}

/// Where a voice line sits on the episode timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineCue {
    /// Index of the line's scene in the assembly's `scenes`.
    pub scene: u32,
    /// Offset from the start of the scene (ms), when the script gives one (`at:`); otherwise the
    /// scene's lines play one after another from a small lead-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u32>,
}

impl TaskPayload {
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskPayload::Image { .. } => TaskKind::Image,
            TaskPayload::Video { .. } => TaskKind::Video,
            TaskPayload::Voice { .. } => TaskKind::Voice,
            TaskPayload::Assembly { .. } => TaskKind::Assembly,
            TaskPayload::Script { .. } => TaskKind::Script,
        }
    }
}

/// A dependency edge, with the account whose hash tag holds the dependency's record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DepRef {
    pub id: String,
    pub account: String,
}

/// One failed attempt, kept for the dead-letter queue and `dlq show`. Never holds secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    /// 0 when the task failed before its first submit.
    #[serde(default)]
    pub attempt: u32,
    pub class: FailureClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
    pub at_ms: i64,
    pub account: String,
}

/// The group of the season-wide character sheets; every other group of a season script is an
/// episode (`ep01`).
pub const CHARACTER_GROUP: &str = "characters";

/// The task record as stored in Redis (one JSON string per task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub season: String,
    /// Episode folder name (`ep01`), or `characters` for character images.
    pub group: String,
    /// Human label for logs and the CLI: `ep01/sc03`, `ep01/line07`, `char/mira`.
    pub label: String,
    pub kind: TaskKind,
    pub state: TaskState,
    /// The provider account that holds the task now; its hash tag holds every key of the task.
    pub account: String,
    /// Provider accounts to try, in order; `account` is `chain[chain_pos]`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "vec_or_empty_map"
    )]
    pub chain: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub chain_pos: u32,
    /// Fencing token: bumped at every claim; a transition carrying an older one is refused.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub fence: u64,
    /// Attempts started (submits). Rate-limited attempts give theirs back.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempt: u32,
    pub max_attempts: u32,
    /// Times the reaper took it back from a holder whose lease ran out.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub stalls: u32,
    /// Stream entry id while `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Worker id of the lease holder while claimed/submitting/downloading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Name of the account's pool key the current attempt uses (set at claim; absent for an
    /// account without a key pool). Submit, every poll, download and cancel of the render use
    /// it: a provider task id belongs to a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Provider's task id, saved right after a successful submit (never pay twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_task_id: Option<String>,
    /// Family-specific poll locator (JSON text): path, action, operation name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_locator: Option<String>,
    /// Result location(s) once the render succeeded (JSON text, family-specific).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub polls: u32,
    /// Failed downloads of the current, finished render (each one re-polls for a fresh URL).
    /// Bounded: past the limit the task is dead as `download_failed` instead of re-polling
    /// until the render deadline. Reset when the task is submitted again.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub fetch_failures: u32,
    /// While `moving`: the account the task is moving to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "vec_or_empty_map"
    )]
    pub deps: Vec<DepRef>,
    pub payload: TaskPayload,
    /// File extension of the stored output.
    pub ext: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Worker id of the process that recorded the output (`complete.lua`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureClass>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "vec_or_empty_map"
    )]
    pub errors: Vec<AttemptError>,
    /// Set when the reaper resubmitted a task that may already have reached the provider.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub possible_duplicate: bool,
    #[serde(default)]
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub updated_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_ms: Option<i64>,
}

/// Fields kept in the record's body: written once at enqueue, never read or changed by a
/// transition script. Everything else is in the header the scripts decode.
const BODY_FIELDS: [&str; 7] = ["group", "label", "kind", "chain", "deps", "payload", "ext"];

/// Largest header the frame's big-endian `u16` length can describe.
pub(crate) const MAX_HEADER_BYTES: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum RecordCodecError {
    #[error("record too short or header length out of range")]
    Framing,
    /// The header does not fit the frame's 2-byte length. Writing it anyway would store a record
    /// whose header length points into the middle of the header (or body).
    #[error("record header is {bytes} bytes; the record frame allows at most {MAX_HEADER_BYTES}")]
    HeaderTooLarge { bytes: usize },
    /// The record could not be turned into its field map (a serializer refused a value).
    #[error("record cannot be serialized into fields: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("record part cannot be encoded as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("record part is not MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("record fields do not form a task: {0}")]
    Fields(#[from] serde_json::Error),
}

impl TaskRecord {
    /// The Redis encoding: `[u16 header length][header][body]`, both MessagePack maps with
    /// field names (as `cmsgpack` reads them); see `scripts/prelude.lua`.
    ///
    /// Fails instead of writing anything doubtful: a header over 65,535 bytes is
    /// [`RecordCodecError::HeaderTooLarge`], and a serializer error is returned as such (never an
    /// empty or partial record).
    pub fn to_msgpack(&self) -> Result<Vec<u8>, RecordCodecError> {
        let all = match serde_json::to_value(self).map_err(RecordCodecError::Serialize)? {
            serde_json::Value::Object(all) => all,
            _ => {
                return Err(RecordCodecError::Serialize(serde::ser::Error::custom(
                    "a task record must serialize to a map",
                )))
            }
        };
        let (body, header): (serde_json::Map<_, _>, serde_json::Map<_, _>) = all
            .into_iter()
            .partition(|(k, _)| BODY_FIELDS.contains(&k.as_str()));
        let header = rmp_serde::to_vec_named(&header)?;
        let body = rmp_serde::to_vec_named(&body)?;
        let len = u16::try_from(header.len()).map_err(|_| RecordCodecError::HeaderTooLarge {
            bytes: header.len(),
        })?;
        let mut out = Vec::with_capacity(2 + header.len() + body.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn from_msgpack(bytes: &[u8]) -> Result<TaskRecord, RecordCodecError> {
        let (len, rest) = bytes.split_at_checked(2).ok_or(RecordCodecError::Framing)?;
        let hlen = u16::from_be_bytes([len[0], len[1]]) as usize;
        let (header, body) = rest
            .split_at_checked(hlen)
            .ok_or(RecordCodecError::Framing)?;
        let mut all: serde_json::Map<String, serde_json::Value> = rmp_serde::from_slice(header)?;
        if !body.is_empty() {
            let body: serde_json::Map<String, serde_json::Value> = rmp_serde::from_slice(body)?;
            all.extend(body);
        }
        Ok(serde_json::from_value(serde_json::Value::Object(all))?)
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Lua cannot tell an empty list from an empty map; accept either as an empty list.
fn vec_or_empty_map<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum VecOrMap<T> {
        Vec(Vec<T>),
        Map(serde_json::Map<String, serde_json::Value>),
    }
    match VecOrMap::<T>::deserialize(d)? {
        VecOrMap::Vec(v) => Ok(v),
        VecOrMap::Map(m) if m.is_empty() => Ok(Vec::new()),
        VecOrMap::Map(_) => Err(serde::de::Error::custom("expected a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for c in FailureClass::ALL {
            assert_eq!(FailureClass::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for k in TaskKind::ALL {
            assert_eq!(TaskKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn empty_map_reads_as_empty_list() {
        let p: TaskPayload =
            serde_json::from_str(r#"{"type":"assembly","scenes":{},"voice":["voc-1"]}"#).unwrap();
        assert_eq!(
            p,
            TaskPayload::Assembly {
                scenes: vec![],
                voice: vec!["voc-1".into()],
                master: None,
            }
        );
    }

    fn small_record() -> TaskRecord {
        TaskRecord {
            id: "img-1".into(),
            season: "s1".into(),
            group: "characters".into(),
            label: "char/mira".into(),
            kind: TaskKind::Image,
            state: TaskState::Ready,
            account: "acct".into(),
            chain: vec!["acct".into()],
            chain_pos: 0,
            fence: 0,
            attempt: 0,
            max_attempts: 3,
            stalls: 0,
            entry: None,
            holder: None,
            key: None,
            provider_task_id: None,
            poll_locator: None,
            result: None,
            polls: 0,
            fetch_failures: 0,
            moving_to: None,
            deps: vec![],
            payload: TaskPayload::Image {
                prompt: "Mira".into(),
                seed: 1,
                aspect_ratio: "9:16".into(),
                reference_image: None,
            },
            ext: "png".into(),
            output: None,
            sha256: None,
            bytes: None,
            done_by: None,
            failure: None,
            errors: vec![],
            possible_duplicate: false,
            created_ms: 1,
            updated_ms: 0,
            ready_ms: None,
            submitted_ms: None,
            done_ms: None,
        }
    }

    #[test]
    fn header_over_u16_is_refused_not_truncated() {
        // `season` lives in the header: past 65,535 bytes the frame cannot describe it.
        let mut r = small_record();
        r.season = "s".repeat(70_000);
        match r.to_msgpack() {
            Err(RecordCodecError::HeaderTooLarge { bytes }) => assert!(bytes > MAX_HEADER_BYTES),
            other => panic!("expected HeaderTooLarge, got {other:?}"),
        }

        // The body has no such limit.
        let mut r = small_record();
        r.label = "l".repeat(70_000);
        let bytes = r.to_msgpack().expect("a large body is fine");
        assert_eq!(TaskRecord::from_msgpack(&bytes).expect("decode"), r);
    }

    #[test]
    fn header_right_at_the_limit_round_trips() {
        // Grow the header one byte at a time around the limit: the largest that fits encodes
        // and decodes; one more is refused.
        let base = small_record().to_msgpack().expect("encode");
        let base_header = u16::from_be_bytes([base[0], base[1]]) as usize;
        let mut r = small_record();
        // str16/str32 headers change the size in steps; search the exact boundary.
        let mut pad = MAX_HEADER_BYTES - base_header - 8;
        loop {
            r.season = format!("s1{}", "x".repeat(pad));
            match r.to_msgpack() {
                Ok(bytes) => {
                    let hlen = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
                    assert_eq!(hlen, bytes.len() - 2 - (base.len() - 2 - base_header));
                    assert_eq!(TaskRecord::from_msgpack(&bytes).expect("decode"), r);
                    pad += 1;
                }
                Err(RecordCodecError::HeaderTooLarge { bytes }) => {
                    assert_eq!(bytes, MAX_HEADER_BYTES + 1);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn non_retryable_classes_never_retry() {
        assert_eq!(
            FailureClass::ContentPolicy.retry_policy(),
            RetryPolicy::Never
        );
        assert_eq!(
            FailureClass::RateLimited.retry_policy(),
            RetryPolicy::WaitWithoutAttempt
        );
        assert_eq!(FailureClass::Network.retry_policy(), RetryPolicy::Backoff);
    }
}

/// A task as the producer expands it from a script, before it exists in Redis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTask {
    /// Content-addressed id ([`crate::ids::task_id`]).
    pub id: String,
    pub season: String,
    /// Episode folder (`ep01`) or `characters`.
    pub group: String,
    /// `ep01/sc03`, `ep01/sc03/line02`, `char/mira`, `ep01/assembly`.
    pub label: String,
    /// Provider accounts to try in order; the first holds the task when it is enqueued.
    pub chain: Vec<String>,
    pub payload: TaskPayload,
    pub deps: Vec<DepRef>,
    /// Output file extension: png, mp4, wav.
    pub ext: String,
    /// Estimated price in USD from the configured prices of `chain[0]`.
    pub est_cost_usd: f64,
}

impl NewTask {
    pub fn kind(&self) -> TaskKind {
        self.payload.kind()
    }

    pub fn account(&self) -> &str {
        &self.chain[0]
    }
}
