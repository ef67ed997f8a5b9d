#!/usr/bin/env bash
# Gateway throughput and added latency versus the mock server directly, with wrk, in
# one run. Usage: bench/gateway/run.sh [seconds] (builds the release targets first).
# LLMQ_BUILD_DIR picks the build directory (default build/release, release preset);
# LLMQ_GATEWAY_THREADS the gateway.threads values to measure, one gateway each (default
# "1 2"); LLMQ_BENCH_CONNECTIONS the wrk connection counts (default "1 16 64"). Where nginx
# is installed it is measured too, as a plain reverse proxy to the same mock (one worker,
# LLMQ_NGINX_WORKERS to change), and each gateway row is followed by its ratio to nginx
# in the same run. Where the allocation counter is built (bench/alloc_count.cpp, the
# release preset builds it), the gateway's allocations per request are counted too
# (LLMQ_BENCH_ALLOC_CONNECTIONS, default 32). LLMQ_BENCH_LATENCY_DIR=DIR writes each row's
# latency distribution to DIR/<target>-<connections>.dat (bench/gateway/plot_latency.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
bin=${LLMQ_BUILD_DIR:-build/release}
cmake --preset release -B "$bin" >/dev/null
cmake --build "$bin" -j "$(nproc)" --target llmq-mock-azure llmq-gateway >/dev/null
cmake --build "$bin" -j "$(nproc)" --target llmq_alloc_count >/dev/null 2>&1 || true
alloc_lib=$(realpath "$bin/bench/libllmq_alloc_count.so" 2>/dev/null || true)
latency_dir=${LLMQ_BENCH_LATENCY_DIR:-}
if [ -n "$latency_dir" ]; then
  mkdir -p "$latency_dir"
  export LLMQ_BENCH_PERCENTILES=1
fi
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

nginx_url=
if command -v nginx >/dev/null; then
  nginx_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$work/nginx-body" "$work/nginx-proxy"
  sed -e "s|@WORKERS@|${LLMQ_NGINX_WORKERS:-1}|" -e "s|@PORT@|$nginx_port|" \
    -e "s|@UPSTREAM@|${mock#http://}|" -e "s|@WORK@|$work|g" bench/gateway/nginx.conf.in \
    >"$work/nginx.conf"
  nginx -c "$work/nginx.conf" -p "$work" >"$work/nginx.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break
    sleep 0.1
  done
  nginx_url="http://127.0.0.1:$nginx_port"
fi

rps=
p50=
requests=
run() {  # run <label> <url> <connections>: one wrk row; sets rps, p50 (us) and requests
  local all out
  all=$(wrk -t1 -c"$3" -d"${secs}s" --timeout 10s --latency -s bench/gateway/post.lua "$2" 2>&1)
  out=$(grep RESULT <<<"$all" || echo "RESULT requests/s 0 p50_us 0 p99_us 0 errors 0 non2xx 0 requests 0")
  echo "$1 connections=$3 $out"
  read -r _ _ rps _ p50 _ _ _ _ _ _ _ requests <<<"$out"
  if [ -n "$latency_dir" ]; then
    local name
    name=$(xargs <<<"$1" | tr ' =' '-')
    awk '/^PERCENTILE/ {print $2, $3}' <<<"$all" >"$latency_dir/$name-$3.dat"
  fi
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
direct_path="/openai/deployments/bench-chat-1/chat/completions?api-version=2024-10-21"
for c in ${LLMQ_BENCH_CONNECTIONS:-1 16 64}; do
  run "direct          " "$mock$direct_path" "$c"
  direct_p50=$p50
  nginx_rps=
  if [ -n "$nginx_url" ]; then
    run "nginx           " "$nginx_url$direct_path" "$c"
    nginx_rps=$rps
    nginx_added=$((p50 - direct_p50))
  fi
  for t in ${LLMQ_GATEWAY_THREADS:-1 2}; do
    run "gateway threads=$t" "${gw[$t]}/v1/chat/completions" "$c"
    if [ -n "$nginx_rps" ] && [ "$nginx_rps" != 0 ]; then
      echo "  ratio to nginx: throughput $(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a / b}');" \
        "added p50 over direct: gateway $((p50 - direct_p50)) us, nginx $nginx_added us"
    fi
  done
done

# Allocations per request: the gateway (one thread) started with the counter preloaded,
# once serving wrk's load and once serving nothing; the difference of their counts over
# the requests served.
if [ -n "$alloc_lib" ]; then
  { cat bench/gateway/gateway.yaml; echo "  threads: 1"; } >"$work/gateway-alloc.yaml"
  count_allocations() {  # count_allocations <name> <connections, 0 for none>: prints count, requests
    latency_dir=  # (in this subshell) the counted row is not a latency row
    start_server "$1" env LLMQ_BENCH_MOCK_URL="$mock" LLMQ_BENCH_UPSTREAM_KEY=bench-upstream-key \
      LD_PRELOAD="$alloc_lib" LLMQ_ALLOC_COUNT_FILE="$work/$1.count" \
      "$bin/apps/gateway/llmq-gateway" --config "$work/gateway-alloc.yaml" >&2
    requests=0
    if [ "$2" != 0 ]; then run "gateway (counted)" "$server_url/v1/chat/completions" "$2" >&2; fi
    kill -TERM "${pids[-1]}"
    wait "${pids[-1]}" || true
    echo "$(awk '{print $2}' "$work/$1.count") $requests"
  }
  read -r idle _ <<<"$(count_allocations alloc-idle 0)"
  read -r loaded requests <<<"$(count_allocations alloc-load "${LLMQ_BENCH_ALLOC_CONNECTIONS:-32}")"
  if [ "${requests:-0}" -gt 0 ]; then
    echo "gateway allocations per request: $(awk -v a="$loaded" -v b="$idle" -v n="$requests" \
      'BEGIN {printf "%.1f", (a - b) / n}') ($loaded counted over $requests requests, $idle with none)"
  else
    echo "gateway allocations per request: not measured (no request answered)"
  fi
fi
