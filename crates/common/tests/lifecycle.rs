//! The transition scripts against a real redis-server: every lifecycle edge, fencing, the
//! dependency protocol, lease expiry and the state counters, on standalone Redis and on a
//! 3-primary cluster.

use dramaq_common::keys::AccountKeys;
use dramaq_common::model::{DepRef, FailureClass, NewTask, TaskPayload, TaskState};
use dramaq_common::queue::{
    read_ready, Accepted, Claim, Completion, FailDecision, FailGuard, FailInfo, LeaseAction, Queue,
    QueueError, QuotaArgs,
};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::{RedisCluster, RedisServer};
use std::time::Duration;

const VID: &str = "vid-acct";
const IMG: &str = "img-acct";

fn video(id: &str, deps: Vec<DepRef>) -> NewTask {
    NewTask {
        id: id.into(),
        season: "s1".into(),
        group: "ep01".into(),
        label: format!("ep01/{id}"),
        chain: vec![VID.into()],
        payload: TaskPayload::Video {
            prompt: "a harbour at night — “quoted” \\ slash / unicode ✓".into(),
            negative_prompt: None,
            duration_s: 8,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: deps.first().map(|d| d.id.clone()),
            seed: Some(7),
        },
        deps,
        ext: "mp4".into(),
        est_cost_usd: 0.8,
    }
}

