"""Train/test image pipelines from ``cfg.INPUT`` (as in Dassl 0.6.3).

Each op prints one ``+ ...`` line, in a fixed order, so logs show exactly what ran.
"""
from __future__ import annotations

import random

import torch
from torchvision.transforms import (
    AutoAugment, AutoAugmentPolicy, CenterCrop, ColorJitter, Compose, GaussianBlur, Normalize,
    RandAugment, RandomApply, RandomCrop, RandomGrayscale, RandomHorizontalFlip, RandomResizedCrop,
    Resize, ToTensor,
)
from torchvision.transforms.functional import InterpolationMode
from dpl.errors import UserError

__all__ = ["AVAI_CHOICES", "INTERPOLATION_MODES", "build_transform"]

AVAI_CHOICES = [
    "random_flip", "random_resized_crop", "normalize", "instance_norm", "random_crop",
    "random_translation", "center_crop", "cutout", "imagenet_policy", "cifar10_policy",
    "svhn_policy", "randaugment", "randaugment_fixmatch", "randaugment2", "gaussian_noise",
    "colorjitter", "randomgrayscale", "gaussian_blur",
]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# Dassl's own RandAugment variants have no torchvision equivalent; no CoOp-family config uses them.
_UNSUPPORTED = ("randaugment_fixmatch", "randaugment2")


class Random2DTranslation:
    """With p = 0.5, resize to 1.125x the target size and random-crop back; else plain resize."""

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.height, self.width, self.p = height, width, p
        self.resize = Resize((height, width), interpolation=interpolation)
        enlarged = (int(round(height * 1.125)), int(round(width * 1.125)))
        self.enlarge = Resize(enlarged, interpolation=interpolation)
        self.crop = RandomCrop((height, width))

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return self.resize(img)
        return self.crop(self.enlarge(img))


