//! `dramaq generate` end to end: a premise becomes a season script through the queue (outline
//! and episode tasks run by real workers against the sandbox's chat endpoints), the script is
//! planned, enqueued and rendered; a second run pays for nothing; every LLM quirk ends as
//! specified; a worker killed mid-generation loses nothing and pays no answered call twice.

use dramaq_e2e::{Env, SandboxArgs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

fn env() -> Env {
    let env = Env::start(SandboxArgs {
        render_ms: 150,
        render_jitter_ms: 100,
        extra: Vec::new(),
    })
    .expect("env");
    // Retries of quirky answers within the test's patience.
    env.set_in_table("worker", "retry_base_ms = 100\nretry_max_ms = 400")
        .unwrap();
    // The OpenAI shape, with structured outputs.
    env.add_config(&format!(
        "[accounts.llm-openai]\nfamily = \"openai-chat\"\nbase_url = \"{}/openai/v1\"\n\
         model = \"gpt-4.1\"\napi_key_env = \"DRAMAQ_SANDBOX_KEY\"\njson_mode = \"schema\"\n\
         price = {{ per_m_input = 2.0, per_m_output = 8.0 }}",
        env.sandbox_url
    ))
    .unwrap();
    env
}

fn generate_args<'a>(premise: &'a str, episodes: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--json",
        "generate",
        "--premise",
        premise,
        "--episodes",
        episodes,
        "--scenes-per-episode",
        "2",
        "--characters",
        "3",
        "--out",
        out,
        "--timeout-secs",
        "60",
    ]
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn calls(env: &Env) -> u64 {
    env.chat_stats().unwrap()["calls"].as_u64().unwrap()
}