fn image(id: &str) -> NewTask {
    NewTask {
        id: id.into(),
        season: "s1".into(),
        group: "characters".into(),
        label: format!("char/{id}"),
        chain: vec![IMG.into()],
        payload: TaskPayload::Image {
            prompt: "Mira".into(),
            seed: 4_000_000_000,
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

async fn claim_one(
    q: &Queue,
    account: &str,
    worker: &str,
    lease_ms: u64,
) -> Option<dramaq_common::TaskRecord> {
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(200))
        .await
        .unwrap();
    let got = read_ready(&mut conn, account, worker, 1, 100)
        .await
        .unwrap();
    if got.is_empty() {
        return None;
    }
    match q
        .claim(account, worker, lease_ms, &QuotaArgs::default(), &got)
        .await
        .unwrap()
        .pop()
    {
        Some(Claim::Claimed(r)) => Some(*r),
        other => panic!("unexpected claim {other:?}"),
    }
}

async fn counts(q: &Queue) -> Vec<(TaskState, u64)> {
    q.season_counts("s1")
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

async fn full_lifecycle(q: &Queue) {
    let img = image("img-1");
    let vid = video(
        "vid-1",
        vec![DepRef {
            id: "img-1".into(),
            account: IMG.into(),
        }],
    );
    let report = q
        .enqueue("s1", "Season", &[img.clone(), vid.clone()], 3, |_| {})
        .await
        .unwrap();
    assert_eq!((report.new, report.existing), (2, 0));
    let again = q
        .enqueue("s1", "Season", &[img.clone(), vid.clone()], 3, |_| {})
        .await
        .unwrap();
    assert_eq!((again.new, again.existing), (0, 2));
    assert_eq!(
        counts(q).await,
        vec![(TaskState::Waiting, 1), (TaskState::Ready, 1)]
    );

    // The video waits for its image: nothing to claim on the video account.
    assert!(claim_one(q, VID, "w1", 5_000).await.is_none());

    // Image: claimed -> submitting -> stored (synchronous family).
    let rec = claim_one(q, IMG, "w1", 5_000)
        .await
        .expect("image is ready");
    assert_eq!(rec.state, TaskState::Claimed);
    assert_eq!(rec.fence, 1);
    // cjson round trip kept the payload intact (u32 seed past 2^31, unicode).
    assert_eq!(rec.payload, img.payload);
    let attempt = q.mark_submitting(IMG, "img-1", rec.fence).await.unwrap();
    assert_eq!(attempt, 1);
    q.complete(
        IMG,
        "img-1",
        &Completion {
            fence: rec.fence,
            output: "s1/characters/img-1.png",
            sha256: "ab",
            bytes: 3,
            paid: false,
            by: "w",
        },
    )
    .await
    .unwrap();
    // A second completion with the same token is refused: the task is no longer held.
    assert!(matches!(
        q.complete(
            IMG,
            "img-1",
            &Completion {
                fence: rec.fence,
                output: "x",
                sha256: "y",
                bytes: 1,
                paid: false,
                by: "w"
            }
        )
        .await,
        Err(QueueError::Fenced(_))
    ));
    // Notify outbox: the image has a dependent, so it is in the outbox until told.
    let backlog = q.notify_backlog(IMG, 0, 10).await.unwrap();
    assert_eq!(backlog, vec!["img-1".to_string()]);
    assert_eq!(q.notify_dependents(IMG, "img-1").await.unwrap(), 1);
    assert!(q.notify_backlog(IMG, 0, 10).await.unwrap().is_empty());

    // Video: ready now; claim, submit, accepted, polled, done, downloaded, stored.
    let rec = claim_one(q, VID, "w2", 5_000)
        .await
        .expect("video became ready");
    assert_eq!(rec.payload, vid.payload);
    q.mark_submitting(VID, "vid-1", rec.fence).await.unwrap();
    q.mark_accepted(VID, "vid-1", rec.fence, "video_123", Some("{\"a\":1}"), 0)
        .await
        .unwrap();
    let due = q.poll_take(VID, 10, 30_000).await.unwrap();
    assert_eq!(due.renders.len(), 1);
    // The due time is the schedule's score and the take happened at or after it (Redis clock).
    let (ref id, due_ms) = due.renders[0];
    assert_eq!(id, "vid-1");
    assert!(due_ms > 0 && due_ms <= due.taken_ms, "{due:?}");
    // Taken under a poll lease: not due for anyone else now, and due again when the lease ends.
    let none = q.poll_take(VID, 10, 30_000).await.unwrap();
    assert!(none.is_empty());
    let next = none
        .next_due_ms
        .expect("the taken render is still scheduled");
    assert!(
        (29_000..=30_000).contains(&(next - none.taken_ms)),
        "{none:?}"
    );
    assert!(q.poll_again(VID, "vid-1", 0).await.unwrap());
    assert!(!q.poll_again(VID, "vid-never-submitted", 0).await.unwrap());
    assert_eq!(q.poll_take(VID, 10, 30_000).await.unwrap().renders.len(), 1);
    let fence = q
        .render_done(
            VID,
            "vid-1",
            "video_123",
            "{\"type\":\"url\",\"url\":\"http://x\"}",
            "w2",
            5_000,
        )
        .await
        .unwrap();
    assert_eq!(fence, rec.fence + 1);
    // Another poller seeing the same success loses.
    assert!(matches!(
        q.render_done(VID, "vid-1", "video_123", "{}", "w3", 5_000)
            .await,
        Err(QueueError::Fenced(_))
    ));
    // The old token no longer completes.
    assert!(q
        .complete(
            VID,
            "vid-1",
            &Completion {
                fence: rec.fence,
                output: "x",
                sha256: "y",
                bytes: 1,
                paid: false,
                by: "w"
            }
        )
        .await
        .is_err());
    q.complete(
        VID,
        "vid-1",
        &Completion {
            fence,
            output: "s1/ep01/vid-1.mp4",
            sha256: "cd",
            bytes: 10,
            paid: false,
            by: "w",
        },
    )
    .await
    .unwrap();
    let stored = q.get_task(VID, "vid-1").await.unwrap().unwrap();
    assert_eq!(stored.state, TaskState::Stored);
    assert_eq!(stored.provider_task_id.as_deref(), Some("video_123"));
    assert_eq!(stored.sha256.as_deref(), Some("cd"));
    assert_eq!(counts(q).await, vec![(TaskState::Stored, 2)]);
}

async fn failures_and_leases(q: &Queue) {
    let tasks: Vec<NewTask> = (0..3)
        .map(|i| video(&format!("vid-f{i}"), vec![]))
        .collect();
    q.enqueue("s1", "Season", &tasks, 2, |_| {}).await.unwrap();

    // Rate-limited attempt: delayed, attempt given back.
    let r = claim_one(q, VID, "w1", 5_000).await.unwrap();
    q.mark_submitting(VID, &r.id, r.fence).await.unwrap();
    let info = FailInfo {
        class: FailureClass::RateLimited,
        code: Some("429"),
        message: "slow down",
        cooldown_ms: 0,
    };
    let st = q
        .fail(
            VID,
            &r.id,
            &FailGuard::Held { fence: r.fence },
            &FailDecision::Retry {
                delay_ms: 0,
                refund_attempt: true,
            },
            &info,
        )
        .await
        .unwrap();
    assert_eq!(st, TaskState::Delayed);
    let rec = q.get_task(VID, &r.id).await.unwrap().unwrap();
    assert_eq!(rec.attempt, 0);
    assert_eq!(rec.errors.len(), 1);
    assert_eq!(q.promote_due(VID, 10).await.unwrap(), 1);
    assert_eq!(
        q.get_task(VID, &r.id).await.unwrap().unwrap().state,
        TaskState::Ready
    );

    // Content policy from a poll: dead with its class, guarded by provider id.
    let r2 = claim_one(q, VID, "w1", 5_000).await.unwrap();
    q.mark_submitting(VID, &r2.id, r2.fence).await.unwrap();
    q.mark_accepted(VID, &r2.id, r2.fence, "p-2", None, 0)
        .await
        .unwrap();
    let bad = FailInfo {
        class: FailureClass::ContentPolicy,
        code: None,
        message: "blocked",
        cooldown_ms: 0,
    };
    assert!(q
        .fail(
            VID,
            &r2.id,
            &FailGuard::Render {
                provider_task_id: "other".into()
            },
            &FailDecision::Dead,
            &bad
        )
        .await
        .is_err());
    let st = q
        .fail(
            VID,
            &r2.id,
            &FailGuard::Render {
                provider_task_id: "p-2".into(),
            },
            &FailDecision::Dead,
            &bad,
        )
        .await
        .unwrap();
    assert_eq!(st, TaskState::Dead);
    let dead = q.get_task(VID, &r2.id).await.unwrap().unwrap();
    assert_eq!(dead.failure, Some(FailureClass::ContentPolicy));

    // Lease expiry while submitting: back to ready, flagged, counted; late completion refused.
    let r3 = claim_one(q, VID, "w-dead", 1).await.unwrap();
    q.mark_submitting(VID, &r3.id, r3.fence).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = q.expired_leases(VID, 10).await.unwrap();
    assert!(expired.contains(&r3.id));
    assert_eq!(
        q.reap_lease(VID, &r3.id, 3, None, None, true)
            .await
            .unwrap(),
        LeaseAction::Resubmit
    );
    // Twice is a no-op (two reapers at once).
    assert_eq!(
        q.reap_lease(VID, &r3.id, 3, None, None, true)
            .await
            .unwrap(),
        LeaseAction::Gone
    );
    let rec = q.get_task(VID, &r3.id).await.unwrap().unwrap();
    assert!(rec.possible_duplicate);
    assert_eq!(rec.state, TaskState::Ready);
    // The slow submit's render arrives after the reaper took the task back. Nobody claimed it
    // since, so the paid render is adopted instead of being submitted (and paid) again.
    assert_eq!(
        q.mark_accepted(VID, &r3.id, r3.fence, "late", None, 0)
            .await
            .unwrap(),
        Accepted::Adopted
    );
    let rec = q.get_task(VID, &r3.id).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Rendering);
    assert_eq!(rec.provider_task_id.as_deref(), Some("late"));
    assert_eq!(rec.attempt, 1, "the adopted attempt is the one recorded");
    // A second paid render for the same task cannot be attached: flagged and counted.
    assert_eq!(
        q.mark_accepted(VID, &r3.id, r3.fence, "late-2", None, 0)
            .await
            .unwrap(),
        Accepted::Orphaned
    );
    let rec = q.get_task(VID, &r3.id).await.unwrap().unwrap();
    assert_eq!(rec.provider_task_id.as_deref(), Some("late"));
    assert!(rec.possible_duplicate);
    let mut conn = q.redis().conn().await.unwrap();
    let orphaned: i64 = redis::cmd("HGET")
        .arg(AccountKeys::new(VID).stats())
        .arg("orphaned_renders")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(orphaned, 1);
    drop(conn);

    // Heartbeat keeps a live lease and reports a lost one.
    let r4 = claim_one(q, VID, "w4", 5_000).await.unwrap();
    let alive = q
        .heartbeat(
            VID,
            "w4",
            5_000,
            &[(r4.id.clone(), r4.fence), (r3.id.clone(), r3.fence)],
        )
        .await
        .unwrap();
    assert_eq!(alive, vec![true, false]);
    // Release (shutdown) puts it back.
    q.release(VID, &r4.id, r4.fence).await.unwrap();
    assert_eq!(
        q.get_task(VID, &r4.id).await.unwrap().unwrap().state,
        TaskState::Ready
    );

    // Counters equal a full recount from the records.
    let records = q.season_tasks("s1").await.unwrap();
    let mut recount = std::collections::BTreeMap::new();
    for r in &records {
        *recount.entry(r.state).or_insert(0u64) += 1;
    }
    let from_counters: std::collections::BTreeMap<_, _> = counts(q).await.into_iter().collect();
    assert_eq!(from_counters, recount);
}

#[tokio::test]
async fn lifecycle_on_standalone_redis() {
    let server = RedisServer::start().expect("redis-server");
    let q = queue(&server.url()).await;
    full_lifecycle(&q).await;
    failures_and_leases(&q).await;
    // Every key dramaq wrote is under its prefix.
    assert!(server.keys().iter().all(|k| k.starts_with("dq:")));
}

#[tokio::test]
async fn lifecycle_on_redis_cluster() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let q = queue(&cluster.url()).await;
    full_lifecycle(&q).await;
    failures_and_leases(&q).await;
}

#[tokio::test]
async fn orphaned_delivery_is_redelivered() {
    let server = RedisServer::start().expect("redis-server");
    let q = queue(&server.url()).await;
    q.enqueue("s1", "S", &[video("vid-o", vec![])], 3, |_| {})
        .await
        .unwrap();
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(200))
        .await
        .unwrap();
    // Read but never claim: the reader "died".
    let got = read_ready(&mut conn, VID, "dead-reader", 1, 100)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(q.redeliver_orphans(VID, 10, "reaper").await.unwrap(), 1);
    let rec = claim_one(&q, VID, "w1", 5_000).await.expect("redelivered");
    assert_eq!(rec.id, "vid-o");
    let k = AccountKeys::new(VID);
    let mut c = q.redis().conn().await.unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg(k.ready())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 0, "claimed entries are deleted from the stream");
}

