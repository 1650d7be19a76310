#!/usr/bin/env bash
# Crash recovery: a worker holds CLAIMS tasks mid-submit (the sandbox takes a minute to answer
# creates), is killed with SIGKILL, and a standalone reaper brings the tasks back. Reports the
# time from the kill until every one of them is back on its way (ready again, flagged as a
# possible duplicate since it may have reached the provider), next to the lease length.
#
#   scripts/bench-recovery.sh            # 100 claims, default lease (15 s)
#   CLAIMS=100 LEASE_MS=15000 scripts/bench-recovery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLAIMS=${CLAIMS:-100}; LEASE_MS=${LEASE_MS:-15000}; HEARTBEAT_MS=$(( LEASE_MS / 3 ))

source scripts/bench-env.sh
start_redis
start_sandbox --render-ms 1000 --submit-delay-ms 60000

sed -e "s#http://127.0.0.1:8787#$SANDBOX#g" -e "s/^lease_ms = .*/lease_ms = $LEASE_MS/" \
    -e "s/^heartbeat_ms = .*/heartbeat_ms = $HEARTBEAT_MS/" examples/dramaq.toml >"$WORK/dramaq.toml"
write_season bench-recovery "$CLAIMS"
use_bench_env
"$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
"$BIN/dramaq-worker" run --concurrency "$CLAIMS" --accounts sandbox-sora --no-reaper --metrics-addr off 2>/dev/null &
VICTIM=$!
PIDS+=($VICTIM)
"$BIN/dramaq-worker" reaper --accounts sandbox-sora --metrics-addr off 2>/dev/null &
PIDS+=($!)

held() { "$BIN/dramaq" status --season bench-recovery --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["claimed"] + d["submitting"])'; }
for _ in $(seq 300); do [ "$(held)" -ge "$CLAIMS" ] && break; sleep 0.1; done
echo "worker holds $(held) tasks mid-submit; kill -9"
T0=$(date +%s.%N)
kill -9 "$VICTIM"
while [ "$(held)" -gt 0 ]; do sleep 0.05; done
T1=$(date +%s.%N)
python3 - "$T0" "$T1" "$LEASE_MS" "$CLAIMS" <<'PY'
import sys
t0, t1, lease, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]) / 1000, int(sys.argv[4])
print(f"  {n} claims recovered {t1 - t0:.2f} s after kill -9 (lease {lease:.0f} s; target lease + 2 s = {lease + 2:.0f} s)")
PY
