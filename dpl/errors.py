"""The one exception hierarchy for mistakes a user can fix (a path, a config value, a data file).

``train.py`` prints a ``UserError`` as one line (``train.py: error: <message>``) and exits with code
2; any other exception is a bug and keeps its traceback. Messages name the file or key, the value and
the fix. ``UserError`` subclasses ``ValueError``, so code that caught ``ValueError`` keeps working.

Both ``dpl`` and the engine raise these errors: ``dpl`` never imports ``dassl``, and ``dassl`` may
import this module (one of ``dpl``'s foundation modules; docs/ARCHITECTURE.md). It imports nothing
of the project itself.
"""
from __future__ import annotations

from typing import Mapping

__all__ = ["UserError", "NonFiniteLossError", "CheckpointMismatchError", "load_state_checked",
           "describe_state_mismatch"]


class UserError(ValueError):
    """A mistake in the command line, the config or an input file; reported as one line, exit 2."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became inf/NaN; the message names epoch and batch and what to lower."""


class CheckpointMismatchError(UserError):
    """A checkpoint's tensors do not fit the model built from the current settings."""


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
