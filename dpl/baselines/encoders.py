"""CLIP's encoders with in-sequence prompt replacement (VPT-deep style; IVLP and MaPLe).

Unlike DPL's key/value prompts (``dpl.encoders``), these prompts are real tokens of the sequence:
they are queries, go through the MLP and are carried to the next block, where a deeper prompt may
overwrite them. Both encoders reuse the frozen-tower walks of ``dpl.encoders``.

- Text: the input-level context is already in ``token_embeddings`` (positions 1..n after SOS, with
  positional embedding). ``prompts[i]`` (n, W), when given, overwrites positions 1..n before block
  i (no positional embedding). The length stays the context length.
- Image: ``prompts[0]`` (n, W) is appended after CLS + patches, through ``ln_pre`` and without
  positional embedding; ``prompts[i]`` for i >= 1 replaces those last n tokens before block i. The
  length is 1 + grid² + n at every block.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from dpl.encoders import ImageTower, TextTower, _check_count
from dpl.prompts import PromptConfigError

Prompts = Optional[Sequence[Optional[torch.Tensor]]]


def _expand(prompt: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(n, W) -> (B, n, W) in the dtype of ``like`` (B, L, W)."""
    return prompt.to(like.dtype).unsqueeze(0).expand(like.shape[0], -1, -1)


def replace_after_sos(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Tokens (B, L, W) with positions 1..n overwritten by ``prompt`` (n, W)."""
    n = prompt.shape[0]
    return torch.cat([x[:, :1], _expand(prompt, x), x[:, 1 + n:]], dim=1)


def replace_last(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Tokens (B, L, W) with the last n tokens replaced by ``prompt`` (n, W)."""
    return torch.cat([x[:, :x.shape[1] - prompt.shape[0]], _expand(prompt, x)], dim=1)


class DeepPromptTextEncoder(TextTower):
    """Text tower whose block i input has positions 1..n overwritten by ``prompts[i]``."""

    def forward(self, token_embeddings: torch.Tensor, eot_index: torch.Tensor,
                prompts: Prompts = None) -> torch.Tensor:
        """token_embeddings (C, L, W) with the input context in place; -> features (C, embed_dim).

        prompts: None (plain CLIP blocks) or one (n, W) / None entry per block.
        """
        if prompts is not None:
            _check_count(prompts, self.num_blocks, "text")

        def block_fn(i, block, x, mask, _pos):
            if prompts is not None and prompts[i] is not None:
                x = replace_after_sos(x, prompts[i])
            return block(x, attn_mask=mask)

        return self._encode(token_embeddings, eot_index, block_fn)


class DeepPromptImageEncoder(ImageTower):
    """Image tower with VPT-deep prompts: appended at the input, replaced before deeper blocks."""

    def forward(self, images: torch.Tensor, prompts: Prompts = None) -> torch.Tensor:
        """images (B, 3, H, W) -> features (B, embed_dim).

        prompts: None (plain CLIP) or one entry per block; the non-None entries must be blocks
        0..D-1, all of one length (the appended tokens are what the deeper prompts replace).
        """
        any_prompt = prompts is not None and any(p is not None for p in prompts)
        if any_prompt:
            _check_count(prompts, self.num_blocks, "vision")
            _check_leading(prompts)

        def block_fn(i, block, x, mask, _pos):
            p = prompts[i] if any_prompt else None
            if p is not None:
                x = torch.cat([x, _expand(self.visual.ln_pre(p.to(x.dtype)), x)], dim=1) if i == 0 \
                    else replace_last(x, p)
            return block(x, attn_mask=mask)

        return self._encode(images, block_fn, any_prompt)


def _check_leading(prompts: Sequence[Optional[torch.Tensor]]) -> None:
    depth = next((i for i, p in enumerate(prompts) if p is None), len(prompts))
    lengths = {p.shape[0] for p in prompts[:depth]}
    if any(p is not None for p in prompts[depth:]) or len(lengths) != 1:
        shapes = [None if p is None else p.shape[0] for p in prompts]
        raise PromptConfigError(
            f"Image prompt lengths per block {shapes} are not VPT-deep prompts: give blocks 0..D-1 "
            "one prompt each, all of the same length, and None after (block 0's prompt is appended, "
            "the deeper ones replace it).")
