#!/usr/bin/env bash
# Latency distributions of the mock directly, nginx as a plain proxy and llmq-gateway,
# from one run of bench/gateway/run.sh, plotted with gnuplot to docs/gateway-latency.svg
# (one panel per connection count; the percentiles beside it in docs/gateway-latency/).
# Usage: bench/gateway/plot_latency.sh [seconds] (default 8). LLMQ_BENCH_CONNECTIONS
# (default "1 32 1000") and LLMQ_GATEWAY_THREADS (default 1) as for run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-8}
command -v gnuplot >/dev/null || { echo "gnuplot is needed (apt-get install gnuplot-nox)" >&2; exit 1; }
conns=${LLMQ_BENCH_CONNECTIONS:-1 32 1000}
threads=${LLMQ_GATEWAY_THREADS:-1}
dir=docs/gateway-latency
rm -rf "$dir"
LLMQ_BENCH_LATENCY_DIR="$dir" LLMQ_BENCH_CONNECTIONS="$conns" LLMQ_GATEWAY_THREADS="$threads" \
  bench/gateway/run.sh "$secs"
panels=$(wc -w <<<"$conns")
{
  echo 'set terminal svg size 1100,400 dynamic font "sans,11"'
  echo 'set output "docs/gateway-latency.svg"'
  echo "set multiplot layout 1,$panels title \"Latency distribution (wrk, $secs s per row; x: percentile)\""
  echo 'set logscale y'
  echo 'set grid'
  echo 'set key bottom right'
  echo 'set ylabel "latency (ms)"'
  # x: the percentile on a "nines" scale, -log10(1 - p/100): 90 -> 1, 99 -> 2, 99.9 -> 3.
  echo 'set xtics ("50" 0.301, "90" 1, "99" 2, "99.9" 3, "99.99" 4)'
  echo 'set xrange [0:4.2]'
  # shellcheck disable=SC2016  # gnuplot's $1 and $2, not the shell's
  curve='using (-log10(1-$1/100)):($2/1000) with linespoints'
  for c in $conns; do
    echo "set title \"$c connection$([ "$c" = 1 ] || echo s)\""
    line="plot \"$dir/direct-$c.dat\" $curve title \"mock directly\""
    [ -f "$dir/nginx-$c.dat" ] && line+=", \"$dir/nginx-$c.dat\" $curve title \"nginx\""
    for t in $threads; do
      line+=", \"$dir/gateway-threads-$t-$c.dat\" $curve title \"llmq-gateway ($t thread$([ "$t" = 1 ] || echo s))\""
    done
    echo "$line"
  done
  echo 'unset multiplot'
} | gnuplot
echo "wrote docs/gateway-latency.svg"
