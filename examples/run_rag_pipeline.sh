#!/usr/bin/env bash
# Runs examples/rag_pipeline against llmq-mock-azure on loopback.
# Usage: run_rag_pipeline.sh MOCK_BINARY RAG_PIPELINE_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../scripts/lib/servers.sh
source "$here/../scripts/lib/servers.sh"
start_server mock "$1" --config "$here/rag_mock.yaml"
"$2" --endpoint "$server_url" --api-key rag-example-key
