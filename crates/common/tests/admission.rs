//! Admission at claim time against a real redis-server (and a 3-node cluster): `claim.lua`
//! picks a key of the account's pool that has room and records it, a 429 cools only that key,
//! a paused key is skipped and the account stops only when every key is paused; season budget
//! reservations never exceed the cap however many clients reserve at once (a property test),
//! a parked season's deliveries are put back until the budget is raised or a settle makes room,
//! and an episode over its per-episode cap is parked alone.

use dramaq_common::budget::{CapChange, Reservation, ReserveItem, Settle, Spend};
use dramaq_common::keys::AccountKeys;
use dramaq_common::model::{FailureClass, NewTask, TaskPayload, TaskState};
use dramaq_common::queue::{
    read_ready, Claim, FailDecision, FailGuard, FailInfo, PoolArgs, Queue, QuotaArgs, QuotaPeek,
};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::{RedisCluster, RedisServer};
use proptest::prelude::*;
use redis::AsyncCommands;

const A: &str = "pool";

/// `n` character sheets of `season` on the pool account, $1 each.
fn tasks(season: &str, n: usize) -> Vec<NewTask> {
    tasks_in(season, "characters", n)
}

/// `n` $1 image tasks of `season` in `group`.
fn tasks_in(season: &str, group: &str, n: usize) -> Vec<NewTask> {
    let sheet = |i: usize| TaskPayload::Image {
        prompt: format!("character {i}, front view"),
        seed: i as u32,
        aspect_ratio: "9:16".into(),
        reference_image: None,
    };
    (0..n)
        .map(|i| NewTask {
            id: format!("img-{season}-{group}-{i:04}"),
            season: season.into(),
            group: group.into(),
            label: format!("char/c{i:02}"),
            chain: vec![A.into()],
            payload: sheet(i),
            deps: vec![],
            ext: "png".into(),
            est_cost_usd: 1.0,
        })
        .collect()
}

fn key(name: &str, max_concurrent: u32) -> (String, QuotaArgs) {
    (
        name.to_string(),
        QuotaArgs {
            max_concurrent,
            slot_ms: 60_000,
            ..QuotaArgs::default()
        },
    )
}

async fn claim_all(q: &Queue, pool: &PoolArgs, n: usize) -> Vec<Claim> {
    // Reads without blocking (count `n`, block 0), so a pooled connection does.
    let mut conn = q.redis().conn().await.unwrap();
    let got = read_ready(&mut conn, A, "w", n, 0).await.unwrap();
    q.claim(A, "w", 10_000, pool, &got).await.unwrap()
}

