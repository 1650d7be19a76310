//! Shared HTTP plumbing for every provider family.
//!
//! One place decides how a request goes out and how a failure comes back: the client (rustls,
//! timeouts, user agent), rate-limit hints (`retry-after-ms`, `Retry-After` in seconds or as an
//! HTTP date, `openai-poll-after-ms`), transport failures as `network`, a generic HTTP status →
//! [`FailureClass`] table that families refine, and scrubbing of provider text before it is stored
//! (API keys, bearer tokens and JWTs never reach Redis or a log). Results are streamed, never
//! buffered whole: [`download`] turns a response into a [`Download`].
//!
//! Every create request carries [`IDEMPOTENCY_KEY`] with our task id. Real providers ignore it; the
//! sandbox counts submissions by it, which is how double submissions are caught in tests.

pub mod openai;

use super::{Download, ProviderError, ResultRef};
use bytes::{Bytes, BytesMut};
use dramaq_common::config::{AccountConfig, Secret};
use dramaq_common::text::shown;
use dramaq_common::FailureClass;
use futures::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION,
};
use reqwest::{RequestBuilder, Response};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Header sent on every create (POST) request, valued with our task id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Longest provider message kept in a [`ProviderError`] (characters).
pub const MESSAGE_MAX_CHARS: usize = 300;

/// Replacement text for anything that looks like a credential.
pub const REDACTED: &str = "[redacted]";

/// JSON answers (status, submit, errors) are small; anything bigger is not what we asked for.
pub const JSON_BODY_CAP: usize = 16 * 1024 * 1024;

/// Error bodies are only read for their message.
const ERROR_BODY_CAP: usize = 64 * 1024;

/// Result downloads are long transfers: they get this total budget instead of the account's
/// per-request timeout, while the client's read timeout still catches a stalled connection.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most redirects one request follows. A result URL that redirects more often (or to itself)
/// is `download_failed` with code `redirect_loop`.
pub const MAX_REDIRECTS: usize = 10;

/// Longest provider task id accepted from a submit answer (bytes).
pub const TASK_ID_MAX_BYTES: usize = 512;

/// Provider hints beyond a day are treated as a day: a bad header must not park a task forever.
const MAX_HINT: Duration = Duration::from_secs(24 * 3600);

