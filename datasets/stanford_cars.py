"""Stanford Cars (196 models). Split: ``split_zhou_StanfordCars.json``, else the devkit ``.mat`` files.

The split file's paths are relative to the dataset folder (``cars_train/00001.jpg``), not to an
image folder, unlike every other dataset.
"""
import os

from dassl.data.datasets import DATASET_REGISTRY
from scipy.io import loadmat

from datasets.coop_base import CoOpDataset
from datasets.splits import make_datums


@DATASET_REGISTRY.register()
class StanfordCars(CoOpDataset):
    dataset_dir = "stanford_cars"
    split_name = "StanfordCars"
    layout = (
        "stanford_cars/\n"
        "  cars_train/                  00001.jpg, ...\n"
        "  cars_test/                   00001.jpg, ...\n"
        "  devkit/                      cars_train_annos.mat, cars_meta.mat\n"
        "  cars_test_annos_withlabels.mat\n"
        "  split_zhou_StanfordCars.json"
    )

    @property
    def split_prefix(self):
        return self.dataset_dir

    def build_split(self):
        devkit = os.path.join(self.dataset_dir, "devkit")
        meta = os.path.join(devkit, "cars_meta.mat")
        trainval = self.read_data("cars_train", os.path.join(devkit, "cars_train_annos.mat"), meta)
        test_annos = os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat")
        test = self.read_data("cars_test", test_annos, meta)
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_data(self, image_dir, anno_file, meta_file):
        """``annotations`` structs give ``fname`` and a 1-based ``class``; names move the year first."""
        annos = loadmat(self.require(anno_file))["annotations"][0]
        class_names = loadmat(self.require(meta_file))["class_names"][0]
        records = []
        for anno in annos:
            label = int(anno["class"][0, 0]) - 1
            words = str(class_names[label][0]).split(" ")
            classname = " ".join(words[-1:] + words[:-1])  # "AM General Hummer SUV 2000" -> "2000 AM ..."
            impath = os.path.join(self.dataset_dir, image_dir, str(anno["fname"][0]))
            records.append((impath, label, classname))
        return make_datums(records, anno_file)
