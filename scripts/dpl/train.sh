#!/usr/bin/env bash
# Train stage on one dataset (few-shot protocol). DPLTrain uses the matching search artifact and runs
# the search first if it is missing; TRAINER=CoOp|IVLP|MaPLe|ZeroshotCLIP runs a baseline instead.
# Usage: bash scripts/dpl/train.sh DATASET SEED [SHOTS] [KEY VALUE ...]
# Output: $OUTPUT/fewshot/$TRAINER/$CFG/DATASET/shots_SHOTS/seedSEED/
source "$(dirname "$0")/_lib.sh"
single_run_args "$@"
train fewshot "$DATASET" "$SHOTS" "$SEED" all
