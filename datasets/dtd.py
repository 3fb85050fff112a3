"""Describable Textures (47 textures). Split: ``split_zhou_DescribableTextures.json``, else the folders."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets import splits
from datasets.coop_base import CoOpDataset


@DATASET_REGISTRY.register()
class DescribableTextures(CoOpDataset):
    dataset_dir = "dtd"
    image_subdir = "images"
    split_name = "DescribableTextures"
    layout = (
        "dtd/\n"
        "  images/                      banded/banded_0002.jpg, blotchy/..., ...\n"
        "  split_zhou_DescribableTextures.json"
    )
    # CoOp's shared 50/20/30 folder splitter, also used by Caltech101, EuroSAT and Food101.
    read_and_split_data = staticmethod(splits.read_and_split_data)

    def build_split(self):
        return self.read_and_split_data(self.image_dir)