fn keys_of(claims: &[Claim]) -> Vec<String> {
    let mut keys: Vec<String> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Claimed(r) => Some(r.key.clone().unwrap_or_default()),
            _ => None,
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn claims_spread_over_keys_with_room_and_a_429_cools_only_its_key() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    q.enqueue("s", "S", &tasks("s", 8), 3, |_| {})
        .await
        .unwrap();
    let pool = PoolArgs {
        slot_ms: 60_000,
        keys: vec![key("k1", 1), key("k2", 2), key("k3", 2)],
    };
    // k3 is out of credits: paused alone.
    let k = AccountKeys::new(A);
    let mut conn = q.redis().conn().await.unwrap();
    let _: () = conn
        .set(k.key_paused("k3"), r#"{"reason":"insufficient_credits"}"#)
        .await
        .unwrap();
    let claims = claim_all(&q, &pool, 8).await;
    assert_eq!(keys_of(&claims), ["k1", "k2", "k2"], "{claims:?}");
    let throttled = claims
        .iter()
        .filter(|c| matches!(c, Claim::Throttled { reason, .. } if reason == "concurrency"))
        .count();
    assert_eq!(throttled, 5, "{claims:?}");

    // A 429 on one of k2's submits cools k2 only (and gives its slot back); k1 is still full,
    // so nothing may start until k2's cool-down ends.
    let on_k2 = claims
        .iter()
        .find_map(|c| match c {
            Claim::Claimed(r) if r.key.as_deref() == Some("k2") => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    let info = FailInfo {
        class: FailureClass::RateLimited,
        code: None,
        message: "429",
        cooldown_ms: 30_000,
    };
    let (guard, key) = (FailGuard::Held { fence: on_k2.fence }, on_k2.key.as_deref());
    let later = FailDecision::Retry {
        delay_ms: 60_000,
        refund_attempt: true,
    };
    let state = q.fail_on_key(A, key, &on_k2.id, &guard, &later, &info);
    assert_eq!(state.await.unwrap(), TaskState::Delayed);
    let cool_k2: i64 = conn.pttl(k.key_cooldown("k2")).await.unwrap();
    let cool_k1: i64 = conn.pttl(k.key_cooldown("k1")).await.unwrap();
    let cool_acct: i64 = conn.pttl(k.cooldown()).await.unwrap();
    assert!(cool_k2 > 20_000, "k2 cools down ({cool_k2})");
    assert!(
        cool_k1 < 0 && cool_acct < 0,
        "only k2 cools ({cool_k1}, {cool_acct})"
    );
    match q.quota_peek(A, &pool).await.unwrap() {
        QuotaPeek::Wait { reason, .. } => assert_eq!(reason, "concurrency"),
        other => panic!("k1 is full and k2 cools down: {other:?}"),
    }

    // Every key paused: the account counts as paused.
    for name in ["k1", "k2"] {
        let _: () = conn.set(k.key_paused(name), "{}").await.unwrap();
    }
    assert_eq!(q.quota_peek(A, &pool).await.unwrap(), QuotaPeek::Paused);
}

#[tokio::test]
async fn a_parked_season_is_put_back_and_resumes_when_its_budget_is_raised() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let q = Queue::new(RedisHandle::connect(&cluster.url(), 4).await.unwrap());
    q.enqueue("s", "S", &tasks("s", 4), 3, |_| {})
        .await
        .unwrap();
    q.budget_init("s", Some(2.5), None).await.unwrap();
    let pool = PoolArgs::from(&QuotaArgs::default());
    let claims = claim_all(&q, &pool, 4).await;
    let mut admitted = 0;
    for c in &claims {
        let Claim::Claimed(r) = c else {
            panic!("{c:?}")
        };
        match q.budget_reserve(&r.season, &r.id, None, 1.0).await.unwrap() {
            Reservation::Reserved => admitted += 1,
            other => {
                assert_eq!(other, Reservation::SeasonOver);
                q.release(A, &r.id, r.fence).await.unwrap();
                q.budget_settle(&r.season, &r.id, None, None).await.unwrap();
                q.budget_park(&r.season, None).await.unwrap();
            }
        }
    }
    assert_eq!(admitted, 2, "two $1 tasks fit in $2.50");
    let b = q.budget("s").await.unwrap();
    assert_eq!(b.parked.as_deref(), Some("budget"));
    assert_eq!(b.reserved_usd, 2.0);
    // Parked: the two given back are put back by the claim itself.
    let again = claim_all(&q, &pool, 4).await;
    assert!(
        !again.is_empty() && again.iter().all(|c| matches!(c, Claim::Parked { .. })),
        "{again:?}"
    );
    let b = q
        .budget_set("s", CapChange::Set(10.0), CapChange::Keep)
        .await
        .unwrap();
    assert_eq!(b.parked, None);
    let resumed = claim_all(&q, &pool, 4).await;
    assert_eq!(
        resumed
            .iter()
            .filter(|c| matches!(c, Claim::Claimed(_)))
            .count(),
        2,
        "{resumed:?}"
    );
}

/// Amounts reach HINCRBY as the integer text they were sent as: a free task (0 reserved, so a
/// negated Lua number would be `-0`) and round sums ($200 is 2e8 micro-USD, which Redis would
/// print in exponent notation) both reserve and settle.
#[tokio::test]
async fn free_tasks_and_round_amounts_reserve_and_settle() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 2).await.unwrap());
    q.budget_init("round", Some(1000.0), Some(500.0))
        .await
        .unwrap();
    for (id, usd) in [("free", 0.0), ("big", 200.0)] {
        assert_eq!(
            q.budget_reserve("round", id, Some("ep01"), usd)
                .await
                .unwrap(),
            Reservation::Reserved
        );
    }
    assert_eq!(q.budget("round").await.unwrap().reserved_usd, 200.0);
    let spend = |usd: f64| dramaq_common::budget::Spend {
        usd,
        group: "ep01".into(),
        kind: "assembly".into(),
        account: A.into(),
        key: String::new(),
    };
    let free = spend(0.0);
    let big = spend(100.0);
    for (id, s) in [("free", &free), ("big", &big)] {
        let settle = dramaq_common::budget::Settle {
            id,
            attempt: 1,
            spend: s,
        };
        q.budget_settle("round", id, Some("ep01"), Some(&settle))
            .await
            .unwrap();
    }
    let b = q.budget("round").await.unwrap();
    assert_eq!((b.reserved_usd, b.spent_usd), (0.0, 100.0), "{b:?}");
    let ep = &b.episodes["ep01"];
    assert_eq!((ep.reserved_usd, ep.spent_usd), (0.0, 100.0), "{b:?}");
}

