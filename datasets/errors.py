"""Exceptions raised by the dataset loaders; each message names the file, the value and the fix."""
import pickle

from dpl.errors import UserError

DOCS = "docs/DATASETS.md"


class DatasetLayoutError(UserError, FileNotFoundError):
    """A folder or file the loader needs is not where CoOp's layout puts it."""


class DatasetFormatError(UserError):
    """A split, annotation or cache file exists but its content is not what the format says."""


class UnsafeCacheError(UserError, pickle.UnpicklingError):
    """A cache pickle asked for something other than ``Datum`` and plain builtins (or is unreadable)."""
