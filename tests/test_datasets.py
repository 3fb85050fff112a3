"""CoOp datasets: every registered loader on its miniature fixture, CoOp's split/few-shot/subsample rules,
cache compatibility with real Dassl, the restricted unpickler, and the user-facing errors."""
import contextlib
import json
import os
import pickle
import random
import shutil
import sys
import types
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

import datasets
from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, build_dataset
from datasets.errors import DatasetFormatError, DatasetLayoutError, UnsafeCacheError
from datasets.splits import subsample_classes
from tests.helpers import dataset_fixtures
from tests.helpers.dataset_fixtures import write_all, write_fixture

REPO = Path(__file__).resolve().parents[1]


def make_cfg(root, name, shots=-1, seed=-1, subsample="all", val_from_train=False):
    cfg = get_cfg_default()
    cfg.defrost()
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    if "VAL_FROM_TRAIN" not in cfg.DATASET:
        cfg.DATASET.VAL_FROM_TRAIN = False
    cfg.VERBOSE = False
    cfg.SEED = seed
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATASET.VAL_FROM_TRAIN = val_from_train
    cfg.freeze()
    return cfg


def load(root, name, **kwargs):
    """Build like train.py: the global RNG is seeded with SEED (if >= 0) before the dataset."""
    cfg = make_cfg(root, name, **kwargs)
    if cfg.SEED >= 0:
        random.seed(cfg.SEED)
    return build_dataset(cfg)


def triples(items):
    return [(d.impath, d.label, d.classname) for d in items]


def by_label(items):
    groups = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    return groups


@pytest.fixture(scope="session")
def all_fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("coop_data")
    return root, write_all(root)


# -------------------------------------------------------------------------------------------------
# Registry-driven: every CoOp dataset loads its miniature copy


def test_every_coop_dataset_is_registered_with_a_config_file():
    names = set(DATASET_REGISTRY.registered_names())
    assert set(datasets.COOP_DATASETS) <= names
    assert set(datasets.COOP_DATASETS) == set(dataset_fixtures.WRITERS)
    configured = {}
    for path in sorted((REPO / "configs" / "datasets").glob("*.yaml")):
        configured[path.stem] = yaml.safe_load(path.read_text())["DATASET"]["NAME"]
    # every CoOp dataset has its CoOp-named config (other configs, e.g. the demo's, may exist too)
    assert set(datasets.COOP_DATASETS) <= set(configured.values())
    assert set(configured.values()) <= names
    assert configured["dtd"] == "DescribableTextures" and configured["imagenetv2"] == "ImageNetV2"


@pytest.mark.parametrize("name", datasets.COOP_DATASETS)
def test_dataset_loads_its_fixture(all_fixtures, name):
    root, infos = all_fixtures
    info = infos[name]
    ds = load(root, name)
    assert ds.classnames == info.classnames
    sizes = {"train": len(ds.train_x), "val": len(ds.val or []), "test": len(ds.test)}
    assert sizes == info.sizes
    assert ds.num_classes == len(info.classnames)
    for split in (ds.train_x, ds.val or [], ds.test):
        for item in split:
            assert info.classnames[item.label] == item.classname
            assert item.domain == 0 and os.path.isfile(item.impath)
            assert item.impath.startswith(os.path.join(str(root), info.folder) + os.sep)
    assert set(by_label(ds.test)) == set(range(len(info.classnames)))

    split_path = getattr(ds, "split_path", "")
    if split_path:  # read or freshly saved: a second load reads the file and gives the same splits
        assert os.path.isfile(split_path)
        again = load(root, name)
        for a, b in ((ds.train_x, again.train_x), (ds.val, again.val), (ds.test, again.test)):
            assert triples(a) == triples(b)


def test_built_split_file_has_coop_format(tmp_path):
    write_fixture("StanfordCars", tmp_path)
    ds = load(tmp_path, "StanfordCars")
    text = Path(ds.split_path).read_text()
    split = json.loads(text)
    assert text == json.dumps(split, indent=4, separators=(",", ": "))  # Dassl's write_json layout
    assert sorted(split) == ["test", "train", "val"]
    assert [len(split[k]) for k in ("train", "val", "test")] == [12, 3, 6]
    for key, prefix in (("train", "cars_train/"), ("val", "cars_train/"), ("test", "cars_test/")):
        for relpath, label, classname in split[key]:
            assert relpath.startswith(prefix)  # relative to the dataset folder (StanfordCars only)
            assert isinstance(label, int) and classname == ds.classnames[label]


