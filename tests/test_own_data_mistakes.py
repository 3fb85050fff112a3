"""Your own data, round two (issue #22 §5 and issue #23 cases 1, 9-15, 19, 20): a mistake ends in one
``train.py: error:`` line naming the file, the value and the fix; legal but odd input does the right
thing and says so in one log line."""
import errno
import json
import os
import tempfile

import pytest

from datasets.errors import CacheWriteError, DatasetFormatError, DatasetLayoutError
from tests.test_own_data import CLASSES, load, make_imagefolder, paths, write_images
from tests.test_reliability import run_fails, train_argv

SPLIT = "split_zhou_ImageFolder.json"


def own_argv(root, out, clip_path, dataset="imagefolder", opts=()):
    return train_argv(root, out, clip_path, epochs=1, dataset=dataset, opts=list(opts))


def write_csv(path, lines, encoding="utf-8", newline="\n"):
    with open(path, "w", encoding=encoding, newline="") as fh:
        fh.write(newline.join(lines) + newline)


def csv_rows(root, split="train"):
    """``path,label`` rows for every image of ``<root>/<split>/<class>/``."""
    rows = []
    for cls in sorted(CLASSES):
        folder = os.path.join(root, split, cls)
        rows += [f"{split}/{cls}/{f},{cls}" for f in sorted(os.listdir(folder))]
    return rows


# -------------------------------------------------------------------------------------------------
# #22 §5: absolute CSV paths survive the saved split


def test_csv_absolute_paths_outside_the_csv_folder_read_back_the_same(tmp_path):
    """Absolute paths outside the CSV's folder (also in a sibling folder whose name starts with the
    CSV folder's name) stay absolute in the split file, so a second run (DPLTrain after DPLSearch,
    resume, eval-only) reads the same images; paths inside the folder stay relative (CoOp's format)."""
    elsewhere = make_imagefolder(tmp_path / "elsewhere")
    sibling = make_imagefolder(tmp_path / "set2")  # the CSV lives in tmp/set: set2 is not inside it
    csv_dir = tmp_path / "set"
    make_imagefolder(csv_dir)
    rows = ["path,label"]
    for cls in sorted(CLASSES):
        rows += [f"{elsewhere}/train/{cls}/img_00{i}.png,{cls}" for i in range(4)]
        rows += [f"{sibling}/train/{cls}/img_00{i}.png,{cls}" for i in range(4, 8)]
        rows += [f"train/{cls}/img_00{i}.png,{cls}" for i in range(8, 10)]
    write_csv(csv_dir / "labels.csv", rows)
    first = load(csv_dir, name="CSVDataset", CSV="labels.csv")
    saved = json.load(open(csv_dir / "split_zhou_labels.json"))
    stored = [entry[0] for key in ("train", "val", "test") for entry in saved[key]]
    assert any(p.startswith(str(elsewhere) + os.sep) for p in stored)
    assert any(p.startswith(str(sibling) + os.sep) for p in stored)  # not "2/train/..."
    assert any(p.startswith("train/") for p in stored)  # inside: relative, as CoOp's files
    second = load(csv_dir, name="CSVDataset", CSV="labels.csv")  # reads the saved split
    for a, b in ((first.train_x, second.train_x), (first.val, second.val), (first.test, second.test)):
        assert paths(a) == paths(b)
    every = paths(first.train_x) + paths(first.val) + paths(first.test)
    assert len(every) == 30 and all(os.path.isfile(p) for p in every)


def test_csv_absolute_paths_train_again_through_train_py(tmp_path, tiny_clip_path):
    """The run after the one that saved the split (here a second DPLTrain) reads the same images."""
    from tests.helpers.runs import final_accuracy, run_train

    images = make_imagefolder(tmp_path / "images")
    csv_dir = tmp_path / "csv"
    os.makedirs(csv_dir)
    write_csv(csv_dir / "labels.csv", ["path,label", *[os.path.join(images, r) for r in csv_rows(images)]])
    for run in ("first", "second"):
        out = tmp_path / run
        run_train(own_argv(csv_dir, out, tiny_clip_path, "csv", ["DATASET.CSV", "labels.csv"]))
        assert 0 <= final_accuracy(out / "log.txt") <= 100
    assert "Reading split from" in (tmp_path / "second" / "log.txt").read_text()


