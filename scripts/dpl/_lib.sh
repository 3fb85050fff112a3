# Shared by the protocol scripts. Source it from bash; do not run it.
#
# Environment (all optional):
#   DATA            dataset root (default ./data)
#   OUTPUT          output root (default ./output)
#   CLIP_CHECKPOINT local OpenAI-format CLIP checkpoint (default: ~/.cache/clip/<usual name>)
#   TRAINER         trainer of the train stage: DPLTrain (default), CoOp, IVLP, MaPLe, ZeroshotCLIP
#   CFG             its config name under configs/trainers/$TRAINER/ (default per trainer)
#   SEARCH_CFG      DPLSearch config name (default vit_b16, the paper's loop; vit_b16_fast: the fast
#                   loop); base2new.sh runs <SEARCH_CFG>_base2new where that config exists
#   SEEDS           seeds (default "1 2 3");  PYTHON  interpreter (default python)
#   EXECUTOR        sequential (default), local or slurm: how the grid cells run (see run_grid)
#   JOBS, GPUS_PER_JOB, SLURM_PARTITION, SLURM_TIME, SLURM_ACCOUNT, SLURM_EXTRA: see tools/grid.py
# Trailing KEY VALUE arguments are passed to every train.py call as config overrides.
[ -n "${BASH_VERSION:-}" ] || { echo "error: _lib.sh needs bash (the protocol scripts source it); run it with bash: bash scripts/dpl/fewshot.sh ..." >&2; exit 2; }
set -euo pipefail
# No pathname expansion of unquoted words: seeds, dataset lists and artifact patterns must never be
# expanded against the caller's working directory. Globs below an output folder use compgen -G.
set -f

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
EXECUTOR="${EXECUTOR:-sequential}"
GPUS_PER_JOB="${GPUS_PER_JOB:-}"
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

# check_knobs: the executor settings, before anything runs.
check_knobs() {
    case "$EXECUTOR" in sequential | local | slurm) ;; *)
        echo "error: EXECUTOR=$EXECUTOR is not one of sequential (default), local, slurm" >&2; exit 2 ;;
    esac
    local knob
    for knob in JOBS GPUS_PER_JOB SLURM_TIME SLURM_SIGNAL_DELAY SLURM_MAX_REQUEUE; do
        if [[ -n "${!knob:-}" && ! "${!knob}" =~ ^[0-9]+$ ]]; then
            echo "error: $knob=${!knob} is not a whole number; set $knob to e.g. 2 or leave it unset" >&2
            exit 2
        fi
    done
}
check_knobs
# One by one, GPUS_PER_JOB is checked against this node's GPUs as EXECUTOR=local checks it (slurm: the
# job's node decides; inside a cell, CUDA_VISIBLE_DEVICES holds the cell's GPUs).
if [[ "$EXECUTOR" == sequential && -n "$GPUS_PER_JOB" ]] && (( GPUS_PER_JOB > 0 )); then
    "$PYTHON" "$REPO_DIR/tools/grid.py" --check-gpus "$GPUS_PER_JOB" || exit 2
fi

# The interpreter line of every train.py call: GPUS_PER_JOB > 1 starts it under torchrun (one process
# per GPU; --standalone picks a free rendezvous port, so several jobs can share a node).
LAUNCH=("$PYTHON")
if [[ -n "$GPUS_PER_JOB" ]] && (( GPUS_PER_JOB > 1 )); then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS_PER_JOB")
fi

# Backbone overrides as an array, so a CLIP path with spaces or quotes stays one argument.
BACKBONE_OPTS=()
if [[ -n "${CLIP_CHECKPOINT:-}" ]]; then BACKBONE_OPTS=(MODEL.BACKBONE.PATH "$CLIP_CHECKPOINT"); fi

