//! Fleet-wide quota enforcement at claim time, against a real redis-server: GCRA rate with
//! burst, leased render slots (returned by completion or by lease expiry), the shared cool-down
//! after a 429, the daily cap, and pausing an account that ran out of credits.

use dramaq_common::keys::AccountKeys;
use dramaq_common::model::{FailureClass, NewTask, TaskPayload, TaskState};
use dramaq_common::queue::{
    read_ready, Claim, Completion, FailDecision, FailGuard, FailInfo, Queue, QuotaArgs, QuotaPeek,
};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::RedisServer;
use redis::AsyncCommands;
use std::time::Duration;

const A: &str = "acct";

fn tasks(n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask {
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
        })
        .collect()
}

async fn setup(n: usize) -> (RedisServer, Queue) {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    q.enqueue("s", "S", &tasks(n), 3, |_| {}).await.unwrap();
    (server, q)
}

/// Read up to `n` deliveries and claim them; returns (claimed records, throttle reasons).
async fn claim(
    q: &Queue,
    quota: &QuotaArgs,
    n: usize,
) -> (Vec<dramaq_common::TaskRecord>, Vec<(u64, String)>) {
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(100))
        .await
        .unwrap();
    let got = read_ready(&mut conn, A, "w", n, 0).await.unwrap();
    let mut claimed = Vec::new();
    let mut throttled = Vec::new();
    for c in q.claim(A, "w", 10_000, quota, &got).await.unwrap() {
        match c {
            Claim::Claimed(r) => claimed.push(*r),
            Claim::Throttled { wait_ms, reason } => throttled.push((wait_ms, reason)),
            other => panic!("unexpected {other:?}"),
        }
    }
    (claimed, throttled)
}

#[tokio::test]
async fn rate_allows_the_burst_then_spaces_submits() {
    let (_s, q) = setup(10).await;
    // 10 per second, burst 2.
    let quota = QuotaArgs {
        interval_us: 100_000,
        tolerance_us: 100_000,
        ..Default::default()
    };
    let (claimed, throttled) = claim(&q, &quota, 10).await;
    assert_eq!(claimed.len(), 2, "burst of 2");
    assert_eq!(throttled.len(), 8);
    assert!(
        throttled
            .iter()
            .all(|(w, r)| r == "rate" && *w > 0 && *w <= 200),
        "{throttled:?}"
    );
    // Throttled deliveries went back to the stream: nothing is lost.
    let counts = q.season_counts("s").await.unwrap();
    assert_eq!(counts[&TaskState::Ready], 8);
    assert!(matches!(
        q.quota_peek(A, &quota).await.unwrap(),
        QuotaPeek::Wait { .. }
    ));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (claimed, _) = claim(&q, &quota, 10).await;
    assert_eq!(claimed.len(), 1, "one interval later, one more");
}

#[tokio::test]
async fn render_slots_bound_concurrency_and_come_back() {
    let (_s, q) = setup(6).await;
    let quota = QuotaArgs {
        max_concurrent: 2,
        slot_ms: 400,
        ..Default::default()
    };
    let (claimed, throttled) = claim(&q, &quota, 6).await;
    assert_eq!(claimed.len(), 2);
    assert!(throttled.iter().all(|(_, r)| r == "concurrency"));
    // Completing one frees its slot at once.
    let r = &claimed[0];
    q.mark_submitting(A, &r.id, r.fence).await.unwrap();
    q.complete(
        A,
        &r.id,
        &Completion {
            fence: r.fence,
            output: "s/ep01/x.wav",
            sha256: "00",
            bytes: 1,
            paid: false,
            by: "w",
        },
    )
    .await
    .unwrap();
    let (more, _) = claim(&q, &quota, 6).await;
    assert_eq!(more.len(), 1);
    // A holder that never finishes: its slot returns when the slot lease ends.
    let (none, _) = claim(&q, &quota, 6).await;
    assert!(none.is_empty());
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (after, _) = claim(&q, &quota, 6).await;
    assert_eq!(after.len(), 2, "expired slot leases are returned");
}

