"""Tiny random-init CLIP models saved as OpenAI-format checkpoints.

The real loading path (``dpl.clip_loader.load_clip``) is what tests run on these files. Head width
is 64 because open_clip rebuilds OpenAI checkpoints with ``heads = width // 64``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from dpl.clip_loader import save_openai_checkpoint


@dataclass(frozen=True)
class TinyClipSpec:
    embed_dim: int = 32
    image_size: int = 32
    patch_size: int = 8          # 4x4 grid -> 17 image tokens
    vision_layers: int = 2
    vision_width: int = 128      # 2 heads; deliberately != text width
    text_layers: int = 3
    text_width: int = 64         # 1 head
    context_length: int = 77
    vocab_size: int = 49408      # must match CLIP's BPE tokenizer


# OpenAI's ViT-B/16 sizes (random weights: for shapes, parameter counts and GPU cost, not accuracy).
VIT_B16 = TinyClipSpec(embed_dim=512, image_size=224, patch_size=16, vision_layers=12, vision_width=768,
                       text_layers=12, text_width=512)


def build_tiny_clip(spec: TinyClipSpec = TinyClipSpec(), seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=spec.vision_layers, width=spec.vision_width,
                           patch_size=spec.patch_size, image_size=spec.image_size)
    text = CLIPTextCfg(context_length=spec.context_length, vocab_size=spec.vocab_size,
                       width=spec.text_width, heads=spec.text_width // 64, layers=spec.text_layers)
    model = CLIP(spec.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    return model.eval()


def write_tiny_clip(path, spec: TinyClipSpec = TinyClipSpec(), seed: int = 0) -> str:
    save_openai_checkpoint(build_tiny_clip(spec, seed), str(path))
    return str(path)