# -------------------------------------------------------------------------------------------------
# Case 1: a broken symbolic link


def test_broken_link_among_images_names_the_link_and_its_target(tmp_path, tiny_clip_path, capsys, monkeypatch):
    root = make_imagefolder(tmp_path / "d")
    link = os.path.join(root, "train", "blue", "img_003.png")
    os.remove(link)
    os.symlink(str(tmp_path / "moved" / "img_003.png"), link)
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path), capsys, monkeypatch)
    assert link in msg and str(tmp_path / "moved" / "img_003.png") in msg and "symbolic link" in msg
    assert not os.path.exists(os.path.join(root, SPLIT))


def test_link_broken_after_the_split_was_saved_is_named_too(tmp_path, tiny_clip_path, capsys, monkeypatch):
    root = make_imagefolder(tmp_path / "d")
    load(root)  # the split exists
    link = os.path.join(root, "train", "red_fox", "img_000.png")
    os.rename(link, tmp_path / "kept.png")
    os.symlink(str(tmp_path / "gone.png"), link)
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path), capsys, monkeypatch)
    assert f"{link} (a symbolic link to {tmp_path / 'gone.png'}, which does not exist)" in msg


# -------------------------------------------------------------------------------------------------
# Case 9: Excel's "CSV UTF-8" (byte-order mark, CRLF); classnames.txt the same (case 12)


def test_excel_csv_with_byte_order_mark_and_crlf_is_read(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    write_csv(os.path.join(root, "excel.csv"), ["path,label", *csv_rows(root)], encoding="utf-8-sig",
              newline="\r\n")
    assert open(os.path.join(root, "excel.csv"), "rb").read().startswith(b"\xef\xbb\xbfpath,label\r\n")
    ds = load(root, name="CSVDataset", CSV="excel.csv")
    assert ds.classnames == ["blue", "green-frog", "red_fox"]  # no "\r" in the last column
    assert len(ds.train_x) + len(ds.val) + len(ds.test) == 30


def test_classnames_file_with_byte_order_mark_and_crlf_keeps_the_first_name(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    with open(os.path.join(root, "classnames.txt"), "w", encoding="utf-8-sig", newline="") as fh:
        fh.write("blue\tblue sky\r\nred_fox\tfox\r\n")
    assert load(root).classnames == ["blue sky", "green frog", "fox"]


# -------------------------------------------------------------------------------------------------
# Case 10: an image listed twice


@pytest.mark.parametrize("second_row, words", [
    ("train/blue/img_000.png,blue,test", ["line 2", "line 5", "'blue', train", "'blue', test"]),
    ("train/blue/img_000.png,green-frog,", ["line 2", "line 5", "'blue'", "'green-frog'"]),
    ("./train/blue/../blue/img_000.png,blue,", ["line 2", "line 5"]),  # the same file, spelt otherwise
])
def test_csv_image_listed_twice_is_refused_naming_image_and_rows(tmp_path, tiny_clip_path, capsys,
                                                                  monkeypatch, second_row, words):
    root = make_imagefolder(tmp_path / "d")
    rows = ["path,label,split", "train/blue/img_000.png,blue,train", *[r + "," for r in csv_rows(root)[1:3]]]
    rows += [second_row] + [r + "," for r in csv_rows(root)[3:]]
    write_csv(os.path.join(root, "twice.csv"), rows)
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path, "csv", ["DATASET.CSV", "twice.csv"]),
                    capsys, monkeypatch)
    assert "twice.csv" in msg and os.path.join(root, "train", "blue") in msg and "img_000.png" in msg
    assert all(w in msg for w in words), msg


# -------------------------------------------------------------------------------------------------
# Case 11: integer labels


def integer_csv(root):
    rows = ["path,label"]
    for number, cls in zip((2, 10, 0), sorted(CLASSES)):
        folder = os.path.join(root, "train", cls)
        rows += [f"train/{cls}/{f},{number}" for f in sorted(os.listdir(folder))]
    write_csv(os.path.join(root, "numbers.csv"), rows)


