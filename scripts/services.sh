#!/usr/bin/env bash
# Starts or stops the servers the store tests (llmq_store_tests) talk to, all on 127.0.0.1:
#   - a standalone redis-server on $LLMQ_TEST_REDIS_PORT (default 6390),
#   - a 3-node Redis Cluster on $LLMQ_TEST_REDIS_CLUSTER_PORT and the next two ports
#     (default 7101-7103; no replicas),
#   - a TLS-only redis-server on $LLMQ_TEST_REDIS_TLS_PORT (default 6392; no client
#     certificate required), with a throwaway CA and certificates made by the openssl CLI
#     in $LLMQ_TEST_TLS_DIR (default $LLMQ_SERVICES_DIR/tls): ca.crt/ca.key, server.crt/key
#     (subjectAltName DNS:localhost, IP:127.0.0.1), client.crt/key (for mutual TLS), and
#     wrong-host.crt/key (DNS:wrong-host.invalid only, for host name mismatch tests),
#   - a private PostgreSQL instance on $LLMQ_TEST_PG_PORT (default 5433), superuser
#     "postgres", trust authentication, database "postgres".
# State (data, logs, pid files) lives in $LLMQ_SERVICES_DIR (default /tmp/llmq-services).
# Nothing is persisted: redis runs without RDB/AOF, PostgreSQL with fsync=off.
#
# Usage: scripts/services.sh start|stop|status
# Idempotent: `start` leaves running servers alone, `stop` ignores stopped ones.
# Needs redis-server, redis-cli, openssl and PostgreSQL (scripts/install-deps.sh installs
# them).
# As root, PostgreSQL runs as the "postgres" user (it refuses to run as root).
set -euo pipefail

dir=${LLMQ_SERVICES_DIR:-/tmp/llmq-services}
redis_port=${LLMQ_TEST_REDIS_PORT:-6390}
cluster_base=${LLMQ_TEST_REDIS_CLUSTER_PORT:-7101}
cluster_ports=("$cluster_base" "$((cluster_base + 1))" "$((cluster_base + 2))")
pg_port=${LLMQ_TEST_PG_PORT:-5433}
pg_data="$dir/pg"
tls_port=${LLMQ_TEST_REDIS_TLS_PORT:-6392}
tls_dir=${LLMQ_TEST_TLS_DIR:-$dir/tls}

log() { echo "services: $*"; }

redis_up() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

redis_tls_cli() {  # redis-cli against the TLS server, trusting the test CA
  # Bounded: a server on that port that does not speak TLS would never answer.
  timeout 5 redis-cli --tls --cacert "$tls_dir/ca.crt" -h 127.0.0.1 -p "$tls_port" "$@"
}

redis_tls_up() { [ -f "$tls_dir/ca.crt" ] && redis_tls_cli ping 2>/dev/null | grep -q PONG; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for <seconds> <command...>
  local limit=$1
  shift
  local i
  for ((i = 0; i < limit * 10; i++)); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  return 1
}

start_redis() {  # start_redis <port> [extra redis-server args...]
  local port=$1
  shift
  if redis_up "$port"; then
    log "redis on 127.0.0.1:$port already running"
    return 0
  fi
  local d="$dir/redis-$port"
  mkdir -p "$d"
  redis-server --bind 127.0.0.1 --port "$port" --protected-mode no --daemonize yes \
    --dir "$d" --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
    --save '' --appendonly no "$@"
  if ! wait_for 10 redis_up "$port"; then
    log "redis on port $port did not come up; see $d/redis.log"
    return 1
  fi
  log "redis on 127.0.0.1:$port started"
}

stop_redis() {
  local port=$1
  if redis_up "$port"; then
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait_for 10 bash -c "! redis-cli -h 127.0.0.1 -p $port ping >/dev/null 2>&1" || true
    log "redis on 127.0.0.1:$port stopped"
  fi
  rm -rf "$dir/redis-$port"
}

