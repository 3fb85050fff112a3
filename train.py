"""CoOp/MaPLe-compatible command line: flags + ``KEY VALUE`` opts -> cfg -> trainer -> train / eval.

    python train.py --root DATA --seed 1 --trainer DPLTrain \\
        --dataset-config-file configs/datasets/dtd.yaml \\
        --config-file configs/trainers/DPLTrain/vit_b16.yaml \\
        --output-dir output/... DATASET.NUM_SHOTS 16

Config merge order: Dassl defaults, ``extend_cfg``, dataset YAML, trainer YAML, CLI flags, opts.
All ``--flags`` must come before the first ``KEY VALUE`` pair (opts swallow the rest).
``main(argv)`` also works in-process. User mistakes and explained failures (``dpl.errors.UserError``:
bad data, refused or corrupt files, a non-finite loss, ...; a missing user path; a full disk) print
one ``train.py: error: ...`` line, also at the end of the run's log, and exit with code 2 (set
``DPL_DEBUG=1`` for the traceback); any other exception is a bug and keeps its traceback.
``DPL_DETERMINISTIC=1`` selects deterministic GPU kernels (docs/REPRODUCIBILITY.md).
"""
from __future__ import annotations

import argparse
import difflib
import errno
import os
import sys
import tempfile

import torch
import yaml

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.utils import (Logger, check_availability, collect_env_info, run_record, set_random_seed,
                         setup_logger)
from dassl.utils.distributed import (close_distributed, get_world_size, init_distributed,
                                     is_main_process, per_rank_batch, shared_seed)
from dpl.errors import UserError, exit_error


def _skip_missing(err, names, what):
    """Re-raise ``err`` unless it is the named module itself that is missing (then warn)."""
    if err.name not in names:
        raise err
    print(f"train.py: warning: {what} not found next to train.py; skipped.", file=sys.stderr)


# Importing these packages registers our datasets and trainers (Dassl registries).
try:
    import datasets  # noqa: F401
except ModuleNotFoundError as _err:
    _skip_missing(_err, ("datasets",), "package 'datasets' (the dataset loaders)")
try:
    import trainers  # noqa: F401
except ModuleNotFoundError as _err:
    _skip_missing(_err, ("trainers",), "package 'trainers' (the trainers)")
try:
    from trainers.config import IGNORED_KEYS, apply_model_input, extend_cfg
except ModuleNotFoundError as _err:
    _skip_missing(_err, ("trainers", "trainers.config"), "trainers/config.py (extend_cfg)")
    IGNORED_KEYS = {}

    def extend_cfg(cfg):
        return None

    def apply_model_input(cfg, opts):
        return []


# ---------------------------------------------------------------------------------------------
# Command line and config.

def get_parser():
    parser = argparse.ArgumentParser(prog="train.py")
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="",
                        help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=None,
                        help="fixed seed (>= 0); omitted: keep SEED from the config files / opts")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="",
                        help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="",
                        help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int,
                        help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser


def reset_cfg(cfg, args):
    """Apply the CLI flags (they beat both YAML files; opts beat them)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:  # real CoOp used `if args.seed:`, which ignored --seed 0
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def setup_cfg(args):
    """Defaults -> extend_cfg -> dataset YAML -> trainer YAML -> CLI flags -> opts -> freeze."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        _merge_file(cfg, args.dataset_config_file, "--dataset-config-file")
    if args.config_file:
        _merge_file(cfg, args.config_file, "--config-file")
    reset_cfg(cfg, args)
    _merge_opts(cfg, args.opts or [])
    apply_model_input(cfg, args.opts or [])  # an open_clip model's own size/mean/std/interpolation
    cfg.freeze()
    return cfg


def _merge_file(cfg, path, flag):
    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} ({flag}) does not exist; check the path.")
    try:
        cfg.merge_from_file(path)
    except KeyError as err:
        raise UserError(_unknown_key_message(cfg, err, f"in {path}")) from None
    except (ValueError, AssertionError, yaml.YAMLError) as err:
        raise UserError(f"in {path}: {_first_line(err)}; fix the value in that file.") from None


def _merge_opts(cfg, opts):
    flags = [o for o in opts if o.startswith("--")]
    if flags:  # argparse hands everything after the first KEY to the opts
        raise UserError(
            f"{flags[0]} comes after the KEY VALUE opts, where it is read as a config key; put every "
            f"--flag before the first KEY (e.g. train.py ... {flags[0]} ... {opts[0]} ...).")
    try:
        cfg.merge_from_list(opts)
    except AssertionError as err:
        text = _first_line(err)
        if text.startswith("Non-existent key"):
            raise UserError(_unknown_key_message(cfg, err, "in the command-line opts")) from None
        if "odd length" in text:
            raise UserError(
                f"the command-line opts {opts} must be KEY VALUE pairs (got {len(opts)} items); "
                "put every --flag before the first KEY.") from None
        raise UserError(f"in the command-line opts: {text}") from None
    except (ValueError, KeyError) as err:
        raise UserError(f"in the command-line opts: {_first_line(err)}; give a value of the "
                        "default's type (e.g. 1.0 for a float key).") from None


