//! Chaos: a generated season of a few hundred image, video and voice tasks worked by four
//! `dramaq-worker` processes while a random one is killed with SIGKILL every ~2 s (and started
//! again), against a sandbox with 1-2 s renders and a 10 % render failure rate, on a Redis with an
//! append-only file (`appendfsync everysec`). The scenario lives in `dramaq_e2e::chaos`.
//!
//! Goals checked at the end: every task is stored (file matching its checksum) or dead with a
//! failure class (or waiting on a dead dependency); nothing lost, nothing stuck; no task paid for
//! more often than dramaq recorded submit attempts unless dramaq flagged it `possible_duplicate`.
//! The figures are printed (`--nocapture` shows them in CI logs).
//!
//! `CHAOS_*` variables scale the scenario (see `chaos::Settings::from_env`);
//! `scripts/bench-chaos.sh` runs the `chaos_bench` test below in a bigger setting.

use dramaq_e2e::chaos::{self, Report, Settings};
use std::sync::Mutex;
use std::time::Duration;

/// One scenario at a time: each runs four workers, a sandbox and Redis, and two at once on a
/// small CI machine would mostly measure the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(settings: &Settings) -> Report {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    chaos::run(settings).expect("chaos set-up")
}

fn show(name: &str, report: &Report) {
    println!("\n{name}\n{}", report.table());
}

/// One clean Redis restart (`SHUTDOWN NOSAVE`, the AOF flushed) in the middle of the kills.
#[test]
fn kill_9_workers_and_a_redis_restart_lose_nothing_and_pay_once() {
    let settings = Settings {
        redis_restarts: 1,
        power_cuts: 0,
        ..Settings::default()
    }
    .from_env()
    .expect("CHAOS_* settings");
    let report = run(&settings);
    show("chaos: kill -9 workers + redis restart", &report);
    assert!(report.kills > 0, "no worker was killed");
    assert_eq!(report.redis_restarts, settings.redis_restarts);
    report.assert_goals();
}

/// A power cut with `appendfsync everysec`: the AOF is copied while the workers run, Redis keeps
/// going for a second, is killed with SIGKILL and restarted from the copy, so the last second of
/// writes is gone while the workers that made them are still alive. Worker kills pause from the
/// copy until 8 s after the cut: the workers' journals of paid transitions are what recovers the
/// lost second, and a worker dying in the same seconds as the Redis host is a double fault.
#[test]
fn power_loss_of_the_last_second_loses_nothing_and_pays_no_unflagged_duplicate() {
    let settings = Settings {
        redis_restarts: 0,
        power_cuts: 1,
        ..Settings::default()
    }
    .from_env()
    .expect("CHAOS_* settings");
    let report = run(&settings);
    show("chaos: kill -9 workers + power cut", &report);
    assert_eq!(report.power_cuts, settings.power_cuts);
    report.assert_goals();
}

/// The bigger setting for `scripts/bench-chaos.sh`: every knob from `CHAOS_*` variables
/// (defaults: 2,000 tasks, 6 workers, 2 restarts and 2 power cuts). Ignored by a plain
/// `cargo test`.
#[test]
#[ignore = "benchmark-sized; run by scripts/bench-chaos.sh"]
fn chaos_bench() {
    let settings = Settings {
        tasks: 2_000,
        workers: 6,
        concurrency: 16,
        redis_restarts: 2,
        power_cuts: 2,
        chaos_for: Duration::from_secs(240),
        timeout: Duration::from_secs(600),
        ..Settings::default()
    }
    .from_env()
    .expect("CHAOS_* settings");
    let report = run(&settings);
    show("chaos bench", &report);
    report.assert_goals();
}
