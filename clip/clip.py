"""OpenAI's ``clip.clip`` API (tokenize, load, build_model, _MODELS, _download), offline.

CoOp-family trainers load CLIP with ``clip._download(clip._MODELS[name])`` followed by
``torch.jit.load`` / ``torch.load`` and ``clip.build_model``. Here ``_download`` never touches the
network: it returns the local file OpenAI's package would have downloaded, or a clear error that
says where to put it. File lookup, in order:

1. ``$DPL_CLIP_CHECKPOINT`` or ``$CLIP_CHECKPOINT`` (one local file, like ``MODEL.BACKBONE.PATH``);
2. ``root`` / ``download_root`` when given;
3. ``$CLIP_CACHE_DIR``, else ``~/.cache/clip``;

with the URL's file name (``ViT-B-16.pt`` for ViT-B/16) in the directories of 2 and 3. Unlike
OpenAI's package, the file's SHA256 is not checked (a local override would never match it).
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache
from typing import List, Optional, Union

import torch
from open_clip.transform import image_transform

from dpl.clip_loader import CheckpointError, default_cache_dir, read_openai_state_dict

from .model import build_model
from .simple_tokenizer import EOT, SOT
from .simple_tokenizer import SimpleTokenizer as _Tokenizer

__all__ = ["available_models", "load", "tokenize", "build_model"]

# The official download URLs (facts from OpenAI's package); only their file names are used here.
_MODELS = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "https://openaipublic.azureedge.net/clip/models/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "https://openaipublic.azureedge.net/clip/models/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "https://openaipublic.azureedge.net/clip/models/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}

# Environment variables naming one local checkpoint that every `_download` call returns.
CHECKPOINT_ENV_VARS = ("DPL_CLIP_CHECKPOINT", "CLIP_CHECKPOINT")


def available_models() -> List[str]:
    """Names accepted by ``load`` (and keys of ``_MODELS``)."""
    return list(_MODELS)


def _download(url: str, root: Optional[str] = None) -> str:
    """Return the local checkpoint file for an OpenAI model URL; never downloads.

    Raises CheckpointError naming the expected path when the file is missing.
    """
    name = next((k for k, v in _MODELS.items() if v == url), os.path.basename(url))
    var = next((v for v in CHECKPOINT_ENV_VARS if os.environ.get(v)), None)
    if var is not None:
        path = os.path.abspath(os.path.expanduser(os.environ[var]))
        fix = f"set ${var} to an existing OpenAI-format checkpoint file, or unset it"
    else:
        directory = os.path.expanduser(root) if root else default_cache_dir()
        path = os.path.abspath(os.path.join(directory, os.path.basename(url)))
        fix = (f"copy OpenAI's {os.path.basename(url)} (the file the `clip` package downloads for "
               f"{name!r}) to that path, or set $DPL_CLIP_CHECKPOINT to a local copy")
    if not os.path.isfile(path):
        where = f" (from ${var})" if var else ""
        raise CheckpointError(f"CLIP checkpoint for {name!r} not found at {path}{where}. Nothing is "
                              f"downloaded: {fix}.")
    return path


def _transform(n_px: int):
    """OpenAI's eval preprocessing: bicubic resize of the short side, centre crop, RGB, normalise."""
    return image_transform(n_px, is_train=False)


def load(name: str, device: Union[str, torch.device, None] = None, jit: bool = False,
         download_root: Optional[str] = None):
    """Load a CLIP model from a local file: ``(model, preprocess)`` like OpenAI's ``clip.load``.

    name: a key of ``_MODELS`` (file found by ``_download``) or a checkpoint path. device defaults to
    CUDA when available; on CPU the model is fp32, otherwise it keeps OpenAI's fp16 weights.
    jit=True is accepted for compatibility and gives the same eager model, with a warning.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if name in _MODELS:
        path = _download(_MODELS[name], download_root)
    elif os.path.isfile(name):
        path = name
    else:
        raise CheckpointError(
            f"Model {name!r} not found: it is neither one of clip.available_models() "
            f"({', '.join(_MODELS)}) nor an existing file; pass one of those names or the path of a "
            "local OpenAI-format checkpoint."
        )
    if jit:
        warnings.warn("clip.load(jit=True): TorchScript models are not provided here; returning the "
                      "equivalent eager model. Pass jit=False to silence this warning.")
    model = build_model(read_openai_state_dict(path)).to(device)
    if torch.device(device).type == "cpu":
        model.float()
    return model, _transform(model.visual.input_resolution)


@lru_cache(maxsize=None)
def _get_tokenizer() -> _Tokenizer:
    return _Tokenizer()


def __getattr__(name: str):
    # OpenAI's module exposes `_tokenizer`; build it on first use instead of at import.
    if name == "_tokenizer":
        return _get_tokenizer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tokenize(texts: Union[str, List[str]], context_length: int = 77,
             truncate: bool = False) -> torch.LongTensor:
    """Token ids ``(len(texts), context_length)``: start token, BPE ids, end token, zero padding.

    Too-long texts raise RuntimeError unless ``truncate`` (then the last kept id is the end token).
    """
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = _get_tokenizer()
    sot, eot = tokenizer.encoder[SOT], tokenizer.encoder[EOT]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot] + tokenizer.encode(text) + [eot]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(
                    f"Input {text!r} is {len(ids)} tokens long (with start/end tokens), more than "
                    f"the context length {context_length}; shorten it or call "
                    "clip.tokenize(..., truncate=True)."
                )
            ids = ids[:context_length]
            ids[-1] = eot
        result[i, : len(ids)] = torch.tensor(ids)
    return result
