//! The operator commands (`dlq`, `queue`, `worker`) against a real redis-server, through the
//! same functions and clap definitions the `dramaq` binary uses: human output, `--json`
//! documents, input errors and exit codes.

use clap::{Parser, Subcommand};
use dramaq_common::config::Config;
use dramaq_common::keys::{fleet, AccountKeys};
use dramaq_common::model::{FailureClass, NewTask, TaskPayload, TaskRecord};
use dramaq_common::ops::Ops;
use dramaq_common::queue::{
    read_ready, Claim, Completion, FailDecision, FailGuard, FailInfo, Queue, QuotaArgs,
};
use dramaq_common::testkit::RedisServer;
use dramaq_producer::ops::{self, DlqCmd, FilterArgs, QueueCmd, WorkerCmd};
use std::process::ExitCode;
use std::time::Duration;

const VA: &str = "vid-a";
const VB: &str = "vid-b";

/// The subcommands as `main.rs` wires them, `--json` global as there.
#[derive(Parser)]
struct Cli {
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
    Worker {
        #[command(subcommand)]
        cmd: WorkerCmd,
    },
}

fn config(url: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
        [redis]
        url = "{url}"
        [accounts.assembly]
        family = "assembly"
        quota = {{ burst = 1 }}
        [accounts.vid-a]
        family = "openai-videos"
        quota = {{ burst = 1 }}
        base_url = "http://127.0.0.1:1/a"
        [accounts.vid-b]
        family = "kling"
        quota = {{ burst = 1 }}
        jwt = false
        base_url = "http://127.0.0.1:1/b"
        [accounts.img-a]
        family = "openai-images"
        quota = {{ burst = 1 }}
        base_url = "http://127.0.0.1:1/i"
        "#
    ))
    .expect("config")
}

fn video(id: &str, ep: &str, account: &str) -> NewTask {
    NewTask {
        id: id.into(),
        season: "s1".into(),
        group: ep.into(),
        label: format!("{ep}/{id}"),
        chain: vec![account.into()],
        payload: TaskPayload::Video {
            prompt: format!("scene {id}"),
            negative_prompt: None,
            duration_s: 5,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: None,
            seed: None,
        },
        deps: vec![],
        ext: "mp4".into(),
        est_cost_usd: 0.5,
    }
}

async fn claim_next(q: &Queue, account: &str) -> Option<TaskRecord> {
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(200))
        .await
        .unwrap();
    let got = read_ready(&mut conn, account, "w1", 1, 100).await.unwrap();
    if got.is_empty() {
        return None;
    }
    match q
        .claim(account, "w1", 30_000, &QuotaArgs::default(), &got)
        .await
        .unwrap()
        .pop()
    {
        Some(Claim::Claimed(r)) => Some(*r),
        _ => None,
    }
}

/// Enqueue `task` alone and make it dead after two attempts (a network error, then `class`).
async fn make_dead(q: &Queue, task: NewTask, class: FailureClass) {
    let account = task.account().to_string();
    q.enqueue("s1", "Season", &[task], 3, |_| {}).await.unwrap();
    for (i, (c, decision)) in [
        (
            FailureClass::Network,
            FailDecision::Retry {
                delay_ms: 0,
                refund_attempt: false,
            },
        ),
        (class, FailDecision::Dead),
    ]
    .into_iter()
    .enumerate()
    {
        if i == 1 {
            q.promote_due(&account, 10).await.unwrap();
        }
        let r = claim_next(q, &account).await.expect("ready");
        q.mark_submitting(&account, &r.id, r.fence).await.unwrap();
        let message = format!("failure {} of {}", i + 1, r.id);
        q.fail(
            &account,
            &r.id,
            &FailGuard::Held { fence: r.fence },
            &decision,
            &FailInfo {
                class: c,
                code: Some("E42"),
                message: &message,
                cooldown_ms: 0,
            },
        )
        .await
        .unwrap();
    }
}

async fn setup() -> (RedisServer, Config, Ops) {
    let server = RedisServer::start().expect("redis-server");
    let cfg = config(&server.url());
    let ops = ops::connect(&cfg).await.expect("connect");
    (server, cfg, ops)
}

fn parse_cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("dramaq").chain(args.iter().copied())).expect("parses")
}

fn parse(args: &[&str]) -> Cmd {
    parse_cli(args).cmd
}