def test_integer_labels_are_said_and_a_class_name_mapping_names_them(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "d")
    integer_csv(root)
    capsys.readouterr()
    ds = load(root, name="CSVDataset", CSV="numbers.csv")
    assert ds.classnames == ["0", "2", "10"]  # numeric order
    notes = [line for line in capsys.readouterr().out.splitlines() if "are numbers" in line]
    assert len(notes) == 1 and "'a photo of a 0.'" in notes[0] and "DATASET.CLASSNAMES" in notes[0]
    with open(os.path.join(root, "names.tsv"), "w") as fh:
        fh.write("0\tred fox\n2\tblue sky\n10\tgreen frog\n")
    os.remove(os.path.join(root, "split_zhou_numbers.json"))
    named = load(root, name="CSVDataset", CSV="numbers.csv", CLASSNAMES="names.tsv")
    assert named.classnames == ["red fox", "blue sky", "green frog"]
    assert paths(named.test) == paths(ds.test)
    assert "are numbers" not in capsys.readouterr().out


def test_class_name_mapping_for_a_label_the_csv_does_not_have_is_refused(tmp_path, tiny_clip_path, capsys,
                                                                         monkeypatch):
    root = make_imagefolder(tmp_path / "d")
    integer_csv(root)
    with open(os.path.join(root, "names.tsv"), "w") as fh:
        fh.write("0\tred fox\n2\tblue sky\n3\tgreen frog\n")
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path, "csv",
                             ["DATASET.CSV", "numbers.csv", "DATASET.CLASSNAMES", "names.tsv"]), capsys, monkeypatch)
    assert "names.tsv line 3" in msg and "'3'" in msg and "delete it" in msg


# -------------------------------------------------------------------------------------------------
# Case 12: classnames.txt mistakes and folder names that become one class name


@pytest.mark.parametrize("names, extra_folder, words", [
    ("blue\tsky\nzebra\tzebra\n", None, ["classnames.txt line 2", "'zebra'", "no such class"]),
    ("blue\tfox\nred_fox\tFox\n", None, ["'blue'", "'red_fox'", "'Fox' and 'fox'", "classnames.txt"]),
    ("blue\tsky\nblue\tsea\n", None, ["classnames.txt lines 1 and 2", "'blue'"]),
    ("", "green_frog", ["'green-frog'", "'green_frog'", "'green frog'"]),
])
def test_classnames_mistakes_and_clashing_folders_are_refused(tmp_path, tiny_clip_path, capsys, monkeypatch,
                                                              names, extra_folder, words):
    root = make_imagefolder(tmp_path / "d")
    if names:
        with open(os.path.join(root, "classnames.txt"), "w") as fh:
            fh.write(names)
    if extra_folder:
        write_images(os.path.join(root, "train", extra_folder), (9, 9, 9), 5)
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path), capsys, monkeypatch)
    assert all(w in msg for w in words), msg
    assert not os.path.exists(os.path.join(root, SPLIT))


# -------------------------------------------------------------------------------------------------
# Case 13: images in sub-folders of a class folder


def test_images_in_sub_folders_of_a_class_are_read_and_hidden_folders_skipped(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "d")
    write_images(os.path.join(root, "train", "blue", "2019", "march"), CLASSES["blue"], 5, start=200)
    write_images(os.path.join(root, "train", "blue", ".ipynb_checkpoints"), CLASSES["blue"], 3, start=300)
    write_images(os.path.join(root, "train", ".ipynb_checkpoints", "blue"), CLASSES["blue"], 2, start=400)
    capsys.readouterr()
    ds = load(root)
    every = paths(ds.train_x) + paths(ds.val) + paths(ds.test)
    assert len(every) == 35
    assert sum("/2019/march/" in p for p in every) == 5 and not any(".ipynb" in p for p in every)
    assert all(item.classname == "blue" for item in ds.train_x + ds.val + ds.test if "/2019/" in item.impath)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ImageFolder: read 5")]
    assert len(lines) == 1, lines
    assert "train/blue/2019/march" in lines[0] and "skipped 2 hidden folder" in lines[0]
    assert "train/blue/.ipynb_checkpoints" in lines[0] and "train/.ipynb_checkpoints" in lines[0]


