"""The offline demo's datasets (``demo.world.TASKS``), in CoOp's on-disk format.

Nothing to download: on first use the images and ``split_zhou_<Name>.json`` are generated under
``DATASET.ROOT`` (deterministically, a few seconds); later runs read them like any CoOp dataset,
with the usual few-shot cache and base/new subsampling.
"""
import os

from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset
from demo.world import TASKS, write_demo_dataset


class DemoDataset(CoOpDataset):
    """A demo task; generated under DATASET.ROOT when its split file is missing."""

    image_subdir = "images"

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        split_path = os.path.join(root, self.dataset_dir, f"split_zhou_{self.split_name}.json")
        if not os.path.isfile(split_path):
            print(f"Generating the {self.split_name} demo dataset under {root} (first use only)")
            write_demo_dataset(root, self.split_name)
        super().__init__(cfg)


@DATASET_REGISTRY.register()
class DemoShapes(DemoDataset):
    dataset_dir = TASKS["DemoShapes"].dataset_dir
    split_name = "DemoShapes"
    layout = (
        "demo_shapes/                   (generated on first use by demo.world.write_demo_dataset)\n"
        "  images/                      red_circle/train_0000.png, ...\n"
        "  split_zhou_DemoShapes.json"
    )
