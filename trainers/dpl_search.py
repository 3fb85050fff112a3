"""DPLSearch: the search stage of DPL (docs/METHOD.md: the search loop, from α to a configuration).

Per iteration: an α step (Adam) on a random validation mini-batch, then a prompt step (SGD from
OPTIM) on a training mini-batch. After every epoch the α history is written; at the end (or on early
stop) the artifact ``prompt_config.json`` and the α plots.
"""
from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils.distributed import run_seed

from dpl import __version__ as dpl_version
from dpl.artifact import branch_summary, build_artifact, save_artifact, shots_provenance
from dpl.attention import REAL_CHOICES
from dpl.clip_loader import backbone_record
from dpl.distributed import (batch_share, is_main_process, rank_part, sharded_mean,
                             sum_over_ranks, world_size)
from dpl.io import atomic_write_json
from dpl.model import build_supernet_model, model_dims
from dpl.prompts import check_options
from dpl.run_keys import search_exclusions, search_roots
from dpl.search import AlphaHistory, BilevelSearch
from trainers._common import (CachedTextEvalMixin, PromptCheckpointMixin, check_precision,
                              clip_from_cfg, prompt_module_name)
from dpl.errors import NonFiniteLossError, UserError

ARTIFACT = "prompt_config.json"
HISTORY = "alpha_history.json"
BRANCHES = ("text", "vision")


class ArchitectureParameters(nn.Module):
    """α of both branches (the model's own tensors, shared), registered once as model ``alpha``:
    the only place α is checkpointed, with the α optimizer's state.

    Checkpoints of older versions also held the α-batch seed here (``batch_seed``); it is read into
    ``legacy_batch_seed`` so such runs still resume."""

    def __init__(self, alphas):
        super().__init__()
        self.text = alphas[0]    # (text blocks, text options)
        self.vision = alphas[1]  # (vision blocks, vision options)
        self.legacy_batch_seed = None

    def load_state_dict(self, state_dict, strict=True, assign=False):
        state = dict(state_dict)
        seed = state.pop("batch_seed", None)
        if seed is not None:
            self.legacy_batch_seed = int(seed)
        return super().load_state_dict(state, strict=strict, assign=assign)


class PromptsWithoutAlpha(nn.Module):
    """Checkpoint view of a supernet's ``prompt_learner`` without α (which ``alpha`` saves).

    ``state_dict`` / ``load_state_dict`` are the learner's minus its α keys (α keys in an older
    checkpoint are ignored: ``alpha`` restores α); ``train``/``eval`` reach the learner.
    """

    def __init__(self, learner: nn.Module):
        super().__init__()
        object.__setattr__(self, "learner", learner)  # not a submodule: its α stays out
        arch = {id(p) for p in learner.arch_parameters()}
        self.alpha_keys = {n for n, p in learner.named_parameters() if id(p) in arch}

    def state_dict(self, *args, **kwargs):
        prefix = kwargs.get("prefix", "")
        state = self.learner.state_dict(*args, **kwargs)
        for key in self.alpha_keys:
            state.pop(prefix + key, None)
        return state

    def load_state_dict(self, state_dict, strict=True, assign=False):
        state = {k: v for k, v in state_dict.items() if k not in self.alpha_keys}
        current = self.learner.state_dict()
        state.update({k: current[k] for k in self.alpha_keys})  # unchanged by this load
        return self.learner.load_state_dict(state, strict=strict, assign=assign)

    def train(self, mode: bool = True):
        self.learner.train(mode)
        return super().train(mode)


class CyclingBatches:
    """Random mini-batches that cycle through the whole dataset (docs/METHOD.md, "The search loop").

    Pass p is a permutation drawn from a private generator seeded with ``seed + p``, cut into
    batches; batch k of the run is therefore a pure function of (seed, k). That makes a resumed
    search draw exactly the batches an uninterrupted one would, without touching the global RNG.
    Under torchrun ``batch_size`` is global: each rank loads its part of batch k (``rank_part``).
    """

    def __init__(self, dataset, batch_size, seed, num_workers=0, pin_memory=False):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.batches_per_pass = math.ceil(len(dataset) / batch_size)
        self._it = None

    def batch_indices(self, k: int) -> list:
        pass_index, j = divmod(k, self.batches_per_pass)
        gen = torch.Generator().manual_seed(self.seed + pass_index)
        perm = torch.randperm(len(self.dataset), generator=gen)
        return perm[j * self.batch_size:(j + 1) * self.batch_size].tolist()

    def start(self, position: int) -> None:
        """Continue from the ``position``-th batch of the run (e.g. epoch * batches per epoch)."""
        sampler = (rank_part(self.batch_indices(k)) for k in itertools.count(position))
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                            pin_memory=self.pin_memory)
        self._it = iter(loader)

    def next(self):
        if self._it is None:
            self.start(0)
        return next(self._it)


