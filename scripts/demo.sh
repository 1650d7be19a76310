#!/usr/bin/env bash
# Run a season end to end on the built-in sandbox provider:
# build, start a throwaway redis-server (unless DRAMAQ_REDIS_URL is set), start the sandbox and
# two workers, enqueue examples/season-sample.yaml, wait until every task is stored, and list the
# stored files. Outputs land in $DRAMAQ_OUT_DIR (default: out/demo).
#
#   ./scripts/demo.sh                                   the sample season
#   ./scripts/demo.sh --premise "..." [--episodes N]    the whole pipeline: `dramaq generate`
#       writes the season from the premise on the sandbox's chat endpoint, then it is planned,
#       enqueued and rendered like the sample (the script is kept under $DRAMAQ_OUT_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

PREMISE=""
EPISODES=3
while [ $# -gt 0 ]; do
  case "$1" in
    --premise) PREMISE="${2:?--premise needs a text}"; shift 2 ;;
    --episodes) EPISODES="${2:?--episodes needs a number}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

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

for n in 1 2; do
  "$BIN/dramaq-worker" run --concurrency 8 --metrics-addr 127.0.0.1:0 2>"$WORK/worker-$n.log" &
  PIDS+=($!)
done
echo "two workers running"

SCRIPT=examples/season-sample.yaml
SEASON=moonlit-harbor
if [ -n "$PREMISE" ]; then
  mkdir -p "$DRAMAQ_OUT_DIR"
  SCRIPT="$DRAMAQ_OUT_DIR/generated-season.yaml"
  echo "writing a $EPISODES-episode season from the premise (sandbox chat endpoint)..."
  "$BIN/dramaq" generate --premise "$PREMISE" --episodes "$EPISODES" --scenes-per-episode 3 \
    --characters 3 --llm sandbox-llm --video sandbox-sora --out "$SCRIPT"
  SEASON=$(awk -F'"' '/^id: /{print $2; exit}' "$SCRIPT")
fi

"$BIN/dramaq" plan "$SCRIPT" | tail -n 11
"$BIN/dramaq" enqueue "$SCRIPT"
echo "waiting for the season (renders take 3-5 s each on the sandbox)..."
"$BIN/dramaq" status --season "$SEASON" --wait --timeout-secs 900
"$BIN/dramaq" tasks --season "$SEASON"
echo "episode 1's folder (master .mp4, .srt/.vtt subtitles, posters and contact sheet beside the clips):"
ls -l "$DRAMAQ_OUT_DIR/$SEASON/ep01"
echo
if [ -n "$PREMISE" ]; then echo "season script: $SCRIPT"; fi
echo "stored files under $DRAMAQ_OUT_DIR:"
find "$DRAMAQ_OUT_DIR/$SEASON" -type f | sort
