"""Load CLIP from a local file through open_clip. Never downloads.

Three kinds of model, one result (a frozen ``open_clip.model.CLIP``, batch-first transformers):

- OpenAI's: a backbone name of OpenAI's (``ViT-B/16``), DPL's own ``demo``, or any name with
  ``config="openai"`` (the ``MODEL.BACKBONE.CONFIG openai`` setting). The checkpoint is a TorchScript
  archive (the ``.pt`` files OpenAI publishes) or a plain state dict with the same key names; depth,
  widths and heads are read from the weights, never assumed. open_clip's files have the same key
  names but, for most models, another activation (GELU, not OpenAI's QuickGELU), so a plain state
  dict under a name that is neither OpenAI's nor open_clip's, without ``MODEL.BACKBONE.CONFIG``, is
  refused (a misspelt name would otherwise be read in the wrong format), listing the close names.
- open_clip's: an open_clip model name (``ViT-B-16``, ``ViT-L-14``, ``ViT-B-32-quickgelu``, ...; see
  ``open_clip.list_models()``) or any name with a model-config JSON (``config=``, the
  ``MODEL.BACKBONE.CONFIG`` key), plus a state dict in open_clip's format (``.bin``/``.pt``/``.pth``
  or ``.safetensors``). The model is built with ``pretrained=None`` and the file loaded here. The
  config also gives the preprocessing (``preprocess_of``) and the tokenizer's context length; parts
  DPL cannot walk (timm or Hugging Face towers, custom attention blocks, attentional pooling, a
  non-CLIP tokenizer) are refused when the model is loaded, naming the config field.
- Hugging Face ``transformers``' (``dpl.hf_clip``): ``path`` is a folder saved by
  ``CLIPModel.save_pretrained`` (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``);
  its config.json gives the architecture whatever the name.

``backbone_record(model)`` is what an artifact stores (name, file, config, SHA-256 of the weights and
of the architecture a config builds), so a prompt configuration is never used on another model.

Security note: a TorchScript archive is code as well as weights; ``torch.jit.load`` runs it. Only
load archives from a trusted source (OpenAI's files, or your own). Plain state dicts are read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import zipfile
from typing import Dict, Optional, Tuple, Union

import open_clip
import torch
from open_clip.model import (CLIP, build_model_from_openai_state_dict, convert_weights_to_lp,
                             set_model_preprocess_cfg)
from dpl.errors import UserError, weights_only_reason

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

# MODEL.BACKBONE.CONFIG's value for "an OpenAI-format file under a name of your own".
OPENAI_FORMAT = "openai"
# Names DPL itself gives to OpenAI-format files (the demo's CLIP, demo/weights).
LOCAL_OPENAI_NAMES = ("demo",)

PRECISIONS = ("fp32", "fp16", "amp", "bf16")  # dpl/precision.py says what each means


# OpenAI's preprocessing (also open_clip's default): bicubic resize, these constants.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# The BPE tokenizer every path of DPL uses (open_clip.tokenize); a model must share its vocabulary.
CLIP_VOCAB_SIZE = 49408


class CheckpointError(UserError, RuntimeError):
    """A CLIP checkpoint is missing, unreadable or not in OpenAI's format."""


class UnsupportedModelError(CheckpointError):
    """The model's architecture has a part DPL's prompted encoders cannot walk."""


def default_cache_dir() -> str:
    return os.path.expanduser(os.environ.get("CLIP_CACHE_DIR", "~/.cache/clip"))


