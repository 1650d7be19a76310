//! Renders that never finish in time: past the account's render deadline a task falls back to
//! the next provider of its chain, and without one it is dead-lettered as `timeout`.

use dramaq_e2e::{Env, SandboxArgs};
use std::time::Duration;

const SEASON: &str = "fallback-test";

/// Two OpenAI-style accounts on the sandbox: `sora-hasty` gives up after 1 s (renders take 3 s),
/// `sora-backup` waits as long as it takes.
const ACCOUNTS: &str = r#"
[accounts.sora-hasty]
family = "openai-videos"
base_url = "{sandbox}/openai"
model = "sora-2"
api_key_env = "DRAMAQ_SANDBOX_KEY"
render_deadline_ms = 1000
poll_first_ms = 200
poll_max_ms = 300

[accounts.sora-backup]
family = "openai-videos"
base_url = "{sandbox}/openai"
model = "sora-2"
api_key_env = "DRAMAQ_SANDBOX_KEY"
poll_first_ms = 200
poll_max_ms = 500
"#;

fn season(chain: &str) -> String {
    format!(
        "id: {SEASON}\ntitle: \"Fallback\"\ndefaults:\n  aspect_ratio: \"9:16\"\n  resolution: \"720p\"\n  duration: 4\n  providers:\n    video: [{chain}]\nepisodes:\n  - id: ep01\n    scenes:\n      - id: sc01\n        description: \"The lighthouse beam sweeps the fog.\"\n      - id: sc02\n        description: \"A fishing boat rounds the point.\"\n"
    )
}

fn env() -> Env {
    let env = Env::start(SandboxArgs {
        render_ms: 3_000,
        render_jitter_ms: 0,
        extra: Vec::new(),
    })
    .expect("env");
    env.add_config(&ACCOUNTS.replace("{sandbox}", &env.sandbox_url))
        .unwrap();
    env
}

#[test]
fn a_render_past_its_deadline_falls_back_to_the_next_provider() {
    let env = env();
    let script = env
        .write_script("s.yaml", &season("sora-hasty, sora-backup"))
        .unwrap();
    env.dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    let _w = env.worker(&["--concurrency", "4"]).unwrap();
    let done = env.wait_done(SEASON, Duration::from_secs(90)).unwrap();
    assert_eq!(done["stored"], 3, "{done}");
    assert_eq!(done["dead"], 0, "{done}");
    for t in env
        .tasks(SEASON)
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "video")
    {
        assert_eq!(t["account"], "sora-backup", "{}", t["label"]);
        assert_eq!(t["chain_pos"], 1);
        let errors = t["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e["class"] == "timeout" && e["account"] == "sora-hasty"),
            "the timeout on the first provider is kept in the history: {errors:?}"
        );
    }
}

#[test]
fn without_a_fallback_the_task_is_dead_as_timeout() {
    let env = env();
    let script = env.write_script("s.yaml", &season("sora-hasty")).unwrap();
    env.dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    let _w = env.worker(&["--concurrency", "4"]).unwrap();
    let done = env.wait_done(SEASON, Duration::from_secs(60)).unwrap();
    assert_eq!(done["dead"], 2, "{done}");
    let dlq = env
        .dramaq_json(&["dlq", "list", "--class", "timeout"])
        .unwrap();
    assert_eq!(dlq["count"], 2, "{dlq}");
    // The episode assembly waits for its scenes: it is neither stored nor lost.
    assert_eq!(done["waiting"], 1, "{done}");
}

#[test]
fn a_render_stuck_in_the_provider_queue_is_cancelled_and_moves_on() {
    // Runway renders of 10 s spend their first 2 s queued (PENDING); `runway-hasty` tolerates
    // 1 s in the queue, then cancels (Runway can) and falls back to `runway-backup`.
    let env = Env::start(SandboxArgs {
        render_ms: 10_000,
        render_jitter_ms: 0,
        extra: Vec::new(),
    })
    .expect("env");
    let accounts = r#"
[accounts.runway-hasty]
family = "runway"
base_url = "{sandbox}/runway"
model = "gen4.5"
api_key_env = "DRAMAQ_SANDBOX_KEY"
max_queued_ms = 1000
poll_first_ms = 200
poll_max_ms = 300

[accounts.runway-backup]
family = "runway"
base_url = "{sandbox}/runway"
model = "gen4.5"
api_key_env = "DRAMAQ_SANDBOX_KEY"
poll_first_ms = 500
poll_max_ms = 1000
"#;
    env.add_config(&accounts.replace("{sandbox}", &env.sandbox_url))
        .unwrap();
    let script = season("runway-hasty, runway-backup").replace("duration: 4", "duration: 5");
    let script = env.write_script("s.yaml", &script).unwrap();
    env.dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    let _w = env.worker(&["--concurrency", "4"]).unwrap();
    let done = env.wait_done(SEASON, Duration::from_secs(90)).unwrap();
    assert_eq!(done["stored"], 3, "{done}");
    for t in env
        .tasks(SEASON)
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "video")
    {
        assert_eq!(t["account"], "runway-backup", "{}", t["label"]);
        let errors = t["errors"].as_array().cloned().unwrap_or_default();
        let stuck = errors
            .iter()
            .find(|e| e["code"] == "queued_too_long")
            .unwrap_or_else(|| panic!("no queued_too_long error: {errors:?}"));
        assert_eq!(stuck["account"], "runway-hasty");
        assert!(
            stuck["message"].as_str().unwrap().contains("cancelled"),
            "{stuck}"
        );
    }
}
