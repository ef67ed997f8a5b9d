#!/usr/bin/env bash
# The dashboard in a real browser: llmq-mock-azure and llmq-gateway (four deployments, one
# paced by a low limit and one answering 429; a client key and an admin key) under traffic
# from curl (one user far over its limit), and headless Chromium loading
# /dashboard#key=... twice: the rendered page must name every deployment, show the data
# as live, and its numbers must change between the two loads. Keeps a screenshot.
#   dashboard_browser.sh MOCK_BINARY GATEWAY_BINARY SCREENSHOT_PNG
# Exits 77 (skipped) when no Chromium is installed, unless LLMQ_TEST_REQUIRE_SERVICES=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mock_bin=$1
gateway_bin=$2
screenshot=$3

browser=""
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then
    browser=$(command -v "$b")
    break
  fi
done
if [ -z "$browser" ]; then
  if [ "${LLMQ_TEST_REQUIRE_SERVICES:-0}" = 1 ]; then
    echo "dashboard browser: no chromium, and LLMQ_TEST_REQUIRE_SERVICES=1" >&2
    exit 1
  fi
  echo "dashboard browser: skipped (no chromium; scripts/install-deps.sh installs it)"
  exit 77
fi

# shellcheck source=../../scripts/lib/servers.sh
source "$here/../../scripts/lib/servers.sh"
# shellcheck source=../../scripts/lib/checks.sh
source "$here/../../scripts/lib/checks.sh"

cat >"$work/mock.yaml" <<YAML
api_key: dash-upstream-key
latency: {distribution: fixed, ms: 30}
deployments:
  - {name: gpt-4o-east, model: gpt-4o, type: chat}
  - {name: gpt-4o-slow, model: gpt-4o, type: chat}
  - {name: gpt-4o-west, model: gpt-4o, type: chat}
  - {name: embed-1, model: text-embedding-3-small, type: embeddings}
YAML
# gpt-4o-slow takes 60 requests a minute (1 a second): it is paced. gpt-4o-west is told
# to answer 429 (below): it backs off. The client key names no user: x-user-id does.
cat >"$work/gateway.yaml" <<YAML
azure_open_ai:
  - api_key: dash-upstream-key
    api_version: "2024-10-21"
    azure_endpoint: "\${LLMQ_TEST_MOCK_URL}"
    azure_oai_models:
      - {unique_model_id: gpt-4o-east, model_name_in_azure: gpt-4o, deployment_name_in_azure: gpt-4o-east,
         model_type: chat, req_per_min: 600, tokens_per_min: 10000000}
      - {unique_model_id: gpt-4o-slow, model_name_in_azure: gpt-4o, deployment_name_in_azure: gpt-4o-slow,
         model_type: chat, req_per_min: 60, tokens_per_min: 10000000}
      - {unique_model_id: gpt-4o-west, model_name_in_azure: gpt-4o, deployment_name_in_azure: gpt-4o-west,
         model_type: chat, req_per_min: 600, tokens_per_min: 10000000}
      - {unique_model_id: embed-1, model_name_in_azure: text-embedding-3-small, deployment_name_in_azure: embed-1,
         model_type: embeddings, req_per_min: 6000, tokens_per_min: 100000000}
user_limits:
  max_num_requests_in_time_window: 20
  time_window_in_seconds: 60
scheduler_limits:
  max_queue_size: 1000
  request_timeout_seconds: 30
gateway:
  listen_address: 127.0.0.1
  port: 0
  user_header: x-user-id
  client_keys:
    - {key: dash-client-key}
  admin_keys: [dash-admin-key]
YAML

start_server llmq-mock-azure "$mock_bin" --config "$work/mock.yaml"
mock_url=$server_url
start_server llmq-gateway env LLMQ_TEST_MOCK_URL="$mock_url" "$gateway_bin" \
  --config "$work/gateway.yaml"
gw=$server_url

# ---- the page and the JSON endpoint over plain HTTP -------------------------------------
code=$(curl -s -o "$work/page.html" -D "$work/page.headers" -w '%{http_code}' "$gw/dashboard")
if [ "$code" = 200 ] && grep -qi "^content-security-policy: default-src 'none'" "$work/page.headers" &&
  grep -qi '^x-content-type-options: nosniff' "$work/page.headers" &&
  grep -qi '^cache-control: no-store' "$work/page.headers"; then
  pass "/dashboard: 200 with a strict content security policy, nosniff, no-store"
else
  fail "/dashboard: $code, headers: $(tr '\r\n' '  ' <"$work/page.headers")"
fi
if grep -q "dash-client-key\|dash-admin-key" "$work/page.html"; then
  fail "/dashboard embeds a key"
else
  pass "/dashboard embeds no key"
fi
stats_code() { curl -s -o /dev/null -w '%{http_code}' "$@" "$gw/stats"; }
[ "$(stats_code)" = 401 ] && pass "/stats without a key: 401" || fail "/stats without a key"
[ "$(stats_code -H 'Authorization: Bearer dash-admin-key')" = 200 ] &&
  pass "/stats with the admin key: 200" || fail "/stats with the admin key"
[ "$(stats_code -H 'api-key: dash-client-key')" = 200 ] &&
  pass "/stats with a client key: 200" || fail "/stats with a client key"

