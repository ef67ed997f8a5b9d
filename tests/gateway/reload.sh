#!/usr/bin/env bash
# Reloading llmq-gateway's configuration without a restart (SIGHUP and POST /admin/reload):
# under wrk load with reloads every few hundred milliseconds (0 failed requests, the same
# connections kept), deployments added and removed, client keys changed, a request in
# flight finishing on its deployment, a queued one whose deployment is gone answered
# clearly, an invalid file keeping the running configuration, keys that need a restart,
# the outcome in /metrics, the access log reopened; and the start's loud defaults (the
# warnings without client keys or TLS, require_client_keys, a misspelled key).
#   reload.sh MOCK_BINARY GATEWAY_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mock_bin=$1
gateway_bin=$2
# shellcheck source=../../scripts/lib/servers.sh
source "$here/../../scripts/lib/servers.sh"
# shellcheck source=../../scripts/lib/checks.sh
source "$here/../../scripts/lib/checks.sh"

cat >"$work/mock.yaml" <<YAML
api_key: reload-upstream-key
latency: {distribution: fixed, ms: 1}
deployments:
  - {name: gpt-4o-east, model: gpt-4o, type: chat}
  - {name: gpt-4o-west, model: gpt-4o, type: chat}
  - {name: gpt-4o-north, model: gpt-4o, type: chat}
  - {name: slow, model: slow-model, type: chat, latency: {distribution: fixed, ms: 3000}}
  - {name: paced, model: paced-model, type: chat}
