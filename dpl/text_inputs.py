"""Class text inputs of the text encoder ("context init", METHOD.md §5).

The text encoder starts from fixed token embeddings, one (context_length, width) row per class, and
reads its feature at one index per class (the EOT token):

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
from user_errors import UserError

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


@torch.no_grad()
def class_token_inputs(token_embedding: nn.Embedding, classnames: Sequence[str],
                       text_input: str = "default", dataset_name: str = "",
                       context_length: int = 77) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fixed text-encoder inputs for ``classnames``.

    Returns token embeddings (C, context_length, width) without positional embedding, on the device
    and in the dtype of ``token_embedding``, and the read-out index (C,) long.
    """
    if not classnames:
        raise UserError("classnames is empty; a DPL model needs at least one class.")
    device = token_embedding.weight.device
    templates = templates_for(text_input, dataset_name)
    total = None
    for template in templates:  # one template at a time keeps memory at one (C, L, W) batch
        ids = tokenize(class_prompts(template, classnames), context_length).to(device)
        emb = token_embedding(ids)
        total = emb if total is None else total + emb
    # `ids` is the last template's: the public code's EOT read-out for `ensemble`.
    return total / len(templates), ids.argmax(dim=-1)
