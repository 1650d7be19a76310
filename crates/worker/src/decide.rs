//! What a failure becomes: one pure function, [`decide`], for every failure of every phase.
//!
//! A task can fail while its inputs are prepared, at submit, when a poll request fails, when the
//! provider reports the render failed, and when a finished render's result cannot be fetched.
//! Each of those used to be decided where it happened; now the caller describes the failure
//! (class and provider hint from the adapter, the [`Phase`], the task's [`History`]) and this
//! module answers with the whole [`Decision`], including "fall back to account X". The answer is
//! applied atomically by `fail.lua` through [`crate::finish`]; nothing here touches Redis, so the
//! policy is tested table by table below.
//!
//! Task retries are not an in-process loop: a retried task goes to its account's delayed
//! schedule in Redis and any worker picks it up when due, so the delay is computed here
//! (exponential, full jitter: a uniform draw in `[0, min(cap, base·2^n)]`, which spreads a burst
//! of failures out best) rather than by `backon`, which drives in-process retries of single HTTP
//! calls (downloads).

use dramaq_common::model::{FailureClass, RetryPolicy};
use dramaq_common::queue::FailDecision;
use rand::Rng;
use std::time::Duration;

/// After submit, "not found" is normal for a while on some relays (docs/providers.md, "Relays").
pub const NOT_FOUND_GRACE_MS: i64 = 60_000;

/// Failed downloads of one finished render before the task is dead as `download_failed`. Each
/// one re-polls first (a fresh URL where the family gives one), so a redirect loop or a URL that
/// is refused again and again ends here instead of polling until the render deadline.
pub const MAX_FETCH_FAILURES: u32 = 5;

/// Broken outputs (`bad_output`) one account may hand back for a task before the task falls
/// back to the next account of its chain: a corrupt file can be a one-off at the provider (a
/// CDN hiccup), so the first is retried, the second says the account is the problem.
pub const BAD_OUTPUTS_PER_ACCOUNT: u32 = 2;

/// Retry timing, from the `[worker]` config.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// Upper bound of the delay before retry number `n` (0-based).
    pub fn ceiling_ms(&self, n: u32) -> u64 {
        let exp = self.base_ms.saturating_mul(1u64 << n.min(32));
        exp.min(self.max_ms)
    }

    /// Full jitter: uniform in `[0, ceiling]`.
    pub fn delay_ms(&self, n: u32) -> u64 {
        let ceiling = self.ceiling_ms(n);
        rand::rng().random_range(0..=ceiling)
    }
}

/// Where in a task's life the failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the submit: reading the task's inputs (a first-frame image). Nothing was sent.
    Prepare,
    /// The submit call itself.
    Submit,
    /// A poll request failed (the render itself may be fine).
    Poll,
    /// The provider reported the render failed, or it ran past its deadline or queue limit.
    Render,
    /// The render finished, but its result could not be fetched or stored.
    Download,
}

/// A failure as the adapter (or the worker) classified it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub class: FailureClass,
    /// The provider's own code (`not_found`, `1102`, ...).
    pub code: Option<&'a str>,
    /// The provider's hint for when to try again.
    pub retry_after: Option<Duration>,
    pub phase: Phase,
}

/// What the decision needs to know of the task.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// The attempt the failure belongs to (1-based; for [`Phase::Prepare`], the number of tries
    /// so far including this one).
    pub attempt: u32,
    pub max_attempts: u32,
    /// Failed downloads of the current render so far.
    pub fetch_failures: u32,
    /// Whether a result URL of this task already expired once.
    pub result_expired_before: bool,
    /// Earlier `bad_output` failures of this task on its current account.
    pub bad_outputs_here: u32,
    /// Age of the render (Redis clock), for renders.
    pub render_age_ms: i64,
    /// The poll cadence's next delay for this render (jittered), for poll failures.
    pub next_poll_ms: u64,
    /// The task's provider chain and its position in it.
    pub chain: &'a [String],
    pub chain_pos: u32,
}

impl History<'_> {
    /// The account after the task's current one in its chain, if any.
    pub fn next_account(&self) -> Option<&str> {
        self.chain
            .get(self.chain_pos as usize + 1)
            .map(String::as_str)
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Only the poll request failed: poll again after `delay_ms`; nothing is recorded.
    PollAgain { delay_ms: u64 },
    /// Record the failure and apply `decision` (`fail.lua`). `class` is the class recorded as
    /// the task's failure (a download failing too often becomes `download_failed`);
    /// `cooldown_ms` starts the account's shared cool-down (0 = none).
    Fail {
        decision: FailDecision,
        class: FailureClass,
        cooldown_ms: u64,
    },
}

