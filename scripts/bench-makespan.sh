#!/usr/bin/env bash
# Season makespan against its lower bound, on a season shaped like a real one: 12 episodes x 8
# scenes, 4 characters whose sheets (sandbox-image, synchronous) every scene starts from
# (image-to-video with the character's sheet as first frame), the scenes split between two video
# accounts with different limits (sandbox-fal: 10 renders at once; sandbox-kling: 6), each
# episode assembled (manifest) once its scenes are stored. Renders take RENDER_MS + up to
# JITTER_MS (default 6-9 s: 120-180 s scaled down 20x). A warm-up season of WARMUP scenes
# (default 64: 40 on fal, 24 on Kling) first teaches both accounts their render times (an
# account polls at its learned render times once 20 renders finished).
#
# Lower bound (no schedule can finish sooner): each video account renders at most its limit at
# once, so the season takes at least max over the video accounts of (Σ its render time / its
# limit). The sheets (synchronous, milliseconds here) are left out of it, so the bound is a
# little low and the figure a little pessimistic; the time to the first scene submit (a sheet
# stored and its scenes told) is printed beside it.
# The makespan is measured on the sandbox's clock from the first submit (a sheet) to the last
# render found finished; the download and the last episode's assembly (a manifest here) add
# milliseconds after it.
#
#   scripts/bench-makespan.sh                 # callbacks on (fal signed, Kling unsigned)
#   CALLBACKS=0 scripts/bench-makespan.sh     # polls only, at the learned render times
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-12}; SCENES=${SCENES:-8}; WARMUP=${WARMUP:-64}
FAL_SLOTS=${FAL_SLOTS:-10}; KLING_SLOTS=${KLING_SLOTS:-6}
RENDER_MS=${RENDER_MS:-6000}; JITTER_MS=${JITTER_MS:-3000}; CALLBACKS=${CALLBACKS:-1}

source scripts/bench-env.sh
start_redis
start_sandbox --render-ms "$RENDER_MS" --render-jitter-ms "$JITTER_MS" \
  --max-concurrent "$(( FAL_SLOTS > KLING_SLOTS ? FAL_SLOTS : KLING_SLOTS ))"
HOOK_PORT=$(port)
FAL_HOOKS=""; KLING_HOOKS=""
if [ "$CALLBACKS" = 1 ]; then
  FAL_HOOKS="callback_url = \"http://127.0.0.1:$HOOK_PORT/hooks/sandbox-fal\"
webhook_jwks_url = \"$SANDBOX/fal-rest/.well-known/jwks.json\""
  KLING_HOOKS="callback_url = \"http://127.0.0.1:$HOOK_PORT/hooks/sandbox-kling\""
fi
worker_config_head "$HOOK_PORT" >"$WORK/dramaq.toml"
cat >>"$WORK/dramaq.toml" <<EOF
[accounts.sandbox-image]
family = "openai-images"
base_url = "$SANDBOX/openai"
model = "gpt-image-1"
api_key_env = "DRAMAQ_BENCH_IMAGE_KEY"
[accounts.sandbox-fal]
family = "fal"
base_url = "$SANDBOX/fal"
model = "fal-ai/kling-video/v2.1/standard/image-to-video"
api_key_env = "DRAMAQ_SANDBOX_KEY"
poll_first_ms = 250
poll_max_ms = 1000
quota = { max_concurrent = $FAL_SLOTS }
$FAL_HOOKS
[accounts.sandbox-kling]
family = "kling"
base_url = "$SANDBOX/kling"
model = "kling-v2-6"
api_key_env = "DRAMAQ_SANDBOX_KLING_AK"
secret_key_env = "DRAMAQ_SANDBOX_KLING_SK"
durations = [5, 10]
poll_first_ms = 250
poll_max_ms = 1000
quota = { max_concurrent = $KLING_SLOTS }
$KLING_HOOKS
EOF
use_bench_env
# The sheets get a key of their own, so the sandbox counts each account's renders apart.
export DRAMAQ_BENCH_IMAGE_KEY=sk-bench-image
MPORT=$(port)
"$BIN/dramaq-worker" run --concurrency 64 --metrics-addr "127.0.0.1:$MPORT" 2>"$WORK/worker.err" &
PIDS+=($!)

