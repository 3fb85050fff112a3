#!/usr/bin/env bash
# Base-to-new protocol: search and train on the base half of the classes (16 shots), test on base
# (the training run's final test) and on new (an eval-only run).
# Usage: bash scripts/dpl/base2new.sh [DATASET ...] [KEY VALUE ...]   (no datasets = all 11)
# Output: $OUTPUT/base2new_base/... and $OUTPUT/base2new_new/...
# Then: python tools/parse_test_res.py $OUTPUT --base2new
# Cells in parallel: EXECUTOR=local|slurm (docs/SCALING.md, "Run the protocols on a cluster (SLURM)").
[ -n "${BASH_VERSION:-}" ] || { echo "error: base2new.sh needs bash; run it with bash: bash scripts/dpl/base2new.sh ..." >&2; exit 2; }
source "$(dirname "$0")/_lib.sh"
split_args "$@"
check_data_root
datasets=("${DATASET_ARGS[@]}")
if [[ ${#datasets[@]} -eq 0 ]]; then read -r -a datasets <<< "$ALL_DATASETS"; fi
if [[ "$TRAINER" == "DPLTrain" && -z "$CFG_FROM_ENV" ]]; then CFG="vit_b16_base2new"; fi
# The search config: vit_b16_base2new by default; a SEARCH_CFG given (e.g. vit_b16_fast) runs as its
# base-to-new twin <SEARCH_CFG>_base2new when configs/trainers/DPLSearch has one.
if [[ -z "$SEARCH_CFG_FROM_ENV" ]]; then
    SEARCH_CFG="vit_b16_base2new"
elif [[ "$SEARCH_CFG" != *_base2new && -f "$REPO_DIR/configs/trainers/DPLSearch/${SEARCH_CFG}_base2new.yaml" ]]; then
    echo "SEARCH_CFG=$SEARCH_CFG: base-to-new runs its twin configs/trainers/DPLSearch/${SEARCH_CFG}_base2new.yaml"
    SEARCH_CFG="${SEARCH_CFG}_base2new"
fi
for dataset in "${datasets[@]}"; do
    for seed in $SEEDS; do
        cell "base2new/$TRAINER/$CFG/$dataset/seed$seed" base2new_cell "$dataset" "$seed"
    done
done
run_grid
echo "Results: python tools/parse_test_res.py $OUTPUT --base2new"
