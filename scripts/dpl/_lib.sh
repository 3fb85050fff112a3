# Shared by the protocol scripts. Source it; do not run it.
#
# Environment (all optional):
#   DATA            dataset root (default ./data)
#   OUTPUT          output root (default ./output)
#   CLIP_CHECKPOINT local OpenAI-format CLIP checkpoint (default: ~/.cache/clip/<usual name>)
#   TRAINER         trainer of the train stage: DPLTrain (default), CoOp, IVLP, MaPLe, ZeroshotCLIP
#   CFG             its config name under configs/trainers/$TRAINER/ (default per trainer)
#   SEARCH_CFG      DPLSearch config name (default vit_b16)
#   SEEDS           seeds (default "1 2 3");  PYTHON  interpreter (default python)
# Trailing KEY VALUE arguments are passed to every train.py call as config overrides.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Absolute paths: train.py runs from $REPO_DIR, while checks and .done markers use the caller's cwd.
abspath() { if [[ -z "$1" || "$1" == /* ]]; then echo "$1"; else echo "$PWD/${1#./}"; fi; }
DATA="$(abspath "${DATA:-./data}")"
OUTPUT="$(abspath "${OUTPUT:-./output}")"
if [[ -n "${CLIP_CHECKPOINT:-}" ]]; then CLIP_CHECKPOINT="$(abspath "$CLIP_CHECKPOINT")"; fi
PYTHON="${PYTHON:-python}"
TRAINER="${TRAINER:-DPLTrain}"
CFG_FROM_ENV="${CFG:-}"
SEARCH_CFG_FROM_ENV="${SEARCH_CFG:-}"
SEARCH_CFG="${SEARCH_CFG:-vit_b16}"
SEEDS="${SEEDS:-1 2 3}"
ALL_DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"

default_cfg() {
    case "$1" in
        DPLTrain) echo "vit_b16" ;;
        DPLSearch) echo "$SEARCH_CFG" ;;
        CoOp) echo "vit_b16_ep50" ;;
        IVLP) echo "vit_b16_c2_ep5_batch4_2+2ctx" ;;
        MaPLe) echo "vit_b16_c2_ep5_batch4_2ctx" ;;
        ZeroshotCLIP) echo "vit_b16" ;;
        *) echo "vit_b16" ;;
    esac
}
CFG="${CFG:-$(default_cfg "$TRAINER")}"

is_dataset() { [[ -f "$REPO_DIR/configs/datasets/$1.yaml" ]]; }

# split_args ARGS... -> DATASET_ARGS (leading dataset names) and OPTS (the rest: KEY VALUE pairs)
split_args() {
    DATASET_ARGS=()
    OPTS=()
    while [[ $# -gt 0 ]] && is_dataset "$1"; do DATASET_ARGS+=("$1"); shift; done
    OPTS=("$@")
    if (( ${#OPTS[@]} % 2 )); then
        echo "error: overrides must be KEY VALUE pairs, got: ${OPTS[*]}" >&2
        echo "       (dataset names must come first and match configs/datasets/<name>.yaml)" >&2
        exit 2
    fi
}

# single_run_args ARGS...: DATASET SEED [SHOTS] [KEY VALUE ...] of search.sh / train.sh
# -> DATASET, SEED, SHOTS (default 16) and OPTS; prints the script's usage on a bad call.
single_run_args() {
    if [[ $# -lt 2 ]]; then sed -n '2,7p' "$0" >&2; exit 2; fi
    DATASET="$1"; SEED="$2"; shift 2
    SHOTS=16
    if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then SHOTS="$1"; shift; fi
    if ! is_dataset "$DATASET"; then
        echo "error: unknown dataset '$DATASET' (no configs/datasets/$DATASET.yaml); available:" \
             "$(cd "$REPO_DIR/configs/datasets" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
        exit 2
    fi
    split_args "$@"
    check_data_root
}

# imagenet_transfer PROTOCOL DEFAULT_TARGETS: train on $SOURCE (imagenet), evaluate on each target.
imagenet_transfer() {
    local protocol="$1" targets="$2" seed src dataset
    SOURCE="${SOURCE:-imagenet}"
    for seed in $SEEDS; do
        train xd_train "$SOURCE" 16 "$seed" all
        src="$(run_dir xd_train "$TRAINER" "$CFG" "$SOURCE" 16 "$seed")"
        for dataset in ${TARGETS:-$targets}; do
            evaluate "$src" "$protocol" "$dataset" -1 "$seed" all
        done
    done
}

backbone_opts() {
    if [[ -n "${CLIP_CHECKPOINT:-}" ]]; then echo "MODEL.BACKBONE.PATH $CLIP_CHECKPOINT"; fi
}

check_data_root() {
    if [[ ! -d "$DATA" ]]; then
        echo "error: dataset root DATA=$DATA does not exist; set DATA to the folder that holds the" \
             "datasets (see docs/DATASETS.md)" >&2
        exit 2
    fi
}

# run_job OUTDIR TRAIN_PY_ARGS... : skip a finished run, resume an unfinished one.
run_job() {
    local outdir="$1"; shift
    if [[ -f "$outdir/.done" ]]; then
        echo "Skip (finished): $outdir"
        return 0
    fi
    if [[ -d "$outdir" ]]; then echo "Resume (unfinished): $outdir"; else echo "Run: $outdir"; fi
    # shellcheck disable=SC2046
    (cd "$REPO_DIR" && "$PYTHON" train.py --root "$DATA" --output-dir "$outdir" "$@")
    touch "$outdir/.done"
}

# run_dir PROTOCOL TRAINER CFG DATASET SHOTS SEED -> the run's output dir (CoOp/MaPLe-like layout)
run_dir() {
    local shots="$5"
    if [[ "$shots" == "-1" ]]; then shots="all"; fi
    echo "$OUTPUT/$1/$2/$3/$4/shots_$shots/seed$6"
}

# The epoch a finished run saved last (from its checkpoint pointer file).
last_epoch() {
    local ptr
    ptr="$(ls "$1"/*/checkpoint 2>/dev/null | head -n1 || true)"
    if [[ -z "$ptr" ]]; then echo "error: no checkpoint in $1" >&2; exit 2; fi
    sed -n 's/^model\.pth\.tar-\([0-9]*\)$/\1/p' "$ptr"
}

search_dir() {  # PROTOCOL DATASET SHOTS SEED
    run_dir "$1" DPLSearch "$SEARCH_CFG" "$2" "$3" "$4"
}

# search PROTOCOL DATASET SHOTS SEED SUBSAMPLE: run (or skip/resume) a DPLSearch job.
search() {
    local out
    out="$(search_dir "$1" "$2" "$3" "$4")"
    # shellcheck disable=SC2046
    run_job "$out" --seed "$4" --trainer DPLSearch \
        --dataset-config-file "configs/datasets/$2.yaml" \
        --config-file "configs/trainers/DPLSearch/$SEARCH_CFG.yaml" \
        DATASET.NUM_SHOTS "$3" DATASET.SUBSAMPLE_CLASSES "$5" $(backbone_opts) "${OPTS[@]}"
}

# train PROTOCOL DATASET SHOTS SEED SUBSAMPLE: the train stage with $TRAINER ($CFG).
# DPLTrain uses the matching search artifact and runs the search first if it is missing.
train() {
    local protocol="$1" dataset="$2" shots="$3" seed="$4" sub="$5" out extra=()
    out="$(run_dir "$protocol" "$TRAINER" "$CFG" "$dataset" "$shots" "$seed")"
    if [[ "$TRAINER" == "DPLTrain" ]]; then
        local art
        art="$(search_dir "$protocol" "$dataset" "$shots" "$seed")/prompt_config.json"
        if [[ ! -f "$art" ]]; then search "$protocol" "$dataset" "$shots" "$seed" "$sub"; fi
        extra=(TRAINER.DPL.CONFIG_FILE "$(cd "$(dirname "$art")" && pwd)/prompt_config.json")
    fi
    local mode=()
    if [[ "$TRAINER" == "ZeroshotCLIP" ]]; then mode=(--eval-only); fi
    # shellcheck disable=SC2046
    run_job "$out" --seed "$seed" --trainer "$TRAINER" "${mode[@]}" \
        --dataset-config-file "configs/datasets/$dataset.yaml" \
        --config-file "configs/trainers/$TRAINER/$CFG.yaml" \
        DATASET.NUM_SHOTS "$shots" DATASET.SUBSAMPLE_CLASSES "$sub" "${extra[@]}" \
        $(backbone_opts) "${OPTS[@]}"
}

# evaluate SRC_DIR PROTOCOL DATASET SHOTS SEED SUBSAMPLE: eval-only of a trained run on DATASET.
evaluate() {
    local src="$1" protocol="$2" dataset="$3" shots="$4" seed="$5" sub="$6" out load=()
    out="$(run_dir "$protocol" "$TRAINER" "$CFG" "$dataset" "$shots" "$seed")"
    local extra=()
    if [[ "$TRAINER" == "DPLTrain" ]]; then
        extra=(TRAINER.DPL.CONFIG_FILE "$(cd "$src" && pwd)/prompt_config.json")
    fi
    if [[ "$TRAINER" != "ZeroshotCLIP" ]]; then load=(--model-dir "$src" --load-epoch "$(last_epoch "$src")"); fi
    # shellcheck disable=SC2046
    run_job "$out" --seed "$seed" --trainer "$TRAINER" --eval-only "${load[@]}" \
        --dataset-config-file "configs/datasets/$dataset.yaml" \
        --config-file "configs/trainers/$TRAINER/$CFG.yaml" \
        DATASET.NUM_SHOTS "$shots" DATASET.SUBSAMPLE_CLASSES "$sub" "${extra[@]}" \
        $(backbone_opts) "${OPTS[@]}"
}
