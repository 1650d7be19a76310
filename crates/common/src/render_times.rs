//! Each account's render-time distribution, learned from the renders it finished.
//!
//! The poller schedules polls near a render's expected finish, so it needs to know how long an
//! account's renders take. Every finished render adds one observation to a histogram kept in
//! Redis under the account's tag (`dq:{A}:rtimes`, a HASH: bucket index → count, plus `n`, the
//! total). Buckets are log-spaced, 2 % wide, so the sketch is a few dozen fields for any
//! realistic spread and a quantile is known to within 1 % of its value. `render_done.lua` adds
//! the observation and halves every count once `n` passes a cap, so old renders fade and the
//! sketch follows a provider that slows down or speeds up (the cap sets how fast).

use std::collections::HashMap;

/// Width of one bucket, as a ratio between its upper and lower bound.
const RATIO: f64 = 1.02;
/// Lower bound of bucket 0 (ms); shorter renders land in bucket 0.
const FLOOR_MS: f64 = 100.0;
/// The HASH field holding the total count.
pub const TOTAL_FIELD: &str = "n";
/// `render_done.lua` halves every count when the total passes this: the sketch weighs roughly
/// the last 1,000 to 2,000 renders.
pub const DECAY_AT: u64 = 2_000;

/// The bucket a render time falls in (the HASH field is its decimal form).
pub fn bucket_of(render_ms: u64) -> u32 {
    let ms = (render_ms as f64).max(FLOOR_MS);
    ((ms / FLOOR_MS).ln() / RATIO.ln()).floor() as u32
}

fn bucket_low(b: u32) -> f64 {
    FLOOR_MS * RATIO.powi(b as i32)
}

/// A histogram of render times read back from Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderTimes {
    /// (bucket, count), sorted by bucket, counts > 0.
    buckets: Vec<(u32, u64)>,
    total: u64,
}

impl RenderTimes {
    /// From the HASH as `HGETALL` returns it. Fields that are not bucket numbers (the total,
    /// anything unknown) are ignored, so the total is recomputed from the buckets.
    pub fn from_fields(fields: &HashMap<String, u64>) -> RenderTimes {
        let mut buckets: Vec<(u32, u64)> = fields
            .iter()
            .filter_map(|(k, &n)| Some((k.parse::<u32>().ok()?, n)))
            .filter(|&(_, n)| n > 0)
            .collect();
        buckets.sort_unstable();
        let total = buckets.iter().map(|&(_, n)| n).sum();
        RenderTimes { buckets, total }
    }

    /// From observations directly (tests, benchmarks).
    pub fn from_samples(samples: impl IntoIterator<Item = u64>) -> RenderTimes {
        let mut fields: HashMap<String, u64> = HashMap::new();
        for ms in samples {
            *fields.entry(bucket_of(ms).to_string()).or_default() += 1;
        }
        RenderTimes::from_fields(&fields)
    }

    /// How many renders the sketch holds (after decay).
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The render time (ms) below which a share `p` of renders finished, interpolated within
    /// its bucket. `None` for an empty sketch.
    pub fn quantile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let want = p.clamp(0.0, 1.0) * self.total as f64;
        let mut below = 0.0;
        for &(b, n) in &self.buckets {
            let n = n as f64;
            if below + n >= want {
                let within = ((want - below) / n).clamp(0.0, 1.0);
                let (lo, hi) = (bucket_low(b), bucket_low(b + 1));
                return Some((lo + (hi - lo) * within).round() as u64);
            }
            below += n;
        }
        self.buckets
            .last()
            .map(|&(b, _)| bucket_low(b + 1).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_uniform_spread_are_within_two_percent() {
        let sketch = RenderTimes::from_samples((0..=600).map(|i| 120_000 + i * 100));
        assert_eq!(sketch.count(), 601);
        for (p, want) in [(0.0, 120_000.0), (0.5, 150_000.0), (0.9, 174_000.0)] {
            let got = sketch.quantile(p).unwrap() as f64;
            assert!((got - want).abs() / want < 0.02, "q{p}: {got} vs {want}");
        }
        assert!(sketch.quantile(1.0).unwrap() >= 180_000);
    }

    #[test]
    fn unknown_fields_and_empty_buckets_are_ignored() {
        let mut fields = HashMap::new();
        fields.insert(TOTAL_FIELD.to_string(), 99);
        fields.insert("oops".to_string(), 5);
        fields.insert(bucket_of(10_000).to_string(), 0);
        assert_eq!(RenderTimes::from_fields(&fields).quantile(0.5), None);
        fields.insert(bucket_of(10_000).to_string(), 3);
        let sketch = RenderTimes::from_fields(&fields);
        assert_eq!(sketch.count(), 3);
        let q = sketch.quantile(0.5).unwrap();
        assert!((9_800..=10_400).contains(&q), "{q}");
    }

    #[test]
    fn very_short_renders_share_the_first_bucket() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100), 0);
        assert!(bucket_of(6 * 3_600_000) < 700);
    }
}