async fn run(ops: &Ops, cfg: &Config, args: &[&str]) -> (anyhow::Result<ExitCode>, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let cli = parse_cli(args);
    let json = cli.json;
    let code = match cli.cmd {
        Cmd::Dlq { cmd } => ops::run_dlq_to(ops, cfg, cmd, json, &mut out, &mut err).await,
        Cmd::Queue { cmd } => ops::run_queue_to(ops, cfg, cmd, json, &mut out, &mut err).await,
        Cmd::Worker { cmd } => ops::run_worker_to(ops, cmd, json, &mut out).await,
    };
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

async fn dead_count(ops: &Ops) -> usize {
    ops.dead_tasks(&Default::default()).await.unwrap().count
}

#[test]
fn clap_parses_every_flag() {
    let cli = parse_cli(&[
        "dlq",
        "requeue",
        "--season",
        "s1",
        "--episode",
        "ep01",
        "--provider",
        VA,
        "--class",
        "provider_error",
        "--to-provider",
        VB,
        "--dry-run",
        "--json",
    ]);
    assert!(cli.json);
    match cli.cmd {
        Cmd::Dlq {
            cmd:
                DlqCmd::Requeue {
                    filter,
                    to_provider,
                    dry_run,
                },
        } => {
            assert_eq!(filter.season.as_deref(), Some("s1"));
            assert_eq!(filter.episode.as_deref(), Some("ep01"));
            assert_eq!(filter.provider.as_deref(), Some(VA));
            assert_eq!(filter.class.as_deref(), Some("provider_error"));
            assert_eq!(to_provider.as_deref(), Some(VB));
            assert!(dry_run);
        }
        _ => panic!("wrong command"),
    }
    assert!(matches!(
        parse(&["queue", "drain", VA, "--wait", "--timeout-secs", "5"]),
        Cmd::Queue {
            cmd: QueueCmd::Drain {
                wait: true,
                timeout_secs: 5,
                ..
            }
        }
    ));
    assert!(matches!(
        parse(&["dlq", "purge", "--class", "auth", "--yes"]),
        Cmd::Dlq {
            cmd: DlqCmd::Purge { yes: true, .. }
        }
    ));
    for args in [
        &["worker", "list", "--json"][..],
        &["--json", "worker", "list"],
    ] {
        let cli = parse_cli(args);
        assert!(cli.json, "{args:?}");
        assert!(matches!(
            cli.cmd,
            Cmd::Worker {
                cmd: WorkerCmd::List
            }
        ));
    }
    assert!(!parse_cli(&["worker", "list"]).json);
}

#[tokio::test]
async fn dlq_commands_print_tables_json_and_refuse_bad_input() {
    let (_server, cfg, ops) = setup().await;
    let q = ops.queue().clone();
    make_dead(&q, video("vid-1", "ep01", VA), FailureClass::ContentPolicy).await;
    make_dead(&q, video("vid-2", "ep01", VA), FailureClass::ProviderError).await;
    make_dead(&q, video("vid-3", "ep02", VB), FailureClass::ProviderError).await;

    // list: a table, and JSON with the documented fields.
    let (code, out, _) = run(&ops, &cfg, &["dlq", "list"]).await;
    assert_eq!(code.unwrap(), ExitCode::SUCCESS);
    assert!(out.starts_with("ID "), "{out}");
    for want in [
        "vid-1",
        "vid-2",
        "vid-3",
        "content_policy",
        "[E42] failure 2",
        "3 dead tasks",
    ] {
        assert!(out.contains(want), "{want} missing in\n{out}");
    }
    let (_, out, _) = run(
        &ops,
        &cfg,
        &["dlq", "list", "--class", "provider_error", "--json"],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["count"], 2);
    let t = &doc["tasks"][0];
    for field in [
        "id",
        "label",
        "season",
        "episode",
        "kind",
        "account",
        "class",
        "attempts",
        "errors",
        "last_error",
        "died_at_ms",
    ] {
        assert!(t.get(field).is_some(), "{field} missing in {t}");
    }
    assert_eq!(t["class"], "provider_error");
    assert_eq!(t["attempts"], 2);
    let filtered = ops::dlq_list(
        &ops,
        &cfg,
        &FilterArgs {
            episode: Some("ep02".into()),
            ..Default::default()
        },
        true,
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(filtered.tasks[0].id, "vid-3");

    // Bad names are refused with the valid choices.
    let (code, _, _) = run(&ops, &cfg, &["dlq", "list", "--class", "policy"]).await;
    let msg = format!("{:#}", code.unwrap_err());
    assert!(
        msg.contains("'policy'") && msg.contains("content_policy"),
        "{msg}"
    );
    let (code, _, _) = run(&ops, &cfg, &["dlq", "list", "--provider", "nobody"]).await;
    let msg = format!("{:#}", code.unwrap_err());
    assert!(
        msg.contains("nobody") && msg.contains("vid-a, vid-b"),
        "{msg}"
    );

    // show: every attempt's error.
    let (_, out, _) = run(&ops, &cfg, &["dlq", "show", "vid-2"]).await;
    assert!(out.contains("errors    2"), "{out}");
    assert!(
        out.contains("failure 1 of vid-2") && out.contains("failure 2 of vid-2"),
        "{out}"
    );
    let (_, out, _) = run(
        &ops,
        &cfg,
        &["dlq", "show", "vid-2", "--season", "s1", "--json"],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["errors"].as_array().unwrap().len(), 2);
    assert_eq!(doc["state"], "dead");
    assert!(doc["died_at_ms"].as_i64().unwrap() > 0);
    let (code, _, _) = run(&ops, &cfg, &["dlq", "show", "vid-404"]).await;
    assert!(format!("{:#}", code.unwrap_err()).contains("vid-404"));

    // requeue: dry run, a target of the wrong family, then for real.
    let (_, out, _) = run(
        &ops,
        &cfg,
        &["dlq", "requeue", "--class", "provider_error", "--dry-run"],
    )
    .await;
    assert!(
        out.contains("dry run: 2 dead tasks would be requeued; nothing changed"),
        "{out}"
    );
    assert_eq!(dead_count(&ops).await, 3);
    let (code, _, _) = run(
        &ops,
        &cfg,
        &[
            "dlq",
            "requeue",
            "--class",
            "provider_error",
            "--to-provider",
            "img-a",
        ],
    )
    .await;
    let msg = format!("{:#}", code.unwrap_err());
    assert!(msg.contains("img-a") && msg.contains("vid-"), "{msg}");
    let (code, _, _) = run(&ops, &cfg, &["dlq", "requeue", "--to-provider", "ghost"]).await;
    let msg = format!("{:#}", code.unwrap_err());
    assert!(
        msg.contains("ghost") && msg.contains("configured accounts"),
        "{msg}"
    );
    assert_eq!(dead_count(&ops).await, 3);

    let (code, out, _) = run(
        &ops,
        &cfg,
        &[
            "dlq",
            "requeue",
            "--provider",
            VA,
            "--class",
            "provider_error",
            "--to-provider",
            VB,
            "--json",
        ],
    )
    .await;
    assert_eq!(code.unwrap(), ExitCode::SUCCESS);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["moved"], 1);
    assert_eq!(doc["tasks"][0]["id"], "vid-2");
    assert_eq!(doc["tasks"][0]["from"], VA);
    assert_eq!(doc["tasks"][0]["to"], VB);
    assert_eq!(doc["tasks"][0]["outcome"], "moved");
    assert_eq!(
        q.task_account("s1", "vid-2").await.unwrap().as_deref(),
        Some(VB)
    );

    // purge: refused without --yes (exit 2, nothing changed), done with it.
    let (code, out, err) = run(&ops, &cfg, &["dlq", "purge", "--provider", VB]).await;
    assert_eq!(code.unwrap(), ExitCode::from(ops::EXIT_REFUSED));
    assert!(
        err.contains("refusing to purge without --yes: 1 dead task would be purged"),
        "{err}"
    );
    assert!(
        out.contains("vid-3") && out.contains("would purge"),
        "{out}"
    );
    assert_eq!(dead_count(&ops).await, 2);
    let (code, out, _) = run(
        &ops,
        &cfg,
        &["dlq", "purge", "--provider", VB, "--yes", "--json"],
    )
    .await;
    assert_eq!(code.unwrap(), ExitCode::SUCCESS);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["confirmed"], true);
    assert_eq!(doc["purged"], 1);
    assert_eq!(doc["tasks"][0]["outcome"], "purged");
    assert_eq!(dead_count(&ops).await, 1);
}

