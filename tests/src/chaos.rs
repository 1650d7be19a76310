//! The chaos scenario behind `tests/tests/chaos.rs` and `scripts/bench-chaos.sh`: a generated
//! season of image, video and voice tasks worked by several `dramaq-worker` processes while one
//! of them is killed with SIGKILL every couple of seconds (and started again), Redis (with AOF,
//! `appendfsync everysec`) is restarted, and optionally a power cut is imitated by putting back
//! a copy of the AOF taken a second before Redis is killed.
//!
//! At the end [`Report`] holds what happened to every task, what the sandbox was paid, and the
//! figures printed to the log; [`Report::violations`] lists what breaks the goals: every task
//! stored (checksum matching) or dead with a failure class, and no task paid for more often than
//! dramaq recorded submit attempts unless dramaq flagged it `possible_duplicate`.
//!
//! Everything is bounded: the chaos stops after [`Settings::chaos_for`], the wait for the season
//! after [`Settings::timeout`]; every process is killed when its handle is dropped, so a failed
//! assertion or a panic leaves nothing running.

use crate::{sha256_file, Env, Proc, SandboxArgs};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SEASON: &str = "chaos-harbour";

/// Scenes whose prompt makes the sandbox refuse the result (dead at once as `content_policy`).
const MODERATED: &str = "[sandbox:moderation_output]";
/// Scenes whose every render fails (retried up to `max_attempts`, then dead `provider_error`).
const ALWAYS_FAILS: &str = "[sandbox:fail]";

/// Scenario size and pace. [`Settings::from_env`] overrides any field from `CHAOS_*` variables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Roughly how many tasks the season has (images, scenes, lines, assemblies).
    pub tasks: usize,
    pub workers: usize,
    /// `--concurrency` of each worker.
    pub concurrency: usize,
    /// A random worker is killed (SIGKILL) and restarted this often (±25 %).
    pub kill_every: Duration,
    /// Clean Redis restarts (`SHUTDOWN NOSAVE`: the AOF is flushed, nothing is lost).
    pub redis_restarts: usize,
    /// Power cuts: copy the AOF, let Redis run on for [`Settings::cut_after`], SIGKILL it, put the
    /// copy back and start it again (the writes of that interval are lost).
    pub power_cuts: usize,
    pub cut_after: Duration,
    /// Sandbox: share of renders that fail (retried by dramaq).
    pub failure_rate: f64,
    pub render_ms: u64,
    pub render_jitter_ms: u64,
    /// Kills stop after this long; the season then finishes in peace.
    pub chaos_for: Duration,
    /// Give up waiting for the season after this long.
    pub timeout: Duration,
    /// Seed of the kill schedule and the sandbox's failure draw (printed, so a run can be
    /// repeated as far as timing allows).
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tasks: 250,
            workers: 4,
            concurrency: 8,
            kill_every: Duration::from_secs(2),
            redis_restarts: 1,
            power_cuts: 0,
            cut_after: Duration::from_secs(1),
            failure_rate: 0.1,
            render_ms: 1_000,
            render_jitter_ms: 1_000,
            chaos_for: Duration::from_secs(60),
            timeout: Duration::from_secs(150),
            seed: seed_from_clock(),
        }
    }
}

