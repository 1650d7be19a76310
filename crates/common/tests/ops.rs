//! Operator actions against a real redis-server: dead-letter listing and filters, requeue in
//! place and across accounts (dry run, idempotence, concurrency, crash recovery), purge, pause,
//! drain and the worker registry. Counters are checked against a full recount of the records.

use dramaq_common::config::Config;
use dramaq_common::keys::{fleet, AccountKeys, SeasonKeys};
use dramaq_common::model::{DepRef, FailureClass, NewTask, TaskPayload, TaskRecord, TaskState};
use dramaq_common::ops::{DeadFilter, Ops, OpsError, PurgeOutcome, RequeueOutcome, PAGE};
use dramaq_common::queue::{
    read_ready, Claim, Completion, FailDecision, FailGuard, FailInfo, Queue, QuotaArgs,
};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::{RedisCluster, RedisServer};
use std::collections::BTreeMap;
use std::time::Duration;

const VA: &str = "vid-a";
const VB: &str = "vid-b";
const IA: &str = "img-a";
const IB: &str = "img-b";

fn config() -> Config {
    Config::from_toml_str(
        r#"
        [accounts.assembly]
        family = "assembly"
        quota = { burst = 1 }
        [accounts.vid-a]
        family = "openai-videos"
        quota = { burst = 1 }
        base_url = "http://127.0.0.1:1/a"
        [accounts.vid-b]
        family = "openai-videos"
        quota = { burst = 1 }
        base_url = "http://127.0.0.1:1/b"
        [accounts.img-a]
        family = "openai-images"
        quota = { burst = 1 }
        base_url = "http://127.0.0.1:1/ia"
        [accounts.img-b]
        family = "openai-images"
        quota = { burst = 1 }
        base_url = "http://127.0.0.1:1/ib"
        "#,
    )
    .expect("config")
}

fn video(id: &str, season: &str, ep: &str, account: &str, deps: Vec<DepRef>) -> NewTask {
    NewTask {
        id: id.into(),
        season: season.into(),
        group: ep.into(),
        label: format!("{ep}/{id}"),
        chain: vec![account.into()],
        payload: TaskPayload::Video {
            prompt: format!("scene {id} — “quoted” ✓"),
            negative_prompt: None,
            duration_s: 8,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: deps.first().map(|d| d.id.clone()),
            seed: Some(4_000_000_000),
        },
        deps,
        ext: "mp4".into(),
        est_cost_usd: 0.8,
    }
}

fn image(id: &str, season: &str, account: &str) -> NewTask {
    NewTask {
        id: id.into(),
        season: season.into(),
        group: "characters".into(),
        label: format!("char/{id}"),
        chain: vec![account.into()],
        payload: TaskPayload::Image {
            prompt: "Mira".into(),
            seed: 7,
            aspect_ratio: "9:16".into(),
            reference_image: None,
        },
        deps: vec![],
        ext: "png".into(),
        est_cost_usd: 0.04,
    }
}

async fn queue(url: &str) -> Queue {
    Queue::new(RedisHandle::connect(url, 4).await.expect("connect"))
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
        other => panic!("unexpected claim {other:?}"),
    }
}

/// Enqueue `task` alone and drive it to `dead` with `class` (two errors in its history).
async fn make_dead(q: &Queue, task: NewTask, class: FailureClass) {
    let account = task.account().to_string();
    let season = task.season.clone();
    q.enqueue(&season, "Season", std::slice::from_ref(&task), 3, |_| {})
        .await
        .unwrap();
    // A first retryable failure, then the fatal one: the history must keep both.
    for (i, decision) in [
        FailDecision::Retry {
            delay_ms: 0,
            refund_attempt: false,
        },
        FailDecision::Dead,
    ]
    .into_iter()
    .enumerate()
    {
        if i == 1 {
            assert_eq!(q.promote_due(&account, 10).await.unwrap(), 1);
        }
        let r = claim_next(q, &account).await.expect("ready task");
        assert_eq!(r.id, task.id);
        q.mark_submitting(&account, &r.id, r.fence).await.unwrap();
        let message = format!("attempt {} of {} failed", i + 1, task.id);
        let info = FailInfo {
            class: if i == 0 { FailureClass::Network } else { class },
            code: Some("E1"),
            message: &message,
            cooldown_ms: 0,
        };
        q.fail(
            &account,
            &r.id,
            &FailGuard::Held { fence: r.fence },
            &decision,
            &info,
        )
        .await
        .unwrap();
    }
    let rec = q.get_task(&account, &task.id).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Dead);
}

