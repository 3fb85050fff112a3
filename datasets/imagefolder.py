"""Your own dataset without code: ``DATASET.NAME ImageFolder`` (docs/DATASETS.md, "Your own data").

The dataset folder itself is ``DATASET.ROOT`` (``--root``; the scripts' ``DATA``)::

    my_dataset/
      train/<class folder>/<image>      required, one folder per class
      val/<class folder>/<image>        optional (else split off train/)
      test/<class folder>/<image>       optional (else split off train/)
      classnames.txt                    optional: "<folder><TAB><class name>" per line

Class names are the folder names with ``_``/``-`` turned into spaces unless ``classnames.txt`` names
them; labels follow the sorted train folder names. A missing ``val/``/``test/`` is split off
``train/`` per class (``DATASET.VAL_FRACTION``/``DATASET.TEST_FRACTION``) with a fixed generator, so
every seed sees the same test set, and the result is saved as ``split_zhou_ImageFolder.json`` in the
dataset folder: later runs read that file, so the split never changes. Few-shot picks are cached in
``split_fewshot/`` there, base/new subsampling works as for CoOp's datasets.

``OwnDataset`` holds everything shared with ``CSVDataset`` (datasets/csv_dataset.py): a dataset says
which (image path, class folder) pairs each given split holds; the checks, labels and splitting live here.
"""
from __future__ import annotations

import glob
import os
import random
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import listdir_nohidden

from datasets.coop_base import CoOpDataset, Splits
from datasets.errors import DatasetFormatError, DatasetLayoutError
from dpl.errors import UserError
from dpl.classifier import IMAGE_EXTENSIONS

OWN_DOCS = 'docs/DATASETS.md ("Your own data")'
SPLIT_SEED = 0  # the split of train/ into train/val/test never depends on --seed
# (image path, class key) per given split; the class key is a folder name or a CSV label.
Listing = Dict[str, List[Tuple[str, str]]]


def folder_classname(folder: str) -> str:
    """``golden_retriever`` / ``golden-retriever`` -> ``golden retriever``."""
    return folder.replace("_", " ").replace("-", " ").strip()


def read_classnames_file(path: str) -> Dict[str, str]:
    """``classnames.txt``: one ``folder<TAB>class name`` per line -> {folder: name}."""
    names = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DatasetFormatError(
                    f"{path} line {lineno} is {line.strip()!r}, but every line must be "
                    f"'<folder><TAB><class name>' (see {OWN_DOCS})."
                )
            names[parts[0].strip()] = parts[1].strip()
    return names


def unreadable_images(impaths: Sequence[str]) -> List[Tuple[str, str]]:
    """(path, reason) for every file PIL cannot identify (only the header is read: fast)."""
    bad = []
    for impath in impaths:
        try:
            with Image.open(impath) as img:
                img.size  # noqa: B018  (identifying the format is the check)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            bad.append((impath, " ".join(str(err).split()) or type(err).__name__))
    return bad


def split_off(items: List[str], fractions: Sequence[float], rng: random.Random) -> List[List[str]]:
    """Shuffle ``items`` with ``rng`` and cut off ``round(n * f)`` (at least 1) items per fraction.

    Returns ``[rest, part_1, part_2, ...]``; empty list when the rest would be empty.
    """
    items = sorted(items)
    rng.shuffle(items)
    parts, start = [], 0
    for fraction in fractions:
        count = max(1, round(len(items) * fraction))
        parts.append(items[start:start + count])
        start += count
    rest = items[start:]
    return [rest, *parts] if rest else []


