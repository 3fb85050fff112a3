"""ImageNet-A (test only): 200 wnid folders; labels 0..199 over the sorted folders."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets.imagenet import ImageNetTestSet


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetTestSet):
    dataset_dir = "imagenet-adversarial"
    image_subdir = "imagenet-a"
    layout = (
        "imagenet-adversarial/\n"
        "  imagenet-a/                  n01440764/..., ... (200 wnid folders)\n"
        "  classnames.txt               copy of imagenet/classnames.txt"
    )
