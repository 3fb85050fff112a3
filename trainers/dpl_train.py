"""DPLTrain: train a searched (or manual) prompt configuration with fresh prompts (docs/METHOD.md, "The train stage").

The configuration comes from ``TRAINER.DPL.CONFIG_FILE`` (a ``prompt_config.json`` written by
DPLSearch, validated against the loaded CLIP) or, when that is empty, from
``TRAINER.DPL.MANUAL.*`` — e.g. a uniform baseline with the same length in the first N blocks.
"""
from __future__ import annotations

import os

from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer

from dpl.artifact import (ArtifactError, check_backbone, fixed_artifact, lengths_from_artifact,
                          load_artifact, save_artifact)
from dpl.classifier import classifier_info
from dpl.clip_loader import backbone_record
from dpl.distributed import from_rank0, is_main_process
from dpl.model import build_fixed_model, model_dims
from dpl.text_inputs import TEXT_INPUTS
from trainers._common import (CachedTextEvalMixin, PromptCheckpointMixin, PromptStepMixin,
                              check_precision, clip_from_cfg, prompt_module_name)
from dpl.errors import UserError

def manual_lengths(manual, num_blocks: int, branch: str) -> list:
    """Per-block lengths from TRAINER.DPL.MANUAL.<BRANCH>_{LENGTHS | LENGTH, DEPTH}."""
    key = branch.upper()
    explicit = list(getattr(manual, f"{key}_LENGTHS"))
    if explicit:
        if len(explicit) != num_blocks or any(int(v) < 0 for v in explicit):
            raise ArtifactError(
                f"TRAINER.DPL.MANUAL.{key}_LENGTHS must give {num_blocks} lengths >= 0 (one per "
                f"{branch} block), got {explicit}."
            )
        return [int(v) for v in explicit]
    length, depth = getattr(manual, f"{key}_LENGTH"), getattr(manual, f"{key}_DEPTH")
    if length < 0:
        raise ArtifactError(f"TRAINER.DPL.MANUAL.{key}_LENGTH must be >= 0, got {length}.")
    depth = num_blocks if depth < 0 else min(depth, num_blocks)
    return [length] * depth + [0] * (num_blocks - depth)


