//! Callbacks the sandbox sends when a render ends, the way Replicate does: the prediction object
//! POSTed to the request's `webhook` URL, signed with Standard Webhooks headers (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`)
//! under `--webhook-secret`. Faults for clients to survive, each picked per render from its
//! id: `--webhook-lost-rate` (never sent), `--webhook-bad-signature-rate` (signed with another
//! key), `--webhook-replay` (every callback is delivered twice, like an at-least-once sender).

use crate::media;
use crate::state::{lock, Shared};
use base64::Engine;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the sandbox calls back.
#[derive(Debug, Clone, Default)]
pub struct WebhookOptions {
    /// `whsec_<base64>`; None: callbacks are sent unsigned.
    pub secret: Option<String>,
    pub lost_rate: f64,
    pub bad_signature_rate: f64,
    pub replay: bool,
}

fn share(seed: u64, id: &str, what: &[u8]) -> f64 {
    (media::mix(seed, &[id.as_bytes(), what]) % 10_000) as f64 / 10_000.0
}

fn signature(secret: &str, msg: &[u8]) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, msg))
}

/// At `at`, POST `body(shared)` (the job's state then) to `url`, with the configured faults.
pub fn send_at(
    shared: Arc<Shared>,
    job_id: String,
    url: String,
    at: Instant,
    body: impl Fn(&Shared) -> Value + Send + 'static,
) {
    let opts = shared.opts.webhooks.clone();
    let seed = shared.opts.seed;
    if share(seed, &job_id, b"webhook-lost") < opts.lost_rate {
        lock(&shared.stats).callbacks_lost += 1;
        return;
    }
    let bad = share(seed, &job_id, b"webhook-bad") < opts.bad_signature_rate;
    tokio::spawn(async move {
        tokio::time::sleep_until(at.into()).await;
        let payload = serde_json::to_vec(&body(&shared)).unwrap_or_default();
        let ts = (crate::state::unix_ms() / 1000).to_string();
        let msg_id = format!("msg_{job_id}");
        let client = reqwest::Client::new();
        let deliveries = if opts.replay { 2 } else { 1 };
        for n in 0..deliveries {
            let mut rb = client
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", &ts)
                .timeout(Duration::from_secs(15));
            if let Some(secret) = &opts.secret {
                let mut msg = format!("{msg_id}.{ts}.").into_bytes();
                msg.extend_from_slice(&payload);
                let key = if bad { "whsec_d3Jvbmcta2V5" } else { secret };
                rb = rb.header("webhook-signature", format!("v1,{}", signature(key, &msg)));
            }
            let ok = rb
                .body(payload.clone())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            {
                let mut stats = lock(&shared.stats);
                stats.callbacks_sent += 1;
                stats.callbacks_refused += u64::from(!ok);
            }
            if n + 1 < deliveries {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
}
