//! Takes and approval against a real redis-server: the script expanded by the real parser,
//! enqueued through the real path, then re-rolled, selected and approved through
//! `dramaq_common::takes` (what `dramaq reroll | select | approve` and the studio call).

use dramaq_common::config::Config;
use dramaq_common::queue::Queue;
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::takes::{AssemblyState, Takes, TakesError};
use dramaq_common::testkit::RedisServer;
use dramaq_common::{TaskKind, TaskPayload, TaskState};
use dramaq_producer::review::{run_to, ReviewCmd};

const CONFIG: &str = r#"
[accounts.vid]
family = "openai-videos"
base_url = "http://127.0.0.1:9/openai"
model = "sora-2"
api_key_env = "DRAMAQ_TAKES_TEST_KEY"
price = { per_second = 0.10 }
"#;

fn script(review: bool, sc2: &str) -> String {
    format!(
        r#"
id: takes
title: Takes
{}
defaults:
  aspect_ratio: "9:16"
  resolution: 720p
  duration: 4
  providers: {{ video: [vid] }}
episodes:
  - id: ep01
    scenes:
      - {{ id: sc01, description: "harbour at dusk" }}
      - {{ id: sc02, description: "{sc2}" }}
  - id: ep02
    scenes:
      - {{ id: sc01, description: "storm over the breakwater" }}
"#,
        if review { "review: scenes" } else { "" }
    )
}

struct Fixture {
    _redis: RedisServer,
    cfg: Config,
    queue: Queue,
    takes: Takes,
}

async fn fixture() -> Fixture {
    let redis = RedisServer::start().expect("redis-server");
    let mut cfg = Config::from_toml_str(CONFIG).expect("config");
    cfg.redis.url = redis.url();
    let queue = Queue::new(
        RedisHandle::connect(&cfg.redis.url, 4)
            .await
            .expect("redis"),
    );
    let takes = Takes::new(queue.clone(), 3);
    Fixture {
        _redis: redis,
        cfg,
        queue,
        takes,
    }
}

/// Enqueue like `dramaq enqueue`: register takes, then enqueue what that returns.
async fn enqueue(f: &Fixture, text: &str) -> u64 {
    let e = dramaq_producer::script::parse_str(text, "takes.yaml", &f.cfg).expect("script");
    let tasks = f
        .takes
        .prepare_enqueue(&e.season, &e.tasks, e.review)
        .await
        .expect("prepare");
    f.queue
        .enqueue(&e.season, &e.title, &tasks, 3, |_| {})
        .await
        .expect("enqueue")
        .new
}

