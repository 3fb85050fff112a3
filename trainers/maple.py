"""MaPLe (Khattak et al., CVPR 2023): deep text prompts coupled to vision prompts (TRAINER.MAPLE)."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY

from dpl.baselines import build_maple
from trainers.coop import PromptTrainer


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    """Vision prompt of block i = a learned linear map of text prompt i."""

    SECTION = "MAPLE"
    MODULE_NAME = "MultiModalPromptLearner"

    def build_baseline(self, clip_model, classnames):
        c = self.cfg.TRAINER.MAPLE
        return build_maple(clip_model, classnames, n_ctx=c.N_CTX, depth=c.PROMPT_DEPTH,
                           ctx_init=c.CTX_INIT)