/// DUMP of every key: equal snapshots mean Redis is unchanged byte for byte.
async fn snapshot(server_keys: Vec<String>, q: &Queue) -> BTreeMap<String, Vec<u8>> {
    let mut conn = q.redis().conn().await.unwrap();
    let mut out = BTreeMap::new();
    for k in server_keys {
        let v: Vec<u8> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.insert(k, v);
    }
    out
}

/// Counters of every account equal a recount of its records (all keys listed by KEYS).
async fn assert_counts_consistent(keys: &[String], q: &Queue) {
    let mut conn = q.redis().conn().await.unwrap();
    let mut recount: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut accounts = std::collections::BTreeSet::new();
    for k in keys {
        let Some(rest) = k.strip_prefix("dq:{") else {
            continue;
        };
        let Some((account, tail)) = rest.split_once("}:") else {
            continue;
        };
        if account == "dramaq" || account.starts_with("season:") {
            continue;
        }
        accounts.insert(account.to_string());
        if let Some(id) = tail.strip_prefix("t:") {
            let raw: Vec<u8> = redis::cmd("GET")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap();
            let r = TaskRecord::from_msgpack(&raw).unwrap();
            assert_eq!(r.account, account, "record {id} lives in its own account");
            *recount
                .entry((account.to_string(), format!("{}|{}", r.season, r.state)))
                .or_default() += 1;
        }
    }
    for account in accounts {
        let fields: Vec<(String, i64)> = redis::cmd("HGETALL")
            .arg(AccountKeys::new(&account).counts())
            .query_async(&mut conn)
            .await
            .unwrap();
        for (field, n) in fields {
            let want = recount
                .remove(&(account.clone(), field.clone()))
                .unwrap_or(0);
            assert_eq!(n, want, "counter {account} {field}");
        }
    }
    assert!(recount.is_empty(), "records without counters: {recount:?}");
}

/// Stream entries of `account` naming task `id`.
async fn entries_for(q: &Queue, account: &str, id: &str) -> usize {
    let mut conn = q.redis().conn().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(AccountKeys::new(account).ready())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .iter()
        .filter(|(_, f)| f.iter().any(|(k, v)| k == "id" && v == id))
        .count()
}

async fn in_dead_set(q: &Queue, account: &str, id: &str) -> bool {
    let mut conn = q.redis().conn().await.unwrap();
    let s: Option<f64> = redis::cmd("ZSCORE")
        .arg(AccountKeys::new(account).dead())
        .arg(id)
        .query_async(&mut conn)
        .await
        .unwrap();
    s.is_some()
}

fn ids(list: &dramaq_common::ops::DeadList) -> Vec<String> {
    let mut v: Vec<String> = list.tasks.iter().map(|t| t.id.clone()).collect();
    v.sort();
    v
}

fn filter(
    season: Option<&str>,
    episode: Option<&str>,
    account: Option<&str>,
    class: Option<FailureClass>,
) -> DeadFilter {
    DeadFilter {
        season: season.map(Into::into),
        episode: episode.map(Into::into),
        account: account.map(Into::into),
        class,
        died_before_ms: None,
    }
}

