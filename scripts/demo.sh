#!/usr/bin/env bash
# The demo command: installs what is missing, builds, starts llmq-mock-azure and
# llmq-gateway on loopback, drives a realistic burst through the gateway with llmq-demo,
# prints the summary, writes a plot of the run (build/demo-plot.svg, or $LLMQ_DEMO_PLOT),
# and stops both servers. The gateway's dashboard is live at the URL printed meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target llmq-mock-azure llmq-gateway llmq-demo

bin=build/release
# shellcheck source=lib/servers.sh
source scripts/lib/servers.sh

start_server llmq-mock-azure "$bin/tools/mock_azure/llmq-mock-azure" \
  --config apps/demo/mock.yaml
mock_url=$server_url
start_server llmq-gateway env LLMQ_DEMO_MOCK_URL="$mock_url" \
  LLMQ_DEMO_UPSTREAM_KEY=demo-upstream-key \
  "$bin/apps/gateway/llmq-gateway" --config apps/demo/gateway.yaml
gateway_url=$server_url

echo "mock Azure OpenAI: $mock_url   gateway: $gateway_url"
echo "dashboard (live while the demo runs): $gateway_url/dashboard"
"$bin/apps/demo/llmq-demo" --gateway "$gateway_url" --mock "$mock_url" \
  --seconds "${LLMQ_DEMO_SECONDS:-16}" --plot "${LLMQ_DEMO_PLOT:-build/demo-plot.svg}"
