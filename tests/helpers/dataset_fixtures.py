"""Miniature copies of the 15 CoOp datasets in their real on-disk layouts (tiny JPEGs, real file formats).

``write_fixture(name, root)`` writes one dataset under ``root`` and returns a ``FixtureInfo`` with
what a loader must produce from it (``NUM_SHOTS=-1``, ``SUBSAMPLE_CLASSES=all``); ``write_all(root)``
writes all 15. DTD and Food101 ship a CoOp split file; the other split-file datasets have only their
raw files, so the loader must build (and save) the split the way CoOp does.
"""
from __future__ import annotations

import io
import zlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
from PIL import Image
from scipy.io import savemat


@dataclass
class FixtureInfo:
    name: str               # registered dataset name
    folder: str             # dataset folder under DATASET.ROOT
    classnames: List[str]   # class names by label
    sizes: Dict[str, int]   # expected len(train_x), len(val or []), len(test)
    split_json: bool        # a split_zhou_*.json was written (else the loader builds one, or has none)


def _jpeg_bytes(folder: str, name: str) -> bytes:
    """A tiny JPEG whose colour depends on its folder (often the class) and, a little, on its name,
    so that images differ and a model's accuracy is not fixed at chance by construction."""
    base, jitter = zlib.crc32(folder.encode()), zlib.crc32(name.encode())
    colour = tuple((base >> shift) % 200 + (jitter >> shift) % 56 for shift in (0, 8, 16))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _images(folder: Path, names: Sequence[str]) -> List[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(_jpeg_bytes(folder.name, name))
    return list(names)


def _text(path: Path, lines: Sequence[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode())


def _sizes(train: int, val: int, test: int) -> Dict[str, int]:
    return {"train": train, "val": val, "test": test}


def _folder_split_json(dataset_dir: Path, image_subdir: str, split_name: str, classes: Sequence[str]) -> None:
    """One folder of 8 images per class plus a CoOp split file: 4 train, 2 val, 2 test per class."""
    split = {"train": [], "val": [], "test": []}
    for label, cname in enumerate(classes):
        names = _images(dataset_dir / image_subdir / cname, [f"{cname}_{i:04d}.jpg" for i in range(1, 9)])
        for key, chosen in (("train", names[:4]), ("val", names[4:6]), ("test", names[6:])):
            split[key] += [[f"{cname}/{name}", label, cname] for name in chosen]
    text = json.dumps(split, indent=4, separators=(",", ": "))
    (dataset_dir / f"split_zhou_{split_name}.json").write_text(text)


# ImageNet wnids and CLIP class names, in ImageNet label order (a prefix of the real classnames.txt).
WNIDS = [
    ("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark"), ("n01496331", "electric ray"),
    ("n01498041", "stingray"), ("n01514668", "rooster"), ("n01514859", "hen"), ("n01518878", "ostrich"),
    ("n01530575", "brambling"),
]
IMAGENET_CLASSES = 5  # wnid folders in imagenet/images/{train,val}; classnames.txt lists all of WNIDS
IMAGENET_TRAIN, IMAGENET_VAL = 6, 2  # images per class


def _classnames_txt(dataset_dir: Path) -> None:
    _text(dataset_dir / "classnames.txt", [f"{wnid} {name}" for wnid, name in WNIDS])


def imagenet(root: Path) -> FixtureInfo:
    d = root / "imagenet"
    _classnames_txt(d)
    for wnid, _ in WNIDS[:IMAGENET_CLASSES]:
        _images(d / "images" / "train" / wnid, [f"{wnid}_{10026 + i}.JPEG" for i in range(IMAGENET_TRAIN)])
        val_names = [f"ILSVRC2012_val_{wnid[-4:]}{i:04d}.JPEG" for i in range(IMAGENET_VAL)]
        _images(d / "images" / "val" / wnid, val_names)
    n = IMAGENET_CLASSES
    # CoOp: val is the test set.
    return FixtureInfo("ImageNet", "imagenet", [name for _, name in WNIDS[:n]],
                       _sizes(n * IMAGENET_TRAIN, n * IMAGENET_VAL, n * IMAGENET_VAL), False)


def caltech101(root: Path) -> FixtureInfo:
    d = root / "caltech-101" / "101_ObjectCategories"
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes"]
    for folder in folders:
        _images(d / folder, [f"image_{i:04d}.jpg" for i in range(1, 6)])
    # Ignored: BACKGROUND_Google, Faces_easy; ASCII sort puts the capitalised folders first.
    # 5 images per class -> round(2.5)=2 train, round(1.0)=1 val, 2 test.
    return FixtureInfo("Caltech101", "caltech-101", ["face", "leopard", "motorbike", "accordion", "airplane"],
                       _sizes(10, 5, 10), False)


# (breed, species: 1 cat / 2 dog); the class id is the position + 1, as in the real annotations.
PET_BREEDS = [
    ("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 2), ("basset_hound", 2),
]


def oxford_pets(root: Path) -> FixtureInfo:
    d = root / "oxford_pets"
    trainval, test = [], []
    for class_id, (breed, species) in enumerate(PET_BREEDS, start=1):
        names = [f"{breed}_{i}" for i in range(1, 8)]
        _images(d / "images", [name + ".jpg" for name in names])
        lines = [f"{name} {class_id} {species} {class_id}" for name in names]
        trainval += lines[:5]
        test += lines[5:]
    _text(d / "annotations" / "trainval.txt", trainval)
    _text(d / "annotations" / "test.txt", test)
    # 5 trainval per class -> round(1.0)=1 val, 4 train.
    names = [breed.lower() for breed, _ in PET_BREEDS]
    return FixtureInfo("OxfordPets", "oxford_pets", names, _sizes(16, 4, 8), False)


CAR_MODELS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]


def _cars_annotations(path: Path, n: int) -> None:
    """``annotations`` struct array (1 x n) with bbox fields, a 1-based ``class`` and ``fname``."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    annos = np.zeros((1, n), dtype=[(f, "O") for f in fields])
    for i in range(n):
        box = [np.array([[v]], dtype=np.uint8) for v in (0, 0, 7, 7)]
        annos[0, i] = (*box, np.array([[i % len(CAR_MODELS) + 1]], dtype=np.uint8), f"{i + 1:05d}.jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"annotations": annos})


def stanford_cars(root: Path) -> FixtureInfo:
    d = root / "stanford_cars"
    n_train, n_test = 5 * len(CAR_MODELS), 2 * len(CAR_MODELS)
    _images(d / "cars_train", [f"{i:05d}.jpg" for i in range(1, n_train + 1)])
    _images(d / "cars_test", [f"{i:05d}.jpg" for i in range(1, n_test + 1)])
    _cars_annotations(d / "devkit" / "cars_train_annos.mat", n_train)
    _cars_annotations(d / "cars_test_annos_withlabels.mat", n_test)
    class_names = np.empty((1, len(CAR_MODELS)), dtype=object)  # a MATLAB cell array of strings
    class_names[0, :] = CAR_MODELS
    savemat(str(d / "devkit" / "cars_meta.mat"), {"class_names": class_names})
    names = ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan"]  # year moved first
    return FixtureInfo("StanfordCars", "stanford_cars", names, _sizes(12, 3, 6), False)


FLOWERS = {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}


def oxford_flowers(root: Path) -> FixtureInfo:
    d = root / "oxford_flowers"
    labels = [2, 1, 3] * 5  # 1-based label of image_00001.jpg, image_00002.jpg, ...
    _images(d / "jpg", [f"image_{i:05d}.jpg" for i in range(1, len(labels) + 1)])
    savemat(str(d / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    (d / "cat_to_name.json").write_text(json.dumps(FLOWERS))
    return FixtureInfo("OxfordFlowers", "oxford_flowers", list(FLOWERS.values()), _sizes(6, 3, 6), False)


def food101(root: Path) -> FixtureInfo:
    classes = ["apple_pie", "baby_back_ribs", "baklava"]
    _folder_split_json(root / "food-101", "images", "Food101", classes)
    return FixtureInfo("Food101", "food-101", classes, _sizes(12, 6, 6), True)


AIRCRAFT = ["707-320", "Cessna 172", "F-16A/B"]


def fgvc_aircraft(root: Path) -> FixtureInfo:
    d = root / "fgvc_aircraft"
    _text(d / "variants.txt", AIRCRAFT)
    image_id = 1000000
    for split, n in (("train", 2), ("val", 1), ("test", 2)):
        lines = []
        for variant in AIRCRAFT:
            for _ in range(n):
                image_id += 7
                lines.append(f"{image_id:07d} {variant}")
        _images(d / "images", [line.split(" ")[0] + ".jpg" for line in lines])
        _text(d / f"images_variant_{split}.txt", lines)
    return FixtureInfo("FGVCAircraft", "fgvc_aircraft", AIRCRAFT, _sizes(6, 3, 6), False)


SUN_CLASSES = ["a/abbey", "a/apartment_building/outdoor", "b/balcony/interior"]


def sun397(root: Path) -> FixtureInfo:
    d = root / "sun397"
    _text(d / "ClassName.txt", ["/" + c for c in SUN_CLASSES])
    training, testing = [], []
    for c in SUN_CLASSES:
        names = _images(d / "SUN397" / c, [f"sun_{c.split('/')[1][:4]}{i:04d}.jpg" for i in range(7)])
        training += [f"/{c}/{name}" for name in names[:5]]
        testing += [f"/{c}/{name}" for name in names[5:]]
    _text(d / "Training_01.txt", training)
    _text(d / "Testing_01.txt", testing)
    names = ["abbey", "outdoor apartment_building", "interior balcony"]
    return FixtureInfo("SUN397", "sun397", names, _sizes(12, 3, 6), False)


def dtd(root: Path) -> FixtureInfo:
    classes = ["banded", "blotchy", "braided", "bubbly", "bumpy"]
    _folder_split_json(root / "dtd", "images", "DescribableTextures", classes)
    return FixtureInfo("DescribableTextures", "dtd", classes, _sizes(20, 10, 10), True)


def eurosat(root: Path) -> FixtureInfo:
    d = root / "eurosat" / "2750"
    for folder in ["AnnualCrop", "Forest", "Highway", "SeaLake"]:
        _images(d / folder, [f"{folder}_{i}.jpg" for i in range(1, 6)])
    names = ["Annual Crop Land", "Forest", "Highway or Road", "Sea or Lake"]
    return FixtureInfo("EuroSAT", "eurosat", names, _sizes(8, 4, 8), False)


UCF_ACTIONS = ["ApplyEyeMakeup", "Archery", "YoYo"]


def ucf101(root: Path) -> FixtureInfo:
    d = root / "ucf101"
    lists = d / "ucfTrainTestlist"
    _text(lists / "classInd.txt", [f"{i} {a}" for i, a in enumerate(UCF_ACTIONS, start=1)], "\r\n")
    train, test = [], []
    for i, action in enumerate(UCF_ACTIONS, start=1):
        videos = [f"v_{action}_g{g:02d}_c01" for g in range(1, 8)]
        renamed = "_".join(re.findall("[A-Z][^A-Z]*", action))  # CamelCase -> Camel_Case
        _images(d / "UCF-101-midframes" / renamed, [v + ".jpg" for v in videos])
        train += [f"{action}/{v}.avi {i}" for v in videos[:5]]
        test += [f"{action}/{v}.avi" for v in videos[5:]]
    _text(lists / "trainlist01.txt", train, "\r\n")
    _text(lists / "testlist01.txt", test, "\r\n")
    return FixtureInfo("UCF101", "ucf101", ["Apply_Eye_Makeup", "Archery", "Yo_Yo"], _sizes(12, 3, 6), False)


def imagenetv2(root: Path) -> FixtureInfo:
    d = root / "imagenetv2"
    _classnames_txt(d)
    for label in range(len(WNIDS)):  # folders 0..n-1, so "10" sorts before "2" as text but not as a label
        _images(d / "imagenetv2-matched-frequency-format-val" / str(label), [f"{label:x}f3a9c.jpeg"])
    n = len(WNIDS)
    return FixtureInfo("ImageNetV2", "imagenetv2", [name for _, name in WNIDS], _sizes(n, 0, n), False)


def _wnid_test_set(root: Path, name: str, folder: str, subdir: str, picks: Sequence[int], per_class: int,
                   readme: bool) -> FixtureInfo:
    d = root / folder
    _classnames_txt(d)
    for idx in picks:
        wnid = WNIDS[idx][0]
        _images(d / subdir / wnid, [f"{i}.jpg" for i in range(per_class)])
    if readme:
        _text(d / subdir / "README.txt", ["wnid folders; see the dataset's home page"])
    n = len(picks) * per_class
    return FixtureInfo(name, folder, [WNIDS[i][1] for i in sorted(picks)], _sizes(n, 0, n), False)


def imagenet_sketch(root: Path) -> FixtureInfo:
    return _wnid_test_set(root, "ImageNetSketch", "imagenet-sketch", "images", range(len(WNIDS)), 1, False)


def imagenet_a(root: Path) -> FixtureInfo:
    return _wnid_test_set(root, "ImageNetA", "imagenet-adversarial", "imagenet-a", [1, 4, 9], 2, True)


def imagenet_r(root: Path) -> FixtureInfo:
    return _wnid_test_set(root, "ImageNetR", "imagenet-rendition", "imagenet-r", [0, 2, 3, 7], 1, True)


WRITERS: Dict[str, Callable[[Path], FixtureInfo]] = {
    "ImageNet": imagenet, "Caltech101": caltech101, "OxfordPets": oxford_pets, "StanfordCars": stanford_cars,
    "OxfordFlowers": oxford_flowers, "Food101": food101, "FGVCAircraft": fgvc_aircraft, "SUN397": sun397,
    "DescribableTextures": dtd, "EuroSAT": eurosat, "UCF101": ucf101, "ImageNetV2": imagenetv2,
    "ImageNetSketch": imagenet_sketch, "ImageNetA": imagenet_a, "ImageNetR": imagenet_r,
}


def write_fixture(name: str, root) -> FixtureInfo:
    """Write the miniature ``name`` dataset under ``root``; return what loading it must give."""
    return WRITERS[name](Path(root))


def write_all(root) -> Dict[str, FixtureInfo]:
    """Write all 15 miniature datasets under ``root``."""
    return {name: write_fixture(name, root) for name in WRITERS}