impl Settings {
    /// Override fields from `CHAOS_TASKS`, `CHAOS_WORKERS`, `CHAOS_CONCURRENCY`, `CHAOS_KILL_MS`,
    /// `CHAOS_REDIS_RESTARTS`, `CHAOS_POWER_CUTS`, `CHAOS_CUT_AFTER_MS`, `CHAOS_FAILURE_RATE`,
    /// `CHAOS_RENDER_MS`, `CHAOS_RENDER_JITTER_MS`, `CHAOS_CHAOS_S`, `CHAOS_TIMEOUT_S`,
    /// `CHAOS_SEED`. A variable that does not parse is an error, not silently ignored.
    pub fn from_env(mut self) -> Result<Self> {
        fn var<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| anyhow::anyhow!("{name}={v:?} does not parse")),
                Err(_) => Ok(None),
            }
        }
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        if let Some(v) = var("CHAOS_TASKS")? {
            self.tasks = v;
        }
        if let Some(v) = var("CHAOS_WORKERS")? {
            self.workers = v;
        }
        if let Some(v) = var("CHAOS_CONCURRENCY")? {
            self.concurrency = v;
        }
        if let Some(v) = var("CHAOS_KILL_MS")? {
            self.kill_every = ms(v);
        }
        if let Some(v) = var("CHAOS_REDIS_RESTARTS")? {
            self.redis_restarts = v;
        }
        if let Some(v) = var("CHAOS_POWER_CUTS")? {
            self.power_cuts = v;
        }
        if let Some(v) = var("CHAOS_CUT_AFTER_MS")? {
            self.cut_after = ms(v);
        }
        if let Some(v) = var("CHAOS_FAILURE_RATE")? {
            self.failure_rate = v;
        }
        if let Some(v) = var("CHAOS_RENDER_MS")? {
            self.render_ms = v;
        }
        if let Some(v) = var("CHAOS_RENDER_JITTER_MS")? {
            self.render_jitter_ms = v;
        }
        if let Some(v) = var("CHAOS_CHAOS_S")? {
            self.chaos_for = s(v);
        }
        if let Some(v) = var("CHAOS_TIMEOUT_S")? {
            self.timeout = s(v);
        }
        if let Some(v) = var("CHAOS_SEED")? {
            self.seed = v;
        }
        if self.workers == 0 || self.tasks == 0 {
            bail!("CHAOS_WORKERS and CHAOS_TASKS must be at least 1");
        }
        Ok(self)
    }
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        % 1_000_000
}

/// xorshift64*: enough randomness for a kill schedule, and reproducible from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `d` ± 25 %.
    pub fn around(&mut self, d: Duration) -> Duration {
        let ms = d.as_millis() as u64;
        let spread = ms / 2;
        if spread == 0 {
            return d;
        }
        Duration::from_millis(ms - ms / 4 + self.next_u64() % spread)
    }
}

// ---------------------------------------------------------------------------------------------
// Redis with an append-only file, restartable on the same port and directory.
// ---------------------------------------------------------------------------------------------

/// One redis-server with `appendonly yes`, `appendfsync everysec` and no automatic AOF rewrite
/// (so a copy of `appendonlydir/` taken while it runs is one consistent base + increment + manifest).
/// It can be shut down, killed and started again on the same port and directory; killed on drop.
pub struct AofRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    pub starts: usize,
}

