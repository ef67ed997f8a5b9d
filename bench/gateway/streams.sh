#!/usr/bin/env bash
# Concurrent open streams held by llmq-gateway, against the mock server directly, in one
# run. Usage: bench/gateway/streams.sh (builds the release targets first).
# LLMQ_BUILD_DIR picks the build directory (default build/release, release preset);
# LLMQ_BENCH_STREAMS the stream counts N (default "1000 10000"; "100" for a quick run);
# LLMQ_BENCH_EVENT_RATE the events per second all N streams make together (default 10000:
# the 2-core machine this was written on carries that with room to spare, 20 000 it does
# not), LLMQ_BENCH_STREAM_TPS the most tokens per second of one stream (default 20): each
# N's streams run at min(TPS, EVENT_RATE / N) tokens/s (the mock's stream_tokens_per_second);
# LLMQ_BENCH_STREAM_SECONDS how long a stream lasts (default 10: mock_completion_tokens is
# that many seconds of tokens, at least 8); LLMQ_GATEWAY_THREADS gateway.threads (default 1).
#
# For each N: llmq_bench_streams opens N streamed chat completions at once (one connection
# and one user id each) (a) directly to the mock, the baseline, then (b) through a fresh
# gateway, and the script prints what the gateway adds to the time to first event and to
# the gap between events (gateway minus direct, p50 / p99) and its memory per open stream
# (VmRSS sampled every 0.1 s while the streams are open, peak minus the RSS before, over N),
# and its CPU time per event forwarded next to the mock's per event sent in the direct run.
# Both runs ask for the usage chunk (stream_options.include_usage), so that the client gets
# the same events either way (the gateway asks the upstream for it in any case and drops it
# when the client did not ask: without it, the gateway's [DONE] comes two token intervals
# after the finish chunk instead of one).
# When N cannot be opened here (file descriptors, ephemeral ports) it says so and runs the
# largest N that fits; a run whose streams fail is followed by one at half that N.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${LLMQ_BUILD_DIR:-build/release}
event_rate=${LLMQ_BENCH_EVENT_RATE:-10000}
max_tps=${LLMQ_BENCH_STREAM_TPS:-20}
stream_secs=${LLMQ_BENCH_STREAM_SECONDS:-10}
threads=${LLMQ_GATEWAY_THREADS:-1}

now() { date +%s.%N; }
t_step=$(now)
step_done() {  # step_done <what>: prints the time since the previous step
  local t
  t=$(now)
  echo "[step] $1: $(awk -v a="$t_step" -v b="$t" 'BEGIN {printf "%.1f", b - a}') s"
  t_step=$t
}

cmake --preset release -B "$bin" >/dev/null
cmake --build "$bin" -j "$(nproc)" --target llmq-mock-azure llmq-gateway llmq_bench_streams >/dev/null
step_done "build"
client=$bin/bench/llmq_bench_streams

# One descriptor per stream in the client and the mock, two in the gateway (client side and
# upstream): raise the limit as far as allowed (root may raise the hard limit to nr_open).
ulimit -n "$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)" 2>/dev/null ||
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds=$(ulimit -n)
read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
ports=$((port_hi - port_lo + 1))
# The gateway needs 2N + some descriptors; the ports of one run's N connections to one
# address must be free (those of the previous run may still be in TIME_WAIT).
max_n=$(((fds - 64) / 2))
[ "$max_n" -gt $((ports / 2 - 500)) ] && max_n=$((ports / 2 - 500))
[ "$max_n" -gt 100000 ] && max_n=100000
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "ulimit -n $fds, ephemeral ports $port_lo-$port_hi ($ports), somaxconn" \
  "$(cat /proc/sys/net/core/somaxconn); largest N that fits: $max_n"
echo "streams: min($max_tps, $event_rate / N) tokens/s, about $stream_secs s each; gateway threads=$threads"

