#!/usr/bin/env bash
# Runs libFuzzer targets for a bounded time each, on copies of their seed corpora
# (tests/fuzz/corpus/<target>/; the committed seeds are never modified), and fails on any
# crash, leak, timeout or out-of-memory, printing the reproducer.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]
#
# BUILD_DIR is the fuzz preset's build directory (build/fuzz). Without TARGETs every
# target runs. Environment:
#   LLMQ_FUZZ_JOBS     targets run side by side (default: the number of CPUs)
#   LLMQ_FUZZ_WORK     where corpora, logs and artifacts go (default: a new temp dir, kept)
#   LLMQ_FUZZ_ARGS     extra libFuzzer flags for every target (e.g. -max_len=65536)
#   LLMQ_FUZZ_RSS_MB   -rss_limit_mb (default 2048); LLMQ_FUZZ_TIMEOUT: -timeout (default 10 s)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
all_targets=(sse rate_limit_headers redis_reply config gateway_settings redis_url http_url
             token_estimate body_validation gateway_http)

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS_PER_TARGET [TARGET...]" >&2
  exit 2
fi
build="$(cd "$1" && pwd)"
seconds="$2"
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

jobs="${LLMQ_FUZZ_JOBS:-$(nproc)}"
work="${LLMQ_FUZZ_WORK:-$(mktemp -d -t llmq-fuzz.XXXXXX)}"
mkdir -p "$work"
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
  for s in llvm-symbolizer-14 /usr/lib/llvm-14/bin/llvm-symbolizer llvm-symbolizer; do
    if command -v "$s" >/dev/null 2>&1; then
      export ASAN_SYMBOLIZER_PATH="$(command -v "$s")"
      break
    fi
  done
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# One target: fuzz for $seconds; status in $work/<target>/status.
run_one() {
  local t="$1" exe="$build/tests/fuzz/fuzz_$1" dir="$work/$1"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [ ! -x "$exe" ]; then
    echo "missing $exe (build the fuzz preset first)" >"$dir/log"
    echo "missing" >"$dir/status"
    return 0
  fi
  cp -R "$here/corpus/$t/." "$dir/corpus/" 2>/dev/null || true
  local flags=(-max_total_time="$seconds" -rss_limit_mb="${LLMQ_FUZZ_RSS_MB:-2048}"
               -timeout="${LLMQ_FUZZ_TIMEOUT:-10}" -print_final_stats=1
               -artifact_prefix="$dir/artifacts/")
  local dict
  case "$t" in
    config | gateway_settings) dict=yaml.dict ;;
    token_estimate | body_validation) dict=json.dict ;;
    gateway_http) dict=http.dict ;;
    *) dict="$t.dict" ;;
  esac
  [ -f "$here/$dict" ] && flags+=(-dict="$here/$dict")
  # shellcheck disable=SC2206
  flags+=(${LLMQ_FUZZ_ARGS:-})
  local rc=0
  "$exe" "${flags[@]}" "$dir/corpus" >"$dir/log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ] && [ -z "$(ls -A "$dir/artifacts")" ]; then
    echo "ok" >"$dir/status"
  else
    echo "failed (exit $rc)" >"$dir/status"
  fi
}
export -f run_one
export build seconds work here

began=$(date +%s)
echo "fuzz: ${targets[*]}: ${seconds} s each, ${jobs} at a time; work dir $work"
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}

failed=0
for t in "${targets[@]}"; do
  dir="$work/$t"
  status="$(cat "$dir/status" 2>/dev/null || echo "did not run")"
  stats="$(grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$dir/log" 2>/dev/null |
           awk '{printf "%s ", $2}')"
  printf '  %-20s %s  (runs, new units: %s)\n' "$t" "$status" "${stats:-?}"
  [ "$status" = ok ] && continue
  failed=1
  echo "---- $t: last lines of $dir/log"
  grep -v '^#[0-9]' "$dir/log" | tail -n 40 || true
  for a in "$dir"/artifacts/*; do
    [ -e "$a" ] || continue
    echo "---- reproducer $a ($(wc -c <"$a") bytes; base64 below)"
    base64 -w 100 "$a" | head -n 40
    echo "---- replay: $build/tests/fuzz/fuzz_$t $a"
  done
done
took="$(( $(date +%s) - began )) s"
[ "$failed" -eq 0 ] && echo "fuzz: no crash, leak, timeout or OOM ($took)" || echo "fuzz: FAILED ($took)"
exit "$failed"