class OwnDataset(CoOpDataset):
    """A user's dataset: a subclass lists its images per given split (``list_images``)."""

    split_name = ""     # split_zhou_<split_name>.json in the dataset folder
    where_train = ""    # how the train listing is called in messages (e.g. "train/")

    def __init__(self, cfg):
        self.val_fraction = float(getattr(cfg.DATASET, "VAL_FRACTION", 0.2))
        self.test_fraction = float(getattr(cfg.DATASET, "TEST_FRACTION", 0.2))
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise UserError(
                f"DATASET.VAL_FRACTION {self.val_fraction} and DATASET.TEST_FRACTION {self.test_fraction} "
                "must each lie in (0, 1) and sum to less than 1; e.g. pass DATASET.VAL_FRACTION 0.2."
            )
        super().__init__(cfg)

    # -- what a subclass provides ------------------------------------------------------------------
    def list_images(self) -> Listing:
        """{"train": [(path, class key), ...], "val": ..., "test": ...}; val/test may be absent."""
        raise NotImplementedError

    def classname_of(self, key: str) -> str:
        return key

    def describe(self, split: str, key: str) -> str:
        """Where a class of a split lives, for messages (e.g. ``train/cat``)."""
        return f"{split} class {key!r}"

    # -- CoOpDataset hooks ---------------------------------------------------------------------------
    def build_split(self) -> Splits:
        listing = self.list_images()
        train_keys = self._check_listing(listing)
        labels = {key: label for label, key in enumerate(sorted(train_keys))}
        by_split = {name: self._by_class(listing.get(name, [])) for name in ("train", "val", "test")}
        by_split = self._split_missing(by_split)
        records = {name: [] for name in by_split}
        for name, groups in by_split.items():
            for key in sorted(groups, key=labels.get):
                cname = self.classname_of(key)
                records[name].extend(Datum(impath=p, label=labels[key], classname=cname)
                                     for p in sorted(groups[key]))
        self._check_readable([d.impath for items in records.values() for d in items])
        self._forget_fewshot_caches()
        counts = ", ".join(f"{len(records[n])} {n}" for n in ("train", "val", "test"))
        print(f"{type(self).__name__}: {len(labels)} classes, {counts} images")
        return records["train"], records["val"], records["test"]

    def sample_fewshot(self, cfg, train, val):
        k = cfg.DATASET.NUM_SHOTS
        if k >= 1:
            counts = Counter(item.label for item in train)
            names = {item.label: item.classname for item in train}
            short = sorted((n, label) for label, n in counts.items() if n < k)
            if short:
                n, label = short[0]
                raise DatasetFormatError(
                    f"DATASET.NUM_SHOTS is {k}, but class {names[label]!r} has only {n} training "
                    f"image(s) in {self.split_path} ({len(short)} class(es) have fewer than {k}); "
                    f"use DATASET.NUM_SHOTS {n} (or -1 for all images) or add images."
                )
        return super().sample_fewshot(cfg, train, val)

    # -- checks and splitting ----------------------------------------------------------------------
    def _check_listing(self, listing: Listing) -> set:
        train_keys = {key for _, key in listing.get("train", [])}
        if not train_keys:
            raise DatasetLayoutError(f"{self.where_train} holds no images; {self.layout_hint()}")
        for split in ("val", "test"):
            extra = sorted({key for _, key in listing.get(split, [])} - train_keys)
            if extra:
                raise DatasetFormatError(
                    f"{self.describe(split, extra[0])} has no training images ({len(extra)} class(es) "
                    f"of {split} are not in {self.where_train}); add its images to "
                    f"{self.describe('train', extra[0])} or remove it from {split}."
                )
        return train_keys

    def layout_hint(self) -> str:
        return f"see {OWN_DOCS} for the expected layout."

    @staticmethod
    def _by_class(items: List[Tuple[str, str]]) -> Dict[str, List[str]]:
        groups = defaultdict(list)
        for path, key in items:
            groups[key].append(path)
        return groups

    def _split_missing(self, by_split: Dict[str, Dict[str, List[str]]]):
        """Cut val/test off train, per class, when they are not given (fixed generator)."""
        missing = [name for name in ("test", "val") if not by_split[name]]
        if not missing:
            return by_split
        fractions = [self.test_fraction if name == "test" else self.val_fraction for name in missing]
        print(f"Splitting {', '.join(missing)} off {self.where_train} per class "
              f"({', '.join(f'{f:.0%}' for f in fractions)}; the same for every seed)")
        rng = random.Random(SPLIT_SEED)
        train = by_split["train"]
        for key in sorted(train):
            parts = split_off(train[key], fractions, rng)
            if not parts:
                raise DatasetFormatError(
                    f"{self.describe('train', key)} has only {len(train[key])} image(s), too few to "
                    f"split off {' and '.join(missing)} and keep one for training; add images or give "
                    f"{' and '.join(missing)} images explicitly (see {OWN_DOCS})."
                )
            train[key] = parts[0]
            for name, part in zip(missing, parts[1:]):
                by_split[name][key] = part
        return by_split

    def _check_readable(self, impaths: Sequence[str]) -> None:
        bad = unreadable_images(impaths)
        if bad:
            listing = "; ".join(f"{p} ({why})" for p, why in bad[:3])
            raise DatasetFormatError(
                f"{len(bad)} image file(s) cannot be read: {listing}{' ...' if len(bad) > 3 else ''}; "
                "replace or delete them."
            )

    def _forget_fewshot_caches(self) -> None:
        """A new split invalidates few-shot picks drawn from an older one."""
        for path in glob.glob(os.path.join(self.split_fewshot_dir, "shot_*-seed_*.pkl")):
            try:
                os.remove(path)
            except FileNotFoundError:  # another process (a torchrun rank) was first
                pass