# -------------------------------------------------------------------------------------------------
# CoOp's randomness, reproduced


def test_folder_split_follows_coop_rule(tmp_path):
    write_fixture("EuroSAT", tmp_path)
    ds = load(tmp_path, "EuroSAT", seed=3)
    image_dir = tmp_path / "eurosat" / "2750"
    random.seed(3)
    expected = {"train": [], "val": [], "test": []}
    for label, folder in enumerate(sorted(os.listdir(image_dir))):
        images = [str(image_dir / folder / f) for f in os.listdir(image_dir / folder)]
        random.shuffle(images)
        n_train, n_val = round(len(images) * 0.5), round(len(images) * 0.2)
        expected["train"] += images[:n_train]
        expected["val"] += images[n_train:n_train + n_val]
        expected["test"] += images[n_train + n_val:]
    assert [d.impath for d in ds.train_x] == expected["train"]
    assert [d.impath for d in ds.val] == expected["val"]
    assert [d.impath for d in ds.test] == expected["test"]


def test_trainval_split_follows_coop_rule(tmp_path):
    write_fixture("OxfordPets", tmp_path)
    ds = load(tmp_path, "OxfordPets", seed=5)
    lines = (tmp_path / "oxford_pets" / "annotations" / "trainval.txt").read_text().split()
    names = lines[0::4]
    labels = [int(x) - 1 for x in lines[1::4]]
    random.seed(5)
    idxs_by_label = defaultdict(list)
    for idx, label in enumerate(labels):
        idxs_by_label[label].append(idx)
    train, val = [], []
    for idxs in idxs_by_label.values():
        n_val = round(len(idxs) * 0.2)
        random.shuffle(idxs)
        val += [names[i] for i in idxs[:n_val]]
        train += [names[i] for i in idxs[n_val:]]
    assert [Path(d.impath).stem for d in ds.train_x] == train
    assert [Path(d.impath).stem for d in ds.val] == val


def coop_fewshot(items, k):
    """CoOp/Dassl's rule: per label in first-appearance order, random.sample(items, k) or all."""
    out = []
    for group in by_label(items).values():
        out += random.sample(group, k) if len(group) >= k else group
    return out


def test_fewshot_picks_follow_coop_rule_and_are_cached(tmp_path):
    write_fixture("DescribableTextures", tmp_path)
    full = load(tmp_path, "DescribableTextures")
    ds = load(tmp_path, "DescribableTextures", shots=2, seed=1)
    random.seed(1)
    expected_train = coop_fewshot(full.train_x, 2)
    expected_val = coop_fewshot(full.val, min(2, 4))
    assert triples(ds.train_x) == triples(expected_train)
    assert triples(ds.val) == triples(expected_val)
    assert triples(ds.test) == triples(full.test)  # test is never reduced
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_1.pkl"
    assert cache.is_file()

    random.seed(12345)  # a different RNG state: the cached picks must come back unchanged
    cfg = make_cfg(tmp_path, "DescribableTextures", shots=2, seed=1)
    again = build_dataset(cfg)
    assert triples(again.train_x) == triples(ds.train_x)


# -------------------------------------------------------------------------------------------------
# Cache compatibility with real Dassl / CoOp


@contextlib.contextmanager
def real_dassl_datum():
    """Stand in real Dassl's ``Datum`` (plain attributes, same module path) while pickling."""
    module = types.ModuleType("dassl.data.datasets.base_dataset")

    class Datum:
        def __init__(self, impath="", label=0, domain=0, classname=""):
            self._impath = impath
            self._label = label
            self._domain = domain
            self._classname = classname

    Datum.__module__, Datum.__qualname__ = module.__name__, "Datum"
    module.Datum = Datum
    saved = sys.modules[module.__name__]
    sys.modules[module.__name__] = module
    try:
        yield Datum
    finally:
        sys.modules[module.__name__] = saved


