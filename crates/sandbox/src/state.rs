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
    /// Extra time before a video create answers (a slow provider; holds callers mid-submit).
    pub submit_delay_ms: u64,
    /// Callbacks (Replicate `webhook`): signing and faults.
    pub webhooks: crate::webhook::WebhookOptions,
    /// Limits of particular keys (`--key-limit`), in place of the global ones for that key:
    /// a studio's keys each come with their own rate and concurrency.
    pub key_limits: HashMap<String, KeyLimit>,
    /// Keys whose balance is exhausted (`--out-of-credits-key`): every create with one is
    /// refused the way the family says "out of credits".
    pub broke_keys: Vec<String>,
}

/// One key's own limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyLimit {
    pub rate_per_sec: Option<f64>,
    pub burst: u32,
    pub max_concurrent: Option<u32>,
}

impl KeyLimit {
    /// `RATE:BURST:CONCURRENT` (`-` or empty for unlimited), e.g. `2:1:3`.
    pub fn parse(text: &str) -> Result<KeyLimit, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [rate, burst, conc] = parts[..] else {
            return Err(format!("{text:?}: expected RATE:BURST:CONCURRENT"));
        };
        let unlimited = |p: &str| p.is_empty() || p == "-";
        let rate = if unlimited(rate) {
            None
        } else {
            match rate.parse::<f64>() {
                Ok(r) if r > 0.0 && r.is_finite() => Some(r),
                _ => return Err(format!("{rate:?} is not a positive rate")),
            }
        };
        let burst = if unlimited(burst) {
            1
        } else {
            burst
                .parse::<u32>()
                .map_err(|_| format!("{burst:?} is not a burst"))?
                .max(1)
        };
        let max_concurrent = if unlimited(conc) {
            None
        } else {
            Some(
                conc.parse::<u32>()
                    .map_err(|_| format!("{conc:?} is not a concurrency"))?,
            )
        };
        Ok(KeyLimit {
            rate_per_sec: rate,
            burst,
            max_concurrent,
        })
    }
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
            submit_delay_ms: 0,
            webhooks: Default::default(),
            key_limits: HashMap::new(),
            broke_keys: Vec::new(),
        }
    }
}

/// Which API created a job (its poll path and shapes follow from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    OpenaiVideo,
    Kling {
        action: String,
    },
    /// Runway `image_to_video` / `text_to_video`; `relay` for the CometAPI passthrough.
    Runway {
        action: String,
        relay: bool,
    },
    Veo,
    Minimax,
    /// fal queue; `app` is `owner/name`, the model id without its subpath.
    Fal {
        app: String,
    },
    Replicate,
}

/// Per-job state of the families that need more than [`Job`] holds (kept beside the job so
/// the shared `Job` shape stays as the OpenAI and Kling routes build it).
#[derive(Debug, Default, Clone)]
pub struct JobExtra {
    /// Cancelled (Runway DELETE, fal PUT cancel, Replicate cancel) at this Unix time (ms).
    pub cancelled_ms: Option<i64>,
    /// Runway: a DELETE of a finished task removes it; later GETs answer 404.
    pub deleted: bool,
    /// Result URLs handed out so far (Runway signs a fresh one on every task GET).
    pub urls_issued: u32,
    /// Replicate `Cancel-After`: past this instant an unfinished prediction is stopped.
    pub deadline: Option<Instant>,
    /// The request's input as sent (Replicate echoes it; fal validates it at the result GET).
    pub input: Option<serde_json::Value>,
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
    /// A status request has reported the render finished (counted once in [`Stats`]).
    pub seen_finished: bool,
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

    /// [`Job::phase`] for families that moderate the input after accepting the job (Runway,
    /// Veo, fal, Replicate): a `moderation_input` job fails as soon as it leaves the queue.
    pub fn phase_after_input_check(&self, now: Instant) -> Phase {
        match self.phase(now) {
            Phase::Queued => Phase::Queued,
            _ if self.scenario == Scenario::ModerationInput => Phase::Failed,
            p => p,
        }
    }

