#!/usr/bin/env bash
# DPL search on one dataset: writes prompt_config.json (+ alpha_history.json and heatmaps).
# Usage: bash scripts/dpl/search.sh DATASET SEED [SHOTS] [KEY VALUE ...]
#   DATASET: a config name from configs/datasets (e.g. caltech101); SHOTS default 16.
# Output: $OUTPUT/fewshot/DPLSearch/$SEARCH_CFG/DATASET/shots_SHOTS/seedSEED/
# Environment: DATA, OUTPUT, CLIP_CHECKPOINT, SEARCH_CFG, SUBSAMPLE (all/base/new), PROTOCOL.
source "$(dirname "$0")/_lib.sh"
if [[ $# -lt 2 ]]; then sed -n '2,6p' "$0"; exit 2; fi
DATASET="$1"; SEED="$2"; shift 2
SHOTS=16
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then SHOTS="$1"; shift; fi
is_dataset "$DATASET" || { echo "error: unknown dataset '$DATASET' (no configs/datasets/$DATASET.yaml)" >&2; exit 2; }
split_args "$@"
check_data_root
search "${PROTOCOL:-fewshot}" "$DATASET" "$SHOTS" "$SEED" "${SUBSAMPLE:-all}"
echo "Prompt configuration: $(search_dir "${PROTOCOL:-fewshot}" "$DATASET" "$SHOTS" "$SEED")/prompt_config.json"
