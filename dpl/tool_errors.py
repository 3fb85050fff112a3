"""How the analysis tools (``tools/*.py``) report a user's mistake: one line, exit status 2.

Output files (PNGs, JSON) are checked before the work starts (``output_problem``); an OSError that
no check foresaw becomes one line naming the file (``os_error_line``).
"""
from __future__ import annotations

import os
import sys
from typing import NoReturn, Optional


def exit_error(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` (on one line) to stderr and exit with status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


def output_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be written as a new or replaced file, or None if it looks writable.

    Checked up front (before minutes of measuring): ``path`` is a folder, a parent of it is a file,
    or the nearest existing folder is not writable. Whatever this cannot foresee surfaces as an
    OSError at write time (see ``os_error_line``).
    """
    full = os.path.abspath(path)
    if os.path.isdir(full):
        return f"{path} is a folder; give a file path, e.g. {os.path.join(path, 'out.png')}"
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
    return (f"cannot access {name}: {err.strerror or err}; check the path and its folder's "
            "permissions (outputs need a writable folder).")
