#!/usr/bin/env bash
# Chaos at a bigger scale: a generated season (images, Sora and Kling scenes, voice lines,
# assemblies) worked by WORKERS release-built workers while a random one is killed with SIGKILL
# every KILL_MS (and restarted), Redis (AOF, appendfsync everysec) is restarted REDIS_RESTARTS
# times and suffers POWER_CUTS power cuts (the AOF copied, Redis run on CUT_AFTER_MS, killed and
# started from the copy: the writes of that interval are lost). Prints the figures as a table:
# tasks stored/dead/lost, kills, paid submissions, double payments (retried after a recorded
# failure, flagged possible_duplicate, UNFLAGGED), .part files left; exits non-zero when a goal
# is broken (a task lost or stuck, a checksum mismatch, an unflagged double payment). No timing
# is asserted.
#
# It runs the `chaos_bench` test of tests/tests/chaos.rs in release mode (the scenario lives in
# tests/src/chaos.rs, shared with the CI-sized tests); every process it starts is killed at the
# end, and its scratch files live under the bench folder removed on exit.
#
#   scripts/bench-chaos.sh                                  # 2,000 tasks, 6 workers, 2 + 2 cuts
#   TASKS=500 WORKERS=4 REDIS_RESTARTS=1 POWER_CUTS=3 scripts/bench-chaos.sh
#   SEED=42 FAILURE_RATE=0.2 KILL_MS=1000 scripts/bench-chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CHAOS_TASKS=${TASKS:-2000} CHAOS_WORKERS=${WORKERS:-6} CHAOS_CONCURRENCY=${CONCURRENCY:-16}
export CHAOS_KILL_MS=${KILL_MS:-2000} CHAOS_REDIS_RESTARTS=${REDIS_RESTARTS:-2} CHAOS_POWER_CUTS=${POWER_CUTS:-2}
export CHAOS_CUT_AFTER_MS=${CUT_AFTER_MS:-1000} CHAOS_FAILURE_RATE=${FAILURE_RATE:-0.1}
export CHAOS_RENDER_MS=${RENDER_MS:-1000} CHAOS_RENDER_JITTER_MS=${RENDER_JITTER_MS:-1000}
export CHAOS_CHAOS_S=${CHAOS_S:-240} CHAOS_TIMEOUT_S=${TIMEOUT_S:-600}
[ -n "${SEED:-}" ] && export CHAOS_SEED=$SEED

# Release binaries and a scratch folder removed on exit (with every process started here).
source scripts/bench-env.sh
# The test's temporary folders (Redis' AOF, outputs, config) go under the scratch folder too.
export TMPDIR=$WORK DRAMAQ_TEST_LOG=${DRAMAQ_TEST_LOG:-error}
# In the foreground: Ctrl-C reaches the test and every process it started (one process group).
cargo test --release --quiet -p dramaq-e2e --test chaos -- --ignored --exact chaos_bench --nocapture