def test_our_cache_is_what_real_dassl_reads_and_writes(tmp_path):
    write_fixture("DescribableTextures", tmp_path)
    ds = load(tmp_path, "DescribableTextures", shots=2, seed=1)
    raw = (tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_1.pkl").read_bytes()
    with real_dassl_datum() as RealDatum:
        data = pickle.loads(raw)
        rewritten = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    assert list(data) == ["train", "val"]
    for item, ours in zip(data["train"], ds.train_x):
        assert type(item) is RealDatum
        expected = {"_impath": ours.impath, "_label": ours.label, "_domain": 0, "_classname": ours.classname}
        assert vars(item) == expected
        assert list(vars(item)) == ["_impath", "_label", "_domain", "_classname"]
    assert len(data["val"]) == len(ds.val)
    assert rewritten == raw  # byte for byte what real Dassl would have written


def test_cache_written_by_real_dassl_is_used(tmp_path):
    write_fixture("DescribableTextures", tmp_path)
    full = load(tmp_path, "DescribableTextures")
    # Picks no RNG would produce in this order: the last image of each class, classes reversed.
    train = [items[-1] for _, items in sorted(by_label(full.train_x).items(), reverse=True)]
    val = [items[0] for _, items in sorted(by_label(full.val).items())]
    with real_dassl_datum() as RealDatum:
        data = {key: [RealDatum(d.impath, d.label, 0, d.classname) for d in items]
                for key, items in (("train", train), ("val", val))}
        raw = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_1-seed_2.pkl"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(raw)
    ds = load(tmp_path, "DescribableTextures", shots=1, seed=2)
    assert triples(ds.train_x) == triples(train)
    assert triples(ds.val) == triples(val)
    assert cache.read_bytes() == raw  # read, not rewritten


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_RunsShell, _RunsPython])
def test_cache_that_runs_code_is_refused(tmp_path, payload):
    write_fixture("DescribableTextures", tmp_path)
    marker = tmp_path / "pwned"
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_1-seed_1.pkl"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(pickle.dumps({"train": [payload(marker)], "val": []}, protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(UnsafeCacheError) as err:
        load(tmp_path, "DescribableTextures", shots=1, seed=1)
    assert not marker.exists()
    assert str(cache) in str(err.value) and "delete" in str(err.value)
    assert isinstance(err.value, pickle.UnpicklingError)


def test_imagenet_preprocessed_file_goes_through_the_restricted_unpickler(tmp_path):
    write_fixture("ImageNet", tmp_path)
    marker = tmp_path / "pwned"
    pkl = tmp_path / "imagenet" / "preprocessed.pkl"
    pkl.write_bytes(pickle.dumps({"train": [_RunsShell(marker)], "test": []}))
    with pytest.raises(UnsafeCacheError, match="preprocessed.pkl"):
        load(tmp_path, "ImageNet")
    assert not marker.exists()


def test_cache_of_the_wrong_shape_is_a_clear_error(tmp_path):
    write_fixture("DescribableTextures", tmp_path)
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_1-seed_1.pkl"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(pickle.dumps({"train": ["not a Datum"]}))
    with pytest.raises(DatasetFormatError, match="shot_1-seed_1.pkl.*Delete the file"):
        load(tmp_path, "DescribableTextures", shots=1, seed=1)


@pytest.mark.parametrize("name,shots", [("DescribableTextures", 2), ("ImageNet", 2)])
def test_cache_of_a_moved_dataset_is_rebuilt(tmp_path, capsys, name, shots):
    info = write_fixture(name, tmp_path / "old")
    before = load(tmp_path / "old", name, shots=shots, seed=1)
    shutil.move(str(tmp_path / "old" / info.folder), str(tmp_path / "new" / info.folder))
    capsys.readouterr()
    after = load(tmp_path / "new", name, shots=shots, seed=1)
    out = capsys.readouterr().out
    cache = tmp_path / "new" / info.folder / "split_fewshot" / f"shot_{shots}-seed_1.pkl"
    assert f"Note: cache file {cache}" in out
    new_root = str(tmp_path / "new")
    assert all(d.impath.startswith(new_root) and os.path.isfile(d.impath) for d in after.train_x + after.val)

    def relative(items, root):
        return [(os.path.relpath(d.impath, root), d.label) for d in items]

    # Same seed, same file listing -> the rebuilt cache holds the same picks under the new root.
    assert relative(after.train_x, new_root) == relative(before.train_x, str(tmp_path / "old"))
    capsys.readouterr()
    load(tmp_path / "new", name, shots=shots, seed=1)
    assert "Note: cache file" not in capsys.readouterr().out


# -------------------------------------------------------------------------------------------------
# Base-to-new


