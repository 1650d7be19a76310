//! The waiting duty against a real redis-server and a 3-primary cluster: a waiting task whose
//! notification was lost after its dependency's outbox entry was cleared is found and readied;
//! a task whose dependencies are not stored stays waiting; the index is gone round, not re-read.

use dramaq_common::keys::AccountKeys;
use dramaq_common::model::{DepRef, NewTask, TaskPayload, TaskState};
use dramaq_common::queue::{read_ready, Claim, Completion, Queue, QuotaArgs};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::{video_task, RedisCluster, RedisServer};
use dramaq_worker::reaper::waiting::{self, Config, Outcome};
use redis::AsyncCommands;
use std::time::Duration;

const VID: &str = "vid-acct";
const IMG: &str = "img-acct";

fn image(id: &str) -> NewTask {
    NewTask {
        id: id.into(),
        season: "s1".into(),
        group: "characters".into(),
        label: format!("char/{id}"),
        chain: vec![IMG.into()],
        payload: TaskPayload::Image {
            prompt: "Mira".into(),
            seed: 4,
            aspect_ratio: "9:16".into(),
            reference_image: None,
        },
        deps: vec![],
        ext: "png".into(),
        est_cost_usd: 0.0,
    }
}

fn video(id: &str, deps: &[&str]) -> NewTask {
    NewTask {
        deps: deps
            .iter()
            .map(|d| DepRef {
                id: d.to_string(),
                account: IMG.into(),
            })
            .collect(),
        ..video_task(id, VID)
    }
}

/// Claim and store image `id` as a worker would, up to `complete.lua` (its dependents are not
/// told yet).
async fn store(q: &Queue, id: &str) {
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(200))
        .await
        .unwrap();
    let got = read_ready(&mut conn, IMG, "w", 1, 100).await.unwrap();
    let Some(Claim::Claimed(rec)) = q
        .claim(IMG, "w", 10_000, &QuotaArgs::default(), &got)
        .await
        .unwrap()
        .pop()
    else {
        panic!("image {id} is not ready")
    };
    assert_eq!(rec.id, id);
    q.mark_submitting(IMG, id, rec.fence).await.unwrap();
    let output = format!("s1/characters/{id}.png");
    q.complete(
        IMG,
        id,
        &Completion {
            fence: rec.fence,
            output: &output,
            sha256: "ab",
            bytes: 3,
            paid: false,
            by: "w",
        },
    )
    .await
    .unwrap();
}

/// Store image `id` and clear its outbox entry without telling its dependents: what is left when
/// the dependent's shard loses the notification after the outbox entry went.
async fn store_without_telling(q: &Queue, id: &str) {
    store(q, id).await;
    let _: i64 = q
        .redis()
        .conn()
        .await
        .unwrap()
        .zrem(AccountKeys::new(IMG).notify(), id)
        .await
        .unwrap();
}

async fn state(q: &Queue, id: &str) -> TaskState {
    q.get_task(VID, id).await.unwrap().expect("record").state
}

async fn index_len(q: &Queue) -> u64 {
    q.redis()
        .conn()
        .await
        .unwrap()
        .zcard(AccountKeys::new(VID).waiting())
        .await
        .unwrap()
}

fn now_due() -> Config {
    Config {
        recheck_after_ms: 0,
        ..Config::default()
    }
}

async fn lost_notification_is_told_again(q: &Queue) {
    let tasks = [
        image("img-a"),
        image("img-b"),
        video("vid-ab", &["img-a", "img-b"]),
        video("vid-b", &["img-b"]),
    ];
    q.enqueue("s1", "S", &tasks, 3, |_| {}).await.unwrap();
    assert_eq!(index_len(q).await, 2);

    // Nothing stored yet: both wait, and a re-check changes nothing.
    let out = waiting::run_once(q, VID, &now_due()).await.unwrap();
    assert_eq!(
        out,
        Outcome {
            checked: 2,
            told: 0,
            readied: 0
        }
    );
    // Freshly checked entries are not due again within the re-check period (Redis clock).
    let default = waiting::run_once(q, VID, &Config::default()).await.unwrap();
    assert_eq!(default.checked, 0);

    // img-a is stored and the notification to vid-ab is lost: vid-ab is told, still waits for
    // img-b.
    store_without_telling(q, "img-a").await;
    let out = waiting::run_once(q, VID, &now_due()).await.unwrap();
    assert_eq!((out.checked, out.told, out.readied), (2, 1, 0), "{out:?}");
    assert_eq!(state(q, "vid-ab").await, TaskState::Waiting);
    let pending: Vec<String> = q
        .redis()
        .conn()
        .await
        .unwrap()
        .smembers(AccountKeys::new(VID).deps("vid-ab"))
        .await
        .unwrap();
    assert_eq!(pending, vec!["img-b".to_string()]);

    // img-b too: both dependents become ready and leave the index.
    store_without_telling(q, "img-b").await;
    assert_eq!(state(q, "vid-b").await, TaskState::Waiting);
    let out = waiting::run_once(q, VID, &now_due()).await.unwrap();
    assert_eq!((out.checked, out.told, out.readied), (2, 2, 2), "{out:?}");
    assert_eq!(state(q, "vid-ab").await, TaskState::Ready);
    assert_eq!(state(q, "vid-b").await, TaskState::Ready);
    assert_eq!(index_len(q).await, 0);
    let counts = q.season_counts("s1").await.unwrap();
    assert_eq!(counts.get(&TaskState::Ready), Some(&2), "{counts:?}");
    assert_eq!(counts.get(&TaskState::Waiting).copied().unwrap_or(0), 0);

    // The normal path keeps the index clean too: a dependent readied by its notification leaves
    // it at once.
    q.enqueue(
        "s1",
        "S",
        &[image("img-c"), video("vid-c", &["img-c"])],
        3,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(index_len(q).await, 1);
    store(q, "img-c").await;
    assert_eq!(q.notify_dependents(IMG, "img-c").await.unwrap(), 1);
    assert_eq!(state(q, "vid-c").await, TaskState::Ready);
    assert_eq!(index_len(q).await, 0);
}

#[tokio::test]
async fn standalone_lost_notification_is_told_again() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    lost_notification_is_told_again(&q).await;
}

#[tokio::test]
async fn cluster_lost_notification_is_told_again() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let q = Queue::new(RedisHandle::connect(&cluster.url(), 4).await.unwrap());
    lost_notification_is_told_again(&q).await;
}
