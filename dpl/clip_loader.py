"""Load OpenAI-format CLIP checkpoints from a local file through open_clip. Never downloads.

An OpenAI CLIP checkpoint is either a TorchScript archive (the ``.pt`` files OpenAI publishes) or a
plain state dict with the same key names. Both are rebuilt into an ``open_clip.model.CLIP`` (whose
transformers are batch-first). Depth, widths and heads are read from the weights, never assumed.

Security note: a TorchScript archive is code as well as weights; ``torch.jit.load`` runs it. Only
load archives from a trusted source (OpenAI's files, or your own). Plain state dicts are read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import re
import zipfile
from typing import Optional, Union

import torch
from open_clip.model import CLIP, build_model_from_openai_state_dict, convert_weights_to_lp
from user_errors import UserError

# The usual OpenAI file names, as the `clip` package stores them under ~/.cache/clip.
OPENAI_FILENAMES = {
    "RN50": "RN50.pt",
    "RN101": "RN101.pt",
    "RN50x4": "RN50x4.pt",
    "RN50x16": "RN50x16.pt",
    "RN50x64": "RN50x64.pt",
    "ViT-B/32": "ViT-B-32.pt",
    "ViT-B/16": "ViT-B-16.pt",
    "ViT-L/14": "ViT-L-14.pt",
    "ViT-L/14@336px": "ViT-L-14-336px.pt",
}

PRECISIONS = ("fp32", "fp16", "amp", "bf16")  # dpl/precision.py says what each means


class CheckpointError(UserError, RuntimeError):
    """A CLIP checkpoint is missing, unreadable or not in OpenAI's format."""


def default_cache_dir() -> str:
    return os.path.expanduser(os.environ.get("CLIP_CACHE_DIR", "~/.cache/clip"))


def resolve_checkpoint(backbone: str, path: str = "") -> str:
    """Return the local checkpoint file for ``backbone`` (``MODEL.BACKBONE.NAME``).

    ``path`` (``MODEL.BACKBONE.PATH``) wins when given; otherwise the usual OpenAI file name under
    ``~/.cache/clip`` (or ``$CLIP_CACHE_DIR``). Raises CheckpointError naming the expected path.
    """
    if path:
        candidate = os.path.abspath(os.path.expanduser(path))
    else:
        fname = OPENAI_FILENAMES.get(backbone)
        if fname is None:
            raise CheckpointError(
                f"Unknown backbone {backbone!r} and no MODEL.BACKBONE.PATH given. Known names: "
                f"{', '.join(OPENAI_FILENAMES)}. For any other model, set MODEL.BACKBONE.PATH to a "
                "local OpenAI-format checkpoint file."
            )
        candidate = os.path.join(default_cache_dir(), fname)
    if not os.path.isfile(candidate):
        fname = OPENAI_FILENAMES.get(backbone, os.path.basename(candidate))
        raise CheckpointError(
            f"CLIP checkpoint for {backbone!r} not found at {candidate}. Nothing is downloaded: copy "
            f"OpenAI's {fname} (the file the `clip` package downloads for {backbone!r}) to that path, "
            "or point MODEL.BACKBONE.PATH (scripts: CLIP_CHECKPOINT) to a local copy."
        )
    return candidate


def read_openai_state_dict(file: str) -> dict:
    """Read a TorchScript archive or a plain state dict into a state dict of tensors."""
    try:
        if zipfile.is_zipfile(file) and _is_torchscript(file):
            archive = torch.jit.load(file, map_location="cpu")
            return {k: v for k, v in archive.state_dict().items()}
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"Could not read the CLIP checkpoint {file} ({type(exc).__name__}: {_reason(exc)}); the "
            "file is corrupt, truncated or not an OpenAI-format CLIP checkpoint: copy it again."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict) or "token_embedding.weight" not in state:
        raise CheckpointError(
            f"{file} is not an OpenAI-format CLIP checkpoint (no 'token_embedding.weight' key)."
        )
    return state


def _reason(exc: Exception) -> str:
    """The informative sentence of a torch.load error on one line (torch's weights-only text spans
    paragraphs of boilerplate that suggest ``weights_only=False``, which must not be done blindly)."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    for para in re.split(r"\n\s*\n", text):
        line = " ".join(para.split())
        if line and not line.startswith(boilerplate):
            return line.split(". ")[0].rstrip(".")
    return "no details"


def _is_torchscript(file: str) -> bool:
    with zipfile.ZipFile(file) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


def load_clip(
    backbone: str,
    path: str = "",
    precision: str = "fp32",
    device: Optional[Union[str, torch.device]] = None,
) -> CLIP:
    """Build a frozen open_clip ``CLIP`` in eval mode from a local OpenAI-format checkpoint.

    precision: "fp32", "amp" and "bf16" keep fp32 weights (the last two autocast the forward pass);
    "fp16" casts matmul weights to half (CUDA only).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if precision == "fp16" and device.type != "cuda":
        raise UserError(
            "PREC fp16 needs a CUDA device; on CPU use fp32 (e.g. add `TRAINER.DPL.PREC fp32`)."
        )
    file = resolve_checkpoint(backbone, path)
    state = read_openai_state_dict(file)
    try:
        model = build_model_from_openai_state_dict(dict(state))
    except Exception as exc:
        raise CheckpointError(
            f"{file} could not be built into a CLIP model: {type(exc).__name__}: {exc}"
        ) from exc
    model = model.to(device)
    if precision != "fp16":
        model.float()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.dpl_backbone = backbone  # remembered for artifacts and messages
    return model


def save_openai_checkpoint(model: CLIP, file: str) -> None:
    """Save an open_clip ``CLIP`` (ViT towers, standard text tower) as an OpenAI-style state dict.

    The weights are cast like OpenAI's files (matmul weights in fp16) so that ``load_clip`` gives
    back exactly these values. The write is atomic.
    """
    import copy

    lp = copy.deepcopy(model).cpu()
    convert_weights_to_lp(lp)
    state = {k: v for k, v in lp.state_dict().items() if k != "attn_mask"}
    from dpl.io import atomic_torch_save

    atomic_torch_save(state, file)
