#!/usr/bin/env bash
# Gateway throughput and added latency versus the mock server directly, with wrk, in
# one run. Usage: bench/gateway/run.sh [seconds] (builds the release targets first).
# LLMQ_BUILD_DIR picks the build directory (default build/release, release preset);
# LLMQ_GATEWAY_THREADS the gateway.threads values to measure, one gateway each (default
# "1 2").
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
declare -A gw
for t in ${LLMQ_GATEWAY_THREADS:-1 2}; do
  { cat bench/gateway/gateway.yaml; echo "  threads: $t"; } >"$work/gateway-$t.yaml"
  start_server "gw$t" env LLMQ_BENCH_MOCK_URL="$mock" LLMQ_BENCH_UPSTREAM_KEY=bench-upstream-key \
    "$bin/apps/gateway/llmq-gateway" --config "$work/gateway-$t.yaml"
  gw[$t]=$server_url
done

run() {  # run <label> <url> <connections>
  local out
  out=$(wrk -t1 -c"$3" -d"${secs}s" --latency -s bench/gateway/post.lua "$2" 2>&1 | grep RESULT)
  echo "$1 connections=$3 $out"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for c in 1 16 64; do
  run "direct          " "$mock/openai/deployments/bench-chat-1/chat/completions?api-version=2024-10-21" "$c"
  for t in ${LLMQ_GATEWAY_THREADS:-1 2}; do
    run "gateway threads=$t" "${gw[$t]}/v1/chat/completions" "$c"
  done
done
