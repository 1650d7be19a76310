//! The render callback receiver: providers that call back say a render finished, and its next
//! poll moves to now.
//!
//! `POST /hooks/<account>/<task>` (served on `worker.webhook_addr`; accounts opt in with
//! `callback_url`, which the adapters pass at submit with the task id appended). A callback
//! never decides an outcome: the receiver checks the signature where the provider signs (every
//! fal callback; Standard Webhooks where the account has a secret), reads the provider task id
//! and whether the callback reports an end (succeeded, failed), and calls `poll_now.lua`, which
//! moves the render's next poll to now once and only if that task awaits that provider task id.
//! The poll then observes what happened, through the one path every poll takes. So a forged or
//! replayed callback costs at most one early poll.
//!
//! Signatures: Standard Webhooks (Replicate, OpenAI-style): headers `webhook-id`,
//! `webhook-timestamp`, `webhook-signature` (`v1,<base64 HMAC-SHA256>` of `id.timestamp.body`
//! under the `whsec_` secret), timestamps within 5 minutes. fal signs with ED25519 under keys it
//! publishes (`fal_signature.rs`); a fal callback is always checked. Kling and MiniMax do not
//! sign; their callbacks are accepted as hints (MiniMax's `challenge` handshake is echoed).
//! Bodies over 64 KiB are refused (413) before they are read whole.

mod fal_signature;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use dramaq_common::config::{Config, Family};
use dramaq_common::queue::{PollNow, Queue};
use dramaq_common::text::Shown;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Largest callback body read.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// A signed callback's timestamp may be this far from now (Standard Webhooks' default).
const TOLERANCE_S: i64 = 300;

/// Whether `family` calls back to a URL given at submit.
pub(crate) fn calls_back(family: Family) -> bool {
    matches!(
        family,
        Family::Kling | Family::Minimax | Family::Fal | Family::Replicate
    )
}

/// One account's receiver settings.
#[derive(Clone)]
struct Hooked {
    family: Family,
    check: Check,
}

/// How an account's callbacks are authenticated.
#[derive(Clone)]
enum Check {
    /// Kling, MiniMax, or an account without a secret: a callback is a hint anyone could send.
    Unsigned,
    /// Standard Webhooks key (the `whsec_` secret, decoded).
    Standard(ring::hmac::Key),
    /// fal's published ED25519 keys.
    Fal(Arc<fal_signature::FalKeys>),
}

#[derive(Clone)]
struct Receiver {
    queue: Queue,
    accounts: Arc<HashMap<String, Hooked>>,
    /// Woken when a poll moved to now, so this process's idle pollers take it at once.
    wake: Arc<tokio::sync::Notify>,
}

/// Why a callback was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("the signature's timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("the signature's timestamp is {0} s away from now (tolerance {TOLERANCE_S} s)")]
    Stale(i64),
    #[error("no signature matches")]
    BadSignature,
}

/// A signature header's text, or which one is missing.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, HookError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(HookError::MissingHeader(name))
}

/// A signed callback's timestamp `at` is within the tolerance of `now_s` (whatever the
/// numbers: a timestamp near `i64::MIN` is stale, not an overflow).
fn fresh(at: i64, now_s: i64) -> Result<(), HookError> {
    if now_s.abs_diff(at) > TOLERANCE_S.unsigned_abs() {
        return Err(HookError::Stale(now_s.saturating_sub(at)));
    }
    Ok(())
}

/// The HMAC key of a Standard Webhooks secret (`whsec_<base64>`, or the raw base64).
pub(crate) fn standard_key(secret: &str) -> Result<ring::hmac::Key, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("the webhook secret is not base64 (whsec_…): {e}"))?;
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw))
}

