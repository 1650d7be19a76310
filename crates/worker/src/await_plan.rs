//! When to poll a render: near its expected finish, learned from the account's finished renders.
//!
//! A render keeps its account's concurrency slot until a poll sees it finished, so a poll long
//! after the finish wastes a paid slot, and a poll long before it wastes a provider request. The
//! account's render-time histogram (`dramaq_common::render_times`, kept in Redis by
//! `render_done.lua`) gives its quantiles; a render is polled at `n` ages spread over the
//! distribution (the account's `poll_points`, default 5: the quantiles 1/5, 2/5, … and the 99th
//! percentile), which costs (n + 1) / 2 = 3 polls per render on average and finds a finished
//! render within a tenth of the spread on average. More points trade status requests for
//! sooner-freed slots: the average lateness is about spread / 2n. Past the last point the render is late: polls back off from a
//! fifth of the spread to `poll_max_ms`. With callbacks (`crate::webhooks`), a callback moves
//! the poll to now, so the plan keeps only the last point as a safety net for lost callbacks.
//!
//! Until an account has `MIN_SAMPLES` finished renders, the fixed cadence is used: first poll
//! after `poll_first_ms`, then a third of the render's age clamped to `poll_max_ms`, ±25 %.
//!
//! Everything here is a pure function of the histogram, the account's configuration and the
//! render's age (on the Redis clock), so the schedule is tested without a clock.

use dramaq_common::config::AccountConfig;
use dramaq_common::queue::Queue;
use dramaq_common::render_times::RenderTimes;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Poll ages per render spread over the learned distribution, unless the account says.
#[cfg(test)]
const POINTS: usize = 5;
/// Finished renders needed before the learned plan replaces the fixed cadence.
const MIN_SAMPLES: u64 = 20;
/// Points closer than this are merged; no poll comes sooner than this after another.
const MIN_GAP_MS: u64 = 250;
/// How often a process re-reads an account's histogram.
const REFRESH: Duration = Duration::from_secs(5);

/// One account's poll schedule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Too few finished renders: the fixed cadence.
    Learning,
    Learned {
        /// Below this age (the 0.5 % quantile) renders practically never finish.
        floor_ms: u64,
        /// Ages to poll at, ascending.
        points: Vec<u64>,
        /// First back-off delay past the last point.
        tail_step_ms: u64,
    },
}

impl Plan {
    /// The plan for an account whose renders took `times`. With `callbacks`, only the last
    /// point is kept: a callback triggers the poll that finds the render done.
    pub(crate) fn new(times: &RenderTimes, callbacks: bool, n_points: usize) -> Plan {
        let n_points = n_points.max(1);
        if times.count() < MIN_SAMPLES {
            return Plan::Learning;
        }
        let q = |p: f64| times.quantile(p).unwrap_or(0);
        let floor_ms = q(0.005);
        let last = q(0.99).max(floor_ms + MIN_GAP_MS);
        let mut points: Vec<u64> = Vec::with_capacity(n_points);
        if !callbacks {
            for i in 1..n_points {
                let at = q(i as f64 / n_points as f64);
                if at >= points.last().map_or(floor_ms, |p| p + MIN_GAP_MS) {
                    points.push(at);
                }
            }
        }
        if points.last().is_none_or(|&p| last >= p + MIN_GAP_MS) {
            points.push(last);
        }
        let tail_step_ms = ((last - floor_ms) / n_points as u64).max(1_000);
        Plan::Learned {
            floor_ms,
            points,
            tail_step_ms,
        }
    }

    /// Delay (ms) before the next poll of a render now `age_ms` old.
    pub(crate) fn next_delay(&self, acct: &AccountConfig, age_ms: i64) -> u64 {
        let age = age_ms.max(0) as u64;
        match self {
            Plan::Learning => cadence_ms(acct, age_ms),
            Plan::Learned {
                points,
                tail_step_ms,
                ..
            } => match points.iter().find(|&&p| p > age) {
                Some(&p) => (p - age).max(MIN_GAP_MS),
                None => {
                    let last = points.last().copied().unwrap_or(0);
                    let cap = acct.poll_max_ms.max(*tail_step_ms);
                    (tail_step_ms + (age - last) / 2).min(cap)
                }
            },
        }
    }

    /// Delay before a new render's first poll.
    pub(crate) fn first_delay(&self, acct: &AccountConfig) -> u64 {
        match self {
            Plan::Learning => acct.poll_first_ms,
            Plan::Learned { .. } => self.next_delay(acct, 0),
        }
    }

