//! Provider fallback survives a crash between the failure and the move, on a real redis-server.
//!
//! `fail.lua` records a fallback as `moving` with an entry in the account's moves outbox, in the
//! same step that fails the task. Here the worker "crashes" right after that step (the move is
//! never finished by it); the task must not look dead or finished, and the reaper's moves duty
//! must finish the move: the task ready in the next account of its chain, exactly one stream
//! entry there, nothing left in the first account, its dependents pointed at the new place.
//! The same holds for a task that stalled too often (`reap_lease.lua`).

use dramaq_common::keys::AccountKeys;
use dramaq_common::model::{DepRef, FailureClass, NewTask, TaskPayload, TaskState};
use dramaq_common::queue::{
    read_ready, Claim, FailDecision, FailGuard, FailInfo, LeaseAction, Queue, QuotaArgs,
};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::RedisServer;
use dramaq_worker::reaper::moves;
use std::time::Duration;

const A: &str = "video-a";
const B: &str = "video-b";
const ASM: &str = "asm";

fn scene(id: &str) -> NewTask {
    NewTask {
        id: id.into(),
        season: "s".into(),
        group: "ep01".into(),
        label: format!("ep01/{id}"),
        chain: vec![A.into(), B.into()],
        payload: TaskPayload::Video {
            prompt: "a quiet street".into(),
            negative_prompt: None,
            duration_s: 5,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: None,
            seed: None,
        },
        deps: vec![],
        ext: "mp4".into(),
        est_cost_usd: 0.0,
    }
}

fn assembly(dep: &str) -> NewTask {
    NewTask {
        id: "asm-1".into(),
        season: "s".into(),
        group: "ep01".into(),
        label: "ep01/assembly".into(),
        chain: vec![ASM.into()],
        payload: TaskPayload::Assembly {
            scenes: vec![dep.into()],
            voice: vec![],
            master: None,
        },
        deps: vec![DepRef {
            id: dep.into(),
            account: A.into(),
        }],
        ext: "mp4".into(),
        est_cost_usd: 0.0,
    }
}

async fn claim(q: &Queue, account: &str, lease_ms: u64) -> dramaq_common::TaskRecord {
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(200))
        .await
        .unwrap();
    let got = read_ready(&mut conn, account, "w", 1, 100).await.unwrap();
    match q
        .claim(account, "w", lease_ms, &QuotaArgs::default(), &got)
        .await
        .unwrap()
        .pop()
    {
        Some(Claim::Claimed(r)) => *r,
        other => panic!("nothing to claim in {account}: {other:?}"),
    }
}

async fn stream_len(q: &Queue, account: &str) -> i64 {
    let mut conn = q.redis().conn().await.unwrap();
    redis::cmd("XLEN")
        .arg(AccountKeys::new(account).ready())
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn at_once() -> moves::Config {
    moves::Config {
        older_than_ms: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_fallback_cut_short_by_a_crash_is_finished_by_the_moves_duty() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    q.enqueue("s", "S", &[scene("vid-1"), assembly("vid-1")], 3, |_| {})
        .await
        .unwrap();
    let r = claim(&q, A, 10_000).await;
    q.mark_submitting(A, &r.id, r.fence).await.unwrap();
    let timeout = FailInfo {
        class: FailureClass::Timeout,
        code: None,
        message: "render not finished after 900 s",
        cooldown_ms: 0,
    };
    let state = q
        .fail(
            A,
            &r.id,
            &FailGuard::Held { fence: r.fence },
            &FailDecision::Move { to: B.into() },
            &timeout,
        )
        .await
        .unwrap();
    // The worker dies here: the move is recorded, not done.
    assert_eq!(state, TaskState::Moving);
    let rec = q.get_task(A, "vid-1").await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Moving);
    assert_eq!(rec.moving_to.as_deref(), Some(B));
    assert_eq!(rec.failure, Some(FailureClass::Timeout));
    let counts = q.season_counts("s").await.unwrap();
    assert_eq!(counts[&TaskState::Moving], 1, "live, not dead: {counts:?}");
    assert_eq!(counts[&TaskState::Dead], 0);

    // A fresh entry is left to its recorder; an old one is the duty's.
    let fresh = moves::run_once(&q, A, &moves::Config::default())
        .await
        .unwrap();
    assert_eq!(fresh, 0);
    assert_eq!(moves::run_once(&q, A, &at_once()).await.unwrap(), 1);

    assert!(q.get_task(A, "vid-1").await.unwrap().is_none());
    let moved = q.get_task(B, "vid-1").await.unwrap().unwrap();
    assert_eq!(moved.state, TaskState::Ready);
    assert_eq!(moved.account, B);
    assert_eq!(moved.chain_pos, 1);
    assert_eq!(moved.attempt, 0);
    assert_eq!(moved.errors.len(), 1, "the history comes along");
    assert_eq!(stream_len(&q, B).await, 1);
    assert_eq!(
        q.task_account("s", "vid-1").await.unwrap().as_deref(),
        Some(B)
    );
    // The episode's assembly now reads its scene from the new account.
    let asm = q.get_task(ASM, "asm-1").await.unwrap().unwrap();
    assert_eq!(asm.deps[0].account, B);
    let counts = q.season_counts("s").await.unwrap();
    assert_eq!(counts[&TaskState::Moving], 0);
    assert_eq!(counts[&TaskState::Ready], 1);

    // Running the duty again, or finishing the same move by hand, changes nothing.
    assert_eq!(moves::run_once(&q, A, &at_once()).await.unwrap(), 0);
    assert_eq!(stream_len(&q, B).await, 1);
}

#[tokio::test]
async fn a_task_that_stalls_too_often_moves_to_the_next_account() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    q.enqueue("s", "S", &[scene("vid-2")], 3, |_| {})
        .await
        .unwrap();
    let mut last = None;
    for _ in 0..2 {
        let r = claim(&q, A, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = Some(
            q.reap_lease(A, &r.id, 1, None, Some(B), true)
                .await
                .unwrap(),
        );
    }
    assert_eq!(last, Some(LeaseAction::Moved));
    let rec = q.get_task(A, "vid-2").await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Moving);
    assert_eq!(rec.failure, Some(FailureClass::Stalled));
    assert_eq!(moves::run_once(&q, A, &at_once()).await.unwrap(), 1);
    assert_eq!(
        q.get_task(B, "vid-2").await.unwrap().unwrap().state,
        TaskState::Ready
    );

    // At the end of the chain there is nowhere to go: dead, with its class.
    let r = claim(&q, B, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.reap_lease(B, &r.id, 1, None, None, true).await.unwrap();
    let r = claim(&q, B, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        q.reap_lease(B, &r.id, 1, None, None, true).await.unwrap(),
        LeaseAction::Dead
    );
}
