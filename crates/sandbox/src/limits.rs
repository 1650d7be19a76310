//! Per-key limits like the real services enforce: a token bucket for create requests and a cap
//! on unfinished renders. dramaq's own limiter is tested against these.

use std::collections::HashMap;
use std::time::Instant;

/// A token bucket per API key.
#[derive(Default)]
pub struct RateLimits {
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimits {
    /// Take one token for `key`; `Err(wait_ms)` when the bucket is empty.
    pub fn take(&mut self, key: &str, per_sec: f64, burst: u32, now: Instant) -> Result<(), u64> {
        let cap = f64::from(burst.max(1));
        let (tokens, at) = self.buckets.entry(key.to_string()).or_insert((cap, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * per_sec;
        *tokens = (*tokens + refill).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - *tokens) / per_sec) * 1000.0).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let mut l = RateLimits::default();
        let t0 = Instant::now();
        assert!(l.take("k", 2.0, 2, t0).is_ok());
        assert!(l.take("k", 2.0, 2, t0).is_ok());
        let wait = l.take("k", 2.0, 2, t0).unwrap_err();
        assert!(wait > 0 && wait <= 500, "{wait}");
        assert!(l.take("other", 2.0, 2, t0).is_ok(), "limits are per key");
        assert!(l.take("k", 2.0, 2, t0 + Duration::from_millis(510)).is_ok());
    }
}
