"""Caltech-101 (100 object classes). Split: ``split_zhou_Caltech101.json``, else the folders."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset
from datasets.splits import read_and_split_data

IGNORED = ["BACKGROUND_Google", "Faces_easy"]  # clutter class and a duplicate of Faces
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(CoOpDataset):
    dataset_dir = "caltech-101"
    image_subdir = "101_ObjectCategories"
    split_name = "Caltech101"
    layout = (
        "caltech-101/\n"
        "  101_ObjectCategories/        accordion/image_0001.jpg, ... (BACKGROUND_Google/ unused)\n"
        "  split_zhou_Caltech101.json"
    )

    def build_split(self):
        return read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
