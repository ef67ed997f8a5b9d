#!/usr/bin/env bash
# The fault soak of llmq-gateway (docs/reliability.md, "Fault soak").
#
#   tests/soak/run.sh short     # 60 s of load, under 2 minutes in all (CI)
#   tests/soak/run.sh long      # 1 000 000 requests
#
# Starts, all on 127.0.0.1 and all its own (the shared test services are not touched):
# a redis-server (the gateway's shared limits), a PostgreSQL instance initdb'd into a
# scratch directory (the gateway's telemetry), llmq-mock-azure with the faults of
# tests/soak/mock.yaml, and llmq-gateway with tests/soak/gateway.yaml; then runs llmq-soak,
# which loads the gateway, pauses Redis, restarts PostgreSQL and checks everything.
# Exit code: llmq-soak's (0 pass, 1 a violation, 2 the driver failed), 3 when the setup
# failed, 4 when the soak failed against a gateway that does not know
# gateway.upstream_timeout_seconds (an upstream that never answers then holds a request for
# the HTTP client's 120 s, past the bound: a known defect, reported as such).
#
# Settings (environment): SOAK_BUILD (default build/release: the release build's
# binaries), SOAK_DURATION (seconds of load), SOAK_REQUESTS (requests instead of a
# duration), SOAK_CLIENTS, SOAK_SEED, SOAK_KEEP=1 (keep the logs), SOAK_MOCK_CONFIG and
# SOAK_GATEWAY_CONFIG (other configurations than tests/soak/mock.yaml and gateway.yaml,
# e.g. one fault at a time to reproduce a violation), SOAK_ARGS (more llmq-soak options,
# e.g. "--redis-pause-every 0 --pg-restart-every 0" for a run without either).
# Needs redis-server, PostgreSQL (initdb, pg_ctl, psql; /usr/lib/postgresql/*/bin) and
# the release build of llmq-gateway, llmq-mock-azure and llmq-soak.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mode=${1:-short}
build=${SOAK_BUILD:-$root/build/release}
gateway_bin=$build/apps/gateway/llmq-gateway
mock_bin=$build/tools/mock_azure/llmq-mock-azure
soak_bin=$build/tests/soak/llmq-soak

case "$mode" in
  short)  # Redis paused at 10 and 35 s; PostgreSQL restarted at 20 and 45 s
    load=(--duration 60 --redis-pause-first 10 --redis-pause-every 25 --redis-pause-for 3
          --pg-restart-first 20 --pg-restart-every 25)
    ;;
  long)  # Redis paused every minute, PostgreSQL restarted every two
    load=(--requests 1000000 --redis-pause-first 30 --redis-pause-every 60 --redis-pause-for 3
          --pg-restart-first 45 --pg-restart-every 120)
    ;;
  *)
    echo "usage: $0 short|long" >&2
    exit 2
    ;;
esac
# The amount of load from the environment replaces the mode's (the first two words).
if [ -n "${SOAK_REQUESTS:-}" ]; then
  load=(--requests "$SOAK_REQUESTS" "${load[@]:2}")
elif [ -n "${SOAK_DURATION:-}" ]; then
  load=(--duration "$SOAK_DURATION" "${load[@]:2}")
fi

for b in "$gateway_bin" "$mock_bin" "$soak_bin"; do
  [ -x "$b" ] || { echo "soak: $b is missing (cmake --build --preset release)" >&2; exit 3; }
done
pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
[ -n "$pg_bin" ] || pg_bin=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
for b in "$pg_bin/initdb" "$pg_bin/pg_ctl" "$(command -v redis-server || true)" "$(command -v psql || true)"; do
  [ -n "$b" ] && [ -x "$b" ] || { echo "soak: redis-server and PostgreSQL (initdb, pg_ctl, psql) are needed" >&2; exit 3; }
done

# shellcheck source=../../scripts/lib/servers.sh
source "$root/scripts/lib/servers.sh"  # $work, pids, start_server, stop_servers on exit
chmod 755 "$work"
redis_pid=""
pg_data=$work/pg
log() { echo "soak: $*"; }

pg_as=()  # PostgreSQL refuses to run as root
if [ "$(id -u)" -eq 0 ]; then pg_as=(runuser -u postgres --); fi
as_pg() { "${pg_as[@]}" "$@"; }
gateway_pid=""

