#!/usr/bin/env bash
# The demo command: installs dependencies, builds, and runs the quick start example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target quickstart
build/release/examples/quickstart examples/llm_config.yaml
