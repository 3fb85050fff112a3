#!/usr/bin/env bash
# Domain generalisation: the ImageNet-trained model (as in xd.sh, trained if missing) tested on
# ImageNetV2, -Sketch, -A and -R.
# Usage: bash scripts/dpl/dg.sh [KEY VALUE ...]     (TARGETS overrides the 4 variants)
# Output: $OUTPUT/xd_train/... and $OUTPUT/dg_test/...; then python tools/parse_test_res.py $OUTPUT/dg_test
source "$(dirname "$0")/_lib.sh"
split_args "$@"
check_data_root
SOURCE="${SOURCE:-imagenet}"
for seed in $SEEDS; do
    train xd_train "$SOURCE" 16 "$seed" all
    src="$(run_dir xd_train "$TRAINER" "$CFG" "$SOURCE" 16 "$seed")"
    for dataset in ${TARGETS:-imagenetv2 imagenet_sketch imagenet_a imagenet_r}; do
        evaluate "$src" dg_test "$dataset" -1 "$seed" all
    done
done
echo "Results: python tools/parse_test_res.py $OUTPUT/dg_test"
