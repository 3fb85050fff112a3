"""The DPL model: frozen CLIP + prompted encoders, and the two builders (docs/METHOD.md: the prompted block, the supernet block, the train stage).

``build_fixed_model`` gives the train-stage model (one prompt per block, lengths from the search
artifact); ``build_supernet_model`` gives the search-stage supernet (prompt options mixed by α).
Both return a ``DPLCLIP`` whose only learnable tensors live in ``prompt_learner``.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dpl.distributed import shard_classes
from dpl.encoders import (ImageTower, PromptedImageEncoder, PromptedTextEncoder,
                          SupernetImageEncoder, SupernetTextEncoder, TextTower, is_vit)
from dpl.prompts import (BlockPrompts, PromptConfigError, PromptLearner, SupernetPrompts,
                         check_lengths, check_options)
from dpl.text_inputs import class_token_inputs


class DPLCLIP(nn.Module):
    """Frozen CLIP + prompted text/image encoders. Only ``prompt_learner`` holds learnable tensors.

    text_encoder / image_encoder: a Prompted* or Supernet* encoder over the frozen CLIP towers.
    prompt_learner: ``PromptLearner``; its ``text`` / ``vision`` parts give the encoders' prompt
    arguments (``encoder_inputs()``).
    Class inputs (``token_embeddings`` (C, L, W), ``eot_index`` (C,)) are non-persistent buffers,
    rebuilt by ``set_classnames`` (e.g. base -> new evaluation). L = max(EOT) + 1 (exact, see
    ``dpl.text_inputs``); set ``truncate_text = False`` before ``set_classnames`` for the full
    context length (tests compare the two).
    The encoders share CLIP's modules; ``model.to(device)`` moves them, but buffers registered only
    on the original ``clip_model`` (its text ``attn_mask``) stay put: build on the target device
    (``load_clip(..., device=...)``) or move ``clip_model`` too if you also call it directly.
    """

    truncate_text = True  # run the text tower on max(EOT) + 1 tokens (exact)

    def __init__(self, text_encoder: TextTower, image_encoder: ImageTower,
                 prompt_learner: PromptLearner, logit_scale: torch.Tensor,
                 classnames: Sequence[str], text_input: str = "default", dataset_name: str = ""):
        super().__init__()
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.prompt_learner = prompt_learner
        self.register_buffer("logit_scale", logit_scale.detach().clone())
        self.text_input = text_input
        self.dataset_name = dataset_name
        self.set_classnames(classnames)
        self.train(False)

    # -- class inputs ---------------------------------------------------------------------------
    def set_classnames(self, classnames: Sequence[str]) -> None:
        """(Re)build the class token inputs; prompts are untouched."""
        emb, eot = class_token_inputs(self.text_encoder.token_embedding, list(classnames),
                                      self.text_input, self.dataset_name,
                                      self.text_encoder.context_length, self.truncate_text)
        self.classnames = list(classnames)
        self.register_buffer("token_embeddings", emb, persistent=False)
        self.register_buffer("eot_index", eot, persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    # -- encoders -------------------------------------------------------------------------------
    def encode_text(self, classes: torch.Tensor = None) -> torch.Tensor:
        """All classes in one batched pass: (num_classes, embed_dim), L2-normalised.

        classes: optional (N,) class indices -> (N, embed_dim) for those only (search class sampling).
        Under torch.distributed each rank encodes ~C/N classes (``dpl.distributed.shard_classes``).
        """
        def encode(emb, eot):
            return self.text_encoder(emb, eot, *self.prompt_learner.text.encoder_inputs())

        emb, eot = self.token_embeddings, self.eot_index
        if classes is not None:
            emb, eot = emb[classes], eot[classes]
        feats = shard_classes(encode, emb, eot)
        return F.normalize(feats, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, embed_dim), L2-normalised."""
        feats = self.image_encoder(images, *self.prompt_learner.vision.encoder_inputs())
        return F.normalize(feats, dim=-1)

    def forward(self, images: torch.Tensor, text_features: torch.Tensor = None) -> torch.Tensor:
        """Logits (B, C) = exp(logit_scale) * img @ txt.T; the text is encoded only if not given.

        Pass ``text_features=model.encode_text()`` to reuse one text pass for a whole evaluation.
        """
        if text_features is None:
            text_features = self.encode_text()
        image_features = self.encode_image(images)
        return self.logit_scale.exp() * image_features @ text_features.to(image_features.dtype).t()

    # -- parameters -----------------------------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """[text_alpha, vision_alpha] for the supernet, [] for a fixed configuration."""
        return self.prompt_learner.arch_parameters()

    def prompt_parameters(self) -> List[nn.Parameter]:
        """All prompt tensors (never α)."""
        return self.prompt_learner.prompt_parameters()

    def train(self, mode: bool = True) -> "DPLCLIP":
        # CLIP stays in eval mode (a ResNet tower's BatchNorm must not update its statistics).
        self.training = mode
        self.prompt_learner.train(mode)
        self.text_encoder.eval()
        self.image_encoder.eval()
        return self


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------
def model_dims(clip_model: nn.Module) -> dict:
    """Depth and token width of both towers, read from the model.

    {"text": {"num_blocks", "width"}, "vision": {"num_blocks", "width"}}; a non-ViT image tower has
    no blocks to prompt: num_blocks 0, width 0.
    """
    visual = clip_model.visual
    vit = is_vit(visual)
    return {
        "text": {"num_blocks": len(clip_model.transformer.resblocks),
                 "width": int(clip_model.positional_embedding.shape[-1])},
        "vision": {"num_blocks": len(visual.transformer.resblocks) if vit else 0,
                   "width": int(visual.positional_embedding.shape[-1]) if vit else 0},
    }


