"""Atomic file writes, and the names of per-epoch checkpoint files: the one implementation of
each, used by ``dpl``, the engine (``dassl``), the trainers, datasets and tools alike.

Each writer writes to a temporary file in the target's directory, fsyncs it, then renames it over
the target (rename is atomic on POSIX and Windows for files on the same volume), so a crash (or a
full disk) never leaves a half-written file in place.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it to ``path`` on success."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            # A full disk surfaces from write/fsync without a file name; name the target.
            raise OSError(err.errno, err.strerror or str(err), path) from err
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_torch_save(obj: Any, path: str) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


# Per-epoch checkpoints are ``<model folder>/model.pth.tar-<epoch>`` (Dassl's names, which CoOp's
# tools and ours read); ``model-best.pth.tar`` is the best-validation copy.
BEST_CHECKPOINT = "model-best.pth.tar"
_EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)")


def epoch_checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint of ``epoch``: ``model.pth.tar-<epoch>``."""
    return f"model.pth.tar-{int(epoch)}"


def checkpoint_file_epoch(fname: str) -> Optional[int]:
    """N for a per-epoch checkpoint file ``model.pth.tar-N``; None for any other name (e.g.
    ``model-best.pth.tar``)."""
    match = _EPOCH_FILE.fullmatch(fname)
    return int(match.group(1)) if match else None


def saved_epochs(folder: str) -> list:
    """The epochs of the ``model.pth.tar-N`` files in ``folder``, ascending ([] if it is missing)."""
    if not os.path.isdir(folder):
        return []
    return sorted(e for e in map(checkpoint_file_epoch, os.listdir(folder)) if e is not None)