def resolve_checkpoint(backbone: str, path: str = "") -> str:
    """Return the local checkpoint file for ``backbone`` (``MODEL.BACKBONE.NAME``).

    ``path`` (``MODEL.BACKBONE.PATH``) wins when given; otherwise the usual OpenAI file name under
    ``~/.cache/clip`` (or ``$CLIP_CACHE_DIR``). Raises CheckpointError naming the expected path.
    """
    if path:
        candidate = os.path.abspath(os.path.expanduser(path))
        if os.path.isdir(candidate):
            from dpl.hf_clip import is_hf_folder

            if is_hf_folder(candidate):
                return candidate
            raise CheckpointError(
                f"MODEL.BACKBONE.PATH {path!r} is a folder without a config.json: give a checkpoint "
                "file, or a Hugging Face transformers CLIP folder (config.json + model.safetensors or "
                "pytorch_model.bin, as CLIPModel.save_pretrained writes it).")
    else:
        fname = OPENAI_FILENAMES.get(backbone)
        if fname is None:
            close = close_names(backbone)
            raise CheckpointError(
                f"Unknown backbone {backbone!r} and no MODEL.BACKBONE.PATH given"
                f"{' (close names: ' + ', '.join(close) + ')' if close else ''}. Known OpenAI names: "
                f"{', '.join(OPENAI_FILENAMES)}. For an open_clip model (e.g. ViT-B-16) or any other "
                "model, set MODEL.BACKBONE.PATH to its local checkpoint file (nothing is downloaded); "
                f"under a name of your own also MODEL.BACKBONE.CONFIG ({OPENAI_FORMAT} for an OpenAI-format "
                "file, else its open_clip model-config JSON)."
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


def known_names() -> list:
    """Every model name DPL resolves by itself: OpenAI's and open_clip's."""
    return list(OPENAI_FILENAMES) + [n for n in open_clip.list_models() if n not in OPENAI_FILENAMES]


def close_names(backbone: str, n: int = 5) -> list:
    """Known model names close to ``backbone`` (difflib, case-insensitive), best first."""
    lower = {}
    for name in known_names():
        lower.setdefault(name.lower(), name)
    return [lower[m] for m in difflib.get_close_matches(str(backbone).lower(), list(lower), n=n)]


def check_unknown_name(backbone: str, file: str) -> None:
    """Refuse a plain state dict under a name that is neither OpenAI's, open_clip's nor DPL's own,
    without ``MODEL.BACKBONE.CONFIG``: its format cannot be told from the weights (open_clip's GELU
    files and OpenAI's QuickGELU ones share their key names), and a misspelt name would otherwise
    read one as the other. Lists the close names."""
    close = close_names(backbone)
    near = f"close names: {', '.join(close)}" if close else "no known name is close to it"
    raise CheckpointError(
        f"MODEL.BACKBONE.NAME {backbone!r} is neither an OpenAI nor an open_clip model name ({near}), "
        f"and MODEL.BACKBONE.CONFIG is empty, so DPL cannot tell how to read {file}: give the model's "
        f"name (OpenAI's, e.g. ViT-B/16, or open_clip's, e.g. ViT-B-16), or set MODEL.BACKBONE.CONFIG "
        f"{OPENAI_FORMAT} for an OpenAI-format file (architecture from the weights, QuickGELU), or "
        "MODEL.BACKBONE.CONFIG to the open_clip model-config JSON of its architecture.")


def reads_as_openai(backbone: str, config: str = "") -> bool:
    """True when ``backbone``/``config`` name OpenAI's format without any doubt: an OpenAI name,
    DPL's own ``demo``, or ``MODEL.BACKBONE.CONFIG openai``."""
    if config:
        return config == OPENAI_FORMAT
    return backbone in OPENAI_FILENAMES or backbone in LOCAL_OPENAI_NAMES


def reload_config(record: dict) -> str:
    """The ``config`` that loads a ``backbone_record`` again. Records written before
    ``MODEL.BACKBONE.CONFIG openai`` existed hold "" for an OpenAI-format file under a name of
    one's own (then read as OpenAI's): that is ``openai`` now."""
    config, name = record.get("config") or "", record.get("name") or ""
    if config or record.get("config_sha256") or reads_as_openai(name) or is_open_clip_model(name):
        return config
    return OPENAI_FORMAT


def read_state_dict(file: str) -> Dict[str, torch.Tensor]:
    """A CLIP state dict from a TorchScript archive, a ``.safetensors`` file or a ``torch.save`` file
    (plain, or wrapped in ``{"state_dict": ...}`` with optional ``module.`` prefixes)."""
    try:
        if file.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(file, device="cpu")
        elif zipfile.is_zipfile(file) and _is_torchscript(file):
            archive = torch.jit.load(file, map_location="cpu")
            return {k: v for k, v in archive.state_dict().items()}
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for corrupt files
        raise CheckpointError(
            f"Could not read the CLIP checkpoint {file} ({type(exc).__name__}: {weights_only_reason(exc)}); the "
            "file is corrupt, truncated or not a CLIP checkpoint: copy it again."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict):
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    return state


def read_openai_state_dict(file: str) -> dict:
    """Read a TorchScript archive or a plain state dict into a state dict of tensors."""
    return _require_openai_keys(read_state_dict(file), file)


def _require_openai_keys(state, file: str) -> dict:
    if not isinstance(state, dict) or "token_embedding.weight" not in state:
        raise CheckpointError(
            f"{file} is not an OpenAI-format CLIP checkpoint (no 'token_embedding.weight' key)."
        )
    return state


def _is_torchscript(file: str) -> bool:
    with zipfile.ZipFile(file) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


def load_clip(
    backbone: str,
    path: str = "",
    precision: str = "fp32",
    device: Optional[Union[str, torch.device]] = None,
    config: str = "",
) -> CLIP:
    """Build a frozen open_clip ``CLIP`` in eval mode from a local checkpoint.

    backbone: an OpenAI name (``ViT-B/16``), an open_clip name (``ViT-B-16``), ``demo``, or any name
    with ``path`` and ``config``: a model-config JSON for an open_clip architecture, or ``"openai"``
    for an OpenAI-format file. A plain state dict under any other name is refused (CheckpointError).
    ``path`` may be a Hugging Face transformers CLIP folder (``dpl.hf_clip``): its config.json gives
    the architecture whatever ``backbone`` is.
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
    hf_folder = hf_folder_of(file)
    config_sha256 = None
    if hf_folder and (os.path.isdir(file) or os.path.basename(file) == "config.json"):
        from dpl import hf_clip

        files = hf_clip.weight_files(hf_folder)
        state = hf_clip.read_weights(files)
        file = hf_folder
    else:
        state = read_state_dict(file)
    if _hf_keys(state):  # position_ids buffers: in older transformers files only, not weights
        from dpl.hf_clip import IGNORED_KEYS

        state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    weights_sha256 = state_sha256(state) if isinstance(state, dict) else None
    if hf_folder and _hf_keys(state):
        from dpl import hf_clip

        if config and os.path.abspath(os.path.expanduser(config)) != os.path.join(hf_folder, "config.json"):
            raise CheckpointError(
                f"MODEL.BACKBONE.CONFIG {config!r} is set, but MODEL.BACKBONE.PATH {path!r} is a Hugging "
                "Face folder whose config.json gives the architecture: remove MODEL.BACKBONE.CONFIG.")
        if file != hf_folder:
            print(f"MODEL.BACKBONE.PATH {file} is the weights file of a Hugging Face CLIP folder: reading it "
                  f"with the folder's config.json")
        model, arch, description = hf_clip.build(hf_folder, state, file)
        print(description)
        config, config_sha256 = arch["config"], hf_clip.architecture_sha256(arch)
        if precision == "fp16":
            convert_weights_to_lp(model)
    elif _hf_keys(state):
        raise CheckpointError(
            f"{file} holds Hugging Face transformers CLIPModel weights, but no config.json lies beside it: "
            "set MODEL.BACKBONE.PATH to the model's folder (config.json + weights, as save_pretrained "
            "writes it).")
    elif is_open_clip_model(backbone, config):
        model = _build_open_clip(backbone, config, file, state)
        config_sha256 = _json_sha256(open_clip_config(backbone, config)[0])
        if precision == "fp16":
            convert_weights_to_lp(model)  # as OpenAI's files are: matmul weights in half
    else:
        if not reads_as_openai(backbone, config) and not (zipfile.is_zipfile(file) and _is_torchscript(file)):
            check_unknown_name(backbone, file)  # (OpenAI's TorchScript archives are unambiguous)
        model = _build_openai(file, state)
    model = model.to(device)
    if precision != "fp16":
        model.float()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # Remembered for artifacts (backbone_record) and messages.
    model.dpl_backbone = backbone
    model.dpl_checkpoint = file
    model.dpl_config = os.path.abspath(os.path.expanduser(config)) if config and config != OPENAI_FORMAT else config
    model.dpl_sha256 = weights_sha256
    model.dpl_config_sha256 = config_sha256
    return model


def hf_folder_of(path: str) -> str:
    """The Hugging Face transformers folder ``path`` names: the folder itself, its ``config.json``
    or its ``model.safetensors``/``pytorch_model.bin``; "" otherwise."""
    from dpl.hf_clip import WEIGHT_FILES, is_hf_folder

    if not path:
        return ""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        return path if is_hf_folder(path) else ""
    folder = os.path.dirname(path)
    if os.path.basename(path) in ("config.json", *WEIGHT_FILES) and is_hf_folder(folder):
        return folder
    return ""


def _hf_keys(state) -> bool:
    from dpl.hf_clip import has_hf_keys

    return has_hf_keys(state)


def _json_sha256(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _build_openai(file: str, state) -> CLIP:
    state = _require_openai_keys(state, file)
    try:
        return build_model_from_openai_state_dict(dict(state))
    except Exception as exc:
        raise CheckpointError(
            f"{file} could not be built into a CLIP model: {type(exc).__name__}: {exc}"
        ) from exc


# ----------------------------------------------------------------------------------------------
# open_clip models
# ----------------------------------------------------------------------------------------------
def is_open_clip_model(backbone: str, config: str = "") -> bool:
    """True for a model-config JSON or an open_clip model name (``open_clip.list_models()``)."""
    if config:
        return config != OPENAI_FORMAT
    return backbone not in OPENAI_FILENAMES and backbone in open_clip.list_models()


def open_clip_config(backbone: str, config: str = "") -> Tuple[dict, dict, str]:
    """(model config, preprocessing overrides, source) of an open_clip model.

    ``config`` is a JSON file: an open_clip model config (``embed_dim``, ``vision_cfg``,
    ``text_cfg``) or an ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``).
    Without it, open_clip's bundled config for ``backbone``.
    """
    if not config:
        model_cfg = open_clip.get_model_config(backbone)
        if model_cfg is None:
            raise CheckpointError(f"{backbone!r} is not an open_clip model name; set MODEL.BACKBONE.CONFIG "
                                  "to its model-config JSON.")
        return copy.deepcopy(model_cfg), {}, f"open_clip's {backbone} config"
    file = os.path.abspath(os.path.expanduser(config))
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"MODEL.BACKBONE.CONFIG {config!r} ({file}) could not be read as JSON "
                              f"({type(exc).__name__}: {exc}); give an open_clip model-config JSON.") from None
    model_cfg = data.get("model_cfg", data) if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise CheckpointError(
            f"MODEL.BACKBONE.CONFIG {file} is not an open_clip model config: it needs 'embed_dim', "
            "'vision_cfg' and 'text_cfg' (as open_clip/model_configs/ViT-B-16.json), optionally wrapped "
            "as {\"model_cfg\": ..., \"preprocess_cfg\": ...}.")
    return copy.deepcopy(model_cfg), dict(data.get("preprocess_cfg", {})), file


# Config fields whose parts DPL's encoders cannot walk: (tower or "", field, what it builds).
_UNSUPPORTED_FIELDS = (
    ("", "custom_text", "a separate text module (open_clip's CustomTextCLIP)"),
    ("", "multimodal_cfg", "a CoCa captioning decoder"),
    ("vision_cfg", "timm_model_name", "a timm image tower"),
    ("vision_cfg", "attentional_pool", "attentional pooling instead of the CLS token"),
    ("vision_cfg", "final_ln_after_pool", "a final LayerNorm after pooling"),
    ("text_cfg", "hf_model_name", "a Hugging Face text tower"),
    ("text_cfg", "hf_tokenizer_name", "a Hugging Face tokenizer instead of CLIP's BPE"),
    ("text_cfg", "tokenizer_mode", "a non-CLIP tokenizer"),
    ("text_cfg", "embed_cls", "a text CLS token"),
)
_CUSTOM_BLOCK_FIELDS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner",
                        "scale_attn", "scale_fc")


def unsupported_parts(model_cfg: dict) -> list:
    """``"<field> (<what>)"`` for every config field that builds a part DPL cannot prompt."""
    parts = []
    for tower, field, what in _UNSUPPORTED_FIELDS:
        section = model_cfg.get(tower, {}) if tower else model_cfg
        if section.get(field):
            parts.append(f"{tower + '.' if tower else ''}{field} ({what})")
    for tower in ("vision_cfg", "text_cfg"):
        section = model_cfg.get(tower, {})
        custom = [f for f in _CUSTOM_BLOCK_FIELDS if section.get(f)]
        if section.get("block_type") == "custom" or custom:
            parts.append(f"{tower}.{'/'.join(custom) or 'block_type'} (custom attention blocks, not "
                         "the standard residual attention block)")
    pool = {"vision_cfg": ("pool_type", "tok"), "text_cfg": ("pool_type", "argmax")}
    for tower, (field, want) in pool.items():
        value = model_cfg.get(tower, {}).get(field, want)
        if value != want:
            parts.append(f"{tower}.{field} {value!r} (DPL reads features at the {want} token)")
    vocab = model_cfg.get("text_cfg", {}).get("vocab_size", CLIP_VOCAB_SIZE)
    if vocab != CLIP_VOCAB_SIZE:
        parts.append(f"text_cfg.vocab_size {vocab} (CLIP's BPE tokenizer has {CLIP_VOCAB_SIZE} tokens)")
    return parts


def preprocess_from_config(model_cfg: dict, overrides: Optional[dict] = None) -> dict:
    """The model's input preprocessing: {"size": (h, w), "mean", "std", "interpolation"}.

    open_clip's defaults (OpenAI's constants, bicubic) and ``vision_cfg.image_size``, then
    ``vision_cfg.image_mean/image_std/interpolation`` and the config's ``preprocess_cfg``.
    """
    vision = model_cfg.get("vision_cfg", {})
    size = vision.get("image_size", 224)
    out = {"size": size, "mean": vision.get("image_mean", OPENAI_MEAN),
           "std": vision.get("image_std", OPENAI_STD),
           "interpolation": vision.get("interpolation", "bicubic")}
    out.update({k: v for k, v in (overrides or {}).items() if k in out and k != "size"})
    size = out["size"]
    out["size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    out["mean"], out["std"] = tuple(out["mean"]), tuple(out["std"])
    return out


def model_preprocess(backbone: str, config: str = "", path: str = "") -> Optional[dict]:
    """The preprocessing an open_clip model's config or a Hugging Face folder's
    ``preprocessor_config.json`` prescribes (no weights read); None for OpenAI models, whose
    preprocessing is OpenAI's (the trainer configs' INPUT values)."""
    folder = hf_folder_of(path)
    if folder:
        from dpl.hf_clip import folder_preprocess

        return folder_preprocess(folder)
    if not is_open_clip_model(backbone, config):
        return None
    model_cfg, overrides, _ = open_clip_config(backbone, config)
    return preprocess_from_config(model_cfg, overrides)


def preprocess_of(model: CLIP) -> dict:
    """{"size": (h, w), "mean", "std", "interpolation"} of a loaded model (OpenAI's for OpenAI files)."""
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = cfg.get("size") or getattr(model.visual, "image_size", 224)
    return {"size": tuple(size) if isinstance(size, (list, tuple)) else (size, size),
            "mean": tuple(cfg.get("mean", OPENAI_MEAN)), "std": tuple(cfg.get("std", OPENAI_STD)),
            "interpolation": cfg.get("interpolation", "bicubic")}


def _build_open_clip(backbone: str, config: str, file: str, state) -> CLIP:
    """``CLIP(**model config)`` (what ``open_clip.create_model(name, pretrained=None)`` builds, without
    its registry or download logic), the weights ``state`` (read from ``file``) loaded strictly."""
    model_cfg, overrides, source = open_clip_config(backbone, config)
    parts = unsupported_parts(model_cfg)
    if parts:
        raise UnsupportedModelError(
            f"{source} builds parts DPL cannot prompt: {'; '.join(parts)}. Supported are CLIP models "
            "whose towers are open_clip's standard residual attention blocks with CLIP's BPE tokenizer."
        )
    model_cfg.pop("custom_text", None)
    try:
        model = CLIP(**model_cfg)
    except Exception as exc:
        raise CheckpointError(f"{source} could not be built into a CLIP model: {type(exc).__name__}: "
                              f"{exc}; check the config.") from exc
    _check_walkable(model, source)
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} holds a {type(state).__name__}, not a CLIP state dict.")
    state = {k: v for k, v in state.items()
             if k not in ("input_resolution", "context_length", "vocab_size")}  # TorchScript extras
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split("\n\t", 1)[-1].split())[:300]
        raise CheckpointError(f"{file} does not fit {source} ({detail}); check that MODEL.BACKBONE.NAME"
                              "/CONFIG name the checkpoint's architecture.") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{file} does not fit {source}: {len(result.missing_keys)} missing key(s) (e.g. "
            f"{result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected (e.g. "
            f"{result.unexpected_keys[:2]}); check that MODEL.BACKBONE.NAME/CONFIG name the "
            "checkpoint's architecture.")
    set_model_preprocess_cfg(model, preprocess_from_config(model_cfg, overrides))
    return model


