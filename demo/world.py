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

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

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

# Never drawn in pretraining; one per colour and one per shape, so every colour and every shape is
# still seen with five partners.
HELD_OUT: Tuple[Tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "cross"),
    ("blue", "circle"),
    ("yellow", "square"),
    ("purple", "ring"),
    ("orange", "diamond"),
)

COLOR_NAMES: Tuple[str, ...] = tuple(COLORS)
SIZE_NAMES: Tuple[str, ...] = tuple(SIZES)


@dataclass
class Scenes:
    """Attributes of a batch of n images (index tensors into the name tuples above)."""

    color: torch.Tensor       # (n,) long, index into COLOR_NAMES
    shape: torch.Tensor       # (n,) long, index into SHAPES
    size: torch.Tensor        # (n,) long, index into SIZE_NAMES
    background: torch.Tensor  # (n,) long, index into BACKGROUNDS

    def __len__(self) -> int:
        return self.color.shape[0]


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


def render(scenes: Scenes, generator: torch.Generator, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Draw the scenes. Returns (n, 3, image_size, image_size) uint8.

    All geometry is in units of the image side, so any image_size draws the same world.
    """
    n, s = len(scenes), image_size
    g = generator
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s          # pixel centres in (0, 1)
    ys, xs = coords.view(1, s, 1), coords.view(1, 1, s)

    lo = torch.tensor([SIZES[k][0] for k in SIZE_NAMES])[scenes.size]
    hi = torch.tensor([SIZES[k][1] for k in SIZE_NAMES])[scenes.size]
    radius = lo + (hi - lo) * torch.rand(n, generator=g)                # (n,)
    margin = 1.2 * radius + 1.0 / s                                     # rotated corners stay inside
    cx = margin + (1 - 2 * margin) * torch.rand(n, generator=g)
    cy = margin + (1 - 2 * margin) * torch.rand(n, generator=g)
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
    coverage = (0.5 - sdf * r * s).clamp(0, 1)                          # 1-pixel anti-aliased edge

    rgb = torch.tensor([COLORS[c] for c in COLOR_NAMES])[scenes.color]  # (n, 3)
    rgb = rgb * (0.85 + 0.2 * torch.rand(n, 1, generator=g)) + 0.05 * torch.randn(n, 3, generator=g)
    background = _backgrounds(scenes.background, g, s)                 # (n, 3, s, s)
    image = background * (1 - coverage[:, None]) + rgb.view(n, 3, 1, 1) * coverage[:, None]
    image = image + 0.025 * torch.randn(n, 3, s, s, generator=g)
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
    texture = torch.stack([plain, stripes, checker.float().expand(n, s, s), blotches])  # (4, n, s, s)
    texture = texture.gather(0, kind.view(1, n, 1, 1).expand(1, n, s, s))[0]

    grey = 0.25 + 0.35 * torch.rand(n, 1, 1, 1, generator=g)
    tint = 0.025 * torch.randn(n, 3, 1, 1, generator=g)
    contrast = 0.05 + 0.07 * torch.rand(n, 1, 1, 1, generator=g)
    return grey + tint + contrast * texture[:, None]
