"""dassl compatibility: the trainer loop, checkpoints, resume, crash safety, legacy checkpoints.
Uses ToyLinear on the miniature DTD layout."""
import os
import re

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.engine import SimpleNet, TrainerX, build_trainer
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import (
    UnsafeCheckpointError, load_checkpoint, load_pretrained_weights, save_checkpoint, set_random_seed,
)
from dassl.utils import torchtools
from tests.helpers.mini_dataset import ToyLinear, TrainingInterrupted, make_mini_dtd

CKPT_KEYS = {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "rng_state"}


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    make_mini_dtd(root)
    return str(root)


def _cfg(root, out, *opts):
    cfg = get_cfg_default()
    cfg.merge_from_list([
        "DATASET.ROOT", root, "DATASET.NAME", "MiniDTD", "DATASET.NUM_SHOTS", "4", "OUTPUT_DIR", out,
        "TRAINER.NAME", "ToyLinear", "INPUT.SIZE", "(8, 8)",
        "INPUT.TRANSFORMS", "['random_flip', 'normalize']",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATALOADER.TEST.BATCH_SIZE", "5", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.002",
        "OPTIM.LR_SCHEDULER", "cosine", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant",
        "OPTIM.MAX_EPOCH", "3", "TRAIN.PRINT_FREQ", "5", *opts,
    ])
    return cfg


def _trainer(cfg, seed=1):
    set_random_seed(seed)
    return build_trainer(cfg)


def _files(directory):
    return sorted(os.listdir(directory))


def test_loop_order_checkpoints_and_log_lines(mini_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    trainer = _trainer(_cfg(mini_root, out, "TRAIN.CHECKPOINT_FREQ", "2"))
    trainer.train()
    lines = capsys.readouterr().out.splitlines()

    assert trainer.hook_calls == ["before_train"] + [
        f"{hook}{e}" for e in range(3) for hook in ("before_epoch", "run_epoch", "after_epoch")
    ] + ["after_train"]
    ckpt_dir = os.path.join(out, "toy_model")
    assert _files(ckpt_dir) == ["checkpoint", "model.pth.tar-2", "model.pth.tar-3"]  # freq 2 + last
    assert open(os.path.join(ckpt_dir, "checkpoint")).read() == "model.pth.tar-3\n"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tensorboard")))

    ckpt = torch.load(os.path.join(ckpt_dir, "model.pth.tar-3"), weights_only=True)
    assert set(ckpt) == CKPT_KEYS and ckpt["epoch"] == 3 and ckpt["val_result"] is None
    assert set(ckpt["state_dict"]) == {"1.weight", "1.bias"}
    assert isinstance(ckpt["scheduler"]["successor"], dict)

    assert "No checkpoint found, train from scratch" in lines
    epoch_lines = [line for line in lines if line.startswith("epoch [")]
    assert len(epoch_lines) == 9  # 12 images / batch 4 = 3 batches (< PRINT_FREQ: all printed)
    pattern = (r"epoch \[1/3\] batch \[1/3\] time \d+\.\d{3} \(\d+\.\d{3}\) data \d+\.\d{3} "
               r"\(\d+\.\d{3}\) loss \d+\.\d{4} \(\d+\.\d{4}\) acc \d+\.\d{4} \(\d+\.\d{4}\) "
               r"lr 1\.0000e-05 eta \d+:\d{2}:\d{2}")
    assert re.fullmatch(pattern, epoch_lines[0])
    assert " lr 2.0000e-03 " in epoch_lines[2]  # last batch: the scheduler already stepped
    tail = lines[lines.index("Finish training"):]
    assert tail[1:4] == ["Deploy the last-epoch model", "Evaluate on the *test* set", "=> result"]
    assert tail[4] == "* total: 9" and re.fullmatch(r"\* accuracy: \d+\.\d%", tail[6])
    assert re.fullmatch(r"Elapsed: \d+:\d{2}:\d{2}", tail[-1])


def test_best_val_saves_only_on_strict_improvement(mini_root, tmp_path, capsys):
    out = str(tmp_path / "best")
    trainer = _trainer(_cfg(mini_root, out, "TEST.FINAL_MODEL", "best_val"))
    scripted = iter([50.0, 50.0, 40.0])
    splits = []
    real_test = trainer.test

    def fake_test(split=None):
        splits.append(split)
        return next(scripted) if split == "val" else real_test(split)

    trainer.test = fake_test
    trainer.train()
    lines = capsys.readouterr().out.splitlines()

    assert splits == ["val", "val", "val", None]
    best = torch.load(os.path.join(out, "toy_model", "model-best.pth.tar"), weights_only=True)
    assert best["epoch"] == 1 and best["val_result"] == 50.0  # the tie at epoch 2 did not save
    assert _files(os.path.join(out, "toy_model")) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]
    assert "Deploy the model with the best val performance" in lines
    best_path = os.path.join(out, "toy_model", "model-best.pth.tar")
    assert f"Load {best_path} to toy_model (epoch=1, val_result=50.0)" in lines


