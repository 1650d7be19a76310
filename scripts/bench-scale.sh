#!/usr/bin/env bash
# Horizontal scaling: the same kind of season (video scenes) worked by 1, 2, 4 and 8 worker
# processes against the sandbox with a fixed submit latency (SUBMIT_MS) and render time
# (RENDER_MS), first without a quota (SCENES_PER_PROCESS x N scenes, so every run lasts about as
# long), then with a fleet-wide quota of QUOTA submits/s (QUOTA_SCENES scenes). Prints tasks/s
# per process count and the speed-up over one process.
#
#   scripts/bench-scale.sh                     # release build
#   BENCH_PROFILE=debug scripts/bench-scale.sh # debug build (no release build needed)
#
# Each process runs with concurrency CONC: a task holds a slot while it is submitted and
# downloaded, not while it renders, so without a quota one process does about
# CONC / (SUBMIT_MS + download) tasks/s and N processes N times that, until the machine's CPUs
# (the processes, Redis and the sandbox share them) are the limit. The defaults keep 8 processes
# below what a 2-core machine runs in a debug build; SUBMIT_MS=250 CONC=4 shows the CPU limit.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENES_PER_PROCESS=${SCENES_PER_PROCESS:-24}; QUOTA_SCENES=${QUOTA_SCENES:-16}
CONC=${CONC:-2}; SUBMIT_MS=${SUBMIT_MS:-1000}; RENDER_MS=${RENDER_MS:-1000}
QUOTA=${QUOTA:-1}; SIZES=${SIZES:-"1 2 4 8"}

source scripts/bench-env.sh
start_redis
start_sandbox --render-ms "$RENDER_MS" --render-jitter-ms 0 --submit-delay-ms "$SUBMIT_MS"
sed -e "s#http://127.0.0.1:8787#$SANDBOX#g" -e 's/^poll_first_ms = 500/poll_first_ms = 1000/' \
  examples/dramaq.toml >"$WORK/base.toml"
use_bench_env

# One run: flush Redis, enqueue the season, start N workers, time until every task is stored.
run() {
  local n=$1 mode=$2 scenes=$(( SCENES_PER_PROCESS * $1 ))
  if [ "$mode" = quota ]; then
    scenes=$QUOTA_SCENES
    { cat "$WORK/base.toml"; printf '\n[accounts.sandbox-sora.quota]\nsubmit_per_sec = %s\nburst = 1\nfleet_wide = true\n' "$QUOTA"; } >"$WORK/dramaq.toml"
  else
    cp "$WORK/base.toml" "$WORK/dramaq.toml"
  fi
  redis-cli -p "$RPORT" flushall >/dev/null
  write_season "scale-$mode-$n" "$scenes" 60
  "$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
  local pids=() start end stored
  start=$(date +%s.%N)
  for _ in $(seq "$n"); do
    "$BIN/dramaq-worker" run --concurrency "$CONC" --accounts sandbox-sora --metrics-addr off 2>/dev/null &
    pids+=($!); PIDS+=($!)
  done
  while :; do
    stored=$("$BIN/dramaq" status --season "scale-$mode-$n" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored"])')
    [ "$stored" -ge "$scenes" ] && break
    sleep 0.2
  done
  end=$(date +%s.%N)
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  # Completions per second over the whole run (start-up and the last render's tail included),
  # and the paid submits per second the sandbox saw (the last $scenes it counted are this run's).
  python3 - "$SANDBOX" "$scenes" "$start" "$end" <<'PY'
import json, sys, urllib.request
sandbox, n, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
times = sorted(json.load(urllib.request.urlopen(f"{sandbox}/admin/stats"))["submit_times_ms"])[-n:]
submits = (len(times) - 1) / max(1e-3, (times[-1] - times[0]) / 1000)
print(f"{n / (end - start):.2f} {submits:.2f}")
PY
}

echo "bench-scale: $SCENES_PER_PROCESS scenes per process ($QUOTA_SCENES with the quota), concurrency $CONC per process, submit ${SUBMIT_MS} ms, render ${RENDER_MS} ms, $(nproc) CPUs, ${BENCH_PROFILE:-release} build"
for mode in none quota; do
  [ "$mode" = quota ] && echo "with a fleet-wide quota of $QUOTA submits/s:" || echo "no quota:"
  printf '  %-9s %10s %9s %10s\n' processes tasks/s speed-up submits/s
  one=""
  for n in $SIZES; do
    read -r tps sps < <(run "$n" "$mode")
    [ -z "$one" ] && one=$tps
    printf '  %-9s %10s %8sx %10s\n' "$n" "$tps" "$(python3 -c "print(f'{$tps / $one:.2f}')")" "$sps"
  done
done