def _device(clip_model: nn.Module) -> torch.device:
    return next(clip_model.parameters()).device


def _vision_lengths(clip_model: nn.Module, lengths: Sequence[int], num_blocks: int) -> List[int]:
    """Non-ViT towers accept only all-zero lengths (any count), and then have no blocks."""
    if not is_vit(clip_model.visual):
        if any(int(n) != 0 for n in lengths):
            raise PromptConfigError(
                f"vision lengths {list(lengths)} ask for image prompts, but the CLIP image tower is "
                "not a ViT (e.g. a ResNet backbone); set every vision length to 0 or use a ViT.")
        return []
    return check_lengths(lengths, num_blocks, "vision")


def build_fixed_model(clip_model: nn.Module, classnames: Sequence[str], text_lengths: Sequence[int],
                      vision_lengths: Sequence[int], text_input: str = "default",
                      dataset_name: str = "", init_std: float = 0.02) -> DPLCLIP:
    """Train-stage model: block i of each branch gets a fresh ``N(0, init_std²)`` prompt of its length."""
    dims, device = model_dims(clip_model), _device(clip_model)
    text = check_lengths(text_lengths, dims["text"]["num_blocks"], "text")
    vision = _vision_lengths(clip_model, vision_lengths, dims["vision"]["num_blocks"])
    learner = PromptLearner(
        text=BlockPrompts(text, dims["text"]["width"], init_std, device),
        vision=BlockPrompts(vision, dims["vision"]["width"], init_std, device),
    )
    return DPLCLIP(PromptedTextEncoder(clip_model), PromptedImageEncoder(clip_model), learner,
                   clip_model.logit_scale, classnames, text_input, dataset_name)


def build_supernet_model(clip_model: nn.Module, classnames: Sequence[str],
                         text_options: Sequence[int], vision_options: Sequence[int],
                         alpha_init_std: float = 1e-3, prompt_init: str = "official",
                         impl: str = "fused", text_input: str = "default", dataset_name: str = "",
                         prompt_init_std: float = 0.02, real_attention: str = "scores") -> DPLCLIP:
    """Search-stage supernet: every block of each branch mixes its options with softmax(α_i).

    prompt_init: "official" (image N(0,1), text U[0,1)) or "normal" (N(0, prompt_init_std²)).
    impl: "fused" (shared projections, default) or "reference" (one attention call per option).
    real_attention: the fused path's real-token computation, "scores" (default) or "flex" (compiled
    flex_attention, CUDA with torch >= 2.9; ``dpl.attention.real_path_for``).
    """
    dims, device = model_dims(clip_model), _device(clip_model)
    t_opts = check_options(text_options, "text")
    v_opts = check_options(vision_options, "vision")
    if not is_vit(clip_model.visual) and len(v_opts) > 1:
        raise PromptConfigError(
            f"TRAINER.DPL.SEARCH.VISION_OPTIONS = {v_opts} asks for image prompts, but the CLIP image "
            "tower is not a ViT (e.g. a ResNet backbone); set it to [0] or use a ViT.")
    common = dict(alpha_init_std=alpha_init_std, prompt_init=prompt_init,
                  prompt_init_std=prompt_init_std, device=device)
    learner = PromptLearner(
        text=SupernetPrompts(dims["text"]["num_blocks"], t_opts, dims["text"]["width"], "text",
                             **common),
        vision=SupernetPrompts(dims["vision"]["num_blocks"], v_opts, dims["vision"]["width"],
                               "vision", **common),
    )
    return DPLCLIP(SupernetTextEncoder(clip_model, impl, real_attention),
                   SupernetImageEncoder(clip_model, impl, real_attention),
                   learner, clip_model.logit_scale, classnames, text_input, dataset_name)