def _first_line(err):
    text = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def _all_keys(node, prefix=""):
    keys = []
    for k, v in node.items():
        full = prefix + k
        keys.append(full)
        if isinstance(v, dict):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _unknown_key_message(cfg, err, where):
    key = _first_line(err).split(":", 1)[-1].strip()
    msg = f"unknown config key {key} {where}"
    close = difflib.get_close_matches(key, _all_keys(cfg), n=1, cutoff=0.5)
    if close:
        return msg + f"; did you mean {close[0]}?"
    return msg + "; see dassl/config/defaults.py and trainers/config.py for the valid keys."


def validate_cfg(cfg):
    """Reject obviously wrong values before any log, data or model is created."""
    # Same ValueError ("... do you mean ...?") as build_trainer / build_dataset, but before the run
    # and saying which name is wrong.
    _check_name("trainer", "--trainer / TRAINER.NAME", cfg.TRAINER.NAME, TRAINER_REGISTRY)
    _check_name("dataset", "DATASET.NAME in --dataset-config-file", cfg.DATASET.NAME, DATASET_REGISTRY)
    shots = cfg.DATASET.NUM_SHOTS
    if shots == 0 or shots < -1:
        raise UserError(
            f"DATASET.NUM_SHOTS must be -1 (all images) or a positive number of shots, got {shots}; "
            "e.g. pass DATASET.NUM_SHOTS 16.")
    for key in ("TRAIN_X", "TRAIN_U", "TEST"):
        batch = cfg.DATALOADER[key].BATCH_SIZE
        if batch <= 0:
            raise UserError(f"DATALOADER.{key}.BATCH_SIZE must be positive, got {batch}; "
                            f"e.g. pass DATALOADER.{key}.BATCH_SIZE 4.")
    _check_writable(cfg.OUTPUT_DIR)


def warn_ignored_keys(cfg):
    """One warning per key the trainer never reads (IGNORED_KEYS) that is set away from its default."""
    default = get_cfg_default()
    extend_cfg(default)
    ignored = IGNORED_KEYS.get(cfg.TRAINER.NAME, ())
    now, before = run_record.flat_config(cfg), run_record.flat_config(default)
    for key in sorted(now):
        if now[key] != before.get(key) and any(key == k or key.startswith(k + ".") for k in ignored):
            print(f"train.py: warning: {cfg.TRAINER.NAME} ignores {key} (set to {now[key]!r}); "
                  "it is read by the other DPL stage only.")


def run_notes(cfg) -> list:
    """Lines a trainer wants at the top of its log (its ``run_notes(cfg)``, e.g. DPLSearch's search
    loop); the trainer may raise UserError there for its own settings, before the log is opened."""
    notes = getattr(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), "run_notes", None)
    return list(notes(cfg)) if notes is not None else []


def _check_name(what, where, name, registry):
    try:
        check_availability(name, registry.registered_names())
    except ValueError as err:
        raise UserError(f"unknown {what} {name!r} ({where}): {err}") from None


def _check_writable(directory):
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise UserError(f"OUTPUT_DIR {directory!r} is not writable ({err.strerror or err}); "
                        "choose another --output-dir.") from None


# ---------------------------------------------------------------------------------------------
# Run.

def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__.keys()):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def run(args):
    cfg = setup_cfg(args)
    validate_cfg(cfg)
    trainer_notes = run_notes(cfg)  # the trainer's own checks, and its first log lines
    notes = check_run_folders(args, cfg)  # before the log: a refused folder is left as it was
    notes = [*notes, *trainer_notes]
    # Under torchrun: join the job (docs/SCALING.md, "Multi-GPU"). A rendezvous, so every rank has checked
    # the folders before rank 0 writes anything.
    init_distributed(cfg.USE_CUDA)
    # Before anything random: every rank seeds alike (SEED -1 under torchrun: rank 0's draw).
    seed = shared_seed(cfg.SEED)
    set_random_seed(seed)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")

    logger = setup_logger(cfg.OUTPUT_DIR) if is_main_process() else quiet_stdout()
    if cfg.SEED < 0:
        ranks = get_world_size()
        print(f"SEED {cfg.SEED} (no --seed): this run draws seed {seed}"
              + (f" (rank 0's draw; every one of the {ranks} processes starts from it)" if ranks > 1 else "")
              + f"; --seed {seed} repeats its random choices")
    try:
        _run_logged(args, cfg, notes)
    except Exception as err:
        # The log of a failed run ends with the reason (stderr may not be kept on a cluster).
        text = describe_error(err)
        if text is not None and logger.file is not None and not logger.file.closed:
            logger.file.write(f"train.py: error: {text}\n")
        raise
    finally:
        # In-process callers (tests, notebooks) get their stdout back and the log file closed.
        sys.stdout.flush()
        if sys.stdout is logger:
            sys.stdout = logger.console
        logger.close()
        close_distributed()


