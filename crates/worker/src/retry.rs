//! The retry policy: what happens to a failed attempt.
//!
//! The decision is made here, in one pure function, and applied atomically by `fail.lua`. Task
//! retries are not an in-process loop: the task goes to the account's delayed schedule in Redis
//! and any worker picks it up when due, so the delay is computed here (exponential, full jitter:
//! a uniform draw in `[0, min(cap, base·2^n)]`, which spreads a burst of failures out best) rather
//! than by `backon`, which drives the in-process retries of single HTTP calls (downloads).

use dramaq_common::model::{FailureClass, RetryPolicy};
use dramaq_common::queue::FailDecision;
use rand::Rng;
use std::time::Duration;

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

/// Decide what a failed attempt turns into.
///
/// `attempt` is the attempt number the failure belongs to (1-based), `retry_after` the
/// provider's hint. Rate and concurrency limits wait (at least the hint) without using an
/// attempt; non-retryable classes go straight to the dead-letter set.
pub fn decide(
    class: FailureClass,
    retry_after: Option<Duration>,
    attempt: u32,
    max_attempts: u32,
    backoff: Backoff,
) -> FailDecision {
    match class.retry_policy() {
        RetryPolicy::Never => FailDecision::Dead,
        RetryPolicy::PauseAccount => FailDecision::Pause,
        RetryPolicy::WaitWithoutAttempt => {
            // The provider's hint when it gives one (plus up to a quarter of it, so a fleet does
            // not return in lockstep); otherwise a short backoff.
            let delay_ms = match retry_after {
                Some(hint) => {
                    let hint = hint.as_millis() as u64;
                    hint + rand::rng().random_range(0..=hint / 4)
                }
                None => backoff
                    .delay_ms(attempt.saturating_sub(1).min(4))
                    .max(backoff.base_ms / 4),
            };
            FailDecision::Retry {
                delay_ms,
                refund_attempt: true,
            }
        }
        RetryPolicy::Backoff if attempt >= max_attempts => FailDecision::Dead,
        RetryPolicy::Backoff => {
            let jittered = backoff.delay_ms(attempt.saturating_sub(1));
            let hinted = retry_after.map(|d| d.as_millis() as u64).unwrap_or(0);
            FailDecision::Retry {
                delay_ms: jittered.max(hinted),
                refund_attempt: false,
            }
        }
    }
}

/// How long the whole account cools down after this failure (0 = not at all). A 429 or a
/// concurrency refusal is about the account, not the task: every worker of the account waits
/// for the provider's hint (or one base delay when it gives none).
pub fn account_cooldown_ms(
    class: FailureClass,
    retry_after: Option<Duration>,
    backoff: Backoff,
) -> u64 {
    match class.retry_policy() {
        RetryPolicy::WaitWithoutAttempt => retry_after
            .map(|d| d.as_millis() as u64)
            .unwrap_or(backoff.base_ms / 2)
            .max(100),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base_ms: 1_000,
        max_ms: 60_000,
    };

    #[test]
    fn non_retryable_is_dead_at_once() {
        for class in [
            FailureClass::ContentPolicy,
            FailureClass::Auth,
            FailureClass::InvalidRequest,
        ] {
            assert_eq!(decide(class, None, 1, 5, B), FailDecision::Dead, "{class}");
        }
    }

    #[test]
    fn out_of_credits_pauses_the_account_instead() {
        for class in [
            FailureClass::InsufficientCredits,
            FailureClass::QuotaExceeded,
        ] {
            assert_eq!(decide(class, None, 1, 5, B), FailDecision::Pause, "{class}");
            assert_eq!(account_cooldown_ms(class, None, B), 0);
        }
    }

    #[test]
    fn a_429_cools_the_whole_account_down_for_the_hint() {
        let hint = Some(Duration::from_millis(2_500));
        assert_eq!(
            account_cooldown_ms(FailureClass::RateLimited, hint, B),
            2_500
        );
        assert_eq!(
            account_cooldown_ms(FailureClass::ConcurrencyLimited, None, B),
            500
        );
        assert_eq!(account_cooldown_ms(FailureClass::ProviderError, hint, B), 0);
    }

    #[test]
    fn rate_limits_refund_and_honour_the_hint() {
        let d = decide(
            FailureClass::RateLimited,
            Some(Duration::from_secs(7)),
            5,
            5,
            B,
        );
        match d {
            FailDecision::Retry {
                delay_ms,
                refund_attempt,
            } => {
                assert!(refund_attempt);
                assert!((7_000..=8_750).contains(&delay_ms), "{delay_ms}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retryable_until_the_limit() {
        assert!(matches!(
            decide(FailureClass::ProviderError, None, 4, 5, B),
            FailDecision::Retry {
                refund_attempt: false,
                ..
            }
        ));
        assert_eq!(
            decide(FailureClass::ProviderError, None, 5, 5, B),
            FailDecision::Dead
        );
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
