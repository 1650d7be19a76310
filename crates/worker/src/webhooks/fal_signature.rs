//! fal's callback signatures: ED25519 over `request_id \n user_id \n timestamp \n
//! sha256hex(body)`, sent as `X-Fal-Webhook-Request-Id`, `X-Fal-Webhook-User-Id`,
//! `X-Fal-Webhook-Timestamp` (Unix seconds) and `X-Fal-Webhook-Signature` (hex). The public keys
//! are published as a JSON Web Key Set (`kty: OKP`, `crv: Ed25519`, `x`: base64url) and rotate,
//! so they are fetched when first needed, kept a day, and fetched again when none of them
//! verifies a callback (at most once a minute, so forged callbacks cannot make the receiver
//! hammer the key endpoint).

use super::HookError;
use axum::http::HeaderMap;
use base64::Engine;
use dramaq_common::text::shown;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tracing::warn;

/// fal's key set, used when an account does not name another (`webhook_jwks_url`).
pub(crate) const FAL_JWKS_URL: &str = "https://rest.alpha.fal.ai/.well-known/jwks.json";
/// How long fetched keys are trusted without a fetch.
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// Fetches happen at most this often, whatever the callbacks say.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
/// Largest key set read.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// The ED25519 public keys of a JSON Web Key Set; entries of another kind are skipped.
pub(crate) fn jwks_keys(set: &Value) -> Vec<Vec<u8>> {
    let Some(keys) = set.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter(|k| {
            k.get("kty").and_then(Value::as_str) == Some("OKP")
                && k.get("crv").and_then(Value::as_str) == Some("Ed25519")
        })
        .filter_map(|k| k.get("x").and_then(Value::as_str))
        .filter_map(|x| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x.trim_end_matches('='))
                .ok()
        })
        .filter(|raw| raw.len() == 32)
        .collect()
}

/// What a fal callback claims to be signed: the message and the signature, read and checked for
/// shape and age before any key is looked at (a malformed or stale callback costs no fetch).
pub(crate) struct Signed {
    message: String,
    signature: Vec<u8>,
}

impl Signed {
    pub(crate) fn read(headers: &HeaderMap, body: &[u8], now_s: i64) -> Result<Signed, HookError> {
        let header = |name| super::header(headers, name);
        let request_id = header("x-fal-webhook-request-id")?;
        let user_id = header("x-fal-webhook-user-id")?;
        let ts = header("x-fal-webhook-timestamp")?;
        let signature = header("x-fal-webhook-signature")?;
        let at: i64 = ts.trim().parse().map_err(|_| HookError::BadTimestamp)?;
        super::fresh(at, now_s)?;
        // An ED25519 signature is 64 bytes.
        let signature = match hex::decode(signature.trim()) {
            Ok(raw) if raw.len() == 64 => raw,
            _ => return Err(HookError::BadSignature),
        };
        let message = format!(
            "{request_id}\n{user_id}\n{ts}\n{}",
            hex::encode(Sha256::digest(body))
        );
        Ok(Signed { message, signature })
    }

    /// Whether one of `keys` made the signature.
    pub(crate) fn verifies(&self, keys: &[Vec<u8>]) -> bool {
        keys.iter().any(|key| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
                .verify(self.message.as_bytes(), &self.signature)
                .is_ok()
        })
    }
}

/// Check a fal signature against `keys` at Unix time `now_s`.
#[cfg(test)]
fn verify(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8], now_s: i64) -> Result<(), HookError> {
    if Signed::read(headers, body, now_s)?.verifies(keys) {
        Ok(())
    } else {
        Err(HookError::BadSignature)
    }
}

