#!/usr/bin/env bash
# Set up .venv with every extra and the dev tools, then ruff, mypy on core/ and the test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k storage
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/python -m ruff check .
# the core type-checks clean ([tool.mypy] in pyproject.toml); a narrow `# type: ignore[code]`
# needs a comment saying why
.venv/bin/python -m mypy core
.venv/bin/python -m pytest "$@"