    /// When the job leaves the queue (starts rendering).
    pub fn started_at(&self) -> Instant {
        match self.render {
            Some(r) => self.created + r / 5,
            None => self.created + Duration::from_millis(200),
        }
    }

    /// When the job stops holding a render slot: a `moderation_input` job that fails when it
    /// leaves the queue ([`Job::phase_after_input_check`]) ends then, any other at its finish.
    pub fn ends_at(&self) -> Option<Instant> {
        if self.scenario == Scenario::ModerationInput {
            Some(self.started_at())
        } else {
            self.finished_at()
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

    /// `redirect_loop`: the result download at `uri` answers `302` to itself (path and query
    /// kept), so a client following redirects never arrives. `None` for any other scenario.
    pub fn redirect_loop(&self, uri: &axum::http::Uri) -> Option<axum::response::Response> {
        use axum::response::IntoResponse;
        if self.scenario != Scenario::RedirectLoop {
            return None;
        }
        let here = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        let location = axum::http::HeaderValue::from_str(here).ok()?;
        Some(
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, location)],
            )
                .into_response(),
        )
    }

    /// The finished clip: the asked size and length, or the broken file a bad-output scenario
    /// asks for (served with the same status and content type as a good one).
    pub fn video_bytes(&self) -> Vec<u8> {
        let (w, h) = self
            .size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .unwrap_or((720, 1280));
        let seconds = match self.scenario {
            Scenario::WrongDuration => self.seconds.clamp(1, 20) * 2 + 2,
            _ => self.seconds.clamp(1, 20),
        };
        let mut clip = media::mp4_video(&media::VideoSpec {
            width: w,
            height: h,
            seconds,
            tag: &self.id,
            // Models that render their own sound (Sora 2, Veo 3) deliver clips with audio.
            sound: self.model.starts_with("sora-2") || self.model.starts_with("veo-3"),
        });
        match self.scenario {
            Scenario::TruncatedMp4 => clip.truncate(clip.len() / 2),
            Scenario::ZeroBytes => clip.clear(),
            Scenario::Html200 => {
                clip = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
                    <body><h1>502 Bad Gateway</h1><p>upstream closed the connection</p></body></html>\n"
                    .to_vec()
            }
            _ => {}
        }
        clip
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub submissions_total: u64,
    pub by_task: BTreeMap<String, u64>,
    pub max_concurrent_seen: u64,
    /// Unfinished renders right now, over every key (filled in when stats are served).
    pub in_flight: u64,
    pub rate_limited_total: u64,
    pub requests_total: u64,
    /// Milliseconds since the sandbox started, one per accepted submission (rate checks).
    pub submit_times_ms: Vec<u64>,
    /// Renders whose finish a status request has reported, the sum of their render times and
    /// of the time from submit to that report (the client's slot time): their ratio is the
    /// client's render-slot utilization.
    pub renders_seen_finished: u64,
    pub render_ms_total: u64,
    pub held_ms_total: u64,
    /// Per render seen finished: how long after its finish (ms) a status request reported it.
    pub seen_late_ms: Vec<u64>,
    /// Status requests about renders.
    pub status_polls: u64,
    /// Milliseconds since the sandbox started when a status answer last reported a render
    /// finished for the first time (with the first submit time: the season's makespan).
    pub last_seen_finished_ms: u64,
    /// Callbacks POSTed (replays included), those not answered 2xx, and those never sent.
    pub callbacks_sent: u64,
    pub callbacks_refused: u64,
    pub callbacks_lost: u64,
    /// The same counters per API key (the sandbox's fake keys are no secret).
    pub by_key: BTreeMap<String, KeyStats>,
}