@TRAINER_REGISTRY.register()
class DPLTrain(CachedTextEvalMixin, PromptCheckpointMixin, PromptStepMixin, TrainerX):

    def check_cfg(self, cfg):
        check_precision(cfg.TRAINER.DPL.PREC, "DPL")
        if cfg.TRAINER.DPL.TEXT_INPUT not in TEXT_INPUTS:
            raise UserError(f"TRAINER.DPL.TEXT_INPUT must be one of {TEXT_INPUTS}, got "
                             f"{cfg.TRAINER.DPL.TEXT_INPUT!r}.")
        if cfg.TRAINER.DPL.KD_WEIGHT < 0 or cfg.TRAINER.DPL.KD_TEMPERATURE <= 0:
            raise UserError("TRAINER.DPL.KD_WEIGHT must be >= 0 and KD_TEMPERATURE > 0.")

    def build_model(self):
        cfg, dpl = self.cfg, self.cfg.TRAINER.DPL
        clip_model = clip_from_cfg(cfg, "DPL", self.device)
        dims, backbone = model_dims(clip_model), backbone_record(clip_model)
        if dpl.CONFIG_FILE:
            art = load_artifact(dpl.CONFIG_FILE, dims)
            check_backbone(art, backbone, dpl.CONFIG_FILE)
            text_lengths, vision_lengths = lengths_from_artifact(art)
            print(f"Prompt configuration from {dpl.CONFIG_FILE}")
        else:
            text_lengths = manual_lengths(dpl.MANUAL, dims["text"]["num_blocks"], "text")
            vision_lengths = manual_lengths(dpl.MANUAL, dims["vision"]["num_blocks"], "vision")
            art = fixed_artifact(backbone, dims, text_lengths, vision_lengths,
                                 {"manual": True, "dataset": cfg.DATASET.NAME})
            print("Manual prompt configuration (TRAINER.DPL.MANUAL)")
        # Keep the configuration next to the prompts: an eval-only run and a prediction need both.
        art = {**art, "backbone": backbone, "classifier": self._classifier_info()}
        kept = os.path.join(self.output_dir, "prompt_config.json")
        # torchrun: rank 0 reads the folder (before it writes) and every rank gets its verdict, so
        # a refusal stops every rank (none is left waiting for the others in a collective).
        refusal = from_rank0(self._replacement_refusal(kept, text_lengths, vision_lengths)
                             if is_main_process() else None)
        if refusal:
            raise UserError(refusal)
        if is_main_process():
            save_artifact(kept, art)
        print(f"  text lengths:   {text_lengths}")
        print(f"  vision lengths: {vision_lengths}")
        self.model = build_fixed_model(
            clip_model, self.dm.dataset.classnames, text_lengths, vision_lengths,
            text_input=dpl.TEXT_INPUT, dataset_name=cfg.DATASET.NAME, init_std=dpl.INIT_STD,
        ).to(self.device)
        params = self.model.prompt_parameters()
        print(f"Trainable prompt parameters: {sum(p.numel() for p in params):,}")
        self.optim = build_optimizer(params, cfg.OPTIM) if params else None
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM) if params else None
        self.register_model(prompt_module_name(), self.model.prompt_learner, self.optim, self.sched)
        self.teacher = self._build_teacher(clip_model) if dpl.KD_WEIGHT > 0 else None
        self.scaler = self.make_scaler(dpl.PREC)

    def _classifier_info(self) -> dict:
        """What dpl.load_classifier needs besides the prompts (classes, text input, preprocessing)."""
        cfg = self.cfg
        return classifier_info(self.dm.dataset.classnames, cfg.TRAINER.DPL.TEXT_INPUT, cfg.DATASET.NAME,
                               cfg.INPUT.SIZE, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD,
                               cfg.INPUT.INTERPOLATION, "normalize" in cfg.INPUT.TRANSFORMS)

    def _replacement_refusal(self, kept, text_lengths, vision_lengths):
        """The folder's prompt_config.json describes the prompts saved beside it: never replace it
        with another configuration while those prompts exist (e.g. an eval-only run whose
        --output-dir is the training folder but whose CONFIG_FILE is another artifact). Returns
        the refusal's message, or None when the artifact may be written."""
        prompts = os.path.join(self.output_dir, prompt_module_name())
        if not (os.path.isfile(kept) and os.path.isdir(prompts) and os.listdir(prompts)):
            return None
        try:
            old = load_artifact(kept)
        except (UserError, KeyError, TypeError):
            return None  # unreadable: nothing trustworthy to protect, the run's own checks speak
        if "classifier" not in old:
            return None  # not a DPLTrain run's copy (e.g. a search folder): the checkpoint check speaks
        old_text, old_vision = lengths_from_artifact(old)
        if (old_text, old_vision) != (list(text_lengths), list(vision_lengths)):
            source = self.cfg.TRAINER.DPL.CONFIG_FILE or "TRAINER.DPL.MANUAL.*"
            return (
                f"{self.output_dir} holds prompts trained on the configuration in {kept} (text "
                f"{old_text}, vision {old_vision}), but {source} gives text {list(text_lengths)}, "
                f"vision {list(vision_lengths)}. Pass TRAINER.DPL.CONFIG_FILE {kept} to use those "
                "prompts, or another --output-dir for a new run.")
        return None

    def mismatch_hint(self, directory: str) -> str:
        """--eval-only with prompts that do not fit: name the configuration file the model was
        built from, and the run's own one to give instead."""
        given = self.cfg.TRAINER.DPL.CONFIG_FILE
        own = os.path.join(directory, "prompt_config.json")
        if given and os.path.isfile(own) and os.path.samefile(given, own):
            return self.MISMATCH_HINT  # the run's own configuration: the mismatch lies elsewhere
        source = (f"the prompt configuration in TRAINER.DPL.CONFIG_FILE {given}" if given else
                  "the manual prompt configuration (TRAINER.DPL.CONFIG_FILE is empty)")
        fix = own if os.path.isfile(own) else "<the run's prompt_config.json>"
        return (f"this model was built from {source}, not from the configuration these prompts were "
                f"trained with; pass TRAINER.DPL.CONFIG_FILE {fix} (and the run's backbone).")

    def _build_teacher(self, clip_model):
        import open_clip

        from dpl.distill import ZeroShotTeacher
        from dpl.templates import IMAGENET_TEMPLATES

        print(f"Knowledge distillation from zero-shot CLIP (weight {self.cfg.TRAINER.DPL.KD_WEIGHT}, "
              f"T {self.cfg.TRAINER.DPL.KD_TEMPERATURE}, {len(IMAGENET_TEMPLATES)} templates)")
        def tokenize(texts):
            return open_clip.tokenize(texts, context_length=clip_model.context_length)

        return ZeroShotTeacher(clip_model, self.dm.dataset.classnames, IMAGENET_TEMPLATES, tokenize)

    def distillation(self, logits, image):
        """KD_WEIGHT * T² * KL(p_teacher ‖ p_student) (docs/METHOD.md, "The train stage")."""
        from dpl.distill import kd_loss

        kd = kd_loss(logits, self.teacher(image), self.cfg.TRAINER.DPL.KD_TEMPERATURE)
        return self.cfg.TRAINER.DPL.KD_WEIGHT * kd, {"kd": kd.item()}

    def forward_backward(self, batch):
        if self.optim is None:
            config = self.cfg.TRAINER.DPL.CONFIG_FILE
            source = (f"The prompt configuration {config}" if config else
                      "TRAINER.DPL.CONFIG_FILE is empty and the manual lengths (TRAINER.DPL.MANUAL.*) "
                      "are all 0, so the prompt configuration")
            raise UserError(f"{source} has no prompt at all (every length is 0): nothing to train. "
                            "Pass TRAINER.DPL.CONFIG_FILE <search output>/prompt_config.json, or "
                            "evaluate zero-shot CLIP with --eval-only.")
        image, label = self.parse_batch_train(batch)
        return self.prompt_step(image, label,
                                self.distillation if self.teacher is not None else None)
