"""Learnable text context inside the class sentences (CoOp, IVLP, MaPLe).

The class sentence is ``"<prefix> <class name>."``; the context replaces the ``n`` prefix tokens
right after SOS. The prefix is either the init words (``CTX_INIT``), whose token embeddings also
initialise the context, or ``n`` placeholder words ``"X X ... X"`` with a random context.
Sequences keep CLIP's context length, so the EOT read-out position never moves.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from dpl.prompts import PromptConfigError
from dpl.text_inputs import clean_classname, tokenize

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


def token_counts(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """BPE tokens of each text, SOS and EOT not counted: (N,) long."""
    ids = tokenize(list(texts), context_length)
    return (ids != 0).sum(dim=-1) - 2


def placeholder_prefix(n_ctx: int) -> str:
    return " ".join(["X"] * n_ctx)


def sentence_template(prefix: str) -> str:
    """The class sentence around a context prefix: ``"<prefix> {}."``."""
    return prefix + " {}."


@torch.no_grad()
def context_from_words(token_embedding: nn.Embedding, words: str, n_ctx: int, keys: Sequence[str],
                       context_length: int = 77) -> torch.Tensor:
    """Token embeddings of the first ``n_ctx`` tokens of ``words``: (n_ctx, width).

    keys: the config keys of ``words`` and ``n_ctx``, named in the error when the words are too short.
    """
    available = int(token_counts([words], context_length)[0])
    if available < n_ctx:
        # Reading past the words would initialise from EOT/padding and cut into the class name.
        raise PromptConfigError(
            f"{keys[0]} = {words!r} has {available} tokens but {keys[1]} is {n_ctx}; give at least "
            f"{n_ctx} init words or lower {keys[1]}.")
    ids = tokenize([words], context_length).to(token_embedding.weight.device)
    return token_embedding(ids)[0, 1:1 + n_ctx].detach().clone()


def random_context(shape: Sequence[int], std: float, device=None) -> torch.Tensor:
    return torch.randn(*shape, device=device) * std


def place_context(token_embeddings: torch.Tensor, ctx: Optional[torch.Tensor],
                  name_lens: torch.Tensor, position: str = "end") -> torch.Tensor:
    """Put the context into the class sequences (CoOp's class token positions).

    token_embeddings: (C, L, W) of ``"<n prefix tokens> <name> ."`` (SOS first).
    ctx: (n, W) shared or (C, n, W) per class; None returns the input unchanged.
    name_lens: (C,) BPE tokens of each class name (used by middle/front).
    Returns (C, L, W):
      end:    [SOS, ctx, name, ., EOT, ...]
      middle: [SOS, ctx[:n//2], name, ctx[n//2:], ., EOT, ...]
      front:  [SOS, name, ctx, ., EOT, ...]
    """
    if ctx is None:
        return token_embeddings
    C, L, W = token_embeddings.shape
    ctx = ctx.to(token_embeddings.dtype)
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(C, -1, -1)
    n = ctx.shape[1]
    source = torch.cat([token_embeddings[:, :1], ctx, token_embeddings[:, 1 + n:]], dim=1)
    if check_position(position) == "end":
        return source
    # One gather for all classes: output position p reads source index idx[c, p]. In `source`,
    # index 0 is SOS, 1..n the context, 1+n.. the class name and what follows it.
    p = torch.arange(L, device=token_embeddings.device).unsqueeze(0)      # (1, L)
    k = name_lens.to(p.device).view(C, 1)                                   # (C, 1)
    h = n // 2 if position == "middle" else 0   # context tokens before the name
    idx = torch.where(
        p <= h, p,                                                          # SOS, ctx[:h]
        torch.where(p <= h + k, p + n - h,                                  # the name
                    torch.where(p <= n + k, p - k, p)))                     # ctx[h:], the rest
    return source.gather(1, idx.unsqueeze(-1).expand(C, L, W))


def check_position(position: str) -> str:
    if position not in CLASS_TOKEN_POSITIONS:
        raise PromptConfigError(f"TRAINER.COOP.CLASS_TOKEN_POSITION = {position!r} is unknown; use "
                                f"one of {CLASS_TOKEN_POSITIONS}.")
    return position


def class_name_lengths(classnames: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """(C,) BPE tokens of each cleaned class name ("_" -> " ")."""
    return token_counts([clean_classname(c) for c in classnames], context_length)


def check_count(value: int, key: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise PromptConfigError(f"{key} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)


def clamp_depth(depth: int, num_blocks: int, key: str, minimum: int = 0) -> int:
    """Prompt depth D (input + blocks 1..D-1) capped at the model's depth; below ``minimum`` fails.

    Capping lets a config written for ViT-B/16 (depth 12) run on any smaller model; D >= the number
    of blocks means "every block".
    """
    return min(check_count(depth, key, minimum), num_blocks)


def per_block_lengths(n: int, depth: int, num_blocks: int) -> List[int]:
    """``n`` tokens at blocks 0..depth-1, none after: one entry per block."""
    return [n] * depth + [0] * (num_blocks - depth)
