//! End to end: the sample season through real processes — `dramaq enqueue`, two `dramaq-worker`
//! processes, the sandbox provider and a throwaway redis-server — checking stored files,
//! checksums, exactly one paid submission per task, idempotent re-enqueue, edits that re-render
//! only what changed, bad scripts that write nothing, and shutdowns that lose nothing.

use dramaq_e2e::{sample_script, sha256_file, Env, SandboxArgs};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SEASON: &str = "moonlit-harbor";
const FINISH: Duration = Duration::from_secs(180);

/// Submissions per task id, as the sandbox counted them (keyed by our Idempotency-Key).
fn submissions(env: &Env) -> BTreeMap<String, u64> {
    dramaq_e2e::paid_by_key(&env.sandbox_stats().expect("sandbox stats"))
}

/// Every task is stored, its file exists under the output folder with the recorded checksum.
fn assert_all_stored_with_checksums(env: &Env, tasks: &[Value]) {
    assert!(!tasks.is_empty());
    for t in tasks {
        assert_eq!(
            t["state"], "stored",
            "task {} is {}",
            t["label"], t["state"]
        );
        let output = t["output"].as_str().expect("stored task has an output");
        let path = env.out.join(output);
        assert!(path.starts_with(&env.out));
        let sha = sha256_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            Some(sha.as_str()),
            t["sha256"].as_str(),
            "checksum of {output}"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            t["bytes"].as_u64().unwrap()
        );
    }
}

