"""OpenAI's ``clip.model`` API (sequence-first modules) as a thin adapter over open_clip's CLIP.

open_clip builds the model and loads the weights; this module only changes the calling convention
of the transformers to OpenAI's: ``model.transformer(x)``, ``model.visual.transformer(x)`` and every
block in their ``resblocks`` take and return ``(tokens, batch, width)`` tensors, and text blocks
carry the causal ``attn_mask`` themselves, as OpenAI's blocks do. Attention, blocks and weights are
open_clip's: the adapter classes subclass open_clip's and are applied to an open_clip model in place
(``CLIP.from_open_clip``), so no parameter is copied and state-dict keys stay OpenAI's.

Layout guard: a text transformer (or block) called without an explicit mask must get exactly
``context_length`` tokens in dim 0, and any transformer given a tensor whose dim 1 has the expected
token count but whose dim 0 does not is treated as a batch-first mix-up; both raise ValueError.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from open_clip import modified_resnet as _oc_resnet
from open_clip import transformer as _oc
from open_clip.model import CLIP as _OpenClipCLIP
from open_clip.model import build_model_from_openai_state_dict, convert_weights_to_lp

from dpl.clip_loader import CheckpointError

__all__ = ["CLIP", "ModifiedResNet", "ResidualAttentionBlock", "Transformer", "VisionTransformer",
           "build_model", "convert_weights"]


def _check_sequence_first(x: torch.Tensor, width: int, num_tokens: Optional[int], strict: bool,
                          where: str) -> None:
    """Raise ValueError unless ``x`` can be a sequence-first ``(tokens, batch, width)`` input.

    strict: dim 0 must equal ``num_tokens`` (text with its built-in causal mask). Otherwise only the
    clear batch-first signature (dim 1 == num_tokens != dim 0) is refused, since image prompts may
    lengthen the sequence.
    """
    fix = ("CLIP modules here follow OpenAI's sequence-first layout: permute a batch-first tensor "
           "with x.permute(1, 0, 2) before the call and back after it.")
    if x.dim() != 3 or x.shape[-1] != width:
        raise ValueError(f"{where} expects a (tokens, batch, {width}) tensor, got shape "
                         f"{tuple(x.shape)}. {fix}")
    if num_tokens is None:
        return
    if x.shape[1] == num_tokens and x.shape[0] != num_tokens:
        raise ValueError(f"{where} got shape {tuple(x.shape)}, which looks batch-first (its "
                         f"{num_tokens} tokens are in dim 1). {fix}")
    if strict and x.shape[0] != num_tokens:
        raise ValueError(f"{where} expects {num_tokens} tokens in dim 0 of a (tokens, batch, "
                         f"{width}) tensor, got shape {tuple(x.shape)}. {fix}")


class ResidualAttentionBlock(_oc.ResidualAttentionBlock):
    """open_clip's block, sequence-first, using its own ``attn_mask`` when none is passed (OpenAI)."""

    def attention(self, q_x, k_x=None, v_x=None, attn_mask=None):
        if attn_mask is None:
            attn_mask = self.attn_mask
        return super().attention(q_x, k_x, v_x, attn_mask=attn_mask)

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        strict = attn_mask is None and self.attn_mask is not None
        _check_sequence_first(q_x, self.ln_1.normalized_shape[0], self.num_tokens, strict,
                              self.where)
        return super().forward(q_x, k_x, v_x, attn_mask=attn_mask)

    @classmethod
    def adopt(cls, block: _oc.ResidualAttentionBlock, attn_mask: Optional[torch.Tensor],
              num_tokens: int, where: str) -> "ResidualAttentionBlock":
        """Turn an open_clip block into this class in place (same parameters)."""
        if type(block) is not _oc.ResidualAttentionBlock:
            raise TypeError(f"clip/model.py supports open_clip's standard ResidualAttentionBlock "
                            f"only, got {type(block).__name__}; load an OpenAI-format CLIP model.")
        block.__class__ = cls
        block.attn.batch_first = False  # nn.MultiheadAttention reads this flag on every call
        block.register_buffer("attn_mask", attn_mask, persistent=False)
        block.num_tokens, block.where = num_tokens, where
        return block


class Transformer(_oc.Transformer):
    """open_clip's transformer with OpenAI's interface: ``(tokens, batch, width)`` in and out.

    Attributes as OpenAI's: ``width``, ``layers``, ``resblocks`` (an ``nn.Sequential``).
    """

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        strict = attn_mask is None and self.attn_mask is not None
        _check_sequence_first(x, self.width, self.num_tokens, strict, self.where)
        # open_clip's loop (grad checkpointing included) takes batch-first input and, with
        # batch_first=False, transposes it back for the (now sequence-first) blocks.
        return super().forward(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)

    @classmethod
    def adopt(cls, transformer: _oc.Transformer, attn_mask: Optional[torch.Tensor],
              num_tokens: int, where: str) -> "Transformer":
        """Turn an open_clip transformer (and its blocks) into this class in place."""
        transformer.__class__ = cls
        transformer.batch_first = False
        # here only for the layout check; each block applies its own copy, as OpenAI's blocks do
        transformer.register_buffer("attn_mask", attn_mask, persistent=False)
        transformer.num_tokens, transformer.where = num_tokens, where
        for block in transformer.resblocks:
            ResidualAttentionBlock.adopt(block, attn_mask, num_tokens, f"{where} block")
        # OpenAI's resblocks is callable as a whole; same child names, so same state-dict keys.
        transformer.resblocks = torch.nn.Sequential(*transformer.resblocks)
        return transformer


