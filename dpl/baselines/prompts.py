"""The learnable tensors of the baselines, one module each (nothing of the frozen CLIP lives here).

Every learner offers what ``BaselineCLIP`` asks of it:

- ``class_template``: the class sentence, e.g. ``"X X X X {}."``; its tokens are the fixed inputs.
- ``text_inputs(token_embeddings, name_lens)``: the input-level text (C, L, W), context in place.
- ``text_prompts()`` / ``vision_prompts()``: per-block prompts for the deep encoders, or None.
- ``prompt_parameters()`` (all learnable tensors) and ``arch_parameters()`` (always []).

Parameter names (checkpoint keys): ``ctx`` (CoOp); ``text.prompts.block{i}`` and
``vision.prompts.block{i}`` (IVLP; block 0 is the input-level prompt); MaPLe adds
``proj.block{i}.{weight,bias}``, the maps from text block i to vision block i.
"""
from __future__ import annotations

import copy
from typing import List, Optional

import torch
import torch.nn as nn

from dpl.baselines.context import place_context, sentence_template
from dpl.prompts import BlockPrompts, PromptLearner
from dpl.errors import UserError


class _NoArch:
    """Baselines have no architecture parameters (DPL's α)."""

    def arch_parameters(self) -> List[nn.Parameter]:
        return []


class TemplatePrompts(_NoArch, nn.Module):
    """Zero-shot CLIP: a fixed hand-written sentence per class, nothing to learn."""

    def __init__(self, template: str):
        super().__init__()
        self.class_template = template

    def text_inputs(self, token_embeddings: torch.Tensor, name_lens: torch.Tensor) -> torch.Tensor:
        return token_embeddings

    def text_prompts(self) -> None:
        return None

    def vision_prompts(self) -> None:
        return None

    def prompt_parameters(self) -> List[nn.Parameter]:
        return []

    def describe(self) -> str:
        return f'template "{self.class_template}"'


class ContextPrompts(TemplatePrompts):
    """CoOp: a learnable context, shared (n, W) or class-specific (C, n, W), around the class name."""

    def __init__(self, ctx: torch.Tensor, prefix: str, class_token_position: str = "end"):
        super().__init__(sentence_template(prefix))
        self.ctx = nn.Parameter(ctx)
        self.class_token_position = class_token_position

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]

    def text_inputs(self, token_embeddings: torch.Tensor, name_lens: torch.Tensor) -> torch.Tensor:
        if self.ctx.dim() == 3 and self.ctx.shape[0] != token_embeddings.shape[0]:
            raise UserError(
                f"The class-specific contexts (TRAINER.COOP.CSC True) were made for "
                f"{self.ctx.shape[0]} classes but the model now has {token_embeddings.shape[0]}; "
                "CSC contexts cannot move to other classes, so use CSC False for base-to-new.")
        return place_context(token_embeddings, self.ctx, name_lens, self.class_token_position)

    def prompt_parameters(self) -> List[nn.Parameter]:
        return [self.ctx]

    def describe(self) -> str:
        kind = "class-specific" if self.ctx.dim() == 3 else "shared"
        return (f'{self.n_ctx} {kind} context tokens, class token {self.class_token_position}, '
                f'class sentence "{self.class_template}"')


class DeepPrompts(_NoArch, PromptLearner):
    """IVLP: independent per-block prompts of both branches.

    text block 0 is the context at the input (positions 1..n of the class sentence); text block
    i >= 1 overwrites those positions before block i. vision block 0 is appended at the input;
    vision block i >= 1 replaces it before block i.
    """

    def __init__(self, text: BlockPrompts, vision: BlockPrompts, prefix: str):
        super().__init__(text=text, vision=vision)
        self.class_template = sentence_template(prefix)

    def text_inputs(self, token_embeddings: torch.Tensor, name_lens: torch.Tensor) -> torch.Tensor:
        return place_context(token_embeddings, self.text.per_block()[0], name_lens, "end")

    def text_prompts(self) -> List[Optional[torch.Tensor]]:
        return [None] + self.text.per_block()[1:]  # block 0's prompt is already in the inputs

    def vision_prompts(self) -> List[Optional[torch.Tensor]]:
        return self.vision.per_block()

    def describe(self) -> str:
        return (f"text tokens per block {self.text.lengths}, vision tokens per block "
                f'{self.vision.lengths}, class sentence "{self.class_template}"')


class CoupledPrompts(DeepPrompts):
    """MaPLe: vision prompt of block i = ``proj[i](text prompt of block i)`` (text -> vision width).

    The vision side has no tensors of its own: its prompts are computed from the text prompts by the
    learned maps. As in MaPLe, the deeper maps start as copies of one freshly initialised layer;
    block 0's map is initialised on its own.
    """

    def __init__(self, text: BlockPrompts, vision_width: int, vision_depth: int,
                 num_vision_blocks: int, prefix: str, device=None):
        nn.Module.__init__(self)  # no independent vision prompts: PromptLearner's `vision` is unused
        self.text = text
        self.class_template = sentence_template(prefix)
        self.num_vision_blocks = num_vision_blocks
        width = text.width
        deep = nn.Linear(width, vision_width, device=device)
        self.proj = nn.ModuleDict({
            f"block{i}": nn.Linear(width, vision_width, device=device) if i == 0 else copy.deepcopy(deep)
            for i in range(vision_depth)
        })

    def vision_prompts(self) -> List[Optional[torch.Tensor]]:
        text = self.text.per_block()
        maps = [self.proj[f"block{i}"](text[i]) for i in range(len(self.proj))]
        return maps + [None] * (self.num_vision_blocks - len(maps))

    def prompt_parameters(self) -> List[nn.Parameter]:
        return self.text.prompt_parameters() + list(self.proj.parameters())

    def describe(self) -> str:
        return (f"text tokens per block {self.text.lengths}, vision prompts = linear maps of the "
                f'text prompts at blocks 0..{len(self.proj) - 1}, class sentence "{self.class_template}"')
