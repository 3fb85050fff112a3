"""Grad-CAM maps of CLIP's ViT image tower, prompted or not (paper Fig. 3).

Works on any model with the DPL model protocol (``encode_text()``, ``forward(images,
text_features=None)``, ``set_classnames``), e.g. ``dpl.model.DPLCLIP`` or a baseline, as long as it
contains an open_clip-style ViT image tower.

Where the map is read: ``block=k`` uses the residual stream *entering* image block k, i.e. the output
of block k-1 (for k = 0, the ``ln_pre`` output): the tokens that block k attends over. The output of
the last block itself is useless for Grad-CAM: CLIP reads out only the CLS token there, so the
gradient at every patch token is exactly zero. The default ``block=-1`` (the stream entering the last
block) is the usual "last layer" choice for ViT Grad-CAM.

Capture point: a forward pre-hook on ``resblocks[k].ln_1``. Its first call with a 3-D token tensor is
the stream, both in open_clip's own block forward and in our functional walk (``dpl/attention.py``
calls ``ln_1`` on the stream first, then on 2-D prompt tensors). Extra prompt tokens after
CLS + patches (in-sequence prompts) are ignored: only the ``grid²`` patch tokens enter the map.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms

from dpl.encoders import is_vit
from dpl.images import to_rgb
from dpl.text_inputs import class_prompts, eot_inputs, tokenize
from dpl.errors import UserError

CLIP_MEAN = tuple(OPENAI_DATASET_MEAN)
CLIP_STD = tuple(OPENAI_DATASET_STD)
CAM_COLORMAP = "jet"


class GradCamError(UserError):
    """The model or the requested block cannot give a Grad-CAM map."""


# ----------------------------------------------------------------------------------------------
# The image tower and its geometry
# ----------------------------------------------------------------------------------------------
def find_image_tower(model: nn.Module) -> nn.Module:
    """The first open_clip-style ViT (conv1, class_embedding, transformer, ...) inside ``model``."""
    for module in model.modules():
        if is_vit(module):
            return module
    raise GradCamError(f"{type(model).__name__} holds no ViT image tower; Grad-CAM needs patch "
                       "tokens, so use a ViT backbone (e.g. ViT-B/16), not a ResNet.")


def vit_grid(visual: nn.Module) -> int:
    """Patches per side: the positional embedding holds 1 + grid² rows (CLS + patches)."""
    num_patches = visual.positional_embedding.shape[0] - 1
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise GradCamError(f"The image tower has {num_patches} patch positions, not a square "
                           "grid; Grad-CAM supports square ViT grids only.")
    return grid


def vit_input_size(visual: nn.Module) -> int:
    """Input side in pixels = grid × patch stride."""
    return vit_grid(visual) * int(visual.conv1.stride[0])


# ----------------------------------------------------------------------------------------------
# Class text
# ----------------------------------------------------------------------------------------------
def set_class_text(model: nn.Module, classnames: Sequence[str], template: Optional[str] = None) -> None:
    """Point the model's class inputs at ``classnames``.

    template None: the model's own text input (``model.set_classnames``). With a template, a DPL
    model (``token_embeddings`` / ``eot_index`` class buffers, as ``DPLCLIP``) reads
    ``template.format(name)`` instead. Models that build their own class sentence around learned
    context (the baselines: ``prompt_learner.class_template``) keep it.
    """
    model.set_classnames(list(classnames))
    own_sentence = hasattr(getattr(model, "prompt_learner", None), "class_template")
    if template is None or own_sentence or not hasattr(model, "token_embeddings"):
        return
    encoder = model.text_encoder
    ids = tokenize(class_prompts(template, classnames), encoder.context_length)
    with torch.no_grad():
        emb, eot = eot_inputs(encoder.token_embedding, ids, getattr(model, "truncate_text", True))
    # Same buffers (and dtype) as DPLCLIP.set_classnames builds, from another sentence.
    model.token_embeddings = emb.to(model.token_embeddings.device, model.token_embeddings.dtype)
    model.eot_index = eot.to(model.token_embeddings.device)


# ----------------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------------
def grad_cam(model: nn.Module, images: torch.Tensor, class_index: int = 0, block: int = -1,
             text_features: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Grad-CAM of the logit of class ``class_index`` for each image.

    images: (B, 3, H, W), preprocessed for the model. block: image block whose *input* stream is
    used (negative counts from the end; see the module docstring). text_features: (C, D) from
    ``model.encode_text()`` (computed here if None).
    Returns (B, H, W) maps in [0, 1] (all zero where no patch has a positive contribution).
    """
    visual = find_image_tower(model)
    resblocks = visual.transformer.resblocks
    k = _block_index(block, len(resblocks))
    grid = vit_grid(visual)
    n_real, batch = 1 + grid * grid, images.shape[0]
    captured: List[torch.Tensor] = []

    def keep_stream(_module, args):
        x = args[0]
        if not captured and _is_stream(x, batch, n_real):
            captured.append(x)

    handle = resblocks[k].ln_1.register_forward_pre_hook(keep_stream)
    try:
        if text_features is None:
            with torch.no_grad():
                text_features = model.encode_text()
        with torch.enable_grad():
            # Frozen CLIP has no parameter requiring grad: the input does, so a graph exists.
            images = images.detach().clone().requires_grad_(True)
            logits = model(images, text_features=text_features)             # (B, C)
            if not captured:
                raise GradCamError(f"image block {k} never received a (batch, tokens, width) "
                                   "input; the model does not run its ViT blocks through `ln_1`.")
            # Images do not interact, so one backward of the summed logits gives every image's own.
            (grads,) = torch.autograd.grad(logits[:, class_index].sum(), captured[0])
    finally:
        handle.remove()
    acts = _batch_first(captured[0].detach(), batch)[:, 1:n_real].float()   # (B, grid², W)
    grads = _batch_first(grads, batch)[:, 1:n_real].float()
    weights = grads.mean(dim=1, keepdim=True)                                # (B, 1, W)
    cam = F.relu((acts * weights).sum(dim=-1)).view(batch, 1, grid, grid)
    cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    return _unit_range(cam[:, 0])


