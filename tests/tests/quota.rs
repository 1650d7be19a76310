//! Quotas across the fleet, end to end: worker processes against a sandbox that enforces the
//! provider's real limits per key. The sandbox is the witness: it records every accepted submit,
//! the peak number of unfinished renders and every 429 it answered.

use dramaq_e2e::{max_in_window, Env, SandboxArgs};
use serde_json::Value;
use std::time::{Duration, Instant};

const SEASON: &str = "quota-test";

/// A season of `scenes` text-to-video scenes on `account` (4 s each on Sora, 5 s on Kling).
fn season(scenes: usize, account: &str, duration: u32, first_prompt_extra: &str) -> String {
    let mut s = format!(
        "id: {SEASON}\ntitle: \"Quota test\"\ndefaults:\n  aspect_ratio: \"9:16\"\n  resolution: \"720p\"\n  duration: {duration}\n  providers:\n    video: [{account}]\nepisodes:\n  - id: ep01\n    scenes:\n"
    );
    for i in 1..=scenes {
        let extra = if i == 1 { first_prompt_extra } else { "" };
        s.push_str(&format!(
            "      - id: sc{i:02}\n        description: \"Shot {i} of the harbour at dusk, gulls circling. {extra}\"\n"
        ));
    }
    s
}

fn stats(env: &Env) -> Value {
    env.sandbox_stats().expect("sandbox stats")
}

#[test]
fn three_workers_stay_within_the_account_rate_and_concurrency() {
    let env = Env::start(SandboxArgs {
        render_ms: 1_500,
        render_jitter_ms: 500,
        extra: [
            "--rate-per-sec",
            "5",
            "--burst",
            "2",
            "--max-concurrent",
            "4",
        ]
        .map(String::from)
        .to_vec(),
    })
    .expect("env");
    env.add_config(
        "[accounts.sandbox-sora.quota]\nsubmit_per_sec = 5\nburst = 2\nmax_concurrent = 4",
    )
    .unwrap();
    let script = env
        .write_script("quota.yaml", &season(40, "sandbox-sora", 4, ""))
        .unwrap();
    let enq = env
        .dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    assert_eq!(enq["new"], 41, "{enq}");
    let _workers: Vec<_> = (0..3)
        .map(|_| env.worker(&["--concurrency", "16"]).unwrap())
        .collect();
    let done = env.wait_done(SEASON, Duration::from_secs(180)).unwrap();
    assert_eq!(done["stored"], 41, "{done}");

    let s = stats(&env);
    let peak = s["max_concurrent_seen"].as_u64().unwrap();
    assert!(
        peak <= 4,
        "the sandbox saw {peak} concurrent renders (limit 4)"
    );
    assert!(
        peak >= 3,
        "the fleet should use its concurrency, saw only {peak}"
    );
    let mut times: Vec<u64> = s["submit_times_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    times.sort_unstable();
    assert_eq!(times.len(), 40, "one paid submit per scene");
    let window = max_in_window(&times, 10_000);
    assert!(
        window <= 5 * 10 + 2,
        "{window} submits in one 10 s window (quota 5/s + burst 2)"
    );
    let limited = s["rate_limited_total"].as_u64().unwrap();
    // Arrival jitter between the claim and the HTTP request can cost a stray 429; without the
    // fleet-wide limiter about two thirds of the submits are refused (scripts/bench-quota.sh).
    assert!(
        limited <= 4,
        "the fleet-wide limiter should keep 429s near zero, got {limited} of 40"
    );
}

#[test]
fn a_burst_of_429s_costs_no_attempt_and_work_resumes() {
    // No quota configured: the provider's limit (2/s) is discovered through 429 + Retry-After.
    let env = Env::start(SandboxArgs {
        render_ms: 300,
        render_jitter_ms: 100,
        extra: ["--rate-per-sec", "2", "--burst", "1"]
            .map(String::from)
            .to_vec(),
    })
    .expect("env");
    let script = env
        .write_script("burst.yaml", &season(12, "sandbox-sora", 4, ""))
        .unwrap();
    env.dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    let _w = env.worker(&["--concurrency", "12"]).unwrap();
    let done = env.wait_done(SEASON, Duration::from_secs(120)).unwrap();
    assert_eq!(done["stored"], 13, "{done}");
    assert_eq!(done["dead"], 0, "{done}");
    let s = stats(&env);
    assert!(
        s["rate_limited_total"].as_u64().unwrap() > 0,
        "the burst must have hit 429s: {s}"
    );
    assert_eq!(s["submissions_total"], 12, "each scene paid once");
    let tasks = env.tasks(SEASON).unwrap();
    let mut saw_limit = false;
    for t in tasks.iter().filter(|t| t["kind"] == "video") {
        // Rate-limited attempts give their attempt back: one real submit each.
        assert_eq!(
            t["attempt"], 1,
            "{} used {} attempts",
            t["label"], t["attempt"]
        );
        let errors = t["errors"].as_array().cloned().unwrap_or_default();
        saw_limit |= errors.iter().any(|e| e["class"] == "rate_limited");
        assert!(
            errors.iter().all(|e| e["class"] == "rate_limited"),
            "{errors:?}"
        );
    }
    assert!(saw_limit, "some task recorded its 429");
}

#[test]
fn out_of_credits_pauses_the_account_and_its_tasks_wait() {
    let env = Env::start(SandboxArgs::default()).expect("env");
    let script = env
        .write_script(
            "credits.yaml",
            &season(3, "sandbox-kling", 5, "[sandbox:out_of_credits]"),
        )
        .unwrap();
    env.dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    let _w = env.worker(&["--concurrency", "1"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let account = loop {
        let status = env.dramaq_json(&["queue", "status"]).unwrap();
        let kling = status["accounts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["account"] == "sandbox-kling").cloned());
        if let Some(k) = kling.filter(|k| !k["paused"].is_null()) {
            break k;
        }
        assert!(Instant::now() < deadline, "account never paused: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        account["paused"]["reason"], "insufficient_credits",
        "{account}"
    );
    let st = env.dramaq_json(&["status", "--season", SEASON]).unwrap();
    assert_eq!(st["dead"], 0, "tasks wait, they are not dead: {st}");
    let tasks = env.tasks(SEASON).unwrap();
    let broke = tasks
        .iter()
        .find(|t| t["label"] == "ep01/sc01")
        .expect("the out-of-credits scene");
    assert_eq!(broke["state"], "ready", "{broke}");
    assert_eq!(broke["attempt"].as_u64().unwrap_or(0), 0);
    assert_eq!(broke["errors"][0]["class"], "insufficient_credits");
}
