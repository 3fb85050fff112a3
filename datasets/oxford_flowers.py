"""Oxford Flowers-102. Split: ``split_zhou_OxfordFlowers.json``, else ``imagelabels.mat``."""
import os
from collections import defaultdict

from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils import read_json
from scipy.io import loadmat

from datasets.coop_base import CoOpDataset
from datasets.splits import check_images_exist, split_per_class


@DATASET_REGISTRY.register()
class OxfordFlowers(CoOpDataset):
    dataset_dir = "oxford_flowers"
    image_subdir = "jpg"
    split_name = "OxfordFlowers"
    layout = (
        "oxford_flowers/\n"
        "  jpg/                         image_00001.jpg, ...\n"
        "  imagelabels.mat              (read only to build the split file)\n"
        "  cat_to_name.json             (read only to build the split file)\n"
        "  split_zhou_OxfordFlowers.json"
    )

    def build_split(self):
        """Image i+1 has the 1-based label ``labels[0][i]``; 50/20/30 per class in first-seen order."""
        label_file = self.require(os.path.join(self.dataset_dir, "imagelabels.mat"))
        lab2cname = read_json(self.require(os.path.join(self.dataset_dir, "cat_to_name.json")))
        labels = [int(y) for y in loadmat(label_file)["labels"][0]]
        impaths = [os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg") for i in range(len(labels))]
        check_images_exist(impaths, label_file)
        by_label = defaultdict(list)
        for impath, y in zip(impaths, labels):
            by_label[y].append(impath)
        groups = ((y - 1, lab2cname[str(y)], impaths) for y, impaths in by_label.items())
        return split_per_class(groups)