/// The HTTP client for one account.
pub fn client(acct: &AccountConfig) -> reqwest::Client {
    let timeout = Duration::from_millis(acct.http_timeout_ms.max(1));
    reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("dramaq/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .timeout(timeout)
        .read_timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .build()
        // Building only fails when the TLS backend cannot initialise; the default client then
        // fails the same way on first use, with a network error the worker can report.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The account's client without automatic redirects, for downloads whose credential header
/// reqwest would carry to another host (Veo's `x-goog-api-key`): [`fetch_result_by_hand`]
/// follows their redirects itself.
pub fn no_redirect_client(acct: &AccountConfig) -> reqwest::Client {
    let timeout = Duration::from_millis(acct.http_timeout_ms.max(1));
    reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("dramaq/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .read_timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A credential header for one request: `Authorization: Bearer …` for most families, fal's
/// `Authorization: Key …`, Kling's per-request JWT as a bearer, Veo's `x-goog-api-key`. The value
/// is marked sensitive so it never shows in `Debug` output.
#[derive(Clone)]
pub struct Auth {
    name: HeaderName,
    value: HeaderValue,
}

impl Auth {
    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Result<Auth, ProviderError> {
        Auth::scheme("Bearer", token)
    }

    /// `Authorization: <scheme> <secret>`.
    pub fn scheme(scheme: &str, secret: &str) -> Result<Auth, ProviderError> {
        Ok(Auth {
            name: AUTHORIZATION,
            value: sensitive_value(&format!("{scheme} {secret}"))?,
        })
    }

    /// `<name>: <secret>` (an API-key header such as `x-goog-api-key`).
    pub fn header(name: &'static str, secret: &str) -> Result<Auth, ProviderError> {
        Ok(Auth {
            name: HeaderName::from_static(name),
            value: sensitive_value(secret)?,
        })
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({}: …)", self.name)
    }
}

/// The account's `Authorization` value, `<scheme> <key>` (`Bearer`, fal's `Key`), when it has a
/// key.
pub fn auth_header(scheme: &str, key: Option<&Secret>) -> Result<Option<Auth>, ProviderError> {
    key.map(|k| Auth::scheme(scheme, k.expose())).transpose()
}

/// Add the credential header when there is one: the one way every adapter authenticates.
pub fn with_auth(rb: RequestBuilder, auth: Option<Auth>) -> RequestBuilder {
    match auth {
        Some(a) => rb.header(a.name, a.value),
        None => rb,
    }
}

fn sensitive_value(text: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        ProviderError::new(
            FailureClass::Auth,
            "credential contains characters not allowed in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `base_url` + `path`, with exactly one slash between them.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Percent-encode a provider id for use as one path segment (ids are opaque to us). A segment
/// made only of dots (`.`, `..`) would be read as "this" or "parent" directory and change the
/// URL, so its dots are encoded too (`%2E`). WHATWG URL parsers (reqwest's included) still
/// treat `%2E%2E` as `..`, so such ids are also refused before they are stored
/// ([`accept_task_id`]).
pub fn path_segment(s: &str) -> String {
    let all_dots = s.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') || b == b'.' && !all_dots;
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Check a provider task id taken from a submit answer before it is stored: empty, only dots,
/// longer than [`TASK_ID_MAX_BYTES`] or holding control characters is `provider_error` with
/// code `bad_task_id` (such an id cannot be polled safely, and it would reach logs and URLs).
pub fn accept_task_id(id: String) -> Result<String, ProviderError> {
    let problem = if id.is_empty() {
        Some("is empty")
    } else if id.bytes().all(|b| b == b'.') {
        // Even encoded (`%2E`), URL parsers read a dot-only segment as "here" or "parent".
        Some("is only dots")
    } else if id.len() > TASK_ID_MAX_BYTES {
        Some("is too long")
    } else if id.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    };
    match problem {
        None => Ok(id),
        Some(why) => Err(ProviderError::new(
            FailureClass::ProviderError,
            format!(
                "provider task id {why} ({:?}, {} bytes)",
                shown(&id, 40),
                id.len()
            ),
        )
        .with_code("bad_task_id")),
    }
}

// ---------------------------------------------------------------------------------------------
// Rate-limit and poll hints
// ---------------------------------------------------------------------------------------------

/// When to try again after a 429/503: `retry-after-ms` (OpenAI, more precise) wins over
/// `Retry-After` (seconds or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(parse_millis) {
        return Some(ms);
    }
    header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now))
}

/// OpenAI's `openai-poll-after-ms` hint for the next status poll.
pub fn poll_after(headers: &HeaderMap) -> Option<Duration> {
    header_str(headers, "openai-poll-after-ms").and_then(parse_millis)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn parse_millis(v: &str) -> Option<Duration> {
    let ms: f64 = v.trim().parse().ok()?;
    if !ms.is_finite() || ms < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(ms / 1000.0).min(MAX_HINT))
}

/// `Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(secs).min(MAX_HINT));
    }
    let at = parse_http_date(v)?;
    // A date in the past means "now".
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_HINT),
    )
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, and the obsolete forms receivers must accept).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The generic reading of an HTTP status; families refine it with the body.
pub fn class_for_status(status: u16) -> FailureClass {
    match status {
        401 | 403 => FailureClass::Auth,
        402 => FailureClass::InsufficientCredits,
        429 => FailureClass::RateLimited,
        // Request timeout / too early: the same request can succeed later.
        408 | 425 => FailureClass::ProviderError,
        400..=499 => FailureClass::InvalidRequest,
        500..=599 => FailureClass::ProviderError,
        _ => FailureClass::Unknown,
    }
}

/// A transport failure (connect, TLS, timeout, reset, broken body) as class `network`.
///
/// reqwest puts the request URL into its messages; URLs may carry keys in the query string
/// (`?key=`), so the URL is dropped and the rest is scrubbed.
pub fn network_error(err: reqwest::Error) -> ProviderError {
    let code = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else if err.is_redirect() {
        "redirect"
    } else {
        "request"
    };
    let err = err.without_url();
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    ProviderError::new(FailureClass::Network, clean_text(&msg)).with_code(code)
}

/// Send a request; transport failures become `network`, a URL that cannot be built becomes
/// `invalid_request` (a configuration problem: retrying will not help).
pub async fn send(rb: RequestBuilder) -> Result<Response, ProviderError> {
    rb.send().await.map_err(send_error)
}

fn send_error(e: reqwest::Error) -> ProviderError {
    if e.is_builder() {
        ProviderError::new(
            FailureClass::InvalidRequest,
            "request could not be built (check the account's base_url)",
        )
        .with_code("bad_request_url")
    } else {
        network_error(e)
    }
}

