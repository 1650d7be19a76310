//! The configuration file: Redis, storage, worker tuning and provider accounts.
//!
//! Read from a TOML file (`--config` or `DRAMAQ_CONFIG`), then `DRAMAQ_REDIS_URL` and
//! `DRAMAQ_OUT_DIR` override their fields. `figment` does the layering and names the file and key
//! of a bad value. API keys are never in the file: an account names the environment variables
//! that hold them, and [`Secret`] keeps them out of `Debug` output. S3 storage credentials work
//! the same way (`storage.s3.access_key_env` and friends).

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::model::TaskKind;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a `#[source]`: the message already holds figment's, and a reporter that prints the
    /// source chain (`anyhow`'s `{:#}`) would print it twice.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration {path}: {message}")]
    Invalid { path: String, message: String },
    /// `owner` is the table that names the variable: `accounts.NAME` or `storage.s3`.
    #[error("environment variable {var} (named by {owner}.{field}) is not set")]
    MissingSecret {
        owner: String,
        field: &'static str,
        var: String,
    },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> ConfigError {
        ConfigError::Load(e)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub assembly: AssemblyConfig,
    /// Provider accounts by name. The name is the Redis hash tag of all the account's keys.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    /// The accounts `dramaq generate` uses when its flags name none.
    #[serde(default)]
    pub generate: GenerateDefaults,
    /// `dramaq enqueue`: when to ask before writing.
    #[serde(default)]
    pub enqueue: EnqueueConfig,
}

/// `[generate]`: default chains of `dramaq generate`, per kind (empty: the first configured
/// account that produces the kind). Checked at load like every account reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateDefaults {
    /// openai-chat accounts that write the script, in fallback order.
    #[serde(default)]
    pub llm: Vec<String>,
    /// The chains the written script names.
    #[serde(default)]
    pub image: Vec<String>,
    #[serde(default)]
    pub video: Vec<String>,
    #[serde(default)]
    pub voice: Vec<String>,
}

impl GenerateDefaults {
    /// The default chain for `kind`.
    pub fn chain(&self, kind: TaskKind) -> &[String] {
        match kind {
            TaskKind::Script => &self.llm,
            TaskKind::Image => &self.image,
            TaskKind::Video => &self.video,
            TaskKind::Voice => &self.voice,
            TaskKind::Assembly => &[],
        }
    }
}

/// How careful `dramaq enqueue` is with money.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueConfig {
    /// Ask before enqueueing a plan estimated above this many USD (`--yes` answers for scripts;
    /// without a terminal and without `--yes`, enqueue refuses). None: only the season budget
    /// makes it ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_above_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`. Overridden by `DRAMAQ_REDIS_URL`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// Start even when Redis may evict keys (`maxmemory-policy` other than `noeviction`).
    /// Eviction silently loses tasks and leases; only for throwaway setups.
    #[serde(default)]
    pub allow_eviction: bool,
    /// Connections in the shared pool of each process.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Make the `submitting` record durable before each paid HTTP submit (docs/durability.md):
    /// `none` (the default: as durable as the server's `appendfsync`), `fsync` (`WAITAOF 1 0`,
    /// Redis 7.2 or newer: the local AOF is fsynced) or `replica` (`WAIT 1`: one replica has
    /// it). A submit whose record is not confirmed in time is not sent; the task is retried.
    #[serde(default)]
    pub durable_submit: DurableSubmit,
    /// How long `WAITAOF`/`WAIT` may take before the submit is given up (ms).
    #[serde(default = "default_durable_timeout_ms")]
    pub durable_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: default_redis_url(),
            allow_eviction: false,
            pool_size: default_pool_size(),
            durable_submit: DurableSubmit::default(),
            durable_timeout_ms: default_durable_timeout_ms(),
        }
    }
}

fn default_durable_timeout_ms() -> u64 {
    1_000
}

/// How durable the `submitting` record must be before a paid submit is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurableSubmit {
    /// No extra wait: what the server's `appendfsync` gives (`everysec`: up to a second of
    /// writes can be lost with the host; a worker that then finds its record regressed adopts or
    /// flags its render).
    #[default]
    None,
    /// `WAITAOF 1 0 <timeout>`: the server's AOF is fsynced (Redis 7.2+, `appendonly yes`).
    Fsync,
    /// `WAIT 1 <timeout>`: at least one replica acknowledged (Cluster or replicated setups).
    Replica,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where outputs go: `dir` (a local or mounted directory, the default) or `s3` (an S3 or
    /// S3-compatible bucket, configured in `[storage.s3]`).
    #[serde(default)]
    pub backend: StorageBackend,
    /// Root of stored outputs for the `dir` backend: `<dir>/<season>/<episode>/<task>.<ext>`.
    /// Overridden by `DRAMAQ_OUT_DIR`. Unused by the `s3` backend.
    #[serde(default = "default_out_dir")]
    pub dir: PathBuf,
    /// Largest result accepted from a provider; a larger download fails as `invalid_request`
    /// (dead at once: retrying fetches the same oversized result). At least 1.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// The bucket for `backend = "s3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::default(),
            dir: default_out_dir(),
            max_bytes: default_max_bytes(),
            s3: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Dir,
    S3,
}

/// An S3 (or S3-compatible: MinIO, R2, Ceph, moto) bucket. Holds only the *names* of the
/// environment variables with the credentials, so deriving `Debug` cannot leak them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Defaults to empty only so that a missing bucket is reported by validation with the field
    /// named, like an empty one.
    #[serde(default)]
    pub bucket: String,
    /// Key prefix inside the bucket (`studio-a/` stores `studio-a/<season>/<episode>/…`).
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Base URL of an S3-compatible server; AWS itself when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Required for an `http://` endpoint, so plain-text traffic is never an accident.
    #[serde(default)]
    pub allow_http: bool,
    /// `https://<bucket>.<endpoint>` instead of `https://<endpoint>/<bucket>`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    #[serde(default = "default_s3_access_key_env")]
    pub access_key_env: String,
    #[serde(default = "default_s3_secret_key_env")]
    pub secret_key_env: String,
    /// Read when set (temporary credentials); never required.
    #[serde(default = "default_s3_session_token_env")]
    pub session_token_env: String,
}

/// S3 credentials read from the environment variables that [`S3Config`] names.
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl S3Config {
    /// The credentials, read from the environment now.
    pub fn credentials(&self) -> Result<S3Credentials, ConfigError> {
        let required = |field: &'static str, var: &str| {
            read_secret("storage.s3", field, Some(var)).map(|s| s.expect("a named variable"))
        };
        Ok(S3Credentials {
            access_key_id: required("access_key_env", &self.access_key_env)?,
            secret_access_key: required("secret_key_env", &self.secret_key_env)?,
            session_token: std::env::var(&self.session_token_env)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret),
        })
    }

    /// The key prefix without surrounding slashes (`""` for none).
    pub fn prefix_trimmed(&self) -> &str {
        self.prefix.trim_matches('/')
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Tasks one worker process holds at once (claimed, submitting, downloading, assembling).
    /// Awaited renders hold no slot.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long a claim stays valid without a heartbeat. Only an expired lease means stalled.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often a worker renews the leases it holds (well under `lease_ms`).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a poller owns a due render before another poller may take it.
    #[serde(default = "default_poll_lease_ms")]
    pub poll_lease_ms: u64,
    /// Renders polled concurrently by one process, per account. Polls wait on the provider's
    /// latency, not on CPU: 10,000 renders on a 5-20 s cadence need ~600 polls a second, which
    /// 64 permits sustain only at ~100 ms per request (`scripts/bench-await.sh`).
    #[serde(default = "default_poll_concurrency")]
    pub poll_concurrency: usize,
    /// Attempts before a retryable failure goes to the dead-letter set.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, full jitter, capped by `retry_max_ms`.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Times a task may be taken back from a dead holder before it is dead as `stalled`.
    #[serde(default = "default_max_stalls")]
    pub max_stalls: u32,
    /// Grace period after SIGTERM for in-flight submits and downloads.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Days a dead task stays in the dead-letter set before the reaper purges it; 0 keeps dead
    /// tasks until an operator purges them (the default: nothing is dropped silently, and there
    /// is no size cap).
    #[serde(default)]
    pub dead_retention_days: u64,
    /// `ffmpeg` binary for episode assembly (`assembly.ffmpeg = false` writes a manifest).
    #[serde(default = "default_ffmpeg")]
    pub ffmpeg: String,
    /// Serve the render callback receiver (`POST /hooks/<account>/<task>`) on this address,
    /// e.g. `0.0.0.0:9467`. Accounts opt in with `callback_url`. None: no receiver, polls only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_addr: Option<String>,
    /// `ffprobe` binary: every downloaded video and audio file is probed before it is stored.
    #[serde(default = "default_ffprobe")]
    pub ffprobe: String,
}

