"""CoOp's split rules and split-file format, written once for every dataset.

* ``read_split`` / ``save_split``: ``split_zhou_<Name>.json`` = ``{"train"|"val"|"test": [[relative
  path, label, classname], ...]}``, paths relative to a prefix folder, written with Dassl's
  ``write_json`` layout (indent 4).
* ``split_trainval`` (80/20 per class) and ``split_per_class`` (50/20/30 per class): the builders
  used when a dataset has no split file yet; they draw from Python's global ``random`` in exactly
  CoOp's order, so a seeded run rebuilds CoOp's split from the same file listing.
* ``subsample_classes``: the base/new protocol.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from dassl.data.datasets import Datum
from dassl.data.datasets.base_dataset import describe_missing_image
from dassl.utils import listdir_nohidden

from datasets.errors import DOCS, DatasetFormatError, DatasetLayoutError, unwritable
from dpl.io import atomic_write_text
from dpl.errors import UserError

SPLIT_KEYS = ("train", "val", "test")
Record = Tuple[str, int, str]  # (absolute image path, label, classname)


COOP_MISSING_FIX = (f"check that DATASET.ROOT points at the folder holding this dataset and that its images "
                    f"are extracted as {DOCS} shows")


def check_images_exist(impaths: Sequence[str], source: str, where: Optional[Sequence[str]] = None,
                       fix: str = COOP_MISSING_FIX) -> None:
    """Raise one error naming ``source``, the first missing image (a broken link with its target), how
    many are missing and ``fix``. ``where[i]`` says where path i sits in ``source`` (e.g. ``"line 12"``).
    """
    missing = [i for i, impath in enumerate(impaths) if not os.path.isfile(impath)]
    if missing:
        first = missing[0]
        at = f" ({where[first]})" if where else ""
        raise DatasetLayoutError(
            f"{source} lists {len(missing)} image file(s) that do not exist, e.g. "
            f"{describe_missing_image(impaths[first])}{at}; {fix}."
        )


def make_datums(records: Sequence[Record], source: str, where: Optional[Sequence[str]] = None,
                fix: str = COOP_MISSING_FIX) -> List[Datum]:
    """Check once that every image exists (see ``check_images_exist``), then build the ``Datum`` list."""
    check_images_exist([impath for impath, _, _ in records], source, where, fix)
    return [Datum(impath=impath, label=label, classname=classname) for impath, label, classname in records]


# ---------------------------------------------------------------------------------------------
# split_zhou_<Name>.json


def read_split(filepath: str, path_prefix: str, fix: str = COOP_MISSING_FIX
               ) -> Tuple[List[Datum], List[Datum], List[Datum]]:
    """Read a CoOp split file; image paths are joined to ``path_prefix``. Returns (train, val, test).
    ``fix`` is what the error for images that no longer exist tells the user to do."""
    print(f"Reading split from {filepath}")
    split = _load_split_json(filepath)
    records, where = [], []
    for key in SPLIT_KEYS:
        for i, (relpath, label, classname) in enumerate(split[key]):
            records.append((os.path.join(path_prefix, relpath), label, classname))
            where.append(f"{key} entry {i}: {json.dumps([relpath, label, classname])}")
    datums = make_datums(records, f"Split file {filepath}", where, fix)
    sizes = [len(split[key]) for key in SPLIT_KEYS]
    train, val, test = datums[: sizes[0]], datums[sizes[0] : sizes[0] + sizes[1]], datums[sizes[0] + sizes[1] :]
    # Checked here, before a few-shot cache can be derived from a bad file.
    check_labels(train, [("val", val), ("test", test)], f"Split file {filepath}")
    return train, val, test


def check_labels(train: Sequence[Datum], others: Sequence[Tuple[str, Sequence[Datum]]], source: str) -> None:
    """Refuse splits a classifier cannot use, naming ``source``: an empty train or test list, train
    labels that are not exactly 0..C-1 (a gap makes a label >= the number of class names), or a
    label in ``others`` (``(split name, items)`` pairs) that no training item has."""
    for name, items in (("train", train), *others):
        if not items and name != "val":
            raise DatasetFormatError(f"{source}: the {name} split holds no images; list [relative image "
                                     f"path, label, class name] entries under {name!r}.")
    labels = sorted({item.label for item in train})
    if labels != list(range(len(labels))):
        missing = sorted(set(range(labels[-1] + 1)) - set(labels))
        raise DatasetFormatError(
            f"{source}: the train labels must be 0..{len(labels) - 1} (one per class, no gaps), but "
            f"they are {_short(labels)}" + (f", missing {_short(missing)}" if missing else "")
            + f"; renumber the classes 0..{len(labels) - 1}.")
    for name, items in others:
        extra = sorted({item.label for item in items} - set(labels))
        if extra:
            raise DatasetFormatError(f"{source}: the {name} split has labels {_short(extra)} that no train "
                                     f"image has (train labels are 0..{len(labels) - 1}); fix those entries.")


def _short(values: Sequence[int], limit: int = 8) -> str:
    return "[" + ", ".join(str(v) for v in values[:limit]) + (", ...]" if len(values) > limit else "]")


def _load_split_json(filepath: str) -> Dict[str, List[Record]]:
    fix = f"replace it with CoOp's original file (see {DOCS})"
    try:
        with open(filepath, "r") as fh:
            split = json.load(fh)
    except json.JSONDecodeError as err:
        raise DatasetFormatError(
            f"Split file {filepath} is not valid JSON ({err.msg} at line {err.lineno}, column "
            f"{err.colno}); {fix}."
        ) from None
    if not isinstance(split, dict):
        raise DatasetFormatError(f"Split file {filepath} holds a {type(split).__name__}, not a dict with "
                                 f"keys {list(SPLIT_KEYS)}; {fix}.")
    out = {}
    for key in SPLIT_KEYS:
        entries = split.get(key)
        if not isinstance(entries, list):
            raise DatasetFormatError(
                f"Split file {filepath} has no {key!r} list (its keys are {sorted(split)}); {fix}."
            )
        out[key] = [_parse_entry(entry, filepath, f"{key} entry {i}", fix) for i, entry in enumerate(entries)]
    return out


def _parse_entry(entry, filepath: str, where: str, fix: str) -> Record:
    if isinstance(entry, list) and len(entry) == 3 and all(isinstance(entry[i], str) for i in (0, 2)):
        try:
            return entry[0], int(entry[1]), entry[2]
        except (TypeError, ValueError):
            pass
    raise DatasetFormatError(
        f"Split file {filepath}: {where} is {json.dumps(entry)}, but every entry must be "
        f"[relative image path, integer label, class name]; {fix}."
    )


def split_relpath(impath: str, path_prefix: str) -> str:
    """``impath`` relative to ``path_prefix`` when it lies inside that folder (compared path component
    by path component, so ``/data/set2/x`` is not inside ``/data/set``), else ``impath`` unchanged
    (absolute paths stay absolute; ``read_split``'s ``os.path.join`` keeps them as they are)."""
    if not os.path.isabs(impath):
        return impath
    prefix = os.path.abspath(path_prefix)
    target = os.path.abspath(impath)
    try:
        inside = os.path.commonpath([prefix, target]) == prefix
    except ValueError:  # different drives (Windows)
        inside = False
    return os.path.relpath(target, prefix) if inside else impath


def save_split(train, val, test, filepath: str, path_prefix: str) -> None:
    """Write a CoOp split file (paths made relative to ``path_prefix``), atomically."""

    split = {
        key: [[split_relpath(item.impath, path_prefix), item.label, item.classname] for item in items]
        for key, items in zip(SPLIT_KEYS, (train, val, test))
    }
    # Dassl's write_json layout, so the file diffs cleanly against CoOp's.
    try:
        atomic_write_text(filepath, json.dumps(split, indent=4, separators=(",", ": ")))
    except OSError as err:
        raise unwritable("split file", filepath, err) from None
    print(f"Saved split to {filepath}")


# ---------------------------------------------------------------------------------------------
# Split builders (used only when the split file does not exist yet)


def split_trainval(trainval: Sequence[Datum], p_val: float = 0.2) -> Tuple[List[Datum], List[Datum]]:
    """Per label (first-appearance order): shuffle, the first ``round(n * p_val)`` go to val."""
    print(f"Splitting trainval into {1 - p_val:.0%} train and {p_val:.0%} val")
    by_label = defaultdict(list)
    for idx, item in enumerate(trainval):
        by_label[item.label].append(idx)
    train, val = [], []
    for label, idxs in by_label.items():
        n_val = round(len(idxs) * p_val)
        if n_val <= 0:
            raise DatasetFormatError(
                f"Class {label} ({trainval[idxs[0]].classname!r}) has only {len(idxs)} train+val image(s), "
                f"too few to hold out {p_val:.0%} for validation; use CoOp's split file for this dataset "
                f"(see {DOCS})."
            )
        random.shuffle(idxs)
        val.extend(trainval[idx] for idx in idxs[:n_val])
        train.extend(trainval[idx] for idx in idxs[n_val:])
    return train, val


def split_per_class(
    groups: Iterable[Tuple[int, str, List[str]]], p_trn: float = 0.5, p_val: float = 0.2
) -> Tuple[List[Datum], List[Datum], List[Datum]]:
    """Split each class's images ``p_trn`` / ``p_val`` / rest after a ``random.shuffle``.

    ``groups`` yields ``(label, classname, image paths)`` in the order CoOp visits the classes; each
    path list is shuffled in place. Counts use Python's ``round`` (banker's rounding), as CoOp.
    """
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
    train, val, test = [], [], []
    for label, classname, impaths in groups:
        random.shuffle(impaths)
        n_train = round(len(impaths) * p_trn)
        n_val = round(len(impaths) * p_val)
        if n_train <= 0 or n_val <= 0 or len(impaths) - n_train - n_val <= 0:
            raise DatasetFormatError(
                f"Class {classname!r} has only {len(impaths)} image(s), too few for a "
                f"{p_trn:.0%}/{p_val:.0%}/rest split; use CoOp's split file for this dataset (see {DOCS})."
            )
        bounds = ((train, 0, n_train), (val, n_train, n_train + n_val), (test, n_train + n_val, None))
        for out, start, stop in bounds:
            out.extend(Datum(impath=p, label=label, classname=classname) for p in impaths[start:stop])
    return train, val, test


def read_and_split_data(image_dir: str, p_trn: float = 0.5, p_val: float = 0.2, ignored=(), new_cnames=None):
    """One folder per class under ``image_dir``; label = index in the sorted folder names.

    Folders in ``ignored`` are skipped; ``new_cnames`` renames folders to class names. Images keep
    ``os.listdir`` order before the shuffle, exactly as CoOp (DTD, Caltech101, EuroSAT, Food101).
    """
    folders = [c for c in listdir_nohidden(image_dir) if os.path.isdir(os.path.join(image_dir, c))]
    categories = sorted(c for c in folders if c not in ignored)

    def groups():
        for label, category in enumerate(categories):
            category_dir = os.path.join(image_dir, category)
            impaths = [os.path.join(category_dir, name) for name in listdir_nohidden(category_dir)]
            yield label, (new_cnames or {}).get(category, category), impaths

    return split_per_class(groups(), p_trn, p_val)


# ---------------------------------------------------------------------------------------------
# Base-to-new protocol

SUBSAMPLE_CHOICES = ("all", "base", "new")


def subsample_classes(*args, subsample: str = "all"):
    """Keep the base (first ceil(n/2) sorted labels of ``args[0]``) or new classes, relabelled from 0.

    ``"all"`` returns ``args`` untouched. Otherwise each dataset in ``args`` keeps only the selected
    labels, as fresh ``Datum`` objects (domain reset to 0), and a list is returned.
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise UserError(
            f"DATASET.SUBSAMPLE_CLASSES is {subsample!r}; set it to one of {list(SUBSAMPLE_CHOICES)}."
        )
    if subsample == "all":
        return args
    labels = sorted({item.label for item in args[0]})
    m = math.ceil(len(labels) / 2)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabel = {old: new for new, old in enumerate(selected)}
    return [
        [Datum(impath=item.impath, label=relabel[item.label], classname=item.classname)
         for item in dataset if item.label in relabel]
        for dataset in args
    ]
