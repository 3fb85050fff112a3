"""The offline demo's datasets (``demo.world.TASKS``), in CoOp's on-disk format (docs/DEMO.md).

Nothing to download: on first use the images and ``split_zhou_<Name>.json`` are generated under
``DATASET.ROOT`` (deterministically, a few seconds); later runs read them like any CoOp dataset,
with the usual few-shot cache and base/new subsampling.
"""
import os

from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset
from demo.world import TASKS, DemoTask, write_demo_dataset


class DemoDataset(CoOpDataset):
    """A demo task; generated under DATASET.ROOT when its split file is missing."""

    task: DemoTask  # set by each subclass; folder, split name and layout follow from it
    image_subdir = "images"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.dataset_dir, cls.split_name = cls.task.dataset_dir, cls.task.name
        first = cls.task.classnames[0].replace(" ", "_")
        cls.layout = (
            f"{cls.dataset_dir}/  (generated on first use by demo.world.write_demo_dataset)\n"
            f"  images/                      {first}/train_0000.png, ...\n"
            f"  split_zhou_{cls.split_name}.json"
        )

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        split_path = os.path.join(root, self.dataset_dir, f"split_zhou_{self.split_name}.json")
        if not os.path.isfile(split_path):
            print(f"Generating the {self.split_name} demo dataset under {root} (first use only)")
            write_demo_dataset(root, self.split_name)
        super().__init__(cfg)


@DATASET_REGISTRY.register()
class DemoShapes(DemoDataset):
    """36 classes: every colour x shape pair, 12 of them held out from pretraining."""

    task = TASKS["DemoShapes"]


@DATASET_REGISTRY.register()
class DemoCombos(DemoDataset):
    """12 classes: 6 held-out pairs, each next to a seen pair of the same colour."""

    task = TASKS["DemoCombos"]


@DATASET_REGISTRY.register()
class DemoColors(DemoDataset):
    """6 classes: the object's colour (any shape, size, background)."""

    task = TASKS["DemoColors"]


@DATASET_REGISTRY.register()
class DemoSizeShapes(DemoDataset):
    """12 classes: size x shape (any colour)."""

    task = TASKS["DemoSizeShapes"]


@DATASET_REGISTRY.register()
class DemoTextures(DemoDataset):
    """4 classes: the low-contrast background texture."""

    task = TASKS["DemoTextures"]


@DATASET_REGISTRY.register()
class DemoCombosSketch(DemoDataset):
    """DemoCombos drawn as outlines only (a domain-generalisation target)."""

    task = TASKS["DemoCombosSketch"]


@DATASET_REGISTRY.register()
class DemoCombosClutter(DemoDataset):
    """DemoCombos on high-contrast coloured backgrounds (a domain-generalisation target)."""

    task = TASKS["DemoCombosClutter"]


@DATASET_REGISTRY.register()
class DemoCombosJitter(DemoDataset):
    """DemoCombos with strong colour jitter and noise (a domain-generalisation target)."""

    task = TASKS["DemoCombosJitter"]