# ---- traffic ----------------------------------------------------------------------------
curl -s -o /dev/null -X PUT -H 'content-type: application/json' \
  -d '{"force_429": true, "force_429_retry_after_ms": 30000}' \
  "$mock_url/mock/deployments/gpt-4o-west/faults"
traffic() {
  local i=0 user
  while [ -e "$work/traffic.on" ]; do
    i=$((i + 1))
    user=$([ $((i % 2)) = 0 ] && echo batch-job || echo "user-$((i % 7))")  # batch-job: over its limit
    curl -s -o /dev/null -m 20 -H 'api-key: dash-client-key' -H 'content-type: application/json' \
      -H "x-user-id: $user" \
      -d '{"model":"gpt-4o","messages":[{"role":"user","content":"hello '"$i"'"}],"max_tokens":8}' \
      "$gw/v1/chat/completions" &
    if [ $((i % 4)) = 0 ]; then  # 2.5 a second for a deployment that takes 1
      curl -s -o /dev/null -m 20 -H 'api-key: dash-client-key' -H 'content-type: application/json' \
        -H "x-user-id: paced-user-$((i % 5))" -d '{"model":"gpt-4o-slow","messages":[{"role":"user","content":"paced '"$i"'"}],"max_tokens":8}' \
        "$gw/v1/chat/completions" &
    fi
    curl -s -o /dev/null -m 20 -H 'api-key: dash-client-key' -H 'content-type: application/json' \
      -H "x-user-id: embed-user-$((i % 20))" \
      -d '{"model":"text-embedding-3-small","input":"text '"$i"'"}' "$gw/v1/embeddings" &
    sleep 0.1
  done
  wait
}
touch "$work/traffic.on"
traffic &
traffic_pid=$!
stop_traffic() {
  rm -f "$work/traffic.on"
  wait "$traffic_pid" 2>/dev/null || true
}
sleep 3

# ---- the browser --------------------------------------------------------------------------
url="$gw/dashboard#key=dash-admin-key"
chrome() {  # chrome ARGS...: headless Chromium, bounded in time, its own profile
  timeout 60 "$browser" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --no-first-run --no-default-browser-check --disable-extensions --mute-audio \
    --user-data-dir="$work/profile" --virtual-time-budget=2500 "$@" 2>>"$work/chromium.log"
}
admitted_in() { sed -n 's/.*id="admitted">\([^<]*\)<.*/\1/p' "$1" | head -1; }
updated_in() { sed -n 's/.*id="updated"[^>]*>\([^<]*\)<.*/\1/p' "$1" | head -1; }

chrome --dump-dom "$url" >"$work/dom1.html" || true
sleep 2
chrome --dump-dom "$url" >"$work/dom2.html" || true
for d in gpt-4o-east gpt-4o-slow gpt-4o-west embed-1; do
  if grep -q ">$d<" "$work/dom1.html" && grep -q ">$d<" "$work/dom2.html"; then
    pass "the rendered page names $d"
  else
    fail "the rendered page does not name $d"
  fi
done
if grep -q '>batch-job<' "$work/dom2.html"; then
  pass "the rendered page names the user over its limit"
else
  fail "the rendered page does not name batch-job"
fi
if grep -q 'id="status" class="status ok">live<' "$work/dom2.html"; then
  pass "the page read /stats with the key from its fragment"
else
  fail "the page's status: $(grep -o 'id="status"[^<]*' "$work/dom2.html" || echo none)"
fi
a1=$(admitted_in "$work/dom1.html")
a2=$(admitted_in "$work/dom2.html")
u1=$(updated_in "$work/dom1.html")
u2=$(updated_in "$work/dom2.html")
if [ -n "$a1" ] && [ "$a1" != "-" ] && [ "$a1" != "$a2" ] && [ "$u1" != "$u2" ]; then
  pass "the numbers changed between two loads (admitted $a1 -> $a2)"
else
  fail "the numbers did not change: admitted '$a1' -> '$a2', time '$u1' -> '$u2'"
fi

# Without the key the page still loads but shows no data.
chrome --dump-dom "$gw/dashboard" >"$work/dom-nokey.html" || true
if grep -q '401' "$work/dom-nokey.html" && ! grep -q ">gpt-4o-east<" "$work/dom-nokey.html"; then
  pass "without a key the page shows 401 and no data"
else
  fail "without a key: $(grep -o 'id="status"[^<]*' "$work/dom-nokey.html" || echo none)"
fi

rm -f "$screenshot"
chrome --screenshot="$screenshot" --window-size=1280,1250 --hide-scrollbars "$url" >/dev/null || true
if [ -s "$screenshot" ] && [ "$(head -c 8 "$screenshot" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
  pass "screenshot kept in $screenshot"
else
  fail "no screenshot ($(tail -3 "$work/chromium.log" | tr '\n' ' '))"
fi
stop_traffic

if [ "$failed" -ne 0 ]; then
  echo "--- chromium log" >&2
  tail -20 "$work/chromium.log" >&2 || true
  echo "--- first page" >&2
  head -c 3000 "$work/dom1.html" >&2 || true
fi
echo "dashboard browser: $failed failed"
[ "$failed" -eq 0 ]
