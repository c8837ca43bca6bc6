#!/usr/bin/env bash
# Set up .venv and chat with relaybot in this terminal, answered by the bundled offline model
# (no API keys, no services). Arguments go to `relaybot chat`, e.g. --config relaybot.toml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/relaybot chat "$@"
