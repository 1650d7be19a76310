#!/usr/bin/env bash
# Run the sample season end to end on the built-in sandbox provider:
# build, start a throwaway redis-server (unless DRAMAQ_REDIS_URL is set), start the sandbox and
# two workers, enqueue examples/season-sample.yaml, wait until every task is stored, and list the
# stored files. Outputs land in $DRAMAQ_OUT_DIR (default: out/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

# Episode masters need ffmpeg (ffprobe also checks every downloaded clip) and a CJK-capable font
# for subtitles.
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "installing ffmpeg and fonts-wqy-zenhei (episode masters, clip probes, CJK subtitles)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    ffmpeg fonts-wqy-zenhei fontconfig >/dev/null
fi

cargo build --release --bins --quiet
BIN=target/release
WORK=$(mktemp -d -t dramaq-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % 20000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

if [ -z "${DRAMAQ_REDIS_URL:-}" ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is not installed: run 'sudo apt-get install -y redis-server' (or set DRAMAQ_REDIS_URL to a running Redis)" >&2
    exit 1
  fi
  PORT=$(free_port)
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  export DRAMAQ_REDIS_URL="redis://127.0.0.1:$PORT"
  for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "throwaway redis-server on $DRAMAQ_REDIS_URL"
fi

"$BIN/dramaq-sandbox" --addr 127.0.0.1:0 --render-ms 3000 --render-jitter-ms 2000 >"$WORK/sandbox.out" 2>"$WORK/sandbox.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/sandbox.out" ] && break; sleep 0.05; done
SANDBOX_URL=$(awk '{print $NF; exit}' "$WORK/sandbox.out")
echo "sandbox provider on $SANDBOX_URL"

sed "s#http://127.0.0.1:8787#$SANDBOX_URL#g" examples/dramaq.toml >"$WORK/dramaq.toml"
export DRAMAQ_CONFIG="$WORK/dramaq.toml"
export DRAMAQ_OUT_DIR="${DRAMAQ_OUT_DIR:-$PWD/out/demo}"
export DRAMAQ_SANDBOX_KEY=sk-sandbox-demo DRAMAQ_SANDBOX_KLING_AK=sandbox-ak DRAMAQ_SANDBOX_KLING_SK=sandbox-sk

"$BIN/dramaq" plan examples/season-sample.yaml | tail -n 11
"$BIN/dramaq" enqueue examples/season-sample.yaml
for n in 1 2; do
  "$BIN/dramaq-worker" run --concurrency 8 --metrics-addr 127.0.0.1:0 2>"$WORK/worker-$n.log" &
  PIDS+=($!)
done
echo "two workers running; waiting for the season (renders take 3-5 s each on the sandbox)..."
"$BIN/dramaq" status --season moonlit-harbor --wait --timeout-secs 600
"$BIN/dramaq" tasks --season moonlit-harbor
echo "episode 1's folder (master .mp4, .srt/.vtt subtitles, posters and contact sheet beside the clips):"
ls -l "$DRAMAQ_OUT_DIR/moonlit-harbor/ep01"
echo
echo "stored files under $DRAMAQ_OUT_DIR:"
find "$DRAMAQ_OUT_DIR/moonlit-harbor" -type f | sort
