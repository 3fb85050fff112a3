"""Cost of a prompt configuration: trainable parameters and forward FLOPs (paper Fig. 5).

FLOPs are measured, not derived: ``count_flops`` runs the real module graph under
``torch.utils.flop_counter.FlopCounterMode``. Two torch shortcuts would hide attention from the
counter, so counting runs with PyTorch's math attention and without the ``nn.MultiheadAttention``
fast path (same matmuls, each one visible). Weights do not change FLOPs, so models may live on the
``meta`` device (shapes only, no compute): see ``random_init_clip``.

Reference formulas for the baselines' trainable parameters (widths from the model, never fixed;
``tests/test_analysis.py`` checks them against the ``dpl.baselines`` modules):

- CoOp: ``n_ctx * text_width`` (times the number of classes with class-specific context, CSC).
- IVLP: ``n_text * text_width * depth_text + n_vision * vision_width * depth_vision``.
- MaPLe: per prompted depth, ``n_ctx`` text tokens and one text->vision linear map (weight + bias):
  ``depth * (n_ctx * text_width + text_width * vision_width + vision_width)``. Layer 0 has its own
  map (MaPLe's shallow ``proj``), layers 1..depth-1 one each.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

# OpenAI CLIP names -> open_clip architecture configs (for random-init models).
OPENAI_TO_OPEN_CLIP = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16",
    "RN50x64": "RN50x64", "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}
# The class name of cost rows. Text runs on max(EOT) + 1 tokens (exact, ``dpl.text_inputs``), so
# text FLOPs depend on the sentence length; ``ForwardFlops.text_tokens`` says which length was used.
PLACEHOLDER_CLASS = "object"


@dataclass(frozen=True)
class ForwardFlops:
    """Forward FLOPs of one image and of one class prompt (the text encoder runs once per class).

    text_tokens: the text length the count ran on (max(EOT) + 1 of the class sentences; 0 unknown).
    A difference keeps the left operand's length.
    """
    image: int
    text: int
    text_tokens: int = field(default=0, compare=False)

    def __sub__(self, other: "ForwardFlops") -> "ForwardFlops":
        return ForwardFlops(self.image - other.image, self.text - other.text, self.text_tokens)


# ----------------------------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------------------------
@contextmanager
def countable_attention():
    """Route attention through plain matmuls that FlopCounterMode sees (CPU, CUDA and meta).

    The fused SDPA kernel on CPU and ``nn.MultiheadAttention``'s inference fast path are not in the
    counter's registry, so without this attention would count as zero.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs (a multiply-add = 2) of ``fn()``, run once without autograd."""
    with countable_attention(), torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def trainable_parameters(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (the prompts of a prompt-learning model)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def total_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def image_input(visual: nn.Module, device=None) -> torch.Tensor:
    """One all-zero image (1, 3, S, S) of the tower's input size."""
    size = getattr(visual, "image_size", None) or getattr(visual, "input_resolution")
    size = size if isinstance(size, (tuple, list)) else (size, size)
    if device is None:
        device = next(visual.parameters()).device
    return torch.zeros(1, 3, int(size[0]), int(size[1]), device=device)


def clip_flops(clip_model: nn.Module) -> ForwardFlops:
    """Frozen CLIP: open_clip's own ``encode_image``; the text tower on "a photo of a <class>."
    cut after its EOT, as every model here runs it (``TextTower.encode_ids``)."""
    import open_clip

    from dpl.encoders import TextTower
    from dpl.text_inputs import eot_length

    ids = open_clip.tokenize([f"a photo of a {PLACEHOLDER_CLASS}."],
                             context_length=clip_model.context_length)
    tower = TextTower(clip_model)
    return ForwardFlops(image=count_flops(lambda: clip_model.encode_image(image_input(clip_model.visual))),
                        text=count_flops(lambda: tower.encode_ids(ids)),
                        text_tokens=eot_length(ids.argmax(dim=-1)))


def model_flops(model: nn.Module, image: torch.Tensor) -> ForwardFlops:
    """A prompt-learning model (DPL model protocol) on one image and one class prompt.

    image: (1, 3, S, S) on the model's device. The text count is ``encode_text()`` over the model's
    current classes divided by their number (all run on the same ``max(EOT) + 1`` tokens, the
    model's ``token_embeddings`` length, reported as ``text_tokens``); on the ``meta`` device even
    1000 classes cost nothing.
    """
    classes = []
    text = count_flops(lambda: classes.append(model.encode_text().shape[0]))
    return ForwardFlops(image=count_flops(lambda: model.encode_image(image)), text=text // classes[0],
                        text_tokens=int(model.token_embeddings.shape[1]))


# ----------------------------------------------------------------------------------------------
# DPL configurations
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigCost:
    """Cost of one configuration relative to frozen CLIP."""
    params: int                # trainable parameters
    flops: ForwardFlops        # forward FLOPs of the prompted model
    extra: ForwardFlops        # flops - frozen CLIP's


def dpl_cost(clip_model: nn.Module, text_lengths: Sequence[int], vision_lengths: Sequence[int],
             reference: ForwardFlops = None) -> ConfigCost:
    """Build the train-stage DPL model of this configuration on ``clip_model`` and measure it.

    reference: frozen CLIP's FLOPs (``clip_flops(clip_model)``), measured here when not given.
    """
    from dpl.model import build_fixed_model

    model = build_fixed_model(clip_model, [PLACEHOLDER_CLASS], text_lengths, vision_lengths)
    reference = reference or clip_flops(clip_model)
    flops = model_flops(model, image_input(clip_model.visual))
    return ConfigCost(trainable_parameters(model), flops, flops - reference)


def dpl_parameters(text_lengths: Sequence[int], vision_lengths: Sequence[int], text_width: int,
                   vision_width: int) -> int:
    """Sum over blocks of length x width, both branches."""
    return sum(text_lengths) * text_width + sum(vision_lengths) * vision_width


# ----------------------------------------------------------------------------------------------
# Baselines (formulas; see the module docstring)
# ----------------------------------------------------------------------------------------------
def coop_parameters(n_ctx: int, text_width: int, csc: bool = False, num_classes: int = 1) -> int:
    return n_ctx * text_width * (num_classes if csc else 1)


def ivlp_parameters(n_text: int, n_vision: int, depth_text: int, depth_vision: int,
                    text_width: int, vision_width: int) -> int:
    return n_text * text_width * depth_text + n_vision * vision_width * depth_vision


def maple_parameters(n_ctx: int, depth: int, text_width: int, vision_width: int) -> int:
    return depth * (n_ctx * text_width + text_width * vision_width + vision_width)


# ----------------------------------------------------------------------------------------------
# Models without weights
# ----------------------------------------------------------------------------------------------
def random_init_clip(backbone: str, device="meta") -> nn.Module:
    """A frozen, randomly initialised open_clip CLIP of ``backbone``'s architecture. Never downloads.

    backbone: an OpenAI name ("ViT-B/16") or an open_clip architecture ("ViT-B-16"). On the default
    ``meta`` device nothing is allocated; FLOPs and parameter counts are the real ones.
    """
    import open_clip

    arch = OPENAI_TO_OPEN_CLIP.get(backbone, backbone)
    if ":" in arch or arch not in open_clip.list_models():
        raise ValueError(f"--random-init {backbone!r} is not a known architecture; use an OpenAI name "
                         f"({', '.join(OPENAI_TO_OPEN_CLIP)}) or an open_clip model name.")
    with torch.device(device):  # build in place: on meta, no random init runs at all
        model = open_clip.create_model(arch, pretrained=None, device=device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.dpl_backbone = backbone
    return model
