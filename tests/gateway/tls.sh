#!/usr/bin/env bash
# TLS on llmq-gateway's listener, with a throwaway CA made here (openssl): HTTPS with curl
# (certificate checked, TLS 1.2 at least, ALPN http/1.1, clear text refused), mutual TLS
# (no certificate, one from another CA, one from the CA), files that cannot be used, and
# the official openai npm client over HTTPS trusting only that CA.
#   tls.sh MOCK_BINARY GATEWAY_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mock_bin=$1
gateway_bin=$2
# shellcheck source=../../scripts/lib/servers.sh
source "$here/../../scripts/lib/servers.sh"
# shellcheck source=../../scripts/lib/checks.sh
source "$here/../../scripts/lib/checks.sh"

# ---- a throwaway PKI -------------------------------------------------------------------
pki=$work/pki
mkdir -p "$pki"
cd "$pki"
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
make_ca() {  # make_ca NAME
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=llmq test $1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
}
make_cert() {  # make_cert NAME CA EXTENSIONS
  ec "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf '%s\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days 2 -extfile "$1.ext" 2>/dev/null
}
make_ca ca
make_ca other-ca
make_cert server ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
make_cert client ca "extendedKeyUsage=clientAuth"
make_cert stranger other-ca "extendedKeyUsage=clientAuth"
ec unrelated.key
cd - >/dev/null

# ---- configurations --------------------------------------------------------------------
# The openai-package test's deployments and client key, plus one slow deployment (and
# the package test's streaming one).
cat >"$work/mock.yaml" <<YAML
api_key: tls-upstream-key
latency: {distribution: fixed, ms: 2}
deployments:
  - {name: gpt-4o-east, model: gpt-4o, type: chat}
  - {name: gpt-4o-west, model: gpt-4o, type: chat}
  - {name: embed-1, model: text-embedding-3-small, type: embeddings}
  - {name: slow, model: slow-model, type: chat, latency: {distribution: fixed, ms: 20000}}
  - {name: gpt-4o-slow, model: gpt-4o-slow, type: chat, stream_tokens_per_second: 50}
YAML
tls_config() {  # tls_config FILE [CLIENT_CA]
  cat >"$1" <<YAML
azure_open_ai:
  - api_key: tls-upstream-key
    api_version: "2024-10-21"
    azure_endpoint: "\${LLMQ_TEST_MOCK_URL}"
    azure_oai_models:
      - {unique_model_id: gpt-4o-east, model_name_in_azure: gpt-4o, deployment_name_in_azure: gpt-4o-east,
         model_type: chat, req_per_min: 60000, tokens_per_min: 100000000}
      - {unique_model_id: gpt-4o-west, model_name_in_azure: gpt-4o, deployment_name_in_azure: gpt-4o-west,
         model_type: chat, req_per_min: 60000, tokens_per_min: 100000000}
      - {unique_model_id: embed-1, model_name_in_azure: text-embedding-3-small, deployment_name_in_azure: embed-1,
         model_type: embeddings, req_per_min: 60000, tokens_per_min: 100000000}
      - {unique_model_id: slow, model_name_in_azure: slow-model, deployment_name_in_azure: slow,
         model_type: chat, req_per_min: 60000, tokens_per_min: 100000000}
      - {unique_model_id: gpt-4o-slow, model_name_in_azure: gpt-4o-slow, deployment_name_in_azure: gpt-4o-slow,
         model_type: chat, req_per_min: 60000, tokens_per_min: 100000000, error_backoff_in_seconds: 0.2}
user_limits:
  max_num_requests_in_time_window: 40
  time_window_in_seconds: 60
gateway:
  listen_address: 127.0.0.1
  port: 0
  upstream_timeout_seconds: 30
  client_keys:
    - key: client-key-1
  tls_cert_file: $pki/server.pem
  tls_key_file: $pki/server.key
YAML
  if [ -n "${2:-}" ]; then echo "  tls_client_ca_file: $2" >>"$1"; fi
}
tls_config "$work/tls.yaml"
tls_config "$work/mtls.yaml" "$pki/ca.pem"

