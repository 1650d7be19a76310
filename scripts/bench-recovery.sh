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

cargo build --release --bins --quiet
BIN=target/release
WORK=$(mktemp -d -t dramaq-bench-recovery.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RPORT=$(port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/dramaq-sandbox" --addr 127.0.0.1:0 --render-ms 1000 --submit-delay-ms 60000 >"$WORK/sandbox.out" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/sandbox.out" ] && break; sleep 0.05; done
SANDBOX=$(awk '{print $NF; exit}' "$WORK/sandbox.out")

sed -e "s#http://127.0.0.1:8787#$SANDBOX#g" -e "s/^lease_ms = .*/lease_ms = $LEASE_MS/" \
    -e "s/^heartbeat_ms = .*/heartbeat_ms = $HEARTBEAT_MS/" examples/dramaq.toml >"$WORK/dramaq.toml"
python3 - "$CLAIMS" >"$WORK/season.yaml" <<'PY'
import sys
n = int(sys.argv[1])
print('id: bench-recovery\ntitle: "Recovery benchmark"\ndefaults:\n  aspect_ratio: "9:16"\n  resolution: "720p"\n  duration: 4\n  providers:\n    video: [sandbox-sora]\nepisodes:\n  - id: ep01\n    scenes:')
for i in range(1, n + 1):
    print(f'      - id: sc{i:04d}\n        description: "Shot {i}: the harbour at dusk."')
PY
export DRAMAQ_CONFIG="$WORK/dramaq.toml" DRAMAQ_REDIS_URL="redis://127.0.0.1:$RPORT" DRAMAQ_OUT_DIR="$WORK/out"
export DRAMAQ_SANDBOX_KEY=sk-bench DRAMAQ_SANDBOX_KLING_AK=sandbox-ak DRAMAQ_SANDBOX_KLING_SK=sandbox-sk RUST_LOG=error
"$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
"$BIN/dramaq-worker" run --concurrency "$CLAIMS" --providers sandbox-sora --no-reaper --metrics-addr off 2>/dev/null &
VICTIM=$!
PIDS+=($VICTIM)
"$BIN/dramaq-worker" reaper --providers sandbox-sora --metrics-addr off 2>/dev/null &
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
