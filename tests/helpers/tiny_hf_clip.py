"""Tiny random CLIPs in Hugging Face ``transformers`` format (``CLIPModel.save_pretrained`` folders).

Built from a ``CLIPConfig`` (nothing is downloaded); needs ``transformers`` (requirements-dev.txt).
The weights are re-drawn with a larger spread than transformers' init so that every part of the
model (activations, LayerNorm eps, projections) visibly changes the outputs.
"""
from __future__ import annotations

import gzip
import json
import os

import torch

TEXT = {"hidden_size": 64, "intermediate_size": 100, "num_hidden_layers": 2, "num_attention_heads": 2}
VISION = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
          "image_size": 32, "patch_size": 8}
PROJECTION_DIM = 24


def hf_config(text_act="quick_gelu", vision_act="quick_gelu", text=None, vision=None, **top):
    from transformers import CLIPConfig

    return CLIPConfig(text_config={**TEXT, "hidden_act": text_act, **(text or {})},
                      vision_config={**VISION, "hidden_act": vision_act, **(vision or {})},
                      projection_dim=top.pop("projection_dim", PROJECTION_DIM), **top)


def build_hf_clip(config, seed: int = 0):
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(2.0)
            elif "norm" in name or "layrnorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else p.shape[-1] ** -0.5 * 1.5))
    return model


def write_clip_tokenizer_files(folder) -> None:
    """vocab.json and merges.txt of CLIP's BPE (from open_clip's bundled file), as transformers'
    CLIP tokenizer folders hold them."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as fh:
        json.dump({token: i for i, token in enumerate(vocab)}, fh, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_tiny_hf_clip(folder, text_act="quick_gelu", vision_act="quick_gelu", fmt="safetensors",
                       seed: int = 0, tokenizer: bool = True, preprocessor=None, **config_kwargs) -> str:
    """Save a tiny random CLIPModel into ``folder``; fmt "safetensors" (save_pretrained) or "bin"
    (a ``pytorch_model.bin`` torch state dict, as transformers before 5.0 saved by default)."""
    folder = str(folder)
    model = build_hf_clip(hf_config(text_act, vision_act, **config_kwargs), seed)
    model.save_pretrained(folder)
    if fmt == "bin":
        os.remove(os.path.join(folder, "model.safetensors"))
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()},
                   os.path.join(folder, "pytorch_model.bin"))
    if tokenizer:
        write_clip_tokenizer_files(folder)
    if preprocessor is not None:
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as fh:
            json.dump(preprocessor, fh)
    return folder


def edit_config(folder, edit) -> None:
    """Rewrite ``folder``/config.json with ``edit(data)`` applied."""
    path = os.path.join(str(folder), "config.json")
    with open(path) as fh:
        data = json.load(fh)
    edit(data)
    with open(path, "w") as fh:
        json.dump(data, fh)