/// Episode masters and the check of downloaded media (docs/media.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssemblyConfig {
    /// Build a master with ffmpeg (the default). `false` writes a JSON manifest of the clips
    /// instead, on purpose; with `true`, a worker serving the assembly account refuses to start
    /// without ffmpeg, and an ffmpeg failure fails the task.
    #[serde(default = "default_true")]
    pub ffmpeg: bool,
    /// Probe every downloaded video and audio file (ffprobe) before it is stored; a broken file
    /// is a `bad_output` failure. Turn off only where ffprobe cannot be installed.
    #[serde(default = "default_true")]
    pub probe: bool,
    /// Frame rate of every master.
    #[serde(default = "default_master_fps")]
    pub fps: u32,
    /// Integrated loudness target of the mix (LUFS).
    #[serde(default = "default_loudness")]
    pub loudness_lufs: f64,
}

impl Default for AssemblyConfig {
    fn default() -> Self {
        AssemblyConfig {
            ffmpeg: true,
            probe: true,
            fps: default_master_fps(),
            loudness_lufs: default_loudness(),
        }
    }
}

fn default_master_fps() -> u32 {
    24
}

fn default_loudness() -> f64 {
    -14.0
}

fn default_ffprobe() -> String {
    "ffprobe".into()
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: default_concurrency(),
            lease_ms: default_lease_ms(),
            heartbeat_ms: default_heartbeat_ms(),
            poll_lease_ms: default_poll_lease_ms(),
            poll_concurrency: default_poll_concurrency(),
            max_attempts: default_max_attempts(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_ms: default_retry_max_ms(),
            max_stalls: default_max_stalls(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            dead_retention_days: 0,
            ffmpeg: default_ffmpeg(),
            webhook_addr: None,
            ffprobe: default_ffprobe(),
        }
    }
}

/// The protocol a provider account speaks. One adapter per family in the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// `POST /v1/videos` (Sora shape and relays that copy it).
    OpenaiVideos,
    /// Kling official (JWT) or a relay passthrough (`jwt = false`).
    Kling,
    /// `POST /v1/images/generations`, synchronous.
    OpenaiImages,
    /// `POST /v1/audio/speech`, synchronous.
    OpenaiSpeech,
    /// Runway `/v1/image_to_video`, `/v1/text_to_video`, `GET /v1/tasks/{id}` (and relays).
    Runway,
    /// Gemini Veo long-running operations (`predictLongRunning`).
    Veo,
    /// MiniMax Hailuo `/v1/video_generation` (errors inside HTTP 200).
    Minimax,
    /// fal.ai queue (`queue.fal.run`; status and result URLs from submit).
    Fal,
    /// Replicate predictions.
    Replicate,
    /// Local episode assembly (ffmpeg or manifest); no HTTP.
    Assembly,
    /// OpenAI-compatible `POST /chat/completions` (DeepSeek, GPT, Gemini's compatibility
    /// endpoint, relays): writes season scripts for `dramaq generate`, synchronous.
    OpenaiChat,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::OpenaiVideos => "openai-videos",
            Family::Kling => "kling",
            Family::OpenaiImages => "openai-images",
            Family::OpenaiSpeech => "openai-speech",
            Family::Runway => "runway",
            Family::Veo => "veo",
            Family::Minimax => "minimax",
            Family::Fal => "fal",
            Family::Replicate => "replicate",
            Family::Assembly => "assembly",
            Family::OpenaiChat => "openai-chat",
        }
    }

    /// The task kinds the family can produce.
    pub fn kinds(self) -> &'static [TaskKind] {
        match self {
            Family::OpenaiVideos
            | Family::Kling
            | Family::Runway
            | Family::Veo
            | Family::Minimax
            | Family::Fal
            | Family::Replicate => &[TaskKind::Video],
            Family::OpenaiImages => &[TaskKind::Image],
            Family::OpenaiSpeech => &[TaskKind::Voice],
            Family::Assembly => &[TaskKind::Assembly],
            Family::OpenaiChat => &[TaskKind::Script],
        }
    }

    /// Clip lengths (seconds) the family renders, per docs/providers.md.
    pub fn default_durations(self) -> &'static [u32] {
        match self {
            Family::OpenaiVideos => &[4, 8, 12, 16, 20],
            Family::Kling => &[5, 10],
            Family::Runway => &[5, 10],
            Family::Veo => &[4, 6, 8],
            Family::Minimax => &[6, 10],
            Family::Fal | Family::Replicate => &[5, 10],
            _ => &[],
        }
    }

    /// The voices the family speaks with, when it has a fixed set (OpenAI speech, per
    /// docs/providers.md); `None` for families without voices.
    pub fn voices(self) -> Option<&'static [&'static str]> {
        match self {
            Family::OpenaiSpeech => Some(&[
                "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                "shimmer", "verse", "marin", "cedar",
            ]),
            _ => None,
        }
    }

    /// True when the family submits and then renders asynchronously (needs the await schedule).
    pub fn is_async(self) -> bool {
        self.kinds() == [TaskKind::Video]
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub family: Family,
    /// Base URL up to (not including) the family's `/v1/...` paths.
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub model: String,
    /// Environment variable holding the API key (Kling: the access key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Kling: environment variable holding the secret key that signs the JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    /// Kling relays take the relay key as a bearer token instead of a JWT.
    #[serde(default = "default_true")]
    pub jwt: bool,
    /// OpenAI-style videos: send multipart (the SDK's way) or JSON.
    #[serde(default = "default_true")]
    pub multipart: bool,
    /// Voice for speech tasks when the character names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// The model renders its own sound (dialogue, ambience: Sora 2, Veo 3): the master keeps the
    /// clip's audio under the voice lines instead of dropping it.
    #[serde(default)]
    pub native_audio: bool,
    /// Clip lengths this account renders; defaults to the family's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durations: Option<Vec<u32>>,
    /// Prices for `plan` and spend metrics.
    #[serde(default)]
    pub price: Price,
    /// Give up on a render after this long and fail it as `timeout`.
    #[serde(default = "default_render_deadline_ms")]
    pub render_deadline_ms: u64,
    /// First poll after submit; then polls back off to `poll_max_ms` (with jitter).
    #[serde(default = "default_poll_first_ms")]
    pub poll_first_ms: u64,
    #[serde(default = "default_poll_max_ms")]
    pub poll_max_ms: u64,
    /// Once the account's render times are learned, how many poll ages are spread over their
    /// distribution (quantiles 1/n … and the 99th percentile). More points find a finished
    /// render sooner (the slot is free sooner) for more status requests: about (n + 1) / 2 per
    /// render. Default 5; 1..=64.
    #[serde(default = "default_poll_points")]
    pub poll_points: u32,
    /// Give up on a render still queued at the provider after this long: cancel it where the
    /// family can and fall back to the next account of the task's chain (seed advice: a render
    /// queued over 10 minutes is better tried on another model). None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_ms: Option<u64>,
    /// Per-request HTTP timeout.
    #[serde(default = "default_http_timeout_ms")]
    pub http_timeout_ms: u64,
    /// The account's limits, enforced across every worker process and host. With a key pool
    /// (`keys`), each key's own `quota` applies instead; `poll_per_sec` stays per account.
    #[serde(default)]
    pub quota: Quota,
    /// openai-chat: the answer's token limit (`max_tokens`); the family's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// openai-chat: how JSON answers are asked for (`object`: JSON mode, which every
    /// compatible API has; `schema`: structured outputs, which DeepSeek refuses).
    #[serde(default)]
    pub json_mode: JsonMode,
    /// Public URL of this account's callback receiver, up to and including `/hooks/<account>`
    /// (the task id is appended). Families that call back (Kling, MiniMax, fal, Replicate) are
    /// given it at submit when the worker serves `worker.webhook_addr`; a callback only moves
    /// the render's next poll to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Environment variable holding the secret that signs this account's callbacks (Replicate
    /// and Standard Webhooks: `whsec_<base64>`). Set: unsigned or badly signed callbacks are
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_env: Option<String>,
    /// fal: where the public keys that sign its callbacks (ED25519) are published, as a JSON Web
    /// Key Set. Default: fal's own, `https://rest.alpha.fal.ai/.well-known/jwks.json`. The
    /// receiver fetches it when it first needs it, keeps it a day, and fetches it again (at most
    /// once a minute) when no key it holds verifies a callback, since fal rotates its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_jwks_url: Option<String>,
    /// A pool of API keys (`[[accounts.NAME.keys]]`), each with its own variables and quota.
    /// Empty: the account's `api_key_env`/`secret_key_env` and `quota` are its one key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyConfig>,
}

