"""dassl compatibility: Datum, DatasetBase, few-shot sampling, DatasetWrapper, loaders, samplers,
transforms, DataManager."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data import DataManager, DatasetWrapper
from dassl.data.data_manager import build_data_loader
from dassl.data.datasets import DatasetBase, Datum
from dassl.data.samplers import build_sampler
from dassl.data.transforms import INTERPOLATION_MODES, build_transform
from tests.helpers.mini_dataset import MiniDTDSpec, make_mini_dtd
from dpl.errors import UserError


def _image(path, size=(12, 10), colour=(200, 30, 30)):
    Image.new("RGB", size, colour).save(path)
    return str(path)


def _data(tmp_path, labels, domains=None):
    """One Datum per label, each with its own tiny image file."""
    items = []
    for i, label in enumerate(labels):
        path = _image(tmp_path / f"img_{i}.png")
        domain = 0 if domains is None else domains[i]
        items.append(Datum(impath=path, label=label, domain=domain, classname=f"class{label}"))
    return items


def _cfg(**input_kw):
    cfg = get_cfg_default()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.SIZE = (8, 8)
    for k, v in input_kw.items():
        setattr(cfg.INPUT, k, v)
    return cfg


# ---------------------------------------------------------------- Datum / DatasetBase

def test_datum_requires_existing_file_and_pickles_by_module_path(tmp_path):
    # An AssertionError as in Dassl, and a one-line user error naming the file (issue #23 case 1).
    with pytest.raises(AssertionError, match="missing.jpg does not exist") as info:
        Datum(impath=str(tmp_path / "missing.jpg"), label=0)
    assert isinstance(info.value, UserError)
    os.symlink(str(tmp_path / "moved.jpg"), str(tmp_path / "link.jpg"))
    with pytest.raises(UserError, match=r"link.jpg \(a symbolic link to .*moved.jpg, which does not exist\)"):
        Datum(impath=str(tmp_path / "link.jpg"), label=0)

    datum = _data(tmp_path, [3])[0]
    blob = pickle.dumps(datum, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"dassl.data.datasets.base_dataset" in blob and b"Datum" in blob
    restored = pickle.loads(blob)
    assert restored.__dict__ == {"_impath": datum.impath, "_label": 3, "_domain": 0, "_classname": "class3"}
    restored._label = 7  # DPL relabels in place through the private field
    assert restored.label == 7


def test_num_classes_is_max_plus_one_and_classnames_sorted_by_label(tmp_path):
    ds = DatasetBase(train_x=_data(tmp_path, [3, 0, 3]), test=[])
    assert ds.num_classes == 4
    assert ds.classnames == ["class0", "class3"]
    assert ds.lab2cname == {0: "class0", 3: "class3"}


def test_fewshot_picks_match_python_random(tmp_path):
    data = _data(tmp_path, [1, 1, 0, 0, 0, 1, 2])
    ds = DatasetBase(train_x=data)
    groups = {1: [data[0], data[1], data[5]], 0: [data[2], data[3], data[4]], 2: [data[6]]}

    random.seed(5)
    expected = random.sample(groups[1], 2) + random.sample(groups[0], 2) + groups[2]  # first-seen order
    random.seed(5)
    assert ds.generate_fewshot_dataset(data, num_shots=2) == expected

    random.seed(5)
    expected_repeat = (random.sample(groups[1], 2) + random.sample(groups[0], 2)
                       + random.choices(groups[2], k=2))
    random.seed(5)
    assert ds.generate_fewshot_dataset(data, num_shots=2, repeat=True) == expected_repeat

    assert ds.generate_fewshot_dataset(data, num_shots=-1) is data
    assert ds.generate_fewshot_dataset(data, data[:2], num_shots=0) == (data, data[:2])
    both = ds.generate_fewshot_dataset(data, data[:2], num_shots=1)
    assert [len(x) for x in both] == [3, 1]


def test_split_by_label_and_domain_keep_order(tmp_path):
    data = _data(tmp_path, [1, 0, 1], domains=[2, 2, 0])
    ds = DatasetBase(train_x=data)
    assert list(ds.split_dataset_by_label(data).items()) == [(1, [data[0], data[2]]), (0, [data[1]])]
    assert list(ds.split_dataset_by_domain(data).items()) == [(2, [data[0], data[1]]), (0, [data[2]])]


# ---------------------------------------------------------------- wrapper / loaders

def test_loader_batch_keys_types_and_drop_last_rule(tmp_path):
    cfg = _cfg(TRANSFORMS=("normalize",))
    tfm = build_transform(cfg, is_train=True)
    five = _data(tmp_path, [0, 1, 0, 1, 2])

    train = build_data_loader(cfg, "RandomSampler", five, batch_size=4, tfm=tfm, is_train=True)
    assert len(train) == 1  # 5 >= 4: the partial batch is dropped
    small = build_data_loader(cfg, "RandomSampler", five[:3], batch_size=4, tfm=tfm, is_train=True)
    assert len(small) == 1 and len(next(iter(small))["label"]) == 3  # smaller than a batch: kept
    test = build_data_loader(cfg, "SequentialSampler", five, batch_size=4, tfm=tfm, is_train=False)
    assert [len(b["label"]) for b in test] == [4, 1]  # test loaders never drop

    batch = next(iter(test))
    assert set(batch) == {"img", "label", "domain", "impath", "index"}
    assert batch["img"].shape == (4, 3, 8, 8)
    assert batch["label"].dtype == torch.int64 and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["impath"] == [d.impath for d in five[:4]]

    with pytest.raises(ValueError, match="Batch size must be positive"):
        build_data_loader(cfg, "SequentialSampler", five, batch_size=0, tfm=tfm)


def test_wrapper_k_transforms_lists_and_img0(tmp_path):
    cfg = _cfg(TRANSFORMS=("random_flip",))
    cfg.DATALOADER.K_TRANSFORMS = 2
    cfg.DATALOADER.RETURN_IMG0 = True
    data = _data(tmp_path, [0])
    tfm = build_transform(cfg, is_train=True)

    item = DatasetWrapper(cfg, data, transform=[tfm, tfm], is_train=True)[0]
    assert set(item) == {"img", "img2", "img0", "label", "domain", "impath", "index"}
    assert isinstance(item["img"], list) and len(item["img"]) == 2 and item["img"][0].shape == (3, 8, 8)
    assert item["img0"].shape == (3, 8, 8)

    test_item = DatasetWrapper(cfg, data, transform=tfm, is_train=False)[0]  # K applies to training only
    assert torch.is_tensor(test_item["img"])

    with pytest.raises(ValueError, match="Cannot augment the image 2 times because transform is None"):
        DatasetWrapper(cfg, data, transform=None, is_train=True)


def test_samplers_by_name(tmp_path):
    data = _data(tmp_path, [0, 1])
    assert isinstance(build_sampler("RandomSampler", data_source=data), torch.utils.data.RandomSampler)
    assert list(build_sampler("SequentialSampler", data_source=data)) == [0, 1]
    with pytest.raises(ValueError, match="Unknown sampler type: Nope"):
        build_sampler("Nope", data_source=data)


# ---------------------------------------------------------------- transforms

def test_train_transform_lines_and_shape(tmp_path, capsys):
    cfg = _cfg(TRANSFORMS=("random_resized_crop", "random_flip", "normalize"), INTERPOLATION="bicubic")
    tfm = build_transform(cfg, is_train=True)
    assert capsys.readouterr().out.splitlines() == [
        "Building transform_train",
        "+ random resized crop (size=(8, 8), scale=(0.08, 1.0))",
        "+ random flip",
        "+ to torch tensor of range [0, 1]",
        "+ normalization (mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])",
    ]
    assert tfm(Image.new("RGB", (30, 20))).shape == (3, 8, 8)
    assert INTERPOLATION_MODES["bicubic"] == tfm.transforms[0].interpolation

    build_transform(_cfg(TRANSFORMS=()), is_train=True)
    assert capsys.readouterr().out.splitlines()[:2] == ["Building transform_train", "+ resize to 8x8"]

    with pytest.raises(AssertionError, match="Invalid transform choice"):
        build_transform(_cfg(TRANSFORMS=("flip_upside_down",)))

    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg) is None
    assert "Note: no transform is applied!" in capsys.readouterr().out


def test_test_transform_resizes_smaller_edge_then_center_crops(capsys):
    cfg = _cfg(TRANSFORMS=())
    tfm = build_transform(cfg, is_train=False)
    assert capsys.readouterr().out.splitlines() == [
        "Building transform_test", "+ resize the smaller edge to 8", "+ 8x8 center crop",
        "+ to torch tensor of range [0, 1]",
    ]
    # 40x10 image: red outer quarters, blue middle half. Smaller edge -> 8 gives 32x8; the 8x8
    # centre crop sees only blue. (A plain 8x8 resize would keep the red sides.)
    pixels = np.zeros((10, 40, 3), dtype=np.uint8)
    pixels[:, :10, 0] = pixels[:, 30:, 0] = 255
    pixels[:, 10:30, 2] = 255
    out = tfm(Image.fromarray(pixels))
    assert out.shape == (3, 8, 8)
    assert out[0].max() < 0.05 and out[2].min() > 0.95


# ---------------------------------------------------------------- DataManager on the mini dataset

def test_datamanager_mini_dtd_fewshot_val_and_summary(tmp_path, capsys):
    make_mini_dtd(tmp_path, MiniDTDSpec(n_train=6, n_val=5, n_test=2))
    cfg = _cfg(TRANSFORMS=("normalize",))
    cfg.DATASET.ROOT = str(tmp_path)
    cfg.DATASET.NAME = "MiniDTD"
    cfg.DATASET.NUM_SHOTS = 5
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    random.seed(0)
    dm = DataManager(cfg)

    assert len(dm.dataset.train_x) == 15 and len(dm.dataset.val) == 12  # val shots = min(K, 4)
    assert dm.num_classes == 3 and dm.dataset.classnames == ["banded", "blotchy", "braided"]
    assert dm.lab2cname == {0: "banded", 1: "blotchy", 2: "braided"} and dm.num_source_domains == 0
    assert dm.val_loader is not None and dm.train_loader_u is None and len(dm.train_loader_x) == 3
    out = capsys.readouterr().out
    assert "Loading dataset: MiniDTD" in out
    table = [line.split() for line in out.splitlines()[-7:]]
    assert table[1:6] == [["Dataset", "MiniDTD"], ["#", "classes", "3"], ["#", "train_x", "15"],
                          ["#", "val", "12"], ["#", "test", "6"]]