YAML
deployment() {  # deployment NAME MODEL [RPM] [WEIGHT]: one line of azure_oai_models
  echo "      - {unique_model_id: $1, model_name_in_azure: $2, deployment_name_in_azure: $1,
         model_type: chat, req_per_min: ${3:-600000}, tokens_per_min: 1000000000, weight: ${4:-1}}"
}
config() {  # config FILE KEY... (after --: deployment lines; after ++: extra gateway lines)
  local file=$1
  shift
  {
    cat <<YAML
azure_open_ai:
  - api_key: reload-upstream-key
    api_version: "2024-10-21"
    azure_endpoint: "\${LLMQ_TEST_MOCK_URL}"
    azure_oai_models:
YAML
    while [ "$1" != -- ]; do
      deployment $1
      shift
    done
    shift
    cat <<YAML
user_limits:
  max_num_requests_in_time_window: 100000000
  time_window_in_seconds: 60
gateway:
  listen_address: 127.0.0.1
  port: 0
  admin_keys: [admin-key-1]
  client_keys:
YAML
    while [ $# -gt 0 ] && [ "$1" != ++ ]; do
      echo "    - key: $1"
      shift
    done
    [ $# -gt 0 ] && shift
    for line in "$@"; do echo "  $line"; done
  } >"$file"
}
# A: east and west (and the slow and paced ones); B: west and north, other weights, two keys.
config "$work/a.yaml" "gpt-4o-east gpt-4o" "gpt-4o-west gpt-4o" "slow slow-model" \
  "paced paced-model 1" -- key-a ++ "access_log: $work/access.log"
config "$work/b.yaml" "gpt-4o-west gpt-4o 600000 3" "gpt-4o-north gpt-4o" -- key-a key-b \
  ++ "access_log: $work/access.log"
cp "$work/a.yaml" "$work/gateway.yaml"

start_server mock "$mock_bin" --config "$work/mock.yaml"
mock_url=$server_url
start_server gateway env LLMQ_TEST_MOCK_URL="$mock_url" "$gateway_bin" --config "$work/gateway.yaml"
gw=$server_url
gw_pid=${pids[-1]}

chat() {  # chat KEY MODEL [ANSWER_FILE]: prints the status
  local key=$1 model=$2 out=${3:-$work/answer}
  curl -s -o "$out" -w '%{http_code}' -H "api-key: $key" -H 'x-user-id: reload-test' \
    -H 'content-type: application/json' --max-time 20 \
    -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":5}" \
    "$gw/v1/chat/completions"
}
metric() {  # metric NAME [LABELS]: its value
  local name=$1
  [ -n "${2:-}" ] && name="$1{$2}"
  curl -fsS -H 'api-key: admin-key-1' "$gw/metrics" | NAME=$name awk '$1 == ENVIRON["NAME"] {print $2}'
}
admin_reload() {  # admin_reload [KEY]: POST /admin/reload, prints the status
  curl -s -o "$work/reload" -w '%{http_code}' -X POST -H "api-key: ${1:-admin-key-1}" \
    --max-time 30 "$gw/admin/reload"
}
check() {  # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected $2, got $3 ($(head -c 300 "$work/answer" 2>/dev/null))"; fi
}
use() {  # use CONFIG: makes it the gateway's file and reloads through the admin endpoint
  cp "$1" "$work/gateway.yaml"
  local code
  code=$(admin_reload)
  check "reload to $(basename "$1")" 200 "$code"
}

check "at start, the last reload is successful" 1 "$(metric llmq_gateway_config_last_reload_successful)"
check "A: east serves" 200 "$(chat key-a gpt-4o-east)"
check "A: north does not exist yet" 404 "$(chat key-a gpt-4o-north)"

# ---- the admin endpoint's access rules ---------------------------------------------------
check "POST /admin/reload without a key" 401 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$gw/admin/reload")"
check "POST /admin/reload with a client key" 401 "$(admin_reload key-a)"
check "GET /admin/reload" 405 "$(curl -s -o /dev/null -w '%{http_code}' -H 'api-key: admin-key-1' "$gw/admin/reload")"

# ---- a request in flight and a queued one across a reload ----------------------------------
check "the paced deployment's one request a minute" 200 "$(chat key-a paced)"
chat key-a slow >"$work/slow.code" &
slow_pid=$!
chat key-a paced "$work/paced.answer" >"$work/paced.code" &
paced_pid=$!
sleep 0.5  # both at the gateway: one upstream, one waiting for the paced window
use "$work/b.yaml"
wait "$paced_pid" "$slow_pid" || true
check "in flight on a removed deployment: it finishes there" 200 "$(cat "$work/slow.code")"
paced_code=$(cat "$work/paced.code")
if [ "$paced_code" -ge 400 ] && [ "$paced_code" -lt 500 ] && grep -q '"message"' "$work/paced.answer"; then
  pass "queued for a removed deployment: a clear error ($paced_code: $(grep -o '"message":"[^"]*"' "$work/paced.answer" | head -c 160))"
else
  fail "queued for a removed deployment: $paced_code $(head -c 300 "$work/paced.answer")"
fi
check "B: north serves" 200 "$(chat key-a gpt-4o-north)"
check "B: east is gone" 404 "$(chat key-a gpt-4o-east)"
check "B: the new key-b is accepted" 200 "$(chat key-b gpt-4o)"
use "$work/a.yaml"
check "A again: key-b is refused" 401 "$(chat key-b gpt-4o)"
check "A again: key-a is accepted" 200 "$(chat key-a gpt-4o)"

# ---- reloads under load ----------------------------------------------------------------
cat >"$work/load.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = "key-a"
wrk.headers["x-user-id"] = "load"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"max_tokens":8}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests %d errors %d non2xx %d\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
LUA
before=$(metric llmq_gateway_config_reloads_total 'result="success"')
wrk -t 2 -c 16 -d 8s --timeout 10s -s "$work/load.lua" "$gw/v1/chat/completions" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
reloads=0
end=$((SECONDS + 7))
while [ $SECONDS -lt $end ]; do
  if [ $((reloads % 2)) = 0 ]; then cp "$work/b.yaml" "$work/gateway.yaml"; else cp "$work/a.yaml" "$work/gateway.yaml"; fi
  if [ $((reloads % 3)) = 0 ]; then
    kill -HUP "$gw_pid"
  else
    code=$(admin_reload)
    [ "$code" = 200 ] || [ "$code" = 409 ] || fail "reload under load answered $code: $(cat "$work/reload")"
  fi
  reloads=$((reloads + 1))
  sleep 0.25
done
wait "$wrk_pid" || true
result=$(grep RESULT "$work/wrk.out" || echo "RESULT requests 0 errors -1 non2xx -1")
read -r _ _ requests _ errors _ non2xx <<<"$result"
sleep 0.5
after=$(metric llmq_gateway_config_reloads_total 'result="success"')
echo "under load: $reloads reloads asked, $((after - before)) done; $requests requests, $errors socket errors, $non2xx non-2xx"
if [ "$requests" -gt 100 ] && [ "$errors" = 0 ] && [ "$non2xx" = 0 ]; then
  pass "under load with $reloads reloads: $requests requests, none failed"
else
  fail "under load: $(cat "$work/wrk.out")"
fi
if [ $((after - before)) -ge $((reloads / 2)) ]; then
  pass "reloads counted in llmq_gateway_config_reloads_total ($before -> $after)"
else
  fail "llmq_gateway_config_reloads_total{result=\"success\"} went from $before to $after for $reloads reloads"
fi

# ---- an invalid file keeps the running configuration -------------------------------------
use "$work/a.yaml"
t_ok=$(metric llmq_gateway_config_last_reload_success_timestamp_seconds)
sed 's/^  admin_keys:/  admin_kyes: [x]\n  admin_keys:/' "$work/b.yaml" >"$work/gateway.yaml"
code=$(admin_reload)
if [ "$code" = 400 ] && grep -q 'admin_kyes' "$work/reload" && grep -q 'line' "$work/reload"; then
  pass "a misspelled key: refused, naming the key and line ($(grep -o '"message":"[^"]*"' "$work/reload" | head -c 200))"
else
  fail "a misspelled key: $code $(cat "$work/reload")"
fi
check "...the last reload is marked failed" 0 "$(metric llmq_gateway_config_last_reload_successful)"
check "...and counted" 1 "$(metric llmq_gateway_config_reloads_total 'result="failure"')"
check "...the last success's time stays" "$t_ok" "$(metric llmq_gateway_config_last_reload_success_timestamp_seconds)"
check "...A's east still serves" 200 "$(chat key-a gpt-4o-east)"
check "...and key-b is still refused" 401 "$(chat key-b gpt-4o)"
printf 'azure_open_ai: [\n' >"$work/gateway.yaml"
kill -HUP "$gw_pid"
for _ in $(seq 1 50); do
  [ "$(metric llmq_gateway_config_reloads_total 'result="failure"')" = 2 ] && break
  sleep 0.1
done
check "SIGHUP with broken YAML: counted as failed" 2 "$(metric llmq_gateway_config_reloads_total 'result="failure"')"
check "...still serving" 200 "$(chat key-a gpt-4o-east)"
if grep -q "configuration not reloaded" "$work/gateway.log"; then
  pass "the log says why a reload was refused"
else
  fail "no log line for a refused reload"
fi

# ---- a key that needs a restart ----------------------------------------------------------
sed 's/^  port: 0/  port: 1/' "$work/b.yaml" >"$work/gateway.yaml"
sed -i 's/^  listen_address: 127.0.0.1/  listen_address: 127.0.0.1\n  max_connections: 7/' "$work/gateway.yaml"
code=$(admin_reload)
check "restart-only keys: the rest is reloaded" 200 "$code"
if grep -q 'gateway.max_connections' "$work/reload"; then
  pass "...and the answer names gateway.max_connections as taking effect at a restart"
else
  fail "restart-only key not named: $(cat "$work/reload")"
fi
check "...north serves (B is in use)" 200 "$(chat key-a gpt-4o-north)"
check "...on the same port" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$gw/healthz")"
check "the last reload is successful again" 1 "$(metric llmq_gateway_config_last_reload_successful)"

# ---- the access log is reopened (log rotation) ---------------------------------------------
mv "$work/access.log" "$work/access.log.1"
use "$work/a.yaml"
check "after the move and reload: a request" 200 "$(chat key-a gpt-4o-east)"
for _ in $(seq 1 50); do
  [ -s "$work/access.log" ] && break
  sleep 0.1
done
if [ -s "$work/access.log" ] && grep -q '"status":200' "$work/access.log" &&
  [ "$(wc -l <"$work/access.log.1")" -gt 100 ]; then
  pass "the access log is reopened: new lines in a new file, the old one kept"
else
  fail "access log after reload: $(ls -l "$work"/access.log* 2>&1)"
fi

# ---- loud defaults at start ---------------------------------------------------------------
check "/metrics without a key once client keys exist" 401 \
  "$(curl -s -o /dev/null -w '%{http_code}' "$gw/metrics")"
check "/healthz stays open" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$gw/healthz")"
config "$work/open.yaml" "gpt-4o-east gpt-4o" --
sed -i 's/^  listen_address: 127.0.0.1/  listen_address: 0.0.0.0/' "$work/open.yaml"
start_server open env LLMQ_TEST_MOCK_URL="$mock_url" "$gateway_bin" --config "$work/open.yaml"
if grep -q "no gateway.client_keys: anyone who can reach" "$work/open.log" &&
  grep -q "listening on 0.0.0.0 without TLS" "$work/open.log"; then
  pass "without client keys, beyond loopback in clear text: both warnings at start"
else
  fail "start-up warnings: $(head -5 "$work/open.log")"
fi
check "...and /metrics is public then" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$server_url/metrics")"
refused_start() {  # refused_start NAME CONFIG PATTERN: exit 2 and PATTERN in its output
  local code=0
  LLMQ_TEST_MOCK_URL="$mock_url" timeout 10 "$gateway_bin" --config "$2" --port 0 \
    >"$work/refused.log" 2>&1 || code=$?
  if [ "$code" = 2 ] && grep -q "$3" "$work/refused.log"; then
    pass "$1"
  else
    fail "$1: exit $code, $(tail -2 "$work/refused.log")"
  fi
}
config "$work/required.yaml" "gpt-4o-east gpt-4o" -- ++ "require_client_keys: true"
refused_start "require_client_keys without keys: the start is refused" "$work/required.yaml" \
  "gateway.require_client_keys: true, but gateway.client_keys is empty"
config "$work/typo.yaml" "gpt-4o-east gpt-4o" -- key-a ++ "read_timout_seconds: 5"
refused_start "a misspelled gateway key stops the start with its line" "$work/typo.yaml" \
  "gateway.read_timout_seconds: unknown key.*(line [0-9]*)"

if grep -q "key-a\|key-b\|admin-key-1\|reload-upstream-key" "$work/gateway.log"; then
  fail "a key appears in the gateway's log"
else
  pass "no key in the gateway's log"
fi
echo "reload: $failed failed"
[ "$failed" -eq 0 ]