impl AofRedis {
    pub fn start() -> Result<AofRedis> {
        let mut last = None;
        for _ in 0..5 {
            let dir = tempfile::tempdir()?;
            let port = crate::testkit::free_port()?;
            let mut r = AofRedis {
                child: None,
                port,
                dir,
                starts: 0,
            };
            match r.spawn() {
                Ok(()) => return Ok(r),
                // Most likely the port was taken between choosing and binding.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn aof_dir(&self) -> PathBuf {
        self.dir.path().join("appendonlydir")
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .args(["--auto-aof-rewrite-percentage", "0"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready()
    }

    /// PING until it answers (it answers LOADING while it replays the AOF).
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "redis-server on port {} exited with {status}: {tail:?}",
                    self.port
                );
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not answer in 30 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ping(&self) -> bool {
        redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    pub fn connection(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url().as_str())?
            .get_connection_with_timeout(Duration::from_secs(2))?)
    }

    fn wait_exit(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                bail!("redis-server did not stop within 20 s of SHUTDOWN; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SHUTDOWN NOSAVE` (the AOF is still flushed and fsynced), then start again on the same
    /// port and directory.
    pub fn restart_clean(&mut self) -> Result<()> {
        if let Ok(mut c) = self.connection() {
            // The connection closes under the reply: an error here is the expected outcome.
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut c);
        }
        self.wait_exit()?;
        self.start_again()
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start on the same port and directory (a few tries: the port may linger a moment).
    pub fn start_again(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..10 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not restart")))
    }

    /// Copy `appendonlydir/` (manifest first, then the files it names) as it is on disk now.
    pub fn snapshot_aof(&self) -> Result<PathBuf> {
        let snap = self
            .dir
            .path()
            .join(format!("aof-snapshot-{}", self.starts));
        if snap.exists() {
            std::fs::remove_dir_all(&snap)?;
        }
        std::fs::create_dir_all(&snap)?;
        let src = self.aof_dir();
        let mut names: Vec<String> = std::fs::read_dir(&src)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        // The manifest first: the files it names only grow while no rewrite runs.
        names.sort_by_key(|n| !n.ends_with(".manifest"));
        for n in names {
            std::fs::copy(src.join(&n), snap.join(&n))
                .with_context(|| format!("copying {}", src.join(&n).display()))?;
        }
        Ok(snap)
    }

    /// A power cut: SIGKILL, the AOF as it was at `snapshot` put back, started again.
    pub fn power_cut_to(&mut self, snapshot: &Path) -> Result<()> {
        self.kill();
        let aof = self.aof_dir();
        std::fs::remove_dir_all(&aof)?;
        std::fs::create_dir_all(&aof)?;
        for e in std::fs::read_dir(snapshot)? {
            let e = e?;
            std::fs::copy(e.path(), aof.join(e.file_name()))?;
        }
        self.start_again()
    }
}

impl Drop for AofRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The season.
// ---------------------------------------------------------------------------------------------

const SCENES_PER_EPISODE: usize = 8;
/// 8 scenes, 12 lines and one assembly per episode.
const TASKS_PER_EPISODE: usize = SCENES_PER_EPISODE + 12 + 1;

/// A season of about `tasks` tasks: three character images; per episode eight scenes (every
/// fourth on Kling, the others on Sora; every third starting from a character image) with one or
/// two voice lines each, and the assembly. The last episode holds two scenes the provider
/// moderates and one whose every render fails, so dead tasks (and an assembly blocked by them)
/// are part of every run.
pub fn season_script(tasks: usize) -> String {
    let episodes = (tasks.saturating_sub(3) / TASKS_PER_EPISODE).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "id: {SEASON}\ntitle: \"Chaos Harbour\"\ndefaults:\n  aspect_ratio: \"9:16\"\n  \
         resolution: \"720p\"\n  duration: 4\n  providers:\n    image: [sandbox-image]\n    \
         video: [sandbox-sora]\n    voice: [sandbox-tts]\ncharacters:\n"
    );
    let cast = [
        (
            "Mira",
            "lighthouse keeper, yellow oilskin coat, black bob",
            "nova",
        ),
        (
            "Jun",
            "boat builder, rolled-up denim sleeves, pencil behind ear",
            "onyx",
        ),
        (
            "Tomas",
            "retired harbour master, white beard, navy peacoat",
            "echo",
        ),
    ];
    for (i, (name, look, voice)) in cast.iter().enumerate() {
        let _ = writeln!(
            s,
            "  - name: {name}\n    appearance: \"{look}\"\n    seed: {}\n    voice: {voice}",
            1000 + i
        );
    }
    s.push_str("episodes:\n");
    for e in 0..episodes {
        let last = e + 1 == episodes;
        let _ = writeln!(s, "  - id: ep{:03}\n    scenes:", e + 1);
        for c in 0..SCENES_PER_EPISODE {
            let who = cast[(e + c) % 3].0;
            let other = cast[(e + c + 1) % 3].0;
            let keyword = match (last, c) {
                (true, 1) | (true, 5) => MODERATED,
                (true, 3) => ALWAYS_FAILS,
                _ => "",
            };
            let _ = writeln!(
                s,
                "      - id: sc{:02}\n        description: \"Episode {}, shot {}: {who} and {other} \
                 on the pier at dusk, gulls overhead. {keyword}\"\n        characters: [{who}, {other}]",
                c + 1,
                e + 1,
                c + 1
            );
            if c % 3 == 0 {
                let _ = writeln!(s, "        first_frame: {who}");
            }
            if c % 4 == 1 {
                s.push_str(
                    "        providers:\n          video: [sandbox-kling]\n        duration: 5\n",
                );
            }
            s.push_str("        dialogue:\n");
            for l in 0..(1 + c % 2) {
                let speaker = if l == 0 { who } else { other };
                let _ = writeln!(
                    s,
                    "          - speaker: {speaker}\n            line: \"Episode {}, shot {}, \
                     line {}: the tide waits for no one.\"",
                    e + 1,
                    c + 1,
                    l + 1
                );
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    RedisRestart,
    PowerCut,
}

/// What happened, and the figures of the run.
#[derive(Debug, Default)]
pub struct Report {
    pub settings: String,
    pub seed: u64,
    pub tasks: usize,
    pub enqueued: u64,
    pub stored: usize,
    pub dead_by_class: BTreeMap<String, usize>,
    /// Waiting tasks with a dead dependency (finished as far as the season can go).
    pub blocked: usize,
    pub kills: usize,
    /// Workers that exited without being killed (restarted too).
    pub worker_exits: Vec<String>,
    pub redis_restarts: usize,
    pub power_cuts: usize,
    pub paid_submissions: u64,
    /// Idempotency keys paid more than once.
    pub paid_twice_or_more: usize,
    /// … of which dramaq recorded as many submit attempts (failed renders retried).
    pub retried_after_failure: usize,
    /// … of which dramaq flagged `possible_duplicate` (beyond its recorded attempts).
    pub flagged_double_payments: usize,
    /// Records flagged `possible_duplicate` (paid twice or not).
    pub flagged_records: usize,
    /// Sum of the `possible_duplicates` counters of the accounts' `stats` hashes.
    pub possible_duplicates_counter: u64,
    /// Paid more often than attempts recorded, without the flag: one line per key.
    pub unflagged_double_payments: Vec<String>,
    /// Neither stored, nor dead with a class, nor waiting on a dead dependency.
    pub lost_or_stuck: Vec<String>,
    pub checksum_mismatches: Vec<String>,
    /// Paid submissions under a key that names no task of the season.
    pub unknown_keys: Vec<String>,
    /// Deliberately broken scenes that did not end dead with the expected class.
    pub wrong_deaths: Vec<String>,
    pub part_files: usize,
    pub finished: bool,
    pub last_status: String,
    /// From the fleet's start until the season finished (or the wait gave up).
    pub elapsed: Duration,
    pub chaos_elapsed: Duration,
    /// Processes, config and enqueue before the fleet started (includes building binaries).
    pub setup: Duration,
}

impl Report {
    /// Everything that breaks the goals, one line each; empty when the run is clean.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.finished {
            v.push(format!(
                "the season did not finish in time: {}",
                self.last_status
            ));
        }
        if self.tasks as u64 != self.enqueued {
            v.push(format!(
                "{} task records for {} enqueued",
                self.tasks, self.enqueued
            ));
        }
        let list = |v: &mut Vec<String>, what: &str, items: &[String]| {
            if !items.is_empty() {
                v.push(format!(
                    "{} {what}:\n    {}",
                    items.len(),
                    items.join("\n    ")
                ));
            }
        };
        list(&mut v, "tasks lost or stuck", &self.lost_or_stuck);
        list(
            &mut v,
            "stored files not matching their record",
            &self.checksum_mismatches,
        );
        list(
            &mut v,
            "unflagged double payments (paid more often than attempts recorded, no possible_duplicate)",
            &self.unflagged_double_payments,
        );
        list(&mut v, "paid keys naming no task", &self.unknown_keys);
        list(
            &mut v,
            "broken scenes not dead as expected",
            &self.wrong_deaths,
        );
        v
    }

    /// Panic with every violation (offending tasks with their submission counts and flags).
    /// The figures are in [`Report::table`]; print it first.
    pub fn assert_goals(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "chaos run (seed {}: {} tasks, {} kills, {} redis restarts, {} power cuts, {} paid \
             submissions) broke its goals:\n  {}",
            self.seed,
            self.tasks,
            self.kills,
            self.redis_restarts,
            self.power_cuts,
            self.paid_submissions,
            v.join("\n  "),
        );
    }

    /// The figures as a two-column table.
    pub fn table(&self) -> String {
        let dead: usize = self.dead_by_class.values().sum();
        let classes: Vec<String> = self
            .dead_by_class
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let rows: Vec<(&str, String)> = vec![
            ("settings", self.settings.clone()),
            ("seed", self.seed.to_string()),
            (
                "tasks",
                format!("{} (enqueued {})", self.tasks, self.enqueued),
            ),
            ("stored", self.stored.to_string()),
            ("dead", format!("{dead} ({})", classes.join(", "))),
            ("waiting on a dead dependency", self.blocked.to_string()),
            ("lost or stuck", self.lost_or_stuck.len().to_string()),
            ("worker kills (SIGKILL)", self.kills.to_string()),
            (
                "workers that exited on their own",
                self.worker_exits.len().to_string(),
            ),
            (
                "redis restarts (SHUTDOWN NOSAVE)",
                self.redis_restarts.to_string(),
            ),
            ("power cuts (AOF rolled back)", self.power_cuts.to_string()),
            ("paid submissions", self.paid_submissions.to_string()),
            (
                "keys paid more than once",
                self.paid_twice_or_more.to_string(),
            ),
            (
                "  retries after a recorded failure",
                self.retried_after_failure.to_string(),
            ),
            (
                "  flagged possible_duplicate",
                self.flagged_double_payments.to_string(),
            ),
            (
                "  UNFLAGGED double payments",
                self.unflagged_double_payments.len().to_string(),
            ),
            (
                "records flagged possible_duplicate",
                self.flagged_records.to_string(),
            ),
            (
                "stats possible_duplicates counter",
                self.possible_duplicates_counter.to_string(),
            ),
            (
                "checksum mismatches",
                self.checksum_mismatches.len().to_string(),
            ),
            (
                ".part files left in the output dir",
                self.part_files.to_string(),
            ),
            ("finished", self.finished.to_string()),
            (
                "run time (with kills) [set-up]",
                format!(
                    "{:.1} s ({:.1} s) [{:.1} s]",
                    self.elapsed.as_secs_f64(),
                    self.chaos_elapsed.as_secs_f64(),
                    self.setup.as_secs_f64()
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
        for line in &self.worker_exits {
            let _ = writeln!(out, "    {line}");
        }
        out
    }
}

/// The worker fleet: `n` slots, each holding a running `dramaq-worker`.
struct Fleet<'a> {
    env: &'a Env,
    concurrency: String,
    slots: Vec<Proc>,
    exits: Vec<String>,
}

impl<'a> Fleet<'a> {
    fn start(env: &'a Env, n: usize, concurrency: usize) -> Result<Fleet<'a>> {
        let concurrency = concurrency.to_string();
        let slots = (0..n)
            .map(|_| env.worker(&["--concurrency", &concurrency]))
            .collect::<Result<_>>()?;
        Ok(Fleet {
            env,
            concurrency,
            slots,
            exits: Vec::new(),
        })
    }

    /// SIGKILL worker `i` and start a new one in its place.
    fn kill_and_restart(&mut self, i: usize, since: Instant) -> Result<()> {
        // One that already exited by itself is not a kill (and gets noted by revive).
        self.revive(since)?;
        let w = &mut self.slots[i];
        w.signal(libc::SIGKILL);
        w.wait_timeout(Duration::from_secs(10))
            .context("a killed worker did not exit")?;
        self.slots[i] = self.env.worker(&["--concurrency", &self.concurrency])?;
        Ok(())
    }

    /// Restart any worker that exited by itself (and remember it: that is worth a look).
    fn revive(&mut self, since: Instant) -> Result<()> {
        for i in 0..self.slots.len() {
            if let Ok(Some(status)) = self.slots[i].child.try_wait() {
                self.exits.push(format!(
                    "worker {i} exited by itself with {status} at {:.1} s",
                    since.elapsed().as_secs_f64()
                ));
                self.slots[i] = self.env.worker(&["--concurrency", &self.concurrency])?;
            }
        }
        Ok(())
    }
}

/// Run the scenario and collect the report. Errors are failures of the set-up (a process that
/// cannot start), not of dramaq; those are in the report.
pub fn run(settings: &Settings) -> Result<Report> {
    let started = Instant::now();
    let mut rng = Rng::new(settings.seed);
    let mut report = Report {
        settings: format!(
            "{} tasks, {} workers x {}, kill every ~{} ms, {} redis restarts, {} power cuts \
             (cut {} ms after the copy), failure rate {}, render {}+{} ms",
            settings.tasks,
            settings.workers,
            settings.concurrency,
            settings.kill_every.as_millis(),
            settings.redis_restarts,
            settings.power_cuts,
            settings.cut_after.as_millis(),
            settings.failure_rate,
            settings.render_ms,
            settings.render_jitter_ms
        ),
        seed: settings.seed,
        ..Default::default()
    };

    let env = Env::start(SandboxArgs {
        render_ms: settings.render_ms,
        render_jitter_ms: settings.render_jitter_ms,
        extra: vec![
            "--failure-rate".into(),
            settings.failure_rate.to_string(),
            "--seed".into(),
            settings.seed.to_string(),
        ],
    })?;
    // The processes use this AOF-backed server; the fixture's own throwaway one stays idle.
    let mut redis = AofRedis::start()?;
    let fixture_url = env.redis.url();
    env.edit_config(|t| t.replace(&fixture_url, &redis.url()))?;
    // Quick retries and re-takes: the season must finish within a test's patience while workers
    // die every few seconds (each death may cost a task one stall). The example's own
    // max_attempts goes first (a second one would be a duplicate key).
    env.edit_config(|t| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with("max_attempts"))
            .map(|l| format!("{l}\n"))
            .collect()
    })?;
    env.set_in_table(
        "worker",
        "retry_base_ms = 200\nretry_max_ms = 2000\npoll_lease_ms = 2000\nmax_stalls = 20\n\
         max_attempts = 5",
    )?;

    let script = env.write_script("chaos.yaml", &season_script(settings.tasks))?;
    let enq = env.dramaq_json(&["enqueue", script.to_str().unwrap_or_default()])?;
    report.enqueued = enq["new"].as_u64().unwrap_or(0);
    let total = report.enqueued;

    // Events at even steps of progress (stored / total), restarts and cuts interleaved.
    let mut events: Vec<Event> = Vec::new();
    for i in 0..settings.redis_restarts.max(settings.power_cuts) {
        if i < settings.redis_restarts {
            events.push(Event::RedisRestart);
        }
        if i < settings.power_cuts {
            events.push(Event::PowerCut);
        }
    }
    let n_events = events.len();
    let mut next_event = 0usize;
    let mut pending_cut: Option<(Instant, PathBuf)> = None;
    // No worker is killed from the AOF copy until a few seconds after the cut: a paid
    // transition lost with the Redis host is then known only to the worker that made it (its
    // journal, replayed when the server restarts), and losing that worker in the same seconds
    // is a double fault no queue can see. Kills go on before and after.
    let mut kills_resume = Instant::now();

    let mut fleet = Fleet::start(&env, settings.workers, settings.concurrency)?;
    // The clock of the run starts here: the set-up may have built the binaries first.
    let t0 = Instant::now();
    let chaos_end = t0 + settings.chaos_for;
    let deadline = t0 + settings.timeout;
    let mut next_kill = Instant::now() + rng.around(settings.kill_every);
    let mut finished_since: Option<Instant> = None;
    let mut last_status = Value::Null;

    loop {
        let now = Instant::now();
        if now > deadline {
            break;
        }
        fleet.revive(t0)?;
        if now < chaos_end && now >= next_kill && pending_cut.is_none() && now >= kills_resume {
            let i = rng.below(fleet.slots.len());
            fleet.kill_and_restart(i, t0)?;
            report.kills += 1;
            next_kill = now + rng.around(settings.kill_every);
        }
        if let Some((at, snap)) = &pending_cut {
            if now >= *at {
                redis.power_cut_to(snap)?;
                report.power_cuts += 1;
                pending_cut = None;
                // Kills pause until every live worker has had time to reconnect, see the new
                // `run_id` and replay its journal (which keeps 10 s): a payer killed before
                // that is the double fault the power-cut test leaves out, and on a loaded
                // machine reconnecting alone can take a few seconds.
                kills_resume = Instant::now() + Duration::from_secs(8);
                finished_since = None;
                continue;
            }
        }
        // `status` fails while Redis restarts; that only means "not finished".
        let st = match env.dramaq_json(&["status", "--season", SEASON]) {
            Ok(st) => st,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let done = crate::season_finished(&st);
        let stored = st["stored"].as_u64().unwrap_or(0);
        if next_event < n_events && pending_cut.is_none() {
            let threshold = total * (next_event as u64 + 1) / (n_events as u64 + 1);
            if stored >= threshold.max(1) || done {
                match events[next_event] {
                    Event::RedisRestart => {
                        redis.restart_clean()?;
                        report.redis_restarts += 1;
                    }
                    Event::PowerCut => {
                        let snap = redis.snapshot_aof()?;
                        pending_cut = Some((Instant::now() + settings.cut_after, snap));
                    }
                }
                next_event += 1;
                finished_since = None;
                continue;
            }
        }
        last_status = st;
        if done && next_event == n_events && pending_cut.is_none() {
            let since = *finished_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                report.finished = true;
                break;
            }
        } else {
            finished_since = None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    report.chaos_elapsed = t0.elapsed().min(settings.chaos_for);
    report.worker_exits = std::mem::take(&mut fleet.exits);
    report.last_status = last_status.to_string();
    // Stop the fleet before looking, so nothing moves under the checks.
    drop(fleet);

    report.elapsed = t0.elapsed();
    check(&env, &redis, &mut report)?;
    report.setup = t0.duration_since(started);
    Ok(report)
}

/// Strip a chunk suffix (`<task>:2`, the speech adapter's second chunk) from an idempotency key.
pub fn task_of_key(key: &str) -> &str {
    match key.rsplit_once(':') {
        Some((id, n)) if n.chars().all(|c| c.is_ascii_digit()) => id,
        _ => key,
    }
}

fn describe(t: &Value) -> String {
    let errors: Vec<String> = t["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}@{}",
                        e["class"].as_str().unwrap_or("?"),
                        e["attempt"].as_u64().unwrap_or(0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} ({}) state={} attempt={} stalls={} possible_duplicate={} errors=[{}]",
        t["label"].as_str().unwrap_or("?"),
        t["id"].as_str().unwrap_or("?"),
        t["state"].as_str().unwrap_or("?"),
        t["attempt"].as_u64().unwrap_or(0),
        t["stalls"].as_u64().unwrap_or(0),
        t["possible_duplicate"].as_bool().unwrap_or(false),
        errors.join(",")
    )
}

fn check(env: &Env, redis: &AofRedis, report: &mut Report) -> Result<()> {
    let tasks = env.tasks(SEASON)?;
    report.tasks = tasks.len();
    let by_id: BTreeMap<&str, &Value> = tasks
        .iter()
        .filter_map(|t| Some((t["id"].as_str()?, t)))
        .collect();
    let dead: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t["state"] == "dead")
        .filter_map(|t| t["id"].as_str())
        .collect();

    for t in &tasks {
        let state = t["state"].as_str().unwrap_or("?");
        match state {
            "stored" => {
                report.stored += 1;
                if let Some(problem) = stored_file_problem(env, t) {
                    report
                        .checksum_mismatches
                        .push(format!("{}: {problem}", describe(t)));
                }
            }
            "dead" => match t["failure"].as_str() {
                Some(class) => *report.dead_by_class.entry(class.to_string()).or_default() += 1,
                None => report
                    .lost_or_stuck
                    .push(format!("dead without a failure class: {}", describe(t))),
            },
            "waiting" => {
                let blocked = t["deps"].as_array().is_some_and(|d| {
                    d.iter()
                        .any(|d| d["id"].as_str().is_some_and(|id| dead.contains(id)))
                });
                if blocked {
                    report.blocked += 1;
                } else {
                    report
                        .lost_or_stuck
                        .push(format!("waiting with no dead dependency: {}", describe(t)));
                }
            }
            _ => report.lost_or_stuck.push(describe(t)),
        }
        let desc = t["payload"].to_string();
        let expected = if desc.contains(MODERATED) {
            Some("content_policy")
        } else if desc.contains(ALWAYS_FAILS) {
            Some("provider_error")
        } else {
            None
        };
        if let Some(class) = expected {
            if t["kind"] == "video" && (state != "dead" || t["failure"] != class) {
                report
                    .wrong_deaths
                    .push(format!("expected dead {class}: {}", describe(t)));
            }
        }
    }
    report.flagged_records = tasks
        .iter()
        .filter(|t| t["possible_duplicate"] == true)
        .count();

    // Payments: per idempotency key, as the sandbox counted them.
    let stats = env.sandbox_stats()?;
    report.paid_submissions = stats["submissions_total"].as_u64().unwrap_or(0);
    if let Some(keys) = stats["by_task"].as_object() {
        for (key, n) in keys {
            let n = n.as_u64().unwrap_or(0);
            let Some(t) = by_id.get(task_of_key(key)) else {
                report.unknown_keys.push(format!("{key}: paid {n}"));
                continue;
            };
            if n <= 1 {
                continue;
            }
            report.paid_twice_or_more += 1;
            let attempts = t["attempt"].as_u64().unwrap_or(0);
            if t["possible_duplicate"] == true {
                report.flagged_double_payments += 1;
            } else if n <= attempts {
                report.retried_after_failure += 1;
            } else {
                report
                    .unflagged_double_payments
                    .push(format!("{key} paid {n} times: {}", describe(t)));
            }
        }
    }

    let accounts: BTreeSet<&str> = tasks.iter().filter_map(|t| t["account"].as_str()).collect();
    let mut conn = redis.connection()?;
    for a in accounts {
        let n: Option<u64> = redis::cmd("HGET")
            .arg(format!("dq:{{{a}}}:stats"))
            .arg("possible_duplicates")
            .query(&mut conn)?;
        report.possible_duplicates_counter += n.unwrap_or(0);
    }
    report.part_files = count_part_files(&env.out);
    Ok(())
}

/// Why a stored task's file does not match its record, if it does not.
fn stored_file_problem(env: &Env, t: &Value) -> Option<String> {
    let Some(output) = t["output"].as_str() else {
        return Some("stored without an output".into());
    };
    let path = env.out.join(output);
    let sha = match sha256_file(&path) {
        Ok(s) => s,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if Some(sha.as_str()) != t["sha256"].as_str() {
        return Some(format!(
            "{output}: sha256 {sha} != recorded {}",
            t["sha256"]
        ));
    }
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if Some(len) != t["bytes"].as_u64() {
        return Some(format!("{output}: {len} bytes != recorded {}", t["bytes"]));
    }
    None
}

/// Temporary `.part` files left under `dir` (a writer killed mid-write leaves one).
pub fn count_part_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_part_files(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "part"))
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_tasks() {
        assert_eq!(task_of_key("abc"), "abc");
        assert_eq!(task_of_key("abc:2"), "abc");
        assert_eq!(task_of_key("a:b"), "a:b");
    }

    #[test]
    fn season_size_follows_the_request() {
        let s = season_script(250);
        assert_eq!(s.matches("      - id: sc").count(), 11 * SCENES_PER_EPISODE);
        assert_eq!(s.matches(MODERATED).count(), 2);
        assert_eq!(s.matches(ALWAYS_FAILS).count(), 1);
    }

    #[test]
    fn rng_spreads_around() {
        let mut r = Rng::new(7);
        for _ in 0..100 {
            let d = r.around(Duration::from_millis(2000));
            assert!(d >= Duration::from_millis(1500) && d < Duration::from_millis(2500));
        }
    }
}
