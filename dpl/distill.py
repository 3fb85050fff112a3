"""Optional knowledge distillation from zero-shot CLIP (METHOD.md §5).

loss = CE + KD_WEIGHT * T² * KL(p_teacher ‖ p_student), both distributions at temperature T,
KL averaged over the batch. The teacher is the frozen CLIP itself (no prompts) with text features
averaged over a template ensemble — computed once, never per step.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """T² · mean over the batch of KL(softmax(teacher/T) ‖ softmax(student/T)). Inputs (B, C)."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return t * t * kl.mean()


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
        img = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return self.clip_model.logit_scale.exp().float() * img @ self.text_features.t()