cleanup() {
  local rc=$?
  if [ -n "$redis_pid" ]; then kill -CONT "$redis_pid" 2>/dev/null || true; fi
  if [ -n "$gateway_pid" ] && kill -TERM "$gateway_pid" 2>/dev/null; then
    # A graceful stop flushes telemetry into PostgreSQL, so that goes first; bounded.
    for _ in $(seq 1 50); do kill -0 "$gateway_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$gateway_pid" 2>/dev/null || true
  fi
  if [ -f "$pg_data/postmaster.pid" ]; then as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true; fi
  if [ "$rc" -ne 0 ] && [ -f "$work/gateway.log" ]; then
    log "last lines of the gateway's log:"
    tail -n 20 "$work/gateway.log" >&2 || true
  fi
  if [ "${SOAK_KEEP:-0}" = 1 ]; then
    local keep
    keep=$(mktemp -d /tmp/llmq-soak-logs.XXXXXX)
    cp -r "$work"/*.log "$work"/*.yaml "$pg_data/server.log" "$keep"/ 2>/dev/null || true
    log "logs kept in $keep"
  fi
  stop_servers
  exit "$rc"
}
trap cleanup EXIT

free_port() {  # a port nothing listens on (another process may still take it first)
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

wait_for() {  # wait_for SECONDS COMMAND...
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    if "${@:2}" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Redis: in the foreground of a background job, so that its pid is known and can be paused.
redis_port=$(free_port)
mkdir -p "$work/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --protected-mode no --save '' --appendonly no \
  --dir "$work/redis" --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_for 10 redis-cli -h 127.0.0.1 -p "$redis_port" ping || { log "redis did not start"; exit 3; }

# PostgreSQL: a fresh cluster, trust authentication on loopback only, no fsync.
pg_port=$(free_port)
mkdir -p "$pg_data" "$work/pgsock"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pg_data" "$work/pgsock"; fi
chmod 700 "$pg_data"
as_pg "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 --no-locale >"$work/initdb.log" 2>&1 \
  || { log "initdb failed"; cat "$work/initdb.log" >&2; exit 3; }
pg_opts="-c listen_addresses=127.0.0.1 -p $pg_port -k $work/pgsock -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
pg_start() { as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 30 -o "$pg_opts" start >/dev/null; }
pg_start || { log "postgres did not start"; cat "$pg_data/server.log" >&2; exit 3; }
psql_cmd="psql -h 127.0.0.1 -p $pg_port -U postgres -d postgres"
# The restart the driver runs mid-run: a fast shutdown (sessions are terminated), a pause, a start.
cat >"$work/pg_restart.sh" <<EOF
#!/usr/bin/env bash
set -e
${pg_as[*]} "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w -t 30 stop >/dev/null
sleep 2
${pg_as[*]} "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 30 -o "$pg_opts" start >/dev/null
EOF
chmod +x "$work/pg_restart.sh"

# The mock, then the gateway in front of it.
start_server mock "$mock_bin" --config "${SOAK_MOCK_CONFIG:-$here/mock.yaml}" || exit 3
mock_url=$server_url
mock_port=${mock_url##*:}
cp "${SOAK_GATEWAY_CONFIG:-$here/gateway.yaml}" "$work/gateway.yaml"
start_server gateway env SOAK_MOCK_URL="$mock_url" SOAK_UPSTREAM_KEY=soak-upstream-key \
  SOAK_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
  SOAK_PG_CONNINFO="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres" \
  "$gateway_bin" --config "$work/gateway.yaml" || exit 3
gateway_pid=${pids[-1]}
unset 'pids[-1]'  # stopped by cleanup, before PostgreSQL
gateway_port=${server_url##*:}
log "redis :$redis_port (pid $redis_pid), postgres :$pg_port, mock :$mock_port, gateway :$gateway_port (pid $gateway_pid)"

# The bound's parts are the gateway config's (gateway.yaml): request_timeout_seconds 10,
# upstream_timeout_seconds 4, the queue's 3 attempts; the slack covers the Redis command
# timeouts (0.5 s each, a few per attempt) and a busy machine.
set +e
"$soak_bin" --gateway-port "$gateway_port" --gateway-pid "$gateway_pid" --mock-port "$mock_port" \
  --redis-pid "$redis_pid" --pg-restart "$work/pg_restart.sh" --psql "$psql_cmd" \
  --request-timeout 10 --upstream-timeout 4 --max-attempts 3 --slack 3 \
  --clients "${SOAK_CLIENTS:-48}" --seed "${SOAK_SEED:-1}" \
  --model soak-chat --pinned d-5xx,d-reset,d-body,d-429,d-clean "${load[@]}" ${SOAK_ARGS:-} 2>&1 |
  tee "$work/soak.log"
rc=${PIPESTATUS[0]}
set -e
if ! kill -0 "$gateway_pid" 2>/dev/null; then log "the gateway is no longer running"; [ "$rc" -ne 0 ] || rc=1; fi
if [ "$rc" = 1 ] && grep -q "upstream_timeout_seconds: unknown key" "$work/gateway.log"; then
  log "KNOWN DEFECT: this llmq-gateway does not know gateway.upstream_timeout_seconds, so a stalled"
  log "upstream holds its request for the HTTP client's 120 s (see the violations above)"
  rc=4
fi
exit "$rc"
