//! Fixtures for dramaq's end-to-end tests: the real binaries as separate processes, a sandbox
//! provider on a free port, a throwaway redis-server, and a temporary config and output folder.
//!
//! Binaries are taken from the Cargo target directory next to the test executable and built with
//! `cargo build --bins` first when missing, so `cargo test --workspace` alone is enough.

use anyhow::{bail, Context, Result};
use dramaq_common::testkit::RedisServer;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub use dramaq_common::testkit;

pub mod chaos;
pub mod multihost;
pub mod netns;

/// The example configuration pointed at a sandbox, a Redis URL and an output folder, with short
/// leases and polls so recovery happens within a test's patience.
pub fn test_config(sandbox_url: &str, redis_url: &str, out: &Path) -> Result<String> {
    let text = std::fs::read_to_string(workspace_root().join("examples/dramaq.toml"))?
        .replace("http://127.0.0.1:8787", sandbox_url)
        .replace("redis://127.0.0.1:6379", redis_url)
        .replace(
            "dir = \"out\"",
            &format!("dir = {:?}", out.display().to_string()),
        )
        .replace("lease_ms = 15000", "lease_ms = 3000")
        .replace("heartbeat_ms = 5000", "heartbeat_ms = 1000")
        .replace("poll_first_ms = 500", "poll_first_ms = 200")
        .replace("poll_max_ms = 2000", "poll_max_ms = 500")
        // Masters are built by the media tests (`tests/tests/media.rs`, which switch this back
        // on); the others keep to the manifest so they stay fast.
        .replace("\nffmpeg = true\n", "\nffmpeg = false\n");
    Ok(format!("{text}\n"))
}

