"""The training engine: TrainerBase -> SimpleTrainer -> TrainerX (as in Dassl 0.6.3).

Loop: ``before_train``; per epoch ``before_epoch``, ``run_epoch``, ``after_epoch``; ``after_train``.
Checkpoints: ``OUTPUT_DIR/<model name>/model.pth.tar-<epoch+1>`` (+ ``model-best.pth.tar`` with
``TEST.FINAL_MODEL best_val``) and a ``checkpoint`` pointer file. Re-running in the same OUTPUT_DIR
(or with ``RESUME``) resumes at the saved epoch with the saved LR schedule, RNG states, trainer
state (``trainer_state()``) and best validation result.
A trainer may set ``self.stop_requested = True`` (e.g. early stopping): the loop ends after the
current epoch, and ``after_train`` runs as usual.
"""
from __future__ import annotations

import datetime
import os
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from dassl.data import DataManager
from dassl.evaluation import Classification, build_evaluator
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import (
    AverageMeter, MetricMeter, count_num_param, get_rng_state, load_checkpoint,
    checkpoint_file_epoch, epoch_checkpoint_name, load_pretrained_weights, mkdir_if_missing,
    read_checkpoint_pointer, resume_from_checkpoint, newest_loadable, save_checkpoint, tolist_if_not,
)
from dassl.utils.distributed import (
    all_rank_rng_states, barrier, broadcast_modules, get_world_size, install_grad_sync,
    is_main_process, merge_classification, run_seed, seed_rank_streams,
)
from dpl.errors import NonFiniteLossError, UserError
from dpl.io import BEST_CHECKPOINT

__all__ = ["SimpleNet", "TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU"]


class SimpleNet(nn.Module):
    """Minimal default network: flattened pixels -> linear classifier.

    Real Dassl builds a backbone from its registry here; this subset has none, so every
    CoOp-family trainer overrides ``build_model``. ``MODEL.BACKBONE.NAME`` must be "" or "flatten".
    """

    def __init__(self, cfg, model_cfg, num_classes, **kwargs):
        super().__init__()
        if model_cfg.BACKBONE.NAME not in ("", "flatten"):
            raise UserError(
                "SimpleNet has no backbone {!r} (this Dassl subset has no backbone registry); "
                "override build_model() in your trainer.".format(model_cfg.BACKBONE.NAME))
        height, width = cfg.INPUT.SIZE
        self._fdim = 3 * height * width
        self.backbone = nn.Flatten()
        self.head = None
        self.classifier = nn.Linear(self._fdim, num_classes) if num_classes > 0 else None

    @property
    def fdim(self):
        return self._fdim

    def forward(self, x, return_feature=False):
        """x: images ``(batch, 3, H, W)`` -> logits ``(batch, num_classes)``."""
        f = self.backbone(x)
        if self.classifier is None:
            return f
        y = self.classifier(f)
        return (y, f) if return_feature else y


