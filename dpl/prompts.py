"""The learnable tensors of DPL: per-block prompts (fixed configuration) and the supernet (prompts
per option plus α). Nothing of the frozen CLIP lives here, so ``PromptLearner.state_dict()`` is exactly
what a checkpoint needs (docs/METHOD.md: the supernet block, the train stage).

Parameter names are stable: ``text.prompts.block{i}`` (fixed), ``text.prompts.block{i}_len{c}`` and
``text.alpha`` (supernet); the same under ``vision.``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from dpl.errors import UserError

BRANCHES = ("text", "vision")
PROMPT_INITS = ("official", "normal")
# Config keys named in error messages, so a user knows where a bad value came from.
_LENGTH_SOURCE = "the prompt configuration (TRAINER.DPL.CONFIG_FILE artifact or manual lengths)"
_OPTION_KEYS = {"text": "TRAINER.DPL.SEARCH.TEXT_OPTIONS", "vision": "TRAINER.DPL.SEARCH.VISION_OPTIONS"}


class PromptConfigError(UserError):
    """Context lengths or options that do not fit the model or the search-space rules."""


def _as_ints(values: Sequence[int], what: str) -> List[int]:
    try:
        ints = [int(v) for v in values]
    except (TypeError, ValueError):
        raise PromptConfigError(f"{what} must be a list of integers, got {values!r}.") from None
    if any(i != v for i, v in zip(ints, values)):
        raise PromptConfigError(f"{what} must be whole numbers, got {list(values)}.")
    return ints


def check_lengths(lengths: Sequence[int], num_blocks: int, branch: str) -> List[int]:
    """Validate one branch's per-block context lengths: one int >= 0 per block."""
    ints = _as_ints(lengths, f"{branch} lengths")
    if len(ints) != num_blocks:
        raise PromptConfigError(
            f"{branch} lengths {ints} from {_LENGTH_SOURCE} have {len(ints)} entries but the loaded "
            f"CLIP {branch} encoder has {num_blocks} blocks; give exactly one length per block.")
    if any(n < 0 for n in ints):
        raise PromptConfigError(
            f"{branch} lengths {ints} from {_LENGTH_SOURCE} contain a negative value; context "
            "lengths must be >= 0 (0 = no prompt at that block).")
    return ints


def check_options(options: Sequence[int], branch: str) -> List[int]:
    """Validate a search option list: distinct ints, increasing, starting with 0."""
    key = _OPTION_KEYS.get(branch, f"{branch} options")
    ints = _as_ints(options, key)
    if not ints or ints[0] != 0 or any(b <= a for a, b in zip(ints, ints[1:])):
        raise PromptConfigError(
            f"{key} = {list(options)} is invalid; it must be a sorted list of distinct context "
            "lengths starting with 0, e.g. [0, 2, 4, 6].")
    return ints


def _init_prompt(length: int, width: int, branch: str, init: str, std: float, device) -> torch.Tensor:
    """Search init "official" (image N(0,1), text U[0,1), as the public code) or "normal" N(0, std²)."""
    if init == "official":
        make = torch.rand if branch == "text" else torch.randn
        return make(length, width, device=device)
    return torch.randn(length, width, device=device) * std


class BlockPrompts(nn.Module):
    """Fixed configuration of one branch: block i owns a ``(lengths[i], width)`` prompt if > 0.

    Fresh train-stage prompts are ``N(0, init_std²)`` (docs/METHOD.md, "The train stage").
    """

    def __init__(self, lengths: Sequence[int], width: int, init_std: float = 0.02, device=None):
        super().__init__()
        self.lengths = [int(n) for n in lengths]
        self.width = int(width)
        self.prompts = nn.ParameterDict({
            f"block{i}": nn.Parameter(torch.randn(n, width, device=device) * init_std)
            for i, n in enumerate(self.lengths) if n > 0
        })

    @property
    def num_blocks(self) -> int:
        return len(self.lengths)

    def per_block(self) -> List[Optional[torch.Tensor]]:
        """One entry per block: the (length, width) prompt, or None for length 0."""
        return [self.prompts[f"block{i}"] if n > 0 else None for i, n in enumerate(self.lengths)]

    def encoder_inputs(self) -> tuple:
        """Arguments after (inputs) for ``PromptedTextEncoder`` / ``PromptedImageEncoder``."""
        return (self.per_block(),)

    def arch_parameters(self) -> List[nn.Parameter]:
        return []

    def prompt_parameters(self) -> List[nn.Parameter]:
        return list(self.prompts.values())


class SupernetPrompts(nn.Module):
    """Search space of one branch: an independent prompt per (block, option > 0) and α.

    alpha: (num_blocks, num_options), ``alpha_init_std * N(0, 1)``; softmax over a row mixes the
    options of that block (docs/METHOD.md, "The supernet block").
    """

    def __init__(self, num_blocks: int, options: Sequence[int], width: int, branch: str,
                 alpha_init_std: float = 1e-3, prompt_init: str = "official",
                 prompt_init_std: float = 0.02, device=None):
        super().__init__()
        if prompt_init not in PROMPT_INITS:
            raise PromptConfigError(
                f"prompt_init (TRAINER.DPL.SEARCH.PROMPT_INIT) = {prompt_init!r} is unknown; use one "
                f"of {PROMPT_INITS}.")
        self.options = [int(c) for c in options]
        self.width = int(width)
        self.alpha = nn.Parameter(alpha_init_std * torch.randn(num_blocks, len(self.options),
                                                               device=device))
        self.prompts = nn.ParameterDict({
            f"block{i}_len{c}": nn.Parameter(_init_prompt(c, width, branch, prompt_init,
                                                          prompt_init_std, device))
            for i in range(num_blocks) for c in self.options if c > 0
        })

    @property
    def num_blocks(self) -> int:
        return self.alpha.shape[0]

    def per_block(self) -> List[List[Optional[torch.Tensor]]]:
        """[block][option] -> (c, width) prompt, or None for option length 0."""
        return [[self.prompts[f"block{i}_len{c}"] if c > 0 else None for c in self.options]
                for i in range(self.num_blocks)]

    def weights(self) -> torch.Tensor:
        """softmax(α) per block in fp32: (num_blocks, num_options)."""
        return torch.softmax(self.alpha.float(), dim=-1)

    def encoder_inputs(self) -> tuple:
        """Arguments after (inputs) for ``SupernetTextEncoder`` / ``SupernetImageEncoder``."""
        return (self.per_block(), self.weights())

    def arch_parameters(self) -> List[nn.Parameter]:
        return [self.alpha]

    def prompt_parameters(self) -> List[nn.Parameter]:
        return list(self.prompts.values())


class PromptLearner(nn.Module):
    """All learnable tensors of a DPL model: ``text`` and ``vision`` branch prompt modules."""

    def __init__(self, text: nn.Module, vision: nn.Module):
        super().__init__()
        self.text = text
        self.vision = vision

    def arch_parameters(self) -> List[nn.Parameter]:
        return self.text.arch_parameters() + self.vision.arch_parameters()

    def prompt_parameters(self) -> List[nn.Parameter]:
        return self.text.prompt_parameters() + self.vision.prompt_parameters()
