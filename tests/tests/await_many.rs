//! One worker process awaiting 10,000 renders at once.
//!
//! The sandbox renders for ten minutes, so every submitted render stays in flight: the test waits
//! until the provider holds all 10,000 and the queue reports all 10,000 `rendering` while the
//! single worker holds no slot for any of them (its 64 claim slots would otherwise cap the number
//! in flight at 64). Then it finishes every render at the sandbox at once and checks that all of
//! them are downloaded and stored with their checksums, and that each was paid for exactly once.
//!
//! Memory and poll lateness at this scale are measured by `scripts/bench-await.sh`, not here.

use dramaq_e2e::{sha256_file, Env, SandboxArgs};
use serde_json::Value;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const SEASON: &str = "await-many";
const EPISODES: usize = 100;
const SCENES_PER_EPISODE: usize = 100;
const RENDERS: u64 = (EPISODES * SCENES_PER_EPISODE) as u64;

fn script() -> String {
    let mut s = String::from(
        "id: await-many\ntitle: \"Ten thousand renders\"\ndefaults:\n  aspect_ratio: \"9:16\"\n  \
         resolution: \"720p\"\n  duration: 4\n  providers:\n    video: [sandbox-sora]\nepisodes:\n",
    );
    for e in 1..=EPISODES {
        let _ = writeln!(s, "  - id: ep{e:03}\n    scenes:");
        for c in 1..=SCENES_PER_EPISODE {
            let _ = writeln!(
                s,
                "      - id: sc{c:03}\n        description: \"Episode {e}, shot {c}: the harbour at dusk.\""
            );
        }
    }
    s
}

fn count(status: &Value, state: &str) -> u64 {
    status[state].as_u64().unwrap_or(0)
}

#[test]
fn one_worker_awaits_ten_thousand_renders_without_holding_slots() {
    // Renders take ten minutes unless the test finishes them.
    let env = Env::start(SandboxArgs {
        render_ms: 600_000,
        render_jitter_ms: 0,
        extra: Vec::new(),
    })
    .expect("env");
    env.edit_config(|text| {
        text
            // Assembly of 100 episodes is not what this test is about: manifests, not ffmpeg.
            .replace(
                "max_attempts = 8",
                "max_attempts = 8\nffmpeg = \"dramaq-test-no-ffmpeg\"",
            )
            // Nor is the check of each clip: 10,000 ffprobe runs would measure process spawns
            // on a 2-core machine (the probe has its own tests in tests/tests/media.rs).
            .replace("\nprobe = true\n", "\nprobe = false\n")
            // A realistic cadence: 10,000 renders polled every 5-10 s.
            .replace("poll_first_ms = 200", "poll_first_ms = 5000")
            .replace("poll_max_ms = 500", "poll_max_ms = 10000")
    })
    .unwrap();
    let path = env.write_script("await-many.yaml", &script()).unwrap();
    let enqueued = env
        .dramaq_json(&["enqueue", path.to_str().unwrap()])
        .expect("enqueue");
    assert_eq!(enqueued["new"].as_u64(), Some(RENDERS + EPISODES as u64));

    let mut worker = env.worker(&["--concurrency", "64"]).unwrap();

    // Every render in flight at once: at the provider and in the queue.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        let stats = env.sandbox_stats().expect("sandbox stats");
        let status = env
            .dramaq_json(&["status", "--season", SEASON])
            .expect("status");
        if stats["in_flight"].as_u64() == Some(RENDERS) && count(&status, "rendering") == RENDERS {
            break status;
        }
        assert!(
            worker.child.try_wait().unwrap().is_none(),
            "the worker exited while submitting"
        );
        assert!(
            Instant::now() < deadline,
            "not all renders in flight after 300 s: sandbox {} in flight, queue {status}",
            stats["in_flight"]
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Awaited renders hold nothing: no task is claimed or mid-submit, none is waiting for a slot.
    for state in ["ready", "claimed", "submitting", "downloading", "delayed"] {
        assert_eq!(count(&status, state), 0, "{state}: {status}");
    }
    assert_eq!(count(&status, "waiting"), EPISODES as u64, "{status}");

    let finished = env.sandbox_admin("/admin/finish").expect("finish renders");
    assert_eq!(finished["finished"].as_u64(), Some(RENDERS));

    let status = env
        .wait_done(SEASON, Duration::from_secs(300))
        .expect("all renders stored");
    assert_eq!(
        count(&status, "stored"),
        RENDERS + EPISODES as u64,
        "{status}"
    );
    assert_eq!(count(&status, "dead"), 0, "{status}");
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "one worker process did it all"
    );

    // One paid submission per render.
    let stats = env.sandbox_stats().unwrap();
    assert_eq!(stats["submissions_total"].as_u64(), Some(RENDERS));
    let by_task = stats["by_task"].as_object().expect("by_task");
    assert_eq!(by_task.len() as u64, RENDERS);
    assert!(by_task.values().all(|n| n.as_u64() == Some(1)));

    // Every render stored under the output folder with its recorded checksum and size.
    let tasks = env.tasks(SEASON).unwrap();
    let videos: Vec<&Value> = tasks.iter().filter(|t| t["kind"] == "video").collect();
    assert_eq!(videos.len() as u64, RENDERS);
    for t in videos {
        assert!(
            by_task.contains_key(t["id"].as_str().unwrap()),
            "{} was never submitted",
            t["label"]
        );
        let output = t["output"].as_str().expect("stored task has an output");
        let file = env.out.join(output);
        let sha = sha256_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(Some(sha.as_str()), t["sha256"].as_str(), "{output}");
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            t["bytes"].as_u64().unwrap(),
            "{output}"
        );
    }
}
