#!/usr/bin/env bash
# Episode masters: the sample season's clips and voice lines are rendered first (sandbox, every
# account but assembly), then one worker serving only the assembly account builds the masters one
# at a time. Reports the assembly time per minute of episode (from the worker's "episode master
# built" lines), and, measured on each stored master with ffmpeg, its integrated loudness and true
# peak (ebur128) and how far each voice line's sound (silencedetect) is from its subtitle cue.
#
#   scripts/bench-assembly.sh
#   SCRIPT=my-season.yaml scripts/bench-assembly.sh     # any season the sandbox config can render
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT=${SCRIPT:-examples/season-sample.yaml}

source scripts/bench-env.sh
start_redis
start_sandbox --render-ms 200 --render-jitter-ms 100
sed -e "s#http://127.0.0.1:8787#$SANDBOX#g" examples/dramaq.toml >"$WORK/dramaq.toml"
use_bench_env
SEASON=$("$BIN/dramaq" enqueue "$SCRIPT" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["season"])')
RENDER_ACCOUNTS=$(python3 - "$WORK/dramaq.toml" <<'PY'
import re, sys
names = re.findall(r'^\[accounts\.([^\].]+)\]$', open(sys.argv[1]).read(), re.M)
print(",".join(n for n in names if n != "assembly"))
PY
)
"$BIN/dramaq-worker" run --concurrency 16 --accounts "$RENDER_ACCOUNTS" --metrics-addr 127.0.0.1:0 2>"$WORK/render.err" &
RENDERER=$!
PIDS+=($RENDERER)
python3 - "$BIN/dramaq" "$SEASON" <<'PY'
import json, subprocess, sys, time
dramaq, season = sys.argv[1], sys.argv[2]
while True:
    tasks = json.loads(subprocess.run([dramaq, "tasks", "--season", season, "--json"], capture_output=True, check=True).stdout)
    pending = [t for t in tasks if t["kind"] != "assembly" and t["state"] not in ("stored", "dead")]
    if not pending:
        break
    time.sleep(0.5)
PY
kill "$RENDERER"
echo "clips and voice lines rendered; building masters one at a time"
RUST_LOG="dramaq_worker::assemble=info,error" "$BIN/dramaq-worker" run --concurrency 1 --accounts assembly \
  --metrics-addr 127.0.0.1:0 2>"$WORK/assembly.err" &
PIDS+=($!)
"$BIN/dramaq" status --season "$SEASON" --wait --timeout-secs 1800 >/dev/null

python3 - "$BIN/dramaq" "$SEASON" "$WORK/assembly.err" "$WORK/out" <<'PY'
import json, re, subprocess, sys
dramaq, season, log, out = sys.argv[1:5]
text = re.sub(r'\x1b\[[0-9;]*m', '', open(log).read())
built = {e: (float(s), int(t)) for e, s, t in re.findall(r'episode master built.*?episode=(\S+).*?seconds=([\d.]+).*?took_ms=(\d+)', text)}
tasks = json.loads(subprocess.run([dramaq, "tasks", "--season", season, "--json"], capture_output=True, check=True).stdout)
def ff(args):
    return subprocess.run(["ffmpeg", "-hide_banner", "-nostats"] + args + ["-f", "null", "-"], capture_output=True, text=True).stderr
print(f"{'episode':<10} {'length s':>8} {'build s':>8} {'LUFS':>6} {'dBTP':>6} {'lines':>5} {'worst sync ms':>13}")
for t in sorted((t for t in tasks if t["kind"] == "assembly" and t["state"] == "stored"), key=lambda t: t["label"]):
    path = f'{out}/{t["output"]}'
    summary = ff(["-i", path, "-map", "0:a", "-af", "ebur128=peak=true"]).rsplit("Summary:", 1)[1]
    lufs = float(re.search(r'I:\s+(-?[\d.]+)', summary).group(1))
    peak = float(re.search(r'Peak:\s+(-?[\d.]+)', summary).group(1))
    sil = ff(["-i", path, "-map", "0:a", "-af", "silencedetect=noise=-50dB:duration=0.15"])
    onsets = [float(x) for x in re.findall(r'silence_end: ([\d.]+)', sil)]
    length = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path], capture_output=True, text=True).stdout)
    onsets = [o for o in onsets if o < length - 0.05]
    srt = open(path[:-4] + ".srt").read()
    cues = [int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in re.findall(r'(\d+):(\d+):(\d+),(\d+) -->', srt)]
    worst = max((abs(a - b) for a, b in zip(onsets, cues)), default=0.0) if len(onsets) == len(cues) else float("nan")
    took_s = built.get(t["group"], (0, float("nan")))[1] / 1000
    print(f'{t["group"]:<10} {length:>8.2f} {took_s:>8.2f} {lufs:>6.1f} {peak:>6.1f} {len(cues):>5} {worst * 1000:>13.1f}')
secs = sum(s for s, _ in built.values())
took = sum(t for _, t in built.values()) / 1000
print(f"{len(built)} masters, {secs:.1f} s of episode built in {took:.1f} s: {took / secs * 60:.1f} s of assembly per minute of episode")
print("(machine: %s cores, load average %s)" % (subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(), open("/proc/loadavg").read().split()[0]))
PY
