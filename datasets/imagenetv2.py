"""ImageNetV2 matched-frequency (test only). Folder ``<i>`` holds class i of classnames.txt."""
from dassl.data.datasets import DATASET_REGISTRY

from datasets.imagenet import ImageNetTestSet


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetTestSet):
    dataset_dir = "imagenetv2"
    image_subdir = "imagenetv2-matched-frequency-format-val"
    layout = (
        "imagenetv2/\n"
        "  imagenetv2-matched-frequency-format-val/   0/<hash>.jpeg, 1/..., ..., 999/\n"
        "  classnames.txt               copy of imagenet/classnames.txt"
    )

    def class_folders(self, classnames, classnames_path):
        # Folders are numbered by ImageNet label, not named by wnid.
        return [(str(label), name) for label, name in enumerate(classnames.values())]
