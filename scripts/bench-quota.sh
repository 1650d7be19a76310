#!/usr/bin/env bash
# Quota utilisation across a fleet: 4 worker processes x concurrency 16 for 60 s against a
# sandbox that enforces RATE submits/s (burst BURST) per key. Reports the share of the quota
# used and the share of submit requests answered 429.
#
#   scripts/bench-quota.sh             # fleet-wide limiter (Redis GCRA) + per-process governor
#   scripts/bench-quota.sh --no-fleet  # per-process governor only, for comparison
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET=true
[ "${1:-}" = "--no-fleet" ] && FLEET=false
RATE=${RATE:-5}; BURST=${BURST:-5}; WORKERS=${WORKERS:-4}; CONC=${CONC:-16}; SECS=${SECS:-60}
SCENES=$(( RATE * (SECS + 30) ))

source scripts/bench-env.sh
start_redis
start_sandbox --render-ms 1000 --rate-per-sec "$RATE" --burst "$BURST"

sed "s#http://127.0.0.1:8787#$SANDBOX#g" examples/dramaq.toml >"$WORK/dramaq.toml"
cat >>"$WORK/dramaq.toml" <<TOML

[accounts.sandbox-sora.quota]
submit_per_sec = $RATE
burst = $BURST
fleet_wide = $FLEET
TOML
write_season bench-quota "$SCENES"
use_bench_env
run_fleet "$WORKERS" "$CONC" "$SECS"
python3 - "$WORK/stats.json" "$RATE" "$BURST" "$SECS" "$FLEET" "$WORKERS" "$CONC" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
rate, burst, secs = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
times = sorted(stats["submit_times_ms"])
t0 = times[0]
window = [t for t in times if t0 <= t < t0 + secs * 1000]
accepted = len(window)
quota = rate * secs + burst
limited = stats["rate_limited_total"]
print(f"fleet_wide={sys.argv[5]} workers={sys.argv[6]}x{sys.argv[7]} quota={rate:g}/s burst {burst} window={secs}s")
print(f"  accepted submits   {accepted}  (quota allows {quota:g})")
print(f"  quota used         {100.0 * accepted / quota:.1f} %")
print(f"  answered 429       {limited} of {limited + stats['submissions_total']} submit requests ({100.0 * limited / max(1, limited + stats['submissions_total']):.2f} %)")
PY
