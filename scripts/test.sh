#!/usr/bin/env bash
# Set up .venv with every extra and the dev tools, then run the test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k storage
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