# shellcheck source=../../scripts/lib/servers.sh
source scripts/lib/servers.sh
mock_config() {  # mock_config <tokens per second>: the mock's YAML on stdout
  echo "# Upstream for bench/gateway/streams.sh: no limits, paced streams."
  echo "api_key: bench-upstream-key"
  echo "seed: 1"
  echo "latency: {distribution: fixed, ms: 0}"
  echo "idle_timeout_ms: 120000"
  echo "stream_tokens_per_second: $1"
  echo "deployments:"
  echo "  - {name: bench-chat-1, model: gpt-4o, type: chat, req_per_min: 0, tokens_per_min: 0}"
  echo "  - {name: bench-chat-2, model: gpt-4o, type: chat, req_per_min: 0, tokens_per_min: 0}"
}
{
  grep -v max_connections bench/gateway/gateway.yaml
  echo "  threads: $threads"
  echo "  max_connections: 200000"
  echo "  upstream_max_connections: 100000"
  echo "  read_timeout_seconds: 120"
} >"$work/gateway.yaml"
sed -i 's/max_queue_size: 100000/max_queue_size: 200000/' "$work/gateway.yaml"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sample_rss() {  # sample_rss <pid> <file>: peak VmRSS (kB) into file, until killed
  local peak=0 r
  while :; do
    r=$(rss_kb "$1")
    [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$2"
    sleep 0.1
  done
}
field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}' <<<"$2"; }
us() { awk -v u="$1" -v sign="${2-+}" 'BEGIN {a = u < 0 ? -u : u; s = u < 0 ? "-" : sign;
  if (a >= 1e6) printf "%s%.2f s", s, a / 1e6; else if (a >= 1e3) printf "%s%.2f ms", s, a / 1e3;
  else printf "%s%d us", s, a}'; }

result=
run_client() {  # run_client <label> <n> <url> <model> <pid to sample>: sets result, peak_kb, cpu_s
  local secs out sampler ticks
  secs=$(awk -v n="$tokens" -v r="$tps" -v c="$2" 'BEGIN {printf "%d", 3 * (n + 3) / r + c / 200 + 60}')
  [ "$secs" -gt 3600 ] && secs=3600
  echo 0 >"$work/peak"
  sample_rss "$5" "$work/peak" &
  sampler=$!
  ticks=$(cpu_ticks "$5")
  out=$(timeout $((secs + 30)) "$client" --url "$3" --streams "$2" --tokens "$tokens" --model "$4" \
    --timeout "$secs" --idle-timeout 60 --user-prefix "$1" --include-usage 1 2>&1) || true
  cpu_s=$(awk -v a="$ticks" -v b="$(cpu_ticks "$5")" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) / hz}')
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  peak_kb=$(cat "$work/peak")
  grep -v '^RESULT' <<<"$out" | sed "s/^/$1: /"
  result=$(grep '^RESULT' <<<"$out" || echo "RESULT streams $2 completed 0 failed $2")
}

