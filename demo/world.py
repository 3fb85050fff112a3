"""A procedurally generated image–caption world for the offline demo (no downloads, CPU only).

Each image is one coloured shape (6 colours x 6 kinds x 2 sizes, random position and a small
rotation) on a grey background with one of four low-contrast textures and pixel noise. Every image
comes with the attributes that generated it, so captions such as "a photo of a small red
triangle." are exact. Some (colour, shape) combinations are HELD OUT: the pretraining world never
draws them, the demo datasets do, so zero-shot accuracy on them measures composition.

Drawing is vectorised over the batch (signed-distance masks, no per-pixel Python) and is a pure
function of a ``torch.Generator``: the same seed gives bit-identical images.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from PIL import Image

from dpl.io import atomic_write_json

IMAGE_SIZE = 32

# Saturated object colours (RGB in [0, 1]); backgrounds are grey, so colour never comes from them.
COLORS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.88, 0.13, 0.13),
    "green": (0.15, 0.72, 0.20),
    "blue": (0.16, 0.30, 0.92),
    "yellow": (0.95, 0.86, 0.12),
    "purple": (0.58, 0.20, 0.80),
    "orange": (0.98, 0.52, 0.08),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "diamond")
# Object radius as a fraction of the image side, (low, high).
SIZES: Dict[str, Tuple[float, float]] = {"small": (0.14, 0.18), "large": (0.27, 0.33)}
BACKGROUNDS: Tuple[str, ...] = ("plain", "striped", "checkered", "blotchy")
POSITION_JITTER = 0.12  # max offset of the object centre from the image centre (fraction of side)

# Never drawn in pretraining: two per colour and two per shape, so every colour and every shape is
# still seen with four partners. Rows: colour i with shape i, and with shape i + 2 (mod 6).
HELD_OUT: Tuple[Tuple[str, str], ...] = (
    ("red", "triangle"), ("red", "circle"),
    ("green", "cross"), ("green", "square"),
    ("blue", "circle"), ("blue", "ring"),
    ("yellow", "square"), ("yellow", "diamond"),
    ("purple", "ring"), ("purple", "triangle"),
    ("orange", "diamond"), ("orange", "cross"),
)

COLOR_NAMES: Tuple[str, ...] = tuple(COLORS)
SIZE_NAMES: Tuple[str, ...] = tuple(SIZES)
_ROW_SHAPES = tuple(shape for _, shape in HELD_OUT[::2])  # colour i's first held-out shape


@dataclass
class Scenes:
    """Attributes of a batch of n images (index tensors into the name tuples above)."""

    color: torch.Tensor       # (n,) long, index into COLOR_NAMES
    shape: torch.Tensor       # (n,) long, index into SHAPES
    size: torch.Tensor        # (n,) long, index into SIZE_NAMES
    background: torch.Tensor  # (n,) long, index into BACKGROUNDS

    def __len__(self) -> int:
        return self.color.shape[0]


def fingerprint() -> dict:
    """The world's defining constants (part of the pretrained checkpoint's cache key)."""
    return {"image_size": IMAGE_SIZE, "colors": COLORS, "shapes": SHAPES, "sizes": SIZES,
            "backgrounds": BACKGROUNDS, "position_jitter": POSITION_JITTER, "held_out": HELD_OUT}


def combo_index(color: str, shape: str) -> int:
    """Flat index of a (colour, shape) pair in [0, len(COLORS) * len(SHAPES))."""
    return COLOR_NAMES.index(color) * len(SHAPES) + SHAPES.index(shape)


def seen_combos() -> torch.Tensor:
    """(k,) long: flat indices of the (colour, shape) pairs the pretraining world draws."""
    held = {combo_index(c, s) for c, s in HELD_OUT}
    return torch.tensor([i for i in range(len(COLORS) * len(SHAPES)) if i not in held])


def sample_scenes(n: int, generator: torch.Generator, combos: Optional[torch.Tensor] = None) -> Scenes:
    """Draw n scenes; ``combos`` (flat (colour, shape) indices) restricts the pairs, None = all."""
    if combos is None:
        combos = torch.arange(len(COLORS) * len(SHAPES))
    pick = combos[torch.randint(len(combos), (n,), generator=generator)]
    return Scenes(
        color=pick // len(SHAPES),
        shape=pick % len(SHAPES),
        size=torch.randint(len(SIZES), (n,), generator=generator),
        background=torch.randint(len(BACKGROUNDS), (n,), generator=generator),
    )


STYLES: Tuple[str, ...] = ("standard", "sketch", "clutter", "jitter")


def render(scenes: Scenes, generator: torch.Generator, image_size: int = IMAGE_SIZE,
           style: str = "standard") -> torch.Tensor:
    """Draw the scenes. Returns (n, 3, image_size, image_size) uint8.

    All geometry is in units of the image side, so any image_size draws the same world.
    style: "standard" (what pretraining sees) or a shifted rendering for domain generalisation:
    "sketch" (only a 1.5-pixel outline in the object's colour, on a plain light background),
    "clutter" (backgrounds of high-contrast coloured blotches never seen in pretraining),
    "jitter" (strong colour jitter of the object and four times the pixel noise).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    n, s = len(scenes), image_size
    g = generator
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s          # pixel centres in (0, 1)
    ys, xs = coords.view(1, s, 1), coords.view(1, 1, s)

    lo = torch.tensor([SIZES[k][0] for k in SIZE_NAMES])[scenes.size]
    hi = torch.tensor([SIZES[k][1] for k in SIZE_NAMES])[scenes.size]
    radius = lo + (hi - lo) * torch.rand(n, generator=g)                # (n,)
    # Centre within +-POSITION_JITTER of the middle, and rotated corners inside the image.
    reach = torch.clamp(0.5 - 1.2 * radius - 1.0 / s, max=POSITION_JITTER)
    cx = 0.5 + reach * (2 * torch.rand(n, generator=g) - 1)
    cy = 0.5 + reach * (2 * torch.rand(n, generator=g) - 1)
    angle = (torch.rand(n, generator=g) - 0.5) * math.radians(24)      # +-12 degrees

    # Object frame, in units of the radius: (n, s, s) each.
    dx, dy = xs - cx.view(n, 1, 1), ys - cy.view(n, 1, 1)
    cos, sin = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    r = radius.view(n, 1, 1)
    u, v = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r
    sdf = torch.empty(n, s, s)
    for k, name in enumerate(SHAPES):                                   # each image: its own shape
        idx = (scenes.shape == k).nonzero()[:, 0]
        sdf[idx] = _SDF[name](u[idx], v[idx])
    distance = sdf * r * s                                              # pixels, < 0 inside
    if style == "sketch":                                               # a band just inside the edge
        coverage = (0.5 - ((distance + 0.75).abs() - 0.75)).clamp(0, 1)
    else:
        coverage = (0.5 - distance).clamp(0, 1)                         # 1-pixel anti-aliased edge

    rgb = torch.tensor([COLORS[c] for c in COLOR_NAMES])[scenes.color]  # (n, 3)
    rgb = rgb * (0.85 + 0.2 * torch.rand(n, 1, generator=g)) + 0.05 * torch.randn(n, 3, generator=g)
    background = _backgrounds(scenes.background, g, s)                 # (n, 3, s, s)
    noise = 0.025
    if style == "sketch":
        background = (0.8 + 0.1 * torch.rand(n, 1, 1, 1, generator=g)).expand(n, 3, s, s)
    elif style == "clutter":
        blotches = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(s, s), mode="bilinear",
                                 align_corners=False)
        background = 0.2 + 0.6 * blotches
    elif style == "jitter":
        rgb = rgb * (0.6 + 0.6 * torch.rand(n, 1, generator=g)) + 0.15 * torch.randn(n, 3, generator=g)
        noise = 0.1
    image = background * (1 - coverage[:, None]) + rgb.view(n, 3, 1, 1) * coverage[:, None]
    image = image + noise * torch.randn(n, 3, s, s, generator=g)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _circle(u, v):
    return torch.sqrt(u * u + v * v) - 0.9