/// Check a Standard Webhooks signature at Unix time `now_s`.
pub(crate) fn verify_standard(
    key: &ring::hmac::Key,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), HookError> {
    let header = |name| header(headers, name);
    let id = header("webhook-id")?;
    let ts = header("webhook-timestamp")?;
    let sigs = header("webhook-signature")?;
    let at: i64 = ts.trim().parse().map_err(|_| HookError::BadTimestamp)?;
    fresh(at, now_s)?;
    let mut signed = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(ts.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let matches = sigs.split_whitespace().any(|sig| {
        let Some(b64) = sig.strip_prefix("v1,") else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        ring::hmac::verify(key, &signed, &raw).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(HookError::BadSignature)
    }
}

/// What a callback body says: the provider task id, and whether the render ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Announced {
    pub provider_task_id: String,
    pub ended: bool,
}

/// Read a family's callback body. `None`: not a render callback this receiver understands.
pub(crate) fn announced(family: Family, body: &Value) -> Option<Announced> {
    let s = |p: &str| body.pointer(p).and_then(Value::as_str);
    let (id, ended) = match family {
        Family::Replicate => (
            s("/id")?,
            matches!(
                s("/status")?,
                "succeeded" | "failed" | "canceled" | "aborted"
            ),
        ),
        Family::Kling => {
            let data = body.get("data").unwrap_or(body);
            (
                data.get("task_id")?.as_str()?,
                matches!(data.get("task_status")?.as_str()?, "succeed" | "failed"),
            )
        }
        Family::Minimax => (
            s("/task_id")?,
            // The query says `Success`/`Fail`; callbacks have been seen lower-case, `failed`.
            matches!(
                s("/status")?.to_ascii_lowercase().as_str(),
                "success" | "fail" | "failed"
            ),
        ),
        Family::Fal => (s("/request_id")?, true),
        _ => return None,
    };
    Some(Announced {
        provider_task_id: id.to_string(),
        ended,
    })
}

fn reply(status: StatusCode, outcome: &str) -> Response {
    (status, Json(json!({ "outcome": outcome }))).into_response()
}

async fn receive(
    State(rx): State<Receiver>,
    Path((account, task)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(hooked) = rx.accounts.get(&account) else {
        return reply(StatusCode::NOT_FOUND, "unknown account");
    };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let checked = match &hooked.check {
        Check::Unsigned => Ok(()),
        Check::Standard(key) => verify_standard(key, &headers, &body, now_s),
        Check::Fal(keys) => keys.verify(&headers, &body, now_s).await,
    };
    if let Err(e) = checked {
        warn!(account = %Shown::id(&account), task = %Shown::id(&task), error = %e, "callback refused");
        return reply(StatusCode::UNAUTHORIZED, "bad signature");
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return reply(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    if hooked.family == Family::Minimax {
        if let Some(challenge) = value.get("challenge") {
            return (StatusCode::OK, Json(json!({ "challenge": challenge }))).into_response();
        }
    }
    let Some(said) = announced(hooked.family, &value) else {
        return reply(StatusCode::BAD_REQUEST, "not a render callback");
    };
    if !said.ended {
        return reply(StatusCode::OK, "still rendering");
    }
    match rx
        .queue
        .poll_now(&account, &task, &said.provider_task_id)
        .await
    {
        Ok(outcome) => {
            debug!(account = %Shown::id(&account), task = %Shown::id(&task), ?outcome, "callback");
            let word = match outcome {
                PollNow::Moved => {
                    rx.wake.notify_waiters();
                    "polling now"
                }
                PollNow::Duplicate => "duplicate",
                PollNow::Unknown => "not awaited",
            };
            reply(StatusCode::OK, word)
        }
        // The provider retries a failed delivery; meanwhile the render is still polled.
        Err(e) => {
            warn!(account = %Shown::id(&account), error = %e, "callback not recorded");
            reply(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}

/// The receiver's routes for the accounts of `cfg` that opted in (`callback_url`).
pub(crate) fn router(
    cfg: &Config,
    served: &[String],
    queue: Queue,
    wake: Arc<tokio::sync::Notify>,
) -> anyhow::Result<Router> {
    let mut accounts = HashMap::new();
    for name in served {
        let Some(acct) = cfg.accounts.get(name) else {
            continue;
        };
        if acct.callback_url.is_none() || !calls_back(acct.family) {
            continue;
        }
        let check = match (acct.family, acct.webhook_secret(name)?) {
            (Family::Fal, _) => Check::Fal(Arc::new(
                fal_signature::FalKeys::new(
                    acct.webhook_jwks_url
                        .clone()
                        .unwrap_or_else(|| fal_signature::FAL_JWKS_URL.to_string()),
                )
                .map_err(|e| anyhow::anyhow!("accounts.{name}: callback key client: {e}"))?,
            )),
            (_, Some(secret)) => Check::Standard(
                standard_key(secret.expose())
                    .map_err(|e| anyhow::anyhow!("accounts.{name}.webhook_secret_env: {e}"))?,
            ),
            (_, None) => Check::Unsigned,
        };
        accounts.insert(
            name.clone(),
            Hooked {
                family: acct.family,
                check,
            },
        );
    }
    let rx = Receiver {
        queue,
        accounts: Arc::new(accounts),
        wake,
    };
    Ok(Router::new()
        .route("/hooks/{account}/{task}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(rx))
}

/// Bind `addr` and serve the receiver until `stop` fires. Returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    app: Router,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("worker.webhook_addr: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            warn!(error = %e, addr = %bound, "callback receiver stopped");
        }
    });
    info!(addr = %bound, "callback receiver listening");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(id: &str, ts: i64, body: &[u8], secret: &str) -> HeaderMap {
        let key = standard_key(secret).unwrap();
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, &msg));
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from(ts));
        h.insert(
            "webhook-signature",
            HeaderValue::from_str(&format!("v1,bm9wZQ== v1,{sig}")).unwrap(),
        );
        h
    }

    #[test]
    fn standard_webhooks_signatures_are_checked_with_a_timestamp_tolerance() {
        let key = standard_key(SECRET).unwrap();
        let body = br#"{"id":"p1","status":"succeeded"}"#;
        let now = 1_700_000_000;
        assert_eq!(
            verify_standard(&key, &signed("msg_1", now, body, SECRET), body, now + 10),
            Ok(())
        );
        // Another body, another secret, a stale or future timestamp, a missing header.
        let other = br#"{"id":"p2","status":"succeeded"}"#;
        assert_eq!(
            verify_standard(&key, &signed("msg_1", now, body, SECRET), other, now),
            Err(HookError::BadSignature)
        );
        let wrong = "whsec_c2VjcmV0LW9mLWFub3RoZXItYWNjb3VudA==";
        assert_eq!(
            verify_standard(&key, &signed("msg_1", now, body, wrong), body, now),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify_standard(&key, &signed("msg_1", now - 301, body, SECRET), body, now),
            Err(HookError::Stale(301))
        );
        assert_eq!(
            verify_standard(&key, &signed("msg_1", now + 400, body, SECRET), body, now),
            Err(HookError::Stale(-400))
        );
        let mut h = signed("msg_1", now, body, SECRET);
        h.remove("webhook-signature");
        assert_eq!(
            verify_standard(&key, &h, body, now),
            Err(HookError::MissingHeader("webhook-signature"))
        );
        assert!(standard_key("whsec_not base64!").is_err());
    }

    #[tokio::test]
    async fn the_receiver_refuses_what_it_must_and_moves_nothing_it_does_not_know() {
        use dramaq_common::redis_conn::RedisHandle;
        let server = dramaq_common::testkit::RedisServer::start().expect("redis-server");
        let queue = Queue::new(RedisHandle::connect(&server.url(), 2).await.unwrap());
        let mut accounts = HashMap::new();
        let check = Check::Standard(standard_key(SECRET).unwrap());
        let family = Family::Replicate;
        accounts.insert("rep".to_string(), Hooked { family, check });
        let (family, check) = (Family::Minimax, Check::Unsigned);
        accounts.insert("mm".to_string(), Hooked { family, check });
        let rx = Receiver {
            queue,
            accounts: Arc::new(accounts),
            wake: Default::default(),
        };
        let app = Router::new()
            .route("/hooks/{account}/{task}", post(receive))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(rx);
        let stop = CancellationToken::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), app, stop.clone())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let send = |account: &str, headers: HeaderMap, body: Vec<u8>| {
            http.post(format!("http://{addr}/hooks/{account}/task-1"))
                .headers(headers)
                .body(body)
                .send()
        };
        let body = br#"{"id":"p1","status":"succeeded"}"#.to_vec();
        let status = |r: reqwest::Response| r.status().as_u16();
        // Signed right: accepted, but no such render is awaited, so nothing moves.
        let r = send("rep", signed("m1", now, &body, SECRET), body.clone())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["outcome"], "not awaited");
        // Badly signed, unsigned, replayed from 10 minutes ago: refused.
        let wrong = "whsec_c2VjcmV0LW9mLWFub3RoZXItYWNjb3VudA==";
        let r = send("rep", signed("m1", now, &body, wrong), body.clone());
        assert_eq!(status(r.await.unwrap()), 401);
        let r = send("rep", HeaderMap::new(), body.clone());
        assert_eq!(status(r.await.unwrap()), 401);
        let r = send("rep", signed("m1", now - 600, &body, SECRET), body.clone());
        assert_eq!(status(r.await.unwrap()), 401);
        // Oversized, unknown account, not JSON, MiniMax's challenge echoed.
        let big = vec![b' '; MAX_BODY + 1];
        let r = send("rep", signed("m2", now, &big, SECRET), big.clone());
        assert_eq!(status(r.await.unwrap()), 413);
        let r = send("nobody", HeaderMap::new(), body.clone());
        assert_eq!(status(r.await.unwrap()), 404);
        let r = send("mm", HeaderMap::new(), b"{oops".to_vec());
        assert_eq!(status(r.await.unwrap()), 400);
        let r = send("mm", HeaderMap::new(), br#"{"challenge":"c-42"}"#.to_vec());
        let r = r.await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["challenge"], "c-42");
        stop.cancel();
    }

    #[test]
    fn each_family_says_which_render_ended() {
        let ended = |family, v: Value| announced(family, &v);
        assert_eq!(
            ended(Family::Replicate, json!({"id":"p1","status":"succeeded"})),
            Some(Announced {
                provider_task_id: "p1".into(),
                ended: true
            })
        );
        assert!(
            !ended(Family::Replicate, json!({"id":"p1","status":"processing"}))
                .unwrap()
                .ended
        );
        assert!(
            ended(
                Family::Kling,
                json!({"task_id":"k1","task_status":"succeed"})
            )
            .unwrap()
            .ended
        );
        assert!(
            ended(
                Family::Kling,
                json!({"data":{"task_id":"k1","task_status":"failed"}})
            )
            .unwrap()
            .ended
        );
        assert!(
            !ended(
                Family::Kling,
                json!({"task_id":"k1","task_status":"processing"})
            )
            .unwrap()
            .ended
        );
        for status in ["Success", "Fail", "success", "failed"] {
            let said = ended(Family::Minimax, json!({"task_id":"m1","status":status}));
            assert!(said.unwrap().ended, "{status}");
        }
        let said = ended(
            Family::Minimax,
            json!({"task_id":"m1","status":"processing"}),
        );
        assert!(!said.unwrap().ended);
        assert!(
            ended(Family::Fal, json!({"request_id":"f1","status":"ERROR"}))
                .unwrap()
                .ended
        );
        assert_eq!(
            ended(Family::Replicate, json!({"status":"succeeded"})),
            None
        );
        assert_eq!(ended(Family::OpenaiVideos, json!({"id":"v"})), None);
    }
}
