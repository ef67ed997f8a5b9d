#!/usr/bin/env bash
# The demo command: installs what is missing, builds, starts llmq-mock-azure and
# llmq-gateway on loopback, drives a realistic burst through the gateway with llmq-demo,
# prints the summary, and stops both servers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target llmq-mock-azure llmq-gateway llmq-demo

bin=build/release
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
  echo "demo: $2 did not start" >&2
  return 1
}

"$bin/tools/mock_azure/llmq-mock-azure" --config examples/demo/mock.yaml --port 0 \
  --port-file "$work/mock.port" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for_file "$work/mock.port" llmq-mock-azure
mock_url="http://127.0.0.1:$(cat "$work/mock.port")"

LLMQ_DEMO_MOCK_URL="$mock_url" LLMQ_DEMO_UPSTREAM_KEY=demo-upstream-key \
  "$bin/examples/llmq-gateway" --config examples/demo/gateway.yaml --port 0 \
  --port-file "$work/gateway.port" >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_for_file "$work/gateway.port" llmq-gateway
gateway_url="http://127.0.0.1:$(cat "$work/gateway.port")"

echo "mock Azure OpenAI: $mock_url   gateway: $gateway_url"
"$bin/examples/llmq-demo" --gateway "$gateway_url" --mock "$mock_url" --seconds "${LLMQ_DEMO_SECONDS:-16}"
