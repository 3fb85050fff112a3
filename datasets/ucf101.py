"""UCF101 actions as mid-video frames. Split: ``split_zhou_UCF101.json``, else ``ucfTrainTestlist/``."""
import os
import re

from dassl.data.datasets import DATASET_REGISTRY

from datasets.coop_base import CoOpDataset, label_of, read_lines
from datasets.splits import make_datums


@DATASET_REGISTRY.register()
class UCF101(CoOpDataset):
    dataset_dir = "ucf101"
    image_subdir = "UCF-101-midframes"
    split_name = "UCF101"
    layout = (
        "ucf101/\n"
        "  UCF-101-midframes/           Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg, ...\n"
        "  ucfTrainTestlist/            classInd.txt, trainlist01.txt, testlist01.txt (to build the split)\n"
        "  split_zhou_UCF101.json"
    )

    def build_split(self):
        path = self.require(os.path.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt"))
        cname2lab = {fields[1]: int(fields[0]) - 1 for _, fields in read_lines(path, 2, "1 ApplyEyeMakeup")}
        trainval = self.read_data(cname2lab, "trainlist01.txt")
        test = self.read_data(cname2lab, "testlist01.txt")
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab, text_file):
        """Lines ``Action/v_Action_gXX_cYY.avi [id]``; CamelCase actions become ``Camel_Case`` folders."""
        path = self.require(os.path.join(self.dataset_dir, "ucfTrainTestlist", text_file))
        records, where = [], []
        for lineno, fields in read_lines(path, 1, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"):
            action, filename = fields[0].split("/")
            renamed = "_".join(re.findall("[A-Z][^A-Z]*", action))
            impath = os.path.join(self.image_dir, renamed, filename.replace(".avi", ".jpg"))
            label = label_of(cname2lab, action, path, lineno, "classInd.txt")
            records.append((impath, label, renamed))
            where.append(f"line {lineno}")
        return make_datums(records, path, where)