/// How an openai-chat account asks for JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonMode {
    /// `response_format: {"type": "json_object"}`.
    #[default]
    Object,
    /// `response_format: {"type": "json_schema", ...}` (OpenAI, Gemini compatibility).
    Schema,
}

/// One API key of an account's pool. Its name is what logs, metrics, `queue status` and task
/// records show; the value only ever comes from the environment variable named here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    /// This key's limits (rate, burst, render slots, daily cap), enforced fleet-wide.
    #[serde(default)]
    pub quota: Quota,
}

/// One key of an account as the claim sees it: `name` is empty for an account without a key
/// pool (its keys in Redis keep their original names).
#[derive(Debug, Clone, Copy)]
pub struct PoolKey<'a> {
    pub name: &'a str,
    pub api_key_env: Option<&'a str>,
    pub secret_key_env: Option<&'a str>,
    pub quota: &'a Quota,
}

/// A provider account's limits (docs/invariants.md, "Quotas hold across the fleet"). Zero means "no limit".
///
/// `submit_per_sec` and `burst` drive a GCRA limiter kept in Redis (clock from `TIME`), checked in
/// the same script that claims a task, so a task never holds a worker while it waits for
/// capacity; a process-local `governor` limiter in front of it keeps one process from flooding
/// Redis with claim attempts. `max_concurrent` is a leased semaphore in Redis: a render holds its
/// slot from claim until it finishes, and a crashed holder's slot returns when its lease
/// (`render_deadline_ms` + 1 min) ends. `daily_cap` counts submits per UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Submits (creates) per second across the fleet; fractions allowed (0.5 = one per 2 s).
    #[serde(default)]
    pub submit_per_sec: f64,
    /// Submits allowed back to back before the rate applies (at least 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Polls per second this process sends (providers that count polls); 0 = unlimited.
    #[serde(default)]
    pub poll_per_sec: f64,
    /// Renders in flight (claimed until finished) across the fleet.
    #[serde(default)]
    pub max_concurrent: u32,
    /// Submits per UTC day across the fleet.
    #[serde(default)]
    pub daily_cap: u64,
    /// Enforce `submit_per_sec` across the fleet in Redis (default). `false` leaves only each
    /// process's own limiter — N processes then send up to N× the rate; kept for comparison
    /// (`scripts/bench-quota.sh --no-fleet`).
    #[serde(default = "default_true")]
    pub fleet_wide: bool,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            submit_per_sec: 0.0,
            burst: default_burst(),
            poll_per_sec: 0.0,
            max_concurrent: 0,
            daily_cap: 0,
            fleet_wide: true,
        }
    }
}

impl Quota {
    /// Poll-rate GCRA `(interval µs, tolerance µs)`; `None` when polls are unlimited. Polls
    /// allow a burst as large as the submit burst.
    pub fn poll_gcra_us(&self) -> Option<(u64, u64)> {
        if self.poll_per_sec > 0.0 {
            let interval = (1_000_000.0 / self.poll_per_sec).round().max(1.0) as u64;
            Some((
                interval,
                interval.saturating_mul(u64::from(self.burst.max(1)) - 1),
            ))
        } else {
            None
        }
    }

    /// GCRA emission interval in microseconds (0 = unlimited).
    pub fn emission_interval_us(&self) -> u64 {
        if self.submit_per_sec > 0.0 {
            (1_000_000.0 / self.submit_per_sec).round().max(1.0) as u64
        } else {
            0
        }
    }
}

fn default_burst() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per second of rendered video.
    #[serde(default)]
    pub per_second: f64,
    /// USD per request (images).
    #[serde(default)]
    pub per_request: f64,
    /// USD per 1,000 characters (speech).
    #[serde(default)]
    pub per_1k_chars: f64,
    /// USD per million input (prompt) tokens (chat).
    #[serde(default)]
    pub per_m_input: f64,
    /// USD per million output (completion) tokens (chat).
    #[serde(default)]
    pub per_m_output: f64,
    /// USD per million input tokens served from the provider's prompt cache (DeepSeek's
    /// `prompt_cache_hit_tokens`); `per_m_input` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_m_cache_hit: Option<f64>,
}

impl Price {
    /// What one chat answer cost (USD): input tokens not served from cache at the input price,
    /// cached ones at the cache-hit price, output tokens at the output price.
    pub fn chat_usd(&self, input: u64, cached_input: u64, output: u64) -> f64 {
        let cached = cached_input.min(input);
        let hit = self.per_m_cache_hit.unwrap_or(self.per_m_input);
        ((input - cached) as f64 * self.per_m_input
            + cached as f64 * hit
            + output as f64 * self.per_m_output)
            / 1_000_000.0
    }
}

/// Default answer token limit of an openai-chat account (DeepSeek's maximum for deepseek-chat).
pub const DEFAULT_CHAT_MAX_TOKENS: u32 = 8192;

/// Most repair requests a chat task makes after its first answer.
pub const CHAT_MAX_REPAIRS: usize = 3;

/// Input tokens a chat request may carry besides the brief and earlier answers (system prompt,
/// instructions, the JSON schema): a generous bound for the reservation.
const CHAT_PROMPT_OVERHEAD_TOKENS: u64 = 4_096;

impl AccountConfig {
    /// What one task costs on this account, from the configured prices (USD).
    pub fn price_usd(&self, payload: &crate::model::TaskPayload) -> f64 {
        use crate::model::TaskPayload;
        match payload {
            TaskPayload::Video { duration_s, .. } => self.price.per_second * f64::from(*duration_s),
            TaskPayload::Image { .. } => self.price.per_request,
            TaskPayload::Voice { text, .. } => {
                self.price.per_1k_chars * text.chars().count() as f64 / 1000.0
            }
            TaskPayload::Assembly { .. } => 0.0,
            // Chat calls are counted as they are paid (tokens × prices), not per task: a task
            // may make several (repairs). See [`AccountConfig::chat_estimate_usd`].
            TaskPayload::Script { .. } => 0.0,
        }
    }

    /// What admission reserves against the season's budget when a task is claimed: the most
    /// the attempt can cost. For every family but chat that is the configured price (a
    /// render is billed for what was asked); for a chat task it is every call the attempt may
    /// make ([`CHAT_MAX_REPAIRS`] + 1), each with a full answer and a prompt as long as the
    /// brief, an outline and every earlier answer can make it (a token is at least one byte).
    pub fn reservation_usd(&self, payload: &crate::model::TaskPayload) -> f64 {
        use crate::model::TaskPayload;
        match payload {
            TaskPayload::Script { brief, .. } => {
                let calls = CHAT_MAX_REPAIRS as u64 + 1;
                let answer = u64::from(self.chat_max_tokens());
                let prompt =
                    brief.len() as u64 + CHAT_PROMPT_OVERHEAD_TOKENS + (calls + 1) * answer;
                let per_call = self.price.per_m_input * prompt as f64
                    + self.price.per_m_output * answer as f64;
                calls as f64 * per_call / 1_000_000.0
            }
            _ => self.price_usd(payload),
        }
    }

