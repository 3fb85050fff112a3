"""CLIP's two encoders walked block by block with key/value prompts (docs/METHOD.md, "The prompted block").

The encoders hold references to the frozen open_clip modules (no copy, no fork of CLIP's model code)
and take the prompts as arguments, so any trainer can drive them with its own prompt tensors:

- ``PromptedTextEncoder(clip)(token_embeddings, eot_index, prompts)``: prompts[i] is (c_i, W) or None.
- ``PromptedImageEncoder(clip)(images, prompts)``.
- ``SupernetTextEncoder(clip, impl)(token_embeddings, eot_index, prompts, weights)``: prompts[i][k] is
  option k's prompt of block i (None for length 0); weights (num_blocks, num_options).
- ``SupernetImageEncoder(clip, impl)(images, prompts, weights)``.

Text prompts sit after SOS in the key sequence and are visible to every query (causal mask among the
real tokens). Image prompts are appended after CLS + patches, no mask, no positional embedding and
no ``ln_pre``. Outputs are unnormalised features (batch, embed_dim).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from dpl.attention import (IMPLS, REAL_CHOICES, REAL_PATHS, check_block, prompted_block, real_path_for,
                           supernet_block)
from dpl.prompts import PromptConfigError
from dpl.text_inputs import eot_inputs

# block_fn(i, block, x, mask, prompt_pos) -> x: what happens at block i.
BlockFn = Callable[[int, nn.Module, torch.Tensor, Optional[torch.Tensor], int], torch.Tensor]


def is_vit(visual: nn.Module) -> bool:
    """True for an open_clip ViT image tower whose blocks we can walk."""
    return all(hasattr(visual, n) for n in ("conv1", "class_embedding", "positional_embedding",
                                            "transformer", "ln_post"))


def _project(x: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Module):
        return projection(x)
    return x @ projection


def _check_count(prompts: Sequence, num_blocks: int, branch: str) -> None:
    if len(prompts) != num_blocks:
        raise PromptConfigError(f"The {branch} encoder has {num_blocks} blocks but got prompts for "
                                f"{len(prompts)}; pass one entry per block (None for no prompt).")


# ----------------------------------------------------------------------------------------------
# Text tower
# ----------------------------------------------------------------------------------------------
class TextTower(nn.Module):
    """The frozen CLIP text tower: token embeddings -> blocks -> ``ln_final`` at EOT -> projection."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        if getattr(clip_model, "text_pool_type", "argmax") != "argmax":
            raise TypeError(f"Only CLIP text towers read out at the EOT token are supported, got "
                            f"text_pool_type={clip_model.text_pool_type!r}.")
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.context_length = clip_model.context_length
        for block in self.transformer.resblocks:
            check_block(block)

    @property
    def num_blocks(self) -> int:
        return len(self.transformer.resblocks)

    @property
    def width(self) -> int:
        return self.positional_embedding.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.get_cast_dtype()

    def _encode(self, token_embeddings: torch.Tensor, eot_index: torch.Tensor,
                block_fn: BlockFn) -> torch.Tensor:
        """token_embeddings (N, L, W) without positions; eot_index (N,) -> features (N, embed_dim).

        L may be anything from ``max(eot_index) + 1`` to the context length: the positional
        embedding and the causal mask are sliced to L (tokens after the last EOT never reach an
        EOT read-out, so every L in that range gives the same features; ``dpl.text_inputs``).
        """
        length = token_embeddings.shape[1]
        if length > self.context_length:
            raise ValueError(f"Text inputs have {length} tokens but the CLIP text tower's context "
                             f"length is {self.context_length}.")
        x = token_embeddings.to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        mask = self.attn_mask[:length, :length]
        for i, block in enumerate(self.transformer.resblocks):
            x = block_fn(i, block, x, mask, 1)  # text prompts go right after SOS
        x = self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot_index])
        return _project(x, self.text_projection)


    def encode_ids(self, ids: torch.Tensor, truncate: bool = True) -> torch.Tensor:
        """Frozen CLIP (no prompts) on token ids (N, context_length) -> features (N, embed_dim).

        Equals open_clip's ``encode_text(ids)``; with ``truncate`` it runs on ``max(EOT) + 1`` tokens.
        """
        emb, eot = eot_inputs(self.token_embedding, ids, truncate)
        return self._encode(emb, eot, lambda i, blk, x, m, pos: blk(x, attn_mask=m))


