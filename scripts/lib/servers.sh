# shellcheck shell=bash
# Sourced by the scripts that run llmq's programs in the background on loopback (the demo,
# the gateway's script tests, the gateway benchmark). Gives them:
#   $work             a scratch directory, removed on exit
#   pids              the background processes, sent SIGTERM and waited for on exit
#   start_server NAME COMMAND...
#                     runs COMMAND --port 0 --port-file $work/NAME.port in the background
#                     (output in $work/NAME.log), waits up to 10 s for the port it picked
#                     and sets server_url=http://127.0.0.1:PORT; on failure prints the
#                     logs and returns 1. Prefix COMMAND with `env VAR=value` for settings.
work=$(mktemp -d)
pids=()

stop_servers() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop_servers EXIT

start_server() {
  local name=$1
  shift
  "$@" --port 0 --port-file "$work/$name.port" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    if [ -s "$work/$name.port" ]; then
      # shellcheck disable=SC2034  # read by the sourcing script
      server_url="http://127.0.0.1:$(cat "$work/$name.port")"
      return 0
    fi
    sleep 0.1
  done
  echo "$(basename "$0"): $name did not start" >&2
  cat "$work"/*.log >&2 || true
  return 1
}