def mapped_block(model: nn.Module, block: int) -> Tuple[int, int]:
    """(k, number of image blocks): ``grad_cam(model, ..., block=block)`` maps the tokens entering
    image block k (GradCamError if ``block`` is out of range)."""
    num_blocks = len(find_image_tower(model).transformer.resblocks)
    return _block_index(block, num_blocks), num_blocks


def _block_index(block: int, num_blocks: int) -> int:
    if not -num_blocks <= block < num_blocks:
        raise GradCamError(f"block {block} is out of range: the image tower has {num_blocks} "
                           f"blocks (use 0..{num_blocks - 1}, or -1 for the last).")
    return block % num_blocks


def _is_stream(x, batch: int, n_real: int) -> bool:
    """A (B, L, W) or (L, B, W) token tensor with at least CLS + patches (not a 2-D prompt)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        return False
    return (x.shape[0] == batch and x.shape[1] >= n_real) or (x.shape[1] == batch and x.shape[0] >= n_real)


def _batch_first(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, L, W) as is; sequence-first (L, B, W) blocks (OpenAI-style) transposed."""
    return x if x.shape[0] == batch else x.transpose(0, 1)


def _unit_range(cam: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (H, W) map to [0, 1]; a constant map becomes all zero."""
    flat = cam.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1) - low)
    return torch.where(span > 0, (cam - low) / span.clamp_min(1e-12), torch.zeros_like(cam))


# ----------------------------------------------------------------------------------------------
# Images in and out
# ----------------------------------------------------------------------------------------------
def prepare_image(image: Image.Image, size: int, mean: Sequence[float] = CLIP_MEAN,
                  std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """CLIP test preprocessing: bicubic resize of the short side, center crop -> (1, 3, size, size)."""
    pipeline = transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    return pipeline(to_rgb(image)).unsqueeze(0)


def displayable(image: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
                std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """Undo the normalisation of one (1, 3, H, W) or (3, H, W) image -> (H, W, 3) floats in [0, 1]."""
    img = image.detach().float().cpu().reshape(3, *image.shape[-2:])
    img = img * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def gradcam_figure(rows: Sequence[Tuple[str, Sequence[Tuple[np.ndarray, np.ndarray]]]],
                   column_labels: Sequence[str], alpha: float = 0.5, mapped: str = ""):
    """One row per image: the input, then one Grad-CAM overlay per model (as paper Fig. 3).

    rows: (class name, [(image (H, W, 3) in [0, 1], cam (H, W) in [0, 1]) per model]).
    column_labels: one per model. mapped: which tokens the maps read, e.g. "tokens entering
    image block 11 (blocks 0–11)" (shown in the title). Column headers on the first row, the
    class name as row header, one colour bar for every map.
    """
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from dpl.plots import STYLE

    n_cols = 1 + len(column_labels)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(rows), n_cols, layout="constrained", squeeze=False,
                                 figsize=(1.9 * n_cols + 1.0, 1.9 * len(rows) + 0.9))
        for r, (classname, panels) in enumerate(rows):
            axes[r][0].imshow(panels[0][0])
            axes[r][0].set_ylabel(textwrap.fill(classname, 18))
            for c, (image, cam) in enumerate(panels, start=1):
                axes[r][c].imshow(image)
                axes[r][c].imshow(cam, cmap=CAM_COLORMAP, alpha=alpha, vmin=0.0, vmax=1.0)
            for ax in axes[r]:  # no ticks or frame, but keep the row header (y label)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.spines[:].set_visible(False)
        for c, label in enumerate(["input", *column_labels]):
            axes[0][c].set_title(textwrap.fill(label, 18))
        fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), CAM_COLORMAP), ax=axes,
                     shrink=min(1.0, 0.45 + 0.2 * len(rows)),
                     label="Grad-CAM (each map scaled to 0–1)")
        fig.suptitle("Grad-CAM of the class logit" + (f", {mapped}" if mapped else ""))
    return fig


def plot_gradcam(rows: Sequence[Tuple[str, Sequence[Tuple[np.ndarray, np.ndarray]]]],
                 column_labels: Sequence[str], path: str, alpha: float = 0.5,
                 mapped: str = "") -> str:
    """``gradcam_figure`` written as a PNG atomically; returns ``path``."""
    from dpl.plots import save_figure

    return save_figure(gradcam_figure(rows, column_labels, alpha, mapped), path)
