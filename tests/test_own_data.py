"""Your own data without code: ImageFolder and CSVDataset (docs/DATASETS.md "Your own data")."""
import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

import datasets  # noqa: F401  (registers the loaders)
from dassl.config import get_cfg_default
from dassl.data.datasets import build_dataset
from datasets.errors import DatasetFormatError, DatasetLayoutError
from tests.helpers.runs import REPO
from trainers.config import extend_cfg
from dpl.errors import UserError

CLASSES = {"red_fox": (200, 40, 30), "green-frog": (40, 190, 60), "blue": (40, 60, 200)}


def write_images(folder, colour, n, start=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(start + len(str(folder)))
    for i in range(start, start + n):
        pixels = np.clip(np.array(colour) + rng.normal(0, 10, (10, 12, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"img_{i:03d}.png"))


def make_imagefolder(root, n_train=10, splits=("train",)):
    for split in splits:
        for cls, colour in CLASSES.items():
            write_images(os.path.join(root, split, cls), colour, n_train if split == "train" else 2,
                         start=0 if split == "train" else 100)
    return str(root)


def load(root, name="ImageFolder", shots=-1, seed=1, subsample="all", **dataset_keys):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.DATASET.NAME, cfg.DATASET.ROOT = name, str(root)
    cfg.DATASET.NUM_SHOTS, cfg.SEED, cfg.DATASET.SUBSAMPLE_CLASSES = shots, seed, subsample
    for key, value in dataset_keys.items():
        setattr(cfg.DATASET, key, value)
    return build_dataset(cfg)


def paths(items):
    return sorted(item.impath for item in items)


def test_imagefolder_splits_train_once_for_every_seed_and_saves_coop_split(tmp_path):
    root = make_imagefolder(tmp_path / "my_data")
    first = load(root, seed=1)
    split_file = os.path.join(root, "split_zhou_ImageFolder.json")
    saved = json.load(open(split_file))
    assert set(saved) == {"train", "val", "test"}
    assert saved["test"][0][0].startswith("train/")  # CoOp format: paths relative to the folder
    assert first.classnames == ["blue", "green frog", "red fox"]  # sorted folders, '_'/'-' -> ' '
    # 10 images per class: 2 test (20 %), 2 val (20 %), 6 train; disjoint, nothing lost.
    assert (len(first.train_x), len(first.val), len(first.test)) == (18, 6, 6)
    assert not set(paths(first.train_x)) & set(paths(first.test))
    assert not set(paths(first.val)) & set(paths(first.test))
    # Another seed, and a run after the split file exists: the same test set.
    os.remove(split_file)
    second = load(root, seed=7)
    assert paths(second.test) == paths(first.test) and paths(second.val) == paths(first.val)
    write_images(os.path.join(root, "train", "blue"), CLASSES["blue"], 5, start=50)  # data grows
    assert paths(load(root, seed=3).test) == paths(first.test)  # the saved split is kept


def test_imagefolder_given_val_test_classnames_file_fewshot_cache_and_base_new(tmp_path):
    root = make_imagefolder(tmp_path / "d", n_train=5, splits=("train", "val", "test"))
    with open(os.path.join(root, "classnames.txt"), "w") as fh:
        fh.write("red_fox\tfox\nblue\tblue sky\n")
    ds = load(root, shots=2, seed=1)
    assert ds.classnames == ["blue sky", "green frog", "fox"]
    assert len(ds.test) == 6 and all("/test/" in p for p in paths(ds.test))
    assert len(ds.train_x) == 6 and len(ds.val) == 6  # 2 shots; val min(2, 4) of the given 2
    cache = os.path.join(root, "split_fewshot", "shot_2-seed_1.pkl")
    assert os.path.isfile(cache)
    assert paths(load(root, shots=2, seed=1).train_x) == paths(ds.train_x)
    base, new = load(root, subsample="base"), load(root, subsample="new")
    assert base.classnames == ["blue sky", "green frog"] and new.classnames == ["fox"]


@pytest.mark.parametrize("damage, error, words", [
    ("empty_class", DatasetLayoutError, ["holds no images", "train/blue"]),
    ("test_only_class", DatasetFormatError, ["test/zebra", "no training images"]),
    ("unreadable", DatasetFormatError, ["cannot be read", "img_001.png"]),
    ("no_train", DatasetLayoutError, ["train", "DATASET.ROOT"]),
])
def test_imagefolder_errors_name_the_problem(tmp_path, damage, error, words):
    root = make_imagefolder(tmp_path / "d", splits=("train", "test"))
    if damage == "empty_class":
        for f in os.listdir(os.path.join(root, "train", "blue")):
            os.remove(os.path.join(root, "train", "blue", f))
    elif damage == "test_only_class":
        write_images(os.path.join(root, "test", "zebra"), (9, 9, 9), 1)
    elif damage == "unreadable":
        with open(os.path.join(root, "train", "blue", "img_001.png"), "wb") as fh:
            fh.write(b"not a png")
    else:
        os.rename(os.path.join(root, "train"), os.path.join(root, "training"))
    with pytest.raises(error) as info:
        load(root)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_split_fractions_are_checked(tmp_path):
    with pytest.raises(UserError, match="DATASET.VAL_FRACTION 0.6 and DATASET.TEST_FRACTION 0.5"):
        load(make_imagefolder(tmp_path / "d"), VAL_FRACTION=0.6, TEST_FRACTION=0.5)


def test_fewer_images_than_num_shots_says_how_many(tmp_path):
    root = make_imagefolder(tmp_path / "d", n_train=5)  # 5 -> 1 test, 1 val, 3 train per class
    with pytest.raises(DatasetFormatError, match=r"NUM_SHOTS is 4.*only 3 training image"):
        load(root, shots=4)
    assert len(load(root, shots=3).train_x) == 9


def test_csv_dataset_paths_labels_and_optional_split(tmp_path):
    root = make_imagefolder(tmp_path / "d", splits=("train", "test"))
    rows = ["path,label,split"]
    for split in ("train", "test"):
        for cls in CLASSES:
            folder = os.path.join(root, split, cls)
            rows += [f"{split}/{cls}/{f},{cls},{'' if split == 'train' else 'test'}"
                     for f in sorted(os.listdir(folder))]
    with open(os.path.join(root, "labels.csv"), "w") as fh:
        fh.write("\n".join(rows) + "\n")
    ds = load(root, name="CSVDataset", CSV="labels.csv")
    assert ds.classnames == ["blue", "green-frog", "red_fox"]  # the label is the class name
    assert len(ds.test) == 6 and all("/test/" in p for p in paths(ds.test))
    assert len(ds.train_x) == 24 and len(ds.val) == 6  # val split off train (20 %)
    assert os.path.isfile(os.path.join(root, "split_zhou_labels.json"))
    assert load(root, name="CSVDataset", CSV="labels.csv", NUM_SHOTS=2).train_x
    assert os.path.isdir(os.path.join(root, "split_fewshot_labels"))


@pytest.mark.parametrize("content, words", [
    ("file,class\na.png,cat\n", ["path,label[,split]"]),
    ("path,label\nnope.png,cat\n", ["line 2", "nope.png", "does not exist"]),
    ("path,label,split\ntrain/blue/img_000.png,blue,holdout\n", ["line 2", "holdout"]),
])
def test_csv_errors_name_file_line_and_value(tmp_path, content, words):
    root = make_imagefolder(tmp_path / "d")
    with open(os.path.join(root, "bad.csv"), "w") as fh:
        fh.write(content)
    with pytest.raises((DatasetFormatError, DatasetLayoutError)) as info:
        load(root, name="CSVDataset", CSV="bad.csv")
    assert all(w in str(info.value) for w in ["bad.csv", *words]), str(info.value)


def test_protocol_scripts_accept_imagefolder_and_csv():
    """_lib.sh maps a dataset argument to configs/datasets/<name>.yaml."""
    for name in ("imagefolder", "csv"):
        out = subprocess.run(["bash", "-c", f'source scripts/dpl/_lib.sh; is_dataset {name} && echo yes'],
                             cwd=REPO, capture_output=True, text=True)
        assert out.stdout.strip() == "yes", out.stderr


def test_export_imagefolder_round_trips_a_registered_dataset(tmp_path):
    """tools/export_imagefolder.py writes a dataset's split as folders that ImageFolder reads back."""
    from tests.helpers.dataset_fixtures import write_fixture
    from tools import export_imagefolder

    info = write_fixture("DescribableTextures", tmp_path / "data")
    out = tmp_path / "as_folders"
    counts = export_imagefolder.main(["--root", str(tmp_path / "data"), "--dataset",
                                      "DescribableTextures", str(out)])
    ds = load(out)
    assert ds.classnames == info.classnames
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (counts["train"], counts["val"], counts["test"])
    assert counts == info.sizes


@pytest.mark.parametrize("existed", [False, True])
def test_export_imagefolder_on_a_full_disk_leaves_nothing_that_looks_complete(
        tmp_path, capsys, monkeypatch, existed):
    """Issue #23.8: a full disk ends in one line naming the file; each file is written under a
    temporary name (never a partial file under its own name) and the partial export is removed."""
    import errno
    import shutil

    from tests.helpers.dataset_fixtures import write_fixture
    from tools import export_imagefolder

    write_fixture("DescribableTextures", tmp_path / "data")
    out = tmp_path / "as_folders"
    if existed:
        out.mkdir()  # an empty folder may be given; it stays, empty
    copied, at_failure, real_copy = [], [], shutil.copyfileobj

    def disk_fills_up(src, dst, *args):
        if len(copied) == 3:
            dst.write(src.read(10))  # part of the image, then the disk is full
            dst.flush()
            at_failure.extend(os.path.join(d, f) for d, _, files in os.walk(out) for f in files)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_copy(src, dst, *args)
        copied.append(1)

    monkeypatch.setattr(export_imagefolder.shutil, "copyfileobj", disk_fills_up)
    with pytest.raises(SystemExit) as info:
        export_imagefolder.main(["--root", str(tmp_path / "data"), "--dataset", "DescribableTextures",
                                 str(out)])
    # While the 4th image was being written, it had a temporary name; the 3 complete ones had theirs.
    temp = [f for f in at_failure if os.path.basename(f).startswith(".")]
    assert len(temp) == 1 and temp[0].endswith(".tmp") and len(at_failure) == 4, at_failure
    failed = os.path.join(os.path.dirname(temp[0]), os.path.basename(temp[0])[1:].rsplit(".", 2)[0])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert err[0] == (f"export_imagefolder.py: error: no space left on the device while writing {failed}; "
                      f"free space and run the command again. The partial export in {out} was removed.")
    assert (os.listdir(out) == []) if existed else not out.exists()


def test_train_py_reports_a_dataset_mistake_in_one_line(tmp_path, capsys):
    from tests.helpers.runs import run_train, train_args

    root = make_imagefolder(tmp_path / "d")
    os.makedirs(os.path.join(root, "test", "zebra"))  # an empty class folder
    with pytest.raises(SystemExit) as info:
        run_train(train_args("DPLTrain", "vit_b16", "imagefolder", root, tmp_path / "out"))
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert err[0].startswith("train.py: error: Class folder") and "test/zebra" in err[0]
