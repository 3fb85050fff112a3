"""Exceptions raised by the dataset loaders; each message names the file, the value and the fix."""
import pickle

DOCS = "docs/DATASETS.md"


class DatasetLayoutError(FileNotFoundError):
    """A folder or file the loader needs is not where CoOp's layout puts it."""


class DatasetFormatError(ValueError):
    """A split, annotation or cache file exists but its content is not what the format says."""


class UnsafeCacheError(pickle.UnpicklingError):
    """A cache pickle asked for something other than ``Datum`` and plain builtins (or is unreadable)."""
