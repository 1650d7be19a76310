//! The sandbox's memory: options, jobs with their render clocks, per-key limits, and the counters
//! `/admin/stats` reports (submissions per idempotency key, peak concurrency, submit times).

use crate::limits::RateLimits;
use crate::media;
use crate::scenario::Scenario;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the sandbox behaves; see the binary's flags.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub render_ms: u64,
    pub render_jitter_ms: u64,
    pub failure_rate: f64,
    pub rate_per_sec: Option<f64>,
    pub burst: u32,
    pub max_concurrent: Option<u32>,
    pub url_ttl_ms: Option<u64>,
    pub kling_access_key: String,
    pub kling_secret_key: String,
    /// Accepted bearer keys; empty accepts any non-empty key.
    pub api_keys: Vec<String>,
    pub seed: u64,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            render_ms: 2_000,
            render_jitter_ms: 0,
            failure_rate: 0.0,
            rate_per_sec: None,
            burst: 1,
            max_concurrent: None,
            url_ttl_ms: None,
            kling_access_key: "sandbox-ak".into(),
            kling_secret_key: "sandbox-sk".into(),
            api_keys: Vec::new(),
            seed: 0,
        }
    }
}

/// Which API created a job (its poll path and shapes follow from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    OpenaiVideo,
    Kling { action: String },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub api: Api,
    pub key: String,
    pub model: String,
    pub prompt: String,
    pub seconds: u32,
    pub size: String,
    pub external_id: Option<String>,
    pub created: Instant,
    pub created_unix_ms: i64,
    /// `None`: never finishes.
    pub render: Option<Duration>,
    pub scenario: Scenario,
    /// Decided at creation from the failure rate.
    pub random_failure: bool,
    pub polls: u32,
}

/// Where a job is, from its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Running(u8),
    Succeeded,
    Failed,
}

impl Job {
    pub fn phase(&self, now: Instant) -> Phase {
        let elapsed = now.saturating_duration_since(self.created);
        let Some(render) = self.render else {
            return if elapsed.as_millis() < 200 {
                Phase::Queued
            } else {
                Phase::Running(50)
            };
        };
        if elapsed >= render {
            return match self.scenario {
                Scenario::ModerationOutput | Scenario::Fail => Phase::Failed,
                _ if self.random_failure => Phase::Failed,
                _ => Phase::Succeeded,
            };
        }
        if elapsed < render / 5 {
            Phase::Queued
        } else {
            Phase::Running(((elapsed.as_secs_f64() / render.as_secs_f64()) * 100.0) as u8)
        }
    }

    pub fn finished_at(&self) -> Option<Instant> {
        self.render.map(|r| self.created + r)
    }

    /// True once the result's URL has expired (TTL after completion, or the scenario says so).
    pub fn url_expired(&self, ttl_ms: Option<u64>, now: Instant) -> bool {
        if self.scenario == Scenario::UrlExpired {
            return true;
        }
        match (ttl_ms, self.finished_at()) {
            (Some(ttl), Some(done)) => now > done + Duration::from_millis(ttl),
            _ => false,
        }
    }

    pub fn video_bytes(&self) -> Vec<u8> {
        let (w, h) = self
            .size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .unwrap_or((720, 1280));
        media::mp4_video(&media::VideoSpec {
            width: w,
            height: h,
            seconds: self.seconds.clamp(1, 20),
            tag: &self.id,
        })
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub submissions_total: u64,
    pub by_task: BTreeMap<String, u64>,
    pub max_concurrent_seen: u64,
    pub rate_limited_total: u64,
    pub requests_total: u64,
    /// Milliseconds since the sandbox started, one per accepted submission (rate checks).
    pub submit_times_ms: Vec<u64>,
}

pub struct Shared {
    pub opts: SandboxOptions,
    pub started: Instant,
    pub jobs: Mutex<HashMap<String, Job>>,
    /// Kling `external_task_id` → job id.
    pub external: Mutex<HashMap<String, String>>,
    pub stats: Mutex<Stats>,
    pub limits: Mutex<RateLimits>,
    /// Submits seen per idempotency key (for `server_error`: fail the first one only).
    pub first_submit: Mutex<HashMap<String, u32>>,
    pub next_id: Mutex<u64>,
    /// Generated images served by URL (dall-e style `response_format: url`).
    pub files: Mutex<HashMap<String, Vec<u8>>>,
}

impl Shared {
    pub fn new(opts: SandboxOptions) -> Shared {
        Shared {
            opts,
            started: Instant::now(),
            jobs: Mutex::default(),
            external: Mutex::default(),
            stats: Mutex::default(),
            limits: Mutex::default(),
            first_submit: Mutex::default(),
            next_id: Mutex::new(0),
            files: Mutex::default(),
        }
    }

