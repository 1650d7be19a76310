//! Prometheus end to end: a real `prometheus` scraping a real worker while the sample season
//! runs, then queried over its HTTP API, so the exported names, types, units and values are
//! checked the way dashboards and alerts read them (not only as text on `/metrics`).
//!
//! The Prometheus configuration is derived from `deploy/prometheus/prometheus.yml` (its rule
//! file is copied next to it, so the alert rules must load too): the worker job's target is the
//! test worker's metrics port, the other jobs (reaper, sandbox on their default ports) are left
//! out so the test never scrapes a process of the machine, and every interval is 1 s.
//!
//! Prometheus is required: when no `prometheus` is on PATH the test runs
//! `.ci/prometheus-install.sh` (apt-get as root), and fails with instructions if it is still
//! missing. Every wait is bounded; the whole test gives up after [`OVERALL`].

use anyhow::{bail, Context, Result};
use dramaq_e2e::testkit::free_port;
use dramaq_e2e::{
    bin, sample_script, workspace_root, Env, Proc, SandboxArgs, KLING_AK, KLING_SK, SANDBOX_KEY,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEASON: &str = "moonlit-harbor";
/// Tasks of `examples/season-sample.yaml`: 3 images, 12 scenes, 18 lines, 3 episodes.
const SAMPLE_TASKS: f64 = 36.0;
/// Everything, from start-up to the last query.
const OVERALL: Duration = Duration::from_secs(90);
/// Prometheus and the worker must be up within this.
const START: Duration = Duration::from_secs(20);

/// `prometheus` on PATH, installing it with `.ci/prometheus-install.sh` when missing.
fn prometheus_binary() -> PathBuf {
    if let Some(p) = on_path("prometheus") {
        return p;
    }
    let script = workspace_root().join(".ci/prometheus-install.sh");
    let ran = Command::new("bash").arg(&script).status();
    if let Some(p) = on_path("prometheus") {
        return p;
    }
    panic!(
        "the Prometheus end-to-end test needs a `prometheus` binary on PATH and none was found; \
         {} {}. Install it with `sudo apt-get install -y prometheus` (Debian/Ubuntu) or put a \
         release binary from https://prometheus.io/download/ on PATH.",
        script.display(),
        match ran {
            Ok(s) => format!("ran and exited with {s}"),
            Err(e) => format!("could not be run: {e}"),
        }
    );
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Blocking HTTP on a runtime of its own (the fixtures are synchronous).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Result<Http> {
        Ok(Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// Status and body of a GET.
    fn get(&self, url: reqwest::Url) -> Result<(u16, String)> {
        self.rt.block_on(async {
            let resp = self.client.get(url).send().await?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().await?))
        })
    }

    fn get_str(&self, url: &str) -> Result<(u16, String)> {
        self.get(reqwest::Url::parse(url)?)
    }
}

/// The Prometheus configuration for this test, from the deployed one.
fn derive_config(deployed: &str, worker: SocketAddr) -> Result<String> {
    let mut jobs: Vec<Vec<&str>> = Vec::new();
    let mut head: Vec<&str> = Vec::new();
    let mut in_jobs = false;
    for line in deployed.lines() {
        if line.trim_start().starts_with("- job_name:") {
            in_jobs = true;
            jobs.push(vec![line]);
        } else if in_jobs && (line.starts_with(' ') || line.trim().is_empty()) {
            if let Some(job) = jobs.last_mut() {
                job.push(line);
            }
        } else {
            in_jobs = false;
            head.push(line);
        }
    }
    let worker_job = jobs
        .iter()
        .find(|j| j[0].trim() == "- job_name: dramaq-worker")
        .context("deploy/prometheus/prometheus.yml has no dramaq-worker job")?;
    let worker_job = worker_job.join("\n");
    if !worker_job.contains("\"localhost:9464\"") {
        bail!("the dramaq-worker job no longer scrapes \"localhost:9464\":\n{worker_job}");
    }
    let worker_job = worker_job.replace("\"localhost:9464\"", &format!("\"{worker}\""));
    let mut text = format!(
        "# Derived by tests/tests/prometheus.rs from deploy/prometheus/prometheus.yml: only the\n\
         # dramaq-worker job, pointed at the test worker ({worker}), every interval 1 s.\n"
    );
    for line in head {
        let line = match line.trim_start() {
            l if l.starts_with("scrape_interval:") => "  scrape_interval: 1s",
            l if l.starts_with("scrape_timeout:") => "  scrape_timeout: 1s",
            l if l.starts_with("evaluation_interval:") => "  evaluation_interval: 1s",
            _ => line,
        };
        text.push_str(line);
        text.push('\n');
    }
    for key in [
        "scrape_interval: 1s",
        "scrape_timeout: 1s",
        "scrape_configs:",
    ] {
        if !text.contains(key) {
            bail!("deploy/prometheus/prometheus.yml changed shape: no {key:?} in\n{text}");
        }
    }
    text.push_str(&worker_job);
    text.push('\n');
    Ok(text)
}

/// A Prometheus server on a free port, killed on drop (through [`Proc`]).
struct Prometheus {
    _proc: Proc,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(http: &Http, dir: &Path, worker: SocketAddr, deadline: Instant) -> Result<Prometheus> {
        let binary = prometheus_binary();
        let deploy = workspace_root().join("deploy/prometheus");
        let deployed = std::fs::read_to_string(deploy.join("prometheus.yml"))?;
        let prom_dir = dir.join("prometheus");
        std::fs::create_dir_all(&prom_dir)?;
        std::fs::copy(deploy.join("alerts.yml"), prom_dir.join("alerts.yml"))
            .context("copying deploy/prometheus/alerts.yml")?;
        let config = prom_dir.join("prometheus.yml");
        std::fs::write(&config, derive_config(&deployed, worker)?)?;

        let mut last = String::new();
        for attempt in 0..3 {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let log = prom_dir.join(format!("prometheus-{attempt}.log"));
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    prom_dir.join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let mut proc = Proc {
                child,
                name: "prometheus".into(),
            };
            let ready_by = deadline.min(Instant::now() + START);
            loop {
                if let Ok(Some(status)) = proc.child.try_wait() {
                    last = format!("exited with {status}: {}", tail(&log));
                    break;
                }
                if let Ok((200, _)) = http.get_str(&format!("{url}/-/ready")) {
                    return Ok(Prometheus {
                        _proc: proc,
                        url,
                        log,
                    });
                }
                if Instant::now() > ready_by {
                    bail!("prometheus not ready after {START:?}: {}", tail(&log));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        bail!("prometheus did not start: {last}")
    }

    /// An instant query: each series' labels and value.
    fn query(&self, http: &Http, promql: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", promql)],
        )?;
        let (status, body) = http.get(url)?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("query {promql:?}: HTTP {status}: {body}"))?;
        if v["status"] != "success" {
            bail!("query {promql:?}: HTTP {status}: {body}");
        }
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().cloned().unwrap_or_default() {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .with_context(|| format!("query {promql:?}: no value in {r}"))?;
            out.push((labels, value));
        }
        Ok(out)
    }

    /// The single value of an aggregating query; `None` while no series matches.
    fn scalar(&self, http: &Http, promql: &str) -> Result<Option<f64>> {
        Ok(self.query(http, promql)?.first().map(|(_, v)| *v))
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A worker serving `/metrics` on a free port (`Env::worker` always passes `127.0.0.1:0`).
fn start_worker(env: &Env, http: &Http) -> Result<(Proc, SocketAddr)> {
    let mut last = String::new();
    for _ in 0..3 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let child = Command::new(bin("dramaq-worker"))
            .args(["run", "--concurrency", "16"])
            .args(["--metrics-addr", &addr.to_string()])
            .env("DRAMAQ_CONFIG", &env.config)
            .env("DRAMAQ_SANDBOX_KEY", SANDBOX_KEY)
            .env("DRAMAQ_SANDBOX_KLING_AK", KLING_AK)
            .env("DRAMAQ_SANDBOX_KLING_SK", KLING_SK)
            .env_remove("DRAMAQ_REDIS_URL")
            .env_remove("DRAMAQ_OUT_DIR")
            .env(
                "RUST_LOG",
                std::env::var("DRAMAQ_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut proc = Proc {
            child,
            name: "dramaq-worker".into(),
        };
        let deadline = Instant::now() + START;
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                last = format!("worker exited with {status} (metrics port {addr} taken?)");
                break;
            }
            if let Ok((200, _)) = http.get_str(&format!("http://{addr}/healthz")) {
                return Ok((proc, addr));
            }
            if Instant::now() > deadline {
                bail!("worker metrics endpoint {addr} not up after {START:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    bail!("{last}")
}

/// Families present in an OpenMetrics text: the names on `# TYPE` lines.
fn exported_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A registered family name appears as itself or with its unit suffix (`dramaq_spend` →
/// `dramaq_spend_usd`, `dramaq_render_duration` → `dramaq_render_duration_seconds`).
fn family_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported
        .iter()
        .any(|e| e == name || e.strip_prefix(name).is_some_and(|s| s.starts_with('_')))
}

/// One condition on a query's value.
struct Check {
    promql: String,
    want: String,
    ok: Box<dyn Fn(f64) -> bool>,
}

impl Check {
    fn new(
        promql: impl Into<String>,
        want: impl Into<String>,
        ok: impl Fn(f64) -> bool + 'static,
    ) -> Check {
        Check {
            promql: promql.into(),
            want: want.into(),
            ok: Box::new(ok),
        }
    }
}

#[test]
fn prometheus_scrapes_the_sample_season() {
    let start = Instant::now();
    let deadline = start + OVERALL;
    let http = Http::new().expect("http client");
    // Fail early and clearly when Prometheus is missing, before starting anything else.
    let _ = prometheus_binary();

    let env = Env::start(SandboxArgs::default()).expect("env");
    let (_worker, metrics_addr) = start_worker(&env, &http).expect("worker");
    let prom =
        Prometheus::start(&http, env.dir.path(), metrics_addr, deadline).expect("prometheus");

    // A budget, so the season-budget gauges have a season to export.
    let budget = env
        .dramaq_json(&["budget", "set", SEASON, "1000"])
        .expect("budget set");
    assert_eq!(budget["cap_usd"], 1000.0, "{budget}");
    let enqueued = env
        .dramaq_json(&["enqueue", sample_script().to_str().expect("utf-8 path")])
        .expect("enqueue");
    assert_eq!(
        enqueued["new"].as_u64(),
        Some(SAMPLE_TASKS as u64),
        "{enqueued}"
    );
    let left = deadline.saturating_duration_since(Instant::now());
    let status = env.wait_done(SEASON, left).expect("season finishes");
    assert_eq!(
        status["stored"].as_u64(),
        Some(SAMPLE_TASKS as u64),
        "{status}"
    );

    let planned_usd = env
        .dramaq_json(&["plan", sample_script().to_str().expect("utf-8 path")])
        .expect("plan")["est_cost_usd"]
        .as_f64()
        .expect("plan has est_cost_usd");
    assert!(planned_usd > 0.0, "the sample costs something");

    let video_accounts: BTreeSet<String> = env
        .tasks(SEASON)
        .expect("tasks")
        .iter()
        .filter(|t| t["kind"] == "video")
        .filter_map(|t| t["account"].as_str().map(str::to_string))
        .collect();
    assert!(!video_accounts.is_empty(), "the sample has video tasks");

    let mut checks = vec![
        Check::new(r#"up{job="dramaq-worker"}"#, "== 1 (target scraped)", |v| {
            v == 1.0
        }),
        Check::new("sum(dramaq_tasks_stored_total)", "== 36", |v| {
            v == SAMPLE_TASKS
        }),
        Check::new("sum(dramaq_tasks_claimed_total)", "> 0", |v| v > 0.0),
        Check::new(
            r#"sum(dramaq_provider_requests_total{operation="submit"})"#,
            "> 0",
            |v| v > 0.0,
        ),
        Check::new("sum(dramaq_submit_duration_seconds_count)", "> 0", |v| {
            v > 0.0
        }),
        // Fleet-wide gauges: every refreshing process reports the same, hence max by account.
        Check::new(
            r#"sum(max by (account) (dramaq_queue_tasks{state="stored"}))"#,
            "== 36 (refreshed every 10 s)",
            |v| v == SAMPLE_TASKS,
        ),
        Check::new("sum(dramaq_spend_usd_total)", "> 0", |v| v > 0.0),
        // Spend is counted at the configured prices, as `dramaq plan` estimates it (in cents).
        Check::new(
            "sum(dramaq_spend_usd_total)",
            format!("≈ {planned_usd} (dramaq plan)"),
            move |v| (v - planned_usd).abs() < 0.006,
        ),
    ];
    for a in &video_accounts {
        checks.push(Check::new(
            format!(r#"sum(dramaq_render_duration_seconds_count{{account="{a}"}})"#),
            "> 0",
            |v| v > 0.0,
        ));
    }

    // Poll until every check holds: the counters need a scrape after the last store, the queue
    // gauges a background refresh after it and then a scrape.
    let failing = loop {
        let mut failing = Vec::new();
        for c in &checks {
            match prom.scalar(&http, &c.promql) {
                Ok(Some(v)) if (c.ok)(v) => {}
                Ok(got) => failing.push(format!("{} = {got:?}, want {}", c.promql, c.want)),
                Err(e) => failing.push(format!("{}: {e:#}", c.promql)),
            }
        }
        if failing.is_empty() || Instant::now() > deadline {
            break failing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        failing.is_empty(),
        "after {:?}, Prometheus disagrees:\n  {}\nprometheus log:\n{}",
        start.elapsed(),
        failing.join("\n  "),
        tail(&prom.log)
    );

    // The worker's own endpoint exports every declared family. The season-budget gauges come
    // with the background refresh after the season was enqueued: wait for one round.
    let (code, text) = loop {
        let (code, text) = http
            .get_str(&format!("http://{metrics_addr}/metrics"))
            .expect("scrape the worker");
        if code != 200 || text.contains("dramaq_season_budget_usd{") || Instant::now() >= deadline {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 200);
    assert!(
        text.contains(&format!(
            "dramaq_season_budget_usd{{season=\"{SEASON}\",amount=\"cap\"}} 1000.0"
        )),
        "the season's budget gauge: {text}"
    );
    let exported = exported_families(&text);
    let missing: Vec<&str> = dramaq_worker::metrics::FAMILY_NAMES
        .iter()
        .copied()
        .filter(|n| !family_exported(n, &exported))
        .collect();
    assert!(
        missing.is_empty(),
        "families declared in dramaq_worker::metrics but not exported by the worker after the \
         sample season: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn prometheus_config_is_derived_from_deploy() {
    let deployed =
        std::fs::read_to_string(workspace_root().join("deploy/prometheus/prometheus.yml"))
            .expect("deploy/prometheus/prometheus.yml");
    let addr: SocketAddr = "127.0.0.1:45678".parse().expect("addr");
    let text = derive_config(&deployed, addr).expect("derive");
    assert!(text.contains("\"127.0.0.1:45678\""), "{text}");
    assert!(text.contains("job_name: dramaq-worker"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.contains("targets:") && l.contains("localhost")),
        "{text}"
    );
    assert!(!text.contains("dramaq-reaper"), "{text}");
    assert!(text.contains("scrape_interval: 1s"), "{text}");
    assert!(text.contains("- alerts.yml"), "{text}");
}
