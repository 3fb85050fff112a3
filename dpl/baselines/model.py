"""The baselines as models with ``DPLCLIP``'s protocol, and one builder per baseline.

- ``build_zeroshot``: zero-shot CLIP with a hand-written template (CoOp's ZeroshotCLIP).
- ``build_coop``: CoOp (Zhou et al., IJCV 2022): a learnable text context.
- ``build_ivlp``: IVLP (MaPLe repo): independent deep text and vision prompts.
- ``build_maple``: MaPLe (Khattak et al., CVPR 2023): deep text prompts, vision prompts coupled to
  them by linear maps.

Each returns a ``BaselineCLIP`` over the frozen CLIP; widths and depths come from the model. Depths
larger than the model's are capped (a config written for ViT-B/16 runs on any size).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dpl.baselines.context import (check_count, check_position, clamp_depth,
                                   class_name_lengths, context_from_words, per_block_lengths,
                                   placeholder_prefix, random_context, token_counts)
from dpl.baselines.encoders import DeepPromptImageEncoder, DeepPromptTextEncoder
from dpl.baselines.prompts import ContextPrompts, CoupledPrompts, DeepPrompts, TemplatePrompts
from dpl.distributed import shard_classes
from dpl.encoders import is_vit
from dpl.model import DPLCLIP, model_dims
from dpl.prompts import BlockPrompts, PromptConfigError
from dpl.text_inputs import class_prompts, eot_inputs, tokenize
from dpl.errors import UserError

INIT_STD = 0.02  # random contexts and prompts ~ N(0, 0.02²), as in CoOp and MaPLe
MAX_WORD_INIT = 4  # IVLP/MaPLe: CTX_INIT initialises the context only when N_CTX <= 4


class BaselineCLIP(DPLCLIP):
    """Frozen CLIP with in-sequence prompts; ``prompt_learner`` holds every learnable tensor.

    Class inputs (non-persistent buffers, rebuilt by ``set_classnames``): ``token_embeddings``
    (C, L, W) of the learner's class sentences, ``eot_index`` (C,), ``name_lens`` (C,).
    """

    def __init__(self, clip_model: nn.Module, prompt_learner: nn.Module, classnames: Sequence[str]):
        super().__init__(DeepPromptTextEncoder(clip_model), DeepPromptImageEncoder(clip_model),
                         prompt_learner, clip_model.logit_scale, classnames)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """(Re)build the class inputs, e.g. for base -> new evaluation; prompts are untouched."""
        if not classnames:
            raise UserError("classnames is empty; a CLIP classifier needs at least one class.")
        embedding, length = self.text_encoder.token_embedding, self.text_encoder.context_length
        device = embedding.weight.device
        ids = tokenize(class_prompts(self.prompt_learner.class_template, classnames), length)
        with torch.no_grad():
            emb, eot = eot_inputs(embedding, ids, self.truncate_text)  # (C, max(EOT) + 1, W)
        self.classnames = list(classnames)
        self.register_buffer("token_embeddings", emb, persistent=False)
        self.register_buffer("eot_index", eot, persistent=False)
        self.register_buffer("name_lens", class_name_lengths(classnames, length).to(device),
                             persistent=False)

    def encode_text(self) -> torch.Tensor:
        """All classes in one pass: (num_classes, embed_dim), L2-normalised."""
        inputs = self.prompt_learner.text_inputs(self.token_embeddings, self.name_lens)
        def encode(x, eot):  # ~C/N classes per rank under torchrun (dpl.distributed)
            return self.text_encoder(x, eot, self.prompt_learner.text_prompts())

        feats = shard_classes(encode, inputs, self.eot_index)
        return F.normalize(feats, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, embed_dim), L2-normalised."""
        feats = self.image_encoder(images, self.prompt_learner.vision_prompts())
        return F.normalize(feats, dim=-1)

    def describe(self) -> str:
        return self.prompt_learner.describe()


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------
def _device(clip_model: nn.Module) -> torch.device:
    return next(clip_model.parameters()).device


def build_zeroshot(clip_model: nn.Module, classnames: Sequence[str], template: str) -> BaselineCLIP:
    """Zero-shot CLIP: class i is ``template.format(name_i)`` ("_" -> " "), nothing learnable."""
    if "{}" not in template:
        raise PromptConfigError(f"The zero-shot template {template!r} has no '{{}}' for the class "
                                "name; write it like 'a photo of a {}.'.")
    return BaselineCLIP(clip_model, TemplatePrompts(template), classnames)