@TRAINER_REGISTRY.register()
class DPLSearch(CachedTextEvalMixin, PromptCheckpointMixin, TrainerX):

    def check_cfg(self, cfg):
        check_precision(cfg.TRAINER.DPL.PREC, "DPL")
        s = cfg.TRAINER.DPL.SEARCH
        check_options(s.TEXT_OPTIONS, "text")
        check_options(s.VISION_OPTIONS, "vision")
        if s.VAL_BATCH_SIZE <= 0:
            raise UserError(f"TRAINER.DPL.SEARCH.VAL_BATCH_SIZE must be > 0, got {s.VAL_BATCH_SIZE}.")
        check_search_loop(cfg)
        if s.REAL_ATTENTION not in REAL_CHOICES:
            raise UserError(f"TRAINER.DPL.SEARCH.REAL_ATTENTION = {s.REAL_ATTENTION!r} is unknown; use "
                            f"one of {REAL_CHOICES} (flex: compiled flex_attention, CUDA only).")
        if s.CLASS_SAMPLE and world_size() > 1:  # each rank would sample other classes
            raise UserError(f"TRAINER.DPL.SEARCH.CLASS_SAMPLE {s.CLASS_SAMPLE} works on one process "
                            "only; set it to 0 under torchrun.")

    @staticmethod
    def run_notes(cfg) -> list:
        """The first lines of a search's log (train.py prints them before the run): which search
        loop runs, and a warning when early stop is set but can never fire. Raises UserError for
        loop settings out of range."""
        check_search_loop(cfg)
        notes = [search_loop_line(cfg)]
        warning = early_stop_warning(cfg)
        if warning:
            notes.append(warning)
        return notes

    # -- data -------------------------------------------------------------------------------
    def build_data_loader(self):
        super().build_data_loader()
        if self.val_loader is None:
            raise UserError(
                f"DPLSearch needs a validation split for the α step, but {self.cfg.DATASET.NAME} "
                "has none."
            )
        val_paths = {d.impath for d in self.dm.dataset.val}
        overlap = val_paths & {d.impath for d in self.dm.dataset.test}
        if overlap:
            raise UserError(
                f"The validation split of {self.cfg.DATASET.NAME} overlaps the test split "
                f"({len(overlap)} images); α must never see test data. Set DATASET.VAL_FROM_TRAIN True."
            )
        # SEED -1: the seed train.py drew for this run (recorded in the artifact), so the α batches
        # follow from the run's one seed, the same on every rank (rank 0's draw).
        seed = run_seed(self.cfg.SEED)
        self.val_batches = CyclingBatches(
            self.val_loader.dataset, self.cfg.TRAINER.DPL.SEARCH.VAL_BATCH_SIZE, seed,
            num_workers=self.cfg.DATALOADER.NUM_WORKERS,
            pin_memory=torch.cuda.is_available() and self.cfg.USE_CUDA,
        )

    # -- model ------------------------------------------------------------------------------
    def build_model(self):
        cfg, s = self.cfg, self.cfg.TRAINER.DPL.SEARCH
        clip_model = clip_from_cfg(cfg, "DPL", self.device)
        self.dims = model_dims(clip_model)
        self.backbone = backbone_record(clip_model)  # name + checkpoint hash, for the artifact
        self.options = {"text": list(s.TEXT_OPTIONS), "vision": list(s.VISION_OPTIONS)}
        self.model = build_supernet_model(
            clip_model, self.dm.dataset.classnames, s.TEXT_OPTIONS, s.VISION_OPTIONS,
            alpha_init_std=s.ALPHA_INIT_STD, prompt_init=s.PROMPT_INIT,
            prompt_init_std=s.PROMPT_INIT_STD, impl=s.IMPL, real_attention=s.REAL_ATTENTION,
            text_input="default", dataset_name=cfg.DATASET.NAME,
        ).to(self.device)
        prompt_params = self.model.prompt_parameters()
        print(f"Search space: text options {self.options['text']}, vision options "
              f"{self.options['vision']}; {sum(p.numel() for p in prompt_params):,} prompt "
              "parameters")
        self.optim = build_optimizer(prompt_params, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(prompt_module_name(), PromptsWithoutAlpha(self.model.prompt_learner),
                            self.optim, self.sched)
        self.search = BilevelSearch(
            self.model, self.optim, lr=s.ALPHA_LR, betas=s.ALPHA_BETAS,
            weight_decay=s.ALPHA_WEIGHT_DECAY, mode=s.UPDATE_MODE, precision=cfg.TRAINER.DPL.PREC,
            class_sample=s.CLASS_SAMPLE,
            loss_fn=sharded_mean(F.cross_entropy),  # torchrun: this rank's part of the batch mean
        )
        self.alpha_module = ArchitectureParameters(self.model.arch_parameters())
        self.register_model("alpha", self.alpha_module, self.search.alpha_optimizer, None)
        self.history = AlphaHistory(self.options, s.DOMINANCE_THRESHOLD,
                                    initial_probs=self._current_probs())

    # -- run state checkpointed by the engine ---------------------------------------------------
    def trainer_state(self):
        """The α-batch seed (random for SEED -1, so a resumed run must keep it) and, for PREC amp,
        the two GradScalers' states."""
        return {**super().trainer_state(), "alpha_batch_seed": self.val_batches.seed,
                "grad_scalers": self.search.scaler_state()}

    def load_trainer_state(self, state):
        super().load_trainer_state(state)
        self.val_batches.seed = int(state["alpha_batch_seed"])
        self.search.load_scaler_state(state["grad_scalers"])

    def _alphas(self):
        text, vision = self.model.arch_parameters()
        return {"text": text, "vision": vision}

    def _current_probs(self):
        return {b: a.detach().float().cpu().softmax(1) for b, a in self._alphas().items()}

    # -- one iteration -----------------------------------------------------------------------
    def forward_backward(self, batch):
        train = self.parse_batch_train(batch)
        # ALPHA_EVERY k: the α step runs on steps 0, k, 2k, ... of the run (a resume keeps them).
        step = self.epoch * self.num_batches + self.batch_idx
        update_alpha = step % self.cfg.TRAINER.DPL.SEARCH.ALPHA_EVERY == 0
        val = self.parse_batch_train(self.val_batches.next()) if update_alpha else None
        try:
            summary = self.search.step(train, val, update_alpha)
        except FloatingPointError as err:
            raise NonFiniteLossError(
                f"{err} at epoch {self.epoch + 1}/{self.max_epoch}, batch {self.batch_idx + 1}/"
                f"{self.num_batches}. The last complete epoch's checkpoint in {self.output_dir} is "
                "kept; lower OPTIM.LR or TRAINER.DPL.SEARCH.ALPHA_LR, or use PREC fp32."
            ) from None
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return self._global_summary(summary, train[1])

    @staticmethod
    def _global_summary(summary, labels):
        """torchrun: losses are this rank's shares (their sum is the global-batch loss); the
        accuracy is weighted by this rank's share of the training batch (exact also when the last
        batch splits unevenly)."""
        if world_size() == 1:
            return summary
        summary = {**summary, "acc": summary["acc"] * float(batch_share(labels))}
        return sum_over_ranks(summary)

    # -- loop and outputs ---------------------------------------------------------------------
    def before_train(self):
        super().before_train()
        history_path = os.path.join(self.output_dir, HISTORY)
        if self.start_epoch > 0 and os.path.isfile(history_path):
            with open(history_path, encoding="utf-8") as fh:
                records = [r for r in json.load(fh) if r["epoch"] <= self.start_epoch]
            self.history.records = records
            print(f"Resumed α history ({len(records)} epochs)")
        if self.alpha_module.legacy_batch_seed is not None:  # a checkpoint of an older version
            self.val_batches.seed = self.alpha_module.legacy_batch_seed
        if self.cfg.TRAINER.DPL.SEARCH.PATIENCE > 0 and "stop_requested" not in vars(self):
            print("Note: this engine has no stop request (the real Dassl): TRAINER.DPL.SEARCH."
                  "PATIENCE only marks the epoch where the search settled; all epochs run.")
        self.stop_requested = self._should_stop()  # a resumed run may have settled already

    def before_epoch(self):
        super().before_epoch()
        # α-step batches continue where this epoch starts, also after a resume.
        every = self.cfg.TRAINER.DPL.SEARCH.ALPHA_EVERY  # α steps so far: ceil(steps / every)
        self.val_batches.start(-(-self.epoch * len(self.train_loader_x) // every))

    def after_epoch(self):
        # History first: if we die before the checkpoint, the resumed run redoes this epoch and
        # overwrites the record; the reverse order could lose a record.
        entry = self.history.add(self.epoch + 1, self._alphas())
        if is_main_process():
            atomic_write_json(os.path.join(self.output_dir, HISTORY), self.history.records)
        print("α: text lengths {} | vision lengths {} | dominant {}/{} | tv {:.4f}/{:.4f}".format(
            entry["text"]["lengths"], entry["vision"]["lengths"], entry["text"]["num_dominant"],
            entry["vision"]["num_dominant"], entry["text"]["tv_distance"],
            entry["vision"]["tv_distance"]))
        self.stop_requested = self._should_stop()  # the engine ends the loop after this epoch
        if self.stop_requested and self.epoch + 1 < self.max_epoch:
            print(f"Early stop: the derived configuration has not changed for "
                  f"{self.cfg.TRAINER.DPL.SEARCH.PATIENCE} epochs")
            self.save_model(self.epoch, self.output_dir)
        super().after_epoch()

    def _should_stop(self):
        s = self.cfg.TRAINER.DPL.SEARCH
        return s.PATIENCE > 0 and self.history.unchanged_epochs() >= s.PATIENCE and \
            len(self.history.records) >= s.MIN_EPOCHS

    def after_train(self):
        self.write_artifact()
        super().after_train()

    def write_artifact(self):
        threshold = self.cfg.TRAINER.DPL.SEARCH.DOMINANCE_THRESHOLD
        alphas = self._alphas()
        branches = {
            b: branch_summary(alphas[b], self.options[b], self.dims[b]["width"], threshold)
            for b in BRANCHES
        }
        epochs_run = self.history.records[-1]["epoch"] if self.history.records else 0
        provenance = {
            "dataset": self.cfg.DATASET.NAME,
            "subsample_classes": self.cfg.DATASET.SUBSAMPLE_CLASSES,
            **shots_provenance(self.cfg.DATASET.NUM_SHOTS, [d.label for d in self.dm.dataset.train_x]),
            "seed": self.cfg.SEED,
            "epochs_run": epochs_run,
            "max_epoch": self.max_epoch,
            "early_stopped": bool(self.stop_requested and epochs_run < self.max_epoch),
            "config_hash": config_hash(self.cfg),
            "code_version": dpl_version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        s = self.cfg.TRAINER.DPL.SEARCH
        search = {  # how it was searched (the loop, and what a rerun needs to draw the same batches)
            "alpha_every": int(s.ALPHA_EVERY), "patience": int(s.PATIENCE),
            "min_epochs": int(s.MIN_EPOCHS), "update_mode": s.UPDATE_MODE,
            "class_sample": int(s.CLASS_SAMPLE), "epochs_run": epochs_run,
            "seed": int(self.val_batches.seed),  # SEED < 0: the seed this search drew
            "world_size": world_size(),
        }
        art = build_artifact(self.backbone, branches["text"], branches["vision"],
                             provenance, history_file=HISTORY, search=search)
        path = os.path.join(self.output_dir, ARTIFACT)
        if not is_main_process():  # every rank derived the same artifact; rank 0 writes it
            return
        save_artifact(path, art)
        print(f"Prompt configuration saved to {path}")
        print(f"  text lengths:   {branches['text']['lengths']}")
        print(f"  vision lengths: {branches['vision']['lengths']}")
        if self.cfg.TRAINER.DPL.SEARCH.PLOT:
            from dpl.plots import plot_search_run
            for png in plot_search_run(self.output_dir):
                print(f"Saved {png}")


# The search loop (TRAINER.DPL.SEARCH.ALPHA_EVERY / PATIENCE / MIN_EPOCHS, UPDATE_MODE, CLASS_SAMPLE).
LOOP_KEYS = (("ALPHA_EVERY", 1, "1 (an α step at every prompt step, the paper's loop) or more"),
             ("PATIENCE", 0, "0 (no early stop, the paper's loop) or a number of epochs"),
             ("MIN_EPOCHS", 0, "0 or a number of epochs"),
             ("CLASS_SAMPLE", 0, "0 (every class) or a number of classes"))


def check_search_loop(cfg) -> None:
    """UserError naming the key, its value and the fix for loop settings out of range."""
    s = cfg.TRAINER.DPL.SEARCH
    for key, low, fix in LOOP_KEYS:
        if int(s[key]) < low:
            raise UserError(f"TRAINER.DPL.SEARCH.{key} must be >= {low}, got {s[key]}; set it to {fix}.")


def first_stop_epoch(cfg):
    """The first epoch after which early stop may end the search, or None when it never can
    (PATIENCE 0, or no such epoch before OPTIM.MAX_EPOCH). Stopping needs PATIENCE unchanged
    epochs after the first (so PATIENCE + 1 epochs) and at least MIN_EPOCHS epochs."""
    s = cfg.TRAINER.DPL.SEARCH
    if s.PATIENCE <= 0:
        return None
    first = max(s.PATIENCE + 1, s.MIN_EPOCHS)
    return first if first < cfg.OPTIM.MAX_EPOCH else None


def early_stop_warning(cfg):
    """One line when PATIENCE > 0 but early stop can never fire, else None."""
    s, epochs = cfg.TRAINER.DPL.SEARCH, cfg.OPTIM.MAX_EPOCH
    if s.PATIENCE <= 0 or first_stop_epoch(cfg) is not None:
        return None
    if s.MIN_EPOCHS >= epochs:
        why = (f"TRAINER.DPL.SEARCH.MIN_EPOCHS {s.MIN_EPOCHS} >= OPTIM.MAX_EPOCH {epochs} while "
               f"PATIENCE is {s.PATIENCE}")
        fix = "lower MIN_EPOCHS below MAX_EPOCH"
    else:
        why = (f"TRAINER.DPL.SEARCH.PATIENCE {s.PATIENCE} needs {s.PATIENCE + 1} epochs, but "
               f"OPTIM.MAX_EPOCH is {epochs}")
        fix = "lower PATIENCE"
    return (f"Warning: {why}: early stop can never fire, all {epochs} epochs run ({fix} for an "
            "early stop, or set PATIENCE 0 to say there is none).")


def search_loop_line(cfg) -> str:
    """``Search loop: ...``: the α-step frequency, the epochs, early stop, and whether this is the
    paper's loop (Algorithm 1: α step at every prompt step, all epochs, alternate updates, every
    class scored)."""
    s, epochs = cfg.TRAINER.DPL.SEARCH, cfg.OPTIM.MAX_EPOCH
    k = int(s.ALPHA_EVERY)
    parts = ["α every step" if k == 1 else f"α every {k} steps"]
    first = first_stop_epoch(cfg)
    if first is None:
        parts.append(f"{epochs} epochs")
    else:
        parts.append(f"early stop from epoch {first} when settled (configuration unchanged for "
                     f"{s.PATIENCE} epochs), at most {epochs} epochs")
    fast = k > 1 or first is not None
    other = []
    if s.UPDATE_MODE != "alternate":
        other.append(f"UPDATE_MODE {s.UPDATE_MODE}")
    if s.CLASS_SAMPLE:
        other.append(f"CLASS_SAMPLE {s.CLASS_SAMPLE}")
    parts += other
    if not fast and not other:
        tag = "Algorithm 1"
    elif not other:
        tag = "fast, not the paper's loop"
    else:
        tag = "not the paper's loop"
    return f"Search loop: {', '.join(parts)} ({tag})"


# What defines a search (config_hash): these subtrees / keys, minus the exclusions; both derived
# from the one table of config keys, dpl/run_keys.py (its "search" column).
HASHED_KEYS = search_roots()
UNHASHED_KEYS = search_exclusions()


def config_hash(cfg) -> str:
    """16 hex digits over the settings that define a search (HASHED_KEYS: data, shots, seed,
    transforms, batch sizes, optimizer and schedule, backbone, precision, TRAINER.DPL.SEARCH.*).

    Paths, workers, printing, plotting, devices and output locations are left out, so two runs of
    the same search on other machines or folders carry the same hash.
    """
    flat = {}

    def walk(node, path):
        if path in UNHASHED_KEYS:
            return
        if isinstance(node, dict):
            for key in node:
                walk(node[key], f"{path}.{key}" if path else key)
        else:
            flat[path] = list(node) if isinstance(node, tuple) else node

    for key in HASHED_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        walk(node, key)
    text = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