/// One provider answer, read once: the status, the headers and the body (up to the caller's
/// cap on success; the first 64 KiB of an error body, read only for its message).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The skeleton of every provider call: send (transport failures are `network`), then read the
/// body with `cap` on success or the capped error body otherwise. Families whose errors also
/// come inside 2xx envelopes (Kling, MiniMax, fal's result) open the [`Answer`] themselves;
/// the others use [`call_json`].
pub async fn exchange(rb: RequestBuilder, cap: usize) -> Result<Answer, ProviderError> {
    let resp = send(rb).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = if resp.status().is_success() {
        read_body(resp, cap).await?
    } else {
        read_error_body(resp).await
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// [`exchange`] for a JSON answer: a non-2xx answer becomes the family's `classify`d error, a
/// 2xx body is parsed (`what` names it in the error when it is not JSON). The answer's status
/// and headers come back with the JSON (poll hints, status for error reports).
pub async fn call_json(
    rb: RequestBuilder,
    what: &str,
    scrub: &Scrubber,
    classify: impl FnOnce(&Answer) -> ProviderError,
) -> Result<(Answer, Value), ProviderError> {
    call_json_capped(rb, JSON_BODY_CAP, what, scrub, classify).await
}

/// [`call_json`] with another body cap (image answers carry base64 images).
pub async fn call_json_capped(
    rb: RequestBuilder,
    cap: usize,
    what: &str,
    scrub: &Scrubber,
    classify: impl FnOnce(&Answer) -> ProviderError,
) -> Result<(Answer, Value), ProviderError> {
    let answer = exchange(rb, cap).await?;
    if !answer.is_success() {
        return Err(classify(&answer));
    }
    let v = parse_json(&answer.body, what, scrub)?;
    Ok((answer, v))
}

/// Read a whole (JSON or audio) body, refusing more than `cap` bytes.
pub async fn read_body(resp: Response, cap: usize) -> Result<Bytes, ProviderError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large(cap));
    }
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(network_error)?;
        if buf.len() + chunk.len() > cap {
            return Err(too_large(cap));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn too_large(cap: usize) -> ProviderError {
    ProviderError::new(
        FailureClass::ProviderError,
        format!("response body larger than {cap} bytes"),
    )
    .with_code("body_too_large")
}

/// Read up to [`ERROR_BODY_CAP`] bytes of an error body for its message; a broken body just
/// yields what arrived (the status already says what went wrong).
pub async fn read_error_body(resp: Response) -> Bytes {
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = ERROR_BODY_CAP.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= ERROR_BODY_CAP {
            break;
        }
    }
    buf.freeze()
}

/// Parse a JSON body; anything else is a `provider_error` naming what was expected.
pub fn parse_json(body: &[u8], what: &str, scrub: &Scrubber) -> Result<Value, ProviderError> {
    serde_json::from_slice(body).map_err(|_| {
        ProviderError::new(
            FailureClass::ProviderError,
            format!(
                "malformed JSON in {what}: {}",
                scrub.clean(&String::from_utf8_lossy(&body[..body.len().min(8192)]))
            ),
        )
        .with_code("malformed_response")
    })
}

/// A JSON field that should be a string; relays sometimes send ids as numbers.
pub fn json_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------------------------

/// Removes this account's own credentials verbatim, then anything credential-shaped
/// ([`redact`]), squeezes whitespace and truncates to [`MESSAGE_MAX_CHARS`].
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Vec<Secret>,
}

impl Scrubber {
    pub fn new<'a>(secrets: impl IntoIterator<Item = Option<&'a Secret>>) -> Scrubber {
        Scrubber {
            secrets: secrets.into_iter().flatten().cloned().collect(),
        }
    }

    pub fn clean(&self, text: &str) -> String {
        let mut s = text.to_string();
        for secret in &self.secrets {
            let v = secret.expose();
            // Very short "keys" (sandbox placeholders) would shred ordinary words.
            if v.len() >= 4 {
                s = s.replace(v, REDACTED);
            }
        }
        clean_text(&s)
    }
}

fn clean_text(text: &str) -> String {
    // Bound the work on huge bodies (HTML error pages). A token cut in half by the bound might
    // no longer look like a credential, so the cut drops the partial token entirely.
    let bound = 4 * MESSAGE_MAX_CHARS;
    let text = match text.char_indices().nth(bound) {
        None => text,
        Some((at, _)) => {
            let head = &text[..at];
            head.rfind(char::is_whitespace).map_or("", |ws| &head[..ws])
        }
    };
    let squeezed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // Control characters other than whitespace survive the squeeze: escape them, so provider
    // text cannot forge a log line or reach a terminal raw.
    shown(&redact(&squeezed), MESSAGE_MAX_CHARS)
}