fn provider_tasks(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .filter(|t| t["kind"] != "assembly")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sample_season_end_to_end_with_two_workers() {
    let env = Env::start(SandboxArgs::default()).expect("env");
    let first = env
        .dramaq_json(&["enqueue", sample_script().to_str().unwrap()])
        .expect("enqueue");
    let total = first["new"].as_u64().unwrap();
    assert_eq!(
        total, 36,
        "the sample expands to 3 images, 12 scenes, 18 lines, 3 episodes"
    );
    assert_eq!(first["existing"], 0);
    assert_eq!(first["season"], SEASON);

    let _w1 = env.worker(&["--concurrency", "8"]).unwrap();
    let _w2 = env.worker(&["--concurrency", "8"]).unwrap();
    let status = env.wait_done(SEASON, FINISH).expect("season finishes");
    assert_eq!(status["stored"].as_u64(), Some(total), "{status}");
    assert_eq!(status["dead"], 0);

    let tasks = env.tasks(SEASON).unwrap();
    assert_eq!(tasks.len() as u64, total);
    assert_all_stored_with_checksums(&env, &tasks);

    // Exactly one paid submission per provider task; assembly is local.
    let subs = submissions(&env);
    let expected = provider_tasks(&tasks);
    assert_eq!(subs.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (id, n) in &subs {
        assert_eq!(*n, 1, "task {id} was submitted {n} times");
    }
    // Both workers took part (the stream hands entries to one consumer each).
    let episodes: BTreeSet<_> = tasks
        .iter()
        .filter(|t| t["kind"] == "assembly")
        .map(|t| t["group"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(episodes.len(), 3);

    // Re-enqueueing the same script adds nothing and pays for nothing.
    let again = env
        .dramaq_json(&["enqueue", sample_script().to_str().unwrap()])
        .unwrap();
    assert_eq!(again["new"], 0);
    assert_eq!(again["existing"].as_u64(), Some(total));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(submissions(&env), subs);
}

#[test]
fn editing_one_scene_rerenders_that_scene_and_its_episode_only() {
    let env = Env::start(SandboxArgs {
        render_ms: 200,
        render_jitter_ms: 100,
        ..Default::default()
    })
    .expect("env");
    let script = sample_script();
    env.dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    let _w = env.worker(&["--concurrency", "16"]).unwrap();
    env.wait_done(SEASON, FINISH).unwrap();
    let before = env.tasks(SEASON).unwrap();
    let subs_before = submissions(&env);

    // Edit the description of the second episode's first scene.
    let text = std::fs::read_to_string(&script).unwrap();
    let edited = edit_scene_description(&text, 1, 0);
    let path = env.dir.path().join("edited.yaml");
    std::fs::write(&path, &edited).unwrap();
    let plan_before = env
        .dramaq_json(&["plan", script.to_str().unwrap()])
        .unwrap();
    let plan_after = env.dramaq_json(&["plan", path.to_str().unwrap()]).unwrap();
    let ids = |p: &Value| -> BTreeSet<String> {
        p["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let changed: BTreeSet<_> = ids(&plan_after)
        .difference(&ids(&plan_before))
        .cloned()
        .collect();
    let labels: BTreeSet<String> = plan_after["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| changed.contains(t["id"].as_str().unwrap()))
        .map(|t| t["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels.len(), 2, "changed: {labels:?}");
    assert!(
        labels.iter().any(|l| l.ends_with("/assembly")),
        "{labels:?}"
    );

    let report = env
        .dramaq_json(&["enqueue", path.to_str().unwrap()])
        .unwrap();
    assert_eq!(report["new"], 2, "{report}");
    env.wait_done(SEASON, FINISH).unwrap();
    let subs_after = submissions(&env);
    let new_subs: BTreeMap<_, _> = subs_after
        .iter()
        .filter(|(k, _)| !subs_before.contains_key(*k))
        .collect();
    // Exactly one new paid render: the edited scene (its assembly is local).
    assert_eq!(new_subs.len(), 1, "{new_subs:?}");
    assert!(changed.contains(new_subs.keys().next().unwrap().as_str()));
    for (k, n) in &subs_before {
        assert_eq!(subs_after.get(k), Some(n), "task {k} was paid for again");
    }
    let after = env.tasks(SEASON).unwrap();
    assert_eq!(after.len(), before.len() + 2);
    assert_all_stored_with_checksums(&env, &after);
}

/// Add a sentence to the `description` of scene `scene` of episode `episode` (0-based),
/// touching nothing else in the file. Handles block scalars (`>-`) and quoted one-liners.
fn edit_scene_description(text: &str, episode: usize, scene: usize) -> String {
    let mut ep = -1i64;
    let mut sc = -1i64;
    let mut out = Vec::new();
    let mut edit_next_line = false;
    let mut done = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if edit_next_line {
            let indent = &line[..line.len() - trimmed.len()];
            out.push(format!("{indent}Rain begins to fall. {trimmed}"));
            edit_next_line = false;
            done = true;
            continue;
        }
        if trimmed.starts_with("scenes:") {
            ep += 1;
            sc = -1;
        }
        if trimmed.starts_with("description:") {
            sc += 1;
            if !done && ep == episode as i64 && sc == scene as i64 {
                let (key, value) = line.split_once("description:").unwrap();
                let value = value.trim();
                if value.starts_with('>') || value.starts_with('|') {
                    out.push(line.to_string());
                    edit_next_line = true;
                } else {
                    let inner = value.trim_matches('"');
                    out.push(format!(
                        "{key}description: \"Rain begins to fall. {inner}\""
                    ));
                    done = true;
                }
                continue;
            }
        }
        out.push(line.to_string());
    }
    assert!(done, "scene not found");
    out.join("\n") + "\n"
}

#[test]
fn a_broken_script_is_rejected_and_writes_nothing() {
    let env = Env::start(SandboxArgs::default()).expect("env");
    let text = std::fs::read_to_string(sample_script()).unwrap();
    // An unknown character in a dialogue line, and an unknown provider account.
    let broken = text
        .replacen("speaker: Mira", "speaker: Nobody", 1)
        .replacen("video: [sandbox-sora]", "video: [no-such-account]", 1);
    let path = env.dir.path().join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let out = env.dramaq(&["enqueue", path.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Nobody"), "{stderr}");
    assert!(stderr.contains("no-such-account"), "{stderr}");
    assert!(
        stderr.contains("broken.yaml:"),
        "errors name the file and line: {stderr}"
    );
    assert!(stderr.contains("nothing was enqueued"), "{stderr}");
    assert!(
        env.redis.keys().is_empty(),
        "Redis holds {:?}",
        env.redis.keys()
    );
}

#[test]
fn sigterm_mid_run_loses_nothing_and_the_next_worker_finishes() {
    let env = Env::start(SandboxArgs {
        render_ms: 1_500,
        render_jitter_ms: 500,
        ..Default::default()
    })
    .expect("env");
    let enq = env
        .dramaq_json(&["enqueue", sample_script().to_str().unwrap()])
        .unwrap();
    let total = enq["new"].as_u64().unwrap();
    let mut w1 = env.worker(&["--concurrency", "4"]).unwrap();
    // Wait until work is genuinely in flight: renders awaited and some stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = env.dramaq_json(&["status", "--season", SEASON]).unwrap();
        if st["rendering"].as_u64().unwrap_or(0) > 0 && st["stored"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    w1.signal(libc::SIGTERM);
    let exit = w1
        .wait_timeout(Duration::from_secs(40))
        .expect("worker exits after SIGTERM");
    assert!(exit.success(), "worker exit status {exit}");
    let st = env.dramaq_json(&["status", "--season", SEASON]).unwrap();
    // Nothing is left held by the stopped worker.
    assert_eq!(st["claimed"], 0, "{st}");
    assert_eq!(st["submitting"], 0, "{st}");
    assert_eq!(st["downloading"], 0, "{st}");
    assert_eq!(st["total"].as_u64(), Some(total));
    assert!(
        st["stored"].as_u64().unwrap() < total,
        "stopped before the end: {st}"
    );

    let _w2 = env.worker(&["--concurrency", "8"]).unwrap();
    let done = env.wait_done(SEASON, FINISH).unwrap();
    assert_eq!(done["stored"].as_u64(), Some(total), "{done}");
    let tasks = env.tasks(SEASON).unwrap();
    assert_all_stored_with_checksums(&env, &tasks);
    for (id, n) in submissions(&env) {
        assert_eq!(
            n, 1,
            "task {id} was submitted {n} times across the shutdown"
        );
    }
}

#[test]
fn kill_9_mid_run_recovers_every_task_without_silent_duplicates() {
    let env = Env::start(SandboxArgs {
        render_ms: 1_500,
        render_jitter_ms: 500,
        ..Default::default()
    })
    .expect("env");
    let enq = env
        .dramaq_json(&["enqueue", sample_script().to_str().unwrap()])
        .unwrap();
    let total = enq["new"].as_u64().unwrap();
    let mut w1 = env.worker(&["--concurrency", "6"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = env.dramaq_json(&["status", "--season", SEASON]).unwrap();
        if st["rendering"].as_u64().unwrap_or(0) > 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    w1.signal(libc::SIGKILL);
    w1.wait_timeout(Duration::from_secs(10)).expect("killed");
    let _w2 = env.worker(&["--concurrency", "8"]).unwrap();
    let done = env.wait_done(SEASON, FINISH).unwrap();
    assert_eq!(done["stored"].as_u64(), Some(total), "{done}");
    let tasks = env.tasks(SEASON).unwrap();
    assert_all_stored_with_checksums(&env, &tasks);
    let flagged: BTreeSet<String> = tasks
        .iter()
        .filter(|t| t["possible_duplicate"] == true)
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    for (id, n) in submissions(&env) {
        assert!(
            n == 1 || flagged.contains(&id),
            "task {id} paid {n} times without being flagged"
        );
    }
}
