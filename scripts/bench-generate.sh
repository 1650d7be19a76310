#!/usr/bin/env bash
# Script generation on the sandbox: time to write a season of EPISODES (default 100) episodes
# with 2 workers, chat calls and tokens per generated episode, and the repair loop's success
# rate over the sandbox's drift scenarios (chat_drift: every episode's first answer is wrong;
# chat_drift_forever: episode 2 stays wrong whatever it is told).
#
#   scripts/bench-generate.sh [EPISODES=100 SCENES=6 CHARACTERS=4 DRIFT_EPISODES=20]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh

EPISODES=${EPISODES:-100}
SCENES=${SCENES:-6}
CHARACTERS=${CHARACTERS:-4}
DRIFT_EPISODES=${DRIFT_EPISODES:-20}

start_redis
start_sandbox --render-ms 1000
sed "s#http://127.0.0.1:8787#$SANDBOX#g" examples/dramaq.toml >"$WORK/dramaq.toml"
use_bench_env
for n in 1 2; do
  "$BIN/dramaq-worker" run --accounts sandbox-llm --concurrency 16 --metrics-addr 127.0.0.1:0 2>>"$WORK/workers.log" &
  PIDS+=($!)
done

gen() { # premise episodes → JSON report on stdout (exit code kept in $WORK/rc)
  set +e
  "$BIN/dramaq" --json generate --premise "$1" --episodes "$2" --scenes-per-episode "$SCENES" \
    --characters "$CHARACTERS" --llm sandbox-llm --video sandbox-sora --out "$WORK/$RANDOM.yaml" 2>>"$WORK/generate.log"
  echo $? >"$WORK/rc"
  set -e
}
chat_calls() { curl -s "$SANDBOX/admin/chat" | python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"])'; }

start=$(date +%s.%N)
REPORT=$(gen "A poor boy and a rich girl, love across class lines; twist in ep 10" "$EPISODES")
end=$(date +%s.%N)
CALLS=$(chat_calls)
python3 - "$REPORT" "$start" "$end" "$EPISODES" "$CALLS" <<'PY'
import json, sys
r, start, end, n, calls = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
u = r["usage"]
print(f"season of {n} episodes, 2 workers: {end - start:.1f} s wall, {len(r['missing'])} missing")
print(f"chat calls: {u['calls']} paid ({calls} seen by the sandbox) = {u['calls'] / n:.2f} per episode (outline included)")
print(f"tokens: {u['input_tokens']} input ({u['cached_tokens']} cached) + {u['output_tokens']} output"
      f" = {(u['input_tokens'] + u['output_tokens']) / n:.0f} per episode; cost ${u['cost_usd']:.4f} at the example prices")
PY

before=$(chat_calls)
gen "A poor boy and a rich girl, love across class lines; twist in ep 10" "$EPISODES" >/dev/null
echo "re-run of the same command: $(( $(chat_calls) - before )) chat calls"

DRIFT=$(gen "Drift [sandbox:chat_drift]" "$DRIFT_EPISODES")
FOREVER=$(gen "Drift forever [sandbox:chat_drift_forever]" "$DRIFT_EPISODES")
python3 - "$DRIFT" "$FOREVER" "$DRIFT_EPISODES" <<'PY'
import json, sys
drift, forever, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
# chat_drift: all n first answers are wrong; chat_drift_forever: one episode (ep02) is.
drifted = n + 1
repaired = (n - len(drift["missing"])) + (1 - len(forever["missing"]))
print(f"repair loop: {repaired} of {drifted} drifted episodes repaired ({100 * repaired / drifted:.1f} %);"
      f" chat_drift used {drift['usage']['calls']} calls for {n} episodes + outline,"
      f" chat_drift_forever left {forever['missing']} missing")
PY
