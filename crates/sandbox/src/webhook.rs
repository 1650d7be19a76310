//! Callbacks the sandbox sends when a render ends, each family its own way:
//! - Replicate: the prediction object, signed with Standard Webhooks headers (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`)
//!   under `--webhook-secret` (unsigned without one);
//! - fal: `{request_id, gateway_request_id, status: OK|ERROR, payload, error}`, signed with
//!   ED25519 (`X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp`, `-Signature` in hex over
//!   `request_id \n user_id \n timestamp \n sha256hex(body)`); the public key is served as a
//!   JSON Web Key Set at `/fal-rest/.well-known/jwks.json`, like fal's own;
//! - Kling: the task's `data` object, unsigned (Kling documents no signature);
//! - MiniMax: `{"challenge": …}` when the task is created, which the receiver must echo within
//!   3 s, then the status when it ends (`success`, `failed`), unsigned.
//!
//! Faults for clients to survive, each picked per render from its id: `--webhook-lost-rate`
//! (never sent), `--webhook-bad-signature-rate` (Replicate and fal: signed with another key),
//! `--webhook-replay` (every callback is delivered twice, like an at-least-once sender).

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

/// How a family calls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Replicate,
    Fal,
    Kling,
    Minimax,
}

/// The user id fal puts in its signed headers.
const FAL_USER_ID: &str = "sandbox-user";

/// The sandbox's fal signing key, derived from the seed (another seed, another key).
fn fal_key(seed: u64, other: bool) -> ring::signature::Ed25519KeyPair {
    let mut raw = [0u8; 32];
    for (i, chunk) in raw.chunks_mut(8).enumerate() {
        let part = media::mix(seed, &[b"fal-webhook-key", &[i as u8, u8::from(other)]]);
        chunk.copy_from_slice(&part.to_le_bytes());
    }
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&raw).expect("32-byte seed")
}

/// `GET /fal-rest/.well-known/jwks.json`: the public key fal callbacks are signed with.
pub async fn fal_jwks(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> axum::Json<Value> {
    use ring::signature::KeyPair;
    let public = fal_key(shared.opts.seed, false);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.public_key());
    axum::Json(serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "sandbox-1", "use": "sig", "alg": "EdDSA"}
    ]}))
}

fn signature(secret: &str, msg: &[u8]) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, msg))
}

/// At `at`, POST `body(shared)` (the job's state then) to `url` the way `style` does, with the
/// configured faults.
pub fn send_at(
    shared: Arc<Shared>,
    style: Style,
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
        let client = reqwest::Client::new();
        // MiniMax checks the URL when the task is created, and pushes nothing to a URL that did
        // not echo its challenge within 3 s.
        if style == Style::Minimax && !challenge_answered(&client, &url, &job_id).await {
            let mut stats = lock(&shared.stats);
            stats.callbacks_sent += 1;
            stats.callbacks_refused += 1;
            return;
        }
        tokio::time::sleep_until(at.into()).await;
        let payload = serde_json::to_vec(&body(&shared)).unwrap_or_default();
        let ts = (crate::state::unix_ms() / 1000).to_string();
        let msg_id = format!("msg_{job_id}");
        let deliveries = if opts.replay { 2 } else { 1 };
        for n in 0..deliveries {
            let mut rb = client
                .post(&url)
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(15));
            match style {
                Style::Replicate => {
                    rb = rb
                        .header("webhook-id", &msg_id)
                        .header("webhook-timestamp", &ts);
                    if let Some(secret) = &opts.secret {
                        let mut msg = format!("{msg_id}.{ts}.").into_bytes();
                        msg.extend_from_slice(&payload);
                        let key = if bad { "whsec_d3Jvbmcta2V5" } else { secret };
                        rb = rb.header("webhook-signature", format!("v1,{}", signature(key, &msg)));
                    }
                }
                Style::Fal => {
                    use sha2::Digest;
                    let msg = format!(
                        "{job_id}\n{FAL_USER_ID}\n{ts}\n{}",
                        hex::encode(sha2::Sha256::digest(&payload))
                    );
                    let sig = fal_key(seed, bad).sign(msg.as_bytes());
                    rb = rb
                        .header("x-fal-webhook-request-id", &job_id)
                        .header("x-fal-webhook-user-id", FAL_USER_ID)
                        .header("x-fal-webhook-timestamp", &ts)
                        .header("x-fal-webhook-signature", hex::encode(sig));
                }
                Style::Kling | Style::Minimax => {}
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

/// MiniMax's handshake: the callback URL must echo a challenge before status changes are sent.
async fn challenge_answered(client: &reqwest::Client, url: &str, job_id: &str) -> bool {
    let challenge = format!("challenge-{job_id}");
    let Ok(answer) = client
        .post(url)
        .json(&serde_json::json!({ "challenge": challenge }))
        .timeout(Duration::from_secs(3))
        .send()
        .await
    else {
        return false;
    };
    answer.status().is_success()
        && answer
            .json::<Value>()
            .await
            .is_ok_and(|v| v.get("challenge").and_then(Value::as_str) == Some(&challenge))
}
