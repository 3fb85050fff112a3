#!/usr/bin/env bash
# GPU check: the CUDA-marked tests, the supernet benchmark on CUDA, then DPLSearch -> DPLTrain ->
# eval-only per precision (fp32, amp, fp16, bf16) on a random-init ViT-B/16 and synthetic images;
# ends with one table (check, result, time, peak memory). No data or weights needed; about 8 minutes
# on one GPU at most. Without a GPU it says so and exits 0 after running nothing.
# Usage: bash scripts/gpu_check.sh [--workdir DIR] [--keep]     (exit 1 when a check failed)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch, open_clip, pytest, tabulate" >/dev/null 2>&1; then
    # shellcheck source=scripts/_env.sh
    source scripts/_env.sh
    ensure_env requirements-dev.txt
fi
exec python benchmarks/gpu_check.py "$@"
