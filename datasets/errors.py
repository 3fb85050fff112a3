"""Exceptions raised by the dataset loaders; each message names the file, the value and the fix."""
import errno
import os
import pickle

from dpl.errors import UserError

DOCS = "docs/DATASETS.md"


class DatasetLayoutError(UserError, FileNotFoundError):
    """A folder or file the loader needs is not where CoOp's layout puts it."""


class DatasetFormatError(UserError):
    """A split, annotation or cache file exists but its content is not what the format says."""


class UnsafeCacheError(UserError, pickle.UnpicklingError):
    """A cache pickle asked for something other than ``Datum`` and plain builtins (or is unreadable)."""


class CacheWriteError(UserError, OSError):
    """A split or cache file cannot be written (read-only dataset folder, full disk, ...)."""


def unwritable(what: str, path: str, err: OSError) -> CacheWriteError:
    """The error for an OSError while writing ``path`` (the ``what``, e.g. "split file"): it names
    ``path`` itself, never the hidden temporary file the write went through, and the fix."""
    reason = err.strerror or str(err)
    folder = os.path.dirname(path)
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = (f"{folder} is not writable: pass DATASET.CACHE_DIR <a writable folder> (split and few-shot "
               f"files then go there, see {DOCS}) or make the folder writable")
    elif err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free disk space or pass DATASET.CACHE_DIR <a folder on another disk> (see {DOCS})"
    else:
        fix = f"check the folder {folder} or pass DATASET.CACHE_DIR <another folder> (see {DOCS})"
    return CacheWriteError(f"Cannot write the {what} {path} ({reason}); {fix}.")
