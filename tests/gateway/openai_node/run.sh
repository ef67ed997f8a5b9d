#!/usr/bin/env bash
# Starts llmq-mock-azure and llmq-gateway on loopback and runs test.mjs (the official
# `openai` npm package) against the gateway. Usage: run.sh MOCK_BINARY GATEWAY_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mock_bin=$1
gateway_bin=$2
# shellcheck source=../../../scripts/lib/servers.sh
source "$here/../../../scripts/lib/servers.sh"

if [ ! -d "$here/node_modules/openai" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

start_server llmq-mock-azure "$mock_bin" --config "$here/mock.yaml"
mock_url=$server_url
start_server llmq-gateway env LLMQ_TEST_MOCK_URL="$server_url" \
  LLMQ_TEST_UPSTREAM_KEY=node-test-upstream-key "$gateway_bin" --config "$here/gateway.yaml"

GATEWAY_URL="$server_url" MOCK_URL="$mock_url" node "$here/test.mjs"

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