#[tokio::test]
async fn queue_commands_pause_drain_and_report() {
    let (_server, cfg, ops) = setup().await;
    let q = ops.queue().clone();
    q.enqueue(
        "s1",
        "S",
        &[video("vid-1", "ep01", VA), video("vid-2", "ep01", VA)],
        3,
        |_| {},
    )
    .await
    .unwrap();
    let held = claim_next(&q, VA).await.unwrap();

    let (code, out, _) = run(&ops, &cfg, &["queue", "pause", VA, "--reason", "budget"]).await;
    assert_eq!(code.unwrap(), ExitCode::SUCCESS);
    assert!(
        out.contains("vid-a: paused since") && out.contains(": budget"),
        "{out}"
    );
    let (code, _, _) = run(&ops, &cfg, &["queue", "pause", "nobody"]).await;
    let msg = format!("{:#}", code.unwrap_err());
    assert!(
        msg.contains("nobody") && msg.contains("img-a, vid-a, vid-b"),
        "{msg}"
    );

    let (_, out, _) = run(&ops, &cfg, &["queue", "status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = doc["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == VA)
        .unwrap();
    assert_eq!(a["paused"]["reason"], "budget");
    assert_eq!(a["counts"]["ready"], 1);
    assert_eq!(a["counts"]["claimed"], 1);
    assert_eq!(a["dead_set"], 0);
    let (_, out, _) = run(&ops, &cfg, &["queue", "status"]).await;
    assert!(
        out.contains("vid-a: paused") && out.contains("ready 1, claimed 1"),
        "{out}"
    );
    assert!(out.contains("vid-b: running"), "{out}");

    // A claimed task keeps the account from draining: --wait times out with exit code 3.
    let (code, out, err) = run(
        &ops,
        &cfg,
        &["queue", "drain", VA, "--wait", "--timeout-secs", "1"],
    )
    .await;
    assert_eq!(code.unwrap(), ExitCode::from(ops::EXIT_TIMEOUT));
    assert!(
        out.contains("claimed 1") && out.contains("(1 in flight)"),
        "{out}"
    );
    assert!(err.contains("timed out"), "{err}");
    assert!(!out.contains("drained"), "{out}");

    // Once it is stored, drain says so.
    q.complete(
        VA,
        &held.id,
        &Completion {
            fence: held.fence,
            output: "o",
            sha256: "h",
            bytes: 1,
            paid: false,
            by: "w",
        },
    )
    .await
    .unwrap();
    let (code, out, _) = run(&ops, &cfg, &["queue", "drain", VA, "--wait", "--json"]).await;
    assert_eq!(code.unwrap(), ExitCode::SUCCESS);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["drained"], true);
    assert_eq!(doc["already_paused"], true);
    assert_eq!(doc["in_flight"]["ready"], 1);
    assert_eq!(doc["busy"], 0);
    let (_, out, _) = run(&ops, &cfg, &["queue", "drain", VA]).await;
    assert!(out.trim_end().ends_with("drained"), "{out}");

    let (_, out, _) = run(&ops, &cfg, &["queue", "resume", VA]).await;
    assert_eq!(out.trim(), "vid-a: resumed");
    let (_, out, _) = run(&ops, &cfg, &["queue", "resume", VA, "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["was_paused"], false);
    assert!(claim_next(&q, VA).await.is_some(), "claims resume");
}

#[tokio::test]
async fn worker_list_shows_live_workers() {
    let (_server, cfg, ops) = setup().await;
    let mut conn = ops.queue().redis().conn().await.unwrap();
    let now = dramaq_common::queue::redis_time_ms(&mut conn)
        .await
        .unwrap();
    redis::pipe()
        .zadd(fleet::workers(), "host-1:4242", now + 15_000)
        .ignore()
        .zadd(fleet::workers(), "host-2:1", now - 5)
        .ignore()
        .hset_multiple(
            fleet::worker("host-1:4242"),
            &[
                ("pid", "4242".to_string()),
                ("accounts", format!("{VA},{VB}")),
                ("held", "2".to_string()),
                ("stopping", "true".to_string()),
                ("seen_ms", (now - 2_000).to_string()),
            ],
        )
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let (code, out, _) = run(&ops, &cfg, &["worker", "list"]).await;
    assert_eq!(code.unwrap(), ExitCode::SUCCESS);
    assert!(out.contains("host-1:4242") && out.contains("4242"), "{out}");
    assert!(out.contains("vid-a,vid-b") && out.contains("yes"), "{out}");
    assert!(!out.contains("host-2"), "{out}");
    assert!(out.contains("1 live worker"), "{out}");
    let (_, out, _) = run(&ops, &cfg, &["worker", "list", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let w = &doc["workers"][0];
    assert_eq!(w["id"], "host-1:4242");
    assert_eq!(w["pid"], 4242);
    assert_eq!(w["held"], 2);
    assert_eq!(w["stopping"], true);
    assert!(w["age_ms"].as_i64().unwrap() >= 2_000);
    // The paused flag key is untouched by listing workers.
    let paused: bool = redis::cmd("EXISTS")
        .arg(AccountKeys::new(VA).paused())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!paused);
}
