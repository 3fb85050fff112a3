"""Oxford-IIIT Pets (37 breeds). Split: ``split_zhou_OxfordPets.json``, else ``annotations/*.txt``."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset, read_lines
from datasets.splits import make_datums


@DATASET_REGISTRY.register()
class OxfordPets(CoOpDataset):
    dataset_dir = "oxford_pets"
    image_subdir = "images"
    split_name = "OxfordPets"
    layout = (
        "oxford_pets/\n"
        "  images/                      Abyssinian_1.jpg, american_bulldog_10.jpg, ...\n"
        "  annotations/                 trainval.txt, test.txt (read only to build the split file)\n"
        "  split_zhou_OxfordPets.json"
    )

    def build_split(self):
        trainval = self.read_data("trainval.txt")
        test = self.read_data("test.txt")
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_data(self, split_file):
        """Lines ``<image name> <class id, 1-based> <species> <breed id>``; breed = name minus ``_<n>``."""
        path = self.require(os.path.join(self.dataset_dir, "annotations", split_file))
        records, where = [], []
        for lineno, fields in read_lines(path, 4, "Abyssinian_100 1 1 1"):
            imname = fields[0]
            breed = "_".join(imname.split("_")[:-1]).lower()
            records.append((os.path.join(self.image_dir, imname + ".jpg"), int(fields[1]) - 1, breed))
            where.append(f"line {lineno}")
        return make_datums(records, path, where)