start_server llmq-mock-azure "$mock_bin" --config "$work/mock.yaml"
mock_url=$server_url
run_gateway() {  # run_gateway NAME CONFIG: sets url
  start_server "$1" env LLMQ_TEST_MOCK_URL="$mock_url" "$gateway_bin" --config "$2"
  url="https://127.0.0.1:$(cat "$work/$1.port")"
}
run_gateway gateway-tls "$work/tls.yaml"
tls_url=$url
tls_port=$(cat "$work/gateway-tls.port")
run_gateway gateway-mtls "$work/mtls.yaml"
mtls_url=$url

chat='{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
auth=(-H "api-key: client-key-1" -H "x-user-id: tls-test" -H "content-type: application/json")

# ---- TLS -------------------------------------------------------------------------------
expect "HTTPS with the CA: /healthz" curl -fsS --cacert "$pki/ca.pem" "$tls_url/healthz"
expect "HTTPS with the CA: a chat completion" \
  curl -fsS --cacert "$pki/ca.pem" "${auth[@]}" -d "$chat" "$tls_url/v1/chat/completions"
refuse "a client that does not trust the CA refuses the server" \
  curl -fsS "$tls_url/healthz"
curl -sS -v --http2 --cacert "$pki/ca.pem" "$tls_url/healthz" >/dev/null 2>"$work/alpn" || true
if grep -qi "ALPN.*accepted http/1.1\|ALPN, server accepted to use http/1.1" "$work/alpn"; then
  pass "ALPN: a client offering h2 and http/1.1 gets http/1.1"
else
  fail "ALPN: $(grep -i alpn "$work/alpn" | tr '\n' ' ')"
fi
metric() {  # metric NAME: its value on the TLS gateway
  curl -fsS --cacert "$pki/ca.pem" -H "api-key: client-key-1" "$tls_url/metrics" |
    awk -v n="$1" '$1 == n {print $2}'
}
handshake_failures() { metric llmq_gateway_tls_handshake_failures_total; }
before=$(handshake_failures)
refuse "TLS 1.1 is refused" \
  openssl s_client -connect "127.0.0.1:$tls_port" -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' \
  -CAfile "$pki/ca.pem" </dev/null
expect "TLS 1.2 is accepted" \
  openssl s_client -connect "127.0.0.1:$tls_port" -tls1_2 -CAfile "$pki/ca.pem" \
  -verify_return_error </dev/null
refuse "clear-text HTTP to the TLS port gets no answer" \
  curl -fsS --max-time 5 "http://127.0.0.1:$tls_port/healthz"
after=$(handshake_failures)
if [ "$after" -ge $((before + 2)) ]; then
  pass "failed handshakes are counted ($before -> $after)"
else
  fail "llmq_gateway_tls_handshake_failures_total went from $before to $after"
fi
gone_before=$(metric llmq_gateway_client_disconnects_total)
slow='{"model":"slow-model","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
refuse "a TLS client that gives up on a slow answer" \
  curl -fsS --max-time 1 --cacert "$pki/ca.pem" "${auth[@]}" -d "$slow" "$tls_url/v1/chat/completions"
gone=$gone_before
for _ in $(seq 1 50); do
  gone=$(metric llmq_gateway_client_disconnects_total)
  [ "$gone" -gt "$gone_before" ] && break
  sleep 0.1
done
if [ "$gone" -gt "$gone_before" ]; then
  pass "...is noticed over TLS and its request cancelled ($gone_before -> $gone)"
else
  fail "a TLS client's disconnect went unnoticed (llmq_gateway_client_disconnects_total $gone)"
fi
if grep -q "listening on https://" "$work/gateway-tls.log"; then
  pass "the start-up line says https"
else
  fail "start-up line: $(head -3 "$work/gateway-tls.log")"
fi

# ---- mutual TLS ------------------------------------------------------------------------
refuse "mTLS: no client certificate is refused" \
  curl -fsS --cacert "$pki/ca.pem" "$mtls_url/healthz"
refuse "mTLS: a certificate from another CA is refused" \
  curl -fsS --cacert "$pki/ca.pem" --cert "$pki/stranger.pem" --key "$pki/stranger.key" \
  "$mtls_url/healthz"
expect "mTLS: the CA's client certificate is accepted" \
  curl -fsS --cacert "$pki/ca.pem" --cert "$pki/client.pem" --key "$pki/client.key" \
  "${auth[@]}" -d "$chat" "$mtls_url/v1/chat/completions"

