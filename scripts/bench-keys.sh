#!/usr/bin/env bash
# Key pool utilisation: one account with three API keys of different quotas, WORKERS worker
# processes x concurrency CONC for SECS seconds, against a sandbox enforcing each key's own rate.
# Reports, per key, the share of its quota used and its 429s, and the pool's total.
#
#   scripts/bench-keys.sh                 # keys at 2/s, 4/s and 1/s (bursts 2, 4, 2)
#   SECS=30 WORKERS=4 scripts/bench-keys.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-4}; CONC=${CONC:-16}; SECS=${SECS:-60}
# name:rate:burst of each key; the sandbox gives each the same limits.
KEYS=(k1:2:2 k2:4:4 k3:1:2)
TOTAL=0; for k in "${KEYS[@]}"; do IFS=: read -r _ r _ <<<"$k"; TOTAL=$(( TOTAL + r )); done
SCENES=$(( TOTAL * (SECS + 30) ))

source scripts/bench-env.sh
start_redis
LIMITS=(); for k in "${KEYS[@]}"; do IFS=: read -r n r b <<<"$k"; LIMITS+=(--key-limit "sk-bench-$n=$r:$b:-"); done
start_sandbox --render-ms 1000 "${LIMITS[@]}"

sed "s#http://127.0.0.1:8787#$SANDBOX#g" examples/dramaq.toml >"$WORK/dramaq.toml"
for k in "${KEYS[@]}"; do
  IFS=: read -r n r b <<<"$k"
  cat >>"$WORK/dramaq.toml" <<TOML

[[accounts.sandbox-sora.keys]]
name = "$n"
api_key_env = "BENCH_KEY_$n"
quota = { submit_per_sec = $r, burst = $b }
TOML
  export "BENCH_KEY_$n=sk-bench-$n"
done
write_season bench-keys "$SCENES"
use_bench_env
run_fleet "$WORKERS" "$CONC" "$SECS"
python3 - "$WORK/stats.json" "$SECS" "$WORKERS" "$CONC" "${KEYS[@]}" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
secs, workers, conc = int(sys.argv[2]), sys.argv[3], sys.argv[4]
keys = [k.split(":") for k in sys.argv[5:]]
t0 = min(min(v["submit_times_ms"]) for v in stats["by_key"].values() if v["submit_times_ms"])
print(f"workers={workers}x{conc} window={secs}s keys={len(keys)}")
used_all = quota_all = 0
for name, rate, burst in keys:
    k = stats["by_key"].get(f"sk-bench-{name}", {})
    times = [t for t in k.get("submit_times_ms", []) if t0 <= t < t0 + secs * 1000]
    quota = float(rate) * secs + int(burst)
    used_all += len(times); quota_all += quota
    print(f"  key {name}: {float(rate):g}/s burst {burst}  accepted {len(times)} of {quota:g}  "
          f"used {100.0 * len(times) / quota:.1f} %  429s {k.get('rate_limited', 0)}")
print(f"  pool: accepted {used_all} of {quota_all:g}  used {100.0 * used_all / quota_all:.1f} %")
PY