def _ring(u, v):
    return (torch.sqrt(u * u + v * v) - 0.72).abs() - 0.28


def _square(u, v):
    return torch.maximum(u.abs(), v.abs()) - 0.8


def _diamond(u, v):
    return (u.abs() + v.abs()) / math.sqrt(2) - 0.75


def _cross(u, v):
    au, av = u.abs(), v.abs()
    return torch.minimum(torch.maximum(au - 1.0, av - 0.32), torch.maximum(au - 0.32, av - 1.0))


def _triangle(u, v):
    # Apex up (image y grows downwards): three edge normals, inradius 0.55.
    return torch.maximum(torch.maximum(v, 0.866 * u - 0.5 * v), -0.866 * u - 0.5 * v) - 0.55


_SDF = {"circle": _circle, "square": _square, "triangle": _triangle,
        "cross": _cross, "ring": _ring, "diamond": _diamond}


def _backgrounds(kind: torch.Tensor, g: torch.Generator, s: int) -> torch.Tensor:
    """Grey, slightly tinted backgrounds with a low-contrast texture. Returns (n, 3, s, s) float."""
    n = kind.shape[0]
    coords = torch.arange(s, dtype=torch.float32)
    ys, xs = coords.view(1, s, 1), coords.view(1, 1, s)
    # Every texture is drawn for every image (cheap at this size) so the RNG stream does not depend
    # on which kinds were sampled.
    phi = torch.rand(n, 1, 1, generator=g) * math.pi
    period = 4 + 6 * torch.rand(n, 1, 1, generator=g)
    stripes = torch.sin(2 * math.pi * (xs * phi.cos() + ys * phi.sin()) / period)
    cell = torch.randint(3, 7, (n, 1, 1), generator=g)
    checker = ((torch.div(xs, cell, rounding_mode="floor") + torch.div(ys, cell, rounding_mode="floor")) % 2) * 2 - 1
    blotches = F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=(s, s), mode="bilinear",
                             align_corners=False)[:, 0]
    plain = torch.zeros(n, s, s)
    texture = torch.stack([plain, stripes, checker, blotches])          # (4, n, s, s)
    texture = texture.gather(0, kind.view(1, n, 1, 1).expand(1, n, s, s))[0]

    grey = 0.25 + 0.35 * torch.rand(n, 1, 1, 1, generator=g)
    tint = 0.025 * torch.randn(n, 3, 1, 1, generator=g)
    contrast = 0.05 + 0.07 * torch.rand(n, 1, 1, 1, generator=g)
    return grey + tint + contrast * texture[:, None]


