"""Pieces shared by our CLIP trainers: loading CLIP from the config, precision, prompt-only
checkpoints, and evaluation that encodes the class prompts once per pass.

These trainers use only the part of Dassl 0.6.3's API that CoOp-family trainers use, so they also
run on the real Dassl (docs/COOP_CHECKOUT.md).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from dassl.metrics import compute_accuracy
from dassl.utils import load_checkpoint
from dpl.clip_loader import PRECISIONS, load_clip, preprocess_of
from dpl.distributed import batch_share, is_main_process, sum_over_ranks, world_size
from dpl.classifier import PROMPT_MODULE
from dpl.io import BEST_CHECKPOINT, epoch_checkpoint_name, saved_epochs
from dpl.precision import autocast, grad_scaler, scaled_step
from dpl.errors import UserError, load_state_checked



def check_precision(prec: str, trainer: str) -> None:
    if prec not in PRECISIONS:
        raise UserError(f"TRAINER.{trainer}.PREC must be one of {PRECISIONS}, got {prec!r}.")


def clip_from_cfg(cfg, section: str, device):
    """Frozen CLIP for ``MODEL.BACKBONE.NAME`` from ``MODEL.BACKBONE.PATH`` (or ~/.cache/clip), at
    the precision ``TRAINER.<section>.PREC``.

    Refuses, naming the right keys, fp16 without CUDA and an ``INPUT.SIZE`` the model cannot take.
    """
    prec = cfg.TRAINER[section].PREC
    if prec == "fp16" and torch.device(device).type != "cuda":
        raise UserError(f"TRAINER.{section}.PREC is fp16, which needs a CUDA device; on this machine "
                         f"add `TRAINER.{section}.PREC fp32` to the command line.")
    path = getattr(cfg.MODEL.BACKBONE, "PATH", "")
    config = getattr(cfg.MODEL.BACKBONE, "CONFIG", "")
    print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}, precision: {prec})")
    clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, path, precision=prec, device=device, config=config)
    report_input(cfg, preprocess_of(clip_model))
    size = getattr(clip_model.visual, "image_size", None)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if size[0] is not None and tuple(cfg.INPUT.SIZE) != size:
        raise UserError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match the image size {size} "
                         f"of the CLIP checkpoint ({cfg.MODEL.BACKBONE.NAME}); set INPUT.SIZE {size}.")
    return clip_model


def report_input(cfg, model_input: dict) -> None:
    """Log the preprocessing used and where it differs from what the model was trained with."""
    used = {"size": tuple(cfg.INPUT.SIZE), "mean": tuple(cfg.INPUT.PIXEL_MEAN),
            "std": tuple(cfg.INPUT.PIXEL_STD), "interpolation": cfg.INPUT.INTERPOLATION}
    differ = []
    for key, value in used.items():
        want = model_input[key]
        if key in ("mean", "std"):
            same = len(value) == len(want) and all(abs(a - b) < 1e-6 for a, b in zip(value, want))
        else:
            same = value == want
        if not same:
            differ.append(f"{key} {value} instead of the model's {want}")
    where = "; ".join(differ) if differ else "the model's"
    print("Input preprocessing: " + ", ".join(f"{k} {v}" for k, v in used.items()) + f" ({where})")


class PromptStepMixin:
    """One training step on the prompts: cross-entropy (+ optional extra terms) at the trainer's
    precision (dpl/precision.py: fp32, fp16, amp with a GradScaler, bf16 autocast).

    Needs ``self.model``, ``self.optim`` and ``self.scaler = self.make_scaler(prec)``, which also
    selects the autocast of the forward pass. The scaler's state is checkpointed (trainer_state).
    Under torchrun the loss is weighted by this rank's share of the global batch before backward
    (the engine sums the ranks' gradients), so a step equals one process on the global batch.
    """

    def make_scaler(self, prec: str):
        """A GradScaler for PREC amp, else None; remembers ``prec`` for ``prompt_step``."""
        self.step_precision = prec
        return grad_scaler(prec, self.device.type)

    def prompt_step(self, image, label, extra_loss=None) -> dict:
        """``extra_loss(logits, image) -> (loss_term, summary_dict)`` is added to the CE loss."""
        with autocast(getattr(self, "step_precision", "fp32"), self.device.type):
            logits = self.model(image)
            loss, summary = F.cross_entropy(logits, label), {}
            if extra_loss is not None:
                term, summary = extra_loss(logits, image)
                loss = loss + term
        weight = batch_share(label)  # torchrun: this rank's share of the global batch
        share = loss * weight  # this rank's part of the global-batch mean
        if self.scaler is None:
            self.model_backward_and_update(share)
        else:
            self.optim.zero_grad()
            self.detect_anomaly(loss)
            scaled_step(share, self.optim, self.scaler)
        out = {"loss": loss.item(), "acc": compute_accuracy(logits, label)[0].item(), **summary}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return global_summary(out, weight)

    def trainer_state(self):
        state = super().trainer_state()
        if getattr(self, "scaler", None) is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_trainer_state(self, state):
        super().load_trainer_state(state)
        if getattr(self, "scaler", None) is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])


def global_summary(summary: dict, weight) -> dict:
    """torchrun: the global-batch values of a step's per-rank means (loss, accuracy, ...), i.e.
    the sum over ranks of each value times the rank's share of the global batch (``weight``): what
    one process on the whole batch logs. One process: ``summary`` unchanged."""
    if world_size() <= 1:
        return summary
    return sum_over_ranks({k: v * float(weight) for k, v in summary.items()})


class CachedTextEvalMixin:
    """Evaluation encodes the class prompts once per pass (the text branch ignores the image).

    ``self.model`` must offer ``encode_text()`` and ``forward(images, text_features=...)``.
    """

    _text_features = None

    def test(self, split=None):
        self.set_model_mode("eval")
        with torch.no_grad():
            self._text_features = self.model.encode_text()
        try:
            return super().test(split=split)
        finally:
            self._text_features = None

    def model_inference(self, input):
        return self.model(input, text_features=self._text_features)


class PromptCheckpointMixin:
    """Prompt trainers store only prompts; CLIP stays frozen and is never saved.

    ``load_model`` follows the CoOp-family override of Dassl's so that
    ``--eval-only --model-dir D --load-epoch N`` works on both engines. It refuses to evaluate
    untrained prompts (no ``--model-dir``) and, for a checkpoint of other settings or of another
    trainer, names the file and the tensors that differ (``dpl.errors.load_state_checked``).
    """

    def load_model(self, directory, epoch=None):
        # Seam: the loop over the model files repeats the engine's load_model (dassl/engine/trainer.py)
        # on purpose. These trainers must also run on the real Dassl, whose load_model cannot be
        # changed, so the override carries the refusals and the readable mismatch message itself.
        if not directory:
            if self._trainable_count() > 0:
                raise UserError(
                    f"{type(self).__name__} --eval-only needs --model-dir (the output folder of the "
                    "training run whose prompts to evaluate); without it the untrained prompts would "
                    "be evaluated.")
            print("Note that load_model() is skipped as no pretrained model is given "
                  "(this configuration has no prompts to load)")
            return
        fname = BEST_CHECKPOINT if epoch is None else epoch_checkpoint_name(epoch)
        for name in self.get_model_names():
            path = os.path.join(directory, name, fname)
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f'Model not found at "{path}". Check --model-dir and --load-epoch '
                    f"(the run saves model.pth.tar-<last epoch>)."
                )
            checkpoint = load_checkpoint(path)
            state_dict = checkpoint["state_dict"]
            print(f'Loading weights to {name} from "{path}" (epoch = {checkpoint["epoch"]})')
            load_state_checked(self._models[name], state_dict, path, self.mismatch_hint(directory))

    def mismatch_hint(self, directory: str) -> str:
        """What to do when the checkpoints in ``directory`` do not fit the model built here."""
        return self.MISMATCH_HINT

    MISMATCH_HINT = ("it was trained by another trainer or with other settings; evaluate it with the "
                     "trainer, prompt settings (TRAINER.<trainer>.*, e.g. TRAINER.COOP.* for CoOp; "
                     "for DPLTrain TRAINER.DPL.CONFIG_FILE = the run's prompt_config.json) and "
                     "backbone it was trained with.")

    def _trainable_count(self) -> int:
        return sum(p.numel() for name in self.get_model_names()
                   for p in self._models[name].parameters())

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def after_epoch(self):
        super().after_epoch()
        keep = getattr(self.cfg.TRAIN, "KEEP_CHECKPOINTS", 0)
        if keep > 0 and is_main_process():  # the writer prunes; other ranks would race it
            for name in self.get_model_names():
                prune_checkpoints(os.path.join(self.output_dir, name), keep)

    def before_train(self):
        super().before_train()  # resumes: self.start_epoch = the saved epoch
        if self.start_epoch > 0:
            rebuild_lr_schedulers(self, self.start_epoch)


def rebuild_lr_schedulers(trainer, epoch: int) -> None:
    """Replace each registered LR scheduler by a fresh one from ``cfg.OPTIM``, stepped ``epoch``
    times (once per finished epoch, as the trainers step it), driving the live optimizer.

    The real Dassl's warm-up scheduler restores a pickled copy of its successor that is bound to a
    stale copy of the optimizer, so after a resume the LR stayed frozen at its value from the kill.
    A schedule is a pure function of the epoch, so rebuilding it gives the uninterrupted run's LRs
    on either engine.
    """
    import warnings

    from dassl.optim import build_lr_scheduler

    for name in trainer.get_model_names():
        old, optim = trainer._scheds[name], trainer._optims[name]
        if old is None or optim is None:
            continue
        for group in optim.param_groups:  # the state a fresh optimizer starts the schedule from
            group["lr"] = group.get("initial_lr", group["lr"])
        sched = build_lr_scheduler(optim, trainer.cfg.OPTIM)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(epoch):
                sched.step()
        trainer._scheds[name] = sched
        if getattr(trainer, "sched", None) is old:
            trainer.sched = sched


def prune_checkpoints(folder: str, keep: int) -> None:
    """Delete all but the ``keep`` newest ``model.pth.tar-N`` files of one model folder.

    Runs after every registered model has saved its epoch, so a crash at any point still leaves
    one epoch that all models have (the engine resumes from the newest such epoch).
    """
    for epoch in saved_epochs(folder)[:-keep]:
        os.remove(os.path.join(folder, epoch_checkpoint_name(epoch)))


def prompt_module_name() -> str:
    """Registered model name of the prompt parameters (CoOp's name, so tools find the files)."""
    return PROMPT_MODULE