#[tokio::test]
async fn a_429_cools_down_the_whole_account_without_using_an_attempt() {
    let (_s, q) = setup(3).await;
    let quota = QuotaArgs::default();
    let (claimed, _) = claim(&q, &quota, 1).await;
    let r = &claimed[0];
    q.mark_submitting(A, &r.id, r.fence).await.unwrap();
    let info = FailInfo {
        class: FailureClass::RateLimited,
        code: Some("429"),
        message: "rate limited",
        cooldown_ms: 300,
    };
    q.fail(
        A,
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
    assert_eq!(q.get_task(A, &r.id).await.unwrap().unwrap().attempt, 0);
    match q.quota_peek(A, &quota).await.unwrap() {
        QuotaPeek::Wait { ms, reason } => {
            assert_eq!(reason, "cooldown");
            assert!(ms > 0 && ms <= 300, "{ms}");
        }
        other => panic!("{other:?}"),
    }
    let (none, throttled) = claim(&q, &quota, 2).await;
    assert!(none.is_empty() && throttled.iter().all(|(_, r)| r == "cooldown"));
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(q.quota_peek(A, &quota).await.unwrap(), QuotaPeek::Go);
}

#[tokio::test]
async fn the_daily_cap_stops_claims() {
    let (_s, q) = setup(5).await;
    let quota = QuotaArgs {
        daily_cap: 3,
        ..Default::default()
    };
    let (claimed, throttled) = claim(&q, &quota, 5).await;
    assert_eq!(claimed.len(), 3);
    assert!(throttled.iter().all(|(w, r)| r == "daily_cap" && *w > 0));
}

#[tokio::test]
async fn out_of_credits_pauses_the_account_and_the_task_waits() {
    let (_s, q) = setup(2).await;
    let quota = QuotaArgs::default();
    let (claimed, _) = claim(&q, &quota, 1).await;
    let r = &claimed[0];
    q.mark_submitting(A, &r.id, r.fence).await.unwrap();
    let info = FailInfo {
        class: FailureClass::InsufficientCredits,
        code: Some("1102"),
        message: "resource pack depleted",
        cooldown_ms: 0,
    };
    let state = q
        .fail(
            A,
            &r.id,
            &FailGuard::Held { fence: r.fence },
            &FailDecision::Pause,
            &info,
        )
        .await
        .unwrap();
    assert_eq!(state, TaskState::Ready, "the task waits, it is not dead");
    let rec = q.get_task(A, &r.id).await.unwrap().unwrap();
    assert_eq!(rec.attempt, 0);
    assert_eq!(rec.errors.len(), 1);
    assert_eq!(q.quota_peek(A, &quota).await.unwrap(), QuotaPeek::Paused);
    let mut conn = q.redis().conn().await.unwrap();
    let reason: String = conn.get(AccountKeys::new(A).paused()).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&reason).unwrap();
    assert_eq!(v["reason"], "insufficient_credits");
    assert_eq!(v["message"], "resource pack depleted");
    // Paused: deliveries go back instead of being claimed.
    let mut bconn = q
        .redis()
        .blocking_conn(Duration::from_millis(100))
        .await
        .unwrap();
    let got = read_ready(&mut bconn, A, "w", 2, 0).await.unwrap();
    let claims = q.claim(A, "w", 1_000, &quota, &got).await.unwrap();
    assert!(claims.iter().all(|c| matches!(c, Claim::Paused)));
    assert_eq!(q.season_counts("s").await.unwrap()[&TaskState::Ready], 2);
}

#[tokio::test]
async fn the_poll_rate_is_shared_by_every_poller() {
    let (_s, q) = setup(0).await;
    // 10 polls per second, burst 3.
    let (granted, wait) = q.take_poll_tokens(A, 100_000, 200_000, 10).await.unwrap();
    assert_eq!(granted, 3, "the burst");
    assert!(wait > 0 && wait <= 100, "{wait}");
    // Another poller (another process) gets nothing until the rate allows it.
    let (none, _) = q.take_poll_tokens(A, 100_000, 200_000, 5).await.unwrap();
    assert_eq!(none, 0);
    tokio::time::sleep(Duration::from_millis(210)).await;
    let (later, _) = q.take_poll_tokens(A, 100_000, 200_000, 5).await.unwrap();
    assert_eq!(later, 2, "two intervals later, two more");
}

#[tokio::test]
async fn a_dead_holders_slot_returns_when_the_reaper_takes_its_claim_back() {
    let (_s, q) = setup(2).await;
    let quota = QuotaArgs {
        max_concurrent: 1,
        slot_ms: 600_000,
        ..Default::default()
    };
    // A worker claims with a 50 ms lease and dies (no heartbeat, no submit).
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(100))
        .await
        .unwrap();
    let got = read_ready(&mut conn, A, "dying", 1, 0).await.unwrap();
    let claims = q.claim(A, "dying", 50, &quota, &got).await.unwrap();
    assert!(matches!(claims[0], Claim::Claimed(_)));
    let (none, throttled) = claim(&q, &quota, 1).await;
    assert!(
        none.is_empty() && throttled[0].1 == "concurrency",
        "the slot is held"
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    for id in q.expired_leases(A, 10).await.unwrap() {
        q.reap_lease(A, &id, 3, None, None, true).await.unwrap();
    }
    // The slot lease is 10 minutes, but the reaper released it with the claim.
    let (claimed, _) = claim(&q, &quota, 2).await;
    assert_eq!(claimed.len(), 1, "the dead holder's slot came back");
}

/// `redis.durable_submit = "replica"`: the submit record waits for a replica (`WAIT 1`). With
/// no replica it is refused within the timeout (so the worker sends nothing); once a replica
/// follows the server, it goes through.
#[tokio::test]
async fn durable_submit_waits_for_a_replica() {
    use dramaq_common::config::DurableSubmit;
    let (primary, q) = setup(12).await;
    let q = q.with_durable_submit(DurableSubmit::Replica, 200);
    let (mut claimed, _) = claim(&q, &QuotaArgs::default(), 12).await;
    let r = claimed.pop().expect("claimed");
    let started = std::time::Instant::now();
    let refused = q.mark_submitting(A, &r.id, r.fence).await;
    assert!(refused.is_err(), "no replica, yet durable: {refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let port = primary.port.to_string();
    let _replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]).expect("replica");
    // The replica needs a moment to sync; WAIT then answers 1.
    let mut confirmed = false;
    while let Some(r) = claimed.pop() {
        if q.mark_submitting(A, &r.id, r.fence).await.is_ok() {
            confirmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        confirmed,
        "a replica follows, but no submit record was confirmed"
    );
}
