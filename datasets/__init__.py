"""CoOp's 11 few-shot datasets and 4 ImageNet variants, in CoOp's on-disk formats (docs/DATASETS.md).

Importing the package registers every dataset in Dassl's ``DATASET_REGISTRY`` under CoOp's names,
plus the offline demo's generated tasks (``datasets/demo_shapes.py``) and the code-free loaders for
your own data (``ImageFolder``, ``CSVDataset``; docs/DATASETS.md "Your own data").
"""
from datasets import (  # noqa: F401
    caltech101,
    dtd,
    eurosat,
    fgvc_aircraft,
    food101,
    imagenet,
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenetv2,
    oxford_flowers,
    oxford_pets,
    stanford_cars,
    sun397,
    ucf101,
)
from datasets import demo_shapes  # noqa: F401,E402  (the offline demo's tasks, docs/DEMO.md)
from datasets import csv_dataset, imagefolder  # noqa: F401,E402  (your own data: ImageFolder, CSVDataset)

# Registered names, in CoOp's table order.
COOP_DATASETS = (
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft",
    "SUN397", "DescribableTextures", "EuroSAT", "UCF101",
    "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR",
)
