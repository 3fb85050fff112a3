"""Optional knowledge distillation from zero-shot CLIP (docs/METHOD.md, "The train stage").

loss = CE + KD_WEIGHT * T² * KL(p_teacher ‖ p_student), both distributions at temperature T, the
KL summed over batch and classes and divided by batch × classes — the authors' and PromptSRC's
``F.kl_div(..., reduction="sum") / logits.numel()`` — so KD_WEIGHT means what it means there.
The teacher is the frozen CLIP itself (no prompts) with text features
averaged over a template ensemble — computed once, never per step.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """T² · Σ_{b,c} p_t log(p_t / p_s) / (B · C), p = softmax(logits / T). Inputs (B, C); a scalar.

    The sum over classes divided by B · C (not B) is the authors'/PromptSRC's reduction.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="sum", log_target=True)
    return t * t * kl / student_logits.numel()


@torch.no_grad()
def ensemble_text_features(clip_model, classnames: Sequence[str], templates: Sequence[str],
                           tokenizer) -> torch.Tensor:
    """(num_classes, embed_dim): per class, the mean of the L2-normalised features of every
    template, re-normalised. ``tokenizer(list_of_str) -> (N, context_length)`` ids.

    Each class's templates run on their ``max(EOT) + 1`` tokens (equal to ``clip_model.encode_text``
    on the padded ids; ``TextTower.encode_ids``)."""
    from dpl.encoders import TextTower

    tower = TextTower(clip_model)
    feats = []
    for name in classnames:
        name = name.replace("_", " ")
        tokens = tokenizer([tpl.format(name) for tpl in templates])
        f = F.normalize(tower.encode_ids(tokens).float(), dim=-1)
        feats.append(F.normalize(f.mean(dim=0), dim=-1))
    return torch.stack(feats)


class ZeroShotTeacher(nn.Module):
    """Frozen zero-shot CLIP. Text features are a buffer computed once at construction."""

    def __init__(self, clip_model, classnames: Sequence[str], templates: Sequence[str], tokenizer):
        super().__init__()
        self.clip_model = clip_model
        self.register_buffer(
            "text_features", ensemble_text_features(clip_model, classnames, templates, tokenizer),
            persistent=False,
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), any float dtype -> logits (B, C) in fp32."""
        # Cast like the student's image encoder: fp16 (PREC fp16) towers need fp16 images.
        images = images.to(self.clip_model.visual.conv1.weight.dtype)
        img = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return self.clip_model.logit_scale.exp().float() * img @ self.text_features.t()
