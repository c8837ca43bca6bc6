#!/usr/bin/env bash
# Set up .venv and start relaybot on the embedded default: the web chat at
# http://127.0.0.1:8080 answered by the bundled offline model (no API keys, no services).
# Arguments go to `relaybot run`, e.g. --config relaybot.toml. `relaybot chat` talks in the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/relaybot run "$@"
