#!/usr/bin/env bash
# The GPU proof in one command (bench/gpu_check.py says what it checks and measures).
#   bench/gpu_check.sh OUT_DIR             on a CUDA machine: installs nothing, needs no network
#   bench/gpu_check.sh --dry-run OUT_DIR   the same code paths on the CPU (Triton in the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
dry=()
if [ "${1:-}" = "--dry-run" ]; then dry=(--dry-run); shift; fi
out="${1:?usage: bench/gpu_check.sh [--dry-run] OUT_DIR}"
mkdir -p "$out"
# Without an install (a device machine has its own torch and no network), the package is put on
# the path as it installs: cdr_fast/ with kernels/ as cdr_fast.kernels (pyproject.toml's mapping).
if ! python3 -c "import cdr_fast.kernels" 2>/dev/null; then
  site="$(mktemp -d)"
  trap 'rm -rf "$site"' EXIT
  cp -r cdr_fast "$site/cdr_fast" && cp -r kernels "$site/cdr_fast/kernels"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
python3 bench/gpu_check.py "${dry[@]}" "$out"
