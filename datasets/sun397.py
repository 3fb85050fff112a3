"""SUN397 scenes. Split: ``split_zhou_SUN397.json``, else ``ClassName.txt`` + ``Training_01/Testing_01``."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset, label_of, read_lines
from datasets.splits import make_datums


@DATASET_REGISTRY.register()
class SUN397(CoOpDataset):
    dataset_dir = "sun397"
    image_subdir = "SUN397"
    split_name = "SUN397"
    layout = (
        "sun397/\n"
        "  SUN397/                      a/abbey/sun_aaalbzqrimafwbiv.jpg, ...\n"
        "  ClassName.txt, Training_01.txt, Testing_01.txt   (read only to build the split file)\n"
        "  split_zhou_SUN397.json"
    )

    def build_split(self):
        path = self.require(os.path.join(self.dataset_dir, "ClassName.txt"))
        cname2lab = {fields[0][1:]: i for i, (_, fields) in enumerate(read_lines(path, 1, "/a/abbey"))}
        trainval = self.read_data(cname2lab, "Training_01.txt")
        test = self.read_data(cname2lab, "Testing_01.txt")
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab, text_file):
        """Lines ``/a/apartment_building/outdoor/sun_x.jpg``; name = dirs after the letter, reversed."""
        path = self.require(os.path.join(self.dataset_dir, text_file))
        records, where = [], []
        for lineno, fields in read_lines(path, 1, "/a/abbey/sun_aaalbzqrimafwbiv.jpg"):
            imname = fields[0][1:]
            class_dir = os.path.dirname(imname)
            classname = " ".join(class_dir.split("/")[1:][::-1])  # "outdoor apartment_building"
            label = label_of(cname2lab, class_dir, path, lineno, "ClassName.txt")
            records.append((os.path.join(self.image_dir, imname), label, classname))
            where.append(f"line {lineno}")
        return make_datums(records, path, where)
