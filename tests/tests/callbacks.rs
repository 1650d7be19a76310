//! Render callbacks as poll triggers, for every family that calls back, end to end: the sandbox
//! calls back the way each provider does (Kling unsigned on every status change, MiniMax after
//! its challenge handshake, fal signed with ED25519 under keys it publishes, Replicate signed
//! with Standard Webhooks), every callback delivered twice, and the worker's receiver
//! (`worker.webhook_addr`) moves each render's next poll to now.
//!
//! The accounts' poll cadence is ten minutes, so a render is only found finished within the
//! test's patience when its callback worked; and each render is polled about once.

use dramaq_e2e::testkit::free_port;
use dramaq_e2e::{Env, SandboxArgs, WEBHOOK_SECRET};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const SEASON: &str = "callbacks";
/// (account, family, path on the sandbox, model, scene duration)
const ACCOUNTS: &[(&str, &str, &str, &str, u32)] = &[
    ("cb-kling", "kling", "kling", "kling-v2-6", 5),
    ("cb-minimax", "minimax", "minimax", "MiniMax-Hailuo-02", 6),
    (
        "cb-fal",
        "fal",
        "fal",
        "fal-ai/kling-video/v2.1/standard/text-to-video",
        5,
    ),
    (
        "cb-replicate",
        "replicate",
        "replicate",
        "kwaivgi/kling-v2.1",
        5,
    ),
];
const SCENES_PER_ACCOUNT: usize = 3;

fn script() -> String {
    let mut s = String::from(
        "id: callbacks\ntitle: \"Called back\"\ndefaults:\n  aspect_ratio: \"9:16\"\n  \
         resolution: \"720p\"\nepisodes:\n",
    );
    for (e, (account, _, _, _, seconds)) in ACCOUNTS.iter().enumerate() {
        let _ = writeln!(s, "  - id: ep{:02}\n    scenes:", e + 1);
        for c in 1..=SCENES_PER_ACCOUNT {
            let _ = writeln!(
                s,
                "      - id: sc{c:02}\n        description: \"Shot {c} on {account}: the harbour at dusk.\"\n        \
                 duration: {seconds}\n        providers:\n          video: [{account}]"
            );
        }
    }
    s
}

#[test]
fn every_family_that_calls_back_gets_its_render_polled_at_once() {
    let env = Env::start(SandboxArgs {
        render_ms: 1500,
        render_jitter_ms: 500,
        extra: vec![
            "--webhook-secret".into(),
            WEBHOOK_SECRET.into(),
            "--webhook-replay".into(),
        ],
    })
    .expect("env");
    let hook_port = free_port().unwrap();
    env.set_in_table(
        "worker",
        &format!("webhook_addr = \"127.0.0.1:{hook_port}\""),
    )
    .unwrap();
    for (name, family, path, model, _) in ACCOUNTS {
        let credentials = if *family == "kling" {
            "api_key_env = \"DRAMAQ_SANDBOX_KLING_AK\"\nsecret_key_env = \"DRAMAQ_SANDBOX_KLING_SK\""
        } else {
            "api_key_env = \"DRAMAQ_SANDBOX_KEY\""
        };
        let signing = match *family {
            "replicate" => "webhook_secret_env = \"DRAMAQ_TEST_WEBHOOK_SECRET\"".to_string(),
            "fal" => format!(
                "webhook_jwks_url = \"{}/fal-rest/.well-known/jwks.json\"",
                env.sandbox_url
            ),
            _ => String::new(),
        };
        env.add_config(&format!(
            "[accounts.{name}]\nfamily = \"{family}\"\nbase_url = \"{}/{path}\"\nmodel = \"{model}\"\n\
             {credentials}\npoll_first_ms = 600000\npoll_max_ms = 600000\n\
             callback_url = \"http://127.0.0.1:{hook_port}/hooks/{name}\"\n{signing}\n",
            env.sandbox_url
        ))
        .unwrap();
    }
    let path = env.write_script("callbacks.yaml", &script()).unwrap();
    env.dramaq_json(&["enqueue", path.to_str().unwrap()])
        .expect("enqueue");

    let _worker = env.worker(&["--concurrency", "16"]).unwrap();
    let status = env
        .wait_done(SEASON, Duration::from_secs(120))
        .expect("every render found finished long before its first scheduled poll");
    let renders = (ACCOUNTS.len() * SCENES_PER_ACCOUNT) as u64;
    assert_eq!(
        status["stored"].as_u64(),
        Some(renders + ACCOUNTS.len() as u64),
        "{status}"
    );

    // Kling calls back twice per render (processing, then the end), the others once; every
    // delivery is made twice (the repeat 300 ms after the first, so it may still be on its way).
    // None was refused: the signatures verified and MiniMax's challenge was echoed.
    let deliveries = 2 * (renders + SCENES_PER_ACCOUNT as u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = env.sandbox_stats().unwrap();
        if stats["callbacks_sent"].as_u64() >= Some(deliveries) || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        stats["callbacks_sent"].as_u64(),
        Some(deliveries),
        "{stats}"
    );
    assert_eq!(stats["callbacks_refused"].as_u64(), Some(0), "{stats}");
    // A callback moved each render's poll once: the repeated delivery and Kling's
    // "processing" did not add polls.
    let polls = stats["status_polls"].as_u64().unwrap();
    assert!(
        (renders..=renders + 2).contains(&polls),
        "{polls} status requests for {renders} renders: {stats}"
    );
    assert_eq!(
        stats["renders_seen_finished"].as_u64(),
        Some(renders),
        "{stats}"
    );
}
