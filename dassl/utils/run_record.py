"""Which run an output folder holds: ``run_config.json`` next to the checkpoints.

A re-run into a folder resumes from its checkpoints, so the folder must hold a run of the same
trainer, seed and data; otherwise the results (from the old run) and the records of the new one
(e.g. the seed in a search artifact) would disagree. ``check_output_dir`` refuses such a re-run,
naming the key that differs, before anything is written; ``record_run`` then records the run and
``mark_finished`` its completion, after which no key that affects results may change. The file
holds the flattened config::

    {"finished": bool, "config": {"TRAINER.NAME": "DPLTrain", "SEED": 1, ...}}
"""
from __future__ import annotations

import glob
import json
import os

from dpl.run_keys import identity_keys, operational_keys
from dpl.errors import UserError

from .distributed import is_main_process
from .torchtools import atomic_write_text

__all__ = ["RECORD_FILE", "check_output_dir", "check_model_dir", "record_run", "mark_finished",
           "flat_config"]

RECORD_FILE = "run_config.json"
# What a run is (never changes when a folder is re-used) and what may change (where a run reads and
# writes, how fast it goes): derived from the one table of config keys, dpl/run_keys.py.
IDENTITY_KEYS = identity_keys()
OPERATIONAL_KEYS = operational_keys()


def flat_config(cfg, prefix=""):
    """``{"A.B.C": value}`` of a (yacs) config, values as JSON gives them back (tuples -> lists)."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flat_config(value, prefix + key + "."))
        else:
            out[prefix + key] = json.loads(json.dumps(value))
    return out


def check_output_dir(cfg, directory):
    """Refuse to train ``cfg`` into a folder whose checkpoints belong to another run. Keys outside
    IDENTITY_KEYS may change while the run is unfinished (e.g. a lower OPTIM.LR after a non-finite
    loss): returns one note per changed key, for the log."""
    path = os.path.join(directory, RECORD_FILE)
    saved = _read(path)
    if saved is None or not _has_checkpoints(directory):
        return []  # nothing to resume, or a folder from before these records: nothing to compare
    now = flat_config(cfg)
    _refuse_other_trainer(saved["config"], now, directory, path, "--output-dir")
    notes = []
    for key, (old, new) in _differences(saved["config"], now).items():
        if key in IDENTITY_KEYS or saved.get("finished"):
            state = "a finished run" if saved.get("finished") else "a run"
            raise UserError(
                f"{directory} holds {state} with {key} = {old!r} (see {path}), but this run has "
                f"{key} = {new!r}, and re-running there would resume from it; choose another "
                f"--output-dir (or delete the folder to start afresh).")
        notes.append(f"Note: resuming {directory} with {key} changed from {old!r} to {new!r}")
    return notes


def record_run(cfg, directory):
    """Record ``cfg`` as the (unfinished) run of ``directory``, unless the folder already holds
    checkpoints of a run from before these records."""
    path = os.path.join(directory, RECORD_FILE)
    if os.path.isfile(path) or not _has_checkpoints(directory):
        _write(path, flat_config(cfg), finished=False)


def check_model_dir(cfg, directory, flag="--model-dir"):
    """Refuse to load ``directory`` (``--model-dir`` / ``--resume``) when its record names another
    trainer."""
    path = os.path.join(directory, RECORD_FILE)
    saved = _read(path)
    if saved is not None:
        _refuse_other_trainer(saved["config"], flat_config(cfg), directory, path, flag)


def mark_finished(cfg, directory):
    """Record that the run of ``cfg`` in ``directory`` completed."""
    _write(os.path.join(directory, RECORD_FILE), flat_config(cfg), finished=True)


def _refuse_other_trainer(saved, now, directory, path, flag):
    old, new = saved.get("TRAINER.NAME"), now.get("TRAINER.NAME")
    if old != new:
        raise UserError(
            f"{flag} {directory} holds a {old} run (see {path}), but this is a {new} run, which "
            f"needs a folder of its own {new} run; choose another {flag}.")


def _differences(saved, now):
    keys = [k for k in now if k not in OPERATIONAL_KEYS and k in saved and saved[k] != now[k]]
    keys.sort(key=lambda k: (k not in IDENTITY_KEYS, k))  # name the most telling key first
    return {k: (saved[k], now[k]) for k in keys}


def _has_checkpoints(directory):
    return bool(glob.glob(os.path.join(glob.escape(directory), "*", "checkpoint")))


def _read(path):
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise UserError(f"{path} is damaged; delete it (it records which run the folder holds) "
                        "and re-run.")
    return record


def _write(path, config, finished):
    if not is_main_process():  # torchrun: rank 0 records the run
        return
    atomic_write_text(path, json.dumps({"finished": finished, "config": config}, indent=1) + "\n")
