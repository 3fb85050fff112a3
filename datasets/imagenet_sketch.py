"""ImageNet-Sketch (test only): 1000 wnid folders; labels 0..999 over the sorted folders."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets.imagenet import ImageNetTestSet


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetTestSet):
    dataset_dir = "imagenet-sketch"
    image_subdir = "images"
    layout = (
        "imagenet-sketch/\n"
        "  images/                      n01440764/..., ... (1000 wnid folders)\n"
        "  classnames.txt               copy of imagenet/classnames.txt"
    )
