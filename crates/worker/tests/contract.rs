//! Contract tests: every provider adapter against the in-process sandbox, one table row per
//! (account, scenario). Each row submits through the adapter built from a real config, polls
//! until the render is no longer pending, fetches the result, and checks the normalised
//! outcome: a valid MP4 / PNG / WAV, or the failure class and what the retry policy makes of it
//! (`decide::decide` for a first submit of five allowed, with no fallback account).
//!
//! Rows whose expectation follows the provider's documented behaviour (docs/providers.md) but
//! whose adapter does not (yet) are marked with `adapter_bug`: they are reported, not failed, and a marked row that starts passing fails the
//! test so the marker gets removed.

use dramaq_common::config::Config;
use dramaq_common::queue::FailDecision;
use dramaq_common::{FailureClass, TaskPayload};
use dramaq_sandbox::media::{inspect_mp4, inspect_png, inspect_wav};
use dramaq_sandbox::{Sandbox, SandboxOptions};
use dramaq_worker::decide::{self, Backoff, Failure, History, Phase};
use dramaq_worker::providers::{
    self, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome, SubmitRequest, SyncResult,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

const KEY_ENV: &str = "SANDBOX_CONTRACT_KEY";
const SECRET_ENV: &str = "SANDBOX_CONTRACT_SECRET";
const KEY: &str = "contract-key-0001";
const SECRET: &str = "contract-secret-0001";
const BACKOFF: Backoff = Backoff {
    base_ms: 1_000,
    max_ms: 60_000,
};
/// How long a row may poll before it counts as stuck.
const POLL_BUDGET: Duration = Duration::from_secs(5);

fn set_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(KEY_ENV, KEY);
        std::env::set_var(SECRET_ENV, SECRET);
    });
}

async fn sandbox() -> Sandbox {
    set_env();
    Sandbox::start(
        "127.0.0.1:0".parse().expect("addr"),
        SandboxOptions {
            render_ms: 150,
            kling_access_key: KEY.into(),
            kling_secret_key: SECRET.into(),
            ..SandboxOptions::default()
        },
    )
    .await
    .expect("sandbox starts")
}

/// The accounts under test: name, family, path prefix on the sandbox, model, extra TOML.
const ACCOUNTS: &[(&str, &str, &str, &str, &str)] = &[
    ("openai", "openai-videos", "openai", "sora-2", ""),
    (
        "kling",
        "kling",
        "kling",
        "kling-v1",
        "secret_key_env = \"SANDBOX_CONTRACT_SECRET\"",
    ),
    ("runway", "runway", "runway", "gen4.5", ""),
    ("runway-relay", "runway", "comet/runwayml", "gen4.5", ""),
    ("veo", "veo", "gemini", "veo-3.0-fast-generate-001", ""),
    ("minimax", "minimax", "minimax", "MiniMax-Hailuo-02", ""),
    (
        "fal",
        "fal",
        "fal",
        "fal-ai/kling-video/v2.1/standard/text-to-video",
        "",
    ),
    (
        "replicate",
        "replicate",
        "replicate",
        "kwaivgi/kling-v2.1",
        "",
    ),
    ("images-b64", "openai-images", "openai", "gpt-image-1", ""),
    ("images-url", "openai-images", "openai", "dall-e-3", ""),
    ("speech", "openai-speech", "openai", "tts-1", ""),
];

