#!/usr/bin/env bash
# Create .venv and install relaybot with every extra (+ dev tools when given "dev").
#
# llama-cpp-python (the embedded local model) is compiled from source the first time: about
# 5 minutes on 2 cores. It is built here on its own, for a portable x86-64 target (AVX2, no
# AVX-512): llama-cpp-python 0.3.36 built with its default GGML_NATIVE=ON segfaults in
# llama_decode on AVX-512 CPUs (seen 2026-11-30 with the bundled SmolLM2 model). The wheel is
# kept in ~/.cache/relaybot/wheels so later set-ups reuse it. Set CMAKE_ARGS yourself to build
# with other flags (e.g. -DGGML_CUDA=on); set RELAYBOT_LLAMA_CPP_VERSION to pick a version.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
[ "${1:-}" = "dev" ] && extras="all,dev"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip

llama_version="${RELAYBOT_LLAMA_CPP_VERSION:-0.3.36}"
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$llama_version')" 2>/dev/null; then
  portable="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
  cmake_args="${CMAKE_ARGS:-$portable}"
  flavour=$(printf '%s' "$cmake_args" | sha256sum | cut -c1-12)
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/relaybot/wheels/llama-cpp-python-$llama_version-$flavour"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $llama_version for the local model (once, ~5 min on 2 cores)…" >&2
    mkdir -p "$wheels"
    CMAKE_ARGS="$cmake_args" "${pip[@]}" wheel --no-cache-dir --no-deps -w "$wheels" "llama-cpp-python==$llama_version"
  fi
  "${pip[@]}" install "$wheels"/llama_cpp_python-*.whl
fi

echo "installing relaybot[$extras] into .venv…" >&2
"${pip[@]}" install -e ".[$extras]"