/// Cut `text` to at most `max` characters (on a char boundary), marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => {
            let mut s = text[..at].to_string();
            s.push('…');
            s
        }
    }
}

/// Replace anything that looks like a credential with [`REDACTED`]: bearer/basic tokens, JWTs,
/// `sk-…` style keys, values of key-ish fields (`api_key=…`, `"token": "…"`, `X-Amz-Signature=…`)
/// and long mixed-case opaque strings. Ordinary ids (hex, uuids, numbers) are kept.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<&str> = None;
    let mut sep = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !is_token_char(c) {
            out.push(c);
            sep.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let len = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let tok = &rest[..len];
        if looks_secret(tok, prev, &sep) {
            out.push_str(REDACTED);
        } else {
            out.push_str(tok);
        }
        prev = Some(tok);
        sep.clear();
        rest = &rest[len..];
    }
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+')
}

fn looks_secret(tok: &str, prev: Option<&str>, sep: &str) -> bool {
    let is_scheme = |t: &str| t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("basic");
    if is_scheme(tok) {
        return false;
    }
    // `Bearer <token>`
    if prev.is_some_and(is_scheme) && !sep.is_empty() && sep.chars().all(char::is_whitespace) {
        return true;
    }
    // `api_key=…`, `"secret": "…"`, `Authorization: …`
    if let Some(p) = prev {
        let p = p.to_ascii_lowercase();
        let keyish = [
            "key",
            "token",
            "secret",
            "password",
            "signature",
            "authorization",
            "credential",
        ]
        .iter()
        .any(|k| p.contains(k));
        let assigns = (sep.contains('=') || sep.contains(':'))
            && sep
                .chars()
                .all(|c| matches!(c, '=' | ':' | '"' | '\'') || c.is_whitespace());
        if keyish && assigns {
            return true;
        }
    }
    // JWT: three base64url parts, the header always starting `eyJ` (`{"`).
    if tok.starts_with("eyJ") && tok.matches('.').count() >= 2 {
        return true;
    }
    // OpenAI-style and relay keys.
    let lower = tok.to_ascii_lowercase();
    if (lower.starts_with("sk-") || lower.starts_with("sk_") || lower.starts_with("rk-"))
        && tok.len() >= 16
    {
        return true;
    }
    if tok.starts_with("AIza") && tok.len() >= 30 {
        return true;
    }
    // Long opaque mixed-case strings: keys and signatures, not hex ids or uuids.
    tok.len() >= 40
        && !tok.contains('.')
        && tok.chars().any(|c| c.is_ascii_uppercase())
        && tok.chars().any(|c| c.is_ascii_lowercase())
        && tok.chars().any(|c| c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------------------------

/// File extension for a result's content type, when we know it.
pub fn ext_for_content_type(content_type: &str) -> Option<&'static str> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match mime.as_str() {
        "video/mp4" => "mp4",
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/webp" => "webp",
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "wav",
        "audio/mpeg" | "audio/mp3" => "mp3",
        _ => return None,
    })
}

/// Stream a successful response body. The caller enforces its byte cap while writing; a broken
/// connection mid-stream surfaces as `network`.
pub fn download(resp: Response) -> Download {
    let content_length = resp.content_length();
    let ext = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(ext_for_content_type)
        .map(str::to_string);
    let body = resp
        .bytes_stream()
        .map(|chunk| chunk.map_err(network_error))
        .boxed();
    Download {
        content_length,
        ext,
        body,
    }
}

/// Authenticated URLs are stored in Redis; only send credentials back to the account's own host,
/// so an edited record cannot make the worker hand the key to someone else.
pub fn check_authed_url(url: &str, base_url: &str) -> Result<(), ProviderError> {
    let base = base_url.trim_end_matches('/');
    let under = url
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if base.is_empty() || !under {
        return Err(ProviderError::new(
            FailureClass::InvalidRequest,
            "authenticated result URL is not under the account's base_url",
        )
        .with_code("foreign_result_url"));
    }
    Ok(())
}

