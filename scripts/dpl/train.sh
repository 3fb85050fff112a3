#!/usr/bin/env bash
# Train stage on one dataset (few-shot protocol). DPLTrain uses the matching search artifact and runs
# the search first if it is missing; TRAINER=CoOp|IVLP|MaPLe|ZeroshotCLIP runs a baseline instead.
# Usage: bash scripts/dpl/train.sh DATASET SEED [SHOTS] [KEY VALUE ...]
# Output: $OUTPUT/fewshot/$TRAINER/$CFG/DATASET/shots_SHOTS/seedSEED/
[ -n "${BASH_VERSION:-}" ] || { echo "error: train.sh needs bash; run it with bash: bash scripts/dpl/train.sh ..." >&2; exit 2; }
source "$(dirname "$0")/_lib.sh"
single_run_args "$@"
cell "fewshot/$TRAINER/$CFG/$DATASET/shots_$SHOTS/seed$SEED" train fewshot "$DATASET" "$SHOTS" "$SEED" all
run_grid
