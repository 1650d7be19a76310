#!/usr/bin/env bash
# What making the submit record durable costs: the no-op lifecycle (`dramaq-worker bench`, the
# real claim → mark_submitting → submit → complete path) against throwaway servers with
#   1. AOF appendfsync everysec, durable_submit none  (the deploy default)
#   2. AOF appendfsync always,   durable_submit none  (every write fsynced)
#   3. AOF everysec + one replica, durable_submit replica (WAIT 1 per batch of submits)
# WAITAOF (durable_submit fsync) needs Redis 7.2; on an older server that row says so.
#
#   scripts/bench-durability.sh            # TASKS=20000 CONCURRENCY=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-env.sh
TASKS=${TASKS:-20000}
CONCURRENCY=${CONCURRENCY:-64}

server() { # PORT DIR EXTRA…
  local p=$1 d=$2; shift 2
  mkdir -p "$d"
  redis-server --port "$p" --bind 127.0.0.1 --save "" --dir "$d" "$@" >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
}
bench() { # URL DURABILITY
  "$BIN/dramaq-worker" bench --tasks "$TASKS" --concurrency "$CONCURRENCY" --redis-url "$1" \
    --durable-submit "$2" --json 2>&1 | python3 -c 'import json,sys
t=sys.stdin.read()
try:
    print("%10.0f tasks/s" % json.loads(t)["lifecycle_tasks_per_sec"])
except Exception:
    why = [l for l in t.splitlines() if "durable_submit" in l or "Error" in l] or [t.strip()]
    print("   refused: " + why[0].strip()[:150])'
}

printf '%-52s %s\n' "setting" "no-op lifecycle"
P1=$(port); server "$P1" "$WORK/r1" --appendonly yes --appendfsync everysec
printf '%-52s ' "appendfsync everysec, durable_submit none"; bench "redis://127.0.0.1:$P1" none
P2=$(port); server "$P2" "$WORK/r2" --appendonly yes --appendfsync always
printf '%-52s ' "appendfsync always, durable_submit none"; bench "redis://127.0.0.1:$P2" none
P3=$(port); server "$P3" "$WORK/r3" --appendonly yes --appendfsync everysec
P4=$(port); server "$P4" "$WORK/r4" --appendonly no --replicaof 127.0.0.1 "$P3"
for _ in $(seq 50); do redis-cli -p "$P4" info replication | grep -q 'master_link_status:up' && break; sleep 0.1; done
printf '%-52s ' "everysec + 1 replica, durable_submit replica"; bench "redis://127.0.0.1:$P3" replica
printf '%-52s ' "appendfsync everysec, durable_submit fsync"; bench "redis://127.0.0.1:$P1" fsync
