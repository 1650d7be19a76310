//! The review studio end to end, in a real headless Chromium.
//!
//! Redis, the sandbox, one worker and `dramaq-studio` run as processes; a `review: scenes`
//! season is enqueued; `tests/browser/studio.mjs` (playwright-core driving the system's
//! Chromium) then does what a reviewer and an operator do: watch the seasons page update live,
//! see every scene card with its poster, play a clip, re-roll a scene and watch the take arrive
//! and become selectable, approve every scene of an episode and see it assemble, requeue a dead
//! task after its preview, pause an account and see its claims stop. Screenshots of every page
//! land in `target/studio-screenshots/`.
//!
//! Needs `node`, `chromium` and `tests/browser/node_modules` (`npm ci --prefix tests/browser`);
//! `.ci/run` installs all three.

use dramaq_e2e::{workspace_root, Env, SandboxArgs};
use std::process::Command;

const SEASON: &str = "studio-test";

const SCRIPT: &str = r#"
id: studio-test
title: "Studio test"
review: scenes
defaults:
  aspect_ratio: "9:16"
  resolution: "720p"
  duration: 4
  providers:
    image: [sandbox-image]
    video: [sandbox-sora]
    voice: [sandbox-tts]
characters:
  - name: Mira
    appearance: "Young lighthouse keeper, yellow oilskin coat"
    seed: 1234
episodes:
  - id: ep01
    scenes:
      - id: sc01
        description: "Dusk over a small stone harbour, the lighthouse goes dark"
        characters: [Mira]
        dialogue:
          - { speaker: Mira, line: "The light is out." }
      - id: sc02
        description: "Mira climbs the spiral stairs with a lantern"
        characters: [Mira]
  - id: ep02
    scenes:
      - id: sc01
        description: "A storm rolls in over the breakwater [sandbox:moderation_input]"
      - id: sc02
        description: "Boats strain at their moorings in the rain"
"#;

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        found.status.success() && !path.is_empty(),
        "{name} is not installed: the studio browser test needs node and chromium (.ci/run \
         installs them with apt)"
    );
    path
}

#[test]
fn review_studio_in_headless_chromium() {
    let node = tool("node");
    let chromium = tool("chromium");
    let browser_dir = workspace_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: npm ci --prefix tests/browser"
    );
    let shots = workspace_root().join("target/studio-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    let env = Env::start(SandboxArgs::default()).expect("env");
    // Real masters: assembly takes the poster frames the season page shows.
    env.edit_config(|t| t.replace("\nffmpeg = false\n", "\nffmpeg = true\n"))
        .expect("config");
    let script = env.write_script("studio.yaml", SCRIPT).expect("script");
    let enq = env
        .dramaq_json(&["enqueue", script.to_str().unwrap()])
        .expect("enqueue");
    // 1 character, 4 scenes, 1 line; the two assemblies wait for review.
    assert_eq!(enq["new"], 6, "{enq}");
    let _worker = env.worker(&["--concurrency", "8"]).expect("worker");
    let (_studio, url) = env.studio().expect("studio");

    let out = Command::new(node)
        .arg(browser_dir.join("studio.mjs"))
        .current_dir(&browser_dir)
        .env("STUDIO_URL", &url)
        .env("SEASON", SEASON)
        .env("SHOTS", &shots)
        .env("CHROMIUM", chromium)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let status = env.dramaq_json(&["status", "--season", SEASON]);
        let tasks = env.tasks(SEASON);
        panic!(
            "browser scenario failed ({}):\n{stdout}\n{stderr}\nstatus: {status:?}\ntasks: {tasks:?}",
            out.status
        );
    }
    assert!(
        stdout.contains("studio browser scenario passed"),
        "{stdout}"
    );
    for page in [
        "seasons",
        "season-running",
        "season",
        "scene",
        "scene-takes",
        "episode",
        "dead-preview",
        "dead",
        "accounts",
    ] {
        let png = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", png.display());
    }

    // The queue agrees with what the page showed: the re-roll was one new paid task, and the
    // episode under review was assembled from the approved takes.
    let tasks = env.tasks(SEASON).expect("tasks");
    let takes: Vec<_> = tasks
        .iter()
        .filter(|t| t["label"].as_str().is_some_and(|l| l.contains("/take")))
        .collect();
    assert_eq!(takes.len(), 2, "two re-rolls, each created once: {takes:?}");
    let assemblies: Vec<_> = tasks
        .iter()
        .filter(|t| t["kind"] == "assembly" && t["group"] == "ep01")
        .collect();
    assert!(
        assemblies.iter().any(|a| a["state"] == "stored"),
        "ep01 assembled: {assemblies:?}"
    );
    assert!(
        tasks
            .iter()
            .all(|t| !(t["kind"] == "assembly" && t["group"] == "ep02")),
        "ep02 is not approved and must not be assembled"
    );
}
