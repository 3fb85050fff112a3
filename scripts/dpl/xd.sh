#!/usr/bin/env bash
# Cross-dataset protocol: search + train on ImageNet (16 shots, all classes), test on the other 10.
# Usage: bash scripts/dpl/xd.sh [KEY VALUE ...]     (TARGETS overrides the 10 target datasets)
# Output: $OUTPUT/xd_train/... and $OUTPUT/xd_test/...; then python tools/parse_test_res.py $OUTPUT/xd_test
# Cells in parallel: EXECUTOR=local|slurm (docs/SCALING.md, "Run the protocols on a cluster (SLURM)").
[ -n "${BASH_VERSION:-}" ] || { echo "error: xd.sh needs bash; run it with bash: bash scripts/dpl/xd.sh ..." >&2; exit 2; }
source "$(dirname "$0")/_lib.sh"
no_dataset_args xd.sh "$@"
check_data_root
imagenet_transfer xd_test "caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
run_grid
echo "Results: python tools/parse_test_res.py $OUTPUT/xd_test"
