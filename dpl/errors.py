"""The one exception hierarchy for mistakes a user can fix (a path, a config value, a data file),
and the one way of reporting them.

``train.py`` and the tools (``tools/*.py``) print a ``UserError`` as one line (``<prog>: error:
<message>``, ``exit_error``) and exit with code 2; any other exception is a bug and keeps its
traceback. Messages name the file or key, the value and the fix. ``UserError`` subclasses
``ValueError``, so code that caught ``ValueError`` keeps working.

Both ``dpl`` and the engine raise these errors and read checkpoints the same way
(``load_weights_only``): ``dpl`` never imports ``dassl``, and ``dassl`` may import this module (one of
``dpl``'s foundation modules; docs/ARCHITECTURE.md). It imports nothing of the project itself.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import sys
from typing import Mapping, NoReturn, Optional

__all__ = ["UserError", "NonFiniteLossError", "CheckpointMismatchError", "CorruptCheckpointError",
           "UnsafeCheckpointError", "load_state_checked", "describe_state_mismatch",
           "load_weights_only", "weights_only_reason", "exit_error", "one_line", "output_problem",
           "os_error_line"]


class UserError(ValueError):
    """A mistake in the command line, the config or an input file; reported as one line, exit 2."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became inf/NaN; the message names epoch and batch and what to lower."""


class CheckpointMismatchError(UserError):
    """A checkpoint's tensors do not fit the model built from the current settings."""


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """A checkpoint is not weights-only: reading it would unpickle Python objects (code could run)."""


class CorruptCheckpointError(UserError):
    """A checkpoint file is truncated or garbled (e.g. an incomplete copy from another machine)."""


def load_state_checked(module, state_dict: Mapping, path: str, hint: str) -> None:
    """``module.load_state_dict(state_dict)`` (strict; a module may accept older layouts in its own
    ``load_state_dict``); if it refuses, raise CheckpointMismatchError naming ``path``, the tensors
    that differ and ``hint`` (what to do) instead of torch's list of every key."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        problem = describe_state_mismatch(module.state_dict(), state_dict)
        if not problem:  # the module's own rule refused it: keep torch's last line
            problem = str(err).strip().splitlines()[-1].strip()
        raise CheckpointMismatchError(
            f'Checkpoint "{path}" does not fit this model ({problem}); {hint}') from None


def describe_state_mismatch(expected: Mapping, found: Mapping, limit: int = 3) -> str:
    """What differs between two state dicts (``name -> tensor``), on one line; "" when they fit.

    Names missing from ``found``, names ``found`` has in excess, and shapes that differ
    (``name: expected (2, 512), found (4, 512)``), at most ``limit`` of each kind.
    """
    def listing(names):
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: expected {_shape(expected[k])}, found {_shape(found[k])}"
              for k in expected if k in found and _shape(expected[k]) != _shape(found[k])]
    parts = []
    if missing:
        parts.append(f"missing {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected {listing(unexpected)}")
    if shapes:
        parts.append(f"other shapes: {listing(shapes)}")
    return "; ".join(parts)


def _shape(value) -> tuple:
    return tuple(getattr(value, "shape", ()))


# ---------------------------------------------------------------------------------------------
# Checkpoints read weights-only (the engine's checkpoints, a run's prompts for dpl.load_classifier).

def load_weights_only(path: str, map_location=None, corrupt_fix: str = "copy it again.",
                      unsafe_fix: str = "copy it again from where it was saved."):
    """``torch.load(path, weights_only=True)``; nothing in the file is ever run.

    A file that holds pickled Python objects raises UnsafeCheckpointError ("not a weights-only
    checkpoint"), a truncated or garbled one CorruptCheckpointError; both one line naming ``path``,
    what torch found and the caller's fix (``corrupt_fix`` / ``unsafe_fix``). Other OSErrors (a
    missing file, no permission) pass unchanged.
    """
    import torch

    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except UnicodeDecodeError:  # Python 2 pickles
            return torch.load(path, map_location=map_location, weights_only=True, encoding="latin1")
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'Checkpoint "{path}" is not a weights-only checkpoint ({weights_only_reason(err)}): it '
            "holds pickled Python objects that could run code, or it is damaged; it was not loaded "
            f"and nothing in it ran. {unsafe_fix}") from None
    except (RuntimeError, EOFError) as err:  # zip reader / pickle stream errors of a damaged file
        raise _corrupt(path, err, corrupt_fix) from None
    except OSError as err:
        # A file cut short at its end makes the zip reader fail with EINVAL (no file name).
        if err.errno != errno.EINVAL or err.filename is not None:
            raise
        raise _corrupt(path, err, corrupt_fix) from None


def weights_only_reason(err: BaseException) -> str:
    """The informative sentence of a torch.load error, on one line (torch's text spans paragraphs
    and suggests ``weights_only=False``, which is exactly what must not be done blindly)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    for para in re.split(r"\n\s*\n", text):
        line = " ".join(para.split())
        if line and not line.startswith(boilerplate):
            return line.split(". ")[0].rstrip(".")
    return type(err).__name__


def _corrupt(path: str, err: BaseException, fix: str) -> CorruptCheckpointError:
    reason = weights_only_reason(err)
    if reason != type(err).__name__:
        reason = f"{type(err).__name__}: {reason}"
    return CorruptCheckpointError(f'Checkpoint "{path}" is corrupt or truncated ({reason}); {fix}')


# ---------------------------------------------------------------------------------------------
# Reporting: one line, exit status 2 (train.py and every tool).

def one_line(message) -> str:
    """``message`` (an exception or text) on one line."""
    return " ".join(str(message).split()) or type(message).__name__


def exit_error(prog: str, message) -> NoReturn:
    """Print ``prog: error: message`` (on one line) to stderr and exit with status 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(2) from None


def output_problem(path: str, example: str = "out.png") -> Optional[str]:
    """Why ``path`` cannot be written as a new or replaced file, or None if it looks writable.

    Checked up front (before minutes of work): ``path`` is a folder, a parent of it is a file,
    or the nearest existing folder is not writable (``example``: a file name the message suggests
    inside a folder given by mistake). Whatever this cannot foresee surfaces as an
    OSError at write time (see ``os_error_line``).
    """
    full = os.path.abspath(path)
    if os.path.isdir(full):
        return f"{path} is a folder; give a file path, e.g. {os.path.join(path, example)}"
    parent = os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{path} lies below {parent}, which is a file, not a folder; choose another path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path}: the folder {parent} is not writable; choose a writable folder"
    return None


def os_error_line(err: OSError, path: Optional[str] = None) -> str:
    """One line for an OSError: the file (``path`` if given, else the one the error names), what
    went wrong, what to do."""
    name = path or (err.filename if err.filename is not None else "a file")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device while writing {name}; free space and run the command again."
    return (f"cannot access {name}: {err.strerror or err}; check the path and its folder's "
            "permissions (outputs need a writable folder).")
