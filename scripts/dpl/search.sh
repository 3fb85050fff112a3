#!/usr/bin/env bash
# DPL search on one dataset: writes prompt_config.json (+ alpha_history.json and heatmaps).
# Usage: bash scripts/dpl/search.sh DATASET SEED [SHOTS] [KEY VALUE ...]
#   DATASET: a config name from configs/datasets (e.g. caltech101); SHOTS default 16.
# Output: $OUTPUT/fewshot/DPLSearch/$SEARCH_CFG/DATASET/shots_SHOTS/seedSEED/
# Environment: DATA, OUTPUT, CLIP_CHECKPOINT, SEARCH_CFG, SUBSAMPLE (all/base/new), PROTOCOL.
[ -n "${BASH_VERSION:-}" ] || { echo "error: search.sh needs bash; run it with bash: bash scripts/dpl/search.sh ..." >&2; exit 2; }
source "$(dirname "$0")/_lib.sh"
single_run_args "$@"
cell "${PROTOCOL:-fewshot}/DPLSearch/$SEARCH_CFG/$DATASET/shots_$SHOTS/seed$SEED" \
    search "${PROTOCOL:-fewshot}" "$DATASET" "$SHOTS" "$SEED" "${SUBSAMPLE:-all}"
run_grid
echo "Prompt configuration: $(search_dir "${PROTOCOL:-fewshot}" "$DATASET" "$SHOTS" "$SEED")/prompt_config.json"