class PromptedTextEncoder(TextTower):
    """Text tower with one fixed prompt per block (None / length 0 = the frozen block)."""

    def forward(self, token_embeddings: torch.Tensor, eot_index: torch.Tensor,
                prompts: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        _check_count(prompts, self.num_blocks, "text")
        return self._encode(token_embeddings, eot_index,
                            lambda i, blk, x, m, pos: prompted_block(blk, x, prompts[i], m, pos))


class SupernetTextEncoder(TextTower):
    """Text tower whose every block mixes its prompt options with ``weights[i]``.

    real_attention: "scores" or "flex", the fused path's real-token computation
    (``dpl.attention.real_path_for``, resolved at every forward pass on the input's device)."""

    def __init__(self, clip_model: nn.Module, impl: str = "fused", real_attention: str = "scores"):
        super().__init__(clip_model)
        self.impl = _check_impl(impl)
        self.real_attention = _check_real(real_attention)

    def forward(self, token_embeddings: torch.Tensor, eot_index: torch.Tensor,
                prompts: Sequence[Sequence[Optional[torch.Tensor]]],
                weights: torch.Tensor) -> torch.Tensor:
        _check_count(prompts, self.num_blocks, "text")
        real = real_path_for(token_embeddings.device, self.real_attention)
        return self._encode(token_embeddings, eot_index, lambda i, blk, x, m, pos: supernet_block(
            blk, x, prompts[i], weights[i], m, pos, self.impl, real))


# ----------------------------------------------------------------------------------------------
# Image tower
# ----------------------------------------------------------------------------------------------
class ImageTower(nn.Module):
    """The frozen CLIP image tower. ViT: walked block by block; ResNet: only ``visual(images)``."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.visual = clip_model.visual
        self.walkable = is_vit(self.visual)
        if self.walkable:
            if getattr(self.visual, "attn_pool", None) is not None or \
                    getattr(self.visual, "pool_type", "tok") != "tok" or \
                    getattr(self.visual, "final_ln_after_pool", False):
                raise TypeError("Only CLIP-style ViT image towers (CLS read-out, no attentional "
                                "pooling) can be prompted.")
            for block in self.visual.transformer.resblocks:
                check_block(block)

    @property
    def num_blocks(self) -> int:
        return len(self.visual.transformer.resblocks) if self.walkable else 0

    @property
    def width(self) -> int:
        return self.visual.positional_embedding.shape[-1] if self.walkable else 0

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> tokens (B, 1 + grid², width) after ``ln_pre``."""
        v = self.visual
        x = v.conv1(images.to(self.dtype)).flatten(2).transpose(1, 2)   # (B, grid², W)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        dropout = getattr(v, "patch_dropout", None)  # identity in eval mode (CLIP keeps it there)
        return v.ln_pre(dropout(x) if dropout is not None else x)

    def _encode(self, images: torch.Tensor, block_fn: BlockFn, any_prompt: bool) -> torch.Tensor:
        if not self.walkable:
            if any_prompt:
                raise PromptConfigError("The CLIP image tower is not a ViT (e.g. a ResNet), so it has "
                                        "no blocks to prompt; set every vision length/option to 0.")
            return self.visual(images.to(self.dtype))
        x = self.embed(images)
        for i, block in enumerate(self.visual.transformer.resblocks):
            x = block_fn(i, block, x, None, x.shape[1])  # image prompts go after CLS + patches
        return _project(self.visual.ln_post(x[:, 0]), self.visual.proj)


class PromptedImageEncoder(ImageTower):
    """Image tower with one fixed prompt per block (None / length 0 = the frozen block)."""

    def forward(self, images: torch.Tensor, prompts: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        _check_count(prompts, self.num_blocks, "vision")
        any_prompt = any(p is not None and p.shape[0] > 0 for p in prompts)
        return self._encode(images, lambda i, blk, x, m, pos: prompted_block(blk, x, prompts[i], m, pos),
                            any_prompt)


class SupernetImageEncoder(ImageTower):
    """Image tower whose every block mixes its prompt options with ``weights[i]``
    (real_attention: as for ``SupernetTextEncoder``)."""

    def __init__(self, clip_model: nn.Module, impl: str = "fused", real_attention: str = "scores"):
        super().__init__(clip_model)
        self.impl = _check_impl(impl)
        self.real_attention = _check_real(real_attention)

    def forward(self, images: torch.Tensor, prompts: Sequence[Sequence[Optional[torch.Tensor]]],
                weights: torch.Tensor) -> torch.Tensor:
        _check_count(prompts, self.num_blocks, "vision")
        any_prompt = any(p is not None for block in prompts for p in block)
        real = real_path_for(images.device, self.real_attention)
        return self._encode(images, lambda i, blk, x, m, pos: supernet_block(
            blk, x, prompts[i], weights[i], m, pos, self.impl, real), any_prompt)


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise PromptConfigError(f"impl (TRAINER.DPL.SEARCH.IMPL) = {impl!r} is unknown; use one of "
                                f"{IMPLS}.")
    return impl


def _check_real(real_attention: str) -> str:
    if real_attention not in REAL_CHOICES + REAL_PATHS:
        raise PromptConfigError(f"real_attention (TRAINER.DPL.SEARCH.REAL_ATTENTION) = {real_attention!r} "
                                f"is unknown; use one of {REAL_CHOICES}.")
    return real_attention
