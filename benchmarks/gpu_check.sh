#!/usr/bin/env bash
# One-GPU readiness check (issues 24, 25): eight checks, one JSON on stdout, < 8 min on one GPU.
#   bash benchmarks/gpu_check.sh [--dry-run] [--preset vitl16] [--videos list.csv] [--out check.json]
# --dry-run runs the same code on the CPU with tiny shapes (what the test suite does).
# PYTHON picks the interpreter (default: python); run from anywhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$root/benchmarks/gpu_check.py" "$@"
