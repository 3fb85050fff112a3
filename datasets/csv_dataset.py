"""``DATASET.NAME CSVDataset``: images listed in a CSV file (docs/DATASETS.md, "Your own data").

``DATASET.CSV`` names the file (relative paths are taken from ``DATASET.ROOT``). Columns, with a
header row: ``path,label[,split]`` -- ``path`` relative to the CSV's folder (or absolute), ``label``
the class name, ``split`` one of train/val/test (empty = train). The file may be UTF-8 with a
byte-order mark and CRLF line ends (Excel's "CSV UTF-8"). An image listed twice is refused.
``DATASET.CLASSNAMES`` may name a ``<label><TAB><class name>`` file (e.g. for integer labels).
Missing val/test are split off train exactly as for ``ImageFolder``; the split is saved next to the
CSV (or in ``DATASET.CACHE_DIR``) as ``split_zhou_<csv name>.json`` and few-shot picks in
``split_fewshot_<csv name>/``.
"""
from __future__ import annotations

import csv
import os
from typing import List, Tuple

from dassl.data.datasets import DATASET_REGISTRY
from dassl.data.datasets.base_dataset import describe_missing_image

from datasets.errors import DatasetFormatError, DatasetLayoutError
from datasets.imagefolder import OWN_DOCS, Listing, NameMap, OwnDataset, classnames_option, read_classnames_file

SPLITS = ("train", "val", "test")


@DATASET_REGISTRY.register()
class CSVDataset(OwnDataset):
    """Images and class names from ``DATASET.CSV`` (columns path,label[,split])."""

    layout = (
        "<csv file>              header 'path,label[,split]', e.g. 'images/cat_01.jpg,cat,train'\n"
        "  path   relative to the CSV's folder (or absolute)\n"
        "  label  the class name\n"
        "  split  train / val / test (optional; missing val/test are split off train)"
    )

    def __init__(self, cfg):
        name = getattr(cfg.DATASET, "CSV", "")
        if not name:
            raise DatasetLayoutError(
                "DATASET.NAME is CSVDataset but DATASET.CSV is empty; pass DATASET.CSV <file.csv> "
                f"(relative to --root), see {OWN_DOCS}."
            )
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.csv_path = os.path.join(root, os.path.expanduser(name))
        if not os.path.isfile(self.csv_path):
            raise DatasetLayoutError(
                f"DATASET.CSV {name!r} (resolved to {self.csv_path}) is not a file; give the CSV's "
                "path, absolute or relative to --root."
            )
        # One split file and few-shot folder per CSV, so several CSVs can share a folder.
        stem = os.path.splitext(os.path.basename(self.csv_path))[0]
        self.split_name = stem
        self.fewshot_subdir = f"split_fewshot_{stem}"
        self.where_train = f"the train rows of {self.csv_path}"
        self.key_word = "label"
        names_path = classnames_option(cfg, root, what="label")
        self.name_map = read_classnames_file(names_path, what="label") if names_path else NameMap()
        super().__init__(cfg)

    def locate(self, cfg) -> str:
        return os.path.dirname(self.csv_path)

    def list_images(self) -> Listing:
        listing = {name: [] for name in SPLITS}
        for _, path, label, split in self._rows():
            listing[split].append((path, label))
        return {name: items for name, items in listing.items() if items}

    def _rows(self) -> List[Tuple[int, str, str, str]]:
        fix = f"the header must be 'path,label[,split]' (see {OWN_DOCS})"
        seen = {}  # real path -> (line, label, split) of its first row
        with open(self.csv_path, newline="", encoding="utf-8-sig") as fh:  # Excel writes a BOM
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if "path" not in header or "label" not in header:
                raise DatasetFormatError(f"{self.csv_path} has the columns {header}; {fix}.")
            reader.fieldnames = header
            rows = []
            for row in reader:
                lineno = reader.line_num
                path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
                split = (row.get("split") or "").strip().lower() or "train"
                if not path or not label or split not in SPLITS:
                    raise DatasetFormatError(
                        f"{self.csv_path} line {lineno}: path {path!r}, label {label!r}, split "
                        f"{split!r}; every row needs a path, a label and a split in {list(SPLITS)} "
                        "(or an empty split = train)."
                    )
                full = os.path.normpath(os.path.join(self.dataset_dir, os.path.expanduser(path)))
                if not os.path.isfile(full):
                    raise DatasetLayoutError(
                        f"{self.csv_path} line {lineno} lists {path!r}, but {describe_missing_image(full)} "
                        "does not exist; paths are relative to the CSV's folder."
                    )
                key = os.path.realpath(full)
                if key in seen:
                    first, first_label, first_split = seen[key]
                    raise DatasetFormatError(
                        f"{self.csv_path} lists the image {full} twice: line {first} (label {first_label!r}, "
                        f"{first_split}) and line {lineno} (label {label!r}, {split}); an image in two splits "
                        "inflates the test accuracy and one under two labels contradicts itself: keep one row."
                    )
                seen[key] = (lineno, label, split)
                rows.append((lineno, full, label, split))
        return rows

    def describe(self, split: str, key: str) -> str:
        return f"class {key!r} (label column) of the {split} rows of {self.csv_path}"

    def note_unsplit_classes(self, train, val, test) -> None:
        if os.path.getmtime(self.csv_path) > os.path.getmtime(self.split_path):
            print(f"Note: {self.csv_path} changed after {self.split_path} was saved; the saved split is used "
                  f"(new rows and labels are not); delete {self.split_path} to split again (the val and test "
                  "images may then change, and the few-shot caches are dropped).")

    def names_hint(self) -> str:
        return (f"pass DATASET.CLASSNAMES <file> with '<label><TAB><class name>' lines (relative to --root, "
                f"see {OWN_DOCS})")
