# shellcheck shell=bash
# Sourced by the script tests (after servers.sh, whose $work they use). Gives them:
#   failed                  how many checks failed so far
#   pass NAME / fail NAME   report one check
#   expect NAME COMMAND...  passes when COMMAND succeeds (else shows its last output)
#   refuse NAME COMMAND...  passes when COMMAND fails
failed=0
pass() { echo "ok   $1"; }
fail() {
  echo "FAIL $1" >&2
  failed=$((failed + 1))
}
expect() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then pass "$name"; else fail "$name: $(tail -3 "$work/out")"; fi
}
refuse() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then fail "$name: it succeeded"; else pass "$name"; fi
}