/// True for the classes that try the next account of the chain: the failure may well be this
/// provider's own (a render past its deadline or stuck in its queue, an expired result, a retired
/// model, a holder that stalled again and again, an account that keeps handing back broken
/// files). Content-policy and request errors would fail
/// the same way elsewhere, and `download_failed` was already paid for: those stay here.
pub fn falls_back(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::Timeout
            | FailureClass::ResultExpired
            | FailureClass::ModelRetired
            | FailureClass::Stalled
            | FailureClass::BadOutput
    )
}

/// Decide what `failure` of a task with `history` becomes.
pub fn decide(failure: &Failure<'_>, history: &History<'_>, backoff: Backoff) -> Decision {
    let class = failure.class;
    let hint_ms = failure.retry_after.map_or(0, |d| d.as_millis() as u64);
    match failure.phase {
        Phase::Poll => {
            let not_found = failure.code == Some("not_found");
            let transient = matches!(
                class,
                FailureClass::Network
                    | FailureClass::ProviderError
                    | FailureClass::RateLimited
                    | FailureClass::ConcurrencyLimited
            );
            if (not_found && history.render_age_ms < NOT_FOUND_GRACE_MS)
                || (transient && !not_found)
            {
                return Decision::PollAgain {
                    delay_ms: history.next_poll_ms.max(hint_ms),
                };
            }
        }
        Phase::Download => match class {
            // The render exists: poll again (a fresh URL where the family gives one), a bounded
            // number of times.
            FailureClass::Network | FailureClass::ProviderError | FailureClass::Unknown => {
                if history.fetch_failures + 1 >= MAX_FETCH_FAILURES {
                    return record(FailDecision::Dead, FailureClass::DownloadFailed);
                }
                let delay_ms = backoff.delay_ms(history.fetch_failures).max(1_000);
                return record(FailDecision::Repoll { delay_ms }, class);
            }
            FailureClass::ResultExpired if !history.result_expired_before => {
                return record(FailDecision::Repoll { delay_ms: 0 }, class);
            }
            _ => {}
        },
        Phase::Prepare | Phase::Submit | Phase::Render => {}
    }
    // A broken file: retried on the same account once (with backoff), then treated like a
    // stalled holder, the account's own problem.
    if class == FailureClass::BadOutput
        && history.bad_outputs_here + 1 < BAD_OUTPUTS_PER_ACCOUNT
        && history.attempt < history.max_attempts
    {
        let delay_ms = backoff.delay_ms(history.attempt.saturating_sub(1));
        return record(
            FailDecision::Retry {
                delay_ms: delay_ms.max(hint_ms),
                refund_attempt: false,
            },
            class,
        );
    }
    if falls_back(class) {
        let decision = match history.next_account() {
            Some(to) => FailDecision::Move { to: to.to_string() },
            None => FailDecision::Dead,
        };
        return record(decision, class);
    }
    match class.retry_policy() {
        RetryPolicy::Never => record(FailDecision::Dead, class),
        RetryPolicy::PauseAccount => record(FailDecision::Pause, class),
        RetryPolicy::WaitWithoutAttempt => {
            // The provider's hint when it gives one (plus up to a quarter of it, so a fleet does
            // not return in lockstep); otherwise a short backoff.
            let delay_ms = match failure.retry_after {
                Some(_) => hint_ms + rand::rng().random_range(0..=hint_ms / 4),
                None => backoff
                    .delay_ms(history.attempt.saturating_sub(1).min(4))
                    .max(backoff.base_ms / 4),
            };
            // A 429 or a concurrency refusal is about the account, not the task: every worker
            // of the account waits for the provider's hint (or half a base delay without one).
            let cooldown_ms = failure
                .retry_after
                .map_or(backoff.base_ms / 2, |d| d.as_millis() as u64)
                .max(100);
            Decision::Fail {
                decision: FailDecision::Retry {
                    delay_ms,
                    refund_attempt: true,
                },
                class,
                cooldown_ms,
            }
        }
        RetryPolicy::Backoff if history.attempt >= history.max_attempts => {
            record(FailDecision::Dead, class)
        }
        RetryPolicy::Backoff => {
            let jittered = backoff.delay_ms(history.attempt.saturating_sub(1));
            record(
                FailDecision::Retry {
                    delay_ms: jittered.max(hint_ms),
                    refund_attempt: false,
                },
                class,
            )
        }
    }
}