/// Dead tasks of both classes across two video accounts, two seasons and two episodes, plus a
/// dead character image with a waiting dependent.
async fn populate(q: &Queue) {
    use FailureClass::{ContentPolicy, ProviderError};
    make_dead(q, video("vid-1", "s1", "ep01", VA, vec![]), ContentPolicy).await;
    make_dead(q, video("vid-2", "s1", "ep01", VA, vec![]), ProviderError).await;
    make_dead(q, video("vid-3", "s1", "ep02", VA, vec![]), ProviderError).await;
    make_dead(q, video("vid-4", "s1", "ep01", VB, vec![]), ProviderError).await;
    make_dead(q, video("vid-5", "s1", "ep02", VB, vec![]), ContentPolicy).await;
    make_dead(q, video("vid-6", "s2", "ep01", VA, vec![]), ProviderError).await;
    make_dead(q, image("img-1", "s1", IA), ProviderError).await;
    // A scene waiting for the dead image.
    let dep = DepRef {
        id: "img-1".into(),
        account: IA.into(),
    };
    q.enqueue(
        "s1",
        "Season",
        &[video("vid-7", "s1", "ep03", VA, vec![dep])],
        3,
        |_| {},
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn dlq_list_filters_requeue_and_purge() {
    use FailureClass::{ContentPolicy, ProviderError};
    let server = RedisServer::start().expect("redis-server");
    let q = queue(&server.url()).await;
    let ops = Ops::new(q.clone());
    let cfg = config();
    populate(&q).await;

    // Listing: every filter narrows exactly.
    let all = ops.dead_tasks(&DeadFilter::default()).await.unwrap();
    assert_eq!(all.count, 7);
    let t = all.tasks.iter().find(|t| t.id == "vid-1").unwrap();
    assert_eq!(t.class, Some(ContentPolicy));
    assert_eq!(t.attempts, 2);
    assert_eq!(t.errors, 2);
    assert_eq!(t.last_error.as_ref().unwrap().class, ContentPolicy);
    assert!(t.died_at_ms > 0);
    assert_eq!(t.moving_to, None);
    let by_class = ops
        .dead_tasks(&filter(None, None, None, Some(ContentPolicy)))
        .await
        .unwrap();
    assert_eq!(ids(&by_class), ["vid-1", "vid-5"]);
    let by_provider = ops
        .dead_tasks(&filter(None, None, Some(VB), None))
        .await
        .unwrap();
    assert_eq!(ids(&by_provider), ["vid-4", "vid-5"]);
    let by_season = ops
        .dead_tasks(&filter(Some("s2"), None, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&by_season), ["vid-6"]);
    let by_episode = ops
        .dead_tasks(&filter(Some("s1"), Some("ep01"), None, None))
        .await
        .unwrap();
    assert_eq!(ids(&by_episode), ["vid-1", "vid-2", "vid-4"]);
    let all_four = ops
        .dead_tasks(&filter(
            Some("s1"),
            Some("ep02"),
            Some(VA),
            Some(ProviderError),
        ))
        .await
        .unwrap();
    assert_eq!(ids(&all_four), ["vid-3"]);
    let none = ops
        .dead_tasks(&filter(None, None, Some("nobody"), None))
        .await
        .unwrap();
    assert_eq!(none.count, 0);

    // Show: the whole record with every attempt's error, found without a season.
    let shown = ops.show("vid-2", None).await.unwrap();
    assert_eq!(shown.record.account, VA);
    assert_eq!(shown.record.errors.len(), 2);
    assert_eq!(shown.record.errors[0].class, FailureClass::Network);
    assert!(shown.died_at_ms.is_some());
    let json = serde_json::to_value(&shown).unwrap();
    assert_eq!(json["id"], "vid-2");
    assert_eq!(json["errors"].as_array().unwrap().len(), 2);
    assert!(matches!(
        ops.show("nope", Some("s1")).await,
        Err(OpsError::NotFound { .. })
    ));

    // Dry run: Redis unchanged byte for byte.
    let before = snapshot(server.keys(), &q).await;
    let dry = ops
        .requeue(
            &cfg,
            &filter(None, None, Some(VA), Some(ProviderError)),
            Some(VB),
            true,
        )
        .await
        .unwrap();
    assert_eq!(dry.matched, 3);
    assert!(dry
        .tasks
        .iter()
        .all(|t| t.outcome == RequeueOutcome::WouldMove && t.to == VB));
    let dry_in_place = ops
        .requeue(&cfg, &DeadFilter::default(), None, true)
        .await
        .unwrap();
    assert_eq!(dry_in_place.matched, 7);
    assert_eq!(snapshot(server.keys(), &q).await, before);

    // A target whose family cannot produce a task's kind is refused, naming both; nothing moves.
    let err = ops
        .requeue(
            &cfg,
            &filter(Some("s1"), None, None, Some(ProviderError)),
            Some(VB),
            false,
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OpsError::WrongKind { .. }), "{msg}");
    assert!(msg.contains("img-1") && msg.contains(VB), "{msg}");
    let err = ops
        .requeue(&cfg, &DeadFilter::default(), Some("nowhere"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere") && err.contains(VA), "{err}");
    assert_eq!(snapshot(server.keys(), &q).await, before);

    // Requeue the provider errors of vid-a to vid-b.
    let report = ops
        .requeue(
            &cfg,
            &filter(None, None, Some(VA), Some(ProviderError)),
            Some(VB),
            false,
        )
        .await
        .unwrap();
    assert_eq!((report.matched, report.moved), (3, 3));
    for id in ["vid-2", "vid-3", "vid-6"] {
        assert!(
            q.get_task(VA, id).await.unwrap().is_none(),
            "{id} left vid-a"
        );
        assert!(!in_dead_set(&q, VA, id).await);
        let r = q.get_task(VB, id).await.unwrap().expect("moved record");
        assert_eq!(r.state, TaskState::Ready);
        assert_eq!(r.account, VB);
        assert_eq!(r.chain[r.chain_pos as usize], VB);
        assert_eq!(r.attempt, 0);
        assert_eq!(r.failure, None);
        assert_eq!(r.errors.len(), 2, "history kept");
        assert!(r.payload == video(id, &r.season, &r.group, VA, vec![]).payload);
        assert_eq!(entries_for(&q, VB, id).await, 1);
        assert_eq!(
            q.task_account(&r.season, id).await.unwrap().as_deref(),
            Some(VB)
        );
    }
    // The untouched ones are still dead where they were.
    let left = ops.dead_tasks(&DeadFilter::default()).await.unwrap();
    assert_eq!(ids(&left), ["img-1", "vid-1", "vid-4", "vid-5"]);
    assert_counts_consistent(&server.keys(), &q).await;

    // The same requeue again finds nothing and adds nothing.
    let again = ops
        .requeue(
            &cfg,
            &filter(None, None, Some(VA), Some(ProviderError)),
            Some(VB),
            false,
        )
        .await
        .unwrap();
    assert_eq!(again.matched, 0);
    assert_eq!(
        ops.requeue_task(VA, "vid-2", Some(VB)).await.unwrap().0,
        RequeueOutcome::Gone
    );
    assert_eq!(
        ops.requeue_task(VB, "vid-2", None).await.unwrap().0,
        RequeueOutcome::NotDead
    );
    for id in ["vid-2", "vid-3", "vid-6"] {
        assert_eq!(entries_for(&q, VB, id).await, 1);
    }

    // The moved task runs normally in its new account.
    let r = claim_next(&q, VB).await.expect("moved task is claimable");
    assert_eq!(r.account, VB);

    // In-place requeue of a content policy failure (vid-4 in vid-b).
    let report = ops
        .requeue(
            &cfg,
            &filter(None, Some("ep01"), Some(VB), None),
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!((report.matched, report.requeued), (1, 1));
    let r = q.get_task(VB, "vid-4").await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Ready);
    assert_eq!((r.attempt, r.errors.len()), (0, 2));
    assert!(!in_dead_set(&q, VB, "vid-4").await);
    assert_counts_consistent(&server.keys(), &q).await;

    // Moving the dead image to another image account: its waiting dependent now reads it there.
    let report = ops
        .requeue(
            &cfg,
            &filter(None, None, None, Some(ProviderError)),
            Some(IB),
            false,
        )
        .await
        .unwrap();
    assert_eq!(report.moved, 1);
    let dependent = q.get_task(VA, "vid-7").await.unwrap().unwrap();
    assert_eq!(dependent.state, TaskState::Waiting);
    assert_eq!(dependent.deps[0].account, IB);
    assert_eq!(
        dependent.payload,
        video(
            "vid-7",
            "s1",
            "ep03",
            VA,
            vec![DepRef {
                id: "img-1".into(),
                account: IA.into()
            }]
        )
        .payload
    );
    let mut conn = q.redis().conn().await.unwrap();
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(AccountKeys::new(IB).dependents("img-1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, vec![format!("{VA}|vid-7")]);
    let accounts: Vec<String> = redis::cmd("SMEMBERS")
        .arg(SeasonKeys::new("s1").accounts())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(accounts.contains(&IB.to_string()));
    assert_counts_consistent(&server.keys(), &q).await;

    // Purge without confirmation changes nothing and says what it would purge.
    let before = snapshot(server.keys(), &q).await;
    let dry = ops
        .purge(&filter(None, None, None, Some(ContentPolicy)), false)
        .await
        .unwrap();
    assert!(!dry.confirmed);
    assert_eq!((dry.matched, dry.purged), (2, 0));
    assert!(dry
        .tasks
        .iter()
        .all(|t| t.outcome == PurgeOutcome::WouldPurge));
    assert_eq!(snapshot(server.keys(), &q).await, before);

    // Purge with confirmation removes exactly the filtered ones.
    let done = ops
        .purge(
            &filter(Some("s1"), Some("ep02"), None, Some(ContentPolicy)),
            true,
        )
        .await
        .unwrap();
    assert_eq!((done.matched, done.purged), (1, 1));
    assert!(q.get_task(VB, "vid-5").await.unwrap().is_none());
    assert!(!in_dead_set(&q, VB, "vid-5").await);
    assert_eq!(q.task_account("s1", "vid-5").await.unwrap(), None);
    let left = ops.dead_tasks(&DeadFilter::default()).await.unwrap();
    assert_eq!(ids(&left), ["vid-1"]);
    assert_counts_consistent(&server.keys(), &q).await;
}

/// Set `moving_to` on a record as ops_move_reserve.lua does, i.e. a crash right after step 0.
async fn reserve_by_hand(q: &Queue, account: &str, id: &str, target: &str) {
    let script = r#"
        local raw = redis.call('GET', KEYS[1])
        local hi, lo = string.byte(raw, 1, 2)
        local hlen = hi * 256 + lo
        local t = cmsgpack.unpack(string.sub(raw, 3, 2 + hlen))
        t.moving_to = ARGV[1]
        local h = cmsgpack.pack(t)
        redis.call('SET', KEYS[1], string.char(math.floor(#h / 256), #h % 256) .. h .. string.sub(raw, 3 + hlen))
        return 1
    "#;
    let mut conn = q.redis().conn().await.unwrap();
    let _: i64 = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg(AccountKeys::new(account).task(id))
        .arg(target)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn interrupted_moves_are_finished_and_concurrent_requeues_do_not_duplicate() {
    use FailureClass::ProviderError;
    let server = RedisServer::start().expect("redis-server");
    let q = queue(&server.url()).await;
    let ops = Ops::new(q.clone());
    let cfg = config();
    for i in 1..=5 {
        make_dead(
            &q,
            video(&format!("vid-{i}"), "s1", "ep01", VA, vec![]),
            ProviderError,
        )
        .await;
    }

    // Two operators requeue the same task at once: one stream entry.
    let (a, b) = tokio::join!(
        ops.requeue_task(VA, "vid-1", None),
        ops.requeue_task(VA, "vid-1", None)
    );
    let mut outcomes = [a.unwrap().0, b.unwrap().0];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        [RequeueOutcome::NotDead, RequeueOutcome::Requeued]
    );
    assert_eq!(entries_for(&q, VA, "vid-1").await, 1);

    // Two filtered requeues at once, one moving to vid-b: one live copy, one stream entry.
    let f = filter(None, None, Some(VA), None);
    let (a, b) = tokio::join!(
        ops.requeue(&cfg, &f, Some(VB), false),
        ops.requeue(&cfg, &f, None, false)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.moved + b.requeued + b.moved >= 4,
        "every task acted on: {a:?} {b:?}"
    );
    for i in 2..=5 {
        let id = format!("vid-{i}");
        let in_a = entries_for(&q, VA, &id).await;
        let in_b = entries_for(&q, VB, &id).await;
        assert_eq!(
            in_a + in_b,
            1,
            "{id}: {in_a} entries in vid-a, {in_b} in vid-b"
        );
        let live_a = q.get_task(VA, &id).await.unwrap();
        let live_b = q.get_task(VB, &id).await.unwrap();
        assert!(
            live_a.is_some() != live_b.is_some(),
            "{id} in exactly one account"
        );
        let at = if live_a.is_some() { VA } else { VB };
        assert_eq!(
            q.task_account("s1", &id).await.unwrap().as_deref(),
            Some(at)
        );
    }
    assert_counts_consistent(&server.keys(), &q).await;

    // Store what is ready in vid-a, so the tasks made dead next are the only ones there.
    while let Some(r) = claim_next(&q, VA).await {
        q.complete(
            VA,
            &r.id,
            &Completion {
                fence: r.fence,
                output: "o",
                sha256: "h",
                bytes: 1,
                paid: false,
                by: "w",
            },
        )
        .await
        .unwrap();
    }

    // Crash after step 0 (reserved, nothing else): the task is listed with its pending move,
    // purge leaves it, and an in-place requeue finishes the move.
    make_dead(&q, video("vid-8", "s1", "ep02", VA, vec![]), ProviderError).await;
    reserve_by_hand(&q, VA, "vid-8", VB).await;
    let listed = ops
        .dead_tasks(&filter(None, Some("ep02"), None, None))
        .await
        .unwrap();
    assert_eq!(listed.tasks[0].moving_to.as_deref(), Some(VB));
    let purge = ops
        .purge(&filter(None, Some("ep02"), None, None), true)
        .await
        .unwrap();
    assert_eq!(purge.tasks[0].outcome, PurgeOutcome::Moving);
    let report = ops
        .requeue(&cfg, &filter(None, Some("ep02"), None, None), None, false)
        .await
        .unwrap();
    assert_eq!(report.tasks[0].outcome, RequeueOutcome::Moved);
    assert_eq!(report.tasks[0].to, VB);
    assert!(q.get_task(VA, "vid-8").await.unwrap().is_none());
    assert_eq!(entries_for(&q, VB, "vid-8").await, 1);
    assert_counts_consistent(&server.keys(), &q).await;

    // Crash before the last step: the copy exists (ready) in vid-b and the source is still
    // dead there. Rebuild that state by restoring the source copy after a complete move.
    make_dead(&q, video("vid-9", "s1", "ep04", VA, vec![]), ProviderError).await;
    reserve_by_hand(&q, VA, "vid-9", VB).await;
    let mut conn = q.redis().conn().await.unwrap();
    let va = AccountKeys::new(VA);
    let dump: Vec<u8> = redis::cmd("DUMP")
        .arg(va.task("vid-9"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg(va.dead())
        .arg("vid-9")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        ops.requeue_task(VA, "vid-9", Some(VB)).await.unwrap().0,
        RequeueOutcome::Moved
    );
    redis::pipe()
        .cmd("RESTORE")
        .arg(va.task("vid-9"))
        .arg(0)
        .arg(dump)
        .ignore()
        .zadd(va.dead(), "vid-9", score)
        .ignore()
        .hincr(va.counts(), "s1|dead", 1)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_counts_consistent(&server.keys(), &q).await;
    let report = ops
        .requeue(
            &cfg,
            &filter(None, Some("ep04"), None, None),
            Some(VB),
            false,
        )
        .await
        .unwrap();
    assert_eq!(report.tasks[0].outcome, RequeueOutcome::Moved);
    assert!(q.get_task(VA, "vid-9").await.unwrap().is_none());
    assert!(!in_dead_set(&q, VA, "vid-9").await);
    assert_eq!(entries_for(&q, VB, "vid-9").await, 1, "no second entry");
    assert_counts_consistent(&server.keys(), &q).await;

    // Concurrent moves of one task to the same target: one entry.
    make_dead(&q, video("vid-10", "s1", "ep05", VA, vec![]), ProviderError).await;
    let (a, b) = tokio::join!(
        ops.requeue_task(VA, "vid-10", Some(VB)),
        ops.requeue_task(VA, "vid-10", Some(VB))
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(entries_for(&q, VB, "vid-10").await, 1);
    assert!(q.get_task(VA, "vid-10").await.unwrap().is_none());
    assert_counts_consistent(&server.keys(), &q).await;
}

#[tokio::test]
async fn listing_pages_through_large_dead_sets() {
    let server = RedisServer::start().expect("redis-server");
    let q = queue(&server.url()).await;
    let ops = Ops::new(q.clone());
    make_dead(
        &q,
        video("vid-0", "s1", "ep01", VA, vec![]),
        FailureClass::Auth,
    )
    .await;
    // Copy the dead record under many ids, all with the same time of death, past two pages.
    let mut conn = q.redis().conn().await.unwrap();
    let k = AccountKeys::new(VA);
    let rec = q.get_task(VA, "vid-0").await.unwrap().unwrap();
    let n = PAGE * 2 + 7;
    let mut pipe = redis::pipe();
    for i in 1..n {
        let mut r = rec.clone();
        r.id = format!("vid-copy-{i}");
        pipe.set(k.task(&r.id), r.to_msgpack().expect("encode"))
            .ignore();
        pipe.zadd(k.dead(), &r.id, 1_000 + (i / 300) as i64)
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await.unwrap();
    let all = ops.dead_tasks(&DeadFilter::default()).await.unwrap();
    assert_eq!(all.count, n);
    let mut seen: Vec<&str> = all.tasks.iter().map(|t| t.id.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "no duplicates, none skipped");
}

#[tokio::test]
async fn pause_resume_drain_status_and_workers() {
    let server = RedisServer::start().expect("redis-server");
    let q = queue(&server.url()).await;
    let ops = Ops::new(q.clone());
    let tasks: Vec<NewTask> = (0..6)
        .map(|i| video(&format!("vid-{i}"), "s1", "ep01", VA, vec![]))
        .collect();
    q.enqueue("s1", "S", &tasks, 3, |_| {}).await.unwrap();
    q.enqueue(
        "s2",
        "S",
        &[video("vid-x", "s2", "ep01", VA, vec![])],
        3,
        |_| {},
    )
    .await
    .unwrap();

    // States: claimed 1, submitting 1, rendering 1, delayed 1; ready 3 (2 in s1, 1 in s2).
    let c = claim_next(&q, VA).await.unwrap();
    let s = claim_next(&q, VA).await.unwrap();
    q.mark_submitting(VA, &s.id, s.fence).await.unwrap();
    let r = claim_next(&q, VA).await.unwrap();
    q.mark_submitting(VA, &r.id, r.fence).await.unwrap();
    q.mark_accepted(VA, &r.id, r.fence, "p-1", None, 60_000)
        .await
        .unwrap();
    let d = claim_next(&q, VA).await.unwrap();
    q.fail(
        VA,
        &d.id,
        &FailGuard::Held { fence: d.fence },
        &FailDecision::Retry {
            delay_ms: 60_000,
            refund_attempt: false,
        },
        &FailInfo {
            class: FailureClass::Network,
            code: None,
            message: "reset",
            cooldown_ms: 0,
        },
    )
    .await
    .unwrap();

    // Pause: the flag holds since/reason/by; claims stop.
    assert_eq!(ops.paused(VA).await.unwrap(), None);
    let p = ops
        .pause(VA, Some("quota review"), Some("ops@host"))
        .await
        .unwrap();
    assert!(!p.already_paused);
    let mut conn = q.redis().conn().await.unwrap();
    let raw: String = redis::cmd("GET")
        .arg(AccountKeys::new(VA).paused())
        .query_async(&mut conn)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["reason"], "quota review");
    assert!(v["since_ms"].as_i64().unwrap() > 0);
    let mut blocking = q
        .redis()
        .blocking_conn(Duration::from_millis(200))
        .await
        .unwrap();
    let got = read_ready(&mut blocking, VA, "w1", 1, 100).await.unwrap();
    assert!(matches!(
        q.claim(VA, "w1", 5_000, &QuotaArgs::default(), &got)
            .await
            .unwrap()[..],
        [Claim::Paused]
    ));
    // Pausing again keeps the first pause.
    let again = ops.pause(VA, Some("other"), None).await.unwrap();
    assert!(again.already_paused);
    assert_eq!(again.paused.reason.as_deref(), Some("quota review"));

    // Drain report: numbers from the counters, summed over seasons.
    let drain = ops.drain(VA, None, None).await.unwrap();
    assert!(drain.already_paused);
    assert_eq!(drain.in_flight.ready, 3);
    assert_eq!(drain.in_flight.claimed, 1);
    assert_eq!(drain.in_flight.submitting, 1);
    assert_eq!(drain.in_flight.rendering, 1);
    assert_eq!(drain.in_flight.downloading, 0);
    assert_eq!(drain.in_flight.delayed, 1);
    assert_eq!(drain.busy, 3);
    assert!(!drain.drained);

    // Finish the in-flight work: drained.
    q.complete(
        VA,
        &c.id,
        &Completion {
            fence: c.fence,
            output: "o",
            sha256: "h",
            bytes: 1,
            paid: false,
            by: "w",
        },
    )
    .await
    .unwrap();
    q.complete(
        VA,
        &s.id,
        &Completion {
            fence: s.fence,
            output: "o",
            sha256: "h",
            bytes: 1,
            paid: false,
            by: "w",
        },
    )
    .await
    .unwrap();
    q.fail(
        VA,
        &r.id,
        &FailGuard::Render {
            provider_task_id: "p-1".into(),
        },
        &FailDecision::Dead,
        &FailInfo {
            class: FailureClass::ContentPolicy,
            code: None,
            message: "blocked",
            cooldown_ms: 0,
        },
    )
    .await
    .unwrap();
    let drain = ops.drain_status(VA).await.unwrap();
    assert_eq!(drain.busy, 0);
    assert!(drain.drained);
    assert!(drain.paused.is_some());

    // Status: every known and configured account, paused flag, counts and dead set size.
    let status = ops
        .queue_status(&[VA.to_string(), VB.to_string()])
        .await
        .unwrap();
    let names: Vec<&str> = status.accounts.iter().map(|a| a.account.as_str()).collect();
    assert_eq!(names, [VA, VB]);
    let a = &status.accounts[0];
    assert!(a.configured);
    assert_eq!(
        a.paused.as_ref().unwrap().reason.as_deref(),
        Some("quota review")
    );
    assert_eq!(a.counts[&TaskState::Stored], 2);
    assert_eq!(a.counts[&TaskState::Dead], 1);
    assert_eq!(a.counts[&TaskState::Ready], 3);
    assert_eq!(a.dead_set, 1);
    let b = &status.accounts[1];
    assert!(b.paused.is_none());
    assert_eq!(b.counts.values().sum::<u64>(), 0);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["accounts"][0]["counts"]["stored"], 2);

    // Resume: the flag is gone, claims work again.
    assert!(ops.resume(VA).await.unwrap().was_paused);
    assert!(!ops.resume(VA).await.unwrap().was_paused);
    assert!(claim_next(&q, VA).await.is_some());

    // Worker registry: live ones only, hash fields parsed, missing hash tolerated.
    let now = dramaq_common::queue::redis_time_ms(&mut conn)
        .await
        .unwrap();
    redis::pipe()
        .zadd(fleet::workers(), "w-live", now + 10_000)
        .ignore()
        .zadd(fleet::workers(), "w-gone", now - 1_000)
        .ignore()
        .zadd(fleet::workers(), "w-bare", now + 10_000)
        .ignore()
        .hset_multiple(
            fleet::worker("w-live"),
            &[
                ("pid", "4242".to_string()),
                ("accounts", format!("{VA},{VB}")),
                ("held", "3".to_string()),
                ("stopping", "false".to_string()),
                ("seen_ms", (now - 1_500).to_string()),
            ],
        )
        .ignore()
        .hset(fleet::worker("w-gone"), "pid", "1")
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let workers = ops.workers().await.unwrap();
    let ids: Vec<&str> = workers.workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["w-bare", "w-live"]);
    let w = &workers.workers[1];
    assert_eq!(w.pid, Some(4242));
    assert_eq!(w.accounts, [VA, VB]);
    assert_eq!(w.held, Some(3));
    assert!(!w.stopping);
    assert_eq!(w.seen_ms, Some(now - 1_500));
    assert!(w.age_ms.unwrap() >= 1_500);
    assert_eq!(w.expires_ms, now + 10_000);
    let bare = &workers.workers[0];
    assert_eq!((bare.pid, bare.held, bare.seen_ms), (None, None, None));
}

#[tokio::test]
async fn requeue_and_purge_on_redis_cluster() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let q = queue(&cluster.url()).await;
    let ops = Ops::new(q.clone());
    let cfg = config();
    make_dead(&q, image("img-1", "s1", IA), FailureClass::ProviderError).await;
    let dep = DepRef {
        id: "img-1".into(),
        account: IA.into(),
    };
    q.enqueue(
        "s1",
        "S",
        &[video("vid-1", "s1", "ep01", VA, vec![dep])],
        3,
        |_| {},
    )
    .await
    .unwrap();
    make_dead(
        &q,
        video("vid-2", "s1", "ep01", VA, vec![]),
        FailureClass::ContentPolicy,
    )
    .await;
    let report = ops
        .requeue(&cfg, &filter(None, None, Some(IA), None), Some(IB), false)
        .await
        .unwrap();
    assert_eq!(report.moved, 1);
    assert_eq!(entries_for(&q, IB, "img-1").await, 1);
    assert_eq!(
        q.get_task(VA, "vid-1").await.unwrap().unwrap().deps[0].account,
        IB
    );
    let purge = ops
        .purge(&filter(None, None, Some(VA), None), true)
        .await
        .unwrap();
    assert_eq!(purge.purged, 1);
    assert_eq!(
        ops.dead_tasks(&DeadFilter::default()).await.unwrap().count,
        0
    );
    let counts = q.season_counts("s1").await.unwrap();
    assert_eq!(counts[&TaskState::Dead], 0);
    assert_eq!(counts[&TaskState::Ready], 1);
    assert_eq!(counts[&TaskState::Waiting], 1);
}