    /// An upper bound for one chat call: a full answer at the token limit, the prompt not
    /// counted.
    pub fn chat_estimate_usd(&self) -> f64 {
        self.price.per_m_output * f64::from(self.chat_max_tokens()) / 1_000_000.0
    }

    /// The answer token limit of an openai-chat account.
    pub fn chat_max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(DEFAULT_CHAT_MAX_TOKENS)
    }

    /// The account's keys: the pool, or the account's own variables and quota as one unnamed key.
    pub fn pool(&self) -> Vec<PoolKey<'_>> {
        if self.keys.is_empty() {
            return vec![PoolKey {
                name: "",
                api_key_env: self.api_key_env.as_deref(),
                secret_key_env: self.secret_key_env.as_deref(),
                quota: &self.quota,
            }];
        }
        self.keys
            .iter()
            .map(|k| PoolKey {
                name: &k.name,
                api_key_env: k.api_key_env.as_deref(),
                secret_key_env: k.secret_key_env.as_deref(),
                quota: &k.quota,
            })
            .collect()
    }

    /// The API key (and Kling secret key) of pool key `key` ("" for an account without a
    /// pool), read from the environment now.
    pub fn key_secrets(
        &self,
        account: &str,
        key: &str,
    ) -> Result<(Option<Secret>, Option<Secret>), ConfigError> {
        if key.is_empty() {
            return Ok((self.api_key(account)?, self.secret_key(account)?));
        }
        let owner = format!("accounts.{account}.keys.{key}");
        let k = self.keys.iter().find(|k| k.name == key);
        Ok((
            read_secret(
                &owner,
                "api_key_env",
                k.and_then(|k| k.api_key_env.as_deref()),
            )?,
            read_secret(
                &owner,
                "secret_key_env",
                k.and_then(|k| k.secret_key_env.as_deref()),
            )?,
        ))
    }

    pub fn durations(&self) -> Vec<u32> {
        self.durations
            .clone()
            .unwrap_or_else(|| self.family.default_durations().to_vec())
    }

    /// The API key, read from the environment now.
    pub fn api_key(&self, account: &str) -> Result<Option<Secret>, ConfigError> {
        read_secret(
            &format!("accounts.{account}"),
            "api_key_env",
            self.api_key_env.as_deref(),
        )
    }

    pub fn webhook_secret(&self, account: &str) -> Result<Option<Secret>, ConfigError> {
        read_secret(
            &format!("accounts.{account}"),
            "webhook_secret_env",
            self.webhook_secret_env.as_deref(),
        )
    }

    pub fn secret_key(&self, account: &str) -> Result<Option<Secret>, ConfigError> {
        read_secret(
            &format!("accounts.{account}"),
            "secret_key_env",
            self.secret_key_env.as_deref(),
        )
    }
}

fn read_secret(
    owner: &str,
    field: &'static str,
    var: Option<&str>,
) -> Result<Option<Secret>, ConfigError> {
    match var {
        None => Ok(None),
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(ConfigError::MissingSecret {
                owner: owner.to_string(),
                field,
                var: var.to_string(),
            }),
        },
    }
}

/// A credential. `Debug` and `Display` print `[redacted]`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Name of the built-in account that assembles episodes when the config defines none.
pub const ASSEMBLY_ACCOUNT: &str = "assembly";

