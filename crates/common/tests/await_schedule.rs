//! The await schedule's learning against a real redis-server: a finished render adds its time
//! to the account's render-time histogram once (the first poller to see it), the histogram
//! decays past its cap, and what comes back is what the poller plans from.

use dramaq_common::keys::AccountKeys;
use dramaq_common::model::NewTask;
use dramaq_common::queue::{read_ready, Claim, PollNow, Queue, QueueError, QuotaArgs};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::render_times::{bucket_of, DECAY_AT, TOTAL_FIELD};
use dramaq_common::testkit::{video_task, RedisServer};
use std::collections::HashMap;
use std::time::Duration;

const VID: &str = "vid-acct";

/// Enqueue videos `ids` and bring each to `rendering` (provider task id `p-<id>`).
async fn rendering(q: &Queue, ids: &[String]) -> Vec<String> {
    let tasks: Vec<NewTask> = ids.iter().map(|id| video_task(id, VID)).collect();
    q.enqueue("s1", "Season", &tasks, 3, |_| {}).await.unwrap();
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(200))
        .await
        .unwrap();
    let got = read_ready(&mut conn, VID, "w", ids.len(), 100)
        .await
        .unwrap();
    let claims = q
        .claim(VID, "w", 60_000, &QuotaArgs::default(), &got)
        .await
        .unwrap();
    let mut out = Vec::new();
    for c in claims {
        let Claim::Claimed(rec) = c else {
            panic!("unexpected claim {c:?}")
        };
        q.mark_submitting(VID, &rec.id, rec.fence).await.unwrap();
        q.mark_accepted(VID, &rec.id, rec.fence, &format!("p-{}", rec.id), None, 0)
            .await
            .unwrap();
        out.push(rec.id.clone());
    }
    assert_eq!(out.len(), ids.len());
    out
}

async fn histogram(q: &Queue) -> HashMap<String, u64> {
    let mut conn = q.redis().conn().await.unwrap();
    redis::cmd("HGETALL")
        .arg(AccountKeys::new(VID).render_times())
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn finished_renders_teach_the_histogram_once_and_it_decays() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    let ids = rendering(&q, &["v0".into(), "v1".into(), "v2".into()]).await;
    assert!(q.render_times(VID).await.unwrap().count() == 0);

    for (id, ms) in ids.iter().zip([100_000u64, 150_000, 150_500]) {
        q.render_done_timed(VID, id, &format!("p-{id}"), "{}", "w", 5_000, Some(ms))
            .await
            .unwrap();
    }
    // A second poller that saw the same success is fenced and teaches nothing.
    assert!(matches!(
        q.render_done_timed(
            VID,
            &ids[0],
            &format!("p-{}", ids[0]),
            "{}",
            "w2",
            5_000,
            Some(1)
        )
        .await,
        Err(QueueError::Fenced(_))
    ));
    let h = histogram(&q).await;
    assert_eq!(h.get(TOTAL_FIELD), Some(&3));
    assert_eq!(h.get(&bucket_of(150_000).to_string()), Some(&2));
    assert_eq!(h.get(&bucket_of(1).to_string()), None);
    let times = q.render_times(VID).await.unwrap();
    assert_eq!(times.count(), 3);
    let median = times.quantile(0.5).unwrap();
    assert!((147_000..=153_000).contains(&median), "{median}");

    // Past the cap every count halves (the lone 100 s render's bucket empties and goes).
    let mut conn = q.redis().conn().await.unwrap();
    let key = AccountKeys::new(VID).render_times();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(TOTAL_FIELD)
        .arg(DECAY_AT)
        .arg(bucket_of(150_000).to_string())
        .arg(DECAY_AT - 1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let more = rendering(&q, &["extra1".into()]).await.remove(0);
    q.render_done_timed(
        VID,
        &more,
        &format!("p-{more}"),
        "{}",
        "w",
        5_000,
        Some(150_000),
    )
    .await
    .unwrap();
    let h = histogram(&q).await;
    assert_eq!(
        h.get(&bucket_of(150_000).to_string()),
        Some(&(DECAY_AT / 2))
    );
    assert_eq!(h.get(&bucket_of(100_000).to_string()), None);
    assert_eq!(h.get(TOTAL_FIELD), Some(&(DECAY_AT / 2)));

    // Without an estimate nothing is learned.
    let last = rendering(&q, &["extra2".into()]).await.remove(0);
    q.render_done(VID, &last, &format!("p-{last}"), "{}", "w", 5_000)
        .await
        .unwrap();
    assert_eq!(histogram(&q).await.get(TOTAL_FIELD), Some(&(DECAY_AT / 2)));
}

#[tokio::test]
async fn a_callback_moves_the_next_poll_to_now_once() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    let ids = rendering(&q, &["h0".into(), "h1".into()]).await;
    for id in &ids {
        assert!(q.poll_again(VID, id, 600_000).await.unwrap());
    }
    assert!(q.poll_take(VID, 10, 30_000).await.unwrap().is_empty());

    // A callback about another provider task, or an unknown task, moves nothing.
    assert_eq!(
        q.poll_now(VID, &ids[0], "p-forged").await.unwrap(),
        PollNow::Unknown
    );
    assert_eq!(
        q.poll_now(VID, "nope", "p-nope").await.unwrap(),
        PollNow::Unknown
    );
    assert!(q.poll_take(VID, 10, 30_000).await.unwrap().is_empty());

    // The real one: due now; a repeat of it is ignored, even after the poll took it.
    let ptid = format!("p-{}", ids[0]);
    assert_eq!(
        q.poll_now(VID, &ids[0], &ptid).await.unwrap(),
        PollNow::Moved
    );
    let due = q.poll_take(VID, 10, 30_000).await.unwrap();
    assert_eq!(due.renders.len(), 1);
    assert_eq!(due.renders[0].0, ids[0]);
    assert_eq!(
        q.poll_now(VID, &ids[0], &ptid).await.unwrap(),
        PollNow::Duplicate
    );
    assert!(q.poll_take(VID, 10, 30_000).await.unwrap().is_empty());

    // Once the poll saw it finished the announcement is cleared with the render.
    q.render_done(VID, &ids[0], &ptid, "{}", "w", 5_000)
        .await
        .unwrap();
    let mut conn = q.redis().conn().await.unwrap();
    let hooked: u64 = redis::cmd("ZCARD")
        .arg(AccountKeys::new(VID).hooked())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(hooked, 0);
    assert_eq!(
        q.poll_now(VID, &ids[0], &ptid).await.unwrap(),
        PollNow::Unknown
    );
}
