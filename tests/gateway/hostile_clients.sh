#!/usr/bin/env bash
# A real llmq-gateway process in front of a real llmq-mock-azure, fed what a hostile or
# careless client (and a stalling upstream) sends:
#   - a body nested 200 000 levels deep: 400, and the gateway keeps serving;
#   - a POST with `Expect: 100-continue`: the 100 comes at once (curl waits 1 s for it);
#   - a client that gives up while its request is queued: nothing is sent upstream;
#   - an upstream deployment that accepts and never answers: the request is retried on
#     the other deployment after upstream_timeout_seconds;
#   - an unreachable deployment: the error body names no internal host or port;
#   - more connections than file descriptors (EMFILE): no busy loop, still serving.
# Usage: hostile_clients.sh MOCK_BINARY GATEWAY_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mock_bin=$1
gateway_bin=$2
# shellcheck source=../../scripts/lib/servers.sh
source "$here/../../scripts/lib/servers.sh"

failures=0
check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then
    echo "ok: $what"
  else
    echo "FAILED: $what"
    failures=$((failures + 1))
  fi
}

cat > "$work/mock.yaml" <<'EOF'
api_key: hostile-test-key
seed: 1
latency: {distribution: fixed, ms: 1}
deployments:
  - {name: east, model: gpt-4o, type: chat, req_per_min: 60000, tokens_per_min: 100000000,
     faults: {stall_rate: 1.0}}
  - {name: west, model: gpt-4o, type: chat, req_per_min: 60000, tokens_per_min: 100000000}
  - {name: slow, model: gpt-4o-slow, type: chat, req_per_min: 60000, tokens_per_min: 100000000}
EOF
start_server mock "$mock_bin" --config "$work/mock.yaml"
mock_url=$server_url

# A port nobody listens on.
down_port=$(cat "$work/mock.port")
down_port=$((down_port == 65535 ? 1 : down_port + 1))
while (exec 3<>"/dev/tcp/127.0.0.1/$down_port") 2>/dev/null; do down_port=$((down_port + 1)); done

cat > "$work/gateway.yaml" <<EOF
azure_open_ai:
  - api_key: hostile-test-key
    api_version: "2024-10-21"
    azure_endpoint: "$mock_url"
    azure_oai_models:
      - {unique_model_id: east, model_name_in_azure: gpt-4o, deployment_name_in_azure: east,
         model_type: chat, req_per_min: 60000, tokens_per_min: 100000000}
      - {unique_model_id: west, model_name_in_azure: gpt-4o, deployment_name_in_azure: west,
         model_type: chat, req_per_min: 60000, tokens_per_min: 100000000}
      - {unique_model_id: slow, model_name_in_azure: gpt-4o-slow, deployment_name_in_azure: slow,
         model_type: chat, req_per_min: 1, tokens_per_min: 100000000}
  - api_key: hostile-test-key
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:$down_port"
    azure_oai_models:
      - {unique_model_id: down, model_name_in_azure: gpt-4o-down, deployment_name_in_azure: down,
         model_type: chat, req_per_min: 60000, tokens_per_min: 100000000,
         error_backoff_in_seconds: 0.05}
user_limits:
  max_num_requests_in_time_window: 1000
  time_window_in_seconds: 60
gateway:
  listen_address: 127.0.0.1
  upstream_timeout_seconds: 1
EOF
start_server gateway "$gateway_bin" --config "$work/gateway.yaml"
gw=$server_url