/// A fetcher's batch is reserved in one call, in order: the first tasks that fit are held, the
/// first that does not parks the season and the rest find it parked; a free task (an episode's
/// assembly) holds nothing and is admitted even then.
#[tokio::test]
async fn a_batch_reserves_in_order_and_a_free_task_passes_a_parked_season() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 2).await.unwrap());
    q.budget_init("b", Some(2.5), None).await.unwrap();
    let ids = ["t1", "t2", "t3", "t4"];
    let items: Vec<ReserveItem<'_>> = ids
        .iter()
        .map(|id| ReserveItem {
            id,
            episode: Some("ep01"),
            usd: 1.0,
        })
        .collect();
    let got = q.budget_reserve_many("b", &items).await.unwrap();
    use Reservation::*;
    assert_eq!(got, vec![Reserved, Reserved, SeasonOver, SeasonOver]);
    let b = q.budget("b").await.unwrap();
    assert_eq!(b.parked.as_deref(), Some("budget"));
    assert_eq!(
        (b.reserved_usd, b.episodes["ep01"].reserved_usd),
        (2.0, 2.0)
    );
    // A repeated claim of a held task keeps its reservation, parked or not.
    assert_eq!(
        q.budget_reserve("b", "t1", Some("ep01"), 1.0)
            .await
            .unwrap(),
        Reserved
    );
    // Free: admitted while parked, nothing held.
    assert_eq!(
        q.budget_reserve("b", "asm", Some("ep01"), 0.0)
            .await
            .unwrap(),
        Reserved
    );
    assert_eq!(q.budget("b").await.unwrap().reserved_usd, 2.0);
    assert!(q.budget_reserve_many("b", &[]).await.unwrap().is_empty());
}

async fn parked_members(q: &Queue) -> Vec<String> {
    let mut conn = q.redis().conn().await.unwrap();
    conn.smembers(AccountKeys::new(A).parked()).await.unwrap()
}

