"""Small file-system, string and environment helpers."""
from __future__ import annotations

import difflib
import functools
import errno
import json
import os
import random
import warnings

import numpy as np
import PIL
import torch
from PIL import Image  # noqa: F401  (kept importable from here)
from dpl.images import load_rgb
from dpl.io import atomic_open
from dpl.errors import UserError

__all__ = [
    "mkdir_if_missing", "check_isfile", "read_json", "write_json", "set_random_seed",
    "read_image", "collect_env_info", "listdir_nohidden", "get_most_similar_str_to_a_from_b",
    "check_availability", "tolist_if_not", "download_url",
]


def mkdir_if_missing(dirname):
    """Create ``dirname`` (and parents) if it does not exist yet."""
    if not os.path.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def check_isfile(fpath):
    """Return True if ``fpath`` is a file; warn (and return False) otherwise."""
    isfile = os.path.isfile(fpath)
    if not isfile:
        warnings.warn('No file found at "{}"'.format(fpath))
    return isfile


def read_json(fpath):
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj, fpath):
    """Write ``obj`` as JSON with Dassl's layout (indent 4, ``": "``), creating the parent dir."""
    mkdir_if_missing(os.path.dirname(os.path.abspath(fpath)))
    with atomic_open(fpath, "w") as f:  # a crash never leaves half a file (dpl.io)
        json.dump(obj, f, indent=4, separators=(",", ": "))


def set_random_seed(seed):
    """Seed python ``random``, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def download_url(url, dst):
    # This project never downloads at run time; keep the name so imports of it still work.
    raise UserError(
        "download_url({!r}, {!r}): this Dassl never downloads; fetch the file yourself and place it "
        "at {!r}.".format(url, dst, dst)
    )


def read_image(path):
    """Read an image file as an 8-bit RGB PIL image: EXIF orientation applied, 16-bit and float
    grayscale rescaled, transparency composited on grey (the project's one loader, dpl/images.py)."""
    return load_rgb(path)


@functools.lru_cache(maxsize=1)
def collect_env_info():
    """PyTorch's environment report plus the Pillow version (computed once per process: it runs
    subprocesses)."""
    from torch.utils.collect_env import get_pretty_env_info

    env_str = get_pretty_env_info()
    env_str += "\n        Pillow ({})".format(PIL.__version__)
    return env_str


def listdir_nohidden(path, sort=False):
    """Names in ``path`` that do not start with ``.``; sorted only if ``sort``."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def get_most_similar_str_to_a_from_b(a, b):
    """The string in ``b`` most similar to ``a`` (difflib ratio; first one on ties)."""
    best, best_ratio = None, -1.0
    for candidate in b:
        ratio = difflib.SequenceMatcher(None, a, candidate).ratio()
        if ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best


def check_availability(requested, available):
    """Raise ValueError (with a "do you mean" hint) unless ``requested`` is in ``available``."""
    if requested not in available:
        psb_ans = get_most_similar_str_to_a_from_b(requested, available)
        raise UserError(
            "The requested one is expected to belong to {}, but got [{}] "
            "(do you mean [{}]?)".format(available, requested, psb_ans)
        )


def tolist_if_not(x):
    """Wrap a non-list value in a list."""
    if not isinstance(x, list):
        x = [x]
    return x