def quiet_stdout():
    """Ranks > 0 of a torchrun job print nothing (rank 0 logs); their errors still reach stderr."""
    logger = Logger(console=open(os.devnull, "w"))
    sys.stdout = logger
    return logger


def print_world(cfg, training=True):
    """World size and per-rank batch (DATALOADER.TRAIN_X.BATCH_SIZE is the global batch, which a
    training run needs divisible by the world size)."""
    batch, world = cfg.DATALOADER.TRAIN_X.BATCH_SIZE, get_world_size()
    try:
        local = per_rank_batch(batch)
    except UserError:
        if training:
            raise
        local = "-"
    print(f"World size: {world} process(es); global batch {batch}, per-rank batch {local}")


def _run_logged(args, cfg, notes=()):
    print_world(cfg, training=not (args.eval_only or args.no_train))
    for note in notes:
        print(note)
    if not (args.eval_only or args.no_train):
        run_record.record_run(cfg, cfg.OUTPUT_DIR)
    warn_ignored_keys(cfg)
    configure_determinism(cfg)
    export_clip_checkpoint(cfg)
    print_args(args, cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if not args.no_train:
        trainer.train()
        run_record.mark_finished(cfg, cfg.OUTPUT_DIR)


def check_run_folders(args, cfg):
    """Refuse, before anything is built, folders that hold another trainer's run or (for a re-run
    into OUTPUT_DIR) a run with another seed/config (dassl/utils/run_record.py). Returns the notes
    on settings changed for a resumed run."""
    if args.eval_only:
        if args.model_dir:
            run_record.check_model_dir(cfg, args.model_dir)
        return []
    if args.no_train:
        return []
    if cfg.RESUME:
        run_record.check_model_dir(cfg, cfg.RESUME, flag="--resume")
    return run_record.check_output_dir(cfg, cfg.OUTPUT_DIR)


def export_clip_checkpoint(cfg):
    """Copied CoOp-family trainers find CLIP through ``clip._download``, which reads
    ``DPL_CLIP_CHECKPOINT``; make ``MODEL.BACKBONE.PATH`` reach them too."""
    path = getattr(cfg.MODEL.BACKBONE, "PATH", "")
    if path:
        os.environ["DPL_CLIP_CHECKPOINT"] = os.path.abspath(os.path.expanduser(path))


def configure_determinism(cfg):
    """cuDNN autotuning (fast, but it may pick different kernels per run) unless
    ``DPL_DETERMINISTIC=1`` asks for deterministic GPU kernels (docs/REPRODUCIBILITY.md)."""
    if os.environ.get("DPL_DETERMINISTIC", "") in ("", "0"):
        if torch.cuda.is_available() and cfg.USE_CUDA:
            torch.backends.cudnn.benchmark = True
        return
    # cuBLAS reads this when its first handle is created, i.e. after this point.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # warn_only: an op without a deterministic kernel warns instead of stopping the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    print("DPL_DETERMINISTIC=1: deterministic algorithms on, cuDNN benchmark off")


# The project's own user errors (bad data, refused or corrupt files, a non-finite loss, ...: see
# dpl/errors.py) and the library errors that only a user's path causes. Anything else (an
# unexpected ValueError or RuntimeError from inside the code) is a bug: its traceback is shown.
_USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)


def main(argv=None):
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``). Raises SystemExit(2) on explained errors."""
    args = get_parser().parse_args(argv)
    try:
        run(args)
    except Exception as err:
        text = describe_error(err)
        if text is None or os.environ.get("DPL_DEBUG", "") not in ("", "0"):
            raise
        exit_error("train.py", text)


def describe_error(err):
    """The one-line explanation of an error train.py reports, or None for anything else (a bug:
    its traceback is shown)."""
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        where = err.filename or "the output"
        return (f"no space left on the device while writing {where}; free space (or choose another "
                "--output-dir) and re-run the same command: it resumes from the last complete epoch.")
    if isinstance(err, OSError) and err.errno in _NO_ACCESS and err.filename:
        return (f"cannot access {err.filename} ({err.strerror}); fix its permissions or choose "
                "another path (--output-dir, --root).")
    if isinstance(err, _USER_ERRORS):
        return _error_text(err)
    return None


def _error_text(err):
    text = str(err)
    if "Original Traceback" in text:  # raised in a DataLoader worker: keep the original message
        text = _worker_message(text, type(err))
    return " ".join(text.split()) or type(err).__name__


def _worker_message(text, exc_type):
    """The message of the exception a DataLoader worker raised, from the traceback text torch puts
    into the re-raised exception (its last line reads ``module.Type: message``)."""
    prefixes = (f"{exc_type.__module__}.{exc_type.__qualname__}: ", f"{exc_type.__qualname__}: ")
    for line in reversed(text.strip().splitlines()):
        for prefix in prefixes:
            if line.startswith(prefix):
                return line[len(prefix):]
    return text.strip().splitlines()[-1]


if __name__ == "__main__":
    main()
