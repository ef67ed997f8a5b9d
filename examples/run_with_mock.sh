#!/usr/bin/env bash
# Runs an example (examples/rag_pipeline, examples/streaming_chat) against llmq-mock-azure
# on loopback. Usage: run_with_mock.sh MOCK_BINARY EXAMPLE_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../scripts/lib/servers.sh
source "$here/../scripts/lib/servers.sh"
start_server mock "$1" --config "$here/rag_mock.yaml"
"$2" --endpoint "$server_url" --api-key rag-example-key