# -------------------------------------------------------------------------------------------------
# Case 14: one class


def test_a_single_class_is_refused(tmp_path, tiny_clip_path, capsys, monkeypatch):
    root = tmp_path / "d"
    write_images(root / "train" / "cat", (200, 40, 30), 10)
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path), capsys, monkeypatch)
    assert "single class" in msg and str(root / "train" / "cat") in msg and "at least two" in msg


def test_a_single_csv_label_is_refused(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    write_csv(os.path.join(root, "one.csv"), ["path,label", *[r.split(",")[0] + ",cat" for r in csv_rows(root)]])
    with pytest.raises(DatasetFormatError, match="single class.*'cat'.*at least two"):
        load(root, name="CSVDataset", CSV="one.csv")


# -------------------------------------------------------------------------------------------------
# Cases 15 and 20: the data changed after the split was saved


def test_class_folder_added_after_the_split_is_said_with_how_to_split_again(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "d")
    first = load(root)
    write_images(os.path.join(root, "train", "zebra"), (9, 9, 9), 6)
    capsys.readouterr()
    again = load(root)
    assert again.classnames == first.classnames  # the saved split is kept
    notes = [line for line in capsys.readouterr().out.splitlines() if "added after" in line]
    assert len(notes) == 1 and "train/zebra" in notes[0]
    assert f"delete {os.path.join(root, SPLIT)} to split again" in notes[0]
    os.remove(os.path.join(root, SPLIT))
    assert "zebra" in load(root).classnames


def test_class_names_changed_after_the_split_are_said(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "d")
    first = load(root)
    with open(os.path.join(root, "classnames.txt"), "w") as fh:
        fh.write("blue\tblue sky\n")
    capsys.readouterr()
    assert load(root).classnames == first.classnames
    notes = [line for line in capsys.readouterr().out.splitlines() if "otherwise than" in line]
    assert len(notes) == 1 and "'blue' there, 'blue sky' now" in notes[0] and "delete it" in notes[0]
    os.remove(os.path.join(root, SPLIT))
    again = load(root)
    assert again.classnames[0] == "blue sky" and paths(again.test) == paths(first.test)


def test_csv_changed_after_the_split_is_said(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "d")
    write_csv(os.path.join(root, "labels.csv"), ["path,label", *csv_rows(root)])
    load(root, name="CSVDataset", CSV="labels.csv")
    split = os.path.join(root, "split_zhou_labels.json")
    os.utime(split, (1_000_000, 1_000_000))  # the CSV is edited later
    capsys.readouterr()
    load(root, name="CSVDataset", CSV="labels.csv")
    notes = [line for line in capsys.readouterr().out.splitlines() if "changed after" in line]
    assert len(notes) == 1 and f"delete {split} to split again" in notes[0]


def test_renamed_class_folder_suggests_the_imagefolder_fix(tmp_path, tiny_clip_path, capsys, monkeypatch):
    root = make_imagefolder(tmp_path / "d")
    load(root)
    os.rename(os.path.join(root, "train", "blue"), os.path.join(root, "train", "blue_sky"))
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path), capsys, monkeypatch)
    assert f"delete {os.path.join(root, SPLIT)} to split again" in msg
    assert "DATASET.ROOT" not in msg and "train/blue/" in msg


