#!/usr/bin/env bash
# Starts llmq-mock-azure and llmq-gateway on loopback and runs test.mjs (the official
# `openai` npm package) against the gateway. Usage: run.sh MOCK_BINARY GATEWAY_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mock_bin=$1
gateway_bin=$2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
wait_for_file() {
  for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "run.sh: $2 did not start" >&2; cat "$work"/*.log >&2 || true
  return 1
}

if [ ! -d "$here/node_modules/openai" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

"$mock_bin" --config "$here/mock.yaml" --port 0 --port-file "$work/mock.port" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for_file "$work/mock.port" llmq-mock-azure
LLMQ_TEST_MOCK_URL="http://127.0.0.1:$(cat "$work/mock.port")" LLMQ_TEST_UPSTREAM_KEY=node-test-upstream-key \
  "$gateway_bin" --config "$here/gateway.yaml" --port 0 --port-file "$work/gateway.port" \
  >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_for_file "$work/gateway.port" llmq-gateway

GATEWAY_URL="http://127.0.0.1:$(cat "$work/gateway.port")" node "$here/test.mjs"

# SIGTERM: the gateway drains, flushes and exits 0.
gateway_pid=${pids[1]}
kill -TERM "$gateway_pid"
for _ in $(seq 1 100); do kill -0 "$gateway_pid" 2>/dev/null || break; sleep 0.1; done
if wait "$gateway_pid"; then
  echo "gateway exited 0 on SIGTERM"
else
  echo "gateway did not exit 0 on SIGTERM" >&2
  exit 1
fi