/// What the sandbox saw of one API key.
#[derive(Debug, Default, Clone, Serialize)]
pub struct KeyStats {
    /// Accepted creates.
    pub submissions: u64,
    /// Creates refused for this key's rate or concurrency limit.
    pub rate_limited: u64,
    /// Creates refused because the key is out of credits.
    pub out_of_credits: u64,
    /// Peak unfinished renders of this key.
    pub max_concurrent_seen: u64,
    /// Milliseconds since the sandbox started, one per accepted create.
    pub submit_times_ms: Vec<u64>,
    /// Renders of this key a status answer reported finished, and their render time in total
    /// (the work a schedule over this key's slots has to fit).
    pub renders_seen_finished: u64,
    pub render_ms_total: u64,
    /// Per render found finished: `[submitted at (ms since start), render ms]`, so a benchmark
    /// can replay the same renders through an ideal dispatcher.
    pub renders: Vec<[u64; 2]>,
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
    /// Per-job extras of the Runway, Veo, MiniMax, fal and Replicate routes.
    pub extras: Mutex<HashMap<String, JobExtra>>,
    /// Secondary ids (MiniMax `file_id`) → job id.
    pub aliases: Mutex<HashMap<String, String>>,
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
            extras: Mutex::default(),
            aliases: Mutex::default(),
        }
    }

    /// A UUID-shaped (version 4 layout) id, unique per sandbox (Runway tasks, fal requests).
    pub fn new_uuid(&self) -> String {
        let base = self.new_id("");
        let a = media::mix(self.opts.seed, &[base.as_bytes(), b"uuid-a"]);
        let b = media::mix(self.opts.seed, &[base.as_bytes(), b"uuid-b"]);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// A 15-digit decimal id (MiniMax task and file ids are int64s), not yet used as a job
    /// id or alias.
    pub fn new_numeric_id(&self) -> String {
        loop {
            let base = self.new_id("");
            let n = media::mix(self.opts.seed, &[base.as_bytes(), b"numeric"]);
            let id = (100_000_000_000_000 + n % 900_000_000_000_000).to_string();
            let taken = lock(&self.jobs).contains_key(&id) || lock(&self.aliases).contains_key(&id);
            if !taken {
                return id;
            }
        }
    }

    /// A keyed signature for result URLs the sandbox hands out (so an edited URL is refused).
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        format!("{:016x}", media::mix(self.opts.seed ^ 0x5a5a_5a5a, parts))
    }

    /// Run `f` on the extras of job `id` (created on first use).
    pub fn with_extra<R>(&self, id: &str, f: impl FnOnce(&mut JobExtra) -> R) -> R {
        f(lock(&self.extras).entry(id.to_string()).or_default())
    }

    /// A copy of the extras of job `id` (defaults when it has none).
    pub fn extra(&self, id: &str) -> JobExtra {
        lock(&self.extras).get(id).cloned().unwrap_or_default()
    }

    /// Families that queue instead of refusing when over the concurrency limit (Runway
    /// `THROTTLED`, fal `IN_QUEUE`, Replicate `starting`): when the new job of `key` can start.
    /// `now` when fewer than `max_concurrent` of the key's jobs that `same` selects are still
    /// unfinished (running or waiting); otherwise the moment enough of them have finished, so
    /// at most `max_concurrent` render at once. Jobs that never finish hold their slot forever.
    pub fn queued_start(&self, key: &str, now: Instant, same: impl Fn(&Job) -> bool) -> Instant {
        let Some(max) = self.opts.max_concurrent else {
            return now;
        };
        let far = now
            .checked_add(Duration::from_secs(100 * 365 * 86_400))
            .unwrap_or(now);
        let mut ends: Vec<Instant> = lock(&self.jobs)
            .values()
            .filter(|j| j.key == key && same(j))
            .filter_map(|j| match j.ends_at() {
                None => Some(far),
                Some(end) if end > now => Some(end),
                Some(_) => None,
            })
            .collect();
        let max = max as usize;
        if ends.len() < max {
            return now;
        }
        if max == 0 {
            return far;
        }
        ends.sort();
        ends[ends.len() - max]
    }

    /// Stop a job's clock now (a cancelled job no longer renders nor holds a slot) and record
    /// the cancellation. Returns false when the job does not exist.
    pub fn stop_job(&self, id: &str, now: Instant) -> bool {
        let mut jobs = lock(&self.jobs);
        let Some(job) = jobs.get_mut(id) else {
            return false;
        };
        if job.created > now {
            job.created = now;
        }
        job.render = Some(now.saturating_duration_since(job.created));
        drop(jobs);
        self.with_extra(id, |x| {
            x.cancelled_ms.get_or_insert(unix_ms());
        });
        true
    }

    pub fn new_id(&self, prefix: &str) -> String {
        let mut n = lock(&self.next_id);
        *n += 1;
        let h = media::mix(self.opts.seed, &[prefix.as_bytes(), &n.to_le_bytes()]);
        format!("{prefix}{:016x}", h)
    }

    /// A new job's common part: everything but its model, prompt, length and size (which
    /// each family reads from its own request shape). Render time and the random failure come
    /// from the id, so a job behaves the same on every run with the same seed.
    pub fn new_job(
        &self,
        id: &str,
        api: Api,
        key: String,
        scenario: Scenario,
        created: Instant,
    ) -> Job {
        Job {
            id: id.to_string(),
            api,
            key,
            model: String::new(),
            prompt: String::new(),
            seconds: 0,
            size: String::new(),
            external_id: None,
            created,
            created_unix_ms: unix_ms(),
            render: self.render_time(scenario, id),
            scenario,
            random_failure: self.random_failure(id),
            polls: 0,
            seen_finished: false,
        }
    }

    /// A status request about `job` is being answered: count it, and the first time it reports
    /// the render finished, how long the client held the render and how late it learned.
    pub fn observe_status(&self, job: &mut Job, now: Instant) {
        let mut stats = lock(&self.stats);
        stats.status_polls += 1;
        let (Some(render), Some(ends)) = (job.render, job.ends_at()) else {
            return;
        };
        if job.seen_finished || now < ends {
            return;
        }
        job.seen_finished = true;
        stats.renders_seen_finished += 1;
        stats.render_ms_total += render.as_millis() as u64;
        let by_key = stats.by_key.entry(job.key.clone()).or_default();
        by_key.renders_seen_finished += 1;
        by_key.render_ms_total += render.as_millis() as u64;
        let submitted = job
            .created
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        by_key.renders.push([submitted, render.as_millis() as u64]);
        stats.held_ms_total += now.saturating_duration_since(job.created).as_millis() as u64;
        stats
            .seen_late_ms
            .push(now.saturating_duration_since(ends).as_millis() as u64);
        stats.last_seen_finished_ms =
            now.saturating_duration_since(self.started).as_millis() as u64;
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
            .filter(|j| {
                matches!(
                    j.phase_after_input_check(now),
                    Phase::Queued | Phase::Running(_)
                )
            })
            .count() as u64
    }

    /// The limits that apply to `key`: its own (`--key-limit`), else the global ones.
    fn limit_of(&self, key: &str) -> KeyLimit {
        self.opts.key_limits.get(key).copied().unwrap_or(KeyLimit {
            rate_per_sec: self.opts.rate_per_sec,
            burst: self.opts.burst,
            max_concurrent: self.opts.max_concurrent,
        })
    }

    fn count_limited(&self, key: &str) {
        let mut s = lock(&self.stats);
        s.rate_limited_total += 1;
        s.by_key.entry(key.to_string()).or_default().rate_limited += 1;
    }

    /// True when `key` is out of credits (`--out-of-credits-key`); counted.
    pub fn out_of_credits(&self, key: &str) -> bool {
        let broke = self.opts.broke_keys.iter().any(|k| k == key);
        if broke {
            lock(&self.stats)
                .by_key
                .entry(key.to_string())
                .or_default()
                .out_of_credits += 1;
        }
        broke
    }

    /// Per-key rate limit for a create request: `Err(wait_ms)` when over.
    pub fn check_rate(&self, key: &str) -> Result<(), u64> {
        let limit = self.limit_of(key);
        let Some(rate) = limit.rate_per_sec else {
            return Ok(());
        };
        let r = lock(&self.limits).take(key, rate, limit.burst, Instant::now());
        if r.is_err() {
            self.count_limited(key);
        }
        r
    }

    /// True when `key` may start another render.
    pub fn check_concurrency(&self, key: &str) -> bool {
        match self.limit_of(key).max_concurrent {
            Some(max) => {
                let ok = self.in_flight(Some(key), Instant::now()) < u64::from(max);
                if !ok {
                    self.count_limited(key);
                }
                ok
            }
            None => true,
        }
    }

    /// Finish every unfinished render now (`POST /admin/finish`): tests hold thousands of renders
    /// in flight with a long render time, then let them all complete at once. Renders that never
    /// finish by scenario stay unfinished. Returns how many were finished.
    pub fn finish_all(&self, now: Instant) -> u64 {
        let mut finished = 0;
        for job in lock(&self.jobs).values_mut() {
            if let Some(render) = job.render {
                let elapsed = now.saturating_duration_since(job.created);
                if elapsed < render {
                    job.render = Some(elapsed);
                    finished += 1;
                }
            }
        }
        finished
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
        let key = job.key.clone();
        lock(&self.jobs).insert(job.id.clone(), job);
        let running = self.in_flight(None, now);
        let running_key = self.in_flight(Some(&key), now);
        let at = now.duration_since(self.started).as_millis() as u64;
        let mut s = lock(&self.stats);
        s.max_concurrent_seen = s.max_concurrent_seen.max(running);
        let k = s.by_key.entry(key).or_default();
        k.submissions += 1;
        k.submit_times_ms.push(at);
        k.max_concurrent_seen = k.max_concurrent_seen.max(running_key);
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

/// RFC 3339 UTC time with milliseconds (`2024-06-01T00:00:00.000Z`) of a Unix time in ms.
pub fn iso8601(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `http://host` of the request (result URLs the sandbox hands out point back at it).
pub fn origin(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The `X-Sandbox-Scenario` header.
pub fn scenario_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get("x-sandbox-scenario")
        .and_then(|v| v.to_str().ok())
}

/// The `Idempotency-Key` header, else `fallback` (the new job's id).
pub fn idempotency_key(headers: &axum::http::HeaderMap, fallback: &str) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| fallback.to_string())
}

