#!/usr/bin/env bash
# Domain generalisation: the ImageNet-trained model (as in xd.sh, trained if missing) tested on
# ImageNetV2, -Sketch, -A and -R.
# Usage: bash scripts/dpl/dg.sh [KEY VALUE ...]     (TARGETS overrides the 4 variants)
# Output: $OUTPUT/xd_train/... and $OUTPUT/dg_test/...; then python tools/parse_test_res.py $OUTPUT/dg_test
# Cells in parallel: EXECUTOR=local|slurm (docs/SCALING.md, "Run the protocols on a cluster (SLURM)").
[ -n "${BASH_VERSION:-}" ] || { echo "error: dg.sh needs bash; run it with bash: bash scripts/dpl/dg.sh ..." >&2; exit 2; }
source "$(dirname "$0")/_lib.sh"
no_dataset_args dg.sh "$@"
check_data_root
imagenet_transfer dg_test "imagenetv2 imagenet_sketch imagenet_a imagenet_r"
run_grid
echo "Results: python tools/parse_test_res.py $OUTPUT/dg_test"
