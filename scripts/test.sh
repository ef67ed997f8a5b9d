#!/usr/bin/env bash
# The test command: installs dependencies, configures and builds the release preset with
# warnings as errors, and runs every test (unit, runtime, examples, install + consumer).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)"
ctest --preset release