def test_test_split_falls_back_to_test_and_returns_accuracy(mini_root, tmp_path, capsys):
    trainer = _trainer(_cfg(mini_root, str(tmp_path / "t")))
    capsys.readouterr()
    acc_val = trainer.test(split="val")
    assert "Evaluate on the *val* set" in capsys.readouterr().out
    trainer.val_loader = None
    acc = trainer.test(split="val")
    out = capsys.readouterr().out
    assert "Evaluate on the *test* set" in out
    assert f"* accuracy: {acc:.1f}%" in out and 0.0 <= acc_val <= 100.0


def _run_lines(lines):
    """Epoch lines without the timing fields (which differ between runs)."""
    return [re.sub(r" (time|data) \S+ \(\S+\)| eta \S+", "", line)
            for line in lines if line.startswith("epoch [")]


def test_resume_continues_like_an_uninterrupted_run(mini_root, tmp_path, capsys):
    whole = str(tmp_path / "whole")
    _trainer(_cfg(mini_root, whole, "TRAIN.CHECKPOINT_FREQ", "1")).train()
    whole_lines = _run_lines(capsys.readouterr().out.splitlines())

    parts = str(tmp_path / "parts")
    ToyLinear.stop_after_epoch = 2
    try:
        with pytest.raises(TrainingInterrupted):
            _trainer(_cfg(mini_root, parts, "TRAIN.CHECKPOINT_FREQ", "1")).train()
    finally:
        ToyLinear.stop_after_epoch = None
    capsys.readouterr()

    resumed = _trainer(_cfg(mini_root, parts, "TRAIN.CHECKPOINT_FREQ", "1"))
    resumed.train()
    lines = capsys.readouterr().out.splitlines()
    ckpt_path = os.path.join(parts, "toy_model", "model.pth.tar-2")
    i = lines.index(f"Found checkpoint at {parts} (will resume training)")
    assert lines[i + 1:i + 6] == [f'Loading checkpoint from "{ckpt_path}"', "Loaded model weights",
                                  "Loaded optimizer", "Loaded scheduler", "Previous epoch: 2"]
    assert resumed.hook_calls[1:4] == ["before_epoch2", "run_epoch2", "after_epoch2"]
    assert _run_lines(lines) == whole_lines[6:]  # same losses, accuracies and lr in epoch 3

    final_whole = torch.load(os.path.join(whole, "toy_model", "model.pth.tar-3"), weights_only=True)
    final_parts = torch.load(os.path.join(parts, "toy_model", "model.pth.tar-3"), weights_only=True)
    for key, value in final_whole["state_dict"].items():
        assert torch.equal(value, final_parts["state_dict"][key])


def test_resume_dir_wins_over_output_dir(mini_root, tmp_path, capsys):
    first = str(tmp_path / "first")
    _trainer(_cfg(mini_root, first, "OPTIM.MAX_EPOCH", "1")).train()
    second = str(tmp_path / "second")
    trainer = _trainer(_cfg(mini_root, second, "OPTIM.MAX_EPOCH", "1", "RESUME", first))
    trainer.train()
    out = capsys.readouterr().out
    assert f"Found checkpoint at {first} (will resume training)" in out
    assert "epoch [" not in out.split("Previous epoch: 1")[1]  # finished run: no epochs left
    assert "Finish training" in out and trainer.hook_calls == ["before_train", "after_train"]


