"""A generated miniature image dataset on disk in CoOp's DTD layout, a test-only loader for it, and
the smallest trainer that exercises the whole engine on it.

Layout (what ``make_mini_dtd(root)`` writes; the same as CoOp's DTD)::

    <root>/dtd/images/<class>/<class>_<i:04d>.jpg
    <root>/dtd/split_zhou_DescribableTextures.json   {"train"|"val"|"test": [[relpath, label, cname]]}

Each class has its own base colour (plus pixel noise), so even a linear classifier separates the
classes. ``MiniDTD`` (registered in ``DATASET_REGISTRY``; not a CoOp name) reads the split and draws
few-shot subsets like CoOp's loaders: K shots for train, min(K, 4) for val, test untouched.
``ToyLinear`` (registered in ``TRAINER_REGISTRY``) is a linear classifier on raw pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import read_json, write_json

SPLIT_NAME = "split_zhou_DescribableTextures.json"


@dataclass(frozen=True)
class MiniDTDSpec:
    classnames: tuple = ("banded", "blotchy", "braided")
    n_train: int = 6     # images per class in each split
    n_val: int = 2
    n_test: int = 3
    width: int = 12      # deliberately non-square: the test transform resizes the smaller edge
    height: int = 10


def _class_colour(label: int, num_classes: int) -> np.ndarray:
    """A distinct RGB colour per class, spread over the hue circle. (3,) floats in [0, 255]."""
    angle = 2 * np.pi * label / num_classes
    return 127.5 + 110 * np.cos(angle + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]))


def make_mini_dtd(root, spec: MiniDTDSpec = MiniDTDSpec(), seed: int = 0) -> str:
    """Write the miniature dataset under ``root`` and return its ``dtd`` directory."""
    rng = np.random.default_rng(seed)
    dataset_dir = os.path.join(str(root), "dtd")
    image_dir = os.path.join(dataset_dir, "images")
    counts = {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}
    split = {name: [] for name in counts}
    for label, cname in enumerate(spec.classnames):
        os.makedirs(os.path.join(image_dir, cname), exist_ok=True)
        colour = _class_colour(label, len(spec.classnames))
        index = 0
        for name, n in counts.items():
            for _ in range(n):
                pixels = colour + rng.normal(0, 12, size=(spec.height, spec.width, 3))
                relpath = f"{cname}/{cname}_{index:04d}.jpg"
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    os.path.join(image_dir, relpath), quality=95)
                split[name].append([relpath, label, cname])
                index += 1
    write_json(split, os.path.join(dataset_dir, SPLIT_NAME))
    return dataset_dir


def read_split(split_path: str, image_dir: str):
    """(train, val, test) lists of Datum from a CoOp split JSON."""
    print(f"Reading split from {split_path}")
    split = read_json(split_path)

    def convert(items):
        return [Datum(impath=os.path.join(image_dir, rel), label=int(label), classname=cname)
                for rel, label, cname in items]

    return convert(split["train"]), convert(split["val"]), convert(split["test"])


@DATASET_REGISTRY.register(force=True)
class MiniDTD(DatasetBase):
    """Test-only loader for ``make_mini_dtd`` data (the real DTD loader lives in ``datasets/``)."""

    dataset_dir = "dtd"

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(root, self.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, "images")
        self.split_path = os.path.join(self.dataset_dir, SPLIT_NAME)
        if not os.path.isfile(self.split_path):
            raise FileNotFoundError(
                f"MiniDTD split file {self.split_path} does not exist; create the data with "
                "tests.helpers.mini_dataset.make_mini_dtd(DATASET.ROOT).")

        train, val, test = read_split(self.split_path, self.image_dir)
        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1:
            train = self.generate_fewshot_dataset(train, num_shots=num_shots)
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
        super().__init__(train_x=train, val=val, test=test)


class TrainingInterrupted(Exception):
    """Raised by ToyLinear to simulate a run killed after a checkpoint was written."""


@TRAINER_REGISTRY.register(force=True)
class ToyLinear(TrainerX):
    """Linear classifier on raw pixels, registered as ``toy_model``; records the hook order.

    Set ``ToyLinear.stop_after_epoch = N`` to raise TrainingInterrupted after epoch N's checkpoint.
    """

    stop_after_epoch = None

    def __init__(self, cfg):
        self.hook_calls = []
        super().__init__(cfg)

    def build_model(self):
        height, width = self.cfg.INPUT.SIZE
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, self.num_classes))
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("toy_model", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label, _ = self.parse_batch_train(batch)
        output = self.model(image)  # (batch, num_classes)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()  # once per epoch, at the last batch (as CoOp-family trainers do)
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    def before_train(self):
        self.hook_calls.append("before_train")
        super().before_train()

    def before_epoch(self):
        self.hook_calls.append(f"before_epoch{self.epoch}")

    def run_epoch(self):
        self.hook_calls.append(f"run_epoch{self.epoch}")
        super().run_epoch()

    def after_epoch(self):
        self.hook_calls.append(f"after_epoch{self.epoch}")
        super().after_epoch()
        if ToyLinear.stop_after_epoch == self.epoch + 1:
            self.close_writer()
            raise TrainingInterrupted(f"stopped after epoch {self.epoch + 1}")

    def after_train(self):
        self.hook_calls.append("after_train")
        super().after_train()