def build_coop(clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = 16,
               ctx_init: str = "", csc: bool = False, class_token_position: str = "end"
               ) -> BaselineCLIP:
    """CoOp. With ``ctx_init`` (e.g. "a photo of a") the context is the embedding of those words
    and its length is their token count (``n_ctx`` and ``csc`` are then ignored, as in CoOp);
    otherwise ``n_ctx`` random tokens, one set per class if ``csc``."""
    check_position(class_token_position)
    text = model_dims(clip_model)["text"]
    ctx_init = ctx_init.replace("_", " ").strip()
    if ctx_init:
        n = int(token_counts([ctx_init], clip_model.context_length)[0])
        ctx = context_from_words(clip_model.token_embedding, ctx_init, n,
                                 ("TRAINER.COOP.CTX_INIT", "TRAINER.COOP.N_CTX"),
                                 clip_model.context_length)
        prefix = ctx_init
    else:
        n = check_count(n_ctx, "TRAINER.COOP.N_CTX")
        shape = (len(classnames), n, text["width"]) if csc else (n, text["width"])
        ctx = random_context(shape, INIT_STD, _device(clip_model))
        prefix = placeholder_prefix(n)
    return BaselineCLIP(clip_model, ContextPrompts(ctx, prefix, class_token_position), classnames)


def _text_context(clip_model: nn.Module, prompts: BlockPrompts, ctx_init: str, n_ctx: int,
                  keys: Tuple[str, str]) -> str:
    """IVLP/MaPLe input context: from the init words if given and n_ctx <= 4, else kept random.

    Copies the words' embeddings into text block 0 and returns the class-sentence prefix (the whole
    init text, or placeholders).
    """
    ctx_init = ctx_init.replace("_", " ").strip()
    if not ctx_init or n_ctx > MAX_WORD_INIT:
        return placeholder_prefix(n_ctx)
    words = context_from_words(clip_model.token_embedding, ctx_init, n_ctx, keys,
                               clip_model.context_length)
    with torch.no_grad():
        prompts.prompts["block0"].copy_(words)
    return ctx_init


def _require_vit(clip_model: nn.Module, what: str) -> None:
    if not is_vit(clip_model.visual):
        raise PromptConfigError(f"{what} asks for image prompts, but the CLIP image tower is not a "
                                "ViT (e.g. a ResNet backbone); use a ViT backbone such as ViT-B/16.")


def build_ivlp(clip_model: nn.Module, classnames: Sequence[str], n_ctx_text: int = 2,
               n_ctx_vision: int = 2, depth_text: int = 9, depth_vision: int = 9,
               ctx_init: str = "a photo of a") -> BaselineCLIP:
    """IVLP: ``n_ctx_text`` tokens at text blocks 0..depth_text-1 and ``n_ctx_vision`` at vision
    blocks 0..depth_vision-1 (0 = no image prompt), independent N(0, 0.02²) tensors."""
    dims, device = model_dims(clip_model), _device(clip_model)
    t, v = dims["text"], dims["vision"]
    n_text = check_count(n_ctx_text, "TRAINER.IVLP.N_CTX_TEXT")
    d_text = clamp_depth(depth_text, t["num_blocks"], "TRAINER.IVLP.PROMPT_DEPTH_TEXT", minimum=1)
    n_vis = check_count(n_ctx_vision, "TRAINER.IVLP.N_CTX_VISION", minimum=0)
    d_vis = check_count(depth_vision, "TRAINER.IVLP.PROMPT_DEPTH_VISION", minimum=0)
    if n_vis and d_vis:
        _require_vit(clip_model, f"TRAINER.IVLP.PROMPT_DEPTH_VISION = {depth_vision} with "
                                 f"N_CTX_VISION = {n_ctx_vision}")
    d_vis = min(d_vis, v["num_blocks"]) if n_vis else 0
    text = BlockPrompts(per_block_lengths(n_text, d_text, t["num_blocks"]), t["width"], INIT_STD,
                        device)
    vision = BlockPrompts(per_block_lengths(n_vis, d_vis, v["num_blocks"]), v["width"], INIT_STD,
                          device)
    prefix = _text_context(clip_model, text, ctx_init, n_text,
                           ("TRAINER.IVLP.CTX_INIT", "TRAINER.IVLP.N_CTX_TEXT"))
    return BaselineCLIP(clip_model, DeepPrompts(text, vision, prefix), classnames)


def build_maple(clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = 2, depth: int = 9,
                ctx_init: str = "a photo of a") -> BaselineCLIP:
    """MaPLe: ``n_ctx`` text tokens at blocks 0..depth-1; the vision prompt of each of those blocks
    is a learned linear map (text width -> vision width) of the text prompt."""
    _require_vit(clip_model, "MaPLe")
    dims, device = model_dims(clip_model), _device(clip_model)
    t, v = dims["text"], dims["vision"]
    n = check_count(n_ctx, "TRAINER.MAPLE.N_CTX")
    d_text = clamp_depth(depth, t["num_blocks"], "TRAINER.MAPLE.PROMPT_DEPTH", minimum=1)
    d_vis = min(d_text, v["num_blocks"])  # a vision prompt exists only where its text one does
    text = BlockPrompts(per_block_lengths(n, d_text, t["num_blocks"]), t["width"], INIT_STD, device)
    prefix = _text_context(clip_model, text, ctx_init, n, ("TRAINER.MAPLE.CTX_INIT", "TRAINER.MAPLE.N_CTX"))
    learner = CoupledPrompts(text, v["width"], d_vis, v["num_blocks"], prefix, device)
    return BaselineCLIP(clip_model, learner, classnames)