/// Pretend the task was rendered: flip its record to stored (the worker's job in real life).
async fn mark_stored(f: &Fixture, id: &str) {
    let account = f.queue.task_account("takes", id).await.unwrap().unwrap();
    let mut r = f.queue.get_task(&account, id).await.unwrap().unwrap();
    r.state = TaskState::Stored;
    r.output = Some(format!("takes/{}/{id}.mp4", r.group));
    let mut conn = f.queue.redis().conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(dramaq_common::keys::AccountKeys::new(&account).task(id))
        .arg(r.to_msgpack().unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn assemblies(f: &Fixture, group: &str) -> Vec<(String, Vec<String>)> {
    f.queue
        .season_tasks("takes")
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.kind == TaskKind::Assembly && t.group == group)
        .map(|t| match t.payload {
            TaskPayload::Assembly { scenes, .. } => (t.id, scenes),
            _ => unreachable!(),
        })
        .collect()
}

#[tokio::test]
async fn reroll_select_and_reenqueue() {
    let f = fixture().await;
    assert_eq!(enqueue(&f, &script(false, "the lamp room")).await, 5);
    let sc1 = f.takes.scene("takes", "ep01/sc01").await.unwrap();
    assert_eq!(sc1.takes.len(), 1);
    let take1 = sc1.takes[0].id.clone();
    let first_asm = assemblies(&f, "ep01").await;
    assert_eq!(first_asm.len(), 1);

    // Re-roll: take 2 is a new task with its own seed and the note; the episode's assembly is
    // re-made with it, the other episode is untouched.
    let r = f
        .takes
        .reroll("takes", "ep01/sc01", Some(2), Some(" warmer\nlight "))
        .await
        .unwrap();
    assert!(r.new);
    assert_eq!(r.take, 2);
    assert_ne!(r.id, take1);
    let rec = f.queue.get_task("vid", &r.id).await.unwrap().unwrap();
    match &rec.payload {
        TaskPayload::Video { prompt, seed, .. } => {
            assert!(prompt.ends_with(" warmer light"), "{prompt}");
            assert_eq!(*seed, Some(r.seed));
        }
        other => panic!("{other:?}"),
    }
    let asm = assemblies(&f, "ep01").await;
    assert_eq!(asm.len(), 2, "one new assembly of ep01");
    assert!(asm.iter().any(|(_, scenes)| scenes[0] == r.id));
    assert_eq!(assemblies(&f, "ep02").await.len(), 1, "ep02 untouched");

    // The same re-roll again (a double click) creates nothing; another note for the same take
    // number is a conflict; a take number from the future is refused.
    let again = f
        .takes
        .reroll("takes", "ep01/sc01", Some(2), Some("warmer light"))
        .await
        .unwrap();
    assert!(!again.new);
    assert_eq!(again.id, r.id);
    assert!(matches!(
        f.takes
            .reroll("takes", "ep01/sc01", Some(2), Some("colder"))
            .await,
        Err(TakesError::Conflict(_))
    ));
    assert!(matches!(
        f.takes.reroll("takes", "ep01/sc01", Some(5), None).await,
        Err(TakesError::Conflict(_))
    ));
    assert_eq!(
        f.takes
            .scene("takes", "ep01/sc01")
            .await
            .unwrap()
            .takes
            .len(),
        2
    );

    // Two reviewers re-rolling the same scene at once with different notes: one take 2 wins,
    // the other is told to reload, and only one task is created.
    let before = f.queue.season_tasks("takes").await.unwrap().len();
    let (a, b) = tokio::join!(
        f.takes.reroll("takes", "ep02/sc01", Some(2), Some("left")),
        f.takes.reroll("takes", "ep02/sc01", Some(2), Some("right")),
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one wins: {:?} / {:?}",
        a.as_ref().map(|r| &r.id),
        b.as_ref().map(|r| &r.id)
    );
    assert!(matches!(a.err().or(b.err()), Some(TakesError::Conflict(_))));
    let after = f.queue.season_tasks("takes").await.unwrap();
    // One new take and ep02's new assembly.
    assert_eq!(after.len(), before + 2);

    // Selecting take 1 again goes back to the first assembly (same id: nothing new).
    let s = f.takes.select("takes", "ep01/sc01", 1).await.unwrap();
    assert_eq!(
        s.assembly,
        AssemblyState::Queued {
            id: first_asm[0].0.clone(),
            new: false
        }
    );
    assert!(matches!(
        f.takes.select("takes", "ep01/sc01", 9).await,
        Err(TakesError::NotFound(_))
    ));

    // Re-enqueueing the unchanged script keeps the takes and the selection and adds nothing.
    assert_eq!(enqueue(&f, &script(false, "the lamp room")).await, 0);
    let kept = f.takes.scene("takes", "ep01/sc01").await.unwrap();
    assert_eq!((kept.takes.len(), kept.selected), (2, Some(1)));

    // Editing sc02 starts that scene afresh and keeps sc01's takes; the new assembly uses
    // sc01's selected take.
    f.takes.select("takes", "ep01/sc01", 2).await.unwrap();
    assert_eq!(
        enqueue(&f, &script(false, "the lamp room, at night")).await,
        2
    );
    let kept = f.takes.scene("takes", "ep01/sc01").await.unwrap();
    assert_eq!((kept.takes.len(), kept.selected), (2, Some(2)));
    let edited = f.takes.scene("takes", "ep01/sc02").await.unwrap();
    assert_eq!(edited.takes.len(), 1);
    let plan = f.takes.episode("takes", "ep01").await.unwrap();
    let current = plan.current.unwrap();
    let asm = assemblies(&f, "ep01").await;
    let (_, scenes) = asm.iter().find(|(id, _)| *id == current).unwrap();
    assert_eq!(scenes, &vec![r.id.clone(), edited.base.clone()]);
}

#[tokio::test]
async fn review_holds_assembly_until_every_scene_is_approved() {
    let f = fixture().await;
    // 3 scenes, no assembly yet.
    assert_eq!(enqueue(&f, &script(true, "the lamp room")).await, 3);
    assert!(assemblies(&f, "ep01").await.is_empty());
    let sc1 = f.takes.scene("takes", "ep01/sc01").await.unwrap();
    let sc2 = f.takes.scene("takes", "ep01/sc02").await.unwrap();

    // Only a rendered take can be approved.
    assert!(matches!(
        f.takes.approve("takes", "ep01/sc01", None).await,
        Err(TakesError::Conflict(_))
    ));
    mark_stored(&f, &sc1.base).await;
    mark_stored(&f, &sc2.base).await;
    let a = f.takes.approve("takes", "ep01/sc01", None).await.unwrap();
    assert_eq!(
        a.assembly,
        AssemblyState::AwaitingApproval {
            scenes: vec!["ep01/sc02".into()]
        }
    );
    assert!(assemblies(&f, "ep01").await.is_empty());

    // The CLI, same implementation, JSON out.
    let mut out = Vec::new();
    run_to(
        &f.takes,
        ReviewCmd::Approve {
            season: "takes".into(),
            scene: "ep01/sc02".into(),
            take: None,
        },
        true,
        &mut out,
    )
    .await
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["assembly"]["status"], "queued", "{doc}");
    assert_eq!(doc["assembly"]["new"], true, "{doc}");
    assert_eq!(assemblies(&f, "ep01").await.len(), 1);
    assert!(
        assemblies(&f, "ep02").await.is_empty(),
        "ep02 is not approved"
    );

    // A re-roll puts the episode under review again (the new take is not approved), and
    // re-enqueueing keeps the approvals.
    f.takes
        .reroll("takes", "ep01/sc02", None, None)
        .await
        .unwrap();
    let plan = f.takes.episode("takes", "ep01").await.unwrap();
    assert!(plan.current.is_none());
    assert_eq!(enqueue(&f, &script(true, "the lamp room")).await, 0);
    let kept = f.takes.scene("takes", "ep01/sc01").await.unwrap();
    assert_eq!(kept.approved, vec![1]);

    // `dramaq takes` lists them.
    let mut out = Vec::new();
    run_to(
        &f.takes,
        ReviewCmd::Takes {
            season: "takes".into(),
            scene: "ep01/sc02".into(),
        },
        false,
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("take 2 selected (newest); episode under review"),
        "{text}"
    );
}