/// Download a result: the one implementation every family uses. A plain URL (often a signed
/// URL on someone else's CDN) gets no credentials; an authenticated one must be under
/// `base_url` and gets `auth()`, which is only asked for then. Redirects are followed by the
/// client (reqwest drops `Authorization` when a hop leaves the host).
pub async fn fetch_result(
    client: &reqwest::Client,
    result: &ResultRef,
    base_url: &str,
    auth: impl FnOnce() -> Result<Option<Auth>, ProviderError>,
    scrub: &Scrubber,
) -> Result<Download, ProviderError> {
    fetch_result_with(client, None, result, base_url, auth, scrub).await
}

/// [`fetch_result`] for a credential reqwest would carry across hosts (Veo's API-key header):
/// authenticated downloads follow redirects here with `no_redirect` (a client built by
/// [`no_redirect_client`]), and each hop gets the credential only when it is under `base_url`
/// (a hop elsewhere is fetched without it instead of refused).
pub async fn fetch_result_by_hand(
    client: &reqwest::Client,
    no_redirect: &reqwest::Client,
    result: &ResultRef,
    base_url: &str,
    auth: impl FnOnce() -> Result<Option<Auth>, ProviderError>,
    scrub: &Scrubber,
) -> Result<Download, ProviderError> {
    fetch_result_with(client, Some(no_redirect), result, base_url, auth, scrub).await
}

async fn fetch_result_with(
    client: &reqwest::Client,
    no_redirect: Option<&reqwest::Client>,
    result: &ResultRef,
    base_url: &str,
    auth: impl FnOnce() -> Result<Option<Auth>, ProviderError>,
    scrub: &Scrubber,
) -> Result<Download, ProviderError> {
    let resp = match result {
        ResultRef::Url { url } => get_following(client, url, None).await?,
        // By hand, every hop is checked before it gets the credential, so a URL elsewhere is
        // fetched without it (Veo's sample URI can point at another host).
        ResultRef::AuthedUrl { url } => match no_redirect {
            Some(nr) => get_by_hand(nr, url, auth()?, base_url).await?,
            None => {
                check_authed_url(url, base_url)?;
                get_following(client, url, auth()?).await?
            }
        },
    };
    result_download(resp, scrub).await
}

fn redirect_loop() -> ProviderError {
    ProviderError::new(
        FailureClass::DownloadFailed,
        format!("result URL redirects more than {MAX_REDIRECTS} times (a redirect loop)"),
    )
    .with_code("redirect_loop")
}

/// GET with the client's own redirect handling; too many redirects is `redirect_loop`.
async fn get_following(
    client: &reqwest::Client,
    url: &str,
    auth: Option<Auth>,
) -> Result<Response, ProviderError> {
    let mut rb = client.get(url).timeout(FETCH_TIMEOUT);
    if auth.is_some() {
        rb = with_auth(rb, auth).header(ACCEPT, "application/binary");
    }
    match rb.send().await {
        Ok(resp) => Ok(resp),
        Err(e) if e.is_redirect() => Err(redirect_loop()),
        Err(e) => Err(send_error(e)),
    }
}

/// GET following redirects here, the credential going only to URLs under `base_url`.
async fn get_by_hand(
    no_redirect: &reqwest::Client,
    url: &str,
    auth: Option<Auth>,
    base_url: &str,
) -> Result<Response, ProviderError> {
    let mut current = reqwest::Url::parse(url).map_err(|_| {
        ProviderError::new(
            FailureClass::InvalidRequest,
            "result URL is not a valid URL",
        )
        .with_code("bad_result_url")
    })?;
    for _ in 0..=MAX_REDIRECTS {
        let mut rb = no_redirect.get(current.clone()).timeout(FETCH_TIMEOUT);
        if check_authed_url(current.as_str(), base_url).is_ok() {
            rb = with_auth(rb, auth.clone());
        }
        let resp = send(rb).await?;
        if resp.status().is_redirection() {
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|loc| current.join(loc).ok());
            if let Some(next) = next {
                current = next;
                continue;
            }
        }
        return Ok(resp);
    }
    Err(redirect_loop())
}

/// A result GET's answer: the streamed body, or the failure. Signed result URLs that are gone
/// (403/404/410) are `result_expired`.
async fn result_download(resp: Response, scrub: &Scrubber) -> Result<Download, ProviderError> {
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Ok(download(resp));
    }
    let class = match status {
        403 | 404 | 410 => FailureClass::ResultExpired,
        s => class_for_status(s),
    };
    let hint = retry_after(resp.headers());
    let body = read_error_body(resp).await;
    let detail = openai::parse_error_body(&body)
        .message
        .map(|m| format!(": {}", scrub.clean(&m)))
        .unwrap_or_default();
    Err(
        ProviderError::new(class, format!("download failed with HTTP {status}{detail}"))
            .with_code(status.to_string())
            .with_status(status)
            .with_retry_after(hint),
    )
}

