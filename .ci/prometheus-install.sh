#!/usr/bin/env bash
# Install Prometheus (Debian's `prometheus` package, which also brings `promtool`) for the
# Prometheus end-to-end test (tests/tests/prometheus.rs) and for checking deploy/prometheus.
#
# Runs apt-get as root, or through passwordless sudo; otherwise prints how to install and exits
# non-zero. The packaged service is not started: the test runs its own Prometheus on a free port.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(command -v prometheus)"
  exit 0
fi

how_to() {
  cat >&2 <<'MSG'
prometheus is not installed, and this script could not install it: that needs apt-get and
root (or passwordless sudo). Install it with:

    sudo apt-get update && sudo apt-get install -y prometheus

(the Debian/Ubuntu package; it also provides promtool), or put a `prometheus` binary from
https://prometheus.io/download/ on PATH. Then run the test again.
MSG
}

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  how_to
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get on this machine" >&2
  how_to
  exit 1
fi

# Keep the package's service from starting (it would listen on :9090 and scrape the default
# ports); only when no policy is in place already.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  ADDED_POLICY=1
fi
cleanup() {
  if [ -n "$ADDED_POLICY" ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

echo "installing prometheus (apt-get install -y prometheus)"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null

if ! command -v prometheus >/dev/null 2>&1; then
  echo "apt-get finished but prometheus is still not on PATH" >&2
  exit 1
fi
echo "installed $(prometheus --version 2>&1 | head -n 1)"