def _check_walkable(model: CLIP, source: str) -> None:
    """The prompted encoders' own structural checks, run at load time (e.g. custom blocks)."""
    from dpl.encoders import ImageTower, TextTower

    try:
        TextTower(model)
        ImageTower(model)
    except (TypeError, AttributeError) as exc:
        raise UnsupportedModelError(f"{source}: DPL cannot prompt this model: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Which model: the artifact's backbone record
# ----------------------------------------------------------------------------------------------
def state_sha256(state: Dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a state dict's names, dtypes, shapes and values: the same weights give the
    same hash whatever the file format (``.pt``, ``.bin``, ``.safetensors``)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def backbone_record(model: CLIP) -> dict:
    """{"name", "file", "config", "sha256", "config_sha256"} of a model from ``load_clip``: the
    weights' hash and the hash of the architecture its config builds (None for OpenAI files, whose
    architecture the weights give, and for a model built otherwise). For a Hugging Face folder
    "file" is the folder and "config" its config.json."""
    return {"name": getattr(model, "dpl_backbone", ""), "file": getattr(model, "dpl_checkpoint", ""),
            "config": getattr(model, "dpl_config", ""), "sha256": getattr(model, "dpl_sha256", None),
            "config_sha256": getattr(model, "dpl_config_sha256", None)}


def save_openai_checkpoint(model: CLIP, file: str) -> None:
    """Save an open_clip ``CLIP`` (ViT towers, standard text tower) as an OpenAI-style state dict.

    The weights are cast like OpenAI's files (matmul weights in fp16) so that ``load_clip`` gives
    back exactly these values. The write is atomic.
    """
    lp = copy.deepcopy(model).cpu()
    convert_weights_to_lp(lp)
    state = {k: v for k, v in lp.state_dict().items() if k != "attn_mask"}
    from dpl.io import atomic_torch_save

    atomic_torch_save(state, file)
