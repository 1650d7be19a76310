#!/usr/bin/env bash
# Renders awaited by one worker process: RENDERS video tasks are submitted through one
# `dramaq-worker` to a sandbox that renders for RENDER_MS (+ up to JITTER_MS), so all of them are
# in flight at once while the worker polls them on the default cadence (first poll after 5 s,
# backing off to 20 s, ±25 %). Reports the peak number in flight, the worker's resident memory
# (peak and at the end), the poll rate, and poll lateness (request sent − poll due) from the
# worker's dramaq_poll_lateness_seconds histogram. Polls follow the account's learned render
# times, so a warm-up season of WARMUP renders (default 100) runs first, as an account's history
# would in production; the polls reported (and per render) are those of the measured season.
# WARMUP=0 shows the fixed cadence alone until 20 renders have finished.
#
#   scripts/bench-await.sh                          # 10,000 renders of 120-180 s
#   RENDERS=20000 RENDER_MS=180000 scripts/bench-await.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RENDERS=${RENDERS:-10000}; RENDER_MS=${RENDER_MS:-120000}; JITTER_MS=${JITTER_MS:-60000}
POLL_FIRST_MS=${POLL_FIRST_MS:-5000}; POLL_MAX_MS=${POLL_MAX_MS:-20000}
# Empty: the config defaults (worker.poll_concurrency, redis.pool_size).
POLL_CONCURRENCY=${POLL_CONCURRENCY:-}; POOL_SIZE=${POOL_SIZE:-}
PER_EPISODE=100
WARMUP=${WARMUP:-100}

source scripts/bench-env.sh
start_redis
start_sandbox --render-ms "$RENDER_MS" --render-jitter-ms "$JITTER_MS"

sed -e "s#http://127.0.0.1:8787#$SANDBOX#g" \
    -e "s/^poll_first_ms = .*/poll_first_ms = $POLL_FIRST_MS/" \
    -e "s/^poll_max_ms = .*/poll_max_ms = $POLL_MAX_MS/" \
    -e "s/^ffmpeg = true/ffmpeg = false/" \
    ${POLL_CONCURRENCY:+-e "s/^max_attempts = .*/&\npoll_concurrency = $POLL_CONCURRENCY/"} \
    ${POOL_SIZE:+-e "s#^url = \"redis://.*#&\npool_size = $POOL_SIZE#"} \
    examples/dramaq.toml >"$WORK/dramaq.toml"
use_bench_env
MPORT=$(port)
"$BIN/dramaq-worker" run --concurrency 64 --metrics-addr "127.0.0.1:$MPORT" 2>"$WORK/worker.err" &
WORKER=$!
PIDS+=($WORKER)
if [ "$WARMUP" -gt 0 ]; then
  echo "warm-up: $WARMUP renders teach the account its render times"
  write_season bench-await-warmup "$WARMUP" "$PER_EPISODE"
  "$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
  "$BIN/dramaq" status --season bench-await-warmup --wait >/dev/null
  curl -fsS -X POST "$SANDBOX/admin/reset" >/dev/null
fi
write_season bench-await "$RENDERS" "$PER_EPISODE"
"$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
echo "$RENDERS renders of $((RENDER_MS / 1000))-$(((RENDER_MS + JITTER_MS) / 1000)) s, one worker (pid $WORKER), polls near the learned finish (fixed cadence until learned: $((POLL_FIRST_MS / 1000))-$((POLL_MAX_MS / 1000)) s)"

python3 - "$WORKER" "$MPORT" "$BIN/dramaq" "$RENDERS" "$SANDBOX" <<'PY'
import json, re, subprocess, sys, time, urllib.request
pid, mport, dramaq, renders, sandbox = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]

def rss_kib(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def status():
    out = subprocess.run([dramaq, "status", "--season", "bench-await", "--json"], capture_output=True, check=True)
    return json.loads(out.stdout)

def metrics():
    return urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()

def polls(text):
    return sum(float(v) for labels, v in re.findall(r'^dramaq_provider_requests_total\{([^}]*)\} (\S+)$', text, re.M)
               if 'account="sandbox-sora"' in labels and 'operation="poll"' in labels)

start = time.time()
peak_in_flight, peak_at = 0, 0.0
poll_marks = []
while True:
    st = status()
    in_flight = st["rendering"] + st["downloading"]
    if in_flight > peak_in_flight:
        peak_in_flight, peak_at = in_flight, time.time() - start
    poll_marks.append((time.time(), polls(metrics())))
    if st["stored"] >= renders:
        break
    time.sleep(1)
elapsed = time.time() - start
text = metrics()
buckets = []
for labels, v in re.findall(r'^dramaq_poll_lateness_seconds_bucket\{([^}]*)\} (\S+)$', text, re.M):
    le = re.search(r'le="([^"]+)"', labels).group(1)
    if 'account="sandbox-sora"' in labels:
        buckets.append((float("inf") if le == "+Inf" else float(le), float(v)))
buckets.sort()
total = buckets[-1][1] if buckets else 0

def quantile(q):
    want, prev_le, prev_n = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= want:
            if le == float("inf"):
                return float("inf")
            return prev_le + (le - prev_le) * (want - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return float("nan")

def share_within(limit):
    return next((n for le, n in buckets if le == limit), 0) / max(total, 1)

(t0, p0), (t1, p1) = poll_marks[0], poll_marks[-1]
print(f"  peak in flight      {peak_in_flight} renders at once (reached after {peak_at:.0f} s); all {renders} stored after {elapsed:.0f} s")
print(f"  worker RSS          peak {rss_kib('VmHWM') / 1024:.1f} MiB, at the end {rss_kib('VmRSS') / 1024:.1f} MiB (target ≤ 150 MB)")
print(f"  polls               {int(p1 - p0)} in {t1 - t0:.0f} s = {(p1 - p0) / max(t1 - t0, 1e-9):.0f}/s, "
      f"{(p1 - p0) / renders:.2f} per render (target ≤ 3)")
print(f"  poll lateness       {int(total)} polls: p50 {quantile(0.5) * 1000:.0f} ms, p99 {quantile(0.99) * 1000:.0f} ms "
      f"(interpolated in buckets); ≤250 ms {share_within(0.25):.2%}, ≤1 s {share_within(1.0):.2%} (target p99 ≤ 1 s)")
sb = json.loads(urllib.request.urlopen(f"{sandbox}/admin/stats", timeout=30).read())
late = sorted(sb["seen_late_ms"]) or [0]
print(f"  found finished      p50 {late[len(late) // 2] / 1000:.1f} s, p99 {late[min(len(late) - 1, int(0.99 * len(late)))] / 1000:.1f} s after the render ended; "
      f"slot utilization {sb['render_ms_total'] / max(sb['held_ms_total'], 1):.2%} (sandbox clock)")
PY
