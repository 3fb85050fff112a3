"""``Datum`` (one labelled image) and ``DatasetBase`` (train_x / train_u / val / test lists).

``Datum`` must stay at this module path with these attribute names: CoOp's few-shot caches pickle
it as ``dassl.data.datasets.base_dataset.Datum`` with state ``{_impath, _label, _domain, _classname}``.
"""
from __future__ import annotations

import os
import random
from collections import defaultdict

from dpl.errors import UserError

__all__ = ["Datum", "DatasetBase", "MissingImageError", "describe_missing_image"]


class MissingImageError(UserError, AssertionError):
    """A ``Datum``'s image file does not exist (an AssertionError too, as Dassl's assert was)."""


def describe_missing_image(impath):
    """``impath``, plus its target when it is a broken symbolic link (the usual cause after moving
    the files that an exported tree links to)."""
    if os.path.islink(impath):
        return "{} (a symbolic link to {}, which does not exist)".format(impath, os.readlink(impath))
    return impath


class Datum:
    """One sample: image path, integer label, domain index and class name.

    The image file must exist (else MissingImageError naming it, and a broken link's target), so a
    stale split file fails here rather than inside a data loader. Plain instance attributes, no
    ``__slots__``: pickles store exactly ``__dict__``.
    """

    def __init__(self, impath="", label=0, domain=0, classname=""):
        assert isinstance(impath, str)
        if not os.path.isfile(impath):
            raise MissingImageError(
                "Image file {} does not exist; restore it or remove it from the dataset's listing."
                .format(describe_missing_image(impath)))
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    def __repr__(self):
        return "Datum(impath={!r}, label={}, domain={}, classname={!r})".format(
            self._impath, self._label, self._domain, self._classname)


class DatasetBase:
    """Holds the splits; class count and names are derived from ``train_x`` only."""

    dataset_dir = ""  # subclasses set an absolute path
    domains = []      # domain names, for domain-generalisation datasets

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x  # labelled training data
        self._train_u = train_u  # unlabelled training data (optional)
        self._val = val          # validation data (optional)
        self._test = test        # test data
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source):
        """``max(label) + 1`` (not the number of distinct labels)."""
        label_set = set()
        for item in data_source:
            label_set.add(item.label)
        if not label_set:
            raise UserError("The training data of this dataset is empty (no images); check its split "
                            "or annotation files and DATASET.NUM_SHOTS.")
        return max(label_set) + 1

    @staticmethod
    def get_lab2cname(data_source):
        """Return ``({label: classname}, [classnames sorted by label])``."""
        container = set()
        for item in data_source:
            container.add((item.label, item.classname))
        mapping = {label: classname for label, classname in container}
        labels = sorted(mapping.keys())
        classnames = [mapping[label] for label in labels]
        return mapping, classnames

    def check_input_domains(self, source_domains, target_domains):
        assert len(source_domains) > 0, "source_domains (list) is empty"
        assert len(target_domains) > 0, "target_domains (list) is empty"
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains):
        for domain in input_domains:
            if domain not in self.domains:
                raise UserError(
                    "Input domain must belong to {}, but got [{}]".format(self.domains, domain)
                )

    def download_data(self, url, dst, from_gdrive=True):
        # Never download at run time: tell the user where the data must go instead.
        raise UserError(
            "Dataset files are missing at {!r}; this project never downloads. Download them from "
            "{} and extract them there (see the dataset preparation notes).".format(dst, url)
        )

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """Keep ``num_shots`` items per label from each source (Python ``random``, as Dassl).

        Per label (in order of first appearance): ``random.sample(items, K)`` if there are at least
        K items, else ``random.choices(items, k=K)`` when ``repeat``, else all of them. With
        ``num_shots < 1`` the input comes back unchanged (one source) or as a tuple. Returns a list
        for one source, a list of lists for several.
        """
        if num_shots < 1:
            if len(data_sources) == 1:
                return data_sources[0]
            return data_sources

        print("Creating a {}-shot dataset".format(num_shots))

        output = []
        for data_source in data_sources:
            tracker = self.split_dataset_by_label(data_source)
            dataset = []
            for label, items in tracker.items():
                if len(items) >= num_shots:
                    sampled_items = random.sample(items, num_shots)
                elif repeat:
                    sampled_items = random.choices(items, k=num_shots)
                else:
                    sampled_items = items
                dataset.extend(sampled_items)
            output.append(dataset)

        if len(output) == 1:
            return output[0]
        return output

    def split_dataset_by_label(self, data_source):
        """``defaultdict(list)``: label -> items, in data order."""
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    def split_dataset_by_domain(self, data_source):
        """``defaultdict(list)``: domain -> items, in data order."""
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output