@DATASET_REGISTRY.register()
class ImageFolder(OwnDataset):
    """``DATASET.ROOT`` is the dataset folder: train/ [val/] [test/], one sub-folder per class."""

    dataset_dir = ""  # DATASET.ROOT itself
    split_name = "ImageFolder"
    where_train = "train/"
    layout = (
        "<DATASET.ROOT>/           (--root / DATA point at this folder)\n"
        "  train/<class>/<image>   one folder per class\n"
        "  val/<class>/<image>     optional\n"
        "  test/<class>/<image>    optional\n"
        "  classnames.txt          optional, '<folder><TAB><class name>' per line"
    )

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.where_train = os.path.join(root, "train") + os.sep
        split = os.path.join(root, f"split_zhou_{self.split_name}.json")
        if not os.path.isfile(split) and not os.path.isdir(os.path.join(root, "train")):
            raise DatasetLayoutError(
                f"ImageFolder: {os.path.join(root, 'train')} is not a folder; DATASET.ROOT (--root, DATA) "
                f"must be your dataset folder itself, laid out as (see {OWN_DOCS}):\n{self.layout}"
            )
        names_file = os.path.join(root, "classnames.txt")
        self.names = read_classnames_file(names_file) if os.path.isfile(names_file) else {}
        super().__init__(cfg)

    def list_images(self) -> Listing:
        listing = {}
        for split in ("train", "val", "test"):
            folder = os.path.join(self.dataset_dir, split)
            if os.path.isdir(folder):
                listing[split] = self._list_split(folder)
        return listing

    def _list_split(self, folder: str) -> List[Tuple[str, str]]:
        items = []
        for cls in sorted(listdir_nohidden(folder)):
            cls_dir = os.path.join(folder, cls)
            if not os.path.isdir(cls_dir):
                continue
            images = [os.path.join(cls_dir, f) for f in sorted(listdir_nohidden(cls_dir))
                      if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not images:
                raise DatasetLayoutError(
                    f"Class folder {cls_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)}); "
                    "add images or remove the folder."
                )
            items.extend((p, cls) for p in images)
        return items

    def classname_of(self, key: str) -> str:
        return self.names.get(key, folder_classname(key))

    def describe(self, split: str, key: str) -> str:
        return os.path.join(self.dataset_dir, split, key)
