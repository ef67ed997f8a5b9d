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
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
wait_for_file() { for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.1; done; return 1; }

"$bin/tools/mock_azure/llmq-mock-azure" --config bench/gateway/mock.yaml --port 0 \
  --port-file "$work/mock.port" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for_file "$work/mock.port"
mock="http://127.0.0.1:$(cat "$work/mock.port")"
LLMQ_BENCH_MOCK_URL="$mock" LLMQ_BENCH_UPSTREAM_KEY=bench-upstream-key \
  "$bin/examples/llmq-gateway" --config bench/gateway/gateway.yaml --port 0 \
  --port-file "$work/gw.port" >"$work/gw.log" 2>&1 &
pids+=($!)
wait_for_file "$work/gw.port"
gw="http://127.0.0.1:$(cat "$work/gw.port")"

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
