//! The dead-letter retention duty against a real redis-server: off by default, and when set it
//! purges exactly the dead tasks older than the retention, once per sweep interval.

use dramaq_common::model::{FailureClass, NewTask, TaskPayload, TaskState};
use dramaq_common::queue::{
    read_ready, Claim, FailDecision, FailGuard, FailInfo, Queue, QuotaArgs,
};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::RedisServer;
use dramaq_worker::reaper::retention::{self, Config};
use std::time::Duration;

const A: &str = "acct";

fn task(i: usize) -> NewTask {
    NewTask {
        id: format!("voc-{i:04}"),
        season: "s".into(),
        group: "ep01".into(),
        label: format!("ep01/line{i:02}"),
        chain: vec![A.into()],
        payload: TaskPayload::Voice {
            text: format!("line {i}"),
            voice: "alloy".into(),
            speaker: "mira".into(),
        },
        deps: vec![],
        ext: "wav".into(),
        est_cost_usd: 0.0,
    }
}

async fn kill_one(q: &Queue) {
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(100))
        .await
        .unwrap();
    let got = read_ready(&mut conn, A, "w", 1, 0).await.unwrap();
    let Some(Claim::Claimed(r)) = q
        .claim(A, "w", 10_000, &QuotaArgs::default(), &got)
        .await
        .unwrap()
        .pop()
    else {
        panic!("nothing to claim")
    };
    let info = FailInfo {
        class: FailureClass::ContentPolicy,
        code: None,
        message: "blocked",
        cooldown_ms: 0,
    };
    q.fail(
        A,
        &r.id,
        &FailGuard::Held { fence: r.fence },
        &FailDecision::Dead,
        &info,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn retention_purges_only_old_dead_tasks() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    q.enqueue("s", "S", &[task(1), task(2)], 3, |_| {})
        .await
        .unwrap();
    kill_one(&q).await;
    // Off by default: nothing is ever dropped.
    assert_eq!(
        retention::run_once(&q, A, &Config::default())
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill_one(&q).await;
    let cfg = Config {
        max_age: Some(Duration::from_millis(200)),
        interval: Duration::from_secs(3_600),
    };
    assert_eq!(
        retention::run_once(&q, A, &cfg).await.unwrap(),
        1,
        "only the old one"
    );
    let counts = q.season_counts("s").await.unwrap();
    assert_eq!(counts[&TaskState::Dead], 1);
    // Once the second one is old enough too, it goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(retention::run_once(&q, A, &cfg).await.unwrap(), 1);
    let counts = q.season_counts("s").await.unwrap();
    assert_eq!(counts[&TaskState::Dead], 0);
}