class TrainerBase:
    """Model/optimizer/scheduler bookkeeping, checkpoints and the generic epoch loop."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None
        self.stop_requested = False

    def register_model(self, name="model", model=None, optim=None, sched=None):
        for attr in ("_models", "_optims", "_scheds"):
            if self.__dict__.get(attr) is None:
                raise AttributeError(
                    "Cannot assign model before super().__init__() call in {}".format(type(self).__name__))
        assert name not in self._models, "Found duplicate model names"
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        names_real = list(self._models.keys())
        if names is None:
            return names_real
        names = tolist_if_not(names)
        for name in names:
            assert name in names_real
        return names

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Save every registered model to ``directory/<name>/``; the stored epoch is ``epoch + 1``.

        Under torchrun every rank calls it; rank 0 writes (with every rank's RNG state, so each
        resumes its own) and the others wait until the files exist.
        """
        rng_state = get_rng_state()  # one snapshot for all models: they are saved "at once"
        rank_states = all_rank_rng_states(rng_state)
        trainer_state = self.trainer_state()
        if get_world_size() > 1:  # a resume with another number of processes says so
            trainer_state = {**trainer_state, "world_size": get_world_size()}
        names = self.get_model_names() if is_main_process() else []
        for name in names:
            optim, sched = self._optims[name], self._scheds[name]
            checkpoint = {
                "state_dict": self._models[name].state_dict(),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
                "rng_state": rng_state,
            }
            if trainer_state:  # only when there is some: files stay as real Dassl's otherwise
                checkpoint["trainer_state"] = trainer_state
            if rank_states:  # torchrun: every rank's RNG state, so each resumes its own
                checkpoint["rank_rng_states"] = rank_states
            save_checkpoint(
                checkpoint,
                os.path.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )
        barrier()

    def resume_model_if_exist(self, directory):
        """Resume every registered model from ``directory/<name>``; return the start epoch (0 if none).

        A model folder without a ``checkpoint`` pointer (a run killed before its first save
        completed) counts as missing. With no registered model (ZeroshotCLIP) there is nothing to
        resume: 0 (real Dassl crashes with UnboundLocalError here).
        """
        names = self.get_model_names()
        found = len(names) > 0 and all(
            os.path.isfile(os.path.join(directory, name, "checkpoint")) for name in names)
        if not found:
            print("No checkpoint found, train from scratch")
            return 0

        print("Found checkpoint at {} (will resume training)".format(directory))
        files = newest_loadable(directory, _common_epoch_files(directory, names))
        start_epoch = 0
        for name in names:
            start_epoch = resume_from_checkpoint(
                os.path.join(directory, name), self._models[name], self._optims[name], self._scheds[name],
                fname=files[name])
        checkpoint = load_checkpoint(os.path.join(directory, names[0], files[names[0]]))
        state = dict(checkpoint.get("trainer_state") or {})
        _note_world_size(checkpoint, state.pop("world_size", None), directory, start_epoch)
        if state:
            self.load_trainer_state(state)
        return start_epoch

    def trainer_state(self):
        """Hook: run state beyond models/optimizers/schedulers (e.g. a GradScaler's state, a seed),
        as a dict of plain values and tensors. Saved in every checkpoint under ``trainer_state``
        and handed to ``load_trainer_state`` on resume. Default: nothing."""
        return {}

    def load_trainer_state(self, state):
        """Hook: restore what ``trainer_state`` returned (called after the models are resumed)."""
        pass

    def load_model(self, directory, epoch=None):
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) into every registered model."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given "
                  "(ignore this if it's done on purpose)")
            return

        model_file = BEST_CHECKPOINT if epoch is None else epoch_checkpoint_name(epoch)
        for name in self.get_model_names():
            model_path = os.path.join(directory, name, model_file)
            if not os.path.exists(model_path):
                raise FileNotFoundError("No model at {}".format(model_path))
            checkpoint = load_checkpoint(model_path)
            val_result = checkpoint.get("val_result")
            # Real Dassl crashes formatting a None val_result; print it as None instead.
            val_str = "{:.1f}".format(val_result) if val_result is not None else "None"
            print("Load {} to {} (epoch={}, val_result={})".format(
                model_path, name, checkpoint["epoch"], val_str))
            self._models[name].load_state_dict(checkpoint["state_dict"])

    def set_model_mode(self, mode="train", names=None):
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(mode)

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            epoch, batch = getattr(self, "epoch", None), getattr(self, "batch_idx", None)
            where = ""
            if epoch is not None and batch is not None:
                where = " at epoch {}/{}, batch {}/{}".format(
                    epoch + 1, getattr(self, "max_epoch", "?"), batch + 1, getattr(self, "num_batches", "?"))
            raise NonFiniteLossError(
                "Loss is infinite or NaN!{} (loss={}); lower OPTIM.LR or use fp32 precision.".format(
                    where, loss.detach().flatten()[:4].tolist()))

    def init_writer(self, log_dir):
        if self.__dict__.get("_writer") is None and is_main_process():
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

            print("Initialize tensorboard (log_dir={})".format(log_dir))
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch, max_epoch):
        """Generic loop; ``self.start_epoch`` may be changed by ``before_train`` (resume)."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch

        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            if self.stop_requested:  # e.g. set by before_train of a resumed, already settled run
                break
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
            if self.stop_requested:
                break
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
    """Builds data, model and evaluator from a config; adds resume, checkpoints and testing."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)  # note: self.cfg is not set yet

        if torch.cuda.is_available() and cfg.USE_CUDA:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")

        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR

        self.cfg = cfg
        self.build_data_loader()
        self.build_model()
        self._prepare_ranks()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def _prepare_ranks(self):
        """torchrun: every rank starts from rank 0's models and sums gradients before each step
        (dassl/utils/distributed.py); from here on each rank has its own random streams (seed +
        rank), so the ranks' augmentations differ. A no-op in a single process. A resumed run
        then restores each rank's saved streams (``before_train``)."""
        broadcast_modules(self._models.values())
        for optim in self._optims.values():
            install_grad_sync(optim)
        if get_world_size() > 1:
            seed_rank_streams(run_seed(self.cfg.SEED))  # the run's seed, not a second draw

    def check_cfg(self, cfg):
        """Hook: validate trainer-specific config values (called before ``self.cfg`` is set)."""
        pass

    def build_data_loader(self):
        """Build a DataManager and copy its loaders and class info onto the trainer."""
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u  # optional, can be None
        self.val_loader = dm.val_loader  # optional, can be None
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname  # dict {label: classname}
        self.dm = dm

    def build_model(self):
        """Default model: SimpleNet + optimizer + scheduler, registered as "model"."""
        cfg = self.cfg
        print("Building model")
        self.model = SimpleNet(cfg, cfg.MODEL, self.num_classes)
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        print("# params: {:,}".format(count_num_param(self.model)))
        self.optim = build_optimizer(self.model, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

        device_count = torch.cuda.device_count()
        if device_count > 1 and self.device.type == "cuda" and get_world_size() == 1:
            print("Detected {} GPUs (use nn.DataParallel)".format(device_count))
            self.model = nn.DataParallel(self.model)

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.OUTPUT_DIR
        if self.cfg.RESUME:
            directory = self.cfg.RESUME
        self.start_epoch = self.resume_model_if_exist(directory)
        if self.start_epoch > 0:
            self.best_result = self._stored_best_result(directory)

        writer_dir = os.path.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)

        self.time_start = time.time()

    def _stored_best_result(self, directory):
        """The val_result of the run's ``model-best.pth.tar`` (so a resumed run only replaces it by
        a strictly better epoch, as an uninterrupted one would); -inf when there is none."""
        best = -np.inf
        if self.cfg.TEST.FINAL_MODEL == "best_val" and not self.cfg.TEST.NO_TEST:
            names = self.get_model_names()
            path = os.path.join(directory, names[0], BEST_CHECKPOINT) if names else ""
            if os.path.isfile(path):
                stored = load_checkpoint(path).get("val_result")
                if stored is not None:
                    best = stored
                    print("Best val result so far: {} ({})".format(best, path))
        return best

    def after_train(self):
        print("Finish training")

        do_test = not self.cfg.TEST.NO_TEST
        if do_test:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()

        elapsed = round(time.time() - self.time_start)
        print("Elapsed: {}".format(datetime.timedelta(seconds=elapsed)))
        self.close_writer()

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = (self.epoch + 1) % freq == 0 if freq > 0 else False

        if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:  # strictly better: ties keep the earlier model
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result,
                                model_name=BEST_CHECKPOINT)

        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (default ``TEST.SPLIT``; "val" falls back to test when there is no
        val loader) and return the first result (accuracy)."""
        self.set_model_mode("eval")
        self.evaluator.reset()

        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader

        print("Evaluate on the *{}* set".format(split))
        for batch in tqdm(data_loader, disable=not is_main_process()):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)

        if isinstance(self.evaluator, Classification):  # torchrun: each rank evaluated a shard
            merge_classification(self.evaluator)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar("{}/{}".format(split, k), v, self.epoch)
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]


class TrainerX(SimpleTrainer):
    """Trainer on labelled data only (``train_loader_x``)."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)

        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            meet_freq = (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0
            only_few_batches = self.num_batches < self.cfg.TRAIN.PRINT_FREQ
            if meet_freq or only_few_batches:
                print(self._progress_line(batch_time, data_time, losses))

            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)

            end = time.time()

    def _progress_line(self, batch_time, data_time, losses):
        # Remaining batches of this epoch plus all batches of the later epochs.
        nb_remain = (self.num_batches - self.batch_idx - 1) + (
            self.max_epoch - self.epoch - 1) * self.num_batches
        eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
        return " ".join([
            "epoch [{}/{}]".format(self.epoch + 1, self.max_epoch),
            "batch [{}/{}]".format(self.batch_idx + 1, self.num_batches),
            "time {:.3f} ({:.3f})".format(batch_time.val, batch_time.avg),
            "data {:.3f} ({:.3f})".format(data_time.val, data_time.avg),
            "{}".format(losses),
            "lr {:.4e}".format(self.get_current_lr()),
            "eta {}".format(eta),
        ])

    def parse_batch_train(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return input, label, domain


def _common_epoch_files(directory, names):
    """The checkpoint file of each model to resume from, all of the same epoch.

    Models are saved one after the other, so a run killed between two saves leaves their pointers
    at different epochs (e.g. prompts at 3, alpha at 2). Resuming each from its own pointer would mix
    epochs; instead every model resumes from ``model.pth.tar-<oldest epoch>``, which a model that
    is ahead still has (old files may only be pruned once every model has saved the newer epoch).
    """
    pointers = {name: read_checkpoint_pointer(os.path.join(directory, name)) for name in names}
    same = len(set(pointers.values())) == 1
    if len(names) == 1 or (same and checkpoint_file_epoch(pointers[names[0]]) is not None):
        return pointers
    epochs = {name: _stored_epoch(os.path.join(directory, name), fname) for name, fname in pointers.items()}
    oldest = min(epochs.values())
    files = {}
    for name in names:
        files[name] = pointers[name] if epochs[name] == oldest else epoch_checkpoint_name(oldest)
        fpath = os.path.join(directory, name, files[name])
        if not os.path.isfile(fpath):
            raise FileNotFoundError(
                "Cannot resume consistently: the models in {} were saved at epochs {}, and {} is "
                "missing; restore it, or delete the folder to train from scratch.".format(
                    directory, epochs, fpath))
    if len(set(epochs.values())) > 1:
        print("Note: the run stopped between the saves of epochs {}; resuming every model from "
              "epoch {}".format(sorted(set(epochs.values())), oldest))
    return files


def _note_world_size(checkpoint, saved_world, directory, epoch):
    """Log when the checkpoint was written by another number of processes than this run has (the
    world size is stored since this version; older files: the number of saved RNG states)."""
    if saved_world is None:
        saved_world = len(checkpoint.get("rank_rng_states") or [None])
    world = get_world_size()
    if int(saved_world) != world:
        print("Note: the checkpoint in {} was written by a run on {} process(es) and this run has "
              "{}: training resumes from epoch {}, but the data order and the random streams "
              "(augmentation, sampling) will differ from an uninterrupted {}-process run.".format(
                  directory, saved_world, world, epoch, saved_world))


def _stored_epoch(fdir, fname):
    epoch = checkpoint_file_epoch(fname)
    if epoch is not None:
        return epoch
    return int(load_checkpoint(os.path.join(fdir, fname))["epoch"])  # e.g. model-best.pth.tar


class TrainerXU(SimpleTrainer):
    """Labelled + unlabelled training. Not part of this subset (no CoOp-family trainer uses it)."""

    def run_epoch(self):
        raise NotImplementedError(
            "TrainerXU (semi-supervised / domain adaptation) is not included in this Dassl subset; "
            "subclass TrainerX instead.")
