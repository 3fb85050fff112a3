"""One image loader for training, evaluation, prediction and Grad-CAM: any PIL image -> 8-bit RGB.

``PIL.Image.convert("RGB")`` alone gets three kinds of files wrong, silently:

* High bit depth grayscale (16-bit PNG/TIFF, 32-bit integer or float TIFF): PIL clips the values
  to 0..255, so a 16-bit image becomes almost pure white. Here each mode is rescaled by the range
  of its type, the same for every image (no per-image stretching, so brightness still means the
  same across a dataset):

  ===============================  ==========================  =====================
  mode                             full range (-> 0..255)      typical source
  ===============================  ==========================  =====================
  ``I;16``, ``I;16L``, ``I;16B``,  0..65535                    16-bit PNG/TIFF
  ``I;16N``
  ``I`` (32-bit integer)           0..65535, clipped           16-bit PNG in some
                                                               Pillow versions
  ``F`` (32-bit float)             0.0..1.0, clipped           float TIFF
  ===============================  ==========================  =====================

  ``I`` is PIL's mode for 16-bit PNGs in older Pillow versions, so it is read as 16-bit data;
  ``F`` follows the usual convention of float images (0.0 black, 1.0 white).
* Transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, and palette or grayscale
  images with a transparent colour): ``convert`` drops alpha, so the hidden colour behind
  transparent pixels (often black, sometimes garbage) shows. Here the image is composited on a
  neutral mid-grey background, ``BACKGROUND`` = (128, 128, 128).
* EXIF orientation (phone photos): the pixels are stored sideways and a viewer rotates them; the
  orientation tag is applied here (``ImageOps.exif_transpose``).

Every other mode (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ...) goes through ``convert("RGB")``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

__all__ = ["BACKGROUND", "HIGH_DEPTH_RANGE", "SUPPORTED_MODES", "to_rgb", "load_rgb"]

BACKGROUND = (128, 128, 128)  # neutral mid-grey behind transparent pixels
# The value that becomes 255 for each high bit depth grayscale mode (0 stays 0).
HIGH_DEPTH_RANGE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535,
                    "I": 65535, "F": 1.0}
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Modes PIL converts to RGB itself.
PLAIN_MODES = ("RGB", "RGBX", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV")
SUPPORTED_MODES = frozenset(PLAIN_MODES) | set(HIGH_DEPTH_RANGE) | set(ALPHA_MODES)
EXIF_ORIENTATION = 0x0112


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an 8-bit RGB image: orientation applied, high bit depths rescaled, alpha composited.

    Returns ``img`` itself when it is already an upright RGB image (no copy).
    """
    if img.mode not in SUPPORTED_MODES:
        raise ValueError(f"pixel mode {img.mode!r} cannot be converted to RGB (supported: "
                         f"{', '.join(sorted(SUPPORTED_MODES))})")
    img = _upright(img)
    if img.mode == "RGB":
        return img
    if img.mode in HIGH_DEPTH_RANGE:
        return _rescaled_gray(img).convert("RGB")
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """Read the image file ``path`` as an 8-bit RGB image (see ``to_rgb``), fully loaded: the file is
    closed when this returns. PIL's errors (OSError, ValueError, ...) pass through."""
    with Image.open(path) as img:
        img.load()
        rgb = to_rgb(img)
        return img.copy() if rgb is img else rgb


def _upright(img: Image.Image) -> Image.Image:
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: keep the pixels as stored
        return img
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img)


def _rescaled_gray(img: Image.Image) -> Image.Image:
    """A high bit depth grayscale image as mode ``L``, ``HIGH_DEPTH_RANGE[mode]`` -> 255."""
    full = HIGH_DEPTH_RANGE[img.mode]
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
    scaled = np.clip(values * (255.0 / full), 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8))