fn adapters(base: &str) -> HashMap<&'static str, Arc<dyn Provider>> {
    let mut toml = String::new();
    for (name, family, prefix, model, extra) in ACCOUNTS {
        toml.push_str(&format!(
            "[accounts.{name}]\nfamily = \"{family}\"\nbase_url = \"{base}/{prefix}\"\nmodel = \"{model}\"\napi_key_env = \"{KEY_ENV}\"\nhttp_timeout_ms = 5000\n{extra}\n\n"
        ));
    }
    let cfg = Config::from_toml_str(&toml).expect("contract config parses");
    ACCOUNTS
        .iter()
        .map(|(name, ..)| {
            let acct = cfg.account(name).expect("account");
            let p = providers::build(name, acct)
                .expect("adapter builds")
                .expect("HTTP family");
            (*name, p)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Mp4,
    Png,
    Wav,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Dead,
    Retry { refund: bool },
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Submit,
    Poll,
    Fetch,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Succeeds and the bytes are a valid file of this kind.
    Ok(Media),
    /// Fails at this stage with one of these classes, and the retry policy decides so.
    Fail(Stage, &'static [FailureClass], Decision),
    /// The first poll errors with code `not_found`; a later poll succeeds.
    NotFoundThen(Media),
    /// The first submit is a `provider_error` retried with backoff; the resubmit succeeds.
    ServerErrorThen(Media),
    /// The first download is `result_expired`; a re-poll hands out a fresh URL that works.
    ExpiredThenFresh(Media),
}

struct Row {
    account: &'static str,
    scenario: &'static str,
    expect: Expect,
    /// The provider's documented behaviour and the adapter disagree: what the adapter does instead.
    adapter_bug: Option<&'static str>,
}

const fn row(account: &'static str, scenario: &'static str, expect: Expect) -> Row {
    Row {
        account,
        scenario,
        expect,
        adapter_bug: None,
    }
}

use Decision::{Dead, Pause};
use Expect::{ExpiredThenFresh, Fail, NotFoundThen, ServerErrorThen};
use FailureClass as C;
use Media::{Mp4, Png, Wav};
use Stage::{Fetch, Poll, Submit};

const RETRY: Decision = Decision::Retry { refund: false };
const WAIT: Decision = Decision::Retry { refund: true };
const POLICY: &[FailureClass] = &[C::ContentPolicy];
const RATE: &[FailureClass] = &[C::RateLimited];
const CREDITS: &[FailureClass] = &[C::InsufficientCredits];
const QUOTA: &[FailureClass] = &[C::QuotaExceeded];
const BILLING: &[FailureClass] = &[C::InsufficientCredits, C::QuotaExceeded];
const FAULT: &[FailureClass] = &[C::ProviderError];
const EXPIRED: &[FailureClass] = &[C::ResultExpired];
const DOWNLOAD: &[FailureClass] = &[C::DownloadFailed];

fn table() -> Vec<Row> {
    vec![
        // OpenAI /v1/videos (Sora shape).
        row("openai", "ok", Expect::Ok(Mp4)),
        row("openai", "moderation_input", Fail(Submit, POLICY, Dead)),
        row("openai", "moderation_output", Fail(Poll, POLICY, Dead)),
        row("openai", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("openai", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        // No output URL in the Sora shape: a missing result shows at /content (404).
        row(
            "openai",
            "success_without_output",
            Fail(Fetch, EXPIRED, RETRY),
        ),
        row("openai", "url_expired", Fail(Fetch, EXPIRED, RETRY)),
        row("openai", "not_found_first_polls", NotFoundThen(Mp4)),
        row("openai", "server_error", ServerErrorThen(Mp4)),
        // The result URL redirects to itself: download_failed, not a network error.
        row("openai", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // Kling (JWT).
        row("kling", "ok", Expect::Ok(Mp4)),
        row("kling", "moderation_input", Fail(Submit, POLICY, Dead)),
        row("kling", "moderation_output", Fail(Poll, POLICY, Dead)),
        row("kling", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("kling", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        row("kling", "success_without_output", Fail(Poll, FAULT, RETRY)),
        row("kling", "url_expired", Fail(Fetch, EXPIRED, RETRY)),
        row("kling", "not_found_first_polls", NotFoundThen(Mp4)),
        row("kling", "server_error", ServerErrorThen(Mp4)),
        row("kling", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // Runway: moderation is a task failure; 429 is the daily cap.
        row("runway", "ok", Expect::Ok(Mp4)),
        row("runway", "moderation_input", Fail(Poll, POLICY, Dead)),
        row("runway", "moderation_output", Fail(Poll, POLICY, Dead)),
        row("runway", "rate_limited", Fail(Submit, QUOTA, Pause)),
        row("runway", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        row("runway", "success_without_output", Fail(Poll, FAULT, RETRY)),
        row("runway", "url_expired", ExpiredThenFresh(Mp4)),
        row("runway", "not_found_first_polls", NotFoundThen(Mp4)),
        row("runway", "server_error", ServerErrorThen(Mp4)),
        row("runway", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // Runway through the CometAPI relay: wrapped envelope, task_not_exist, its own 429.
        row("runway-relay", "ok", Expect::Ok(Mp4)),
        row("runway-relay", "moderation_input", Fail(Poll, POLICY, Dead)),
        row(
            "runway-relay",
            "moderation_output",
            Fail(Poll, POLICY, Dead),
        ),
        row("runway-relay", "rate_limited", Fail(Submit, RATE, WAIT)),
        row(
            "runway-relay",
            "out_of_credits",
            Fail(Submit, CREDITS, Pause),
        ),
        row(
            "runway-relay",
            "success_without_output",
            Fail(Poll, FAULT, RETRY),
        ),
        row("runway-relay", "url_expired", ExpiredThenFresh(Mp4)),
        row("runway-relay", "not_found_first_polls", NotFoundThen(Mp4)),
        row("runway-relay", "server_error", ServerErrorThen(Mp4)),
        row("runway-relay", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // Veo (Gemini long-running operations).
        row("veo", "ok", Expect::Ok(Mp4)),
        row("veo", "moderation_input", Fail(Poll, POLICY, Dead)),
        row("veo", "moderation_output", Fail(Poll, POLICY, Dead)),
        row("veo", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("veo", "out_of_credits", Fail(Submit, BILLING, Pause)),
        row("veo", "success_without_output", Fail(Poll, FAULT, RETRY)),
        row("veo", "url_expired", Fail(Fetch, EXPIRED, RETRY)),
        row("veo", "not_found_first_polls", NotFoundThen(Mp4)),
        row("veo", "server_error", ServerErrorThen(Mp4)),
        row("veo", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // MiniMax: errors inside HTTP 200, file_id hop.
        row("minimax", "ok", Expect::Ok(Mp4)),
        row("minimax", "moderation_input", Fail(Submit, POLICY, Dead)),
        row("minimax", "moderation_output", Fail(Poll, POLICY, Dead)),
        row("minimax", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("minimax", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        row(
            "minimax",
            "success_without_output",
            Fail(Poll, FAULT, RETRY),
        ),
        row("minimax", "url_expired", Fail(Fetch, EXPIRED, RETRY)),
        row("minimax", "server_error", ServerErrorThen(Mp4)),
        row("minimax", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // fal queue: failures only at the result GET.
        row("fal", "ok", Expect::Ok(Mp4)),
        row("fal", "moderation_input", Fail(Poll, POLICY, Dead)),
        row("fal", "moderation_output", Fail(Poll, POLICY, Dead)),
        row("fal", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("fal", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        row("fal", "success_without_output", Fail(Poll, FAULT, RETRY)),
        row("fal", "url_expired", Fail(Fetch, EXPIRED, RETRY)),
        row("fal", "not_found_first_polls", NotFoundThen(Mp4)),
        row("fal", "server_error", ServerErrorThen(Mp4)),
        row("fal", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // Replicate predictions.
        row("replicate", "ok", Expect::Ok(Mp4)),
        row("replicate", "moderation_input", Fail(Poll, POLICY, Dead)),
        row("replicate", "moderation_output", Fail(Poll, POLICY, Dead)),
        row("replicate", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("replicate", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        row(
            "replicate",
            "success_without_output",
            Fail(Poll, FAULT, RETRY),
        ),
        row("replicate", "url_expired", Fail(Fetch, EXPIRED, RETRY)),
        row("replicate", "not_found_first_polls", NotFoundThen(Mp4)),
        row("replicate", "server_error", ServerErrorThen(Mp4)),
        row("replicate", "redirect_loop", Fail(Fetch, DOWNLOAD, Dead)),
        // Synchronous families.
        row("images-b64", "ok", Expect::Ok(Png)),
        row("images-url", "ok", Expect::Ok(Png)),
        row("images-b64", "moderation_input", Fail(Submit, POLICY, Dead)),
        row("images-b64", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("images-b64", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        row("images-b64", "server_error", ServerErrorThen(Png)),
        row("speech", "ok", Expect::Ok(Wav)),
        row("speech", "rate_limited", Fail(Submit, RATE, WAIT)),
        row("speech", "out_of_credits", Fail(Submit, CREDITS, Pause)),
        row("speech", "server_error", ServerErrorThen(Wav)),
    ]
}

fn payload(account: &str, prompt: String) -> TaskPayload {
    match account {
        a if a.starts_with("images") => TaskPayload::Image {
            prompt,
            seed: 7,
            aspect_ratio: "1:1".into(),
            reference_image: None,
        },
        "speech" => TaskPayload::Voice {
            text: prompt,
            voice: "alloy".into(),
            speaker: "narrator".into(),
        },
        a => TaskPayload::Video {
            prompt,
            negative_prompt: None,
            duration_s: match a {
                "openai" => 4,
                "veo" => 8,
                "minimax" => 6,
                _ => 5,
            },
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            first_frame: None,
            seed: None,
        },
    }
}

/// What the failure decision makes of `e` at `stage` (a poll that reports the render failed is
/// the `Render` phase; a failed fetch of a finished render the `Download` phase). Polling again
/// for a fresh result URL counts as a retry that uses its attempt.
fn decision(stage: Stage, e: &ProviderError) -> Option<Decision> {
    let phase = match stage {
        Stage::Submit => Phase::Submit,
        Stage::Poll => Phase::Render,
        Stage::Fetch => Phase::Download,
    };
    let failure = Failure {
        class: e.class,
        code: e.code.as_deref(),
        retry_after: e.retry_after,
        phase,
    };
    let history = History {
        attempt: 1,
        max_attempts: 5,
        fetch_failures: 0,
        result_expired_before: false,
        bad_outputs_here: 0,
        render_age_ms: 0,
        next_poll_ms: 0,
        chain: &[],
        chain_pos: 0,
    };
    match decide::decide(&failure, &history, BACKOFF) {
        decide::Decision::Fail { decision, .. } => match decision {
            FailDecision::Dead => Some(Dead),
            FailDecision::Pause => Some(Pause),
            FailDecision::Retry { refund_attempt, .. } => Some(Decision::Retry {
                refund: refund_attempt,
            }),
            FailDecision::Repoll { .. } => Some(Decision::Retry { refund: false }),
            FailDecision::Move { .. } => None,
        },
        decide::Decision::PollAgain { .. } => None,
    }
}

fn check_failure(
    stage: Stage,
    e: &ProviderError,
    classes: &[FailureClass],
    want: Decision,
) -> Result<(), String> {
    if !classes.contains(&e.class) {
        return Err(format!(
            "{stage:?} failed as {} (code {:?}, \"{}\"), expected {}",
            e.class,
            e.code,
            e.message,
            classes
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    let got = decision(stage, e);
    if got != Some(want) {
        return Err(format!(
            "{stage:?} failure {} decided {got:?}, expected {want:?}",
            e.class
        ));
    }
    Ok(())
}

fn check_media(kind: Media, bytes: &[u8]) -> Result<(), String> {
    match kind {
        Media::Mp4 => {
            if bytes.len() < 8 || &bytes[4..8] != b"ftyp" {
                return Err(format!(
                    "{} bytes that do not start with an ftyp box",
                    bytes.len()
                ));
            }
            inspect_mp4(bytes).map(|_| ())
        }
        Media::Png => inspect_png(bytes).map(|_| ()),
        Media::Wav => inspect_wav(bytes).map(|_| ()),
    }
}

async fn fetch_bytes(p: &dyn Provider, r: &ResultRef) -> Result<Vec<u8>, ProviderError> {
    let dl = p.fetch(r).await?;
    let mut body = dl.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Poll until the render is no longer pending. `not_found` errors are tolerated (and counted)
/// only when the row expects them, and only as the first polls.
async fn poll_done(
    p: &dyn Provider,
    id: &str,
    locator: Option<&str>,
    tolerate_not_found: bool,
) -> Result<(PollOutcome, u32), String> {
    let deadline = Instant::now() + POLL_BUDGET;
    let mut polls = 0u32;
    let mut not_found = 0u32;
    loop {
        polls += 1;
        match p.poll(id, locator).await {
            Ok(PollOutcome::Pending { .. }) => {}
            Ok(done) => return Ok((done, not_found)),
            Err(e) if tolerate_not_found && e.code.as_deref() == Some("not_found") => {
                if not_found + 1 != polls {
                    return Err(format!("not_found on poll {polls}, after a found poll"));
                }
                not_found += 1;
            }
            Err(e) => return Err(format!("poll {polls} errored: {e:?}")),
        }
        if Instant::now() > deadline {
            return Err(format!("still pending after {polls} polls"));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

async fn run_row(p: &dyn Provider, row: &Row, task_id: &str) -> Result<(), String> {
    let prompt = format!(
        "Contract {} {}: a lighthouse at dusk [sandbox:{}]",
        row.account, row.scenario, row.scenario
    );
    let payload = payload(row.account, prompt);
    let submit = |attempt: u32| {
        p.submit(SubmitRequest {
            season: "s",
            group: "g",
            deps: &[],
            task_id,
            attempt,
            payload: &payload,
            first_frame: None,
        })
    };
    let outcome = match (row.expect, submit(1).await) {
        (Fail(Submit, classes, want), Err(e)) => return check_failure(Submit, &e, classes, want),
        (Fail(Submit, ..), Ok(o)) => return Err(format!("submit was accepted: {o:?}")),
        (ServerErrorThen(_), Err(e)) => {
            check_failure(Submit, &e, FAULT, RETRY)?;
            submit(2)
                .await
                .map_err(|e| format!("resubmit after the 5xx failed: {e:?}"))?
        }
        (ServerErrorThen(_), Ok(o)) => {
            return Err(format!("first submit should have failed, got {o:?}"))
        }
        (_, Err(e)) => return Err(format!("submit failed: {e:?}")),
        (_, Ok(o)) => o,
    };
    let media = match row.expect {
        Expect::Ok(m) | NotFoundThen(m) | ServerErrorThen(m) | ExpiredThenFresh(m) => Some(m),
        Fail(..) => None,
    };
    let (result, accepted) = match outcome {
        SubmitOutcome::Finished(SyncResult::Bytes { bytes, .. }) => {
            let kind = media.ok_or("finished at submit, expected a failure")?;
            return check_media(kind, &bytes);
        }
        SubmitOutcome::Finished(SyncResult::Ref(r)) => (r, None),
        SubmitOutcome::Finished(SyncResult::Stream { .. }) => {
            return Err("an HTTP family answered with a local stream".into())
        }
        SubmitOutcome::Accepted {
            provider_task_id,
            poll_locator,
            ..
        } => {
            let expect_not_found = matches!(row.expect, NotFoundThen(_));
            let (done, not_found) = poll_done(
                p,
                &provider_task_id,
                poll_locator.as_deref(),
                expect_not_found,
            )
            .await?;
            if expect_not_found && not_found == 0 {
                return Err("the first poll was not `not_found`".into());
            }
            match (done, row.expect) {
                (PollOutcome::Failed(e), Fail(Poll, classes, want)) => {
                    return check_failure(Poll, &e, classes, want)
                }
                (PollOutcome::Failed(e), _) => return Err(format!("render failed: {e:?}")),
                (PollOutcome::Succeeded(_), Fail(Poll, ..)) => {
                    return Err("render succeeded, expected a failure".into())
                }
                (PollOutcome::Succeeded(r), _) => (r, Some((provider_task_id, poll_locator))),
                (PollOutcome::Pending { .. }, _) => unreachable!("poll_done returns finished"),
            }
        }
    };
    match (fetch_bytes(p, &result).await, row.expect) {
        (Err(e), Fail(Fetch, classes, want)) => check_failure(Fetch, &e, classes, want),
        (Ok(_), Fail(Fetch, ..)) => Err("download worked, expected it to fail".into()),
        (Ok(_), ExpiredThenFresh(_)) => Err("first download worked, expected it expired".into()),
        (Err(e), ExpiredThenFresh(kind)) => {
            check_failure(Fetch, &e, EXPIRED, RETRY)?;
            let (id, locator) = accepted.ok_or("a synchronous result cannot be re-polled")?;
            let (again, _) = poll_done(p, &id, locator.as_deref(), false).await?;
            let PollOutcome::Succeeded(fresh) = again else {
                return Err(format!("re-poll after expiry gave {again:?}"));
            };
            if fresh == result {
                return Err("re-poll handed out the same expired URL".into());
            }
            let bytes = fetch_bytes(p, &fresh)
                .await
                .map_err(|e| format!("download of the fresh URL failed: {e:?}"))?;
            check_media(kind, &bytes)
        }
        (Err(e), _) => Err(format!("download failed: {e:?}")),
        (Ok(bytes), _) => check_media(media.ok_or("unexpected success")?, &bytes),
    }
}

#[tokio::test]
async fn every_adapter_against_the_sandbox() {
    let sb = sandbox().await;
    let adapters = adapters(&sb.base_url());
    let rows = table();
    let results: Vec<(usize, Result<(), String>)> =
        futures::stream::iter(rows.iter().enumerate().map(|(i, row)| {
            let p = adapters[row.account].clone();
            async move {
                let task_id = format!("contract-{}-{}", row.account, row.scenario);
                (i, run_row(p.as_ref(), row, &task_id).await)
            }
        }))
        .buffer_unordered(12)
        .collect()
        .await;
    let results: HashMap<usize, Result<(), String>> = results.into_iter().collect();
    let stats = sb.stats();
    let mut failures = Vec::new();
    let mut known = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let name = format!("[{} × {}]", row.account, row.scenario);
        let mut outcome = results[&i].clone();
        // Nothing is paid for twice: a refused submit is not counted, a retried one once.
        let task_id = format!("contract-{}-{}", row.account, row.scenario);
        let paid = stats.by_task.get(&task_id).copied().unwrap_or(0);
        if paid > 1 && outcome.is_ok() {
            outcome = Err(format!("{paid} paid submissions for one task"));
        }
        match (outcome, row.adapter_bug) {
            (Ok(()), None) => println!("pass  {name}"),
            (Err(e), Some(bug)) => {
                println!("known {name}: {e}");
                known.push(format!("{name}: {bug}"));
            }
            (Ok(()), Some(bug)) => failures.push(format!(
                "{name} passes now: remove its adapter_bug marker (\"{bug}\")"
            )),
            (Err(e), None) => failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "{} rows, {} failed, {} known adapter bugs",
        rows.len(),
        failures.len(),
        known.len()
    );
    for k in &known {
        println!("  adapter bug {k}");
    }
    sb.shutdown().await;
    assert!(
        failures.is_empty(),
        "contract rows failed:\n  {}",
        failures.join("\n  ")
    );
}

#[tokio::test]
async fn speech_longer_than_4096_characters_is_split_and_joined() {
    let sb = sandbox().await;
    let adapters = adapters(&sb.base_url());
    let p = &adapters["speech"];
    let sentence = "The keeper climbed the stairs again, counting every step out loud. ";
    let text = sentence.repeat(9_000 / sentence.len() + 1);
    assert!(text.chars().count() > 2 * 4096);
    let payload = TaskPayload::Voice {
        text,
        voice: "alloy".into(),
        speaker: "narrator".into(),
    };
    let out = p
        .submit(SubmitRequest {
            season: "s",
            group: "g",
            deps: &[],
            task_id: "contract-speech-long",
            attempt: 1,
            payload: &payload,
            first_frame: None,
        })
        .await
        .expect("speech submit");
    let SubmitOutcome::Finished(SyncResult::Bytes { bytes, ext }) = out else {
        panic!("speech answers with bytes, got {out:?}");
    };
    assert_eq!(ext, "wav");
    let info = inspect_wav(&bytes).expect("one valid joined WAV");
    let stats = sb.stats();
    let pieces: Vec<_> = stats
        .by_task
        .iter()
        .filter(|(k, _)| k.starts_with("contract-speech-long"))
        .collect();
    assert_eq!(
        pieces.len(),
        3,
        "three requests of at most 4096 characters: {pieces:?}"
    );
    assert!(pieces.iter().all(|(_, n)| **n == 1), "{pieces:?}");
    // The sandbox renders at most 10 s per request: the join holds more than one piece.
    let per_second =
        info.sample_rate as u64 * u64::from(info.channels) * u64::from(info.bits_per_sample) / 8;
    assert!(
        u64::from(info.data_len) > 10 * per_second,
        "joined audio is {} bytes",
        info.data_len
    );
    sb.shutdown().await;
}
