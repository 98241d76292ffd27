#!/usr/bin/env bash
# The test command: installs everything the tests need, lints, type-checks, then runs the whole suite
# (real namespaces, emulator, servers and third-party peers; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
ruff check .
ruff format --check .
python3 -m mypy
python3 -m pytest "$@"