def test_subsample_base_and_new_relabel_from_zero(tmp_path):
    info = write_fixture("DescribableTextures", tmp_path)
    full = load(tmp_path, "DescribableTextures", shots=2, seed=1)
    base = load(tmp_path, "DescribableTextures", shots=2, seed=1, subsample="base")
    new = load(tmp_path, "DescribableTextures", shots=2, seed=1, subsample="new")
    assert base.classnames == info.classnames[:3]  # ceil(5 / 2) = 3 base classes
    assert new.classnames == info.classnames[3:]
    for ds, offset in ((base, 0), (new, 3)):
        for split, whole in ((ds.train_x, full.train_x), (ds.val, full.val), (ds.test, full.test)):
            kept = [(d.impath, d.label - offset, d.classname)
                    for d in whole if d.label - offset in range(ds.num_classes)]
            assert triples(split) == kept
            assert all(d.domain == 0 for d in split)
    assert len(base.train_x) + len(new.train_x) == len(full.train_x)
    again = load(tmp_path, "DescribableTextures", shots=2, seed=1, subsample="all")
    assert triples(again.train_x) == triples(full.train_x) and again.classnames == info.classnames


def test_subsample_uses_the_labels_of_the_first_dataset():
    from dassl.data.datasets import Datum

    items = [Datum(__file__, label, 0, f"c{label}") for label in (5, 0, 2, 9)]
    base, other = subsample_classes(items, items[:1], subsample="base")
    assert triples(base) == [(__file__, 0, "c0"), (__file__, 1, "c2")]  # labels 0, 2 kept -> 0, 1
    assert triples(other) == []  # label 5 is "new"
    new = subsample_classes(items, subsample="new")[0]
    assert [(d.label, d.classname) for d in new] == [(0, "c5"), (1, "c9")]
    assert subsample_classes(items, subsample="all") == (items,)
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES is 'bse'"):
        subsample_classes(items, subsample="bse")


# -------------------------------------------------------------------------------------------------
# ImageNet: val from train (search stage) and CoOp's default (val = test)


def test_imagenet_val_from_train_never_overlaps_test_or_train(tmp_path):
    write_fixture("ImageNet", tmp_path)
    coop = load(tmp_path, "ImageNet", shots=2, seed=1)
    assert triples(coop.val) == triples(coop.test)  # CoOp's convention
    ds = load(tmp_path, "ImageNet", shots=2, seed=1, val_from_train=True)
    val, train, test = ({d.impath for d in s} for s in (ds.val, ds.train_x, ds.test))
    assert val and not val & test and not val & train
    assert {label: len(items) for label, items in by_label(ds.val).items()} == {c: 2 for c in range(5)}
    assert all(f"{os.sep}train{os.sep}" in p for p in val)
    assert triples(ds.train_x) == triples(coop.train_x)  # the K-shot picks are CoOp's for this seed
    fewshot_dir = tmp_path / "imagenet" / "split_fewshot"
    assert sorted(os.listdir(fewshot_dir)) == ["shot_2-seed_1-valtrain.pkl", "shot_2-seed_1.pkl"]
    with open(fewshot_dir / "shot_2-seed_1.pkl", "rb") as fh:
        assert list(pickle.load(fh)) == ["train"]  # CoOp's ImageNet cache format is untouched
    again = load(tmp_path, "ImageNet", shots=2, seed=7, val_from_train=True)  # other seed -> other cache
    assert (fewshot_dir / "shot_2-seed_7-valtrain.pkl").is_file() and not {d.impath for d in again.val} & test


def test_imagenet_val_from_train_needs_shots(tmp_path):
    write_fixture("ImageNet", tmp_path)
    with pytest.raises(ValueError, match="NUM_SHOTS is -1"):
        load(tmp_path, "ImageNet", val_from_train=True)


# -------------------------------------------------------------------------------------------------
# Clear errors


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        load(tmp_path / "nowhere", "Caltech101")
    msg = str(err.value)
    assert "DATASET.ROOT" in msg and str(tmp_path / "nowhere") in msg and "docs/DATASETS.md" in msg


def test_missing_dataset_folder_lists_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        load(tmp_path, "OxfordFlowers")
    msg = str(err.value)
    assert str(tmp_path / "oxford_flowers") in msg and "docs/DATASETS.md" in msg
    assert "jpg/" in msg and "split_zhou_OxfordFlowers.json" in msg