class VisionTransformer(_oc.VisionTransformer):
    """open_clip's ViT image tower whose ``transformer`` is sequence-first (OpenAI's layout)."""

    @property
    def input_resolution(self) -> int:
        return self.image_size[0]

    def forward(self, x: torch.Tensor):
        """x: (batch, 3, H, W) -> (batch, output_dim) (plus tokens if ``output_tokens``)."""
        x = self._embeds(x)  # (batch, tokens, width)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        pooled, tokens = self._pool(x)
        if self.proj is not None:
            pooled = pooled @ self.proj
        return (pooled, tokens) if self.output_tokens else pooled


class ModifiedResNet(_oc_resnet.ModifiedResNet):
    """open_clip's ResNet image tower with OpenAI's ``input_resolution`` and input cast."""

    @property
    def input_resolution(self) -> int:
        return self.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.type(self.conv1.weight.dtype))


class CLIP(_OpenClipCLIP):
    """open_clip's CLIP with OpenAI's interface (``dtype``, sequence-first transformers, logits).

    Build it with ``build_model(state_dict)`` or ``CLIP.from_open_clip(model)``.
    """

    @classmethod
    def from_open_clip(cls, model: _OpenClipCLIP) -> "CLIP":
        """Adapt an open_clip ``CLIP`` in place (it keeps its parameters) and return it."""
        if isinstance(model, cls):
            return model
        if type(model) is not _OpenClipCLIP:
            raise TypeError(f"CLIP.from_open_clip needs an open_clip.model.CLIP, got "
                            f"{type(model).__name__}; load an OpenAI-format checkpoint.")
        visual = model.visual
        if not isinstance(visual, (_oc.VisionTransformer, _oc_resnet.ModifiedResNet)):
            raise TypeError(f"clip/model.py supports ViT and ModifiedResNet image towers, got "
                            f"{type(visual).__name__}; load an OpenAI-format checkpoint.")
        model.__class__ = cls
        Transformer.adopt(model.transformer, model.attn_mask, model.context_length,
                          "clip text transformer")
        if isinstance(visual, _oc.VisionTransformer):
            visual.__class__ = VisionTransformer
            Transformer.adopt(visual.transformer, None, visual.positional_embedding.shape[0],
                              "clip visual transformer")
        else:
            visual.__class__ = ModifiedResNet
        return model

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def build_attention_mask(self) -> torch.Tensor:
        """Causal mask (context_length, context_length): 0 on and below the diagonal, -inf above."""
        n = self.context_length
        return torch.full((n, n), float("-inf")).triu_(1)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """image: (batch, 3, H, W) -> (batch, embed_dim)."""
        features = self.visual(image.type(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """text: (batch, context_length) token ids -> (batch, embed_dim), features at EOT."""
        x = self.token_embedding(text).type(self.dtype)  # (batch, tokens, width)
        x = x + self.positional_embedding.type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, image: torch.Tensor, text: torch.Tensor):
        """-> (logits_per_image (n_image, n_text), logits_per_text (n_text, n_image))."""
        image_features = self.encode_image(image, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias
        return logits_per_image, logits_per_image.t()


def convert_weights(model: torch.nn.Module) -> None:
    """Cast matmul weights (linear, conv, attention, projections) to fp16 in place, like OpenAI's."""
    convert_weights_to_lp(model, torch.float16)


def build_model(state_dict: dict, *unsupported, **unsupported_kw) -> CLIP:
    """Build the adapter ``CLIP`` from an OpenAI-format state dict, like OpenAI's ``build_model``.

    Depth, widths and tower type come from the weights. As OpenAI's, the result is in eval mode with
    fp16 matmul weights (call ``.float()`` for fp32). ``state_dict`` is not modified.
    """
    if unsupported or unsupported_kw:
        # MaPLe-style forks pass `design_details` to their own modified model file.
        raise TypeError(
            "clip.build_model(state_dict, ...) got extra arguments "
            f"{[type(a).__name__ for a in unsupported] + list(unsupported_kw)}: this trainer needs a "
            "modified CLIP model file (like MaPLe's fork), which clip/ does not provide; use our "
            "MaPLe/IVLP trainers instead (see docs/BRING_YOUR_TRAINER.md, 'Not supported')."
        )
    try:
        model = build_model_from_openai_state_dict(dict(state_dict))
    except (KeyError, RuntimeError, ValueError, AssertionError) as exc:
        raise CheckpointError(
            f"clip.build_model could not build a CLIP model from this state dict "
            f"({type(exc).__name__}: {exc}); pass the state dict of an OpenAI-format CLIP "
            "checkpoint (or of a model built by clip.build_model)."
        ) from exc
    return CLIP.from_open_clip(model)
