"""Your own dataset without code: ``DATASET.NAME ImageFolder`` (docs/DATASETS.md, "Your own data").

The dataset folder itself is ``DATASET.ROOT`` (``--root``; the scripts' ``DATA``)::

    my_dataset/
      train/<class folder>/<image>      required, one folder per class
      val/<class folder>/<image>        optional (else split off train/)
      test/<class folder>/<image>       optional (else split off train/)
      classnames.txt                    optional: "<folder><TAB><class name>" per line

Class names are the folder names with ``_``/``-`` turned into spaces unless ``classnames.txt`` (or
the file ``DATASET.CLASSNAMES`` names) names them; labels follow the sorted train folder names
(numerically when all are integers). Images in sub-folders of a class folder belong to that class
(hidden folders are skipped). A missing ``val/``/``test/`` is split off ``train/`` per class
(``DATASET.VAL_FRACTION``/``DATASET.TEST_FRACTION``) with a fixed generator, so every seed sees the
same test set, and the result is saved as ``split_zhou_ImageFolder.json`` in the dataset folder (or
in ``DATASET.CACHE_DIR``): later runs read that file, so the split never changes. Few-shot picks are
cached in ``split_fewshot/`` there, base/new subsampling works as for CoOp's datasets.

``OwnDataset`` holds everything shared with ``CSVDataset`` (datasets/csv_dataset.py): a dataset says
which (image path, class folder) pairs each given split holds; the checks, labels and splitting live here.
"""
from __future__ import annotations

import glob
import os
import random
from collections import Counter, defaultdict
from typing import Dict, List, Sequence, Tuple

from PIL import Image

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import listdir_nohidden

from datasets.coop_base import CoOpDataset, Splits, cache_dir_for
from datasets.errors import DatasetFormatError, DatasetLayoutError, unwritable
from dpl.errors import UserError
from dpl.classifier import IMAGE_EXTENSIONS
from dpl.images import SUPPORTED_MODES

OWN_DOCS = 'docs/DATASETS.md ("Your own data")'
SPLIT_SEED = 0  # the split of train/ into train/val/test never depends on --seed
# (image path, class key) per given split; the class key is a folder name or a CSV label.
Listing = Dict[str, List[Tuple[str, str]]]


def folder_classname(folder: str) -> str:
    """``golden_retriever`` / ``golden-retriever`` -> ``golden retriever``."""
    return folder.replace("_", " ").replace("-", " ").strip()


class NameMap(dict):
    """{class folder or label: class name} read from ``path``; ``lines[key]`` is the key's line."""

    def __init__(self, path: str = "", names=(), lines=None):
        super().__init__(names)
        self.path = path
        self.lines = dict(lines or {})


def classnames_option(cfg, root: str, what: str = "folder") -> str:
    """The file ``DATASET.CLASSNAMES`` names (absolute or relative to ``root``), "" when unset;
    a name that is not a file is a one-line error."""
    names = getattr(cfg.DATASET, "CLASSNAMES", "") or ""
    if not names:
        return ""
    path = os.path.join(root, os.path.expanduser(names))
    if not os.path.isfile(path):
        raise DatasetLayoutError(
            f"DATASET.CLASSNAMES {names!r} (resolved to {path}) is not a file; give a "
            f"'<{what}><TAB><class name>' file, absolute or relative to --root.")
    return path


def read_classnames_file(path: str, what: str = "folder") -> NameMap:
    """``classnames.txt`` (or ``DATASET.CLASSNAMES``): one ``<what><TAB><class name>`` per line.

    UTF-8 with or without a byte-order mark, LF or CRLF line ends; a key named twice is refused.
    """
    names, lines = {}, {}
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DatasetFormatError(
                    f"{path} line {lineno} is {line.strip()!r}, but every line must be "
                    f"'<{what}><TAB><class name>' (see {OWN_DOCS})."
                )
            key = parts[0].strip()
            if key in names:
                raise DatasetFormatError(
                    f"{path} lines {lines[key]} and {lineno} both name the {what} {key!r}; keep one of them."
                )
            names[key], lines[key] = parts[1].strip(), lineno
    return NameMap(path, names, lines)


def is_integer(text: str) -> bool:
    return text.strip().lstrip("+-").isdigit()


def label_order(keys) -> List[str]:
    """Sorted class keys; numerically when every key is an integer (``2`` before ``10``)."""
    keys = list(keys)
    if keys and all(is_integer(k) for k in keys):
        return sorted(keys, key=lambda k: (int(k), k))
    return sorted(keys)