def test_save_checkpoint_crash_leaves_previous_checkpoint(tmp_path, monkeypatch):
    state = {"state_dict": {"module.w": torch.ones(2)}, "epoch": 1, "optimizer": None,
             "scheduler": None, "val_result": None}
    save_checkpoint(state, str(tmp_path))
    assert _files(tmp_path) == ["checkpoint", "model.pth.tar-1"]
    assert list(load_checkpoint(str(tmp_path / "model.pth.tar-1"))["state_dict"]) == ["w"]  # module. stripped

    def killed_mid_write(obj, fh):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torchtools.torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(dict(state, epoch=2), str(tmp_path))
    monkeypatch.undo()

    assert _files(tmp_path) == ["checkpoint", "model.pth.tar-1"]  # no partial file, no temp file
    assert open(tmp_path / "checkpoint").read() == "model.pth.tar-1\n"
    assert load_checkpoint(str(tmp_path / "model.pth.tar-1"))["epoch"] == 1


def test_legacy_pickled_scheduler_needs_opt_in(tmp_path, monkeypatch, capsys):
    from dassl.config import get_cfg_default as cfg_default

    optim_cfg = cfg_default().OPTIM
    optim_cfg.NAME, optim_cfg.LR_SCHEDULER, optim_cfg.WARMUP_EPOCH = "sgd", "cosine", 1
    optim_cfg.WARMUP_TYPE = "constant"
    model = nn.Linear(2, 2)
    optim = build_optimizer(model, optim_cfg)
    sched = build_lr_scheduler(optim, optim_cfg)
    for _ in range(3):
        optim.step()
        sched.step()
    legacy_sched_state = sched.state_dict()
    legacy_sched_state["successor"] = sched.successor  # what real Dassl pickles
    path = tmp_path / "model.pth.tar-3"
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "optimizer": optim.state_dict(),
                "scheduler": legacy_sched_state, "val_result": None}, path)

    monkeypatch.delenv("DASSL_ALLOW_UNSAFE_LOAD", raising=False)
    with pytest.raises(UnsafeCheckpointError, match="DASSL_ALLOW_UNSAFE_LOAD=1"):
        load_checkpoint(str(path))
    assert f'Unable to load checkpoint from "{path}"' in capsys.readouterr().out

    monkeypatch.setenv("DASSL_ALLOW_UNSAFE_LOAD", "1")
    with pytest.warns(UserWarning, match="arbitrary code"):
        ckpt = load_checkpoint(str(path))
    optim2 = build_optimizer(nn.Linear(2, 2), optim_cfg)
    sched2 = build_lr_scheduler(optim2, optim_cfg)
    optim2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    optim.step(), sched.step(), optim2.step(), sched2.step()
    assert optim2.param_groups[0]["lr"] == optim.param_groups[0]["lr"]  # successor drives the live optimizer


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="File path is None"):
        load_checkpoint(None)
    with pytest.raises(FileNotFoundError, match='File is not found at "'):
        load_checkpoint(str(tmp_path / "nope.pth.tar"))


def test_load_pretrained_weights_keeps_matching_shapes(tmp_path, capsys):
    src = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "w.pth")
    dst = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 5))
    load_pretrained_weights(dst, str(tmp_path / "w.pth"))
    assert torch.equal(dst[0].weight, src[0].weight) and not torch.equal(dst[1].bias[:4], src[1].bias)
    out = capsys.readouterr().out
    assert "Successfully loaded pretrained weights from" in out
    assert "Layers discarded due to unmatched keys or size: ['1.weight', '1.bias']" in out


def test_trainer_base_errors_and_anomaly_message(mini_root, tmp_path, capsys):
    trainer = _trainer(_cfg(mini_root, str(tmp_path / "e")))
    with pytest.raises(AssertionError, match="Found duplicate model names"):
        trainer.register_model("toy_model", nn.Linear(1, 1))
    with pytest.raises(KeyError):
        trainer.set_model_mode("sleep")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 1, 2, 3
    with pytest.raises(FloatingPointError, match=r"Loss is infinite or NaN! at epoch 2/3, batch 3/3"):
        trainer.model_backward(torch.tensor(float("nan")))
    trainer.load_model("")
    assert "Note that load_model() is skipped" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="No model at"):
        trainer.load_model(str(tmp_path / "e"), epoch=7)

    class Early(TrainerX):
        def __init__(self, cfg):
            self.register_model("m", nn.Linear(1, 1))

    with pytest.raises(AttributeError, match="before super"):
        Early(None)


