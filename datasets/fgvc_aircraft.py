"""FGVC-Aircraft (100 variants). No split file: the three ``images_variant_*.txt`` are the split."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset, label_of, read_lines
from datasets.splits import make_datums


@DATASET_REGISTRY.register()
class FGVCAircraft(CoOpDataset):
    dataset_dir = "fgvc_aircraft"
    image_subdir = "images"
    layout = (
        "fgvc_aircraft/                 (the data/ folder of fgvc-aircraft-2013b, renamed)\n"
        "  images/                      0034309.jpg, ...\n"
        "  variants.txt\n"
        "  images_variant_train.txt, images_variant_val.txt, images_variant_test.txt"
    )

    def load_split(self):
        """Labels are line indices in ``variants.txt``; read on every run, as CoOp does."""
        path = self.require(os.path.join(self.dataset_dir, "variants.txt"))
        with open(path, "r") as fh:
            cname2lab = {name: i for i, name in enumerate(line.strip() for line in fh)}
        files = [f"images_variant_{split}.txt" for split in ("train", "val", "test")]
        return tuple(self.read_data(cname2lab, name) for name in files)

    def read_data(self, cname2lab, split_file):
        """Lines ``<image id> <variant words...>``, e.g. ``1025794 Cessna 172``."""
        path = self.require(os.path.join(self.dataset_dir, split_file))
        records, where = [], []
        for lineno, fields in read_lines(path, 2, "1025794 Cessna 172"):
            classname = " ".join(fields[1:])
            label = label_of(cname2lab, classname, path, lineno, "variants.txt")
            records.append((os.path.join(self.image_dir, fields[0] + ".jpg"), label, classname))
            where.append(f"line {lineno}")
        return make_datums(records, path, where)