    /// How long a render took, seen finished by a poll due at age `due_age_ms` and sent at
    /// `seen_age_ms`: it finished between the previous poll (whose age follows from the plan)
    /// and this one. The estimate is the point a share `u` (in [0, 1), random in use) into that
    /// interval: always the middle would heap every render of an interval on one bucket, and
    /// the next plan's points would drift onto those heaps; a uniform draw spreads them as
    /// evenly as the renders most likely were.
    pub(crate) fn estimate_ms(
        &self,
        acct: &AccountConfig,
        due_age_ms: i64,
        seen_age_ms: i64,
        u: f64,
    ) -> u64 {
        let due = due_age_ms.max(0) as u64;
        let seen = (seen_age_ms.max(0) as u64).max(due);
        let previous = match self {
            Plan::Learning => {
                let gap =
                    (due / 4).clamp(acct.poll_first_ms, acct.poll_max_ms.max(acct.poll_first_ms));
                due.saturating_sub(gap)
            }
            Plan::Learned {
                floor_ms,
                points,
                tail_step_ms,
            } => {
                let last = points.last().copied().unwrap_or(*floor_ms);
                if due > last + MIN_GAP_MS {
                    due.saturating_sub(*tail_step_ms).max(last)
                } else {
                    points
                        .iter()
                        .rev()
                        .find(|&&p| p + MIN_GAP_MS <= due)
                        .copied()
                        .unwrap_or(*floor_ms)
                        .min(due)
                }
            }
        };
        previous + ((seen - previous) as f64 * u.clamp(0.0, 1.0)) as u64
    }
}

/// The fixed cadence: a third of the render's age, clamped to the account's first/max poll
/// interval, ±25 % jitter.
pub fn cadence_ms(acct: &AccountConfig, age_ms: i64) -> u64 {
    let base = ((age_ms.max(0) as u64) / 3)
        .clamp(acct.poll_first_ms, acct.poll_max_ms.max(acct.poll_first_ms));
    let jitter = base / 4;
    let lo = base - jitter;
    rand::rng().random_range(lo..=base + jitter)
}

/// Each account's plan in this process, re-read from Redis every few seconds.
#[derive(Default)]
pub(crate) struct Plans {
    cached: Mutex<HashMap<String, (Instant, Arc<Plan>)>>,
}

impl Plans {
    /// The account's plan; a failed read keeps the last one (or the fixed cadence).
    pub(crate) async fn get(
        &self,
        queue: &Queue,
        account: &str,
        callbacks: bool,
        n_points: u32,
    ) -> Arc<Plan> {
        let cached = self.lock().get(account).cloned();
        if let Some((at, plan)) = &cached {
            if at.elapsed() < REFRESH {
                return plan.clone();
            }
        }
        let plan = match queue.render_times(account).await {
            Ok(times) => Arc::new(Plan::new(&times, callbacks, n_points as usize)),
            Err(e) => {
                tracing::warn!(%account, error = %e, "reading the render-time histogram failed");
                cached.map_or_else(|| Arc::new(Plan::Learning), |(_, p)| p)
            }
        };
        self.lock()
            .insert(account.to_string(), (Instant::now(), plan.clone()));
        plan
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<Plan>)>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct() -> AccountConfig {
        let mut a: AccountConfig = serde_json::from_value(serde_json::json!({
            "family": "openai-videos", "base_url": "http://127.0.0.1:1", "api_key_env": "K"
        }))
        .unwrap();
        a.poll_first_ms = 5_000;
        a.poll_max_ms = 20_000;
        a
    }

    /// Renders of 120–180 s, evenly spread.
    fn uniform() -> RenderTimes {
        RenderTimes::from_samples((0..=600).map(|i| 120_000 + i * 100))
    }

    /// Expected polls per render and mean detection delay (ms) over `finishes`, following the
    /// plan from submit to the first poll at or after the finish.
    fn simulate(plan: &Plan, acct: &AccountConfig, finishes: &[u64]) -> (f64, f64) {
        let (mut polls, mut late) = (0u64, 0u64);
        for &f in finishes {
            let mut age = plan.first_delay(acct);
            polls += 1;
            while age < f {
                age += plan.next_delay(acct, age as i64);
                polls += 1;
            }
            late += age - f;
        }
        let n = finishes.len() as f64;
        (polls as f64 / n, late as f64 / n)
    }

    #[test]
    fn too_few_renders_keep_the_fixed_cadence() {
        let few = RenderTimes::from_samples([150_000; 19]);
        assert_eq!(Plan::new(&few, false, POINTS), Plan::Learning);
        let a = acct();
        assert_eq!(Plan::Learning.first_delay(&a), 5_000);
        let d = Plan::Learning.next_delay(&a, 90_000);
        assert!((15_000..=25_000).contains(&d), "{d}");
    }

    #[test]
    fn a_learned_plan_polls_three_times_and_finds_renders_within_a_tenth_of_the_spread() {
        let a = acct();
        let plan = Plan::new(&uniform(), false, POINTS);
        let Plan::Learned {
            points, floor_ms, ..
        } = &plan
        else {
            panic!("{plan:?}");
        };
        assert_eq!(points.len(), POINTS);
        assert!((119_000..=122_000).contains(floor_ms), "{floor_ms}");
        assert!((130_000..=134_000).contains(&points[0]), "{points:?}");
        assert!((177_000..=182_000).contains(&points[4]), "{points:?}");
        let finishes: Vec<u64> = (0..1_000).map(|i| 120_000 + i * 60).collect();
        let (polls, late) = simulate(&plan, &a, &finishes);
        assert!(polls <= 3.1, "{polls} polls per render");
        assert!(late <= 7_000.0, "{late} ms late on average");
        // The fixed cadence, for comparison, polls far more often.
        let (old_polls, _) = simulate(&Plan::Learning, &a, &finishes);
        assert!(old_polls > 8.0, "{old_polls}");
    }

