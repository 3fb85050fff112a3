"""Food-101. Split: ``split_zhou_Food101.json``, else the folders."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset
from datasets.splits import read_and_split_data


@DATASET_REGISTRY.register()
class Food101(CoOpDataset):
    dataset_dir = "food-101"
    image_subdir = "images"
    split_name = "Food101"
    layout = (
        "food-101/\n"
        "  images/                      apple_pie/1005649.jpg, baby_back_ribs/..., ...\n"
        "  split_zhou_Food101.json"
    )

    def build_split(self):
        return read_and_split_data(self.image_dir)
