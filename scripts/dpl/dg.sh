#!/usr/bin/env bash
# Domain generalisation: the ImageNet-trained model (as in xd.sh, trained if missing) tested on
# ImageNetV2, -Sketch, -A and -R.
# Usage: bash scripts/dpl/dg.sh [KEY VALUE ...]     (TARGETS overrides the 4 variants)
# Output: $OUTPUT/xd_train/... and $OUTPUT/dg_test/...; then python tools/parse_test_res.py $OUTPUT/dg_test
source "$(dirname "$0")/_lib.sh"
split_args "$@"
check_data_root
imagenet_transfer dg_test "imagenetv2 imagenet_sketch imagenet_a imagenet_r"
echo "Results: python tools/parse_test_res.py $OUTPUT/dg_test"
