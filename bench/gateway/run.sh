#!/usr/bin/env bash
# Gateway throughput and added latency versus the mock server directly, with wrk, in
# one run. Usage: bench/gateway/run.sh [seconds] (builds the release targets first).
# LLMQ_BUILD_DIR picks the build directory (default build/release, release preset).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
bin=${LLMQ_BUILD_DIR:-build/release}
cmake --preset release -B "$bin" >/dev/null
cmake --build "$bin" -j "$(nproc)" --target llmq-mock-azure llmq-gateway >/dev/null
# shellcheck source=../../scripts/lib/servers.sh
source scripts/lib/servers.sh

start_server mock "$bin/tools/mock_azure/llmq-mock-azure" --config bench/gateway/mock.yaml
mock=$server_url
start_server gw env LLMQ_BENCH_MOCK_URL="$mock" LLMQ_BENCH_UPSTREAM_KEY=bench-upstream-key \
  "$bin/apps/gateway/llmq-gateway" --config bench/gateway/gateway.yaml
gw=$server_url

run() {  # run <label> <url> <connections>
  local out
  out=$(wrk -t1 -c"$3" -d"${secs}s" --latency -s bench/gateway/post.lua "$2" 2>&1 | grep RESULT)
  echo "$1 connections=$3 $out"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for c in 1 16 64; do
  run "direct " "$mock/openai/deployments/bench-chat-1/chat/completions?api-version=2024-10-21" "$c"
  run "gateway" "$gw/v1/chat/completions" "$c"
done
