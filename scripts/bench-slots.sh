#!/usr/bin/env bash
# Render-slot utilization: RENDERS video scenes through one `dramaq-worker` to a sandbox that
# allows SLOTS renders at once per key (the account's quota.max_concurrent is the same), with
# renders of RENDER_MS + up to JITTER_MS (default 6-9 s: 120-180 s scaled down 20x). Polling
# follows the account's learned render times (a short warm-up season of WARMUP renders first,
# so the histogram is learned as it would be in production).
#
# Reports, from the sandbox's own clock:
#   slot utilization  Σ render time / Σ (submit → first status answer reporting it finished):
#                     of the time dramaq held a provider slot, the share the render really ran
#   polls per render  status requests / renders
#   found late        finish → first answer reporting it, p50 / p99
#   makespan          first submit → last render stored, against its lower bound
#                     Σ render time / SLOTS (no schedule can finish sooner with SLOTS slots)
#
#   scripts/bench-slots.sh                      # polls only (sandbox-sora, OpenAI shape)
#   POINTS=10 scripts/bench-slots.sh            # the account's poll_points (default 5)
#   CALLBACKS=1 scripts/bench-slots.sh          # Replicate shape, signed callbacks as triggers
#   CALLBACKS=fal scripts/bench-slots.sh        # fal shape, ED25519-signed callbacks
#   CALLBACKS=1 LOST=0.1 BAD=0.05 REPLAY=1 scripts/bench-slots.sh
#                                   # 10 % lost, 5 % badly signed, every one delivered twice
set -euo pipefail
cd "$(dirname "$0")/.."
RENDERS=${RENDERS:-400}; WARMUP=${WARMUP:-60}; SLOTS=${SLOTS:-16}
RENDER_MS=${RENDER_MS:-6000}; JITTER_MS=${JITTER_MS:-3000}
CALLBACKS=${CALLBACKS:-0}; LOST=${LOST:-0}; REPLAY=${REPLAY:-0}; BAD=${BAD:-0}; POINTS=${POINTS:-5}
case "$CALLBACKS" in 0|1|fal) ;; *) echo "CALLBACKS must be 0, 1 or fal, not '$CALLBACKS'" >&2; exit 2 ;; esac
SECRET=whsec_YmVuY2gtc2xvdHMtc2lnbmluZy1rZXk=

source scripts/bench-env.sh
start_redis
SANDBOX_ARGS=(--render-ms "$RENDER_MS" --render-jitter-ms "$JITTER_MS" --max-concurrent "$SLOTS")
if [ "$CALLBACKS" != 0 ]; then
  SANDBOX_ARGS+=(--webhook-secret "$SECRET" --webhook-lost-rate "$LOST" --webhook-bad-signature-rate "$BAD")
  [ "$REPLAY" = 1 ] && SANDBOX_ARGS+=(--webhook-replay)
fi
start_sandbox "${SANDBOX_ARGS[@]}"
HOOK_PORT=$(port)
if [ "$CALLBACKS" = 1 ]; then
  ACCOUNT=sandbox-replicate
  ACCOUNT_TOML="family = \"replicate\"
base_url = \"$SANDBOX/replicate\"
model = \"kwaivgi/kling-v2.1\"
callback_url = \"http://127.0.0.1:$HOOK_PORT/hooks/sandbox-replicate\"
webhook_secret_env = \"DRAMAQ_BENCH_WEBHOOK_SECRET\""
elif [ "$CALLBACKS" = fal ]; then
  ACCOUNT=sandbox-fal
  ACCOUNT_TOML="family = \"fal\"
base_url = \"$SANDBOX/fal\"
model = \"fal-ai/kling-video/v2.1/standard/text-to-video\"
callback_url = \"http://127.0.0.1:$HOOK_PORT/hooks/sandbox-fal\"
webhook_jwks_url = \"$SANDBOX/fal-rest/.well-known/jwks.json\""
else
  ACCOUNT=sandbox-sora
  ACCOUNT_TOML="family = \"openai-videos\"
