# Shared set-up of the bench-*.sh scripts (sourced, not run): release binaries (or debug ones
# with BENCH_PROFILE=debug), a scratch folder
# removed on exit with every process started here, a throwaway redis-server and sandbox on free
# ports, a generated season of video scenes, and the environment the dramaq binaries read.
#
#   source scripts/bench-env.sh        # after `set -euo pipefail` at the repository root
#   start_redis; start_sandbox --render-ms 1000 …; write_season ID SCENES [PER_EPISODE]
#   sed … examples/dramaq.toml >"$WORK/dramaq.toml"; use_bench_env
#   (or worker_config_head HOOK_PORT >"$WORK/dramaq.toml", then the accounts)
#
# Defines BIN, WORK, PIDS (append background pids), RPORT, SANDBOX and port().

# BENCH_PROFILE=debug measures the debug build instead (no release build needed; slower, and
# say so next to any figure taken that way).
if [ "${BENCH_PROFILE:-release}" = debug ]; then
  cargo build --bins --quiet
  BIN=target/debug
else
  cargo build --release --bins --quiet
  BIN=target/release
fi
WORK=$(mktemp -d -t dramaq-bench.XXXXXX)
PIDS=()
# stderr goes quiet first: bash would report every process killed here.
cleanup() { exec 2>/dev/null; for p in "${PIDS[@]}"; do kill -9 "$p" || true; done; wait || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_redis() {
  RPORT=$(port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# Arguments go to dramaq-sandbox (render time, limits, …).
start_sandbox() {
  "$BIN/dramaq-sandbox" --addr 127.0.0.1:0 "$@" >"$WORK/sandbox.out" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/sandbox.out" ] && break; sleep 0.05; done
  SANDBOX=$(awk '{print $NF; exit}' "$WORK/sandbox.out")
}

# $WORK/season.yaml: season ID with SCENES video scenes on sandbox-sora, PER_EPISODE per episode.
write_season() {
  python3 - "$1" "$2" "${3:-$2}" >"$WORK/season.yaml" <<'PY'
import sys
season, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f'id: {season}\ntitle: "Benchmark {season}"\ndefaults:\n  aspect_ratio: "9:16"\n  resolution: "720p"\n  duration: 4\n  providers:\n    video: [sandbox-sora]\nepisodes:')
for e in range((n + per - 1) // per):
    print(f'  - id: ep{e + 1:03d}\n    scenes:')
    for c in range(min(per, n - e * per)):
        print(f'      - id: sc{c + 1:04d}\n        description: "Episode {e + 1}, shot {c + 1}: the harbour at dusk."')
PY
}

# The head of a one-worker bench config: Redis, storage, a 64-slot worker with its callback
# receiver on 127.0.0.1:$1, assembly as a manifest. Accounts follow it.
worker_config_head() {
  cat <<EOF
[redis]
url = "redis://127.0.0.1:$RPORT"
[storage]
dir = "$WORK/out"
[worker]
concurrency = 64
lease_ms = 15000
heartbeat_ms = 5000
webhook_addr = "127.0.0.1:$1"
[assembly]
ffmpeg = false
EOF
}

# The environment of every dramaq process started afterwards (config written to $WORK first).
use_bench_env() {
  export DRAMAQ_CONFIG="$WORK/dramaq.toml" DRAMAQ_REDIS_URL="redis://127.0.0.1:$RPORT" DRAMAQ_OUT_DIR="$WORK/out"
  export DRAMAQ_SANDBOX_KEY=sk-bench DRAMAQ_SANDBOX_KLING_AK=sandbox-ak DRAMAQ_SANDBOX_KLING_SK=sandbox-sk RUST_LOG=error
}

# Enqueue $WORK/season.yaml, run WORKERS worker processes x CONC on sandbox-sora for SECS (+5)
# seconds, then save the sandbox's counters to $WORK/stats.json.
run_fleet() {
  local workers=$1 conc=$2 secs=$3
  "$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
  for _ in $(seq "$workers"); do
    "$BIN/dramaq-worker" run --concurrency "$conc" --accounts sandbox-sora --metrics-addr off 2>/dev/null &
    PIDS+=($!)
  done
  sleep $(( secs + 5 ))
  python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('$SANDBOX/admin/stats').read().decode())" >"$WORK/stats.json"
}