#[cfg(test)]
pub(crate) mod testing {
    //! A throwaway HTTP server for adapter tests: records every request and answers with a
    //! closure, so each test states exactly the provider behaviour it relies on.

    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use bytes::Bytes;
    use dramaq_common::config::{AccountConfig, Config};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    pub struct Recorded {
        pub method: String,
        /// Path and query.
        pub uri: String,
        pub headers: HeaderMap,
        pub body: Bytes,
    }

    impl Recorded {
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("request body is JSON")
        }
    }

    pub struct MockServer {
        pub base: String,
        pub requests: Arc<Mutex<Vec<Recorded>>>,
    }

    impl MockServer {
        pub fn requests(&self) -> Vec<Recorded> {
            self.requests.lock().expect("lock").clone()
        }
    }

    pub async fn serve<F>(answer: F) -> MockServer
    where
        F: Fn(&Recorded) -> Response + Send + Sync + 'static,
    {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let answer = Arc::new(answer);
        let log = requests.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let answer = answer.clone();
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let rec = Recorded {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts.headers,
                    body,
                };
                log.lock().expect("lock").push(rec.clone());
                answer(&rec)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockServer {
            base: format!("http://{addr}"),
            requests,
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Response {
        reply(
            status,
            &[("content-type", "application/json")],
            body.to_string(),
        )
    }

    pub fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
        let mut resp = (StatusCode::from_u16(status).expect("status"), body.into()).into_response();
        for (k, v) in headers {
            resp.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                axum::http::HeaderValue::from_str(v).expect("value"),
            );
        }
        resp
    }

    /// An account of `family` pointing at `base`, parsed the way the real config is.
    pub fn account(family: &str, base: &str, extra: &str) -> AccountConfig {
        let cfg = Config::from_toml_str(&format!(
            "[accounts.t]\nfamily = \"{family}\"\nbase_url = \"{base}\"\nhttp_timeout_ms = 5000\n{extra}\n"
        ))
        .expect("test account config");
        cfg.accounts["t"].clone()
    }

    pub async fn collect(dl: super::Download) -> Result<Vec<u8>, super::ProviderError> {
        use futures::StreamExt;
        let mut body = dl.body;
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderName;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "20")]);
        assert_eq!(retry_after_at(&h, now), Some(Duration::from_millis(1500)));
        let h = headers(&[("retry-after", "20")]);
        assert_eq!(retry_after_at(&h, now), Some(Duration::from_secs(20)));
        let h = headers(&[("retry-after-ms", "garbage"), ("retry-after", "3")]);
        assert_eq!(retry_after_at(&h, now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after_at(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_after_http_date() {
        let at = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            at.duration_since(UNIX_EPOCH)
                .expect("after epoch")
                .as_secs(),
            784_111_777
        );
        let now = at - Duration::from_secs(90);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(90))
        );
        // A date already past means "now", not an error.
        let later = at + Duration::from_secs(5);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-4", now), None);
        assert!(parse_http_date("Sun, 32 Nov 1994 08:49:37 GMT").is_none());
        assert!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT").is_none());
    }

    #[test]
    fn poll_after_header() {
        let h = headers(&[("openai-poll-after-ms", "2500")]);
        assert_eq!(poll_after(&h), Some(Duration::from_millis(2500)));
        assert_eq!(poll_after(&HeaderMap::new()), None);
    }

    #[test]
    fn status_classes() {
        let table = [
            (400, FailureClass::InvalidRequest),
            (404, FailureClass::InvalidRequest),
            (422, FailureClass::InvalidRequest),
            (401, FailureClass::Auth),
            (403, FailureClass::Auth),
            (402, FailureClass::InsufficientCredits),
            (429, FailureClass::RateLimited),
            (500, FailureClass::ProviderError),
            (502, FailureClass::ProviderError),
            (503, FailureClass::ProviderError),
            (504, FailureClass::ProviderError),
            (408, FailureClass::ProviderError),
            (301, FailureClass::Unknown),
        ];
        for (status, class) in table {
            assert_eq!(class_for_status(status), class, "HTTP {status}");
        }
    }

    #[test]
    fn redacts_credentials() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhayJ9.c2lnbmF0dXJl";
        let cases = [
            (
                "Authorization: Bearer abc123def",
                "Authorization: Bearer [redacted]",
            ),
            ("bad token bearer xyz", "bad token bearer [redacted]"),
            (
                "Incorrect API key provided: sk-proj-AbCdEf0123456789xyz.",
                "Incorrect API key provided: [redacted]",
            ),
            (
                "GET /x?key=AIzaSyABCDEFG&alt=media",
                "GET /x?key=[redacted]&alt=media",
            ),
            (r#"{"api_key": "hunter2"}"#, r#"{"api_key": "[redacted]"}"#),
            ("X-Amz-Signature=deadbeef01", "X-Amz-Signature=[redacted]"),
            ("jwt expired", "jwt expired"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
        let r = redact(&format!("token {jwt} rejected"));
        assert!(!r.contains("eyJ"), "{r}");
        // Ordinary ids and numbers survive.
        let keep = "video 68e5f3a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9 failed (request 0b7f1a2c-9d3e-4f5a-8b6c-7d8e9f0a1b2c, code 1303)";
        assert_eq!(redact(keep), keep);
        // Long opaque mixed-case strings do not.
        let r = redact("sig Zm9vYmFyYmF6cXV4UXV1eDEyMzQ1Njc4OTBBQkNERUZHSElKSw here");
        assert_eq!(r, "sig [redacted] here");
    }

    #[test]
    fn scrubber_removes_own_secrets_and_truncates() {
        let key = Secret::new("plainkey-without-pattern");
        let s = Scrubber::new([Some(&key), None]);
        assert_eq!(
            s.clean("key plainkey-without-pattern\n\n was   rejected"),
            "key [redacted] was rejected"
        );
        let long = "é ".repeat(1000);
        let out = s.clean(&long);
        assert_eq!(out.chars().count(), MESSAGE_MAX_CHARS + 1);
        assert!(out.ends_with('…'));
        // A credential cut by the scan bound is dropped, not half-kept.
        let cut = format!("{}sk-{}", " ".repeat(1190), "A".repeat(40));
        assert!(!s.clean(&cut).contains("sk-"));
    }

    #[test]
    fn content_type_ext() {
        let table = [
            ("video/mp4", Some("mp4")),
            ("image/png", Some("png")),
            ("image/jpeg", Some("jpg")),
            ("image/webp", Some("webp")),
            ("audio/wav", Some("wav")),
            ("audio/x-wav", Some("wav")),
            ("audio/mpeg", Some("mp3")),
            ("Video/MP4; charset=binary", Some("mp4")),
            ("application/octet-stream", None),
        ];
        for (ct, ext) in table {
            assert_eq!(ext_for_content_type(ct), ext, "{ct}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("video_123-a.b~c"), "video_123-a.b~c");
        assert_eq!(path_segment("a/b?c"), "a%2Fb%3Fc");
        // Dot segments would mean "here" and "parent": encoded, so the URL keeps its path.
        assert_eq!(path_segment("."), "%2E");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("..."), "%2E%2E%2E");
        assert_eq!(path_segment("..a"), "..a");
        assert_eq!(path_segment(""), "");
        // WHATWG URL parsing (reqwest's) still reads `%2E%2E` as `..`: that is why dot-only ids
        // are refused before they are stored (`accept_task_id`).
        let url = reqwest::Url::parse(&format!("http://h/v1/videos/{}", path_segment("..")))
            .expect("url");
        assert_eq!(url.path(), "/v1/");
        assert_eq!(
            join_url("http://h/x/", "/v1/videos"),
            "http://h/x/v1/videos"
        );
    }

    #[test]
    fn bad_task_ids_are_refused() {
        assert_eq!(accept_task_id("video_1".into()).expect("ok"), "video_1");
        assert_eq!(
            accept_task_id("x".repeat(TASK_ID_MAX_BYTES))
                .expect("at the limit")
                .len(),
            TASK_ID_MAX_BYTES
        );
        for bad in [
            String::new(),
            "x".repeat(TASK_ID_MAX_BYTES + 1),
            "id\nINFO forged line".to_string(),
            "id\u{1b}[31m".to_string(),
            "tab\tid".to_string(),
            ".".to_string(),
            "..".to_string(),
        ] {
            let err = accept_task_id(bad.clone()).expect_err("refused");
            assert_eq!(err.class, FailureClass::ProviderError, "{bad:?}");
            assert_eq!(err.code.as_deref(), Some("bad_task_id"), "{bad:?}");
            assert!(!err.message.contains('\n'), "{}", err.message);
            assert!(!err.message.contains('\u{1b}'), "{}", err.message);
        }
    }

    #[test]
    fn messages_are_escaped_and_capped() {
        let s = Scrubber::default();
        assert_eq!(s.clean("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        let err = ProviderError::new(FailureClass::ProviderError, "x\ny".repeat(400));
        assert!(!err.message.contains('\n'));
        assert!(err.message.ends_with('…'));
        let err = ProviderError::new(FailureClass::ProviderError, "ok").with_code("c\rd");
        assert_eq!(err.code.as_deref(), Some("c\\rd"));
    }

    #[tokio::test]
    async fn redirect_loops_are_download_failed() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/ok.mp4" => testing::reply(200, &[("content-type", "video/mp4")], "MP4"),
            "/hop" => testing::reply(302, &[("location", "/ok.mp4")], ""),
            _ => testing::reply(302, &[("location", "/loop")], ""),
        })
        .await;
        let acct = testing::account("openai-images", &server.base, "");
        let (c, nr, s) = (
            client(&acct),
            no_redirect_client(&acct),
            Scrubber::default(),
        );
        let key = || Auth::header("x-goog-api-key", "k").map(Some);
        for path in ["/loop", "/hop"] {
            let plain = ResultRef::Url {
                url: format!("{}{path}", server.base),
            };
            let authed = ResultRef::AuthedUrl {
                url: format!("{}{path}", server.base),
            };
            let results = [
                fetch_result(&c, &plain, &server.base, || Ok(None), &s).await,
                fetch_result(&c, &authed, &server.base, || Ok(None), &s).await,
                fetch_result_by_hand(&c, &nr, &authed, &server.base, key, &s).await,
            ];
            for r in results {
                match (path, r) {
                    ("/hop", Ok(dl)) => {
                        assert_eq!(testing::collect(dl).await.expect("body"), b"MP4")
                    }
                    ("/loop", Err(e)) => {
                        assert_eq!(e.class, FailureClass::DownloadFailed);
                        assert_eq!(e.code.as_deref(), Some("redirect_loop"));
                    }
                    (p, r) => panic!("{p}: {:?}", r.map(|_| "download")),
                }
            }
        }
    }

    #[test]
    fn authed_urls_stay_on_the_account_host() {
        assert!(
            check_authed_url("http://h/openai/v1/videos/x/content", "http://h/openai/").is_ok()
        );
        assert!(check_authed_url("http://h/openai-evil/x", "http://h/openai").is_err());
        assert!(check_authed_url("http://evil/v1/x", "http://h").is_err());
    }

    #[tokio::test]
    async fn network_errors_hide_the_url() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let acct = testing::account("openai-images", "http://127.0.0.1:1", "");
        let err =
            send(client(&acct).get(format!("http://127.0.0.1:{port}/v1/x?key=supersecretvalue")))
                .await
                .expect_err("closed port");
        assert_eq!(err.class, FailureClass::Network);
        assert_eq!(err.code.as_deref(), Some("connect"));
        assert!(!err.message.contains("supersecretvalue"), "{}", err.message);
        assert!(!err.message.contains("127.0.0.1"), "{}", err.message);
    }

    #[tokio::test]
    async fn fetch_maps_gone_results_and_streams_bodies() {
        let server = testing::serve(|r| match r.uri.as_str() {
            "/ok.mp4" => testing::reply(200, &[("content-type", "video/mp4")], "MP4DATA"),
            "/gone" => testing::reply(410, &[], "gone"),
            "/forbidden" => testing::reply(403, &[], "<Error>AccessDenied</Error>"),
            _ => testing::reply(500, &[], "boom"),
        })
        .await;
        let acct = testing::account("openai-images", &server.base, "");
        let c = client(&acct);
        let s = Scrubber::default();
        let fetch = |path: &str| {
            let result = ResultRef::Url {
                url: format!("{}{path}", server.base),
            };
            let (c, s) = (c.clone(), s.clone());
            async move { fetch_result(&c, &result, "", || Ok(None), &s).await }
        };
        let dl = fetch("/ok.mp4").await.expect("ok");
        assert_eq!(dl.ext.as_deref(), Some("mp4"));
        assert_eq!(testing::collect(dl).await.expect("body"), b"MP4DATA");
        for path in ["/gone", "/forbidden"] {
            let err = fetch(path).await.err().expect("expired");
            assert_eq!(err.class, FailureClass::ResultExpired, "{path}");
        }
        let err = fetch("/boom").await.err().expect("5xx");
        assert_eq!(err.class, FailureClass::ProviderError);
        assert_eq!(err.http_status, Some(500));
    }
}