# The throwaway CA and certificates of the TLS server (P-256 keys, valid 10 years), made
# once; the file "complete" marks a set that was made and checked entirely.
make_certs() {
  if [ -f "$tls_dir/complete" ]; then return 0; fi
  if ! command -v openssl >/dev/null 2>&1; then
    log "openssl not found (install openssl)"
    return 1
  fi
  rm -rf "$tls_dir"
  mkdir -p "$tls_dir"
  (
    cd "$tls_dir"
    umask 077
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    sign() {  # sign <name> <subject> <extensions>
      key "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
      printf '%b\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    key ca.key
    openssl req -x509 -new -key ca.key -subj "/CN=llmq test CA" -days 3650 -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    sign server "/CN=localhost" "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"
    sign wrong-host "/CN=wrong-host.invalid" "basicConstraints=CA:FALSE\nsubjectAltName=DNS:wrong-host.invalid\nextendedKeyUsage=serverAuth"
    sign client "/CN=llmq-test-client" "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth"
    chmod 644 ./*.crt  # certificates are public; keys stay private (umask)
    # Errors above do not stop this subshell (it runs under ||): this check decides.
    openssl verify -CAfile ca.crt server.crt wrong-host.crt client.crt
  ) >"$dir/tls-certs.log" 2>&1 || {
    log "making the test certificates failed; see $dir/tls-certs.log"
    return 1
  }
  touch "$tls_dir/complete"
  log "test CA and certificates in $tls_dir"
}

start_redis_tls() {
  make_certs
  if redis_tls_up; then
    log "redis (TLS) on 127.0.0.1:$tls_port already running"
    return 0
  fi
  if port_busy "$tls_port"; then
    log "127.0.0.1:$tls_port is in use, but not by a TLS redis trusting $tls_dir/ca.crt;" \
      "stop it or set LLMQ_TEST_REDIS_TLS_PORT"
    return 1
  fi
  local d="$dir/redis-$tls_port"
  mkdir -p "$d"
  redis-server --bind 127.0.0.1 --port 0 --tls-port "$tls_port" \
    --tls-cert-file "$tls_dir/server.crt" --tls-key-file "$tls_dir/server.key" \
    --tls-ca-cert-file "$tls_dir/ca.crt" --tls-auth-clients no \
    --protected-mode no --daemonize yes \
    --dir "$d" --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
    --save '' --appendonly no
  if ! wait_for 10 redis_tls_up; then
    log "redis (TLS) on port $tls_port did not come up; see $d/redis.log"
    return 1
  fi
  log "redis (TLS) on 127.0.0.1:$tls_port started"
}

stop_redis_tls() {
  local d="$dir/redis-$tls_port"
  if redis_tls_up; then
    redis_tls_cli shutdown nosave >/dev/null 2>&1 || true
    wait_for 10 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$tls_port) 2>/dev/null" || true
    log "redis (TLS) on 127.0.0.1:$tls_port stopped"
  elif [ -f "$d/redis.pid" ] && kill "$(cat "$d/redis.pid")" 2>/dev/null; then
    log "redis (TLS) on 127.0.0.1:$tls_port stopped (by its pid file)"
  fi
  rm -rf "$d" "$tls_dir"
}

cluster_ok() {
  local p
  for p in "${cluster_ports[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
}

start_cluster() {
  local p
  for p in "${cluster_ports[@]}"; do
    start_redis "$p" --cluster-enabled yes --cluster-config-file "$dir/redis-$p/nodes.conf" \
      --cluster-node-timeout 2000
  done
  if cluster_ok; then
    log "redis cluster on ports ${cluster_ports[*]} ready"
    return 0
  fi
  # A node that already has slots or peers from an earlier, half-made cluster: start over.
  for p in "${cluster_ports[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" flushall >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 -p "$p" cluster reset hard >/dev/null 2>&1 || true
  done
  local nodes=()
  for p in "${cluster_ports[@]}"; do nodes+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1 || {
    log "redis-cli --cluster create failed; see $dir/cluster-create.log"
    return 1
  }
  if ! wait_for 30 cluster_ok; then
    log "redis cluster did not reach cluster_state:ok"
    return 1
  fi
  log "redis cluster on ports ${cluster_ports[*]} ready"
}

pg_bin() {
  local bin
  bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
    sort -V | tail -n 1)
  if [ -z "$bin" ]; then
    bin=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
  fi
  echo "$bin"
}

as_pg() {  # runs a command as the postgres user when we are root
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_up() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$pg_port" >/dev/null 2>&1; }

start_pg() {
  local bin
  bin=$(pg_bin)
  if [ ! -x "$bin/pg_ctl" ]; then
    log "PostgreSQL not found (install postgresql)"
    return 1
  fi
  if pg_up; then
    log "postgres on 127.0.0.1:$pg_port already running"
    return 0
  fi
  mkdir -p "$dir"
  if [ ! -f "$pg_data/PG_VERSION" ]; then
    rm -rf "$pg_data"
    mkdir -p "$pg_data"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pg_data"; fi
    chmod 700 "$pg_data"
    as_pg "$bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/pg-initdb.log" 2>&1 || {
      log "initdb failed; see $dir/pg-initdb.log"
      return 1
    }
  fi
  as_pg "$bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_data -c fsync=off -c full_page_writes=off" \
    start >/dev/null
  if ! wait_for 15 pg_up; then
    log "postgres did not come up; see $pg_data/server.log"
    return 1
  fi
  log "postgres on 127.0.0.1:$pg_port started (user postgres, trust auth)"
}

stop_pg() {
  local bin
  bin=$(pg_bin)
  if [ -f "$pg_data/postmaster.pid" ] && [ -x "$bin/pg_ctl" ]; then
    as_pg "$bin/pg_ctl" -D "$pg_data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    log "postgres on 127.0.0.1:$pg_port stopped"
  fi
}

status() {  # exit status 0 only when everything is up
  local p rc=0
  for p in "$redis_port" "${cluster_ports[@]}"; do
    if redis_up "$p"; then log "redis :$p up"; else log "redis :$p down"; rc=1; fi
  done
  if cluster_ok; then log "cluster state ok"; else log "cluster state not ok"; rc=1; fi
  if redis_tls_up; then log "redis (TLS) :$tls_port up"; else log "redis (TLS) :$tls_port down"; rc=1; fi
  if pg_up; then log "postgres :$pg_port up"; else log "postgres :$pg_port down"; rc=1; fi
  return $rc
}

case "${1:-}" in
  start)
    mkdir -p "$dir"
    start_redis "$redis_port"
    start_cluster
    start_redis_tls
    start_pg
    echo "export LLMQ_TEST_REDIS_PORT=$redis_port LLMQ_TEST_REDIS_CLUSTER_PORT=$cluster_base" \
      "LLMQ_TEST_REDIS_TLS_PORT=$tls_port LLMQ_TEST_TLS_DIR=$tls_dir" \
      "LLMQ_TEST_PG_CONNINFO='host=127.0.0.1 port=$pg_port user=postgres dbname=postgres'"
    ;;
  stop)
    stop_redis "$redis_port"
    for p in "${cluster_ports[@]}"; do stop_redis "$p"; done
    stop_redis_tls
    stop_pg
    ;;
  status)
    status
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
