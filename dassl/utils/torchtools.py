"""Checkpoint save/load/resume, pretrained-weight loading and RNG state capture.

Project deviations from real Dassl: checkpoints hold only tensors and plain
Python values, are written atomically (temp file + fsync + rename; the ``checkpoint`` pointer file is
updated only after the model file is complete), and are read with ``torch.load(weights_only=True)``.
Legacy real-Dassl checkpoints (which pickle a scheduler object) load only with an explicit opt-in:
``allow_unsafe=True`` or the environment variable ``DASSL_ALLOW_UNSAFE_LOAD=1``.
"""
from __future__ import annotations

import os
import random
import shutil
import warnings
from collections import OrderedDict

import numpy as np
import torch

from dpl.io import (BEST_CHECKPOINT, atomic_open, atomic_torch_save, atomic_write_text,  # noqa: F401
                    checkpoint_file_epoch, epoch_checkpoint_name, saved_epochs)
from dpl.errors import (CorruptCheckpointError, UnsafeCheckpointError, UserError,  # noqa: F401
                        load_state_checked, load_weights_only)

from .tools import mkdir_if_missing
from .distributed import get_rank, get_world_size, seed_rank_streams

__all__ = [
    "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "read_checkpoint_pointer",
    "newest_loadable", "checkpoint_file_epoch", "epoch_checkpoint_name",
    "load_pretrained_weights",
    "count_num_param", "get_rng_state", "set_rng_state", "UnsafeCheckpointError",
    "CorruptCheckpointError",
]

UNSAFE_LOAD_ENV = "DASSL_ALLOW_UNSAFE_LOAD"


# ---------------------------------------------------------------------------------------------
# Atomic writes and checkpoint file names: one implementation, in dpl.io (the engine may import
# dpl's foundation modules, never its method; docs/ARCHITECTURE.md). Re-exported here under
# Dassl-style names.

# ---------------------------------------------------------------------------------------------
# RNG state (weights_only-safe: tensors, ints, lists, tuples).

def get_rng_state():
    """Python, numpy, torch (and CUDA) RNG states as plain lists/tensors."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what ``get_rng_state`` returned (CUDA only if saved and available)."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------------
# Save / load / resume.

def _strip_module_prefix(state_dict):
    new_state_dict = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[7:]
        new_state_dict[k] = v
    return new_state_dict


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Write ``state`` to ``save_dir/<model_name or model.pth.tar-<epoch>>`` and point
    ``save_dir/checkpoint`` at it.

    Both writes are atomic and in that order, so a crash at any moment leaves the previous
    checkpoint (and the pointer naming it) loadable. ``state`` must hold only tensors and plain
    Python values, since ``load_checkpoint`` reads it with ``weights_only=True``.
    """
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state = dict(state)
        state["state_dict"] = _strip_module_prefix(state["state_dict"])

    fname = model_name if model_name else epoch_checkpoint_name(state["epoch"])
    fpath = os.path.join(save_dir, fname)
    atomic_torch_save(state, fpath)
    print("Checkpoint saved to {}".format(fpath))

    atomic_write_text(os.path.join(save_dir, "checkpoint"), "{}\n".format(os.path.basename(fpath)))

    if is_best:
        best_fpath = os.path.join(os.path.dirname(fpath), BEST_CHECKPOINT)
        with atomic_open(best_fpath, "wb") as fh:
            _copy_into(fpath, fh)
        print('Best checkpoint saved to "{}"'.format(best_fpath))


def _copy_into(src, fh):
    with open(src, "rb") as f:
        shutil.copyfileobj(f, fh)


def _unsafe_allowed(allow_unsafe):
    if allow_unsafe is not None:
        return bool(allow_unsafe)
    return os.environ.get(UNSAFE_LOAD_ENV, "") not in ("", "0", "false", "False")


def load_checkpoint(fpath, allow_unsafe=None):
    """Load a checkpoint dict with ``torch.load(weights_only=True)``.

    A legacy checkpoint that needs full unpickling (real Dassl pickles its warm-up scheduler) is
    refused with UnsafeCheckpointError unless ``allow_unsafe=True`` or ``DASSL_ALLOW_UNSAFE_LOAD=1``;
    with the opt-in it loads with a warning. Only opt in for files you trust. A truncated or
    garbled file raises CorruptCheckpointError. Both messages are one line naming the file
    (``dpl.errors.load_weights_only``, which ``dpl.load_classifier`` reads prompts with too).
    """
    if fpath is None:
        raise ValueError("File path is None")
    fpath = os.path.abspath(os.path.expanduser(fpath))
    if not os.path.exists(fpath):
        raise FileNotFoundError('File is not found at "{}"'.format(fpath))
    # On the CPU: a file saved from cuda:0 must not put every process's copy on GPU 0 (torchrun);
    # load_state_dict and the optimizer's load copy the tensors to where the model lives.
    map_location = "cpu"

    try:
        return load_weights_only(
            fpath, map_location,
            corrupt_fix="copy it again, or delete its run folder to train from scratch.",
            unsafe_fix="Real Dassl pickles its scheduler into checkpoints: only if you trust this "
                       "file, set {}=1 to load it anyway; otherwise copy it again.".format(UNSAFE_LOAD_ENV))
    except UnsafeCheckpointError:
        if not _unsafe_allowed(allow_unsafe):
            print('Unable to load checkpoint from "{}"'.format(fpath))
            raise
    except CorruptCheckpointError:
        print('Unable to load checkpoint from "{}"'.format(fpath))
        raise

    warnings.warn(
        'Loading "{}" with full unpickling ({} / allow_unsafe): this can run arbitrary code; '
        "only do this for files you trust.".format(fpath, UNSAFE_LOAD_ENV)
    )
    try:
        return torch.load(fpath, map_location=map_location, weights_only=False)
    except Exception:
        print('Unable to load checkpoint from "{}"'.format(fpath))
        raise