    pub fn new_id(&self, prefix: &str) -> String {
        let mut n = lock(&self.next_id);
        *n += 1;
        let h = media::mix(self.opts.seed, &[prefix.as_bytes(), &n.to_le_bytes()]);
        format!("{prefix}{:016x}", h)
    }

    pub fn render_time(&self, scenario: Scenario, id: &str) -> Option<Duration> {
        let jitter = if self.opts.render_jitter_ms > 0 {
            media::mix(self.opts.seed, &[id.as_bytes(), b"jitter"])
                % (self.opts.render_jitter_ms + 1)
        } else {
            0
        };
        let base = self.opts.render_ms + jitter;
        match scenario {
            Scenario::Never => None,
            Scenario::Slow => Some(Duration::from_millis(base * 5)),
            _ => Some(Duration::from_millis(base)),
        }
    }

    pub fn random_failure(&self, id: &str) -> bool {
        self.opts.failure_rate > 0.0
            && media::unit_f64(media::mix(self.opts.seed, &[id.as_bytes(), b"fail"]))
                < self.opts.failure_rate
    }

    /// Unfinished renders of `key` (or of every key when `None`).
    pub fn in_flight(&self, key: Option<&str>, now: Instant) -> u64 {
        lock(&self.jobs)
            .values()
            .filter(|j| key.is_none_or(|k| j.key == k))
            .filter(|j| matches!(j.phase(now), Phase::Queued | Phase::Running(_)))
            .count() as u64
    }

    /// Per-key rate limit for a create request: `Err(wait_ms)` when over.
    pub fn check_rate(&self, key: &str) -> Result<(), u64> {
        let Some(rate) = self.opts.rate_per_sec else {
            return Ok(());
        };
        let r = lock(&self.limits).take(key, rate, self.opts.burst, Instant::now());
        if r.is_err() {
            lock(&self.stats).rate_limited_total += 1;
        }
        r
    }

    /// True when `key` may start another render.
    pub fn check_concurrency(&self, key: &str) -> bool {
        match self.opts.max_concurrent {
            Some(max) => {
                let ok = self.in_flight(Some(key), Instant::now()) < u64::from(max);
                if !ok {
                    lock(&self.stats).rate_limited_total += 1;
                }
                ok
            }
            None => true,
        }
    }

    /// Count an accepted submission (a paid one) under its idempotency key.
    pub fn count_submission(&self, idempotency: &str) {
        let now = Instant::now();
        let mut s = lock(&self.stats);
        s.submissions_total += 1;
        *s.by_task.entry(idempotency.to_string()).or_default() += 1;
        s.submit_times_ms
            .push(now.duration_since(self.started).as_millis() as u64);
    }

    pub fn insert_job(&self, job: Job) {
        let now = Instant::now();
        lock(&self.jobs).insert(job.id.clone(), job);
        let running = self.in_flight(None, now);
        let mut s = lock(&self.stats);
        s.max_concurrent_seen = s.max_concurrent_seen.max(running);
    }

    pub fn count_request(&self) {
        lock(&self.stats).requests_total += 1;
    }

    /// `server_error` scenario: true for the first submit of an idempotency key.
    pub fn first_attempt(&self, idempotency: &str) -> bool {
        let mut m = lock(&self.first_submit);
        let n = m.entry(idempotency.to_string()).or_default();
        *n += 1;
        *n == 1
    }
}

/// Poisoning cannot leave these maps half-updated (single inserts), so a poisoned lock is usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