/// Why fal's key set could not be used.
#[derive(Debug, thiserror::Error)]
enum KeySetError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("key set larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("key set is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// One account's view of fal's keys.
pub(crate) struct FalKeys {
    url: String,
    client: reqwest::Client,
    held: std::sync::Mutex<Held>,
    /// Held for the length of a fetch: one at a time, and callbacks that arrive before any key is
    /// held wait for it instead of being refused.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    keys: Vec<Vec<u8>>,
    /// When the keys held were fetched.
    fetched: Option<Instant>,
    /// When a fetch was last started, successful or not.
    tried: Option<Instant>,
}

impl FalKeys {
    pub(crate) fn new(url: String) -> Result<FalKeys, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(FalKeys {
            url,
            client,
            held: Default::default(),
            fetching: Default::default(),
        })
    }

    /// Verify a callback: its shape and age first, then against the keys held, fetching them
    /// when none are held or they are a day old, and once more when none verifies (a rotation).
    /// One fetch at a time and at most one a minute. A callback that arrives while a fetch runs
    /// is checked against the keys held without waiting, unless no key is held yet (the first
    /// callbacks after start): those wait for the fetch.
    pub(crate) async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), HookError> {
        let signed = Signed::read(headers, body, now_s)?;
        let (keys, stale) = {
            let held = self.held();
            (
                held.keys.clone(),
                held.fetched.is_none_or(|t| t.elapsed() > KEEP),
            )
        };
        if !stale && signed.verifies(&keys) {
            return Ok(());
        }
        if keys.is_empty() {
            let _fetching = self.fetching.lock().await;
            if self.held().keys.is_empty() && self.start_fetch() {
                self.fetch().await;
            }
        } else if let Ok(_fetching) = self.fetching.try_lock() {
            if self.start_fetch() {
                self.fetch().await;
            }
        }
        let keys = self.held().keys.clone();
        if signed.verifies(&keys) {
            Ok(())
        } else {
            Err(HookError::BadSignature)
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this caller (holding `fetching`) may fetch now: no fetch started within the last
    /// minute. If so, the start is recorded.
    fn start_fetch(&self) -> bool {
        let mut held = self.held();
        if held.tried.is_some_and(|t| t.elapsed() < REFETCH_AFTER) {
            return false;
        }
        held.tried = Some(Instant::now());
        true
    }

    async fn fetch(&self) {
        match self.get().await {
            Ok(keys) if !keys.is_empty() => {
                let mut held = self.held();
                held.keys = keys;
                held.fetched = Some(Instant::now());
            }
            Ok(_) => {
                warn!(url = %shown(&self.url, 200), "the fal key set holds no ED25519 key; keeping the keys held")
            }
            Err(e) => {
                warn!(url = %shown(&self.url, 200), error = %shown(&e.to_string(), 300), "cannot fetch the fal key set; keeping the keys held")
            }
        }
    }

    async fn get(&self) -> Result<Vec<Vec<u8>>, KeySetError> {
        let mut answer = self.client.get(&self.url).send().await?;
        if !answer.status().is_success() {
            return Err(KeySetError::Status(answer.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(KeySetError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let set: Value = serde_json::from_slice(&body)?;
        Ok(jwks_keys(&set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn pair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn signed(pair: &Ed25519KeyPair, ts: i64, body: &[u8]) -> HeaderMap {
        let msg = format!("req-1\nuser-1\n{ts}\n{}", hex::encode(Sha256::digest(body)));
        let mut h = HeaderMap::new();
        h.insert(
            "x-fal-webhook-request-id",
            HeaderValue::from_static("req-1"),
        );
        h.insert("x-fal-webhook-user-id", HeaderValue::from_static("user-1"));
        h.insert("x-fal-webhook-timestamp", HeaderValue::from(ts));
        let sig = hex::encode(pair.sign(msg.as_bytes()));
        h.insert(
            "x-fal-webhook-signature",
            HeaderValue::from_str(&sig).unwrap(),
        );
        h
    }

    fn jwk(pair: &Ed25519KeyPair) -> Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key());
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k"})
    }

    #[test]
    fn signatures_verify_under_any_published_key_within_the_tolerance() {
        let (old, new, other) = (pair(1), pair(2), pair(3));
        let set = serde_json::json!({"keys": [
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "x": "not base64!"},
            jwk(&old),
            jwk(&new),
        ]});
        let keys = jwks_keys(&set);
        assert_eq!(keys.len(), 2, "only the two ED25519 keys are kept");
        let body = br#"{"request_id":"req-1","status":"OK"}"#;
        let now = 1_700_000_000;
        assert_eq!(
            verify(&keys, &signed(&new, now, body), body, now + 5),
            Ok(())
        );
        assert_eq!(verify(&keys, &signed(&old, now, body), body, now), Ok(()));
        // Another key, another body, a stale timestamp, a missing header, no keys at all.
        assert_eq!(
            verify(&keys, &signed(&other, now, body), body, now),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify(&keys, &signed(&new, now, body), b"{}", now),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify(&keys, &signed(&new, now - 400, body), body, now),
            Err(HookError::Stale(400))
        );
        let mut h = signed(&new, now, body);
        h.remove("x-fal-webhook-user-id");
        assert_eq!(
            verify(&keys, &h, body, now),
            Err(HookError::MissingHeader("x-fal-webhook-user-id"))
        );
        assert_eq!(
            verify(&[], &signed(&new, now, body), body, now),
            Err(HookError::BadSignature)
        );
        // A timestamp far from now (no overflow), a signature of the wrong length.
        let mut h = signed(&new, now, body);
        h.insert("x-fal-webhook-timestamp", HeaderValue::from(i64::MIN));
        assert!(matches!(
            verify(&keys, &h, body, now),
            Err(HookError::Stale(_))
        ));
        let mut h = signed(&new, now, body);
        h.insert("x-fal-webhook-signature", HeaderValue::from_static("abcd"));
        assert_eq!(verify(&keys, &h, body, now), Err(HookError::BadSignature));
    }

    #[tokio::test]
    async fn keys_are_fetched_when_needed_and_again_after_a_rotation_at_most_once_a_minute() {
        use axum::routing::get;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let published = Arc::new(Mutex::new(serde_json::json!({"keys": [jwk(&pair(1))]})));
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = {
            let (published, fetches) = (published.clone(), fetches.clone());
            axum::Router::new().route(
                "/jwks.json",
                get(move || {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let set = published.lock().unwrap().clone();
                    async move { axum::Json(set) }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let keys = FalKeys::new(format!("http://{addr}/jwks.json")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = b"{}";
        assert_eq!(
            keys.verify(&signed(&pair(1), now, body), body, now).await,
            Ok(())
        );
        assert_eq!(
            keys.verify(&signed(&pair(1), now, body), body, now).await,
            Ok(())
        );
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "kept, not fetched per callback"
        );
        // fal rotates: a callback under the new key finds the held set stale, but a fetch was
        // tried less than a minute ago, so it is refused rather than fetched again.
        *published.lock().unwrap() = serde_json::json!({"keys": [jwk(&pair(2))]});
        assert_eq!(
            keys.verify(&signed(&pair(2), now, body), body, now).await,
            Err(HookError::BadSignature)
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A minute later (the last try moved back), the unknown key leads to one fetch.
        keys.held().tried = Instant::now().checked_sub(REFETCH_AFTER);
        assert_eq!(
            keys.verify(&signed(&pair(2), now, body), body, now).await,
            Ok(())
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Forged signatures right after cost no fetch, and neither do callbacks without the
        // headers or with a stale timestamp, even when a fetch would be allowed.
        assert_eq!(
            keys.verify(&signed(&pair(9), now, body), body, now).await,
            Err(HookError::BadSignature)
        );
        keys.held().tried = None;
        assert_eq!(
            keys.verify(&HeaderMap::new(), body, now).await,
            Err(HookError::MissingHeader("x-fal-webhook-request-id"))
        );
        assert_eq!(
            keys.verify(&signed(&pair(2), now - 3600, body), body, now)
                .await,
            Err(HookError::Stale(3600))
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_first_callbacks_wait_for_the_first_fetch_instead_of_being_refused() {
        use axum::routing::get;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = {
            let fetches = fetches.clone();
            axum::Router::new().route(
                "/jwks.json",
                get(move || {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    async move {
                        // A slow key server: the other callbacks arrive during the fetch.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        axum::Json(serde_json::json!({"keys": [jwk(&pair(1))]}))
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let keys = Arc::new(FalKeys::new(format!("http://{addr}/jwks.json")).unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = b"{}";
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let keys = keys.clone();
                let headers = signed(&pair(1), now, body);
                tokio::spawn(async move { keys.verify(&headers, body, now).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(()));
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one fetch for all of them"
        );
    }
}
