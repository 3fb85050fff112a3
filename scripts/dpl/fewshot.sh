#!/usr/bin/env bash
# Few-shot protocol: datasets x shots x seeds, search + train (or a baseline via TRAINER=...).
# Usage: bash scripts/dpl/fewshot.sh [DATASET ...] [KEY VALUE ...]
#   no datasets = all 11; SHOTS_LIST (default "1 2 4 8 16"), SEEDS (default "1 2 3").
# Then: python tools/parse_test_res.py $OUTPUT/fewshot
# Cells in parallel: EXECUTOR=local|slurm (docs/SCALING.md, "Run the protocols on a cluster (SLURM)").
[ -n "${BASH_VERSION:-}" ] || { echo "error: fewshot.sh needs bash; run it with bash: bash scripts/dpl/fewshot.sh ..." >&2; exit 2; }
source "$(dirname "$0")/_lib.sh"
split_args "$@"
check_data_root
datasets=("${DATASET_ARGS[@]}")
if [[ ${#datasets[@]} -eq 0 ]]; then read -r -a datasets <<< "$ALL_DATASETS"; fi
for dataset in "${datasets[@]}"; do
    for shots in ${SHOTS_LIST:-1 2 4 8 16}; do
        for seed in $SEEDS; do
            cell "fewshot/$TRAINER/$CFG/$dataset/shots_$shots/seed$seed" train fewshot "$dataset" "$shots" "$seed" all
        done
    done
done
run_grid
echo "Results: python tools/parse_test_res.py $OUTPUT/fewshot"