fn record(decision: FailDecision, class: FailureClass) -> Decision {
    Decision::Fail {
        decision,
        class,
        cooldown_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base_ms: 1_000,
        max_ms: 60_000,
    };

    fn chain(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("acct{i}")).collect()
    }

    fn history(chain: &[String]) -> History<'_> {
        History {
            attempt: 1,
            max_attempts: 5,
            fetch_failures: 0,
            result_expired_before: false,
            bad_outputs_here: 0,
            render_age_ms: 120_000,
            next_poll_ms: 7_000,
            chain,
            chain_pos: 0,
        }
    }

    fn failure(class: FailureClass, phase: Phase) -> Failure<'static> {
        Failure {
            class,
            code: None,
            retry_after: None,
            phase,
        }
    }

    fn fail_decision(d: Decision) -> (FailDecision, FailureClass, u64) {
        match d {
            Decision::Fail {
                decision,
                class,
                cooldown_ms,
            } => (decision, class, cooldown_ms),
            other => panic!("expected a recorded failure, got {other:?}"),
        }
    }

    #[test]
    fn non_retryable_is_dead_at_once_in_every_phase() {
        let c = chain(2);
        for class in [
            FailureClass::ContentPolicy,
            FailureClass::Auth,
            FailureClass::InvalidRequest,
            FailureClass::DownloadFailed,
        ] {
            for phase in [Phase::Submit, Phase::Render, Phase::Download, Phase::Poll] {
                let (d, recorded, _) =
                    fail_decision(decide(&failure(class, phase), &history(&c), B));
                assert_eq!(d, FailDecision::Dead, "{class} in {phase:?}");
                assert_eq!(recorded, class);
            }
        }
    }

    #[test]
    fn provider_specific_failures_fall_back_to_the_next_account_then_die() {
        let c = chain(3);
        for class in [
            FailureClass::Timeout,
            FailureClass::ModelRetired,
            FailureClass::Stalled,
            FailureClass::ResultExpired,
        ] {
            let (d, _, _) = fail_decision(decide(&failure(class, Phase::Render), &history(&c), B));
            assert_eq!(d, FailDecision::Move { to: "acct1".into() }, "{class}");
            let last = History {
                chain_pos: 2,
                ..history(&c)
            };
            let (d, _, _) = fail_decision(decide(&failure(class, Phase::Render), &last, B));
            assert_eq!(d, FailDecision::Dead, "{class} at the end of the chain");
        }
    }

    #[test]
    fn out_of_credits_pauses_the_account_without_cooldown() {
        let c = chain(1);
        for class in [
            FailureClass::InsufficientCredits,
            FailureClass::QuotaExceeded,
        ] {
            let (d, _, cooldown) =
                fail_decision(decide(&failure(class, Phase::Submit), &history(&c), B));
            assert_eq!(d, FailDecision::Pause, "{class}");
            assert_eq!(cooldown, 0);
        }
    }

    #[test]
    fn a_429_refunds_honours_the_hint_and_cools_the_account_down() {
        let c = chain(1);
        let f = Failure {
            retry_after: Some(Duration::from_secs(7)),
            ..failure(FailureClass::RateLimited, Phase::Submit)
        };
        let h = History {
            attempt: 5,
            ..history(&c)
        };
        match fail_decision(decide(&f, &h, B)) {
            (
                FailDecision::Retry {
                    delay_ms,
                    refund_attempt: true,
                },
                _,
                7_000,
            ) => assert!((7_000..=8_750).contains(&delay_ms), "{delay_ms}"),
            other => panic!("{other:?}"),
        }
        let (_, _, cooldown) = fail_decision(decide(
            &failure(FailureClass::ConcurrencyLimited, Phase::Submit),
            &history(&c),
            B,
        ));
        assert_eq!(cooldown, 500);
    }

    #[test]
    fn retryable_until_the_attempt_limit() {
        let c = chain(2);
        let f = failure(FailureClass::ProviderError, Phase::Render);
        let h4 = History {
            attempt: 4,
            ..history(&c)
        };
        assert!(matches!(
            fail_decision(decide(&f, &h4, B)).0,
            FailDecision::Retry {
                refund_attempt: false,
                ..
            }
        ));
        let h5 = History {
            attempt: 5,
            ..history(&c)
        };
        assert_eq!(fail_decision(decide(&f, &h5, B)).0, FailDecision::Dead);
    }

    #[test]
    fn a_failed_poll_request_polls_again_and_records_nothing() {
        let c = chain(1);
        let f = Failure {
            retry_after: Some(Duration::from_secs(30)),
            ..failure(FailureClass::Network, Phase::Poll)
        };
        assert_eq!(
            decide(&f, &history(&c), B),
            Decision::PollAgain { delay_ms: 30_000 }
        );
        // "Not found" right after submit is a relay still catching up; later it is real.
        let nf = Failure {
            code: Some("not_found"),
            ..failure(FailureClass::ProviderError, Phase::Poll)
        };
        let young = History {
            render_age_ms: 5_000,
            ..history(&c)
        };
        assert_eq!(
            decide(&nf, &young, B),
            Decision::PollAgain { delay_ms: 7_000 }
        );
        assert!(matches!(
            decide(&nf, &history(&c), B),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn download_failures_repoll_a_bounded_number_of_times_then_die_without_fallback() {
        let c = chain(2);
        let f = failure(FailureClass::Network, Phase::Download);
        for n in 0..MAX_FETCH_FAILURES - 1 {
            let h = History {
                fetch_failures: n,
                ..history(&c)
            };
            assert!(
                matches!(
                    fail_decision(decide(&f, &h, B)).0,
                    FailDecision::Repoll { .. }
                ),
                "after {n}"
            );
        }
        let h = History {
            fetch_failures: MAX_FETCH_FAILURES - 1,
            ..history(&c)
        };
        assert_eq!(
            fail_decision(decide(&f, &h, B)),
            (FailDecision::Dead, FailureClass::DownloadFailed, 0)
        );
        // A redirect loop is classified download_failed by the adapter: dead at once, paid
        // renders never fall back (that would pay a second time).
        let redirect = failure(FailureClass::DownloadFailed, Phase::Download);
        assert_eq!(
            fail_decision(decide(&redirect, &history(&c), B)).0,
            FailDecision::Dead
        );
    }

    #[test]
    fn an_expired_result_is_refreshed_once_then_falls_back() {
        let c = chain(2);
        let f = failure(FailureClass::ResultExpired, Phase::Download);
        assert_eq!(
            fail_decision(decide(&f, &history(&c), B)).0,
            FailDecision::Repoll { delay_ms: 0 }
        );
        let again = History {
            result_expired_before: true,
            ..history(&c)
        };
        assert_eq!(
            fail_decision(decide(&f, &again, B)).0,
            FailDecision::Move { to: "acct1".into() }
        );
    }

    #[test]
    fn a_bad_output_is_retried_once_on_the_account_then_falls_back_then_dies() {
        let c = chain(2);
        // (phase, earlier bad outputs here, attempt, chain position) -> decision
        let table: &[(Phase, u32, u32, u32, &str)] = &[
            (Phase::Download, 0, 1, 0, "retry"),
            (Phase::Submit, 0, 1, 0, "retry"),
            (Phase::Download, 1, 2, 0, "move"),
            // The attempt limit is reached: no retry on this account, the next one gets it.
            (Phase::Download, 0, 5, 0, "move"),
            (Phase::Download, 0, 1, 1, "retry"),
            (Phase::Download, 1, 3, 1, "dead"),
        ];
        for &(phase, earlier, attempt, pos, want) in table {
            let h = History {
                bad_outputs_here: earlier,
                attempt,
                chain_pos: pos,
                ..history(&c)
            };
            let (d, class, cooldown) =
                fail_decision(decide(&failure(FailureClass::BadOutput, phase), &h, B));
            assert_eq!(class, FailureClass::BadOutput);
            assert_eq!(cooldown, 0);
            let got = match d {
                FailDecision::Retry {
                    refund_attempt: false,
                    ..
                } => "retry",
                FailDecision::Move { to } if to == "acct1" => "move",
                FailDecision::Dead => "dead",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(
                got, want,
                "{phase:?} earlier={earlier} attempt={attempt} pos={pos}"
            );
        }
    }

    #[test]
    fn full_jitter_stays_under_the_capped_ceiling() {
        assert_eq!(B.ceiling_ms(0), 1_000);
        assert_eq!(B.ceiling_ms(3), 8_000);
        assert_eq!(B.ceiling_ms(40), 60_000);
        for n in 0..10 {
            assert!(B.delay_ms(n) <= B.ceiling_ms(n));
        }
    }
}