# A season: characters first, then each scene on the account its place picks, so that both
# accounts have about the same work per slot (5 of every 8 scenes on fal's 10 slots, 3 on
# Kling's 6).
season() {
  python3 - "$1" "$2" "$3" >"$WORK/season.yaml" <<'PY'
import sys
season, episodes, scenes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = ["Mira", "Jun", "Tomas", "Lan"]
print(f'id: {season}\ntitle: "Makespan {season}"\ndefaults:\n  aspect_ratio: "9:16"\n  resolution: "720p"\n  duration: 5\n  providers:\n    image: [sandbox-image]\n    video: [sandbox-fal]\ncharacters:')
for k, n in enumerate(names):
    print(f'  - name: {n}\n    appearance: "{n}, a villager of the harbour town, in a yellow oilskin coat."\n    seed: {1000 + k}')
print('episodes:')
i = 0
for e in range(episodes):
    print(f'  - id: ep{e + 1:02d}\n    scenes:')
    for c in range(scenes):
        who = names[i % len(names)]
        account = "sandbox-fal" if i % 8 < 5 else "sandbox-kling"
        print(f'      - id: sc{c + 1:02d}\n        description: "{season}: episode {e + 1}, shot {c + 1}, {who} at the harbour at dusk."\n'
              f'        characters: [{who}]\n        first_frame: {who}\n        providers:\n          video: [{account}]')
        i += 1
PY
}
season makespan-warmup "$(( (WARMUP + SCENES - 1) / SCENES ))" "$SCENES"
"$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
"$BIN/dramaq" status --season makespan-warmup --wait >/dev/null 2>&1 || true
curl -fsS -X POST "$SANDBOX/admin/reset" >/dev/null
season makespan "$EPISODES" "$SCENES"
echo "$EPISODES episodes x $SCENES scenes, 4 character sheets; renders of $((RENDER_MS / 1000))-$(((RENDER_MS + JITTER_MS) / 1000)) s; sandbox-fal $FAL_SLOTS slots, sandbox-kling $KLING_SLOTS slots; callbacks $([ "$CALLBACKS" = 1 ] && echo on || echo off)"
"$BIN/dramaq" enqueue "$WORK/season.yaml" --json >/dev/null
"$BIN/dramaq" status --season makespan --wait >/dev/null 2>&1 || true
curl -fsS "$SANDBOX/admin/stats" >"$WORK/stats.json"
python3 - "$WORK/stats.json" "$FAL_SLOTS" "$KLING_SLOTS" "$BIN/dramaq" <<'PY'
import json, subprocess, sys
s = json.load(open(sys.argv[1]))
fal_slots, kling_slots = int(sys.argv[2]), int(sys.argv[3])
st = json.loads(subprocess.run([sys.argv[4], "status", "--season", "makespan", "--json"], capture_output=True, check=True).stdout)
keys = s["by_key"]
# sk-bench is fal's key, sandbox-ak Kling's access key, sk-bench-image the sheets'.
fal, kling = keys.get("sk-bench", {}), keys.get("sandbox-ak", {})
work = {"sandbox-fal": (fal.get("render_ms_total", 0) / 1000, fal_slots, fal.get("renders_seen_finished", 0)),
        "sandbox-kling": (kling.get("render_ms_total", 0) / 1000, kling_slots, kling.get("renders_seen_finished", 0))}
submits = sorted(s["submit_times_ms"])
first = submits[0] / 1000
# Every scene waits for a sheet: the first scene submit comes after the first sheet was stored.
scene_submits = sorted(fal.get("submit_times_ms", []) + kling.get("submit_times_ms", []))
first_scene = (scene_submits[0] / 1000) if scene_submits else first
bound_by = {a: w / n for a, (w, n, _) in work.items()}
bound = max(bound_by.values())
# The same renders through an ideal dispatcher (no latency at all: a slot is refilled the
# instant it frees), in the order dramaq submitted them, and in the longest-first order a
# scheduler could only use if it knew each render time in advance. The gap between the bound and
# these is the last wave's unevenness, which no online order removes when render times are
# unknown; the gap between these and the makespan is dramaq's own.
import heapq
def dispatch(durations, slots):
    free = [0.0] * slots
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free) if durations else 0.0
start = (first_scene - first)
ideal = start + max(dispatch([r / 1000 for _, r in sorted(k.get("renders", []))], n)
                    for k, n in ((fal, fal_slots), (kling, kling_slots)))
lpt = start + max(dispatch(sorted((r / 1000 for _, r in k.get("renders", [])), reverse=True), n)
                  for k, n in ((fal, fal_slots), (kling, kling_slots)))
makespan = s["last_seen_finished_ms"] / 1000 - first
late = sorted(s["seen_late_ms"]) or [0]
q = lambda p: late[min(len(late) - 1, int(p * len(late)))]
print(f"  stored              {st['stored']} of {st['total']} tasks ({st.get('dead', 0)} dead)")
for a, (w, n, seen) in work.items():
    print(f"  {a:18s}  {seen} renders, Σ {w:.1f} s over {n} slots = {w / n:.1f} s")
print(f"  first scene submit  {first_scene - first:.2f} s after the first sheet submit")
print(f"  polls per render    {s['status_polls'] / max(s['renders_seen_finished'], 1):.2f}; found late p50 {q(0.5)} ms, p99 {q(0.99)} ms")
print(f"  ideal dispatcher    {ideal:.1f} s in dramaq's order ({ideal / max(bound, 1e-9) - 1:+.1%} over the bound); {lpt:.1f} s longest first, render times known ({lpt / max(bound, 1e-9) - 1:+.1%})")
print(f"  makespan            {makespan:.1f} s from the first submit to the last render found finished; lower bound {bound:.1f} s ({makespan / max(bound, 1e-9) - 1:+.1%}, target ≤ +5 %); {makespan / max(ideal, 1e-9) - 1:+.1%} over the ideal dispatcher")
PY
