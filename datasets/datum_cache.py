"""Pickled lists of ``Datum``: CoOp's few-shot caches and ImageNet's ``preprocessed.pkl``.

The files stay byte-compatible with CoOp's (a dict of lists, ``HIGHEST_PROTOCOL``, ``Datum`` pickled by
reference to ``dassl.data.datasets.base_dataset.Datum``), but they are read through a restricted
unpickler: a cache is data, so nothing in it may name a callable. Caches hold absolute image paths;
one whose images are gone (the dataset folder moved) is rebuilt instead of failing later in a loader.
"""
from __future__ import annotations

import builtins
import os
import pickle
from typing import Callable, Dict, List, Sequence

from dassl.data.datasets import Datum

from datasets.errors import DatasetFormatError, UnsafeCacheError, unwritable
from dpl.io import atomic_open

# The only class a cache may name, at the module path real Dassl pickles it under.
DATUM_GLOBAL = ("dassl.data.datasets.base_dataset", "Datum")
# Plain containers and scalars; none of them runs code when a pickle builds it.
SAFE_BUILTINS = frozenset(
    {"list", "dict", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool"}
)


class _Refused(Exception):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")


class _DatumUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == DATUM_GLOBAL:
            return Datum
        if module == "builtins" and name in SAFE_BUILTINS:
            return getattr(builtins, name)
        raise _Refused(module, name)


def read_datum_pickle(path: str, keys: Sequence[str]) -> Dict[str, List[Datum]]:
    """Load ``{key: [Datum, ...]}`` from ``path`` without executing anything the file names.

    Raises UnsafeCacheError for a pickle that names anything but ``Datum``/plain builtins or cannot be
    read, and DatasetFormatError for a readable pickle of the wrong shape (missing key, non-Datum).
    """
    try:
        with open(path, "rb") as fh:
            data = _DatumUnpickler(fh).load()
    except _Refused as refused:
        raise UnsafeCacheError(
            f"Refused to load cache file {path}: it asks to import {refused}, but a dataset cache may "
            f"only hold {DATUM_GLOBAL[0]}.{DATUM_GLOBAL[1]} objects and plain lists/dicts/strings/numbers; "
            f"delete the file (it is rebuilt on the next run) and do not load pickles from untrusted sources."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise UnsafeCacheError(
            f"Cache file {path} is not a readable pickle ({type(err).__name__}: {err}); delete it, it is "
            f"rebuilt on the next run."
        ) from None
    problem = _shape_problem(data, keys)
    if problem:
        raise DatasetFormatError(
            f"Cache file {path} {problem}; expected a dict with the keys {list(keys)} mapping to lists of "
            f"Datum. Delete the file, it is rebuilt on the next run."
        )
    return data


def _shape_problem(data, keys: Sequence[str]) -> str:
    if not isinstance(data, dict):
        return f"holds a {type(data).__name__}"
    for key in keys:
        if not isinstance(data.get(key), list):
            return f"has no list under {key!r} (keys: {sorted(map(str, data))})"
        for i, item in enumerate(data[key]):
            if not isinstance(item, Datum) or not isinstance(getattr(item, "_impath", None), str):
                return f"holds {item!r} at {key}[{i}]"
    return ""


def write_datum_pickle(data: Dict[str, List[Datum]], path: str) -> None:
    """Atomically write ``data`` exactly as CoOp does (``pickle.HIGHEST_PROTOCOL``); an OSError
    (read-only folder, full disk) becomes one error naming ``path`` and DATASET.CACHE_DIR."""
    try:
        with atomic_open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as err:
        raise unwritable("cache file", path, err) from None


def missing_images(data: Dict[str, List[Datum]], one_per_class: bool = False) -> List[str]:
    """Image paths in ``data`` that are not files (with ``one_per_class``: only the first per label)."""
    missing = []
    for items in data.values():
        if one_per_class:
            first = {}
            for item in items:
                first.setdefault(item.label, item)
            items = list(first.values())
        missing.extend(item.impath for item in items if not os.path.isfile(item.impath))
    return missing


def load_or_build(
    path: str,
    build: Callable[[], Dict[str, List[Datum]]],
    keys: Sequence[str],
    what: str = "few-shot data",
    one_per_class: bool = False,
    source: str = "",
) -> Dict[str, List[Datum]]:
    """Return the cache at ``path`` if its images still exist (and it is not older than the file
    ``source`` it was derived from, e.g. a split file fixed since); else ``build()``, save it and
    return it.

    ``one_per_class`` checks only one image per label and split (ImageNet's 1.3M-path file list).
    Prints CoOp's ``Loading preprocessed ... from`` / ``Saving preprocessed ... to`` lines.
    """
    if os.path.exists(path) and source and os.path.getmtime(path) < os.path.getmtime(source):
        print(f"Note: cache file {path} is older than {source}, which changed since; rebuilding it.")
    elif os.path.exists(path):
        data = read_datum_pickle(path, keys)
        missing = missing_images(data, one_per_class)
        if not missing:
            print(f"Loading preprocessed {what} from {path}")
            return data
        print(
            f"Note: cache file {path} lists {len(missing)} image file(s) that no longer exist (e.g. "
            f"{missing[0]}), probably because the dataset folder moved; rebuilding it."
        )
    data = build()
    print(f"Saving preprocessed {what} to {path}")
    write_datum_pickle(data, path)
    return data


def fewshot_cache_path(fewshot_dir: str, num_shots: int, seed: int, suffix: str = "") -> str:
    """CoOp's cache name ``shot_<K>-seed_<S><suffix>.pkl`` (seed -1 when unseeded)."""
    return os.path.join(fewshot_dir, f"shot_{num_shots}-seed_{seed}{suffix}.pkl")
