#!/usr/bin/env bash
# ctest bench_streams_smoke: llmq_bench_streams with 20 short streams against
# llmq-mock-azure (200 tokens/s, 10 tokens each: well under a second).
# Usage: streams_smoke.sh MOCK_BINARY CLIENT_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib/servers.sh
source "$here/../../scripts/lib/servers.sh"
printf '%s\n' 'api_key: smoke-key' 'stream_tokens_per_second: 200' 'deployments:' \
  '  - {name: smoke, type: chat}' >"$work/mock.yaml"
start_server mock "$1" --config "$work/mock.yaml"
"$2" --url "$server_url/openai/deployments/smoke/chat/completions?api-version=2024-10-21" \
  --streams 20 --tokens 10 --api-key smoke-key --timeout 30 --idle-timeout 10
