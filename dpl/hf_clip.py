"""Hugging Face ``transformers`` CLIP folders, read without ``transformers``.

A folder saved by ``CLIPModel.save_pretrained`` (``config.json`` plus ``model.safetensors`` or
``pytorch_model.bin``, or their sharded ``*.index.json`` form; optionally the tokenizer files and
``preprocessor_config.json``) is mapped into the same frozen open_clip ``CLIP`` as every other model:

- the architecture comes from ``config.json`` (widths, layers, heads, patch and image size, projection
  dim, ``hidden_act`` and ``layer_norm_eps`` of each tower, context length =
  ``max_position_embeddings``), with ``transformers``' defaults for keys the file leaves out;
- the weights are renamed (``q/k/v_proj`` packed into ``in_proj``, ``fc1/fc2`` -> ``c_fc/c_proj``,
  projections transposed) and loaded strictly; ``.bin`` files are read with ``weights_only=True``;
- preprocessing comes from ``preprocessor_config.json`` when present (mean, std, resample), else
  CLIP's (OpenAI's constants, bicubic); the size is the vision tower's ``image_size``.

Refused in one line, naming the field: other architectures (``SiglipModel``, ``CLIPSegModel``, a
single tower, ...), a text read-out other than CLIP's end-of-text token (see ``text_readout``),
another vocabulary or tokenizer, vision towers other than CLIP's ViT, unknown weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Dict, List, Optional, Tuple

import torch

from dpl.clip_loader import (CLIP_VOCAB_SIZE, OPENAI_MEAN, OPENAI_STD, CheckpointError,
                             UnsupportedModelError)
from dpl.errors import weights_only_reason

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # transformers' order of preference
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

# transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults, for keys a config.json
# leaves out (save_pretrained may write only the values that differ from them).
TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                 "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
                 "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "eos_token_id": 49407,
                 "model_type": "clip_text_model"}
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32,
                   "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "model_type": "clip_vision_model"}
PROJECTION_DIM_DEFAULT = 512

# CLIP's BPE: start- and end-of-text ids (EOT is the largest id, so "first EOT" == "argmax of ids").
SOT_ID, EOT_ID = 49406, 49407
LEGACY_EOS_ID = 2  # configs from before transformers' PR #24773: read out at argmax(input_ids)

# hidden_act -> the activation module DPL's blocks use (same function as transformers' ACT2FN).
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_pytorch_tanh", "gelu_new")
# PIL resample codes in preprocessor_config.json -> INPUT.INTERPOLATION
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def is_hf_folder(path: str) -> bool:
    """True for a folder holding a ``config.json`` (a transformers model folder)."""
    return bool(path) and os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def has_hf_keys(state) -> bool:
    """True for a state dict in transformers' CLIPModel naming."""
    return isinstance(state, dict) and any(k.startswith(("text_model.", "vision_model.")) for k in state)


# ----------------------------------------------------------------------------------------------
# config.json -> architecture
# ----------------------------------------------------------------------------------------------
def read_json(file: str, what: str) -> dict:
    try:
        with open(file, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} ({what}) could not be read as JSON ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}); copy the model folder again.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} ({what}) is not a JSON object; copy the model folder again.")
    return data


def _sub_config(data: dict, name: str, defaults: dict, file: str) -> dict:
    """``text_config``/``vision_config`` with defaults; a legacy ``<name>_dict`` wins, as it does
    in transformers (its values, with defaults, replace those of ``<name>``)."""
    legacy = data.get(f"{name}_dict")
    section = legacy if legacy is not None else data.get(name)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise CheckpointError(f"{file}: {name} is {type(section).__name__}, not an object; copy the model "
                              "folder again.")
    return {**defaults, **section}