def _short_list(items: Sequence[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def unreadable_images(impaths: Sequence[str]) -> List[Tuple[str, str]]:
    """(path, reason) for every file PIL cannot identify or whose pixel mode the image loader
    (dpl/images.py) cannot turn into RGB (only the header is read: fast)."""
    bad = []
    for impath in impaths:
        try:
            with Image.open(impath) as img:
                if img.mode not in SUPPORTED_MODES:
                    bad.append((impath, f"pixel mode {img.mode}, which cannot be converted to RGB"))
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
    key_word = "class"  # what a class key is called in messages ("class folder", "label")
    name_map: NameMap = NameMap()  # {key: class name} from a class-name file (set before __init__)

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

    def default_name(self, key: str) -> str:
        """The class name of a key the class-name file does not name."""
        return key

    def classname_of(self, key: str) -> str:
        return self.name_map.get(key, self.default_name(key))

    def describe(self, split: str, key: str) -> str:
        """Where a class of a split lives, for messages (e.g. ``train/cat``)."""
        return f"{split} class {key!r}"

    def names_hint(self) -> str:
        """How to give class names (the class-name file of this loader)."""
        raise NotImplementedError

    def note_unsplit_classes(self, train, val, test) -> None:
        """After reading a saved split: say which classes of the data it does not hold."""

    # -- CoOpDataset hooks ---------------------------------------------------------------------------
    changes = "images moved or deleted"  # what makes a saved split list images that are gone

    def stale_split_fix(self) -> str:
        return (f"the data changed since the split was saved ({self.changes}): delete {self.split_path} to "
                "split again (this also drops the few-shot caches)")

    def load_split(self) -> Splits:
        saved = os.path.exists(self.split_path)
        train, val, test = super().load_split()
        if saved:
            self.note_unsplit_classes(train, val, test)
        self._note_numeric_names(train)
        return train, val, test

    def build_split(self) -> Splits:
        listing = self.list_images()
        train_keys = self._check_listing(listing)
        self._check_names(train_keys)
        labels = {key: label for label, key in enumerate(label_order(train_keys))}
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
        if len(train_keys) < 2:
            (only,) = train_keys
            raise DatasetFormatError(
                f"{self.where_train} holds a single class ({self.describe('train', only)}), but a classifier "
                f"needs at least two: add a {self.key_word} per class (see {OWN_DOCS})."
            )
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

    def _check_names(self, train_keys: set) -> None:
        """Refuse class-name file lines for classes that do not exist and two classes that end up with
        one name (compared ignoring case and spacing, as ``golden_retriever``/``golden-retriever``);
        say so when class names are bare numbers."""
        names = self.name_map
        unknown = [key for key in names if key not in train_keys]
        if unknown:
            key = unknown[0]
            raise DatasetFormatError(
                f"{names.path} line {names.lines[key]} names the {self.key_word} {key!r}, but "
                f"{self.where_train} has no such class ({len(unknown)} unknown line(s); the classes are "
                f"{_short_list([repr(k) for k in label_order(train_keys)], 5)}); fix the line or delete it."
            )
        same = defaultdict(list)
        for key in label_order(train_keys):
            same[" ".join(self.classname_of(key).casefold().split())].append(key)
        clashes = [keys for keys in same.values() if len(keys) > 1]
        if clashes:
            a, b = clashes[0][:2]
            named = " and ".join(sorted({repr(self.classname_of(a)), repr(self.classname_of(b))}))
            raise DatasetFormatError(
                f"The {self.key_word}s {a!r} and {b!r} both become the class name {named} "
                f"({len(clashes)} such clash(es)), so two classes would share one prompt: merge them or "
                f"{self.names_hint()} to tell them apart."
            )

    def _note_numeric_names(self, train) -> None:
        names = label_order({item.classname for item in train})
        numeric = [name for name in names if is_integer(name)]
        if numeric:
            print(f"Note: {len(numeric)} class name(s) are numbers ({_short_list(numeric)}), so the prompts read "
                  f"'a photo of a {numeric[0]}.'; {self.names_hint()} to give them words.")

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
            except OSError as err:
                raise unwritable("outdated few-shot cache file", path, err) from None


@DATASET_REGISTRY.register()
class ImageFolder(OwnDataset):
    """``DATASET.ROOT`` is the dataset folder: train/ [val/] [test/], one sub-folder per class."""

    dataset_dir = ""  # DATASET.ROOT itself
    split_name = "ImageFolder"
    where_train = "train/"
    key_word = "class folder"
    changes = "a class folder renamed, images moved or deleted"
    layout = (
        "<DATASET.ROOT>/           (--root / DATA point at this folder)\n"
        "  train/<class>/<image>   one folder per class (images in its sub-folders count too)\n"
        "  val/<class>/<image>     optional\n"
        "  test/<class>/<image>    optional\n"
        "  classnames.txt          optional, '<folder><TAB><class name>' per line"
    )

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.where_train = os.path.join(root, "train") + os.sep
        split_file = f"split_zhou_{self.split_name}.json"
        has_split = any(os.path.isfile(os.path.join(folder, split_file))
                        for folder in (root, cache_dir_for(cfg, root)))
        if not has_split and not os.path.isdir(os.path.join(root, "train")):
            raise DatasetLayoutError(
                f"ImageFolder: {os.path.join(root, 'train')} is not a folder; DATASET.ROOT (--root, DATA) "
                f"must be your dataset folder itself, laid out as (see {OWN_DOCS}):\n{self.layout}"
            )
        names_file = classnames_option(cfg, root) or os.path.join(root, "classnames.txt")
        self.name_map = read_classnames_file(names_file) if os.path.isfile(names_file) else NameMap()
        self.names_file = names_file
        super().__init__(cfg)

    def list_images(self) -> Listing:
        listing, found = {}, {"nested": [], "hidden": [], "loose": [], "broken": []}
        for split in ("train", "val", "test"):
            folder = os.path.join(self.dataset_dir, split)
            if os.path.isdir(folder):
                listing[split] = self._list_split(folder, found)
        if found["broken"]:
            link = found["broken"][0]
            raise DatasetLayoutError(
                f"{len(found['broken'])} image(s) of {self.dataset_dir} are broken symbolic links, e.g. {link} -> "
                f"{os.readlink(link)} (which does not exist); move the linked files back, export the "
                "dataset again (tools/export_imagefolder.py), or delete the links."
            )
        self._report(found)
        return listing

    def _list_split(self, folder: str, found: Dict[str, list]) -> List[Tuple[str, str]]:
        """Images of each class folder of ``folder``, its sub-folders included (hidden ones skipped)."""
        items = []
        found["hidden"].extend(os.path.join(folder, d) for d in sorted(os.listdir(folder))
                               if d.startswith(".") and os.path.isdir(os.path.join(folder, d)))
        for name in sorted(listdir_nohidden(folder)):
            cls_dir = os.path.join(folder, name)
            if not os.path.isdir(cls_dir):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found["loose"].append(cls_dir)
                continue
            images, broken_before = [], len(found["broken"])
            for dirpath, dirs, files in os.walk(cls_dir):
                found["hidden"].extend(os.path.join(dirpath, d) for d in dirs if d.startswith("."))
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                        continue
                    path = os.path.join(dirpath, f)
                    if not os.path.exists(path):  # a symbolic link whose target is gone
                        found["broken"].append(path)
                        continue
                    images.append(path)
                    if dirpath != cls_dir:
                        found["nested"].append(path)
            if not images and len(found["broken"]) == broken_before:
                raise DatasetLayoutError(
                    f"Class folder {cls_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)}); "
                    "add images or remove the folder."
                )
            items.extend((p, name) for p in images)
        return items

    def _report(self, found: Dict[str, list]) -> None:
        """One line for what was read or left out beyond the plain layout."""
        def rel(path):
            return os.path.relpath(path, self.dataset_dir)

        parts = []
        if found["nested"]:
            folders = sorted({rel(os.path.dirname(p)) for p in found["nested"]})
            parts.append(f"read {len(found['nested'])} image(s) in sub-folders of class folders "
                         f"({_short_list(folders)}) as images of their class")
        if found["hidden"]:
            parts.append(f"skipped {len(found['hidden'])} hidden folder(s) "
                         f"({_short_list(sorted(rel(p) for p in found['hidden']))})")
        if found["loose"]:
            parts.append(f"ignored {len(found['loose'])} image(s) outside any class folder "
                         f"({_short_list(sorted(rel(p) for p in found['loose']))})")
        if parts:
            print(f"ImageFolder: {'; '.join(parts)}")

    def note_unsplit_classes(self, train, val, test) -> None:
        known, renamed = defaultdict(set), {}
        for item in (*train, *val, *test):
            parts = os.path.relpath(item.impath, self.dataset_dir).split(os.sep)
            if len(parts) >= 3:
                known[parts[0]].add(parts[1])
                if self.classname_of(parts[1]) != item.classname:
                    renamed[parts[1]] = item.classname
        if renamed:
            folder, old = sorted(renamed.items())[0]
            print(f"Note: {self.names_file} (or the folder names) now name {len(renamed)} class(es) otherwise than "
                  f"{self.split_path} (folder {folder!r}: {old!r} there, {self.classname_of(folder)!r} now); the "
                  f"split file's names are used: delete it to apply the new names (with the same images the "
                  "split comes out the same).")
        added = []
        for split in ("train", "val", "test"):
            folder = os.path.join(self.dataset_dir, split)
            if os.path.isdir(folder):
                added += [os.path.join(split, name) for name in sorted(listdir_nohidden(folder))
                          if name not in known[split] and os.path.isdir(os.path.join(folder, name))]
        if added:
            print(f"Note: {len(added)} class folder(s) were added after {self.split_path} was saved and are not "
                  f"used ({_short_list(added)}); delete {self.split_path} to split again with them (the val and "
                  "test images may then change, and the few-shot caches are dropped).")

    def default_name(self, key: str) -> str:
        return folder_classname(key)

    def names_hint(self) -> str:
        return (f"name the classes in {self.names_file} ('<folder><TAB><class name>' per line, "
                f"see {OWN_DOCS})")

    def describe(self, split: str, key: str) -> str:
        return os.path.join(self.dataset_dir, split, key)
