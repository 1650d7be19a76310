#!/usr/bin/env bash
# Where a transition's time goes inside Redis's Lua: one record read and written the way the
# transition scripts do it (`full`), and its pieces, each run N times inside one script on a
# throwaway redis-server (scripts/bench-record.lua). Prints microseconds per iteration, the
# empty loop's cost taken off.
#
#   scripts/bench-record-lua.sh            # N=200000
#
#   get       GET of a 574-byte record
#   getset    GET and SET it back
#   msgpack   decode the 9-field header, change 3 fields, encode it (cmsgpack, as today)
#   struct    the same header as a fixed layout (`struct` library)
#   full      a whole record read and written as load_task/save_task do
#   range     the header alone, read with GETRANGE and written with SETRANGE
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
WORK=$(mktemp -d -t dramaq-record.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PID=$!
trap 'kill -9 $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "redis $(redis-cli -p "$PORT" info server | awk -F: '/^redis_version/{print $2}' | tr -d '\r'), N=$N"
run() { redis-cli -p "$PORT" --eval scripts/bench-record.lua , "$1" "$N"; }
empty=$(run none)
for v in get getset msgpack struct full range; do
  took=$(run "$v")
  python3 -c "print(f'{\"$v\":8s} {($took - $empty) / $N:6.2f} µs')"
done