# ---- certificates read again on reload (SIGHUP) ----------------------------------------
cp "$pki/server.pem" "$pki/live.pem"
cp "$pki/server.key" "$pki/live.key"
sed -e "s|$pki/server.pem|$pki/live.pem|" -e "s|$pki/server.key|$pki/live.key|" \
  -e "s|^gateway:|gateway:\n  admin_keys: [tls-admin-key]|" "$work/tls.yaml" >"$work/live.yaml"
run_gateway gateway-live "$work/live.yaml"
live_url=$url
live_pid=${pids[-1]}
live_metric() {  # live_metric CA NAME: a metric of the reloading gateway
  curl -fsS --cacert "$1" -H "api-key: tls-admin-key" "$live_url/metrics" |
    NAME=$2 awk '$1 == ENVIRON["NAME"] {print $2}'
}
until_reloads() {  # until_reloads CA RESULT N: waits (5 s at most) for N reloads with RESULT
  for _ in $(seq 1 50); do
    [ "$(live_metric "$1" "llmq_gateway_config_reloads_total{result=\"$2\"}")" = "$3" ] && return 0
    sleep 0.1
  done
  return 1
}
expect "reload: the first certificate is served" curl -fsS --cacert "$pki/ca.pem" "$live_url/healthz"
(cd "$pki" && make_cert renewed other-ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth")
cp "$pki/renewed.pem" "$pki/live.pem"
cp "$pki/renewed.key" "$pki/live.key"
kill -HUP "$live_pid"
expect "reload: SIGHUP reads the renewed certificate" until_reloads "$pki/other-ca.pem" success 1
expect "...new connections get it" \
  curl -fsS --cacert "$pki/other-ca.pem" "${auth[@]}" -d "$chat" "$live_url/v1/chat/completions"
refuse "...and no longer the old one" curl -fsS --cacert "$pki/ca.pem" "$live_url/healthz"
echo "not a certificate" >"$pki/live.pem"
kill -HUP "$live_pid"
expect "reload: an unreadable certificate is refused" until_reloads "$pki/other-ca.pem" failure 1
expect "...and the renewed one is still served" \
  curl -fsS --cacert "$pki/other-ca.pem" "$live_url/healthz"
if grep -q "configuration not reloaded.*live.pem" "$work/gateway-live.log"; then
  pass "...the log names the file"
else
  fail "no log line naming live.pem: $(grep -i reload "$work/gateway-live.log" | tail -2)"
fi

# ---- files that cannot be used -----------------------------------------------------------
bad_start() {  # bad_start NAME CONFIG PATTERN: the gateway exits 2 naming the problem
  local code=0
  LLMQ_TEST_MOCK_URL="$mock_url" timeout 10 "$gateway_bin" \
    --config "$2" --port 0 >"$work/bad.log" 2>&1 || code=$?
  if [ "$code" -eq 2 ] && grep -q "$3" "$work/bad.log"; then
    pass "$1"
  else
    fail "$1: exit $code, $(tail -2 "$work/bad.log")"
  fi
}
sed "s|$pki/server.key|$pki/unrelated.key|" "$work/tls.yaml" >"$work/mismatch.yaml"
bad_start "a key that does not match the certificate stops the start" "$work/mismatch.yaml" \
  "TLS private key .*unrelated.key.*mismatch"
sed "s|$pki/server.pem|$pki/missing.pem|" "$work/tls.yaml" >"$work/missing.yaml"
bad_start "a missing certificate file stops the start" "$work/missing.yaml" "missing.pem"
grep -v tls_key_file "$work/tls.yaml" >"$work/half.yaml"
bad_start "a certificate without its key is a config error" "$work/half.yaml" \
  "gateway.tls_key_file"
if grep -q "BEGIN" "$work/bad.log" 2>/dev/null; then fail "key material in an error"; fi

# ---- the official openai client over HTTPS ---------------------------------------------
if [ -d "$here/openai_node/node_modules/openai" ] || (cd "$here/openai_node" &&
  npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1); then
  if GATEWAY_URL="$tls_url" MOCK_URL="$mock_url" NODE_EXTRA_CA_CERTS="$pki/ca.pem" \
    node "$here/openai_node/test.mjs" \
    >"$work/node.log" 2>&1; then
    pass "openai npm client over HTTPS: $(grep -c '^ok' "$work/node.log") checks"
  else
    fail "openai npm client over HTTPS: $(grep FAIL "$work/node.log" | head -3)"
  fi
else
  fail "openai npm package could not be installed"
fi

echo "tls: $failed failed"
[ "$failed" -eq 0 ]