direct_path="/openai/deployments/bench-chat-1/chat/completions?api-version=2024-10-21"
largest_ok=0
measure() {  # measure <n>: direct then gateway; returns 1 when some stream failed
  local n=$1 d g d_cpu g_cpu gw gw_pid idle_kb mock_idle_kb mock mock_pid
  tps=$(awk -v m="$max_tps" -v r="$event_rate" -v n="$n" 'BEGIN {t = r / n; if (t > m) t = m; printf "%.3g", t}')
  tokens=$(awk -v t="$tps" -v s="$stream_secs" 'BEGIN {n = int(t * s + 0.5); if (n < 8) n = 8; print n}')
  echo "== N=$n: $tokens tokens at $tps tokens/s, about" \
    "$(awk -v n="$tokens" -v r="$tps" 'BEGIN {printf "%.1f", (n + 4) / r}') s per stream"
  mock_config "$tps" >"$work/mock-$n.yaml"
  start_server "mock-$n" "$bin/tools/mock_azure/llmq-mock-azure" --config "$work/mock-$n.yaml"
  mock=$server_url
  mock_pid=${pids[-1]}
  sleep 0.5
  mock_idle_kb=$(rss_kb "$mock_pid")
  run_client direct "$n" "$mock$direct_path" gpt-4o "$mock_pid"
  d=$result
  d_cpu=$cpu_s
  echo "direct: mock RSS $((mock_idle_kb / 1024)) MiB before, $((peak_kb / 1024)) MiB peak:" \
    "$(awk -v a="$peak_kb" -v b="$mock_idle_kb" -v n="$n" 'BEGIN {printf "%.1f KiB", (a - b) / n}')" \
    "per open stream"
  step_done "direct N=$n"

  start_server "gw-$n" env LLMQ_BENCH_MOCK_URL="$mock" LLMQ_BENCH_UPSTREAM_KEY=bench-upstream-key \
    "$bin/apps/gateway/llmq-gateway" --config "$work/gateway.yaml"
  gw=$server_url
  gw_pid=${pids[-1]}
  # A few short streams first, so that one-time set-up is not counted per stream.
  "$client" --url "$gw/v1/chat/completions" --streams 8 --tokens 1 --model gpt-4o --timeout 30 \
    --user-prefix warmup >/dev/null 2>&1 || true
  sleep 0.5
  idle_kb=$(rss_kb "$gw_pid")
  run_client gateway "$n" "$gw/v1/chat/completions" gpt-4o "$gw_pid"
  g=$result
  g_cpu=$cpu_s
  kill -TERM "$gw_pid" "$mock_pid" 2>/dev/null || true
  wait "$gw_pid" "$mock_pid" 2>/dev/null || true
  step_done "gateway N=$n"

  local dc gc
  dc=$(field completed "$d")
  gc=$(field completed "$g")
  echo "N=$n: completed direct $dc/$n, gateway $gc/$n; most open at once direct" \
    "$(field max_open "$d"), gateway $(field max_open "$g")"
  if [ "$gc" = "$n" ] && [ "$dc" = "$n" ]; then
    echo "  gateway added: first event p50 $(us $(($(field ttfe_p50_us "$g") - $(field ttfe_p50_us "$d"))))," \
      "p99 $(us $(($(field ttfe_p99_us "$g") - $(field ttfe_p99_us "$d"))));" \
      "inter-event gap p50 $(us $(($(field gap_p50_us "$g") - $(field gap_p50_us "$d")))), p99" \
      "$(us $(($(field gap_p99_us "$g") - $(field gap_p99_us "$d")))), max" \
      "$(us $(($(field gap_max_us "$g") - $(field gap_max_us "$d"))))"
    echo "  (direct: first event p50 $(us "$(field ttfe_p50_us "$d")" "") p99 $(us "$(field ttfe_p99_us "$d")" "")," \
      "gap p50 $(us "$(field gap_p50_us "$d")" "") p99 $(us "$(field gap_p99_us "$d")" "")" \
      "max $(us "$(field gap_max_us "$d")" ""), events" \
      "$(field events "$d"), wall $(field wall_s "$d") s; gateway: events $(field events "$g"), wall $(field wall_s "$g") s)"
    [ "$(field max_open "$g")" = "$n" ] ||
      echo "  (not all N streams were open at once: the figure below is over N, not over the open ones)"
    echo "  gateway memory: RSS $((idle_kb / 1024)) MiB idle, $((peak_kb / 1024)) MiB peak with the streams open:" \
      "$(awk -v a="$peak_kb" -v b="$idle_kb" -v n="$n" 'BEGIN {printf "%.1f KiB", (a - b) / n}') per open stream"
    echo "  CPU (user + system) while the streams ran: gateway $g_cpu s," \
      "$(awk -v c="$g_cpu" -v e="$(field events "$g")" 'BEGIN {printf "%.1f", c * 1e6 / e}') us per event;" \
      "the mock in the direct run $d_cpu s," \
      "$(awk -v c="$d_cpu" -v e="$(field events "$d")" 'BEGIN {printf "%.1f", c * 1e6 / e}') us per event"
    [ "$n" -gt "$largest_ok" ] && largest_ok=$n
    return 0
  fi
  echo "  N=$n DID NOT WORK on this machine: not every stream completed (failures above)"
  return 1
}

for n in ${LLMQ_BENCH_STREAMS:-1000 10000}; do
  if [ "$n" -gt "$max_n" ]; then
    echo "== N=$n cannot be opened on this machine (ulimit -n $fds allows about" \
      "$(((fds - 64) / 2)) through the gateway, $ports ephemeral ports about $((ports / 2 - 500)));" \
      "running N=$max_n instead"
    n=$max_n
  fi
  tries=0
  until measure "$n"; do
    tries=$((tries + 1))
    [ "$tries" -ge 2 ] || [ "$n" -le 10 ] && break
    n=$((n / 2))
    echo "== retrying at N=$n"
  done
done
echo "largest N with every stream completed, direct and through the gateway: $largest_ok"