base_url = \"$SANDBOX/openai\"
model = \"sora-2\""
fi
worker_config_head "$HOOK_PORT" >"$WORK/dramaq.toml"
cat >>"$WORK/dramaq.toml" <<EOF
[accounts.$ACCOUNT]
$ACCOUNT_TOML
api_key_env = "DRAMAQ_SANDBOX_KEY"
poll_first_ms = 250
poll_max_ms = 1000
poll_points = $POINTS
quota = { max_concurrent = $SLOTS }
EOF
export DRAMAQ_BENCH_WEBHOOK_SECRET=$SECRET
use_bench_env
MPORT=$(port)
"$BIN/dramaq-worker" run --concurrency 64 --metrics-addr "127.0.0.1:$MPORT" 2>"$WORK/worker.err" &
PIDS+=($!)

# The warm-up season teaches the account its render times; then the measured season runs.
run_season() {
  write_season "$1" "$2" 8
  # Replicate's and fal's Kling models render 5 or 10 s clips.
  [ "$CALLBACKS" != 0 ] && sed -i -e "s/sandbox-sora/$ACCOUNT/" -e "s/^  duration: 4/  duration: 5/" "$WORK/season.yaml"
  "$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
  "$BIN/dramaq" status --season "$1" --wait >/dev/null 2>&1 || true
}
run_season bench-warmup "$WARMUP"
curl -fsS -X POST "$SANDBOX/admin/reset" >/dev/null
echo "$RENDERS renders of $((RENDER_MS / 1000))-$(((RENDER_MS + JITTER_MS) / 1000)) s on $SLOTS slots ($ACCOUNT, callbacks: $([ "$CALLBACKS" != 0 ] && echo "on, lost $LOST, badly signed $BAD, replayed $REPLAY" || echo off))"
START=$(date +%s.%N)
run_season bench-slots "$RENDERS"
END=$(date +%s.%N)
curl -fsS "$SANDBOX/admin/stats" >"$WORK/stats.json"
python3 - "$WORK/stats.json" "$START" "$END" "$SLOTS" "$RENDERS" "$BIN/dramaq" <<'PY'
import json, subprocess, sys
s = json.load(open(sys.argv[1]))
start, end, slots, renders = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
st = json.loads(subprocess.run([sys.argv[6], "status", "--season", "bench-slots", "--json"], capture_output=True, check=True).stdout)
seen = s["renders_seen_finished"]
late = sorted(s["seen_late_ms"]) or [0]
q = lambda p: late[min(len(late) - 1, int(p * len(late)))]
util = s["render_ms_total"] / max(s["held_ms_total"], 1)
bound = s["render_ms_total"] / 1000 / slots
# First submit to the last render seen finished, on the sandbox's clock.
makespan = (s["last_seen_finished_ms"] - min(s["submit_times_ms"] or [0])) / 1000
print(f"  stored              {st['stored']} tasks ({renders} renders and their episodes); renders the sandbox saw found finished: {seen}")
print(f"  slot utilization    {util:.2%} (target ≥ 97 %)")
print(f"  polls per render    {s['status_polls'] / max(seen, 1):.2f} (target ≤ 3 without callbacks, ≤ 2 with)")
print(f"  found late          p50 {q(0.5)} ms, p99 {q(0.99)} ms after the render finished")
print(f"  makespan            {makespan:.1f} s from first submit to last render found finished; lower bound Σ render / slots = {bound:.1f} s ({makespan / max(bound, 1e-9) - 1:+.1%}); whole run {end - start:.1f} s")
if s.get("callbacks_sent") or s.get("callbacks_lost"):
    print(f"  callbacks           sent {s['callbacks_sent']}, refused {s['callbacks_refused']}, lost {s['callbacks_lost']}")
PY
