#!/usr/bin/env bash
# Create .venv and install relaybot with every extra (+ dev tools when given "dev").
# The first install compiles llama-cpp-python (about 8 minutes on 2 cores); pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
[ "${1:-}" = "dev" ] && extras="all,dev"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
echo "installing relaybot[$extras] into .venv (the first time compiles llama-cpp-python: ~8 min)…" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