def test_missing_split_file_and_raw_files_is_a_clear_error(tmp_path):
    write_fixture("OxfordPets", tmp_path)
    shutil.rmtree(tmp_path / "oxford_pets" / "annotations")
    with pytest.raises(DatasetLayoutError) as err:
        load(tmp_path, "OxfordPets")
    msg = str(err.value)
    assert "annotations/trainval.txt" in msg and "split_zhou_OxfordPets.json" in msg


def test_missing_classnames_file_is_a_clear_error(tmp_path):
    write_fixture("ImageNetSketch", tmp_path)
    os.remove(tmp_path / "imagenet-sketch" / "classnames.txt")
    with pytest.raises(DatasetLayoutError, match="classnames.txt not found.*copy imagenet/classnames.txt"):
        load(tmp_path, "ImageNetSketch")


@pytest.mark.parametrize("content,problem", [
    ('{"train": [["banded/banded_0001.jpg", 0, "banded"],', "not valid JSON"),
    ('{"train": [], "val": []}', "has no 'test' list"),
    ('{"train": [["banded/banded_0001.jpg", "zero", "banded"]], "val": [], "test": []}', "train entry 0"),
])
def test_malformed_split_file_names_file_and_problem(tmp_path, content, problem):
    write_fixture("DescribableTextures", tmp_path)
    split = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    split.write_text(content)
    with pytest.raises(DatasetFormatError) as err:
        load(tmp_path, "DescribableTextures")
    assert str(split) in str(err.value) and problem in str(err.value)


def test_split_entries_with_missing_images_are_counted(tmp_path):
    write_fixture("DescribableTextures", tmp_path)
    split = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    entries = json.loads(split.read_text())["val"]
    for relpath, _, _ in entries[:3]:
        os.remove(tmp_path / "dtd" / "images" / relpath)
    with pytest.raises(DatasetLayoutError) as err:
        load(tmp_path, "DescribableTextures")
    msg = str(err.value)
    assert str(split) in msg and "3 image file(s)" in msg
    assert f"val entry 0: {json.dumps(entries[0])}" in msg


def test_annotation_naming_an_unknown_class_is_a_clear_error(tmp_path):
    write_fixture("FGVCAircraft", tmp_path)
    listing = tmp_path / "fgvc_aircraft" / "images_variant_val.txt"
    listing.write_text(listing.read_text().replace("Cessna 172", "Cessna 182"))
    with pytest.raises(DatasetFormatError, match=r"images_variant_val.txt line 2 names class 'Cessna 182'"):
        load(tmp_path, "FGVCAircraft")


def test_coop_static_helpers_keep_their_names_and_semantics(tmp_path):
    from datasets.dtd import DescribableTextures
    from datasets.imagenet import ImageNet
    from datasets.oxford_pets import OxfordPets

    write_fixture("Caltech101", tmp_path)
    image_dir = str(tmp_path / "caltech-101" / "101_ObjectCategories")
    random.seed(0)
    train, val, test = DescribableTextures.read_and_split_data(
        image_dir, ignored=["BACKGROUND_Google", "Faces_easy"], new_cnames={"Faces": "face"})
    assert sorted({(d.label, d.classname) for d in train}) == [
        (0, "face"), (1, "Leopards"), (2, "Motorbikes"), (3, "accordion"), (4, "airplanes")]
    path = str(tmp_path / "split.json")
    OxfordPets.save_split(train, val, test, path, image_dir)
    assert all(not entry[0].startswith("/") for entry in json.loads(Path(path).read_text())["train"])
    for ours, theirs in zip((train, val, test), OxfordPets.read_split(path, image_dir)):
        assert triples(ours) == triples(theirs)
    fewer_train, fewer_val = OxfordPets.split_trainval(train + val)
    assert len(fewer_train) + len(fewer_val) == len(train + val) and len(fewer_val) == 5 * round(3 * 0.2)
    assert triples(OxfordPets.subsample_classes(train, subsample="base")[0]) == [
        t for t in triples(train) if t[1] < 3]
    write_fixture("ImageNetV2", tmp_path)
    names = ImageNet.read_classnames(str(tmp_path / "imagenetv2" / "classnames.txt"))
    assert list(names.items())[:2] == [("n01440764", "tench"), ("n01443537", "goldfish")]