/// An episode over its per-episode cap is parked alone: its deliveries are put back by the
/// claim while another episode's (and the character sheets') go on; when a settled attempt
/// costs less than its reservation, the room it frees resumes the episode by itself.
#[tokio::test]
async fn an_episode_over_its_cap_parks_alone_and_resumes_when_a_settle_makes_room() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 2).await.unwrap());
    let mut all = tasks_in("e", "ep01", 3);
    all.extend(tasks_in("e", "ep02", 1));
    q.enqueue("e", "E", &all, 3, |_| {}).await.unwrap();
    q.budget_init("e", Some(100.0), Some(2.0)).await.unwrap();
    let pool = PoolArgs::from(&QuotaArgs::default());
    let mut held = Vec::new();
    for c in claim_all(&q, &pool, 4).await {
        let Claim::Claimed(r) = c else {
            panic!("{c:?}")
        };
        match q
            .budget_reserve(&r.season, &r.id, Some(&r.group), 1.0)
            .await
            .unwrap()
        {
            Reservation::Reserved => held.push(r),
            Reservation::EpisodeOver => {
                assert_eq!(r.group, "ep01", "only ep01 has three tasks");
                q.release(A, &r.id, r.fence).await.unwrap();
                q.budget_park(&r.season, Some(&r.group)).await.unwrap();
            }
            Reservation::SeasonOver => panic!("the season has room"),
        }
    }
    assert_eq!(held.len(), 3, "two of ep01 and the one of ep02");
    let b = q.budget("e").await.unwrap();
    assert_eq!(b.parked, None, "the season is not parked");
    assert_eq!(b.episodes["ep01"].parked.as_deref(), Some("episode_budget"));
    assert_eq!(b.episodes["ep01"].reserved_usd, 2.0);
    assert_eq!(parked_members(&q).await, vec!["e/ep01".to_string()]);
    let again = claim_all(&q, &pool, 4).await;
    assert!(
        matches!(again.as_slice(), [Claim::Parked { season }] if season == "e/ep01"),
        "{again:?}"
    );

    // One ep01 attempt settles at half its reservation: $0.50 spent + $1 reserved + the $1
    // that waits is over $2, so the episode stays parked.
    let ep01: Vec<_> = held.iter().filter(|r| r.group == "ep01").collect();
    let spend = Spend {
        usd: 0.5,
        group: "ep01".into(),
        kind: "image".into(),
        account: A.into(),
        key: String::new(),
    };
    let settle = Settle {
        id: &ep01[0].id,
        attempt: 1,
        spend: &spend,
    };
    q.budget_settle("e", &ep01[0].id, Some("ep01"), Some(&settle))
        .await
        .unwrap();
    let b = q.budget("e").await.unwrap();
    assert_eq!(b.episodes["ep01"].parked.as_deref(), Some("episode_budget"));
    // The other is given back without a charge: $0.50 + $1 fits in $2, so the episode resumes
    // without anyone raising its cap.
    q.budget_settle("e", &ep01[1].id, Some("ep01"), None)
        .await
        .unwrap();
    let b = q.budget("e").await.unwrap();
    assert_eq!(b.episodes["ep01"].parked, None, "{b:?}");
    assert_eq!(
        (
            b.episodes["ep01"].reserved_usd,
            b.episodes["ep01"].spent_usd
        ),
        (0.0, 0.5)
    );
    let parked = parked_members(&q).await;
    assert!(parked.is_empty(), "{parked:?}");
    let resumed = claim_all(&q, &pool, 4).await;
    let Some(Claim::Claimed(r)) = resumed.first() else {
        panic!("{resumed:?}")
    };
    assert_eq!(
        q.budget_reserve("e", &r.id, Some("ep01"), 1.0)
            .await
            .unwrap(),
        Reservation::Reserved
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// However many clients reserve at once, with whatever estimates, the reservations never
    /// exceed the cap, and every refusal is a task that really did not fit.
    #[test]
    fn concurrent_reservations_never_exceed_the_budget(
        cap_cents in 100u32..5_000,
        estimates in proptest::collection::vec(1u32..800, 4..40),
        clients in 2usize..6,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let server = SERVER.with(|s| s.url());
        rt.block_on(async {
            let season = format!("p{}", rand_suffix());
            let cap = f64::from(cap_cents) / 100.0;
            let handles: Vec<Queue> = {
                let mut v = Vec::new();
                for _ in 0..clients {
                    v.push(Queue::new(RedisHandle::connect(&server, 2).await.unwrap()));
                }
                v
            };
            handles[0]
                .budget_set(&season, CapChange::Set(cap), CapChange::Keep)
                .await
                .unwrap();
            let mut joins = Vec::new();
            for (i, est) in estimates.iter().enumerate() {
                let q = handles[i % clients].clone();
                let season = season.clone();
                let usd = f64::from(*est) / 100.0;
                joins.push(tokio::spawn(async move {
                    let ok = q
                        .budget_reserve(&season, &format!("t{i}"), None, usd)
                        .await
                        .unwrap()
                        == Reservation::Reserved;
                    (usd, ok)
                }));
            }
            let mut reserved = 0.0;
            let mut refused = Vec::new();
            for j in joins {
                let (usd, ok) = j.await.unwrap();
                if ok { reserved += usd } else { refused.push(usd) }
            }
            let b = handles[0].budget(&season).await.unwrap();
            prop_assert!(b.reserved_usd <= cap + 1e-9, "reserved {} of {}", b.reserved_usd, cap);
            prop_assert!((b.reserved_usd - reserved).abs() < 1e-6);
            // A refusal parks the season; without one, everything fitted.
            if refused.is_empty() {
                prop_assert!(b.parked.is_none());
                let total: f64 = estimates.iter().map(|e| f64::from(*e) / 100.0).sum();
                prop_assert!(total <= cap + 1e-9, "all {} admitted under a cap of {}", total, cap);
            } else {
                prop_assert_eq!(b.parked.as_deref(), Some("budget"));
                // The first refusal happened because it did not fit then: with everything
                // reserved at the end added, the refused one would overflow or the season was
                // parked by an earlier, larger refusal.
                let smallest = refused.iter().cloned().fold(f64::INFINITY, f64::min);
                prop_assert!(smallest > 0.0);
            }
            Ok(())
        })?;
    }
}

thread_local! {
    static SERVER: RedisServer = RedisServer::start().expect("redis-server");
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
