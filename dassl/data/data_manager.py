"""DataManager (dataset + loaders), build_data_loader and DatasetWrapper (as in Dassl 0.6.3)."""
from __future__ import annotations

import torch
from PIL import Image
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

from dassl.utils import read_image
from dassl.utils.distributed import (ShardedBatchSampler, get_world_size, main_process_first,
                                     shard_of)

from .datasets import build_dataset
from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform
from dpl.errors import UserError

__all__ = ["DataManager", "DatasetWrapper", "ImageReadError", "build_data_loader"]


class ImageReadError(UserError):
    """An image of the dataset cannot be read (corrupt, truncated, not an image, or gone since the
    split was loaded). Raised by ``DatasetWrapper``; the message is one line naming the file."""


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64,
                      n_domain=0, n_ins=2, tfm=None, is_train=True, dataset_wrapper=None):
    """A DataLoader over ``dataset_wrapper(cfg, data_source, tfm, is_train)``.

    Training loaders drop the last partial batch only when the data holds at least one full batch,
    so a few-shot set smaller than the batch size still yields one (partial) batch.

    Under torchrun (world size N > 1) ``batch_size`` of a training loader is the global batch:
    each rank loads its 1/N part of every global batch (``ShardedBatchSampler``). A test loader
    reads its 1/N shard of the split with ``batch_size`` per rank.
    """
    if batch_size <= 0:
        raise UserError(
            "Batch size must be positive, got {}; fix DATALOADER.TRAIN_X.BATCH_SIZE / "
            "DATALOADER.TEST.BATCH_SIZE in your config.".format(batch_size))
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    if dataset_wrapper is None:
        dataset_wrapper = DatasetWrapper

    drop_last = is_train and len(data_source) >= batch_size
    batching = dict(batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    if get_world_size() > 1 and is_train:
        batching = dict(batch_sampler=ShardedBatchSampler(sampler, batch_size, drop_last))
    elif get_world_size() > 1:
        batching["sampler"] = shard_of(list(sampler))

    loader = DataLoader(
        dataset_wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        pin_memory=(torch.cuda.is_available() and cfg.USE_CUDA),
        **batching,
    )
    assert len(loader) > 0 or get_world_size() > 1
    return loader


class DataManager:
    """Builds the dataset named in ``cfg.DATASET.NAME``, the transforms and the four loaders.

    Subclasses may skip ``__init__`` (DPL does) as long as they set ``dataset``, the loaders and
    ``_num_classes``, ``_num_source_domains``, ``_lab2cname``.
    """

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        # torchrun: rank 0 first writes any split / few-shot cache a first run creates; the other
        # ranks then read them (never two processes writing or replacing the same file).
        dataset = main_process_first(lambda: build_dataset(cfg), "the dataset")

        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train

        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        dl = cfg.DATALOADER
        train_loader_x = build_data_loader(
            cfg, sampler_type=dl.TRAIN_X.SAMPLER, data_source=dataset.train_x,
            batch_size=dl.TRAIN_X.BATCH_SIZE, n_domain=dl.TRAIN_X.N_DOMAIN, n_ins=dl.TRAIN_X.N_INS,
            tfm=tfm_train, is_train=True, dataset_wrapper=dataset_wrapper)

        train_loader_u = None
        if dataset.train_u:
            u = dl.TRAIN_X if dl.TRAIN_U.SAME_AS_X else dl.TRAIN_U
            train_loader_u = build_data_loader(
                cfg, sampler_type=u.SAMPLER, data_source=dataset.train_u, batch_size=u.BATCH_SIZE,
                n_domain=u.N_DOMAIN, n_ins=u.N_INS, tfm=tfm_train, is_train=True,
                dataset_wrapper=dataset_wrapper)

        val_loader = None
        if dataset.val:
            val_loader = self._test_loader(cfg, dataset.val, tfm_test, dataset_wrapper)
        test_loader = self._test_loader(cfg, dataset.test, tfm_test, dataset_wrapper)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname

        self.dataset = dataset
        self.train_loader_x = train_loader_x
        self.train_loader_u = train_loader_u
        self.val_loader = val_loader
        self.test_loader = test_loader

        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @staticmethod
    def _test_loader(cfg, data_source, tfm, dataset_wrapper):
        return build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=data_source,
            batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm, is_train=False,
            dataset_wrapper=dataset_wrapper)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    def show_dataset_summary(self, cfg):
        """Print a borderless table: dataset name, domains, class count and split sizes."""
        dataset_name = cfg.DATASET.NAME
        source_domains = cfg.DATASET.SOURCE_DOMAINS
        target_domains = cfg.DATASET.TARGET_DOMAINS

        table = [["Dataset", dataset_name]]
        if source_domains:
            table.append(["Source", source_domains])
        if target_domains:
            table.append(["Target", target_domains])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))


class DatasetWrapper(Dataset):
    """Reads one Datum's image and returns ``{label, domain, impath, index, img[, img2...][, img0]}``.

    ``img`` is the transform's output: a tensor, or a list of K tensors when
    ``DATALOADER.K_TRANSFORMS`` = K > 1 (training only). A list/tuple of transforms gives
    ``img``, ``img2``, ``img3``, ... ``img0`` (with ``RETURN_IMG0``) is the un-augmented image.
    """

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        # Augment an image K > 1 times (only for training).
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0

        if self.k_tfm > 1 and transform is None:
            raise ValueError(
                "Cannot augment the image {} times because transform is None".format(self.k_tfm))

        interp_mode = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
        to_tensor = [Resize(cfg.INPUT.SIZE, interpolation=interp_mode), ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = Compose(to_tensor)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}

        img0 = _read_image_or_explain(item.impath)

        if self.transform is not None:
            if isinstance(self.transform, (list, tuple)):
                for i, tfm in enumerate(self.transform):
                    keyname = "img" if i == 0 else "img{}".format(i + 1)
                    output[keyname] = self._transform_image(tfm, img0)
            else:
                output["img"] = self._transform_image(self.transform, img0)
        else:
            output["img"] = img0

        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views


def _read_image_or_explain(impath):
    """``read_image`` with a one-line error naming the file instead of a bare PIL/OS error.

    The message stays on one line because a DataLoader worker ships it to the main process inside a
    traceback text, from which ``train.py`` extracts the last line.
    """
    try:
        return read_image(impath)
    # PIL reports broken files as OSError (UnidentifiedImageError, "Truncated File Read"), ValueError,
    # SyntaxError (some plugins) or DecompressionBombError.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageReadError(
            "Cannot read image file {} ({}: {}); it is missing, truncated or not an image: restore "
            "it from the original dataset archive.".format(impath, type(err).__name__, reason)
        ) from None