/// Completions notify dependents concurrently; with more of them in flight than the pool has
/// connections, none may wait for a second connection while holding one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_notifications_do_not_exhaust_the_pool() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(
        RedisHandle::connect(&server.url(), 2)
            .await
            .expect("connect"),
    );
    let n = 12;
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(image(&format!("img-{i}")));
        tasks.push(video(
            &format!("vid-{i}"),
            vec![DepRef {
                id: format!("img-{i}"),
                account: IMG.into(),
            }],
        ));
    }
    q.enqueue("s1", "S", &tasks, 3, |_| {}).await.unwrap();
    assert!(counts(&q).await.contains(&(TaskState::Waiting, n)));
    let notified = futures::future::join_all((0..n).map(|i| {
        let q = q.clone();
        async move { q.notify_dependents(IMG, &format!("img-{i}")).await }
    }));
    let results = tokio::time::timeout(Duration::from_secs(20), notified)
        .await
        .expect("notifications finished (a pool deadlock never does)");
    assert!(results.into_iter().all(|r| r.unwrap() == 1));
    assert_eq!(counts(&q).await, vec![(TaskState::Ready, 2 * n)]);
}

/// The poller's housekeeping: a batch read where one record is unreadable spoils no other, and
/// an await entry is dropped only when its task awaits nothing.
#[tokio::test]
async fn await_entries_of_gone_or_unreadable_tasks() {
    let server = RedisServer::start().expect("redis-server");
    let q = queue(&server.url()).await;
    q.enqueue("s1", "S", &[video("vid-r", vec![])], 3, |_| {})
        .await
        .unwrap();
    let rec = claim_one(&q, VID, "w1", 5_000).await.expect("claimed");
    q.mark_submitting(VID, "vid-r", rec.fence).await.unwrap();
    q.mark_accepted(VID, "vid-r", rec.fence, "video_r", None, 0)
        .await
        .unwrap();
    let k = AccountKeys::new(VID);
    let mut conn = q.redis().conn().await.unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(k.awaiting())
        .arg(0)
        .arg("vid-ghost")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(k.task("vid-bad"))
        .arg("not a record")
        .query_async(&mut conn)
        .await
        .unwrap();

    let ids: Vec<String> = ["vid-r", "vid-bad", "vid-ghost"].map(String::from).into();
    let got = q.get_tasks(VID, &ids).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().id, "vid-r");
    assert!(
        matches!(got[1], Err(QueueError::Decode { .. })),
        "{:?}",
        got[1]
    );
    assert!(matches!(got[2], Ok(None)));

    // A rendering task keeps its entry; a gone one loses it.
    assert!(!q.poll_drop(VID, "vid-r").await.unwrap());
    assert!(q.poll_drop(VID, "vid-ghost").await.unwrap());
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(k.awaiting())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, vec!["vid-r".to_string()]);
}
