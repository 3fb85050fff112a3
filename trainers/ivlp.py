"""IVLP (MaPLe repo): independent deep text and vision prompts on ``dpl.baselines`` (TRAINER.IVLP)."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY

from dpl.baselines import build_ivlp
from trainers.coop import PromptTrainer


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    """Prompts replace tokens in both encoders, block by block."""

    SECTION = "IVLP"
    MODULE_NAME = "VLPromptLearner"

    def build_baseline(self, clip_model, classnames):
        c = self.cfg.TRAINER.IVLP
        return build_ivlp(clip_model, classnames, n_ctx_text=c.N_CTX_TEXT,
                          n_ctx_vision=c.N_CTX_VISION, depth_text=c.PROMPT_DEPTH_TEXT,
                          depth_vision=c.PROMPT_DEPTH_VISION, ctx_init=c.CTX_INIT)
