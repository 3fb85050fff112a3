"""CoOp (Zhou et al., IJCV 2022) on ``dpl.baselines``, and the base shared by the prompt baselines.

``PromptTrainer`` is what CoOp, IVLP and MaPLe have in common: frozen CLIP, a ``dpl.baselines``
model, SGD on the prompt tensors only, prompt-only checkpoints under the original repos' module
names, class prompts encoded once per evaluation pass. Each trainer only says which config section
it reads and how to build its model.
"""
from __future__ import annotations


from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_pretrained_weights

from dpl.baselines import build_coop
from trainers._common import (CachedTextEvalMixin, PromptCheckpointMixin, PromptStepMixin,
                              check_precision, clip_from_cfg, prompt_module_name)


class PromptTrainer(CachedTextEvalMixin, PromptCheckpointMixin, PromptStepMixin, TrainerX):
    """Frozen CLIP + a ``dpl.baselines`` model; only ``model.prompt_learner`` trains and is saved."""

    SECTION = ""      # TRAINER.<SECTION> holds PREC and the prompt settings
    MODULE_NAME = ""  # registered model name = checkpoint folder (as in the original repos)

    def check_cfg(self, cfg):
        check_precision(cfg.TRAINER[self.SECTION].PREC, self.SECTION)

    def build_baseline(self, clip_model, classnames):
        """The ``dpl.baselines`` model of this trainer."""
        raise NotImplementedError

    def build_model(self):
        cfg = self.cfg
        clip_model = clip_from_cfg(cfg, self.SECTION, self.device)
        self.model = self.build_baseline(clip_model, self.dm.dataset.classnames).to(self.device)
        print(f"{cfg.TRAINER.NAME}: {self.model.describe()}")
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model.prompt_learner, cfg.MODEL.INIT_WEIGHTS)
        params = self.model.prompt_parameters()
        print(f"Trainable prompt parameters: {sum(p.numel() for p in params):,} "
              f"({', '.join(n for n, _ in self.model.prompt_learner.named_parameters())})")
        self.optim = build_optimizer(params, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.MODULE_NAME, self.model.prompt_learner, self.optim, self.sched)
        self.scaler = self.make_scaler(cfg.TRAINER[self.SECTION].PREC)

    def forward_backward(self, batch):
        return self.prompt_step(*self.parse_batch_train(batch))


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    """Context Optimization: a learnable context in the class sentence (TRAINER.COOP)."""

    SECTION = "COOP"
    MODULE_NAME = prompt_module_name()  # "prompt_learner", as in CoOp

    def build_baseline(self, clip_model, classnames):
        c = self.cfg.TRAINER.COOP
        if c.CTX_INIT and c.CSC:
            print("Note: TRAINER.COOP.CSC is ignored with CTX_INIT (one shared context, as in CoOp)")
        return build_coop(clip_model, classnames, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, csc=c.CSC,
                          class_token_position=c.CLASS_TOKEN_POSITION)
