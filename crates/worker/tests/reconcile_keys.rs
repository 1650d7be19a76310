//! The reaper asks about a lost submit with the key that made it, on a real redis-server.
//!
//! A provider task id belongs to the API key that submitted it: another key's account cannot
//! see it. A task of a key pool that stalled mid-submit (its lease expired in `submitting`) must
//! be reconciled through that key's adapter: found there, the render is adopted (no second
//! payment); asked through the account's own adapter instead, it would be resubmitted and
//! flagged as a possible duplicate.

use async_trait::async_trait;
use dramaq_common::config::Family;
use dramaq_common::model::{TaskPayload, TaskState};
use dramaq_common::queue::{read_ready, Claim, PoolArgs, Queue, QuotaArgs};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::{video_task, RedisServer};
use dramaq_worker::providers::{
    Download, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome, SubmitRequest,
};
use dramaq_worker::reaper::{leases, Adapters};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const A: &str = "kling-pool";

/// An adapter that knows the renders of one key only.
struct KeyView {
    knows: Option<&'static str>,
}

#[async_trait]
impl Provider for KeyView {
    fn family(&self) -> Family {
        Family::Kling
    }

    async fn submit(&self, _: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        unreachable!("the reaper never submits")
    }

    async fn poll(&self, _: &str, _: Option<&str>) -> Result<PollOutcome, ProviderError> {
        unreachable!("the reaper never polls")
    }

    async fn fetch(&self, _: &ResultRef) -> Result<Download, ProviderError> {
        unreachable!("the reaper never fetches")
    }

    async fn reconcile(
        &self,
        _task_id: &str,
        _attempt: u32,
        _payload: &TaskPayload,
    ) -> Result<Option<(String, Option<String>)>, ProviderError> {
        Ok(self.knows.map(|ptid| (ptid.to_string(), None)))
    }
}

/// Enqueue `id`, claim it with pool key `k2` and a lease of 1 ms, and stall it mid-submit.
async fn stalled_in_submit(q: &Queue, id: &str) {
    q.enqueue("s1", "S", &[video_task(id, A)], 3, |_| {})
        .await
        .unwrap();
    let got = {
        let mut conn = q
            .redis()
            .blocking_conn(Duration::from_millis(200))
            .await
            .unwrap();
        read_ready(&mut conn, A, "w", 1, 100).await.unwrap()
    };
    let pool = PoolArgs {
        slot_ms: 60_000,
        keys: vec![("k2".to_string(), QuotaArgs::default())],
    };
    let rec = match q.claim(A, "w", 1, &pool, &got).await.unwrap().pop() {
        Some(Claim::Claimed(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(rec.key.as_deref(), Some("k2"));
    q.mark_submitting(A, id, rec.fence).await.unwrap();
    // The lease (1 ms, on the Redis clock) runs out.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn adapters(default_knows: Option<&'static str>, k2_knows: Option<&'static str>) -> Adapters {
    let mut keys: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    keys.insert("k2".into(), Arc::new(KeyView { knows: k2_knows }));
    Adapters {
        default: Some(Arc::new(KeyView {
            knows: default_knows,
        })),
        keys,
    }
}

#[tokio::test]
async fn a_stalled_submit_is_reconciled_with_the_key_that_made_it() {
    let server = RedisServer::start().expect("redis-server");
    let q = Queue::new(RedisHandle::connect(&server.url(), 4).await.unwrap());
    let cfg = leases::Config::default();

    // Only k2's account knows the render: it is adopted, not paid for again.
    stalled_in_submit(&q, "vid-k2").await;
    let out = leases::run_once(&q, A, &adapters(None, Some("ptid-on-k2")), &cfg)
        .await
        .unwrap();
    assert_eq!((out.adopted, out.resubmitted), (1, 0), "{out:?}");
    let rec = q.get_task(A, "vid-k2").await.unwrap().expect("record");
    assert_eq!(rec.provider_task_id.as_deref(), Some("ptid-on-k2"));
    assert_eq!(rec.state, TaskState::Rendering);

    // The account's own adapter cannot see k2's renders: asking it would have resubmitted.
    stalled_in_submit(&q, "vid-other").await;
    let out = leases::run_once(&q, A, &adapters(Some("ptid-default"), None), &cfg)
        .await
        .unwrap();
    assert_eq!((out.adopted, out.resubmitted), (0, 1), "{out:?}");
}