# --------------------------------------------------------------------------- demo datasets

ATTRIBUTE_NAMES: Dict[str, Tuple[str, ...]] = {
    "color": COLOR_NAMES, "shape": SHAPES, "size": SIZE_NAMES, "background": BACKGROUNDS}


@dataclass(frozen=True)
class DemoTask:
    """A few-shot classification task in the world, written to disk in CoOp's format.

    Each class fixes the attributes named in ``attributes`` (its tuple in ``classes`` gives their
    values, in that order); every other attribute is drawn at random per image.
    """

    name: str                               # registered dataset name and split file stem
    dataset_dir: str                        # folder under DATASET.ROOT
    classes: Tuple[Tuple[str, ...], ...]    # attribute values per label, in label order
    per_class: Tuple[int, int, int] = (24, 8, 30)  # train, val, test images per class
    seed: int = 0                           # the dataset is fixed; cfg.SEED only picks the shots
    attributes: Tuple[str, ...] = ("color", "shape")
    classname: str = "{color} {shape}"      # class name from the attribute values
    style: str = "standard"                 # render style (a shifted rendering for DG targets)
    shift_of: str = ""                      # the task whose classes a shifted rendering shares
    about: str = ""                         # one line for docs and the benchmark tables

    @property
    def classnames(self) -> Tuple[str, ...]:
        return tuple(self.classname.format(**dict(zip(self.attributes, values)))
                     for values in self.classes)

    @property
    def held_out_labels(self) -> Tuple[int, ...]:
        """Labels of the classes whose (colour, shape) pair the pretraining world never drew."""
        if set(self.attributes) != {"color", "shape"}:
            return ()
        pairs = [tuple(dict(zip(self.attributes, v))[a] for a in ("color", "shape")) for v in self.classes]
        return tuple(i for i, pair in enumerate(pairs) if pair in HELD_OUT)


_ALL_PAIRS = tuple((c, s) for c in COLOR_NAMES for s in SHAPES)
# 12 classes, half of them held out: colour i with shape i (held out) and with shape i + 1
# (seen), so every shape is once novel and once familiar.
_COMBOS = tuple(pair for i, c in enumerate(COLOR_NAMES)
                for pair in ((c, _ROW_SHAPES[i]), (c, _ROW_SHAPES[(i + 1) % len(_ROW_SHAPES)])))

