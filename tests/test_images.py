"""One image loader (dpl/images.py) for training, evaluation, prediction and Grad-CAM (issue #22 §5,
#23 case 3): 16-bit and float grayscale rescaled by their type's range, transparency composited on
mid-grey, palette -> RGB, EXIF orientation applied. Every test builds an image of one mode, reads it
the way a code path does and compares the tensor with the one expected."""
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import ToTensor

from dassl.data.datasets import Datum
from dassl.data.data_manager import DatasetWrapper
from dassl.utils import read_image
from dpl.classifier import PromptClassifier
from dpl.gradcam import prepare_image
from dpl.images import BACKGROUND, load_rgb, to_rgb

GREY = np.array(BACKGROUND, dtype=np.float64)
H, W = 6, 8


def u16():
    """A 16-bit ramp over the whole range, with the values where rounding matters."""
    values = np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)
    values[0, :4] = [0, 128, 129, 65535]
    return values


def gray_rgb(gray8):
    return np.repeat(gray8[..., None], 3, axis=2).astype(np.uint8)


def png16(path):
    Image.fromarray(u16()).save(path)  # mode I;16
    return gray_rgb(np.rint(u16() / 257.0))


def tiff16_big_endian(path):
    Image.frombytes("I;16B", (W, H), u16().astype(">u2").tobytes()).save(path)
    return gray_rgb(np.rint(u16() / 257.0))


def tiff_float(path):
    values = np.linspace(-0.2, 1.2, H * W, dtype=np.float32).reshape(H, W)  # out of range is clipped
    Image.fromarray(values).save(path)
    return gray_rgb(np.rint(np.clip(values.astype(np.float64), 0, 1) * 255))


def int32(path):
    values = u16().astype(np.int32)
    values[1, 0] = 70000  # beyond 16 bits: clipped to white
    Image.fromarray(values).save(path)  # a 32-bit integer TIFF (mode I)
    return gray_rgb(np.rint(np.clip(values, 0, 65535) / 257.0))


def _alpha():
    return np.tile(np.array([0, 64, 128, 255], dtype=np.uint8), (H, W // 4))


def _composite(rgb, alpha):
    a = alpha[..., None] / 255.0
    return np.rint(rgb * a + GREY * (1 - a)).astype(np.uint8)


def rgba(path):
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 250, 10, 0  # hidden colour under alpha 0 is red
    Image.fromarray(np.dstack([rgb, _alpha()])).save(path)
    return _composite(rgb.astype(np.float64), _alpha())


def la(path):
    lum = np.full((H, W), 20, dtype=np.uint8)
    Image.merge("LA", [Image.fromarray(lum), Image.fromarray(_alpha())]).save(path)
    return _composite(np.repeat(lum[..., None], 3, axis=2).astype(np.float64), _alpha())


def palette_transparent(path):
    index = np.tile(np.array([0, 1], dtype=np.uint8), (H, W // 2))
    img = Image.fromarray(index).convert("P")
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0 red (transparent), 1 blue
    img.save(path, transparency=0)
    expected = np.zeros((H, W, 3), dtype=np.uint8)
    expected[index == 0] = BACKGROUND
    expected[index == 1] = (0, 0, 255)
    return expected


def palette_opaque(path):
    index = np.tile(np.array([0, 1], dtype=np.uint8), (H, W // 2))
    img = Image.fromarray(index).convert("P")
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.save(path)
    expected = np.zeros((H, W, 3), dtype=np.uint8)
    expected[index == 0], expected[index == 1] = (255, 0, 0), (0, 0, 255)
    return expected


def jpeg_exif_6(path):
    """Stored landscape (W x H) with orientation 6: a viewer rotates it 90° clockwise."""
    pixels = np.zeros((H * 8, W * 8, 3), dtype=np.uint8)
    pixels[:, : W * 4] = (230, 30, 30)  # left half red, right half blue as stored
    pixels[:, W * 4:] = (30, 30, 230)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    with Image.open(path) as img:
        stored = np.asarray(img.convert("RGB"))
    return np.rot90(stored, k=-1)  # 90° clockwise: the stored left (red) ends on top


MODES = {"png_16bit.png": png16, "tiff_16bit_be.tif": tiff16_big_endian, "tiff_float.tif": tiff_float,
         "int32.tif": int32, "rgba.png": rgba, "la.png": la, "palette_transparent.png": palette_transparent,
         "palette.png": palette_opaque, "exif6.jpg": jpeg_exif_6}


@pytest.fixture(params=sorted(MODES))
def image_file(request, tmp_path):
    path = str(tmp_path / request.param)
    expected = MODES[request.param](path)
    return path, expected


def tensor(rgb):
    return ToTensor()(np.ascontiguousarray(rgb))


def test_every_mode_is_read_as_expected_by_the_loader(image_file):
    path, expected = image_file
    img = load_rgb(path)
    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img), expected)


def test_training_and_evaluation_read_images_the_same_way(image_file):
    """dassl's read_image and the data loader's un-augmented tensor (what every trainer reads)."""
    path, expected = image_file
    assert np.array_equal(np.asarray(read_image(path)), expected)
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.DATALOADER.RETURN_IMG0 = True
    cfg.INPUT.SIZE = expected.shape[:2]
    cfg.INPUT.TRANSFORMS = ()
    item = DatasetWrapper(cfg, [Datum(impath=path, label=0)], transform=None)[0]
    assert torch.allclose(item["img0"], tensor(expected), atol=1 / 255 + 1e-6)  # resize to the same size


def test_prediction_reads_files_and_pil_images_the_same_way(image_file):
    """tools/predict.py (files) and PromptClassifier.predict (PIL images a user opened)."""
    from tools.predict import predict_files

    path, expected = image_file
    seen = []

    class Recorder:
        classnames = ["a", "b"]

        def predict(self, images, batch_size):
            seen.extend(images)
            return torch.full((len(images), 2), 0.5)

    predict_files(Recorder(), [path], topk=1, batch_size=4, progress=False)
    assert np.array_equal(np.asarray(seen[0]), expected)

    batches = []
    fake = types.SimpleNamespace(transform=ToTensor(), model=types.SimpleNamespace(classnames=["a", "b"]),
                                 logits=lambda batch: batches.append(batch) or torch.zeros(len(batch), 2))
    with Image.open(path) as opened:  # as a user would pass it: not converted
        PromptClassifier.predict(fake, opened)
    assert torch.equal(batches[0][0], tensor(expected))


def test_gradcam_prepares_images_like_prediction(image_file):
    path, expected = image_file
    size = min(expected.shape[:2])
    with Image.open(path) as opened:
        got = prepare_image(opened, size, mean=(0, 0, 0), std=(1, 1, 1))
    want = prepare_image(Image.fromarray(expected), size, mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.equal(got, want)


def test_sixteen_bit_is_no_longer_white_and_rgb_is_untouched():
    """The old conversion made almost every pixel of a 16-bit ramp pure white."""
    img = Image.fromarray(u16())
    assert (np.asarray(img.convert("RGB")) == 255).mean() > 0.9  # PIL's own conversion
    assert (np.asarray(to_rgb(img)) == 255).mean() < 0.05
    rgb = Image.fromarray(np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3))
    assert to_rgb(rgb) is rgb


def test_an_unsupported_mode_is_named():
    img = Image.new("I;16", (2, 2))
    weird = types.SimpleNamespace(mode="BGR;15", info={})
    with pytest.raises(ValueError, match="BGR;15"):
        to_rgb(weird)
    assert np.array_equal(np.asarray(to_rgb(img)), np.zeros((2, 2, 3), dtype=np.uint8))
