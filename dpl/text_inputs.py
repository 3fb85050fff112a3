"""Class text inputs of the text encoder ("context init", docs/METHOD.md, "The train stage").

The text encoder starts from fixed token embeddings, one (L, width) row per class, and reads its
feature at one index per class (the EOT token). L is ``max(EOT index) + 1`` over the classes
(``truncate=True``, the default): attention is causal and the feature is read at EOT, so the tokens
after the last EOT never affect any feature, and the encoders run on L tokens instead of the context
length (77) with the positional embedding and causal mask sliced to match (ISSUE 16 §1, exact).

- ``default``: "a photo of a {class}."
- ``custom``: the DPL authors' per-dataset template (``templates.DPL_CUSTOM_TEMPLATES``).
- ``ensemble``: the position-wise mean of the token embeddings of the 60 ``IMAGENET_TEMPLATES``,
  read out at the EOT index of the *last* template ("itap of the {}."). Kept for reproduction of the
  public code: for most class names the templates' EOT positions differ, so the read-out position
  mixes EOT with other tokens.

Class names have "_" replaced by " ". Tokenization is open_clip's CLIP BPE tokenizer (bundled, no
download); the EOT index is the argmax of the token ids (EOT has the largest id).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import open_clip
import torch
import torch.nn as nn

from dpl.templates import DEFAULT_TEMPLATE, IMAGENET_TEMPLATES, dataset_template
from dpl.errors import UserError

TEXT_INPUTS = ("default", "custom", "ensemble")


def clean_classname(name: str) -> str:
    return name.replace("_", " ")


def class_prompts(template: str, classnames: Sequence[str]) -> List[str]:
    """One sentence per class: ``template.format(clean name)``."""
    return [template.format(clean_classname(c)) for c in classnames]


def templates_for(text_input: str, dataset_name: str = "") -> List[str]:
    """The template(s) a text input averages over (one, except for ``ensemble``)."""
    if text_input == "default":
        return [DEFAULT_TEMPLATE]
    if text_input == "custom":
        return [dataset_template(dataset_name)]
    if text_input == "ensemble":
        return list(IMAGENET_TEMPLATES)
    raise UserError(f"TRAINER.DPL.TEXT_INPUT = {text_input!r} is unknown; use one of {TEXT_INPUTS}.")


def tokenize(texts: Sequence[str], context_length: int) -> torch.Tensor:
    """CLIP BPE token ids (N, context_length), SOS ... EOT, zero padded."""
    return open_clip.tokenize(list(texts), context_length=context_length)


def eot_length(eot_index: torch.Tensor) -> int:
    """Tokens the text encoder needs for these read-out indices (N,): ``max(eot_index) + 1``."""
    return int(eot_index.max()) + 1


def eot_inputs(token_embedding: nn.Embedding, ids: torch.Tensor,
               truncate: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, context_length) -> embeddings (N, L, width) and EOT indices (N,).

    L = ``eot_length`` with ``truncate`` (exact, see the module docstring), else the context length.
    Outputs are on the device of ``token_embedding``; the length is read while ``ids`` are still on
    their own device (CPU from the tokenizer), so this works for ``meta`` models too.
    """
    eot = ids.argmax(dim=-1)
    if truncate:
        ids = ids[:, :eot_length(eot)]
    device = token_embedding.weight.device
    return token_embedding(ids.to(device)), eot.to(device)


@torch.no_grad()
def class_token_inputs(token_embedding: nn.Embedding, classnames: Sequence[str],
                       text_input: str = "default", dataset_name: str = "",
                       context_length: int = 77, truncate: bool = True
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fixed text-encoder inputs for ``classnames``.

    Returns token embeddings (C, L, width) without positional embedding, on the device and in the
    dtype of ``token_embedding``, and the read-out index (C,) long. L = max read-out index + 1 with
    ``truncate`` (default, exact), else ``context_length``.
    """
    if not classnames:
        raise UserError("classnames is empty; a DPL model needs at least one class.")
    templates = templates_for(text_input, dataset_name)
    # The last template's EOT is the read-out (the public code's, for `ensemble`), so its length
    # cuts every template: later tokens of the others are never seen by the read-out either.
    last_ids = tokenize(class_prompts(templates[-1], classnames), context_length)
    eot = last_ids.argmax(dim=-1)
    length = eot_length(eot) if truncate else context_length
    device = token_embedding.weight.device
    total = None
    for template in templates:  # one template at a time keeps memory at one (C, L, W) batch
        ids = last_ids if template is templates[-1] else \
            tokenize(class_prompts(template, classnames), context_length)
        emb = token_embedding(ids[:, :length].to(device))
        total = emb if total is None else total + emb
    return total / len(templates), eot.to(device)
