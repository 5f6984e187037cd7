#!/usr/bin/env bash
# Measure fake_upstream.py's own throughput with wrk (apt-get install -y wrk).
#
#   bash tests/e2e/bench_fake.sh [CONNECTIONS] [DURATION] [THREADS]
#
# Env: PYTHON (default python3), WRK_PATH=/v1/messages for the Anthropic endpoint,
#      WRK_STREAM=1 for streaming OpenAI requests, FAKE_ARGS (extra args for the fake,
#      e.g. --no-uvloop).
# Starts the fake on a free loopback port, runs wrk against it, stops the fake (by its PID).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
conns="${1:-32}"
dur="${2:-10s}"
threads="${3:-1}"
py="${PYTHON:-python3}"
command -v wrk >/dev/null || { echo "wrk not found (apt-get install -y wrk)" >&2; exit 2; }

out="$(mktemp)"
# shellcheck disable=SC2086
"$py" "$here/fake_upstream.py" --port 0 ${FAKE_ARGS:-} >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q LISTENING "$out" && break; sleep 0.05; done
port="$(awk '/LISTENING/{print $2}' "$out")"
[ -n "$port" ] || { echo "fake did not start" >&2; exit 1; }

wrk -t"$threads" -c"$conns" -d"$dur" --latency -s "$here/wrk_chat.lua" "http://127.0.0.1:$port/"