/// `cmd` with the environment every spawned dramaq process gets: the config, the sandbox's
/// credentials, and nothing inherited that would point it elsewhere.
pub fn with_test_env(mut cmd: Command, config: &Path) -> Command {
    cmd.env("DRAMAQ_CONFIG", config)
        .env("DRAMAQ_SANDBOX_KEY", SANDBOX_KEY)
        .env("DRAMAQ_TEST_KEY_1", POOL_KEYS[0])
        .env("DRAMAQ_TEST_KEY_2", POOL_KEYS[1])
        .env("DRAMAQ_TEST_KEY_3", POOL_KEYS[2])
        .env("DRAMAQ_TEST_KEY_4", POOL_KEYS[3])
        .env("DRAMAQ_SANDBOX_KLING_AK", KLING_AK)
        .env("DRAMAQ_SANDBOX_KLING_SK", KLING_SK)
        .env("DRAMAQ_TEST_S3_AK", S3_AK)
        .env("DRAMAQ_TEST_S3_SK", S3_SK)
        .env("DRAMAQ_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env_remove("DRAMAQ_REDIS_URL")
        .env_remove("DRAMAQ_OUT_DIR")
        .env(
            "RUST_LOG",
            std::env::var("DRAMAQ_TEST_LOG").unwrap_or_else(|_| "error".into()),
        );
    cmd
}

pub const SANDBOX_KEY: &str = "sk-sandbox-test";
/// Pool keys every spawned process gets as `DRAMAQ_TEST_KEY_<n>` (n = 1..=4), for key-pool
/// configs (`[[accounts.NAME.keys]]`).
pub const POOL_KEYS: [&str; 4] = ["sk-pool-1", "sk-pool-2", "sk-pool-3", "sk-pool-4"];
pub const KLING_AK: &str = "sandbox-ak";
pub const KLING_SK: &str = "sandbox-sk";
/// S3 credentials every spawned process gets, under the names [`Env::use_s3`] configures
/// (moto accepts any).
pub const S3_AK: &str = "AKIDDRAMAQE2E";
pub const S3_SK: &str = "dramaq-e2e-s3-secret";
/// The Standard Webhooks secret every spawned process gets as `DRAMAQ_TEST_WEBHOOK_SECRET`
/// (give the sandbox the same with `--webhook-secret`).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

static BUILD: Once = Once::new();

/// Path of a workspace binary, building the workspace's binaries once if needed.
pub fn bin(name: &str) -> PathBuf {
    BUILD.call_once(|| {
        // Always build, so the binaries match the code under test; Cargo makes this a no-op
        // when nothing changed.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_dir = testkit::workspace_bin("x");
        let release = profile_dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n == "release")
            .unwrap_or(false);
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bins", "--workspace", "--quiet"]);
        // `cargo test` runs this executable with the test package's variables set
        // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts such as ring's rerun when one
        // of those changes, so passing them on would rebuild ring and everything above it here,
        // and again at the next plain `cargo build`, every time.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let from_cargo_test = k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref());
            if from_cargo_test {
                cmd.env_remove(k.as_ref());
            }
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build for the dramaq binaries");
        assert!(status.success(), "cargo build --bins failed");
    });
    testkit::workspace_bin(name)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn sample_script() -> PathBuf {
    workspace_root().join("examples/season-sample.yaml")
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait for exit up to `timeout`; returns the exit status when it exited.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sandbox settings for a test.
#[derive(Debug, Clone)]
pub struct SandboxArgs {
    pub render_ms: u64,
    pub render_jitter_ms: u64,
    pub extra: Vec<String>,
}

impl Default for SandboxArgs {
    fn default() -> Self {
        SandboxArgs {
            render_ms: 400,
            render_jitter_ms: 300,
            extra: Vec::new(),
        }
    }
}

/// Everything one end-to-end test needs.
pub struct Env {
    pub redis: RedisServer,
    pub sandbox: Proc,
    pub sandbox_url: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub out: PathBuf,
}

impl Env {
    pub fn start(args: SandboxArgs) -> Result<Env> {
        let redis = RedisServer::start().context("starting redis-server")?;
        let (sandbox, sandbox_url) = start_sandbox(&args)?;
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("out");
        let config = dir.path().join("dramaq.toml");
        let text = test_config(&sandbox_url, &redis.url(), &out)?;
        std::fs::write(&config, text)?;
        Ok(Env {
            redis,
            sandbox,
            sandbox_url,
            dir,
            config,
            out,
        })
    }

    /// Append TOML to the config (e.g. `[accounts.sandbox-sora.quota]` tables).
    pub fn add_config(&self, toml: &str) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)?;
        writeln!(f, "\n{toml}")?;
        Ok(())
    }

    /// Add `line` at the top of the existing `[table]` of the config (appending a second
    /// `[table]` header would be a TOML error).
    pub fn set_in_table(&self, table: &str, line: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        let header = format!("[{table}]\n");
        if !text.contains(&header) {
            bail!("the test config has no [{table}] table");
        }
        std::fs::write(
            &self.config,
            text.replacen(&header, &format!("{header}{line}\n"), 1),
        )?;
        Ok(())
    }

    /// Store outputs in an S3-compatible bucket (e.g. a `testkit::MotoServer`) instead of the
    /// output folder. Credentials reach the processes through variables the config names.
    pub fn use_s3(&self, endpoint: &str, bucket: &str, prefix: &str) -> Result<()> {
        self.set_in_table("storage", "backend = \"s3\"")?;
        self.add_config(&format!(
            "[storage.s3]\nbucket = {bucket:?}\nprefix = {prefix:?}\nendpoint = {endpoint:?}\n\
             allow_http = true\naccess_key_env = \"DRAMAQ_TEST_S3_AK\"\n\
             secret_key_env = \"DRAMAQ_TEST_S3_SK\""
        ))
    }

    /// Write a season script into the test folder and return its path.
    pub fn write_script(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn command(&self, name: &str) -> Command {
        with_test_env(Command::new(bin(name)), &self.config)
    }

    /// Run `dramaq <args>` to completion.
    pub fn dramaq(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command("dramaq").args(args).output()?)
    }

    /// `dramaq <args> --json`, parsed; fails on a non-zero exit.
    pub fn dramaq_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.dramaq(&all)?;
        if !out.status.success() {
            bail!(
                "dramaq {:?} exited {}: {}",
                args,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Start a worker process.
    pub fn worker(&self, args: &[&str]) -> Result<Proc> {
        let child = self
            .command("dramaq-worker")
            .arg("run")
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Proc {
            child,
            name: "dramaq-worker".into(),
        })
    }

    /// Start `dramaq-studio` on a free loopback port; returns the process and its base URL.
    pub fn studio(&self) -> Result<(Proc, String)> {
        let mut child = self
            .command("dramaq-studio")
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting dramaq-studio")?;
        let url = printed_address(&mut child, "dramaq-studio")?;
        let proc = Proc {
            child,
            name: "dramaq-studio".into(),
        };
        Ok((proc, url.trim_end_matches('/').to_string()))
    }

    /// Poll `dramaq status --json` until no task of `season` can move any more (as
    /// `status --wait` judges it), or fail after `timeout`.
    pub fn wait_done(&self, season: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.dramaq_json(&["status", "--season", season])?;
            if season_finished(&st) {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("season {season} not finished after {timeout:?}: {st}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The sandbox's submission counters.
    pub fn sandbox_stats(&self) -> Result<serde_json::Value> {
        let url = format!("{}/admin/stats", self.sandbox_url);
        let body = http::blocking_get(&url)?;
        Ok(serde_json::from_str(&body)?)
    }

    /// `POST` to a sandbox admin endpoint (e.g. `/admin/finish`), parsed.
    pub fn sandbox_admin(&self, path: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.sandbox_url);
        let body = http::blocking_post(&url)?;
        Ok(serde_json::from_str(&body)?)
    }

    /// Rewrite the config file (e.g. a setting inside a table that is already there).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        std::fs::write(&self.config, edit(text))?;
        Ok(())
    }

    /// Start `dramaq <args>` in the background, stdout and stderr piped.
    pub fn dramaq_spawn(&self, args: &[&str]) -> Result<std::process::Child> {
        Ok(self
            .command("dramaq")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// The sandbox's chat counters (`GET /admin/chat`).
    pub fn chat_stats(&self) -> Result<serde_json::Value> {
        let body = http::blocking_get(&format!("{}/admin/chat", self.sandbox_url))?;
        Ok(serde_json::from_str(&body)?)
    }

    /// Every task record of a season (from `dramaq tasks --json`).
    pub fn tasks(&self, season: &str) -> Result<Vec<serde_json::Value>> {
        let v = self.dramaq_json(&["tasks", "--season", season])?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

/// Minimal blocking GET without pulling in reqwest's blocking feature: a current-thread runtime.
pub mod http {
    pub fn blocking_get(url: &str) -> anyhow::Result<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            Ok(::reqwest::get(url)
                .await?
                .error_for_status()?
                .text()
                .await?)
        })
    }

    pub fn blocking_post(url: &str) -> anyhow::Result<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            Ok(::reqwest::Client::new()
                .post(url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?)
        })
    }
}

fn start_sandbox(args: &SandboxArgs) -> Result<(Proc, String)> {
    spawn_sandbox(Command::new(bin("dramaq-sandbox")), "127.0.0.1:0", args)
}

/// Start the sandbox with `cmd` (its binary, possibly wrapped) listening on `addr`; returns it
/// with the base URL it printed.
pub fn spawn_sandbox(mut cmd: Command, addr: &str, args: &SandboxArgs) -> Result<(Proc, String)> {
    let mut child = cmd
        .args(["--addr", addr])
        .args(["--render-ms", &args.render_ms.to_string()])
        .args(["--render-jitter-ms", &args.render_jitter_ms.to_string()])
        .args(&args.extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting dramaq-sandbox")?;
    let url = printed_address(&mut child, "dramaq-sandbox")?;
    let proc = Proc {
        child,
        name: "dramaq-sandbox".into(),
    };
    Ok((proc, url))
}

/// The `http://…` address a server prints as the last word of its first line.
fn printed_address(child: &mut Child, name: &str) -> Result<String> {
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    match line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
    {
        Some(u) => Ok(u.to_string()),
        None => bail!("{name} printed {line:?} instead of its address"),
    }
}

/// Paid submissions per idempotency key from the sandbox's `/admin/stats` answer.
pub fn paid_by_key(stats: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    stats["by_task"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// Whether a `dramaq status --json` season view says nothing can move any more, as
/// `status --wait` judges it: waiting tasks move only when something else does, so with nothing
/// else live, a dead task and no dependency notification pending they are blocked by it.
pub fn season_finished(st: &serde_json::Value) -> bool {
    let moving: u64 = [
        "ready",
        "claimed",
        "submitting",
        "rendering",
        "downloading",
        "delayed",
        "moving",
    ]
    .iter()
    .map(|k| st[*k].as_u64().unwrap_or(0))
    .sum();
    let waiting = st["waiting"].as_u64().unwrap_or(0);
    let blocked = moving == 0
        && st["dead"].as_u64().unwrap_or(0) > 0
        && st["notifications_pending"].as_u64().unwrap_or(0) == 0;
    let live = if blocked { 0 } else { moving + waiting };
    live == 0 && st["total"].as_u64().unwrap_or(0) > 0
}

/// Most of the sorted `times` (ms) in any window of `window_ms`: the peak rate a sandbox saw.
pub fn max_in_window(times: &[u64], window_ms: u64) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window_ms {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}
