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
# shellcheck source=../../scripts/lib/servers.sh
source "$here/../../scripts/lib/servers.sh"

start_server mock "$mock_bin" --config "$here/openai_node/mock.yaml"
mock_url=$server_url
prefix="llmq-test-$$-$(date +%s%N):"
sed -e "s/max_num_requests_in_time_window: 40/max_num_requests_in_time_window: 10/" \
    -e "/client_keys:/,+1d" "$here/openai_node/gateway.yaml" > "$work/gateway.yaml"
printf '  redis_url: "redis://127.0.0.1:%s/0"\n  redis_key_prefix: "%s"\n' "$redis_port" "$prefix" >> "$work/gateway.yaml"
for g in a b; do
  start_server "$g" env LLMQ_TEST_MOCK_URL="$mock_url" LLMQ_TEST_UPSTREAM_KEY=node-test-upstream-key \
    "$gateway_bin" --config "$work/gateway.yaml"
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