    #[test]
    fn a_late_render_backs_off_to_the_cap() {
        let a = acct();
        let plan = Plan::new(&uniform(), false, POINTS);
        let first_tail = plan.next_delay(&a, 181_000);
        assert!((12_000..=13_000).contains(&first_tail), "{first_tail}");
        assert_eq!(plan.next_delay(&a, 600_000), 20_000);
    }

    #[test]
    fn with_callbacks_only_the_safety_net_is_polled() {
        let a = acct();
        let plan = Plan::new(&uniform(), true, POINTS);
        let Plan::Learned { points, .. } = &plan else {
            panic!("{plan:?}");
        };
        assert_eq!(points.len(), 1);
        let first = plan.first_delay(&a);
        assert!((177_000..=182_000).contains(&first), "{first}");
    }

    #[test]
    fn the_estimate_is_the_middle_between_the_previous_poll_and_this_one() {
        let a = acct();
        let plan = Plan::new(&uniform(), false, POINTS);
        let Plan::Learned {
            points, floor_ms, ..
        } = plan.clone()
        else {
            panic!();
        };
        // Seen at the second point: finished after the first.
        let est = plan.estimate_ms(&a, points[1] as i64, points[1] as i64 + 100, 0.5);
        assert_eq!(est, (points[0] + points[1] + 100) / 2);
        assert_eq!(
            plan.estimate_ms(&a, points[1] as i64, points[1] as i64, 0.0),
            points[0]
        );
        // Seen at the first point: finished after the floor.
        assert_eq!(
            plan.estimate_ms(&a, points[0] as i64, points[0] as i64, 0.5),
            (floor_ms + points[0]) / 2
        );
        // The fixed cadence: the previous poll was a quarter of the age (clamped) before.
        assert_eq!(Plan::Learning.estimate_ms(&a, 40_000, 40_000, 0.5), 35_000);
        assert_eq!(
            Plan::Learning.estimate_ms(&a, 160_000, 160_000, 0.5),
            150_000
        );
    }

    #[test]
    fn learning_converges_on_the_true_spread() {
        // Start from the fixed cadence's coarse estimates and learn from the plan's own
        // estimates for a few generations: the learned median stays near the true one.
        let a = acct();
        let finishes: Vec<u64> = (0..500).map(|i| 120_000 + (i * 7_919) % 60_000).collect();
        let mut plan = Plan::Learning;
        for _ in 0..6 {
            let mut seen = Vec::new();
            for (i, &f) in finishes.iter().enumerate() {
                let mut age = plan.first_delay(&a);
                while age < f {
                    age += plan.next_delay(&a, age as i64);
                }
                let u = ((i * 7_919) % 1_000) as f64 / 1_000.0;
                seen.push(plan.estimate_ms(&a, age as i64, age as i64, u));
            }
            plan = Plan::new(&RenderTimes::from_samples(seen), false, POINTS);
        }
        let Plan::Learned { points, .. } = &plan else {
            panic!("{plan:?}");
        };
        // True quantiles: 132, 144, 156, 168 and 179.4 s. The last errs late: renders seen in
        // the back-off are spread over its longer intervals.
        for (got, want) in points.iter().zip([132_000, 144_000, 156_000, 168_000]) {
            assert!(got.abs_diff(want) <= 5_000, "{points:?}");
        }
        assert!((175_000..=192_000).contains(&points[4]), "{points:?}");
        let (polls, late) = simulate(&plan, &a, &finishes);
        assert!(
            polls <= 3.3 && late <= 9_000.0,
            "{polls} polls, {late} ms late"
        );
    }

    #[test]
    fn more_points_find_renders_sooner_for_more_polls() {
        let a = acct();
        let finishes: Vec<u64> = (0..1_000).map(|i| 120_000 + (i * 7_919) % 60_000).collect();
        let times = RenderTimes::from_samples(finishes.clone());
        let (polls5, late5) = simulate(&Plan::new(&times, false, 5), &a, &finishes);
        let (polls10, late10) = simulate(&Plan::new(&times, false, 10), &a, &finishes);
        // Lateness is about spread / 2n: 6 s with 5 points, 3 s with 10 (a 60 s spread).
        assert!(late10 < late5 * 0.65, "{late5} → {late10} ms");
        assert!(late10 <= 4_000.0, "{late10} ms");
        assert!(
            polls10 > polls5 && polls10 <= 6.5,
            "{polls5} → {polls10} polls"
        );
        let Plan::Learned { points, .. } = Plan::new(&times, false, 1) else {
            panic!()
        };
        assert_eq!(points.len(), 1, "one point: the 99th percentile only");
    }
}
