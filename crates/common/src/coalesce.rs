//! Group commit for hot transitions: concurrent calls become one script run.
//!
//! Every task passes through `mark_submitting` and `complete`. Run one by one, each costs a round
//! trip, a script dispatch and client-side encoding; a worker with 64 tasks in flight makes
//! thousands of such calls a second. A [`Coalescer`] queues calls and runs whatever is queued as
//! one batched script (whose contract takes N tasks), with a few batches in flight so the
//! connection stays busy. Under light load a batch is a single call, so nothing waits for company.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most calls merged into one script run.
pub(crate) const MAX_BATCH: usize = 128;
/// Batches of one coalescer in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 4;

type Job<Req, Resp, E> = (Req, oneshot::Sender<Result<Resp, E>>);

pub(crate) struct Coalescer<Req, Resp, E> {
    tx: mpsc::UnboundedSender<Job<Req, Resp, E>>,
}

impl<Req, Resp, E> Coalescer<Req, Resp, E>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    E: Send + 'static,
{
    /// Start the coalescer's task (needs a Tokio runtime). `run` executes one batch and returns
    /// one result per request, in order; `on_batch_error` turns a whole-batch failure into each
    /// caller's error.
    pub(crate) fn spawn<F, Fut>(run: F, on_batch_error: fn(&E) -> E) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Resp, E>>, E>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<Req, Resp, E>>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Wait for a batch slot before draining, so everything that queued meanwhile
                // joins this batch.
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (reqs, replies): (Vec<Req>, Vec<_>) = jobs.into_iter().unzip();
                    match run(reqs).await {
                        Ok(results) => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result);
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(on_batch_error(&e)));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Coalescer { tx }
    }

    /// Queue one call and wait for its result. `closed` is returned if the coalescer is gone.
    pub(crate) async fn call(&self, req: Req, closed: E) -> Result<Resp, E> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send((req, reply)).is_err() {
            return Err(closed);
        }
        rx.await.unwrap_or(Err(closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_keep_their_own_results() {
        let batches = Arc::new(AtomicUsize::new(0));
        let b = batches.clone();
        let c: Arc<Coalescer<u32, u32, String>> = Arc::new(Coalescer::spawn(
            move |reqs: Vec<u32>| {
                let b = b.clone();
                async move {
                    b.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    Ok(reqs
                        .into_iter()
                        .map(|r| {
                            if r % 7 == 0 {
                                Err(format!("no {r}"))
                            } else {
                                Ok(r * 2)
                            }
                        })
                        .collect())
                }
            },
            |e: &String| e.clone(),
        ));
        let mut handles = Vec::new();
        for i in 1..=500u32 {
            let c = c.clone();
            handles.push(tokio::spawn(async move {
                (i, c.call(i, "closed".into()).await)
            }));
        }
        for h in handles {
            let (i, r) = h.await.unwrap();
            if i % 7 == 0 {
                assert_eq!(r, Err(format!("no {i}")));
            } else {
                assert_eq!(r, Ok(i * 2));
            }
        }
        let n = batches.load(Ordering::SeqCst);
        assert!(n < 500, "calls were merged: {n} batches for 500 calls");
    }
}
