#!/usr/bin/env bash
# The offline demo of the whole DPL pipeline: no GPU, no downloads, no datasets.
# Installs what is missing into ./.venv (first run only), checks the shipped micro-CLIP's SHA-256
# (demo/weights/demo-clip.safetensors; nothing is pretrained), then for seeds 1, 2, 3 (two at a time):
# zero-shot -> DPLSearch -> DPLTrain (searched and uniform) -> a table of mean ± std over the seeds,
# the searched lengths and the artifact paths.
# Usage: bash scripts/quickstart.sh [--seeds 1 2 3] [--shots K] [--search-epochs N] [--train-epochs N]
#                                   [--jobs N] [--output DIR]
[ -n "${BASH_VERSION:-}" ] || { echo "error: quickstart.sh needs bash; run it with bash: bash scripts/quickstart.sh ..." >&2; exit 2; }
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_env.sh
source scripts/_env.sh
ensure_env requirements.txt
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}"
exec python -m demo.quickstart "$@"