bodies="$work/bodies"
: > "$bodies"
# post BODY_FILE [CURL_ARGS...]: prints the status; the body is appended to $bodies.
post() {
  local file=$1
  shift
  curl -s -o "$work/body" -w '%{http_code}' -H 'content-type: application/json' \
       -H 'x-user-id: hostile' --data-binary "@$file" "$@" "$gw/v1/chat/completions" || true
  cat "$work/body" >> "$bodies" 2>/dev/null || true
  echo >> "$bodies"
}
chat() {  # chat MODEL [CONTENT]
  printf '{"model":"%s","messages":[{"role":"user","content":"%s"}],"max_tokens":5}' \
         "$1" "${2:-hi}" > "$work/chat.json"
  echo "$work/chat.json"
}
metric() {  # metric NAME: its value in /metrics
  curl -s "$gw/metrics" | awk -v n="$1" '$1 == n {print $2}'
}
wait_metric() {  # wait_metric NAME VALUE: true once /metrics shows it (at most 5 s)
  for _ in $(seq 1 100); do
    [ "$(metric "$1")" = "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
mock_count() {  # mock_count DEPLOYMENT FIELD: the first FIELD after the deployment's key
  curl -s "$mock_url/mock/stats" | sed "s/.*\"$1\":{//" | grep -o "\"$2\":[0-9]*" | head -1 |
    cut -d: -f2
}

# 1. Deep nesting, over real HTTP: refused while parsing; the gateway keeps serving.
{
  printf '{"model":"gpt-4o","messages":[{"role":"user","content":'
  head -c 200000 /dev/zero | tr '\0' '['
  head -c 200000 /dev/zero | tr '\0' ']'
  printf '}]}'
} > "$work/deep.json"
check "200 000-deep content answered 400" test "$(post "$work/deep.json" --max-time 10)" = 400
check "the 400 names json_too_deep" grep -q '"code":"json_too_deep"' "$work/body"
check "still serving after the deep body" test "$(post "$(chat west)" --max-time 10)" = 200
check "the gateway process is alive" kill -0 "${pids[1]}"

# 2. Expect: 100-continue (curl sends it for large bodies, then waits 1 s for the 100).
chat west "$(head -c 3000 /dev/zero | tr '\0' 'x')" > /dev/null
t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H 'content-type: application/json' \
         -H 'x-user-id: hostile' -H 'Expect: 100-continue' --data-binary "@$work/chat.json" \
         --max-time 10 "$gw/v1/chat/completions" || true)
check "an Expect: 100-continue POST is answered 200 without the 1 s wait ($t)" \
      awk -v t="$t" 'BEGIN { split(t, a, " "); exit !(a[1] == 200 && a[2] < 0.9) }'

# 3. A client that gives up while queued (the deployment takes 1 request a minute).
check "first request to the slow deployment" test "$(post "$(chat slow)" --max-time 10)" = 200
post "$(chat slow)" --max-time 1 > /dev/null  # queued behind the minute window; curl gives up
check "the abandoned request left the queue" wait_metric llmq_queue_depth 0
check "the disconnect is counted" wait_metric llmq_gateway_client_disconnects_total 1
check "nothing more was sent upstream" test "$(mock_count slow requests)" = 1

# 4. A deployment that accepts and never answers: retried on the other after 1 s.
for i in 1 2 3 4; do
  check "request $i over a stalling deployment answered 200" \
        test "$(post "$(chat gpt-4o)" --max-time 8)" = 200
done
check "the stalling deployment was tried" test "$(mock_count east stalls)" -ge 1
check "the other deployment answered all" test "$(mock_count west ok)" -ge 4

# 5. An unreachable deployment: an error without the internal address.
code=$(post "$(chat down)" --max-time 20)
check "unreachable deployment answered 503 ($code)" test "$code" = 503
check "every error body carries a request id" grep -q '"request_id"' "$work/body"
check "no body names 127.0.0.1:PORT" bash -c "! grep -q '127\.0\.0\.1:[0-9]' '$bodies'"

# 6. Out of file descriptors: a gateway with few of them, flooded with idle connections.
if [ -n "${LLMQ_SANITIZED:-}" ]; then
  # The sanitizers' runtime opens descriptors itself (UBSan's vptr check probes memory
  # through a pipe): out of descriptors, it reports errors that are not there.
  echo "skipped: out of file descriptors (a sanitized build; the release build runs it)"
else
  start_server lowfd bash -c 'ulimit -n 40; exec "$0" "$@"' "$gateway_bin" --config "$work/gateway.yaml"
  lowfd_pid=${pids[-1]}
  lowfd_port=$(cat "$work/lowfd.port")
  lowfd() {  # lowfd MAX_TIME: status of one chat request to the low-descriptor gateway
    curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
         -H 'x-user-id: hostile' --data-binary "@$(chat west)" --max-time "$1" \
         "http://127.0.0.1:$lowfd_port/v1/chat/completions" || true
  }
  # Warm up: its upstream connection is pooled before descriptors run out.
  check "the low-descriptor gateway serves" test "$(lowfd 10)" = 200
  # The gateway's CPU ticks (user + system); a gateway that is gone fails the test with its log.
  ticks() {
    if ! awk '{print $14 + $15}' "/proc/$lowfd_pid/stat" 2>/dev/null; then
      echo "FAILED: the low-descriptor gateway exited; its log:" >&2
      cat "$work/lowfd.log" >&2
      exit 1
    fi
  }
  held=()
  for _ in $(seq 1 80); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$lowfd_port" || break
    held+=("$fd")
  done
  before=$(ticks)
  sleep 2
  used=$(( $(ticks) - before ))
  check "no busy accept loop while out of descriptors (${used} ticks in 2 s)" test "$used" -lt 20
  # Idle connections are closed to make room, one per back-off, so this one gets in.
  code=$(lowfd 20)
  check "a client still gets served while descriptors are short ($code)" test "$code" = 200
  for fd in "${held[@]}"; do exec {fd}>&-; done
  code=$(lowfd 10)
  check "served once the connections are gone ($code)" test "$code" = 200
  errors=$(curl -s "http://127.0.0.1:$lowfd_port/metrics" |
           awk '$1 == "llmq_gateway_accept_errors_total" {print $2}')
  check "accept errors were counted ($errors)" test "${errors:-0}" -ge 1
fi

echo "hostile clients: $failures failed"
[ "$failures" = 0 ]
