//! `dramaq-worker bench` runs its no-op lifecycle to the end on a real redis-server.
//!
//! The bench is how the queue core is compared with its peers; a change elsewhere in the
//! finishing path (a check every stored result must pass, say) must not leave its no-op tasks
//! retrying forever. Small and bounded in time: a smoke test, not a measurement.

use dramaq_worker::bench::{run, BenchOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_lifecycle_stores_every_task() {
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        run(BenchOptions {
            tasks: 300,
            concurrency: 16,
            redis_url: None,
            durable_submit: Default::default(),
        }),
    )
    .await
    .expect("the bench finished within two minutes")
    .expect("bench");
    assert_eq!(report.tasks, 300);
    assert!(report.lifecycle_tasks_per_sec > 0.0, "{report:?}");
    assert!(report.redis_bytes_per_queued_task > 0.0, "{report:?}");
}