/// A query-string value (`?name=value`), percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::iso8601;
    use super::*;

    #[test]
    fn bad_output_scenarios_break_the_file_the_way_they_say() {
        let shared = Shared::new(SandboxOptions::default());
        let clip = |scenario| {
            let job = Job {
                seconds: 4,
                size: "720x1280".into(),
                model: "sora-2".into(),
                ..shared.new_job("j1", Api::OpenaiVideo, "k".into(), scenario, Instant::now())
            };
            job.video_bytes()
        };
        let good = clip(Scenario::Ok);
        assert!(media::inspect_mp4(&good).is_ok());
        assert_eq!(clip(Scenario::TruncatedMp4), good[..good.len() / 2]);
        assert!(clip(Scenario::ZeroBytes).is_empty());
        assert!(clip(Scenario::Html200).starts_with(b"<!DOCTYPE html>"));
        let long = clip(Scenario::WrongDuration);
        assert!(media::inspect_mp4(&long).is_ok() && long.len() > good.len());

        // A Sora 2 clip carries sound, and ffprobe reads both tracks at the asked length.
        let path = std::env::temp_dir().join(format!("dramaq-sandbox-{}.mp4", std::process::id()));
        std::fs::write(&path, &good).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_packets", "-show_entries"])
            .args([
                "stream=codec_name,duration,nb_read_packets",
                "-of",
                "csv=p=0",
            ])
            .arg(&path)
            .output()
            .expect("ffprobe (apt-get install ffmpeg)");
        std::fs::remove_file(&path).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{text} {:?}",
            out.stderr
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("h264,4.000000,96"), "{text}");
        assert!(lines[1].starts_with("pcm_s16le,4.000000"), "{text}");
    }

    #[test]
    fn iso8601_is_utc_with_milliseconds() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
