"""ImageNet-R (test only): 200 wnid folders; labels 0..199 over the sorted folders."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets.imagenet import ImageNetTestSet


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetTestSet):
    dataset_dir = "imagenet-rendition"
    image_subdir = "imagenet-r"
    layout = (
        "imagenet-rendition/\n"
        "  imagenet-r/                  n01440764/..., ... (200 wnid folders)\n"
        "  classnames.txt               copy of imagenet/classnames.txt"
    )
