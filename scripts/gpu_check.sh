#!/usr/bin/env bash
# GPU check: flex_attention vs the explicit-score attention path (its verdict says whether flex may
# become the default), the CUDA-marked tests, the supernet benchmark on CUDA, then DPLSearch ->
# DPLTrain -> eval-only per precision (fp32, amp, fp16, bf16) on a random-init ViT-B/16 and synthetic
# images; ends with one table (check, result, time, peak memory) and writes every verdict to
# $GPU_CHECK_OUT/gpu_check_result.json. No data or weights needed; it stops within GPU_CHECK_BUDGET_S
# seconds (default 450: within 8 minutes on one H100). Without a GPU it says so and exits 0 after
# running nothing.
# Usage: bash scripts/gpu_check.sh [--workdir DIR] [--keep]     (exit 1 when a check failed)
# Environment:
#   GPU_CHECK_PYTHON   an interpreter that already has CUDA torch (e.g. python3): used as it is
#                      instead of creating ./.venv; only the packages it lacks are installed
#   GPU_CHECK_WHEELS   a folder of wheels (pip download --no-deps -d DIR ...): what GPU_CHECK_PYTHON
#                      lacks is installed from it with pip install --no-index --no-deps (no internet)
#   GPU_CHECK_OUT      where gpu_check_result.json goes (default ./output/gpu_check)
#   GPU_CHECK_BUDGET_S the whole check's time budget in seconds (default 450)
#   GPU_CHECK_DRY_RUN  1: print the install and run commands instead of running them
set -euo pipefail
abspath() { if [[ "$1" = /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
# Paths the caller gives are relative to the caller's folder, not to the repository.
export GPU_CHECK_OUT="$(abspath "${GPU_CHECK_OUT:-output/gpu_check}")"
WHEELS="${GPU_CHECK_WHEELS:+$(abspath "$GPU_CHECK_WHEELS")}"
PY="${GPU_CHECK_PYTHON:-}"
if [[ "$PY" == */* ]]; then PY="$(abspath "$PY")"; fi
DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
cd "$(dirname "$0")/.."

fail() { echo "gpu_check: $*" >&2; exit 2; }

if [[ -n "$PY" ]]; then
    command -v "$PY" >/dev/null 2>&1 || fail "GPU_CHECK_PYTHON=$PY is not an interpreter on PATH; set it to e.g. python3 or /path/to/python."
    missing="$("$PY" benchmarks/gpu_check.py --missing-packages)" \
        || fail "GPU_CHECK_PYTHON=$PY could not run benchmarks/gpu_check.py (see above); it needs Python >= 3.8."
    if [[ " $missing " == *" torch "* ]]; then
        fail "GPU_CHECK_PYTHON=$PY has no torch; point it at the interpreter of your CUDA build of torch (this script never installs torch)."
    fi
    if [[ -n "$missing" ]]; then
        if [[ -z "$WHEELS" ]]; then
            fail "GPU_CHECK_PYTHON=$PY lacks: $missing. Without internet: on a machine with internet run 'pip download --no-deps -d wheels $missing', copy wheels/ here and set GPU_CHECK_WHEELS=wheels; with internet: $PY -m pip install $missing."
        fi
        [[ -d "$WHEELS" ]] || fail "GPU_CHECK_WHEELS=$GPU_CHECK_WHEELS is not a folder; set it to the folder 'pip download --no-deps -d DIR ...' wrote."
        # --no-deps: the folder holds exactly the wheels named (downloaded with --no-deps), and the
        # interpreter already has everything else (torch above all), which pip must not touch.
        # shellcheck disable=SC2206
        install=("$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" $missing)
        echo "[setup] installing what $PY lacks from $WHEELS: ${install[*]}"
        if [[ "$DRY_RUN" != 1 ]]; then
            "${install[@]}" || fail "pip could not install $missing from GPU_CHECK_WHEELS=$WHEELS (see pip's message above); that folder needs a wheel of each."
            still="$("$PY" benchmarks/gpu_check.py --missing-packages)"
            [[ -z "$still" ]] || fail "still missing after installing from $WHEELS: $still; add their wheels to that folder (pip download --no-deps -d DIR $still)."
        fi
    fi
    run=("$PY" benchmarks/gpu_check.py "$@")
else
    if ! python -c "import torch, open_clip, pytest, tabulate" >/dev/null 2>&1; then
        # shellcheck source=scripts/_env.sh
        source scripts/_env.sh
        if [[ "$DRY_RUN" == 1 ]]; then
            echo "[dry run] would create or reuse ./.venv and install requirements-dev.txt into it"
        else
            ensure_env requirements-dev.txt
        fi
    fi
    run=(python benchmarks/gpu_check.py "$@")
fi
if [[ "$DRY_RUN" == 1 ]]; then
    echo "[dry run] ${run[*]}"
    exit 0
fi
exec "${run[@]}"
