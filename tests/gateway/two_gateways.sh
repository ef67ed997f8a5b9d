#!/usr/bin/env bash
# Two llmq-gateway processes sharing one Redis admit, in total, exactly the user limit.
# Usage: two_gateways.sh MOCK_BINARY GATEWAY_BINARY. Needs redis-server on
# 127.0.0.1:${LLMQ_TEST_REDIS_PORT:-6390} (scripts/services.sh start); exits 77 (skip)
# without it unless LLMQ_TEST_REQUIRE_SERVICES=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mock_bin=$1
gateway_bin=$2
redis_port=${LLMQ_TEST_REDIS_PORT:-6390}
if ! redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
  echo "redis-server not reachable on 127.0.0.1:$redis_port (scripts/services.sh start)"
  [ "${LLMQ_TEST_REQUIRE_SERVICES:-0}" = 1 ] && exit 1
  exit 77
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
wait_for_file() { for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.1; done; cat "$work"/*.log >&2; return 1; }

"$mock_bin" --config "$here/openai_node/mock.yaml" --port 0 --port-file "$work/mock.port" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for_file "$work/mock.port"
prefix="llmq-test-$$-$(date +%s%N):"
sed -e "s/max_num_requests_in_time_window: 40/max_num_requests_in_time_window: 10/" \
    -e "/client_keys:/,+1d" "$here/openai_node/gateway.yaml" > "$work/gateway.yaml"
printf '  redis_url: "redis://127.0.0.1:%s/0"\n  redis_key_prefix: "%s"\n' "$redis_port" "$prefix" >> "$work/gateway.yaml"
for g in a b; do
  LLMQ_TEST_MOCK_URL="http://127.0.0.1:$(cat "$work/mock.port")" LLMQ_TEST_UPSTREAM_KEY=node-test-upstream-key \
    "$gateway_bin" --config "$work/gateway.yaml" --port 0 --port-file "$work/$g.port" >"$work/$g.log" 2>&1 &
  pids+=($!)
  wait_for_file "$work/$g.port"
done
body='{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
ok=0; limited=0; other=0
for i in $(seq 1 30); do
  g=$([ $((i % 2)) = 0 ] && echo a || echo b)
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -H 'x-user-id: shared-user' \
         --max-time 10 -d "$body" "http://127.0.0.1:$(cat "$work/$g.port")/v1/chat/completions")
  case "$code" in 200) ok=$((ok + 1));; 429) limited=$((limited + 1));; *) other=$((other + 1));; esac
done
redis-cli -h 127.0.0.1 -p "$redis_port" --scan --pattern "${prefix}*" | xargs -r redis-cli -h 127.0.0.1 -p "$redis_port" del >/dev/null
echo "two gateways: $ok admitted, $limited refused, $other other"
[ "$ok" = 10 ] && [ "$limited" = 20 ] && [ "$other" = 0 ]
