"""EuroSAT RGB (10 land-cover classes). Split: ``split_zhou_EuroSAT.json``, else the folders."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset
from datasets.splits import read_and_split_data

# Folder name -> the descriptive class name CoOp prompts with.
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}
NEW_CLASSNAMES = NEW_CNAMES  # the name DPL's copy of this module uses


@DATASET_REGISTRY.register()
class EuroSAT(CoOpDataset):
    dataset_dir = "eurosat"
    image_subdir = "2750"
    split_name = "EuroSAT"
    layout = (
        "eurosat/\n"
        "  2750/                        AnnualCrop/AnnualCrop_1.jpg, Forest/..., ...\n"
        "  split_zhou_EuroSAT.json"
    )

    def build_split(self):
        return read_and_split_data(self.image_dir, new_cnames=NEW_CNAMES)
