#!/usr/bin/env bash
# The test command: installs dependencies, starts the servers the integration tests need
# (redis-server, a 3-node Redis Cluster and PostgreSQL, all on loopback), configures and
# builds the release preset with warnings as errors, runs every test, and stops the
# servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

started_services=0
if ! scripts/services.sh status >/dev/null 2>&1; then
  scripts/services.sh start
  started_services=1
fi
cleanup() { if [ "$started_services" = 1 ]; then scripts/services.sh stop || true; fi; }
trap cleanup EXIT
export LLMQ_TEST_REQUIRE_SERVICES=1  # store tests fail, rather than skip, without servers

cmake --preset release
cmake --build --preset release -j "$(nproc)"
ctest --preset release