#[test]
fn premise_to_twelve_episodes_planned_enqueued_and_stored_and_a_rerun_pays_nothing() {
    let env = env();
    let _w1 = env.worker(&["--concurrency", "8"]).unwrap();
    let _w2 = env.worker(&["--concurrency", "8"]).unwrap();
    let script = env.dir.path().join("seasons/love.yaml");
    let script_s = script.display().to_string();
    let premise = "A poor boy and a rich girl, love across class lines; twist in ep 10";
    let args = generate_args(premise, "12", &script_s);

    let out = env.dramaq(&args).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = report(&out);
    assert_eq!(first["missing"], serde_json::json!([]));
    // One outline and one call per episode, nothing repaired on a clean run.
    assert_eq!(first["usage"]["calls"], 13, "{first}");
    assert_eq!(calls(&env), 13);
    assert!(first["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(first["usage"]["cost_usd"].as_f64().unwrap() > 0.0);
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("# Season script written by `dramaq generate`"));
    assert!(text.contains("aspect_ratio: \"9:16\""));
    assert!(text.contains("first_frame:"));
    assert_eq!(text.matches("\n  - id: \"ep").count(), 12);

    // The same command again: every task is stored, no call is made, the same file comes back.
    let again = env.dramaq(&args).unwrap();
    assert!(again.status.success());
    assert_eq!(calls(&env), 13, "a re-run made chat calls");
    assert_eq!(std::fs::read_to_string(&script).unwrap(), text);

    // `status` shows the season's chat usage.
    let season = first["season"].as_str().unwrap();
    let st = env.dramaq_json(&["status", "--season", season]).unwrap();
    assert_eq!(st["chat"]["calls"], 13, "{st}");

    // An ordinary script: planned, enqueued, rendered.
    let plan = env.dramaq_json(&["plan", &script_s]).unwrap();
    let script_season = first["script"].as_str().unwrap();
    assert_eq!(plan["season"], script_season);
    let enq = env.dramaq_json(&["enqueue", &script_s]).unwrap();
    let n = enq["new"].as_u64().unwrap();
    assert!(n > 12 * 2 + 12, "{enq}");
    env.wait_done(script_season, Duration::from_secs(120))
        .unwrap();
    let tasks = env.tasks(script_season).unwrap();
    assert_eq!(tasks.len() as u64, n);
    for t in &tasks {
        assert_eq!(t["state"], "stored", "{} is {}", t["label"], t["state"]);
        assert!(env.out.join(t["output"].as_str().unwrap()).is_file());
    }
}

#[test]
fn every_llm_quirk_ends_as_specified() {
    let env = env();
    let _w = env.worker(&["--concurrency", "16"]).unwrap();
    let dir = env.dir.path().display().to_string();
    // (premise keyword, --llm account, expected exit code)
    let cases: &[(&str, &str, i32)] = &[
        ("chat_empty", "sandbox-llm", 0),
        ("chat_fences", "llm-openai", 0),
        ("chat_keepalive", "sandbox-llm", 0),
        ("chat_truncate", "sandbox-llm", 0),
        ("chat_insufficient", "sandbox-llm", 0),
        ("chat_503", "sandbox-llm", 0),
        ("chat_429", "sandbox-llm", 0),
        ("chat_drift", "sandbox-llm", 0),
        ("chat_drift_forever", "sandbox-llm", 4),
    ];
    let running: Vec<_> = cases
        .iter()
        .map(|(k, llm, _)| {
            let premise = format!("Quirk [sandbox:{k}] season");
            let out = format!("{dir}/{k}.yaml");
            let mut args = generate_args(&premise, "2", &out);
            args.extend(["--llm", llm]);
            env.dramaq_spawn(&args).unwrap()
        })
        .collect();
    let mut reports = BTreeMap::new();
    for ((k, _, code), child) in cases.iter().zip(running) {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every file, even one with an episode missing, is a script `plan` accepts.
        let plan = env.dramaq(&["plan", &format!("{dir}/{k}.yaml")]).unwrap();
        assert!(
            plan.status.success(),
            "{k}: {}",
            String::from_utf8_lossy(&plan.stderr)
        );
        reports.insert(*k, report(&out));
    }
    let stats = env.chat_stats().unwrap();
    // Retried quirks paid the failed call and one more; the drift was repaired once per episode.
    let drift = &reports["chat_drift"];
    assert_eq!(drift["missing"], serde_json::json!([]));
    assert_eq!(drift["usage"]["calls"], 1 + 2 * 2, "{drift}");
    for k in ["chat_empty", "chat_truncate", "chat_insufficient"] {
        // Outline and two episodes, each answered badly once (billed) then well.
        assert_eq!(reports[k]["usage"]["calls"], 6, "{k}: {}", reports[k]);
    }
    // 429 and 503 answers are not billed; fences and keep-alive lines cost nothing extra.
    for k in ["chat_429", "chat_503", "chat_fences", "chat_keepalive"] {
        assert_eq!(reports[k]["usage"]["calls"], 3, "{k}: {}", reports[k]);
    }
    // The drift that never goes away: ep02 is dead as invalid_output after the bounded repairs,
    // and the file says it is missing.
    let forever = &reports["chat_drift_forever"];
    assert_eq!(forever["missing"], serde_json::json!(["ep02"]));
    let season = forever["season"].as_str().unwrap();
    let dead = env
        .dramaq_json(&["dlq", "list", "--season", season])
        .unwrap();
    let dead = dead["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["label"], "script/ep02", "{dead:?}");
    assert_eq!(dead[0]["class"], "invalid_output", "{dead:?}");
    // The validator's own messages are what the task died with.
    let message = dead[0]["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown character `Stranger`"),
        "{message}"
    );
    let text = std::fs::read_to_string(format!("{dir}/chat_drift_forever.yaml")).unwrap();
    assert!(text.contains("# ep02 is MISSING"), "{text}");
    assert!(stats["repairs"].as_u64().unwrap() >= 2 + 3);

    // 402: the account is paused like any out-of-credits account; nothing dies.
    let out = env
        .dramaq(&[
            "--json",
            "generate",
            "--premise",
            "Broke [sandbox:chat_402]",
            "--episodes",
            "1",
            "--llm",
            "llm-openai",
            "--out",
            &format!("{dir}/broke.yaml"),
            "--timeout-secs",
            "5",
        ])
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queues = env.dramaq_json(&["queue", "status"]).unwrap();
    let acct = queues["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "llm-openai")
        .cloned()
        .unwrap();
    assert!(acct["paused"].is_object(), "{acct}");
    assert_eq!(acct["counts"]["dead"], 0, "{acct}");
}

#[test]
fn a_worker_killed_mid_generation_loses_nothing_and_pays_no_answered_call_twice() {
    let env = env();
    let w1 = env.worker(&["--concurrency", "4"]).unwrap();
    let dir = env.dir.path().display().to_string();
    let out_path = format!("{dir}/killed.yaml");
    // Slow answers, and an episode whose first answer needs a repair: the worker is killed
    // while the repair call is in flight, after the first answer arrived.
    let premise = "Killed [sandbox:chat_slow] [sandbox:chat_drift]";
    let child = env
        .dramaq_spawn(&[
            "--json",
            "generate",
            "--premise",
            premise,
            "--episodes",
            "1",
            "--scenes-per-episode",
            "1",
            "--characters",
            "1",
            "--out",
            &out_path,
            "--timeout-secs",
            "60",
        ])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.chat_stats().unwrap()["repairs"].as_u64().unwrap() == 0 {
        assert!(Instant::now() < deadline, "no repair call arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    w1.signal(9);
    drop(w1);
    let _w2 = env.worker(&["--concurrency", "4"]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["missing"], serde_json::json!([]));
    let by_key = env.chat_stats().unwrap()["by_key"].clone();
    let by_key = by_key.as_object().unwrap();
    // Outline and the episode's first (answered) call: paid once each, although the episode
    // task ran twice. The repair call that was cut off had no answer and was asked again.
    let (repairs, firsts): (Vec<_>, Vec<_>) =
        by_key.iter().partition(|(k, _)| k.contains(":repair"));
    assert_eq!(firsts.len(), 2, "{by_key:?}");
    for (k, n) in firsts {
        assert_eq!(n, 1, "{k} was paid {n} times");
    }
    assert_eq!(repairs.len(), 1, "{by_key:?}");
    assert_eq!(repairs[0].1, 2, "{by_key:?}");
}