# -------------------------------------------------------------------------------------------------
# Case 19: a read-only dataset folder


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: writes into ``folder`` fail with EACCES as on a read-only share (the tests
    may run as root, for whom file modes do not stop writes); the folder is also made read-only."""
    folders = []

    def inside(path):
        path = os.path.abspath(path)
        return any(os.path.commonpath([path, f]) == f for f in folders)

    real_mkstemp, real_makedirs, real_remove = tempfile.mkstemp, os.makedirs, os.remove

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if dir and inside(dir):  # what the OS reports: the hidden temporary file's name
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}x1y2z3{suffix}"))
        return real_mkstemp(suffix, prefix, dir, text)

    def makedirs(name, *args, **kwargs):
        if inside(name) and not os.path.isdir(name):
            raise PermissionError(errno.EACCES, "Permission denied", name)
        return real_makedirs(name, *args, **kwargs)

    def remove(path, *args, **kwargs):
        if inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_remove(path, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "makedirs", makedirs)
    monkeypatch.setattr(os, "remove", remove)
    modes = []

    def make(folder):
        folder = os.path.abspath(str(folder))
        folders.append(folder)
        for dirpath, _, _ in os.walk(folder):
            modes.append((dirpath, os.stat(dirpath).st_mode))
            os.chmod(dirpath, 0o555)

    yield make
    for dirpath, mode in modes:
        os.chmod(dirpath, mode)


def test_read_only_dataset_names_the_split_file_and_cache_dir_makes_it_work(tmp_path, tiny_clip_path, capsys,
                                                                            monkeypatch, read_only):
    root = make_imagefolder(tmp_path / "shared")
    read_only(root)
    msg = run_fails(own_argv(root, tmp_path / "out", tiny_clip_path), capsys, monkeypatch)
    assert f"Cannot write the split file {os.path.join(root, SPLIT)}" in msg
    assert ".tmp" not in msg and "x1y2z3" not in msg and "DATASET.CACHE_DIR" in msg
    cache = tmp_path / "cache"
    ds = load(root, shots=2, seed=1, CACHE_DIR=str(cache))
    again = load(root, shots=2, seed=2, CACHE_DIR=str(cache))  # any shots and seed
    (folder,) = os.listdir(cache)
    assert folder.startswith("shared-")
    assert sorted(os.listdir(cache / folder)) == ["split_fewshot", SPLIT]
    assert sorted(os.listdir(cache / folder / "split_fewshot")) == ["shot_2-seed_1.pkl", "shot_2-seed_2.pkl"]
    assert paths(ds.test) == paths(again.test) and len(ds.train_x) == 6
    assert sorted(os.listdir(root)) == ["train"]  # nothing written into the shared folder


def test_read_only_fewshot_cache_is_named(tmp_path, read_only):
    root = make_imagefolder(tmp_path / "shared")
    load(root)  # the split exists (made before the folder became read-only)
    read_only(root)
    with pytest.raises(CacheWriteError) as info:
        load(root, shots=2)
    msg = str(info.value)
    assert f"cache file {os.path.join(root, 'split_fewshot', 'shot_2-seed_1.pkl')}" in msg
    assert "DATASET.CACHE_DIR" in msg
    assert len(load(root, shots=2, CACHE_DIR=str(tmp_path / "cache")).train_x) == 6


def test_cache_dir_serves_coop_datasets_and_keeps_their_split_file(tmp_path, read_only):
    from tests.helpers.dataset_fixtures import write_fixture

    write_fixture("DescribableTextures", tmp_path / "data")
    read_only(tmp_path / "data")
    ds = load(tmp_path / "data", name="DescribableTextures", shots=1, CACHE_DIR=str(tmp_path / "cache"))
    (folder,) = os.listdir(tmp_path / "cache")
    assert folder.startswith("dtd-")
    assert os.listdir(tmp_path / "cache" / folder) == ["split_fewshot"]  # CoOp's split file is read in place
    assert ds.train_x


def test_cache_dir_keeps_two_datasets_of_the_same_name_apart(tmp_path):
    a, b = make_imagefolder(tmp_path / "x" / "data"), make_imagefolder(tmp_path / "y" / "data")
    load(a, CACHE_DIR=str(tmp_path / "cache"))
    load(b, CACHE_DIR=str(tmp_path / "cache"))
    assert len(os.listdir(tmp_path / "cache")) == 2


def test_layout_errors_still_say_what_is_missing(tmp_path):
    with pytest.raises(DatasetLayoutError, match="CLASSNAMES 'nope.tsv'"):
        load(make_imagefolder(tmp_path / "d"), CLASSNAMES="nope.tsv")
