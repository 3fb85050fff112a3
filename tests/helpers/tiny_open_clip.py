"""Tiny random-init open_clip models saved in open_clip's own formats (not OpenAI's).

``write_tiny_open_clip(folder)`` writes a model-config JSON (an ``open_clip_config.json`` with a
non-default image size, mean/std and interpolation) and the state dict as ``.bin`` (``torch.save``)
and ``.safetensors``; the loader must rebuild the model from the config, not from the weights.
GELU (not QuickGELU) and head width 32 differ from OpenAI's rules on purpose.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from open_clip.model import CLIP

PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}


def tiny_model_cfg(image_size: int = 40, **changes) -> dict:
    cfg = {
        "embed_dim": 24,
        "quick_gelu": False,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "head_width": 32,
                       "patch_size": 10},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    for key, value in changes.items():
        tower, _, field = key.partition("__")
        (cfg[tower] if field else cfg)[field or tower] = value
    return cfg


@dataclass
class TinyOpenClipFiles:
    config: str        # open_clip_config.json (model_cfg + preprocess_cfg)
    bin: str           # torch.save(state_dict)
    safetensors: str   # the same weights as safetensors


def write_tiny_open_clip(folder, seed: int = 0, image_size: int = 40) -> TinyOpenClipFiles:
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    model_cfg = tiny_model_cfg(image_size)
    torch.manual_seed(seed)
    model = CLIP(**model_cfg).eval()
    with torch.no_grad():  # a sharper logit scale than CLIP's init, so few-shot accuracy moves
        model.logit_scale.fill_(4.0)
    files = TinyOpenClipFiles(os.path.join(folder, "open_clip_config.json"),
                              os.path.join(folder, "tiny_open_clip.bin"),
                              os.path.join(folder, "tiny_open_clip.safetensors"))
    with open(files.config, "w") as fh:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS}, fh, indent=2)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, files.bin)
    from safetensors.torch import save_file

    save_file(state, files.safetensors)
    return files
