"""The pipeline every CoOp dataset runs: locate -> split -> few-shot -> base/new subsample.

A dataset module only says where its files are (class attributes) and, when it can build its split
from the raw files, how (``build_split``). Everything else -- reading or saving
``split_zhou_<Name>.json``, the ``split_fewshot/shot_K-seed_S.pkl`` cache, ``SUBSAMPLE_CLASSES`` --
lives here once. CoOp's static helpers stay reachable under their old names
(``OxfordPets.read_split``, ``OxfordPets.save_split``, ``OxfordPets.split_trainval``,
``OxfordPets.subsample_classes``) because every dataset class inherits them.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from typing import List, Tuple

from dassl.data.datasets import DatasetBase, Datum

from datasets import splits
from datasets.datum_cache import fewshot_cache_path, load_or_build
from datasets.errors import DOCS, DatasetFormatError, DatasetLayoutError

Splits = Tuple[List[Datum], List[Datum], List[Datum]]


def find_dataset_dir(cfg, folder: str, dataset: str, layout: str) -> str:
    """``<DATASET.ROOT>/<folder>`` as an absolute path; a clear error if the root or folder is missing."""
    root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
    if not os.path.isdir(root):
        raise DatasetLayoutError(
            f"DATASET.ROOT {cfg.DATASET.ROOT!r} (resolved to {root}) is not a folder; pass --root (or "
            f"DATASET.ROOT) pointing at the folder that holds the dataset folders, e.g. {folder}/ "
            f"(see {DOCS})."
        )
    path = os.path.join(root, folder)
    if not os.path.isdir(path):
        raise DatasetLayoutError(
            f"Dataset folder {path} for {dataset} does not exist; create it under DATASET.ROOT={root} "
            f"laid out as below (see {DOCS}):\n{layout}"
        )
    return path


def require(path: str, dataset: str, layout: str, why: str = "") -> str:
    """Return ``path`` if it exists, else raise an error that shows the expected layout."""
    if not os.path.exists(path):
        raise DatasetLayoutError(
            f"{path} not found{why}; {dataset} expects this layout (see {DOCS}):\n{layout}"
        )
    return path


def read_lines(path: str, min_fields: int, example: str) -> List[Tuple[int, List[str]]]:
    """Non-blank lines of a whitespace-separated annotation file as ``(line number, fields)``."""
    out = []
    with open(path, "r") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.strip().split(" ")
            if fields == [""]:
                continue
            if len(fields) < min_fields:
                raise DatasetFormatError(
                    f"{path} line {lineno} is {line.strip()!r}, but lines must look like {example!r}; "
                    f"restore the file from the original dataset archive (see {DOCS})."
                )
            out.append((lineno, fields))
    return out


def label_of(cname2lab: dict, name: str, path: str, lineno: int, listing: str) -> int:
    """``cname2lab[name]``, or an error naming the annotation line and the class listing file."""
    try:
        return cname2lab[name]
    except KeyError:
        raise DatasetFormatError(
            f"{path} line {lineno} names class {name!r}, which {listing} does not list; restore both files "
            f"from the same dataset release (see {DOCS})."
        ) from None


def cache_dir_for(cfg, dataset_dir: str) -> str:
    """``dataset_dir`` when ``DATASET.CACHE_DIR`` is empty; else a folder inside CACHE_DIR named after
    the dataset folder and a hash of its absolute path (datasets with equal names stay apart)."""
    cache_root = getattr(cfg.DATASET, "CACHE_DIR", "") or ""
    if not cache_root:
        return dataset_dir
    folder = os.path.abspath(dataset_dir)
    digest = hashlib.sha1(folder.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    name = os.path.basename(folder.rstrip(os.sep)) or "root"
    return os.path.join(os.path.abspath(os.path.expanduser(cache_root)), f"{name}-{digest}")


class CoOpDataset(DatasetBase):
    """Base class: set the attributes below; override ``build_split`` if the split can be rebuilt."""

    dataset_dir = ""   # folder under DATASET.ROOT (CoOp's name)
    image_subdir = ""  # image folder inside it ("" = the dataset folder itself)
    split_name = ""    # the split file is split_zhou_<split_name>.json ("" = no split file)
    layout = ""        # expected tree, shown in errors and mirrored in docs/DATASETS.md
    fewshot_subdir = "split_fewshot"  # few-shot cache folder inside the dataset folder

    read_split = staticmethod(splits.read_split)
    save_split = staticmethod(splits.save_split)
    split_trainval = staticmethod(splits.split_trainval)
    subsample_classes = staticmethod(splits.subsample_classes)

    def __init__(self, cfg):
        self.dataset_dir = self.locate(cfg)
        subdir = self.image_subdir
        self.image_dir = os.path.join(self.dataset_dir, subdir) if subdir else self.dataset_dir
        self.cache_dir = cache_dir_for(cfg, self.dataset_dir)
        self.split_path = self.cache_file(f"split_zhou_{self.split_name}.json") if self.split_name else ""
        # CoOp creates this eagerly; we create it when a cache is written, so read-only data works.
        self.split_fewshot_dir = os.path.join(self.cache_dir, self.fewshot_subdir)
        require(self.image_dir, type(self).__name__, self.layout)

        train, val, test = self.load_split()
        train, val = self.sample_fewshot(cfg, train, val)
        train, val, test = self.subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)

    def cache_file(self, name: str) -> str:
        """Where the file ``name`` this code may write lives: the dataset folder's copy when it exists
        (CoOp's split files, or written there before), else ``DATASET.CACHE_DIR``'s (the dataset
        folder itself when CACHE_DIR is empty)."""
        in_dataset = os.path.join(self.dataset_dir, name)
        return in_dataset if os.path.exists(in_dataset) else os.path.join(self.cache_dir, name)

    # -- hooks -----------------------------------------------------------------------------------

    def locate(self, cfg) -> str:
        """The dataset folder (default: ``<DATASET.ROOT>/<dataset_dir>``, checked to exist)."""
        return find_dataset_dir(cfg, type(self).dataset_dir, type(self).__name__, self.layout)

    @property
    def split_prefix(self) -> str:
        """Folder the split file's paths are relative to (StanfordCars: the dataset folder)."""
        return self.image_dir

    def load_split(self) -> Splits:
        """Read the split file, or build it from the raw files and save it (CoOp's behaviour)."""
        if os.path.exists(self.split_path):
            return self.read_split(self.split_path, self.split_prefix, fix=self.stale_split_fix())
        train, val, test = self.build_split()
        self.save_split(train, val, test, self.split_path, self.split_prefix)
        return train, val, test

    def stale_split_fix(self) -> str:
        """What to do when the split file lists images that no longer exist."""
        return splits.COOP_MISSING_FIX

    def build_split(self) -> Splits:
        """(train, val, test) from the raw files, drawing from ``random`` exactly as CoOp does."""
        raise NotImplementedError

    def sample_fewshot(self, cfg, train, val):
        """K-shot train and min(K, 4)-shot val (CoOp's rule), cached in ``shot_K-seed_S.pkl``."""
        k = cfg.DATASET.NUM_SHOTS
        if k < 1:
            return train, val

        def build():
            fewshot_train = self.generate_fewshot_dataset(train, num_shots=k)
            fewshot_val = self.generate_fewshot_dataset(val, num_shots=min(k, 4))
            return {"train": fewshot_train, "val": fewshot_val}

        path = fewshot_cache_path(self.split_fewshot_dir, k, cfg.SEED)
        source = self.split_path if os.path.exists(self.split_path) else ""
        data = load_or_build(path, build, keys=("train", "val"), source=source)
        counts = Counter(item.label for item in data["train"]).values()
        if counts and min(counts) < k:
            print(f"Note: DATASET.NUM_SHOTS is {k}, but some classes have fewer training images; using "
                  f"all of theirs: {min(counts)} to {max(counts)} images per class "
                  f"({sum(counts)} in all).")
        return data["train"], data["val"]

    # -- helpers for subclasses ------------------------------------------------------------------

    def require(self, path: str) -> str:
        """``path`` if it exists; else an error naming it, the split-file alternative and the layout."""
        why = ""
        if self.split_name and not os.path.exists(self.split_path):
            why = f" and there is no split file {self.split_path} to use instead"
        return require(path, type(self).__name__, self.layout, why)