def read_checkpoint_pointer(fdir):
    """The file name stored in ``fdir/checkpoint`` (the most recent complete save)."""
    pointer = os.path.join(fdir, "checkpoint")
    if not os.path.isfile(pointer):
        raise FileNotFoundError(
            'No "checkpoint" file in "{}"; it names the file to resume from. Delete the folder to '
            "train from scratch.".format(fdir)
        )
    with open(pointer, "r") as fh:
        lines = fh.readlines()
    name = lines[0].strip() if lines else ""
    if not name or os.path.basename(name) != name:
        raise UserError(
            'The checkpoint pointer "{}" holds {!r}, not a file name in that folder; write the name '
            "of the checkpoint to resume from (e.g. model.pth.tar-3) into it, or delete the folder "
            "to train from scratch.".format(pointer, name))
    return name


def newest_loadable(directory, files):
    """The checkpoint files to resume from: ``files`` (``{model name: file name in
    directory/<name>}``, one epoch) if they all load, else the newest older epoch whose
    ``model.pth.tar-<epoch>`` files all load (a note names the bad file).

    Raises the CorruptCheckpointError of the bad file when no older epoch loads.
    """
    bad, error = _first_unloadable(directory, files)
    if bad is None:
        return files
    current = min(_file_epoch(f) for f in files.values())
    common = set.intersection(*(_saved_epochs(os.path.join(directory, n)) for n in files))
    for epoch in sorted((e for e in common if e < current), reverse=True):
        older = {name: epoch_checkpoint_name(epoch) for name in files}
        if _first_unloadable(directory, older)[0] is None:
            print('Note: checkpoint "{}" is corrupt or truncated; resuming from epoch {}, the newest '
                  "checkpoint that loads.".format(bad, epoch))
            return older
    raise error


def _first_unloadable(directory, files):
    """(path, CorruptCheckpointError) of the first of ``files`` that does not load, else (None, None)."""
    for name, fname in files.items():
        fpath = os.path.join(directory, name, fname)
        try:
            load_checkpoint(fpath)
        except CorruptCheckpointError as err:
            return fpath, err
    return None, None


def _file_epoch(fname):
    epoch = checkpoint_file_epoch(fname)
    return float("inf") if epoch is None else epoch


def _saved_epochs(fdir):
    return set(saved_epochs(fdir))


RESUME_MISMATCH_HINT = (
    "the folder holds a run of another trainer or of other settings; resume it with the settings "
    "it was started with, or choose another --output-dir (or delete the folder) to start afresh.")


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None, allow_unsafe=None,
                           fname=None):
    """Resume from the file named in ``fdir/checkpoint`` (or from ``fdir/fname``); return the stored
    epoch (the start epoch).

    Loads the model strictly, then optimizer and scheduler if given, and restores the RNG states
    saved under ``rng_state`` so a resumed CPU run repeats an uninterrupted one.
    """
    fpath = os.path.join(fdir, fname or read_checkpoint_pointer(fdir))

    print('Loading checkpoint from "{}"'.format(fpath))
    checkpoint = load_checkpoint(fpath, allow_unsafe=allow_unsafe)
    load_state_checked(model, checkpoint["state_dict"], fpath, RESUME_MISMATCH_HINT)
    print("Loaded model weights")

    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")

    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")

    if checkpoint.get("rng_state") is not None:
        set_rng_state(checkpoint["rng_state"])
    rank_states = checkpoint.get("rank_rng_states")  # torchrun jobs: each rank resumes its own
    if rank_states and len(rank_states) == get_world_size():
        set_rng_state(rank_states[get_rank()])
    elif get_world_size() > 1 and checkpoint.get("rng_state") is not None:
        # Saved by another number of processes: every rank now holds the saved (rank 0's) state;
        # derive one stream per rank from it (repeatable, but not the uninterrupted run's).
        seed_rank_streams(int(torch.randint(2**31, (1,))))

    start_epoch = checkpoint["epoch"]
    print("Previous epoch: {}".format(start_epoch))
    return start_epoch


def load_pretrained_weights(model, weight_path):
    """Copy the weights of ``weight_path`` whose names and shapes match into ``model``."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint

    model_dict = model.state_dict()
    new_state_dict = OrderedDict()
    matched_layers, discarded_layers = [], []
    for k, v in _strip_module_prefix(state_dict).items():
        if k in model_dict and model_dict[k].size() == v.size():
            new_state_dict[k] = v
            matched_layers.append(k)
        else:
            discarded_layers.append(k)

    model_dict.update(new_state_dict)
    model.load_state_dict(model_dict)

    if len(matched_layers) == 0:
        warnings.warn(
            "Cannot load {} (check the key names manually)".format(weight_path)
        )
    else:
        print("Successfully loaded pretrained weights from {}".format(weight_path))
        if len(discarded_layers) > 0:
            print("Layers discarded due to unmatched keys or size: {}".format(discarded_layers))


def count_num_param(model=None, params=None):
    """Number of parameters of ``model`` (or of the iterable ``params``)."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        total = 0
        for p in params:
            if isinstance(p, dict):
                total += sum(q.numel() for q in p["params"])
            else:
                total += p.numel()
        return total
    raise ValueError("count_num_param() needs a model or params; got neither.")
