"""ImageNet-1k, plus the shared reader of its test-only variants (V2, Sketch, A, R).

CoOp's ImageNet has no split file: ``images/train`` is the training set and the official
``images/val`` is the test set and, by CoOp's convention, also the val set. The file list is
cached in ``preprocessed.pkl``; the few-shot cache holds only ``{"train": ...}``.

``DATASET.VAL_FROM_TRAIN=True`` (for the search stage, which must not select on test images) draws
min(K, 4) val shots per class from the training images not picked as K-shot training shots, and
caches them in ``shot_K-seed_S-valtrain.pkl``, leaving CoOp's cache files untouched.
"""
import os
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.utils import listdir_nohidden

from datasets.coop_base import CoOpDataset, find_dataset_dir, require
from datasets.datum_cache import fewshot_cache_path, load_or_build
from datasets.errors import DOCS, DatasetFormatError
from dpl.errors import UserError


def read_classnames(text_file: str) -> "OrderedDict[str, str]":
    """``classnames.txt`` lines ``<wnid> <class name with spaces>`` -> OrderedDict in file order."""
    classnames = OrderedDict()
    with open(text_file, "r") as fh:
        for line in fh:
            fields = line.strip().split(" ")
            classnames[fields[0]] = " ".join(fields[1:])
    return classnames


def sorted_subdirs(path: str) -> List[str]:
    """Sorted names of the sub-folders of ``path`` (stray files such as README.txt are skipped)."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def named_folders(
    folders: Sequence[str], classnames: Dict[str, str], classnames_path: str
) -> List[Tuple[str, str]]:
    """``(folder, class name)`` pairs; a folder without a ``classnames.txt`` line is an error."""
    unknown = [f for f in folders if f not in classnames]
    if unknown:
        raise DatasetFormatError(
            f"{classnames_path} has no line for the image folder(s) {unknown[:3]} ({len(unknown)} in all); "
            f"use the 1000-line classnames.txt that CoOp provides for ImageNet (see {DOCS})."
        )
    return [(f, classnames[f]) for f in folders]


def read_class_folders(
    parent: str, folders: Sequence[Tuple[str, str]], dataset: str, layout: str
) -> List[Datum]:
    """One ``Datum`` per image of ``parent/<folder>``; the label is the folder's position in ``folders``."""
    items = []
    for label, (folder, classname) in enumerate(folders):
        folder_dir = require(os.path.join(parent, folder), dataset, layout)
        for name in listdir_nohidden(folder_dir):
            items.append(Datum(impath=os.path.join(folder_dir, name), label=label, classname=classname))
    return items


@DATASET_REGISTRY.register()
class ImageNet(CoOpDataset):
    dataset_dir = "imagenet"
    image_subdir = "images"
    layout = (
        "imagenet/\n"
        "  images/\n"
        "    train/                     n01440764/n01440764_10026.JPEG, ... (1000 wnid folders)\n"
        "    val/                       n01440764/ILSVRC2012_val_00000293.JPEG, ... (same 1000 folders)\n"
        "  classnames.txt               '<wnid> <class name>' per line (CoOp's copy of CLIP's names)"
    )
    read_classnames = staticmethod(read_classnames)

    def load_split(self):
        """(train, val, test) with val = test = the official val images, cached in preprocessed.pkl."""
        self.preprocessed = self.cache_file("preprocessed.pkl")
        data = load_or_build(
            self.preprocessed, self.read_images, keys=("train", "test"), what="ImageNet image list",
            one_per_class=True,
        )
        return data["train"], data["test"], data["test"]

    @property
    def classnames_path(self) -> str:
        return os.path.join(self.dataset_dir, "classnames.txt")

    def read_images(self) -> Dict[str, List[Datum]]:
        classnames = self.read_classnames(self.require(self.classnames_path))
        return {"train": self.read_data(classnames, "train"), "test": self.read_data(classnames, "val")}

    def read_data(self, classnames, split_dir):
        """Label = index of the wnid folder in the sorted folder names of ``images/<split_dir>``."""
        split_dir = self.require(os.path.join(self.image_dir, split_dir))
        folders = named_folders(sorted_subdirs(split_dir), classnames, self.classnames_path)
        return read_class_folders(split_dir, folders, type(self).__name__, self.layout)

    def sample_fewshot(self, cfg, train, val):
        k = cfg.DATASET.NUM_SHOTS
        if getattr(cfg.DATASET, "VAL_FROM_TRAIN", False):
            return self.sample_fewshot_val_from_train(cfg, train)
        if k < 1:
            return train, val
        path = fewshot_cache_path(self.split_fewshot_dir, k, cfg.SEED)
        data = load_or_build(
            path, lambda: {"train": self.generate_fewshot_dataset(train, num_shots=k)}, keys=("train",)
        )
        return data["train"], val

    def sample_fewshot_val_from_train(self, cfg, train):
        """K-shot train (CoOp's picks for the seed) and min(K, 4)-shot val from the unpicked train images."""
        k = cfg.DATASET.NUM_SHOTS
        if k < 1:
            raise UserError(
                f"DATASET.VAL_FROM_TRAIN is True but DATASET.NUM_SHOTS is {k}; the held-out val shots are "
                f"drawn per class next to K training shots, so set DATASET.NUM_SHOTS >= 1 or "
                f"DATASET.VAL_FROM_TRAIN False."
            )

        def build():
            fewshot_train = self.generate_fewshot_dataset(train, num_shots=k)
            picked = {item.impath for item in fewshot_train}
            rest = [item for item in train if item.impath not in picked]
            return {"train": fewshot_train, "val": self.generate_fewshot_dataset(rest, num_shots=min(k, 4))}

        path = fewshot_cache_path(self.split_fewshot_dir, k, cfg.SEED, suffix="-valtrain")
        data = load_or_build(path, build, keys=("train", "val"), what="few-shot data (val from train)")
        return data["train"], data["val"]


class ImageNetTestSet(DatasetBase):
    """A test-only ImageNet variant: every image is in train_x and test, there is no val.

    NUM_SHOTS and SUBSAMPLE_CLASSES are ignored, as in CoOp. Class names come from a copy of
    ImageNet's ``classnames.txt`` next to the images.
    """

    dataset_dir = ""
    image_subdir = ""
    layout = ""

    def __init__(self, cfg):
        name = type(self).__name__
        self.dataset_dir = find_dataset_dir(cfg, type(self).dataset_dir, name, self.layout)
        self.image_dir = require(os.path.join(self.dataset_dir, self.image_subdir), name, self.layout)
        classnames_path = os.path.join(self.dataset_dir, "classnames.txt")
        require(classnames_path, name, self.layout, " (copy imagenet/classnames.txt here)")
        folders = self.class_folders(read_classnames(classnames_path), classnames_path)
        data = read_class_folders(self.image_dir, folders, name, self.layout)
        super().__init__(train_x=data, test=data)

    def class_folders(self, classnames, classnames_path) -> List[Tuple[str, str]]:
        """``(folder, class name)`` per label: the sorted wnid folders (labels 0..n-1 over them)."""
        return named_folders(sorted_subdirs(self.image_dir), classnames, classnames_path)