class Cutout:
    """Zero ``n_holes`` square patches of side ``length`` in a (C, H, W) tensor."""

    def __init__(self, n_holes=1, length=16):
        self.n_holes, self.length = n_holes, length

    def __call__(self, img):
        h, w = img.shape[-2:]
        mask = torch.ones(h, w, dtype=img.dtype)
        for _ in range(self.n_holes):
            y, x = random.randrange(h), random.randrange(w)
            y1, y2 = max(0, y - self.length // 2), min(h, y + self.length // 2)
            x1, x2 = max(0, x - self.length // 2), min(w, x + self.length // 2)
            mask[y1:y2, x1:x2] = 0
        return img * mask


class GaussianNoise:
    """Add N(mean, std) noise to a tensor with probability ``p``."""

    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean, self.std, self.p = mean, std, p

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return img
        return img + torch.randn_like(img) * self.std + self.mean


class InstanceNormalization:
    """Standardise each channel of a (C, H, W) tensor to zero mean, unit std."""

    def __call__(self, img):
        c = img.shape[0]
        flat = img.reshape(c, -1)
        mean = flat.mean(1).view(c, 1, 1)
        std = flat.std(1).view(c, 1, 1)
        return (img - mean) / (std + 1e-8)


def build_transform(cfg, is_train=True, choices=None):
    """A torchvision ``Compose`` for training or testing (None if ``INPUT.NO_TRANSFORM``).

    ``choices`` overrides ``cfg.INPUT.TRANSFORMS``; every choice must be in ``AVAI_CHOICES``.
    """
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None

    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    for choice in choices:
        assert choice in AVAI_CHOICES, "Invalid transform choice ({}), expected to be one of {}".format(
            choice, AVAI_CHOICES)
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise UserError(
            "INPUT.INTERPOLATION must be one of {}, but got {!r}; fix it in your config.".format(
                list(INTERPOLATION_MODES), cfg.INPUT.INTERPOLATION))

    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_transform_train(cfg, choices, normalize)
    return _build_transform_test(cfg, choices, normalize)


def _build_transform_train(cfg, choices, normalize):
    print("Building transform_train")
    size = tuple(cfg.INPUT.SIZE)
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    ops = []

    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print("+ resize to {}x{}".format(size[0], size[1]))
        ops.append(Resize(size, interpolation=interp))

    if "random_translation" in choices:
        print("+ random translation")
        ops.append(Random2DTranslation(size[0], size[1], interpolation=interp))

    if "random_crop" in choices:
        print("+ random crop (padding = {})".format(cfg.INPUT.CROP_PADDING))
        ops.append(RandomCrop(size, padding=cfg.INPUT.CROP_PADDING))

    if "random_resized_crop" in choices:
        scale = tuple(cfg.INPUT.RRCROP_SCALE)
        print("+ random resized crop (size={}, scale={})".format(size, scale))
        ops.append(RandomResizedCrop(size, scale=scale, interpolation=interp))

    if "random_flip" in choices:
        print("+ random flip")
        ops.append(RandomHorizontalFlip())

    for name, policy in (("imagenet_policy", AutoAugmentPolicy.IMAGENET),
                         ("cifar10_policy", AutoAugmentPolicy.CIFAR10),
                         ("svhn_policy", AutoAugmentPolicy.SVHN)):
        if name in choices:
            print("+ {}".format(name.replace("_", " ")))
            ops.append(AutoAugment(policy))

    if "randaugment" in choices:
        n, m = cfg.INPUT.RANDAUGMENT_N, cfg.INPUT.RANDAUGMENT_M
        print("+ randaugment (n={}, m={})".format(n, m))
        ops.append(RandAugment(num_ops=n, magnitude=m))

    for name in _UNSUPPORTED:
        if name in choices:
            raise UserError(
                "Transform {!r} is not available in this Dassl subset; remove it from "
                "INPUT.TRANSFORMS or use 'randaugment'.".format(name))

    if "colorjitter" in choices:
        print("+ color jitter")
        ops.append(ColorJitter(brightness=cfg.INPUT.COLORJITTER_B, contrast=cfg.INPUT.COLORJITTER_C,
                               saturation=cfg.INPUT.COLORJITTER_S, hue=cfg.INPUT.COLORJITTER_H))

    if "randomgrayscale" in choices:
        print("+ random gray scale")
        ops.append(RandomGrayscale(p=cfg.INPUT.RGS_P))

    if "gaussian_blur" in choices:
        print("+ gaussian blur (kernel={})".format(cfg.INPUT.GB_K))
        ops.append(RandomApply([GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P))

    print("+ to torch tensor of range [0, 1]")
    ops.append(ToTensor())

    if "cutout" in choices:
        print("+ cutout (n_holes={}, length={})".format(cfg.INPUT.CUTOUT_N, cfg.INPUT.CUTOUT_LEN))
        ops.append(Cutout(cfg.INPUT.CUTOUT_N, cfg.INPUT.CUTOUT_LEN))

    if "normalize" in choices:
        print("+ normalization (mean={}, std={})".format(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD))
        ops.append(normalize)

    if "gaussian_noise" in choices:
        print("+ gaussian noise (mean={}, std={})".format(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD))
        ops.append(GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD))

    if "instance_norm" in choices:
        print("+ instance normalization")
        ops.append(InstanceNormalization())

    return Compose(ops)


def _build_transform_test(cfg, choices, normalize):
    print("Building transform_test")
    size = tuple(cfg.INPUT.SIZE)
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]

    # The smaller edge becomes max(SIZE) (aspect kept), then a centre crop to SIZE.
    print("+ resize the smaller edge to {}".format(max(size)))
    ops = [Resize(max(size), interpolation=interp)]
    print("+ {}x{} center crop".format(size[0], size[1]))
    ops.append(CenterCrop(size))

    print("+ to torch tensor of range [0, 1]")
    ops.append(ToTensor())

    if "normalize" in choices:
        print("+ normalization (mean={}, std={})".format(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD))
        ops.append(normalize)

    if "instance_norm" in choices:
        print("+ instance normalization")
        ops.append(InstanceNormalization())

    return Compose(ops)