def test_simple_net_default_model(mini_root, tmp_path):
    cfg = _cfg(mini_root, str(tmp_path / "s"))
    net = SimpleNet(cfg, cfg.MODEL, num_classes=3)
    logits, feats = net(torch.zeros(2, 3, 8, 8), return_feature=True)
    assert logits.shape == (2, 3) and feats.shape == (2, net.fdim) and net.fdim == 192


def test_stop_request_ends_the_loop_after_the_epoch(mini_root, tmp_path, capsys):
    """A trainer that sets ``stop_requested`` (early stopping) ends after that epoch; after_train
    still runs, and a resumed run that is already stopped runs no epoch at all."""

    class Stopping(ToyLinear):
        def after_epoch(self):
            super().after_epoch()
            if self.epoch == 0:
                self.stop_requested = True
                self.save_model(self.epoch, self.output_dir)

    out = str(tmp_path / "stop")
    trainer = Stopping(_cfg(mini_root, out))
    trainer.train()
    assert trainer.hook_calls == ["before_train", "before_epoch0", "run_epoch0", "after_epoch0",
                                  "after_train"]

    class StoppedAtStart(ToyLinear):
        def before_train(self):
            super().before_train()
            self.stop_requested = True

    again = StoppedAtStart(_cfg(mini_root, out))
    again.train()
    assert again.hook_calls == ["before_train", "after_train"]


def test_trainer_state_is_checkpointed_and_restored(mini_root, tmp_path):
    class WithState(ToyLinear):
        counter = 0

        def trainer_state(self):
            return {"counter": self.counter}

        def load_trainer_state(self, state):
            self.counter = state["counter"]

        def after_epoch(self):
            self.counter += 10
            super().after_epoch()

    out = str(tmp_path / "state")
    first = WithState(_cfg(mini_root, out, "OPTIM.MAX_EPOCH", "2"))
    first.train()
    ckpt = torch.load(os.path.join(out, "toy_model", "model.pth.tar-2"), weights_only=True)
    assert ckpt["trainer_state"] == {"counter": 20}
    resumed = WithState(_cfg(mini_root, out, "OPTIM.MAX_EPOCH", "3"))
    resumed.train()
    assert resumed.counter == 30  # 20 restored + the one epoch it ran


def test_resumed_best_val_run_keeps_the_earlier_best_model(mini_root, tmp_path, capsys):
    """Killed after epoch 1 (val 50) and resumed (val 40, 45): model-best stays epoch 1, as in an
    uninterrupted run; without the stored best result the resumed run saved epoch 2 as best."""

    def run(out, val_results, stop_after=None):
        trainer = _trainer(_cfg(mini_root, out, "TEST.FINAL_MODEL", "best_val",
                                "TRAIN.CHECKPOINT_FREQ", "1"))
        scripted = iter(val_results)
        real_test = trainer.test
        trainer.test = lambda split=None: next(scripted) if split == "val" else real_test(split)
        ToyLinear.stop_after_epoch = stop_after
        try:
            trainer.train()
        finally:
            ToyLinear.stop_after_epoch = None
        return trainer

    whole = str(tmp_path / "whole")
    run(whole, [50.0, 40.0, 45.0])
    parts = str(tmp_path / "parts")
    with pytest.raises(TrainingInterrupted):
        run(parts, [50.0], stop_after=1)
    resumed = run(parts, [40.0, 45.0])
    assert resumed.best_result == 50.0
    best = [torch.load(os.path.join(d, "toy_model", "model-best.pth.tar"), weights_only=True)
            for d in (whole, parts)]
    assert best[0]["epoch"] == best[1]["epoch"] == 1 and best[1]["val_result"] == 50.0
    for key, value in best[0]["state_dict"].items():
        assert torch.equal(value, best[1]["state_dict"][key])
