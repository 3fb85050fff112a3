#!/usr/bin/env bash
# Train stage on one dataset (few-shot protocol). DPLTrain uses the matching search artifact and runs
# the search first if it is missing; TRAINER=CoOp|IVLP|MaPLe|ZeroshotCLIP runs a baseline instead.
# Usage: bash scripts/dpl/train.sh DATASET SEED [SHOTS] [KEY VALUE ...]
# Output: $OUTPUT/fewshot/$TRAINER/$CFG/DATASET/shots_SHOTS/seedSEED/
source "$(dirname "$0")/_lib.sh"
if [[ $# -lt 2 ]]; then sed -n '2,6p' "$0"; exit 2; fi
DATASET="$1"; SEED="$2"; shift 2
SHOTS=16
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then SHOTS="$1"; shift; fi
is_dataset "$DATASET" || { echo "error: unknown dataset '$DATASET' (no configs/datasets/$DATASET.yaml)" >&2; exit 2; }
split_args "$@"
check_data_root
train fewshot "$DATASET" "$SHOTS" "$SEED" all
