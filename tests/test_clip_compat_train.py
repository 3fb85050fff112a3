"""CoOp-style trainer files (tests/coop_style) run unchanged through ``train.main`` for a tiny epoch."""
import re

import pytest
import torch

train = pytest.importorskip("train", reason="train.py (the engine CLI) is not there yet")
mini_dataset = pytest.importorskip("tests.helpers.mini_dataset",
                                   reason="the test-only mini dataset is not there yet")

from tests.coop_style import add_config_keys, registered  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]


@pytest.fixture(scope="module", autouse=True)
def coop_style_trainers():
    """Registers CoOpStyleTest and ZSStyleTest for this module only."""
    with registered() as modules:
        yield modules


@pytest.fixture
def run(monkeypatch, tmp_path, tiny_clip_path):
    """Call train.main with the tiny checkpoint, the mini dataset and these trainers' config keys."""
    data = tmp_path / "data"
    mini_dataset.make_mini_dtd(data)
    monkeypatch.setenv("DPL_CLIP_CHECKPOINT", tiny_clip_path)  # what clip._download returns

    extend_cfg = train.extend_cfg

    def extend_with_test_keys(cfg):  # = adding the trainer's keys to trainers/config.py
        extend_cfg(cfg)
        add_config_keys(cfg)

    monkeypatch.setattr(train, "extend_cfg", extend_with_test_keys)

    def _run(trainer, output, *flags, opts=()):
        train.main([
            "--root", str(data), "--seed", "1", "--trainer", trainer, "--output-dir", str(output),
            *flags,
            "DATASET.NAME", "MiniDTD", "DATASET.NUM_SHOTS", "2",
            "MODEL.BACKBONE.NAME", "ViT-B/16",  # a clip._MODELS key; the file is the override
            "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "16",
            "OPTIM.NAME", "sgd", "OPTIM.LR", "0.002", "OPTIM.MAX_EPOCH", "1",
            "OPTIM.LR_SCHEDULER", "cosine", "TRAIN.PRINT_FREQ", "1", *opts,
        ])
        return (output / "log.txt").read_text(encoding="utf-8")

    return _run


def _accuracy(log):
    found = re.findall(r"\* accuracy: ([\d.]+)%", log)
    assert found, "no accuracy line in log.txt"
    return float(found[-1])


def test_coop_style_trainer_trains_saves_and_reloads(run, tmp_path):
    out = tmp_path / "coop"
    log = run("CoOpStyleTest", out, opts=("TRAINER.COOPSTYLETEST.N_CTX", "2"))
    assert "Finish training" in log and re.search(r"epoch \[1/1\] batch \[\d+/\d+\].* loss ", log)
    trained = _accuracy(log)

    ckpt = torch.load(out / "prompt_learner" / "model.pth.tar-1", map_location="cpu", weights_only=True)
    ctx = ckpt["state_dict"]["ctx"]
    assert ckpt["epoch"] == 1 and ctx.shape[0] == 2 and torch.isfinite(ctx).all()

    log = run("CoOpStyleTest", tmp_path / "eval", "--eval-only", "--model-dir", str(out),
              "--load-epoch", "1", opts=("TRAINER.COOPSTYLETEST.N_CTX", "2"))
    assert f'Loading weights to prompt_learner from "{out / "prompt_learner" / "model.pth.tar-1"}"' in log
    assert _accuracy(log) == trained  # the reloaded prompts give the trained model's test result


def test_zero_shot_style_trainer_evaluates(run, tmp_path):
    log = run("ZSStyleTest", tmp_path / "zs", "--eval-only")
    assert "Prompts: ['banded texture.', 'blotchy texture.', 'braided texture.']" in log
    assert 0.0 <= _accuracy(log) <= 100.0


def test_model_backbone_path_reaches_copied_trainers(run, tmp_path, monkeypatch, tiny_clip_path):
    """Without any environment variable, MODEL.BACKBONE.PATH alone locates CLIP for clip._download."""
    monkeypatch.delenv("DPL_CLIP_CHECKPOINT", raising=False)
    monkeypatch.delenv("CLIP_CHECKPOINT", raising=False)
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "empty-cache"))
    log = run("ZSStyleTest", tmp_path / "zs", "--eval-only",
              opts=("MODEL.BACKBONE.PATH", tiny_clip_path))
    assert "* accuracy:" in log
