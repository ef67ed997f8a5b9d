#!/usr/bin/env bash
# Throughput of LLMQueue and of the floor (a bare coroutine queue of the same shape;
# llmq_bench_queue --floor) against callers in flight, from the same runs, plotted with
# gnuplot to docs/queue-throughput.svg (the data beside it, .dat).
# Usage: bench/plot_queue.sh [REQUESTS] (default 200000). LLMQ_BUILD_DIR: the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-200000}
bin=${LLMQ_BUILD_DIR:-build/release}
command -v gnuplot >/dev/null || { echo "gnuplot is needed (apt-get install gnuplot-nox)" >&2; exit 1; }
cmake --build "$bin" --target llmq_bench_queue >/dev/null
data=docs/queue-throughput.dat
echo "# outstanding llmq_requests_per_s floor_requests_per_s ratio" >"$data"
for c in 1 10 32 100 256 1000 3000; do
  out=$("$bin/bench/llmq_bench_queue" --floor --requests "$requests" --concurrency "$c")
  llmq=$(awk '/^throughput/ {print $2}' <<<"$out")
  floor=$(awk '/^floor throughput/ {print $3}' <<<"$out")
  ratio=$(awk '/^ratio to floor/ {print $5}' <<<"$out")
  echo "$c $llmq $floor $ratio" | tee -a "$data"
done
gnuplot <<GP
set terminal svg size 760,420 dynamic font "sans,12"
set output "docs/queue-throughput.svg"
set title "In process: requests/s against callers in flight (16 deployments, no-op executor)"
set xlabel "callers in flight"
set ylabel "requests/s"
set logscale x
set key top right
set grid
set yrange [0:*]
set y2label "llmq / floor"
set y2range [0:1.2]
set y2tics 0.2
plot "$data" using 1:3 with linespoints title "floor (bare coroutine queue)", \
     "$data" using 1:2 with linespoints title "llmq", \
     "$data" using 1:4 axes x1y2 with lines dashtype 2 title "ratio (right axis)"
GP
echo "wrote docs/queue-throughput.svg"
