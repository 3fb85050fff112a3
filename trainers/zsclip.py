"""ZeroshotCLIP: CLIP with CoOp's hand-written per-dataset template; nothing to train.

Run it with ``--eval-only`` (the scripts do). It registers no model, so there is nothing to save
or load; the class prompts are encoded once per evaluation pass.
"""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY, TrainerX

from dpl.baselines import build_zeroshot
from dpl.templates import ZEROSHOT_TEMPLATES
from trainers._common import CachedTextEvalMixin, check_precision, clip_from_cfg
from dpl.errors import UserError


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(CachedTextEvalMixin, TrainerX):

    def check_cfg(self, cfg):
        check_precision(cfg.TRAINER.ZEROSHOTCLIP.PREC, "ZEROSHOTCLIP")

    def build_model(self):
        cfg = self.cfg
        clip_model = clip_from_cfg(cfg, "ZEROSHOTCLIP", self.device)
        template = cfg.TRAINER.ZEROSHOTCLIP.TEMPLATE or ZEROSHOT_TEMPLATES.get(cfg.DATASET.NAME)
        if template is None:
            raise UserError(
                f"CoOp has no zero-shot template for DATASET.NAME {cfg.DATASET.NAME!r} (it has one for "
                f"{', '.join(sorted(ZEROSHOT_TEMPLATES))}); set TRAINER.ZEROSHOTCLIP.TEMPLATE, e.g. "
                "'a photo of a {}.'.")
        self.model = build_zeroshot(clip_model, self.dm.dataset.classnames, template).to(self.device)
        print(f"ZeroshotCLIP: {self.model.describe()}")

    def train(self):
        raise UserError("ZeroshotCLIP has nothing to train; run train.py with --eval-only.")