is_dataset() { [[ "$1" != */* && -f "$REPO_DIR/configs/datasets/$1.yaml" ]]; }
# Config keys are upper case (OPTIM.MAX_EPOCH, SEED); dataset names are not.
is_config_key() { [[ "$1" =~ ^[A-Z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$ ]]; }

# check_datasets WHAT NAME...: exit 2 naming every unknown dataset and the valid names.
check_datasets() {
    local what="$1" name bad=()
    shift
    for name in "$@"; do is_dataset "$name" || bad+=("'$name'"); done
    if [[ ${#bad[@]} -gt 0 ]]; then
        echo "error: unknown dataset ${bad[*]} in $what (no configs/datasets/<name>.yaml); available:" \
             "$(compgen -G "$REPO_DIR/configs/datasets/*.yaml" | sed 's|.*/||; s/\.yaml$//' | sort | tr '\n' ' ')" >&2
        exit 2
    fi
}

# split_args ARGS... -> DATASET_ARGS (leading dataset names, all checked) and OPTS (the rest: KEY VALUE pairs)
split_args() {
    DATASET_ARGS=()
    while [[ $# -gt 0 ]] && ! is_config_key "$1"; do DATASET_ARGS+=("$1"); shift; done
    check_datasets "the arguments" "${DATASET_ARGS[@]}"
    OPTS=("$@")
    if (( ${#OPTS[@]} % 2 )); then
        echo "error: overrides must be KEY VALUE pairs, got: ${OPTS[*]}" >&2
        echo "       (dataset names must come first and match configs/datasets/<name>.yaml)" >&2
        exit 2
    fi
}

# no_dataset_args SCRIPT ARGS...: the ImageNet-transfer scripts take targets from $TARGETS only.
no_dataset_args() {
    local script="$1"
    shift
    split_args "$@"
    if [[ ${#DATASET_ARGS[@]} -gt 0 ]]; then
        echo "error: $script takes no dataset arguments (got: ${DATASET_ARGS[*]}); choose the targets with" \
             "TARGETS=\"${DATASET_ARGS[*]}\" bash scripts/dpl/$script" >&2
        exit 2
    fi
}

# single_run_args ARGS...: DATASET SEED [SHOTS] [KEY VALUE ...] of search.sh / train.sh
# -> DATASET, SEED, SHOTS (default 16) and OPTS; prints the script's usage on a bad call.
single_run_args() {
    if [[ $# -lt 2 ]]; then sed -n '2,/^[^#]/{/^#/p}' "$0" >&2; exit 2; fi
    DATASET="$1"; SEED="$2"; shift 2
    SHOTS=16
    if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then SHOTS="$1"; shift; fi
    check_datasets "DATASET" "$DATASET"
    if [[ ! "$SEED" =~ ^[0-9]+$ ]]; then
        echo "error: SEED must be a whole number, got '$SEED' (usage: DATASET SEED [SHOTS] [KEY VALUE ...])" >&2
        exit 2
    fi
    split_args "$@"
    check_data_root
}

check_data_root() {
    if [[ ! -d "$DATA" ]]; then
        echo "error: dataset root DATA=$DATA does not exist; set DATA to the folder that holds the" \
             "datasets (see docs/DATASETS.md)" >&2
        exit 2
    fi
}

# missing_artifact OUTDIR "PATTERN ...": the first pattern (a glob below OUTDIR) with no file, if any.
missing_artifact() {
    local pattern patterns
    read -r -a patterns <<< "$2"  # split on spaces only: the patterns are globs below OUTDIR, not here
    for pattern in "${patterns[@]}"; do
        if ! compgen -G "$1/$pattern" > /dev/null; then echo "$pattern"; return 0; fi
    done
}

# run_job OUTDIR "ARTIFACTS" TRAIN_PY_ARGS... : skip a finished run, resume an unfinished one.
# Finished = the .done marker and every ARTIFACTS glob (plus its log) exist: a marker whose artifact
# was deleted does not count, the run resumes and writes it again. With DRY_RUN set, nothing runs:
# an unfinished run exits the (sub)shell with status 3 (see cell).
run_job() {
    local outdir="$1" artifacts="log.txt* $2" missing
    shift 2
    missing="$(missing_artifact "$outdir" "$artifacts")"
    if [[ -f "$outdir/.done" && -z "$missing" ]]; then
        echo "Skip (finished): $outdir"
        return 0
    fi
    if [[ -n "${DRY_RUN:-}" ]]; then exit 3; fi
    if [[ -f "$outdir/.done" ]]; then
        echo "Re-run (marked finished, but its $missing is missing): $outdir"
        rm -f "$outdir/.done"
    elif [[ -d "$outdir" ]]; then
        echo "Resume (unfinished): $outdir"
    else
        echo "Run: $outdir"
    fi
    (cd "$REPO_DIR" && "${LAUNCH[@]}" train.py --root "$DATA" --output-dir "$outdir" "$@")
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
    ptr="$(compgen -G "$1/*/checkpoint" | sort | head -n1 || true)"
    if [[ -z "$ptr" ]]; then
        echo "error: no checkpoint in $1; delete its .done marker (rm $1/.done) and re-run to train it again" >&2
        exit 2
    fi
    sed -n 's/^model\.pth\.tar-\([0-9]*\)$/\1/p' "$ptr"
}

search_dir() {  # PROTOCOL DATASET SHOTS SEED
    run_dir "$1" DPLSearch "$SEARCH_CFG" "$2" "$3" "$4"
}

# search PROTOCOL DATASET SHOTS SEED SUBSAMPLE: run (or skip/resume) a DPLSearch job.
search() {
    run_job "$(search_dir "$1" "$2" "$3" "$4")" "prompt_config.json */checkpoint" --seed "$4" --trainer DPLSearch \
        --dataset-config-file "configs/datasets/$2.yaml" \
        --config-file "configs/trainers/DPLSearch/$SEARCH_CFG.yaml" \
        DATASET.NUM_SHOTS "$3" DATASET.SUBSAMPLE_CLASSES "$5" "${BACKBONE_OPTS[@]}" "${OPTS[@]}"
}

# The files a finished train-stage run of $TRAINER must still have (besides its log).
train_artifacts() {
    case "$TRAINER" in
        ZeroshotCLIP) echo "" ;;
        DPLTrain) echo "prompt_config.json */checkpoint" ;;
        *) echo "*/checkpoint" ;;
    esac
}

# train PROTOCOL DATASET SHOTS SEED SUBSAMPLE: the train stage with $TRAINER ($CFG).
# DPLTrain uses the matching search artifact and runs the search first if it is missing.
train() {
    local protocol="$1" dataset="$2" shots="$3" seed="$4" sub="$5" out extra=()
    out="$(run_dir "$protocol" "$TRAINER" "$CFG" "$dataset" "$shots" "$seed")"
    if [[ "$TRAINER" == "DPLTrain" ]]; then
        local search_out
        search_out="$(search_dir "$protocol" "$dataset" "$shots" "$seed")"
        if [[ ! -f "$search_out/prompt_config.json" ]]; then search "$protocol" "$dataset" "$shots" "$seed" "$sub"; fi
        extra=(TRAINER.DPL.CONFIG_FILE "$search_out/prompt_config.json")
    fi
    local mode=()
    if [[ "$TRAINER" == "ZeroshotCLIP" ]]; then mode=(--eval-only); fi
    run_job "$out" "$(train_artifacts)" --seed "$seed" --trainer "$TRAINER" "${mode[@]}" \
        --dataset-config-file "configs/datasets/$dataset.yaml" \
        --config-file "configs/trainers/$TRAINER/$CFG.yaml" \
        DATASET.NUM_SHOTS "$shots" DATASET.SUBSAMPLE_CLASSES "$sub" "${extra[@]}" \
        "${BACKBONE_OPTS[@]}" "${OPTS[@]}"
}

# evaluate SRC_DIR PROTOCOL DATASET SHOTS SEED SUBSAMPLE: eval-only of a trained run on DATASET.
evaluate() {
    local src="$1" protocol="$2" dataset="$3" shots="$4" seed="$5" sub="$6" out load=()
    out="$(run_dir "$protocol" "$TRAINER" "$CFG" "$dataset" "$shots" "$seed")"
    local extra=()
    if [[ "$TRAINER" == "DPLTrain" ]]; then
        extra=(TRAINER.DPL.CONFIG_FILE "$src/prompt_config.json")
    fi
    if [[ "$TRAINER" != "ZeroshotCLIP" ]]; then load=(--model-dir "$src" --load-epoch "$(last_epoch "$src")"); fi
    run_job "$out" "" --seed "$seed" --trainer "$TRAINER" --eval-only "${load[@]}" \
        --dataset-config-file "configs/datasets/$dataset.yaml" \
        --config-file "configs/trainers/$TRAINER/$CFG.yaml" \
        DATASET.NUM_SHOTS "$shots" DATASET.SUBSAMPLE_CLASSES "$sub" "${extra[@]}" \
        "${BACKBONE_OPTS[@]}" "${OPTS[@]}"
}

# ---- Grid cells: the work of one job -------------------------------------------------------------

# base2new_cell DATASET SEED: train on the base classes, then evaluate on the new ones.
base2new_cell() {
    train base2new_base "$1" 16 "$2" base
    evaluate "$(run_dir base2new_base "$TRAINER" "$CFG" "$1" 16 "$2")" base2new_new "$1" 16 "$2" new
}

# transfer_cell PROTOCOL SOURCE "TARGETS" SEED: train on SOURCE (16 shots), evaluate on each target.
transfer_cell() {
    local protocol="$1" source="$2" targets="$3" seed="$4" dataset
    train xd_train "$source" 16 "$seed" all
    for dataset in $targets; do
        evaluate "$(run_dir xd_train "$TRAINER" "$CFG" "$source" 16 "$seed")" "$protocol" "$dataset" -1 "$seed" all
    done
}

# imagenet_transfer PROTOCOL DEFAULT_TARGETS: one cell per seed (source: $SOURCE, default imagenet;
# targets: $TARGETS, default DEFAULT_TARGETS), all names checked before the first run.
imagenet_transfer() {
    local protocol="$1" source="${SOURCE:-imagenet}" targets="${TARGETS:-$2}" seed
    check_datasets "SOURCE" "$source"
    # shellcheck disable=SC2086  # TARGETS is a space-separated list
    check_datasets "TARGETS" $targets
    for seed in $SEEDS; do
        cell "$protocol/$TRAINER/$CFG/$source/seed$seed" transfer_cell "$protocol" "$source" "$targets" "$seed"
    done
}

# cell NAME FUNCTION ARGS...: one grid cell, i.e. the work of one job (e.g. search + train of one
# dataset/shots/seed); NAME (protocol/trainer/config/dataset/...) names it and its log. EXECUTOR=sequential runs
# FUNCTION ARGS now. EXECUTOR=local|slurm skips a finished cell (a dry run of FUNCTION finds no
# unfinished run) and queues the others for run_grid.
cell() {
    local name="$1" rc=0
    shift
    if [[ "$EXECUTOR" == sequential ]]; then "$@"; return; fi
    (DRY_RUN=1; "$@") > /dev/null || rc=$?
    if (( rc == 0 )); then echo "Skip (finished): $name"; return 0; fi
    if (( rc != 3 )); then exit "$rc"; fi
    if [[ -z "${GRID_FILE:-}" ]]; then
        GRID_FILE="$(mktemp "${TMPDIR:-/tmp}/dpl-grid.XXXXXX")"
        trap 'rm -f "$GRID_FILE"' EXIT
    fi
    # The cell's command carries every setting this script resolved (paths, configs), so it runs the
    # same in a SLURM job as here. Records: NAME LOG ARGC ARGV..., each field NUL-terminated.
    local argv=(env "DATA=$DATA" "OUTPUT=$OUTPUT" "CLIP_CHECKPOINT=${CLIP_CHECKPOINT:-}" "TRAINER=$TRAINER"
                "CFG=$CFG" "SEARCH_CFG=$SEARCH_CFG" "PYTHON=$PYTHON" "GPUS_PER_JOB=$GPUS_PER_JOB"
                EXECUTOR=sequential bash "$REPO_DIR/scripts/dpl/_cell.sh" "$@" -- "${OPTS[@]}")
    printf '%s\0' "$name" "$OUTPUT/grid_logs/${name//\//-}.log" "${#argv[@]}" "${argv[@]}" >> "$GRID_FILE"
}

# run_grid: after the last cell, EXECUTOR=local|slurm runs the queued cells through tools/grid.py
# (progress while waiting; a failed cell does not stop the others; at the end the failed cells with
# their logs) and exits with its status (1 if a cell failed). Sequential: nothing left to do.
run_grid() {
    if [[ "$EXECUTOR" == sequential ]]; then return 0; fi
    if [[ -z "${GRID_FILE:-}" ]]; then echo "Nothing to run: every cell is finished."; return 0; fi
    local rc=0
    "$PYTHON" "$REPO_DIR/tools/grid.py" "$GRID_FILE" --folder "$OUTPUT/grid_logs" || rc=$?
    if (( rc )); then exit "$rc"; fi
}