def _int_field(section: dict, tower: str, key: str, file: str) -> int:
    value = section[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        square = " (DPL reads square images and patches, as transformers' CLIP does)" \
            if key in ("image_size", "patch_size") else ""
        raise UnsupportedModelError(f"{file}: {tower}.{key} is {value!r}; it must be a positive whole "
                                    f"number{square}.")
    return value


def _tower(section: dict, tower: str, file: str) -> dict:
    ints = {k: _int_field(section, tower, k, file) for k in
            ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    if ints["hidden_size"] % ints["num_attention_heads"]:
        raise UnsupportedModelError(f"{file}: {tower}.hidden_size {ints['hidden_size']} is not a multiple "
                                    f"of {tower}.num_attention_heads {ints['num_attention_heads']}.")
    act = section["hidden_act"]
    if act not in ACTIVATIONS:
        raise UnsupportedModelError(f"{file}: {tower}.hidden_act {act!r} is not one of CLIP's activations "
                                    f"{list(ACTIVATIONS)}; DPL cannot build this tower.")
    eps = section["layer_norm_eps"]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise UnsupportedModelError(f"{file}: {tower}.layer_norm_eps is {eps!r}; it must be a positive "
                                    "number.")
    return {"width": ints["hidden_size"], "mlp_width": ints["intermediate_size"],
            "layers": ints["num_hidden_layers"], "heads": ints["num_attention_heads"],
            "act": act, "eps": float(eps)}


def text_readout(eos_token_id, file: str) -> str:
    """How transformers pools this text tower, refused unless it is CLIP's EOT token.

    transformers' CLIPTextTransformer reads the feature at ``argmax(input_ids)`` when
    ``eos_token_id == 2`` (legacy configs) and otherwise at the *first* position whose id equals
    ``eos_token_id``. With CLIP's BPE the end-of-text id 49407 is the largest id, so both rules pick
    the first EOT token, which is where DPL reads (``argmax`` of the ids). Any other id is a read-out
    DPL does not do.
    """
    if eos_token_id == [EOT_ID]:  # compared with the ids element-wise: the same as 49407 (the
        eos_token_id = EOT_ID      # legacy rule needs the integer 2; [2] reads at the first token 2)
    if isinstance(eos_token_id, bool) or not isinstance(eos_token_id, int) or \
            eos_token_id not in (LEGACY_EOS_ID, EOT_ID):
        raise UnsupportedModelError(
            f"{file}: text_config.eos_token_id is {eos_token_id!r}, so transformers reads this model's text "
            f"feature at the first token {eos_token_id!r}; DPL prompts CLIP text towers read out at the "
            f"end-of-text token ({EOT_ID}, or the legacy {LEGACY_EOS_ID} = the largest id).")
    return "argmax (legacy eos_token_id 2)" if eos_token_id == LEGACY_EOS_ID else f"first token {EOT_ID}"


def read_architecture(folder: str) -> dict:
    """The CLIP architecture of a transformers folder's ``config.json`` (refusing what DPL cannot
    prompt). Returns {"text", "vision", "embed_dim", "context_length", "image_size", "patch_size",
    "readout", "config"} (the last: the config.json path)."""
    file = os.path.join(folder, CONFIG_FILE)
    data = read_json(file, "a transformers model config")
    model_type, archs = data.get("model_type"), data.get("architectures") or []
    if model_type != "clip" or (archs and "CLIPModel" not in archs):
        shown = f"model_type {model_type!r}" + (f", architectures {archs}" if archs else "")
        raise UnsupportedModelError(
            f"{file}: {shown} is not a transformers CLIPModel; DPL prompts CLIP's two towers "
            "(model_type \"clip\", architectures [\"CLIPModel\"]), not SigLIP, CLIPSeg, AltCLIP, "
            "single-tower or classification models.")
    text = _sub_config(data, "text_config", TEXT_DEFAULTS, file)
    vision = _sub_config(data, "vision_config", VISION_DEFAULTS, file)
    for name, section, want in (("text_config", text, "clip_text_model"),
                                ("vision_config", vision, "clip_vision_model")):
        if section.get("model_type", want) != want:
            raise UnsupportedModelError(f"{file}: {name}.model_type is {section['model_type']!r}, not "
                                        f"{want!r}; DPL prompts CLIP's own transformer towers only.")
    if vision["num_channels"] != 3:
        raise UnsupportedModelError(f"{file}: vision_config.num_channels is {vision['num_channels']!r}; DPL "
                                    "reads RGB images (3 channels).")
    vocab = text["vocab_size"]
    if vocab != CLIP_VOCAB_SIZE:
        raise UnsupportedModelError(f"{file}: text_config.vocab_size is {vocab!r}, but CLIP's BPE tokenizer "
                                    f"(the only one DPL uses) has {CLIP_VOCAB_SIZE} tokens.")
    readout = text_readout(text["eos_token_id"], file)
    arch = {"text": _tower(text, "text_config", file), "vision": _tower(vision, "vision_config", file),
            "context_length": _int_field(text, "text_config", "max_position_embeddings", file),
            "image_size": _int_field(vision, "vision_config", "image_size", file),
            "patch_size": _int_field(vision, "vision_config", "patch_size", file),
            "embed_dim": _int_field({"projection_dim": data.get("projection_dim", PROJECTION_DIM_DEFAULT)},
                                    "config", "projection_dim", file),
            "readout": readout, "config": file}
    if arch["patch_size"] > arch["image_size"]:
        raise UnsupportedModelError(f"{file}: vision_config.patch_size {arch['patch_size']} is larger than "
                                    f"vision_config.image_size {arch['image_size']}.")
    return arch


def architecture_sha256(arch: dict) -> str:
    """Hash of what the architecture builds (not of the file's bytes: a re-save by another
    transformers version gives the same hash)."""
    keys = ("text", "vision", "context_length", "image_size", "patch_size", "embed_dim")
    text = json.dumps({k: arch[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def open_clip_model_cfg(arch: dict) -> dict:
    """The open_clip ``CLIP(**cfg)`` arguments of this architecture (activations set afterwards)."""
    def mlp_ratio(t):  # open_clip builds int(width * mlp_ratio) hidden units: land exactly on them
        return (t["mlp_width"] + 0.5) / t["width"]

    t, v = arch["text"], arch["vision"]
    return {
        "embed_dim": arch["embed_dim"], "quick_gelu": False,
        "vision_cfg": {"layers": v["layers"], "width": v["width"], "head_width": v["width"] // v["heads"],
                       "mlp_ratio": mlp_ratio(v), "patch_size": arch["patch_size"],
                       "image_size": arch["image_size"], "norm_kwargs": {"eps": v["eps"]}},
        "text_cfg": {"context_length": arch["context_length"], "vocab_size": CLIP_VOCAB_SIZE,
                     "width": t["width"], "heads": t["heads"], "layers": t["layers"],
                     "mlp_ratio": mlp_ratio(t), "norm_kwargs": {"eps": t["eps"]}},
    }


def activation(name: str) -> torch.nn.Module:
    from open_clip.transformer import QuickGELU

    if name == "quick_gelu":
        return QuickGELU()
    return torch.nn.GELU(approximate="none" if name == "gelu" else "tanh")


# ----------------------------------------------------------------------------------------------
# Tokenizer files
# ----------------------------------------------------------------------------------------------
_CLIP_BPE = None


def clip_bpe() -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """(vocabulary token -> id, merges) of the BPE tokenizer DPL uses, with transformers' names of
    the special tokens."""
    global _CLIP_BPE
    if _CLIP_BPE is None:
        from open_clip.tokenizer import SimpleTokenizer

        tok = SimpleTokenizer()
        vocab = dict(tok.encoder)
        vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
        vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
        merges = [m for m, _ in sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])]
        _CLIP_BPE = (vocab, merges)
    return _CLIP_BPE


def _vocab_difference(vocab, ours: Dict[str, int]) -> Optional[str]:
    if not isinstance(vocab, dict):
        return "it is not a token -> id object"
    if len(vocab) != len(ours):
        return f"it has {len(vocab)} tokens, CLIP's BPE has {len(ours)}"
    for token, idx in vocab.items():
        if ours.get(token) != idx:
            want = ours.get(token)
            return (f"token {token!r} is id {idx!r} there but " +
                    (f"{want} in CLIP's BPE" if want is not None else "not in CLIP's BPE"))
    return None


def _merges_difference(merges, ours: List[Tuple[str, str]]) -> Optional[str]:
    # transformers' CLIP tokenizer, like CLIP's, uses the first 49152 - 256 - 2 merges
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in merges][:len(ours)]
    if len(merges) != len(ours):
        return f"it has {len(merges)} merges, CLIP's BPE has {len(ours)}"
    for rank, (have, want) in enumerate(zip(merges, ours)):
        if have != want:
            return f"merge {rank} is {' '.join(have)!r} there but {' '.join(want)!r} in CLIP's BPE"
    return None


def check_tokenizer(folder: str) -> List[str]:
    """Refuse tokenizer files whose vocabulary or merges differ from CLIP's BPE (DPL tokenizes with
    CLIP's). Returns the files that were compared."""
    vocab, merges = clip_bpe()
    checked = []

    def refuse(file, field, why):
        raise UnsupportedModelError(f"{file}: the tokenizer's {field} differs from CLIP's BPE ({why}); DPL "
                                    "tokenizes with CLIP's BPE only, so this model cannot be prompted.")

    file = os.path.join(folder, "vocab.json")
    if os.path.isfile(file):
        why = _vocab_difference(read_json(file, "the tokenizer's vocabulary"), vocab)
        if why:
            refuse(file, "vocabulary", why)
        checked.append("vocab.json")
    file = os.path.join(folder, "merges.txt")
    if os.path.isfile(file):
        try:
            with open(file, encoding="utf-8-sig") as fh:
                lines = fh.read().strip().split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{file} could not be read ({type(exc).__name__}); copy the model folder "
                                  "again.") from None
        lines = lines[1:] if lines and lines[0].startswith("#version") else lines
        why = _merges_difference(lines, merges)
        if why:
            refuse(file, "merges", why)
        checked.append("merges.txt")
    file = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(file):
        model = read_json(file, "the fast tokenizer").get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE":
            refuse(file, "model.type", f"{(model or {}).get('type')!r} instead of BPE"
                   if isinstance(model, dict) else "no BPE model")
        why = _vocab_difference(model.get("vocab"), vocab)
        if why:
            refuse(file, "model.vocab", why)
        why = _merges_difference(model.get("merges") or [], merges)
        if why:
            refuse(file, "model.merges", why)
        checked.append("tokenizer.json")
    return checked


# ----------------------------------------------------------------------------------------------
# preprocessor_config.json
# ----------------------------------------------------------------------------------------------
def _size_of(value) -> Optional[Tuple[int, int]]:
    """transformers' size/crop_size forms: N, {"height", "width"}, {"shortest_edge"}."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    return None


def read_preprocess(folder: str, image_size: int) -> Tuple[dict, str]:
    """({"size", "mean", "std", "interpolation"}, a description of where they came from).

    The size is the vision tower's (its position embeddings fix it); mean, std and resample come from
    ``preprocessor_config.json`` when present, else CLIP's defaults (what transformers' CLIP image
    processor uses). What DPL cannot reproduce is said in the description.
    """
    out = {"size": (image_size, image_size), "mean": tuple(OPENAI_MEAN), "std": tuple(OPENAI_STD),
           "interpolation": "bicubic"}
    file = os.path.join(folder, PREPROCESSOR_FILE)
    if not os.path.isfile(file):
        return out, f"CLIP's defaults (no {PREPROCESSOR_FILE})"
    data = read_json(file, "the image processor config")
    notes = []
    if data.get("do_rescale", True) is False or \
            abs(float(data.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise UnsupportedModelError(f"{file}: do_rescale/rescale_factor do not scale pixels by 1/255; DPL "
                                    "feeds images scaled to [0, 1].")
    if data.get("do_normalize", True) is False:
        out["mean"], out["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        notes.append("do_normalize false: no normalization")
    else:
        for key, field in (("image_mean", "mean"), ("image_std", "std")):
            value = data.get(key)
            if value is None:
                continue
            value = [value] * 3 if isinstance(value, (int, float)) else value
            if (not isinstance(value, list) or len(value) != 3
                    or not all(isinstance(v, (int, float)) for v in value)):
                raise CheckpointError(f"{file}: {key} is {value!r}; give three numbers (R, G, B).")
            out[field] = tuple(float(v) for v in value)
    resample = data.get("resample", 3)
    if resample in RESAMPLE:
        out["interpolation"] = RESAMPLE[resample]
    else:
        notes.append(f"resample {resample!r} is not one of {sorted(RESAMPLE)} (nearest, bilinear, bicubic): "
                     "using bicubic")
    crop = _size_of(data.get("crop_size")) if data.get("do_center_crop", True) else None
    resize = _size_of(data.get("size")) if data.get("do_resize", True) else None
    final = crop or resize
    if final and final != out["size"]:
        notes.append(f"its crop/size {final} is not the model's image size {out['size']}: using the latter")
    elif crop and resize and resize[0] != crop[0]:
        notes.append(f"it resizes to {resize[0]} before cropping {crop[0]}; DPL resizes to {crop[0]}")
    return out, PREPROCESSOR_FILE + (f" ({'; '.join(notes)})" if notes else "")


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------
def weight_files(folder: str) -> List[str]:
    """The weight file(s) of a transformers folder, as transformers picks them (safetensors first)."""
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return [os.path.join(folder, name)]
    for name in INDEX_FILES:
        index = os.path.join(folder, name)
        if os.path.isfile(index):
            weight_map = read_json(index, "a sharded checkpoint index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index} has no weight_map; copy the model folder again.")
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
            if missing:
                raise CheckpointError(f"{index} lists {missing[0]}, which is not in {folder}; copy the "
                                      "model folder again.")
            return [os.path.join(folder, s) for s in shards]
    raise CheckpointError(f"{folder} has a config.json but no weights: a transformers CLIP folder holds "
                          f"{' or '.join(WEIGHT_FILES)} (or a sharded {' / '.join(INDEX_FILES)}).")


def read_weights(files: List[str]) -> Dict[str, torch.Tensor]:
    """The state dict of one or more shards (safetensors, or torch files read with
    ``weights_only=True``; never a TorchScript archive)."""
    state = {}
    for file in files:
        try:
            if file.endswith(".safetensors"):
                from safetensors.torch import load_file

                part = load_file(file, device="cpu")
            else:
                part = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch and safetensors raise many types for corrupt files
            raise CheckpointError(f"Could not read the CLIP weights {file} ({type(exc).__name__}: "
                                  f"{weights_only_reason(exc)}); the file is corrupt, truncated or not a weights-only "
                                  "checkpoint: copy it again.") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise CheckpointError(f"{file} is not a state dict of tensors; copy the model folder again.")
        state.update(part)
    return state


_LAYER = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")
_BLOCK = {"layer_norm1.weight": "ln_1.weight", "layer_norm1.bias": "ln_1.bias",
          "layer_norm2.weight": "ln_2.weight", "layer_norm2.bias": "ln_2.bias",
          "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
          "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
          "self_attn.out_proj.weight": "attn.out_proj.weight",
          "self_attn.out_proj.bias": "attn.out_proj.bias"}
_QKV = ("q_proj", "k_proj", "v_proj")
_FLAT = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
         "text_model.embeddings.position_embedding.weight": "positional_embedding",
         "text_model.final_layer_norm.weight": "ln_final.weight",
         "text_model.final_layer_norm.bias": "ln_final.bias",
         "vision_model.embeddings.class_embedding": "visual.class_embedding",
         "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
         "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
         "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
         "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
         "vision_model.post_layernorm.weight": "visual.ln_post.weight",
         "vision_model.post_layernorm.bias": "visual.ln_post.bias",
         "logit_scale": "logit_scale"}
_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
IGNORED_KEYS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def expected_keys(arch: dict) -> List[str]:
    keys = [*_FLAT, *_TRANSPOSED]
    for tower, prefix in (("text", "text_model"), ("vision", "vision_model")):
        for i in range(arch[tower]["layers"]):
            for suffix in [*_BLOCK, *(f"self_attn.{p}.{w}" for p in _QKV for w in ("weight", "bias"))]:
                keys.append(f"{prefix}.encoder.layers.{i}.{suffix}")
    return keys


def to_open_clip_state(state: Dict[str, torch.Tensor], arch: dict, source: str) -> Dict[str, torch.Tensor]:
    """transformers CLIPModel weights -> open_clip CLIP weights (same values, open_clip's layout)."""
    want = expected_keys(arch)
    have = {k for k in state if k not in IGNORED_KEYS}
    missing = [k for k in want if k not in have]
    unexpected = sorted(have - set(want))
    if unexpected:
        raise UnsupportedModelError(
            f"{source} holds weights no standard CLIPModel has ({len(unexpected)}, e.g. {unexpected[:2]}); "
            "DPL reads transformers' CLIPModel with CLIP's ViT and text towers only (config.json must give "
            "the weights' layer counts).")
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} weight(s) of the CLIPModel its config.json "
                              f"describes (e.g. {missing[:2]}); check the folder's config.json and weights.")
    out = {}
    for key, value in state.items():
        if key in IGNORED_KEYS:
            continue
        if key in _FLAT:
            out[_FLAT[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
        else:
            tower, layer, rest = _LAYER.match(key).groups()
            prefix = f"{'visual.' if tower == 'vision' else ''}transformer.resblocks.{layer}."
            if rest in _BLOCK:
                out[prefix + _BLOCK[rest]] = value
    for tower, n in (("text", arch["text"]["layers"]), ("vision", arch["vision"]["layers"])):
        for i in range(n):
            hf = f"{tower}_model.encoder.layers.{i}.self_attn."
            prefix = f"{'visual.' if tower == 'vision' else ''}transformer.resblocks.{i}.attn."
            out[prefix + "in_proj_weight"] = torch.cat([state[f"{hf}{p}.weight"] for p in _QKV])
            out[prefix + "in_proj_bias"] = torch.cat([state[f"{hf}{p}.bias"] for p in _QKV])
    return out


def build(folder: str, state: Dict[str, torch.Tensor], weights: str):
    """A frozen-ready open_clip ``CLIP`` with these transformers weights; returns (model, arch,
    description for the log). ``weights`` names the file(s) in messages."""
    from open_clip.model import CLIP, set_model_preprocess_cfg

    from dpl.clip_loader import _check_walkable

    arch = read_architecture(folder)
    tokenizer_files = check_tokenizer(folder)
    model = CLIP(**open_clip_model_cfg(arch))
    for tower, blocks in (("text", model.transformer.resblocks), ("vision", model.visual.transformer.resblocks)):
        for block in blocks:
            block.mlp.gelu = activation(arch[tower]["act"])
    _check_walkable(model, arch["config"])
    mapped = to_open_clip_state(state, arch, weights)
    try:
        result = model.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split("\n\t", 1)[-1].split())[:300]
        raise CheckpointError(f"{weights} does not fit {arch['config']} ({detail}); the folder's config.json "
                              "and weights belong to different models: copy the folder again.") from None
    missing = [k for k in result.missing_keys if k != "attn_mask"]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{weights} does not fit {arch['config']} (missing {missing[:2]}, unexpected "
                              f"{result.unexpected_keys[:2]}); copy the folder again.")
    preprocess, pre_source = read_preprocess(folder, arch["image_size"])
    set_model_preprocess_cfg(model, preprocess)
    t, v = arch["text"], arch["vision"]
    description = (
        f"Hugging Face CLIP folder {folder}: ViT {v['layers']}x{v['width']} ({v['heads']} heads, patch "
        f"{arch['patch_size']}, image {arch['image_size']}, {v['act']}, eps {v['eps']:g}), text "
        f"{t['layers']}x{t['width']} ({t['heads']} heads, context {arch['context_length']}, {t['act']}, "
        f"eps {t['eps']:g}, read out at the {arch['readout']}), projection {arch['embed_dim']}; tokenizer "
        f"{'files ' + ', '.join(tokenizer_files) + ' match' if tokenizer_files else 'files absent: vocab_size matches'}"
        f" CLIP's BPE; preprocessing from {pre_source}: size {preprocess['size']}, mean {preprocess['mean']}, "
        f"std {preprocess['std']}, interpolation {preprocess['interpolation']}")
    return model, arch, description


def folder_preprocess(folder: str) -> dict:
    """The preprocessing of a transformers CLIP folder without reading its weights."""
    return read_preprocess(folder, read_architecture(folder)["image_size"])[0]