TASKS: Dict[str, DemoTask] = {
    # Every colour x shape pair; the 12 held-out pairs split 6 / 6 between the base and new halves.
    "DemoShapes": DemoTask(name="DemoShapes", dataset_dir="demo_shapes", classes=_ALL_PAIRS,
                           about="colour x shape, 36 classes, 12 held out from pretraining"),
    "DemoCombos": DemoTask(name="DemoCombos", dataset_dir="demo_combos", classes=_COMBOS,
                           per_class=(24, 8, 50),
                           about="colour x shape, 12 classes, 6 held out from pretraining"),
    "DemoColors": DemoTask(name="DemoColors", dataset_dir="demo_colors",
                           classes=tuple((c,) for c in COLOR_NAMES), attributes=("color",),
                           classname="{color} object", per_class=(24, 8, 50),
                           about="colour only, 6 classes (any shape, size, background)"),
    "DemoSizeShapes": DemoTask(name="DemoSizeShapes", dataset_dir="demo_sizeshapes",
                               classes=tuple((z, s) for z in SIZE_NAMES for s in SHAPES),
                               attributes=("size", "shape"), classname="{size} {shape}",
                               per_class=(24, 8, 40),
                               about="size x shape, 12 classes (any colour)"),
    "DemoTextures": DemoTask(name="DemoTextures", dataset_dir="demo_textures",
                             classes=tuple((b,) for b in BACKGROUNDS), attributes=("background",),
                             classname="{background} background", per_class=(24, 8, 60),
                             about="background texture, 4 classes (low contrast, hard)"),
}
# Shifted renderings of DemoCombos (same classes) for domain generalisation, in the roles of
# ImageNet-Sketch, -R and -A: never used for training, only as evaluation targets.
for _style, _what in (("sketch", "outline-only drawing"),
                      ("clutter", "new high-contrast coloured backgrounds"),
                      ("jitter", "strong colour jitter and pixel noise")):
    _name = "DemoCombos" + _style.capitalize()
    TASKS[_name] = replace(TASKS["DemoCombos"], name=_name, dataset_dir=f"demo_combos_{_style}",
                           per_class=(4, 2, 50), style=_style, shift_of="DemoCombos",
                           about=f"DemoCombos, {_what}")
FEWSHOT_TASKS: Tuple[str, ...] = tuple(n for n, t in TASKS.items() if not t.shift_of)
SHIFTED_TASKS: Tuple[str, ...] = tuple(n for n, t in TASKS.items() if t.shift_of)
SPLITS = ("train", "val", "test")


def task_split(task: DemoTask, split: str, seed: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The images of one split, in memory. Returns ((n, 3, S, S) uint8, (n,) long labels).

    Labels are grouped by class (label order). Deterministic in (task, split, seed); seed None
    means ``task.seed``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    seed = task.seed if seed is None else seed
    gen = torch.Generator().manual_seed(_stream_seed(task.name, split, seed))
    n_per = task.per_class[SPLITS.index(split)]
    labels = torch.arange(len(task.classes)).repeat_interleave(n_per)
    values = {}
    for attribute, names in ATTRIBUTE_NAMES.items():    # fixed by the class, or drawn per image
        if attribute in task.attributes:
            column = task.attributes.index(attribute)
            values[attribute] = torch.tensor([names.index(v[column]) for v in task.classes])[labels]
        else:
            values[attribute] = torch.randint(len(names), (len(labels),), generator=gen)
    return render(Scenes(**values), gen, style=task.style), labels


def _stream_seed(*parts) -> int:
    # A stable 63-bit seed per stream (Python's hash() of str is salted per process).
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def write_demo_dataset(root: str, name: str = "DemoShapes", seed: Optional[int] = None) -> str:
    """Write a demo task as real PNG files plus ``split_zhou_<name>.json`` (CoOp's format).

    Layout: ``<root>/<dataset_dir>/images/<class_folder>/<split>_<i>.png`` and
    ``<root>/<dataset_dir>/split_zhou_<name>.json`` (written last, atomically, so its presence
    means the dataset is complete). Returns the dataset folder.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown demo dataset {name!r}; use one of {', '.join(TASKS)}.")
    task = TASKS[name]
    dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(root)), task.dataset_dir)
    image_dir = os.path.join(dataset_dir, "images")
    split = {}
    for part in SPLITS:
        images, labels = task_split(task, part, seed)
        pixels = images.permute(0, 2, 3, 1).numpy()          # (n, S, S, 3) for PIL
        entries, counters = [], {}
        for array, label in zip(pixels, labels.tolist()):
            classname = task.classnames[label]
            folder = classname.replace(" ", "_")
            i = counters[label] = counters.get(label, -1) + 1
            relpath = f"{folder}/{part}_{i:04d}.png"
            os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
            Image.fromarray(array).save(os.path.join(image_dir, relpath))
            entries.append([relpath, label, classname])
        split[part] = entries
    atomic_write_json(os.path.join(dataset_dir, f"split_zhou_{task.name}.json"), split, indent=4)
    return dataset_dir