impl Config {
    /// Load `path` (or only defaults and environment when `None`), then apply env overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::empty()));
        if let Some(path) = path {
            let invalid = |message: &str| ConfigError::Invalid {
                path: shown_path(path),
                message: message.into(),
            };
            if path.is_dir() {
                return Err(invalid(
                    "is a directory, not a configuration file (give the path of a .toml file)",
                ));
            }
            if !path.exists() {
                return Err(invalid("file not found"));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig
            .merge(
                Env::raw()
                    .only(&["DRAMAQ_REDIS_URL"])
                    .map(|_| "redis.url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["DRAMAQ_OUT_DIR"])
                    .map(|_| "storage.dir".into()),
            );
        let mut cfg: Config = fig.extract().map_err(Box::new)?;
        cfg.accounts
            .entry(ASSEMBLY_ACCOUNT.to_string())
            .or_insert_with(AccountConfig::assembly);
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Parse TOML text (tests, embedded samples).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let fig = Figment::from(Serialized::defaults(Config::empty())).merge(Toml::string(text));
        let mut cfg: Config = fig.extract().map_err(Box::new)?;
        cfg.accounts
            .entry(ASSEMBLY_ACCOUNT.to_string())
            .or_insert_with(AccountConfig::assembly);
        cfg.validate(None)?;
        Ok(cfg)
    }

    fn empty() -> Config {
        Config {
            redis: RedisConfig::default(),
            storage: StorageConfig::default(),
            worker: WorkerConfig::default(),
            assembly: AssemblyConfig::default(),
            accounts: BTreeMap::new(),
            generate: GenerateDefaults::default(),
            enqueue: EnqueueConfig::default(),
        }
    }

    fn validate(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let file = path.map(shown_path).unwrap_or_else(|| "<config>".into());
        let bad = |key: String, message: String| ConfigError::Invalid {
            path: format!("{file}: {key}"),
            message,
        };
        // A file that names no provider account is empty or meant for something else; the
        // built-in assembly account alone can render nothing.
        if path.is_some()
            && !self
                .accounts
                .iter()
                .any(|(name, a)| name != ASSEMBLY_ACCOUNT || a.family != Family::Assembly)
        {
            return Err(ConfigError::Invalid {
                path: file.clone(),
                message: "defines no accounts: add at least one [accounts.NAME] table with its \
                          family and base_url (see examples/dramaq.toml)"
                    .into(),
            });
        }
        if !(1..=120).contains(&self.assembly.fps) {
            return Err(bad("assembly.fps".into(), "must be from 1 to 120".into()));
        }
        let lufs = self.assembly.loudness_lufs;
        if !lufs.is_finite() || !(-70.0..=-5.0).contains(&lufs) {
            return Err(bad(
                "assembly.loudness_lufs".into(),
                "must be a loudness from -70 to -5 LUFS (platforms ask for -14)".into(),
            ));
        }
        for (name, acct) in &self.accounts {
            if !crate::ids::is_safe_component(name) {
                return Err(bad(
                    format!("accounts.{}", crate::text::shown_default(name)),
                    "account names may use only letters, digits, '_' and '-' (at most 64)".into(),
                ));
            }
            self.validate_account(name, acct, &bad)?;
            validate_quota(&format!("accounts.{name}.quota"), &acct.quota, &bad)?;
            self.validate_keys(name, acct, &bad)?;
            if acct.family == Family::Kling
                && acct.jwt
                && acct.keys.is_empty()
                && acct.secret_key_env.is_none()
            {
                return Err(bad(
                    format!("accounts.{name}.secret_key_env"),
                    "Kling with jwt = true needs the secret key's environment variable".into(),
                ));
            }
        }
        for kind in [
            TaskKind::Script,
            TaskKind::Image,
            TaskKind::Video,
            TaskKind::Voice,
        ] {
            let field = if kind == TaskKind::Script {
                "llm"
            } else {
                kind.as_str()
            };
            for name in self.generate.chain(kind) {
                match self.accounts.get(name) {
                    Some(a) if a.family.kinds().contains(&kind) => {}
                    Some(a) => {
                        return Err(bad(
                            format!("generate.{field}"),
                            format!(
                                "account {} is {} and cannot produce {kind} tasks",
                                crate::text::shown_default(name),
                                a.family
                            ),
                        ))
                    }
                    None => {
                        return Err(bad(
                            format!("generate.{field}"),
                            format!("no account {}", crate::text::shown_default(name)),
                        ))
                    }
                }
            }
        }
        self.validate_storage(&bad)?;
        let w = &self.worker;
        if w.concurrency == 0 {
            return Err(bad(
                "worker.concurrency".into(),
                "must be at least 1".into(),
            ));
        }
        if w.heartbeat_ms == 0 || w.heartbeat_ms * 2 > w.lease_ms {
            return Err(bad(
                "worker.heartbeat_ms".into(),
                format!(
                    "must be at least 1 and at most half of worker.lease_ms ({})",
                    w.lease_ms
                ),
            ));
        }
        if w.max_attempts == 0 {
            return Err(bad(
                "worker.max_attempts".into(),
                "must be at least 1".into(),
            ));
        }
        if let Some(usd) = self.enqueue.confirm_above_usd {
            if !usd.is_finite() || usd < 0.0 {
                return Err(bad(
                    "enqueue.confirm_above_usd".into(),
                    format!("{usd} must be a finite number ≥ 0 (USD)"),
                ));
            }
        }
        Ok(())
    }

    /// An account's key pool: names safe and unique, each quota valid, Kling keys signable.
    fn validate_keys(
        &self,
        name: &str,
        acct: &AccountConfig,
        bad: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in acct.keys.iter().enumerate() {
            let at = format!("accounts.{name}.keys[{i}]");
            if !crate::ids::is_safe_component(&k.name) {
                return Err(bad(
                    format!("{at}.name"),
                    format!(
                        "\"{}\": key names may use only letters, digits, '_' and '-' (1 to 64)",
                        crate::text::shown_default(&k.name)
                    ),
                ));
            }
            if !seen.insert(k.name.as_str()) {
                return Err(bad(
                    format!("{at}.name"),
                    format!("\"{}\" names two keys of the account", k.name),
                ));
            }
            validate_quota(&format!("{at}.quota"), &k.quota, bad)?;
            if acct.family == Family::Kling && acct.jwt && k.secret_key_env.is_none() {
                return Err(bad(
                    format!("{at}.secret_key_env"),
                    "Kling with jwt = true needs the secret key's environment variable".into(),
                ));
            }
        }
        Ok(())
    }

    /// One account's values: URL, prices, durations, deadlines, poll cadence, timeout, voice.
    /// `name` is known to be a safe id here.
    fn validate_account(
        &self,
        name: &str,
        acct: &AccountConfig,
        bad: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("accounts.{name}.{field}");
        if acct.family != Family::Assembly {
            if acct.base_url.is_empty() {
                return Err(bad(
                    key("base_url"),
                    "is required for HTTP provider families".into(),
                ));
            }
            if let Err(why) = check_http_url(&acct.base_url) {
                return Err(bad(
                    key("base_url"),
                    format!("\"{}\" {why}", crate::text::shown(&acct.base_url, 200)),
                ));
            }
        }
        for (field, url) in [
            ("callback_url", &acct.callback_url),
            ("webhook_jwks_url", &acct.webhook_jwks_url),
        ] {
            if let Some(url) = url {
                if let Err(why) = check_http_url(url) {
                    return Err(bad(
                        key(field),
                        format!("\"{}\" {why}", crate::text::shown(url, 200)),
                    ));
                }
            }
        }
        if acct
            .callback_url
            .as_deref()
            .is_some_and(|u| u.contains(['?', '#']))
        {
            return Err(bad(
                key("callback_url"),
                "must not have a query or fragment: the task id is appended as a path segment"
                    .into(),
            ));
        }
        // Settings another family's callbacks would silently ignore.
        if acct.family == Family::Fal && acct.webhook_secret_env.is_some() {
            return Err(bad(
                key("webhook_secret_env"),
                "fal signs callbacks with ED25519 under its published keys, not a shared secret; \
                 use webhook_jwks_url to name another key set"
                    .into(),
            ));
        }
        if acct.family != Family::Fal && acct.webhook_jwks_url.is_some() {
            return Err(bad(
                key("webhook_jwks_url"),
                "only fal callbacks are checked against a key set".into(),
            ));
        }
        for (field, price) in [
            ("per_second", acct.price.per_second),
            ("per_request", acct.price.per_request),
            ("per_1k_chars", acct.price.per_1k_chars),
            ("per_m_input", acct.price.per_m_input),
            ("per_m_output", acct.price.per_m_output),
            ("per_m_cache_hit", acct.price.per_m_cache_hit.unwrap_or(0.0)),
        ] {
            if !price.is_finite() || price < 0.0 {
                return Err(bad(
                    key(&format!("price.{field}")),
                    format!("{price} is not a price: must be a finite number ≥ 0 (USD)"),
                ));
            }
        }
        if let Some(durations) = &acct.durations {
            if durations.is_empty() {
                return Err(bad(
                    key("durations"),
                    "is empty: list the clip lengths in seconds the account renders, or remove \
                     the field to use the family's"
                        .into(),
                ));
            }
            if durations.contains(&0) {
                return Err(bad(
                    key("durations"),
                    "a clip length of 0 s cannot be rendered; lengths are at least 1".into(),
                ));
            }
        }
        for (field, value) in [
            ("render_deadline_ms", acct.render_deadline_ms),
            ("poll_first_ms", acct.poll_first_ms),
            ("poll_max_ms", acct.poll_max_ms),
            ("http_timeout_ms", acct.http_timeout_ms),
        ] {
            if value == 0 {
                return Err(bad(
                    key(field),
                    "must be at least 1 (milliseconds); 0 would fail or spin at once".into(),
                ));
            }
        }
        if !(1..=64).contains(&acct.poll_points) {
            return Err(bad(
                key("poll_points"),
                format!(
                    "{} poll points: give 1 to 64 (each adds about half a status request per render)",
                    acct.poll_points
                ),
            ));
        }
        if acct.family == Family::OpenaiChat && acct.model.trim().is_empty() {
            return Err(bad(
                key("model"),
                "is required for openai-chat accounts (e.g. deepseek-chat, gpt-4.1)".into(),
            ));
        }
        if acct.max_tokens == Some(0) {
            return Err(bad(
                key("max_tokens"),
                "must be at least 1: an answer of 0 tokens is always cut off".into(),
            ));
        }
        if acct.max_queued_ms == Some(0) {
            return Err(bad(
                key("max_queued_ms"),
                "must be at least 1 (milliseconds); remove it for no limit".into(),
            ));
        }
        if let Some(voice) = &acct.voice {
            match acct.family.voices() {
                None => {
                    return Err(bad(
                        key("voice"),
                        format!(
                            "a {} account has no voices; voice is for openai-speech accounts",
                            acct.family
                        ),
                    ))
                }
                Some(known) if !known.contains(&voice.as_str()) => {
                    return Err(bad(
                        key("voice"),
                        format!(
                            "unknown voice \"{}\" (known to {}: {})",
                            crate::text::shown_default(voice),
                            acct.family,
                            known.join(", ")
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn validate_storage(
        &self,
        bad: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let st = &self.storage;
        if st.max_bytes == 0 {
            return Err(bad(
                "storage.max_bytes".into(),
                "must be at least 1 (bytes): 0 would refuse every result".into(),
            ));
        }
        let s3 = match (st.backend, &st.s3) {
            (StorageBackend::Dir, None) => return Ok(()),
            (StorageBackend::Dir, Some(_)) => {
                // Writing locally while a bucket is configured is almost certainly a forgotten
                // `backend = "s3"`; better to refuse than to fill the worker's disk.
                return Err(bad(
                    "storage.backend".into(),
                    "is \"dir\" (the default) but a [storage.s3] table is set: add \
                     backend = \"s3\" to [storage], or remove [storage.s3]"
                        .into(),
                ));
            }
            (StorageBackend::S3, None) => {
                return Err(bad(
                    "storage.s3".into(),
                    "backend = \"s3\" needs a [storage.s3] table (at least bucket = \"...\")"
                        .into(),
                ))
            }
            (StorageBackend::S3, Some(s3)) => s3,
        };
        if s3.bucket.trim().is_empty() {
            return Err(bad("storage.s3.bucket".into(), "must not be empty".into()));
        }
        if s3.bucket.contains('/') || s3.bucket.chars().any(char::is_whitespace) {
            return Err(bad(
                "storage.s3.bucket".into(),
                format!(
                    "{:?} is not a bucket name (no '/' or spaces; put key prefixes in \
                     storage.s3.prefix)",
                    s3.bucket
                ),
            ));
        }
        let prefix = s3.prefix_trimmed();
        if !prefix.is_empty()
            && prefix.split('/').any(|seg| {
                seg.is_empty() || seg == "." || seg == ".." || seg.chars().any(char::is_control)
            })
        {
            return Err(bad(
                "storage.s3.prefix".into(),
                format!(
                    "{:?}: segments between '/' must be non-empty and not '.' or '..'",
                    s3.prefix
                ),
            ));
        }
        if s3.region.trim().is_empty() {
            return Err(bad(
                "storage.s3.region".into(),
                "must not be empty (S3-compatible servers usually accept \"us-east-1\")".into(),
            ));
        }
        if let Some(endpoint) = &s3.endpoint {
            if endpoint.starts_with("http://") {
                if !s3.allow_http {
                    return Err(bad(
                        "storage.s3.endpoint".into(),
                        format!(
                            "{endpoint:?} is plain http: set storage.s3.allow_http = true to \
                             allow unencrypted traffic (local S3-compatible servers only)"
                        ),
                    ));
                }
            } else if !endpoint.starts_with("https://") {
                return Err(bad(
                    "storage.s3.endpoint".into(),
                    format!("{endpoint:?} must start with https:// (or http://)"),
                ));
            }
        }
        for (field, var) in [
            ("access_key_env", &s3.access_key_env),
            ("secret_key_env", &s3.secret_key_env),
            ("session_token_env", &s3.session_token_env),
        ] {
            if var.trim().is_empty() {
                return Err(bad(
                    format!("storage.s3.{field}"),
                    "must name an environment variable".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.get(name)
    }
}

/// A quota's numbers: rates finite and ≥ 0, burst at least 1. `at` is the table's path.
fn validate_quota(
    at: &str,
    q: &Quota,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if !q.submit_per_sec.is_finite() || q.submit_per_sec < 0.0 {
        return Err(bad(
            format!("{at}.submit_per_sec"),
            "must be a number ≥ 0 (0 = unlimited)".into(),
        ));
    }
    if !q.poll_per_sec.is_finite() || q.poll_per_sec < 0.0 {
        return Err(bad(
            format!("{at}.poll_per_sec"),
            "must be a number ≥ 0 (0 = unlimited)".into(),
        ));
    }
    if q.burst == 0 {
        return Err(bad(format!("{at}.burst"), "must be at least 1".into()));
    }
    Ok(())
}

/// The path as shown in messages: control characters escaped, cut at 200 characters.
fn shown_path(path: &Path) -> String {
    crate::text::shown(&path.display().to_string(), 200)
}

/// `Ok` for an `http://` or `https://` URL with a host; else why not.
fn check_http_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}

impl AccountConfig {
    fn assembly() -> AccountConfig {
        AccountConfig {
            family: Family::Assembly,
            base_url: String::new(),
            model: String::new(),
            api_key_env: None,
            secret_key_env: None,
            jwt: false,
            multipart: false,
            voice: None,
            native_audio: false,
            durations: None,
            price: Price::default(),
            render_deadline_ms: default_render_deadline_ms(),
            poll_first_ms: default_poll_first_ms(),
            poll_max_ms: default_poll_max_ms(),
            poll_points: default_poll_points(),
            http_timeout_ms: default_http_timeout_ms(),
            max_queued_ms: None,
            quota: Quota::default(),
            max_tokens: None,
            json_mode: JsonMode::default(),
            callback_url: None,
            webhook_secret_env: None,
            webhook_jwks_url: None,
            keys: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_pool_size() -> usize {
    16
}
fn default_out_dir() -> PathBuf {
    PathBuf::from("out")
}
fn default_max_bytes() -> u64 {
    512 * 1024 * 1024
}
fn default_s3_region() -> String {
    "us-east-1".into()
}
fn default_s3_access_key_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_s3_secret_key_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}
fn default_s3_session_token_env() -> String {
    "AWS_SESSION_TOKEN".into()
}
fn default_concurrency() -> usize {
    16
}
fn default_lease_ms() -> u64 {
    15_000
}
fn default_heartbeat_ms() -> u64 {
    5_000
}
fn default_poll_lease_ms() -> u64 {
    30_000
}
fn default_poll_concurrency() -> usize {
    256
}
fn default_max_attempts() -> u32 {
    8
}
fn default_retry_base_ms() -> u64 {
    5_000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_max_stalls() -> u32 {
    3
}
fn default_shutdown_grace_ms() -> u64 {
    20_000
}
fn default_ffmpeg() -> String {
    "ffmpeg".into()
}
fn default_render_deadline_ms() -> u64 {
    20 * 60_000
}
fn default_poll_points() -> u32 {
    5
}

fn default_poll_first_ms() -> u64 {
    5_000
}
fn default_poll_max_ms() -> u64 {
    20_000
}
fn default_http_timeout_ms() -> u64 {
    60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn a_chat_reservation_covers_every_call_an_attempt_may_make() {
        let cfg = Config::from_toml_str(
            r#"
            [accounts.llm]
            family = "openai-chat"
            base_url = "http://127.0.0.1:1/v1"
            model = "deepseek-chat"
            api_key_env = "X"
            max_tokens = 1000
            price = { per_m_input = 1.0, per_m_output = 2.0 }
            [accounts.vid]
            family = "openai-videos"
            base_url = "http://127.0.0.1:1/openai"
            model = "sora-2"
            api_key_env = "X"
            price = { per_second = 0.1 }
            "#,
        )
        .unwrap();
        let brief = "x".repeat(2_000);
        let script = crate::model::TaskPayload::Script {
            step: "outline".into(),
            episode: 0,
            brief,
        };
        let llm = &cfg.accounts["llm"];
        // 4 calls × (prompt ≤ 2,000 + 4,096 + 5 × 1,000 tokens at $1/M + 1,000 at $2/M).
        let want = 4.0 * (11_096.0 * 1.0 + 1_000.0 * 2.0) / 1e6;
        assert!((llm.reservation_usd(&script) - want).abs() < 1e-12);
        assert_eq!(
            llm.price_usd(&script),
            0.0,
            "no call paid: nothing to settle"
        );
        let clip = crate::model::TaskPayload::Video {
            prompt: "p".into(),
            negative_prompt: None,
            duration_s: 8,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: None,
            seed: None,
        };
        let vid = &cfg.accounts["vid"];
        assert!((vid.reservation_usd(&clip) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn parses_accounts_and_adds_assembly() {
        let cfg = Config::from_toml_str(
            r#"
            [accounts.vid]
            family = "openai-videos"
            base_url = "http://127.0.0.1:1/openai"
            model = "sora-2"
            api_key_env = "X"
            price = { per_second = 0.1 }
            "#,
        )
        .unwrap();
        assert_eq!(cfg.accounts["vid"].family, Family::OpenaiVideos);
        assert_eq!(cfg.accounts["vid"].durations(), vec![4, 8, 12, 16, 20]);
        assert_eq!(cfg.accounts[ASSEMBLY_ACCOUNT].family, Family::Assembly);
        // No quota table: unlimited, and a valid burst.
        assert_eq!(cfg.accounts["vid"].quota, Quota::default());
        assert_eq!(cfg.accounts["vid"].quota.burst, 1);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Config::from_toml_str("[worker]\nconcurency = 3\n").unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
    }

    #[test]
    fn kling_jwt_needs_secret() {
        let err = Config::from_toml_str(
            "[accounts.k]\nfamily = \"kling\"\nbase_url = \"http://x\"\napi_key_env = \"A\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("secret_key_env"), "{err}");
    }

    #[test]
    fn key_pools_are_read_and_checked_key_by_key() {
        let base = "[accounts.v]\nfamily = \"openai-videos\"\nbase_url = \"http://x\"\n";
        let key = |name: &str, quota: &str| {
            format!("[[accounts.v.keys]]\nname = \"{name}\"\napi_key_env = \"K_{name}\"\nquota = {{ {quota} }}\n")
        };
        let cfg = Config::from_toml_str(&format!(
            "{base}{}{}",
            key("a", "submit_per_sec = 2, max_concurrent = 3"),
            key("b", "daily_cap = 10")
        ))
        .unwrap();
        let pool = cfg.accounts["v"].pool();
        let names: Vec<&str> = pool.iter().map(|k| k.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(pool[0].quota.max_concurrent, 3);
        assert_eq!(pool[1].api_key_env, Some("K_b"));
        // Without keys the account is its own single, unnamed key.
        let single = Config::from_toml_str(&format!("{base}api_key_env = \"K\"\n")).unwrap();
        let pool = single.accounts["v"].pool();
        assert_eq!(
            (pool.len(), pool[0].name, pool[0].api_key_env),
            (1, "", Some("K"))
        );
        for (bad, field) in [
            (key("a", "") + &key("a", ""), "accounts.v.keys[1].name"),
            (key("bad name", ""), "accounts.v.keys[0].name"),
            (key("a", "burst = 0"), "accounts.v.keys[0].quota.burst"),
            (
                key("a", "submit_per_sec = -1"),
                "accounts.v.keys[0].quota.submit_per_sec",
            ),
        ] {
            let err = Config::from_toml_str(&format!("{base}{bad}")).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn storage_dir_only_configs_keep_working() {
        let cfg =
            Config::from_toml_str("[storage]\ndir = \"/srv/out\"\nmax_bytes = 1000\n").unwrap();
        assert_eq!(cfg.storage.backend, StorageBackend::Dir);
        assert_eq!(cfg.storage.dir, PathBuf::from("/srv/out"));
        assert_eq!(cfg.storage.max_bytes, 1000);
        assert!(cfg.storage.s3.is_none());
        let cfg = Config::from_toml_str("").unwrap();
        assert_eq!(cfg.storage.backend, StorageBackend::Dir);
    }

    #[test]
    fn storage_s3_parses_with_defaults() {
        let cfg = Config::from_toml_str(
            r#"
            [storage]
            backend = "s3"
            max_bytes = 1000
            [storage.s3]
            bucket = "dramaq-renders"
            prefix = "studio-a/"
            endpoint = "http://127.0.0.1:9000"
            allow_http = true
            "#,
        )
        .unwrap();
        assert_eq!(cfg.storage.backend, StorageBackend::S3);
        let s3 = cfg.storage.s3.unwrap();
        assert_eq!(s3.bucket, "dramaq-renders");
        assert_eq!(s3.prefix_trimmed(), "studio-a");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(s3.access_key_env, "AWS_ACCESS_KEY_ID");
        assert_eq!(s3.secret_key_env, "AWS_SECRET_ACCESS_KEY");
        assert_eq!(s3.session_token_env, "AWS_SESSION_TOKEN");
        assert!(!s3.virtual_hosted_style);
    }

    fn storage_err(toml: &str) -> String {
        Config::from_toml_str(toml).unwrap_err().to_string()
    }

    #[test]
    fn storage_s3_errors_name_the_field() {
        let err = storage_err("[storage]\nbackend = \"s3\"\n");
        assert!(
            err.contains("storage.s3:") && err.contains("[storage.s3]"),
            "{err}"
        );

        let err =
            storage_err("[storage]\nbackend = \"s3\"\n[storage.s3]\nregion = \"eu-west-1\"\n");
        assert!(
            err.contains("storage.s3.bucket: must not be empty"),
            "{err}"
        );
        let err = storage_err("[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \" \"\n");
        assert!(
            err.contains("storage.s3.bucket: must not be empty"),
            "{err}"
        );
        let err = storage_err("[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"a/b\"\n");
        assert!(err.contains("storage.s3.bucket"), "{err}");

        let err = storage_err(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9000\"\n",
        );
        assert!(
            err.contains("storage.s3.endpoint") && err.contains("storage.s3.allow_http = true"),
            "{err}"
        );
        let err = storage_err(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nendpoint = \"127.0.0.1:9000\"\n",
        );
        assert!(err.contains("storage.s3.endpoint"), "{err}");

        let err = storage_err(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nprefix = \"a//b\"\n",
        );
        assert!(err.contains("storage.s3.prefix"), "{err}");
        let err = storage_err(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nprefix = \"../up\"\n",
        );
        assert!(err.contains("storage.s3.prefix"), "{err}");
        let err = storage_err(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nregion = \"\"\n",
        );
        assert!(err.contains("storage.s3.region"), "{err}");
        let err = storage_err(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\naccess_key_env = \"\"\n",
        );
        assert!(err.contains("storage.s3.access_key_env"), "{err}");

        // A bucket configured but not selected is refused rather than silently ignored.
        let err = storage_err("[storage.s3]\nbucket = \"b\"\n");
        assert!(err.contains("storage.backend"), "{err}");
        // Unknown fields stay errors, with the field named.
        let err =
            storage_err("[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nbukket = 1\n");
        assert!(err.contains("bukket"), "{err}");
        let err = storage_err("[storage]\nbackend = \"gcs\"\n");
        assert!(err.contains("gcs"), "{err}");
    }

    /// An account every rejection case below breaks in one way.
    const GOOD_ACCOUNT: &str = "[accounts.vid]\nfamily = \"openai-videos\"\nbase_url = \"https://api.example.com/v1relay\"\n";
    const GOOD_TTS: &str =
        "[accounts.tts]\nfamily = \"openai-speech\"\nbase_url = \"http://127.0.0.1:8787/openai\"\n";

    #[test]
    fn values_that_cannot_work_are_rejected_with_the_key_and_why() {
        // (extra TOML, key named, part of why)
        let cases: &[(&str, &str, &str)] = &[
            (
                "price = { per_second = -0.1 }",
                "accounts.vid.price.per_second",
                "≥ 0",
            ),
            (
                "price = { per_request = nan }",
                "accounts.vid.price.per_request",
                "finite",
            ),
            (
                "price = { per_1k_chars = inf }",
                "accounts.vid.price.per_1k_chars",
                "finite",
            ),
            (
                "price = { per_second = -inf }",
                "accounts.vid.price.per_second",
                "finite",
            ),
            ("durations = []", "accounts.vid.durations", "is empty"),
            ("durations = [0, 5]", "accounts.vid.durations", "0 s"),
            (
                "render_deadline_ms = 0",
                "accounts.vid.render_deadline_ms",
                "at least 1",
            ),
            (
                "poll_first_ms = 0",
                "accounts.vid.poll_first_ms",
                "at least 1",
            ),
            ("poll_max_ms = 0", "accounts.vid.poll_max_ms", "at least 1"),
            ("poll_points = 0", "accounts.vid.poll_points", "1 to 64"),
            ("poll_points = 65", "accounts.vid.poll_points", "1 to 64"),
            (
                "http_timeout_ms = 0",
                "accounts.vid.http_timeout_ms",
                "at least 1",
            ),
            (
                "max_queued_ms = 0",
                "accounts.vid.max_queued_ms",
                "at least 1",
            ),
            ("voice = \"nova\"", "accounts.vid.voice", "openai-speech"),
        ];
        for (extra, key, why) in cases {
            let toml = format!("{GOOD_ACCOUNT}{extra}\n");
            let err = Config::from_toml_str(&toml)
                .err()
                .unwrap_or_else(|| panic!("accepted: {extra}"))
                .to_string();
            assert!(err.contains(&format!("{key}:")), "{extra}: {err}");
            assert!(err.contains(why), "{extra}: {err}");
        }

        let base_urls: &[(&str, &str)] = &[
            ("ftp://example.com/x", "must start with http:// or https://"),
            ("example.com/v1", "must start with http:// or https://"),
            ("http://", "has no host"),
            ("https:///v1", "has no host"),
            ("http://user@:80/x", "has no host"),
            ("http://exa mple.com", "spaces"),
            ("http://\u{1b}[31m", "control"),
        ];
        for (url, why) in base_urls {
            let toml = format!(
                "[accounts.vid]\nfamily = \"kling\"\njwt = false\nbase_url = {}\n",
                serde_json::to_string(url).unwrap()
            );
            let err = Config::from_toml_str(&toml)
                .err()
                .unwrap_or_else(|| panic!("accepted {url:?}"))
                .to_string();
            assert!(err.contains("accounts.vid.base_url:"), "{url}: {err}");
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains('\u{1b}'), "{err:?}");
            // The callback URL and fal's key set are checked the same way.
            for field in ["callback_url", "webhook_jwks_url"] {
                let toml = format!(
                    "[accounts.vid]\nfamily = \"fal\"\nbase_url = \"https://queue.fal.run\"\n{field} = {}\n",
                    serde_json::to_string(url).unwrap()
                );
                let err = Config::from_toml_str(&toml)
                    .err()
                    .unwrap_or_else(|| panic!("accepted {field} = {url:?}"))
                    .to_string();
                assert!(
                    err.contains(&format!("accounts.vid.{field}:")),
                    "{url}: {err}"
                );
                assert!(err.contains(why), "{url}: {err}");
            }
        }
        let fal = "[accounts.vid]\nfamily = \"fal\"\nbase_url = \"https://queue.fal.run\"\n";
        let kling = "[accounts.vid]\nfamily = \"kling\"\njwt = false\nbase_url = \"http://x\"\n";
        for (toml, field, why) in [
            (
                format!("{fal}callback_url = \"https://h.example/hooks/vid?x=1\"\n"),
                "callback_url",
                "query or fragment",
            ),
            (
                format!("{fal}webhook_secret_env = \"S\"\n"),
                "webhook_secret_env",
                "ED25519",
            ),
            (
                format!("{kling}webhook_jwks_url = \"https://k.example/jwks.json\"\n"),
                "webhook_jwks_url",
                "only fal",
            ),
        ] {
            let err = Config::from_toml_str(&toml)
                .err()
                .unwrap_or_else(|| panic!("accepted {toml}"))
                .to_string();
            assert!(err.contains(&format!("accounts.vid.{field}:")), "{err}");
            assert!(err.contains(why), "{err}");
        }
        Config::from_toml_str(&format!(
            "{fal}callback_url = \"https://h.example/hooks/vid\"\nwebhook_jwks_url = \"https://k.example/jwks.json\"\n"
        ))
        .expect("a fal account with its callback URL and key set");
        for url in [
            "http://127.0.0.1:8787/openai",
            "https://api.klingai.com",
            "http://[::1]:9/x",
        ] {
            let toml =
                format!("[accounts.vid]\nfamily = \"kling\"\njwt = false\nbase_url = \"{url}\"\n");
            Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{url}: {e}"));
        }

        let err = Config::from_toml_str(&format!("{GOOD_ACCOUNT}[storage]\nmax_bytes = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.max_bytes:"), "{err}");

        // Voices: the family's set, checked where the family has one.
        let err = Config::from_toml_str(&format!("{GOOD_TTS}voice = \"novva\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("accounts.tts.voice:") && err.contains("novva") && err.contains("alloy"),
            "{err}"
        );
        let cfg = Config::from_toml_str(&format!("{GOOD_TTS}voice = \"nova\"\n")).unwrap();
        assert_eq!(cfg.accounts["tts"].voice.as_deref(), Some("nova"));
    }

    #[test]
    fn file_level_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        // A directory given as the file.
        let err = Config::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        // Empty, or without accounts.
        for text in ["", "# nothing yet\n", "[worker]\nconcurrency = 4\n"] {
            let path = dir.path().join("empty.toml");
            std::fs::write(&path, text).unwrap();
            let err = Config::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains("defines no accounts"), "{text:?}: {err}");
            assert!(err.contains("empty.toml"), "{err}");
        }
        // A syntax error: its message once, with the file and position.
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, "[accounts.vid\nfamily = 1\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err();
        let shown = anyhow_like(&err);
        assert!(shown.contains("broken.toml"), "{shown}");
        let first_line = err.to_string();
        assert_eq!(shown, first_line, "the source repeats the message");
        // The sample configuration stays valid.
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/dramaq.toml");
        Config::load(Some(Path::new(sample))).unwrap();
    }

    /// The message followed by every source's, as `anyhow`'s `{:#}` prints a chain.
    fn anyhow_like(e: &ConfigError) -> String {
        let mut out = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }

    #[test]
    fn storage_s3_credentials_come_from_named_variables_and_stay_redacted() {
        // Variable names unique to this test, so parallel tests cannot race on them.
        let s3 = S3Config {
            bucket: "b".into(),
            prefix: String::new(),
            region: default_s3_region(),
            endpoint: None,
            allow_http: false,
            virtual_hosted_style: false,
            access_key_env: "DRAMAQ_CFGTEST_S3_AK".into(),
            secret_key_env: "DRAMAQ_CFGTEST_S3_SK".into(),
            session_token_env: "DRAMAQ_CFGTEST_S3_TOKEN".into(),
        };
        let err = s3.credentials().unwrap_err().to_string();
        assert_eq!(
            err,
            "environment variable DRAMAQ_CFGTEST_S3_AK (named by storage.s3.access_key_env) is not set"
        );
        std::env::set_var("DRAMAQ_CFGTEST_S3_AK", "AKIDEXAMPLE");
        let err = s3.credentials().unwrap_err().to_string();
        assert!(err.contains("storage.s3.secret_key_env"), "{err}");
        std::env::set_var("DRAMAQ_CFGTEST_S3_SK", "wJalrXUtnFEMI-secret");
        let creds = s3.credentials().unwrap();
        assert_eq!(creds.access_key_id.expose(), "AKIDEXAMPLE");
        assert_eq!(creds.secret_access_key.expose(), "wJalrXUtnFEMI-secret");
        assert!(creds.session_token.is_none());
        let shown = format!("{creds:?} {s3:?}");
        assert!(!shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI-secret"), "{shown}");
    }

    #[test]
    fn generate_defaults_must_name_accounts_of_the_kind() {
        let base =
            "[accounts.llm]\nfamily = \"openai-chat\"\nbase_url = \"http://x\"\nmodel = \"m\"\n\
                    [accounts.vid]\nfamily = \"kling\"\nbase_url = \"http://x\"\njwt = false\n";
        let ok = Config::from_toml_str(&format!(
            "{base}[generate]\nllm = [\"llm\"]\nvideo = [\"vid\"]\n"
        ))
        .unwrap();
        assert_eq!(ok.generate.chain(TaskKind::Script), ["llm".to_string()]);
        for (table, want) in [
            ("llm = [\"vid\"]", "generate.llm"),
            ("video = [\"nope\"]", "generate.video"),
        ] {
            let err = Config::from_toml_str(&format!("{base}[generate]\n{table}\n")).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let err = Config::from_toml_str(&base.replace("model = \"m\"", "")).unwrap_err();
        assert!(err.to_string().contains("accounts.llm.model"), "{err}");
    }

    #[test]
    fn assembly_settings_are_checked_at_load() {
        let base = "[accounts.a]\nfamily = \"kling\"\njwt = false\nbase_url = \"http://x\"\n";
        let cfg = Config::from_toml_str(base).unwrap();
        assert!(cfg.assembly.ffmpeg && cfg.assembly.probe);
        assert_eq!((cfg.assembly.fps, cfg.assembly.loudness_lufs), (24, -14.0));
        for (extra, key) in [
            ("[assembly]\nfps = 0", "assembly.fps"),
            ("[assembly]\nloudness_lufs = 3.0", "assembly.loudness_lufs"),
        ] {
            let err = Config::from_toml_str(&format!("{base}{extra}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
