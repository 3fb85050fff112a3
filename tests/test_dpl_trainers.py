"""DPLSearch and DPLTrain end to end through train.py on a tiny CLIP and the miniature DTD."""
import json
import os

import pytest
import torch

from dpl.artifact import derive_lengths, load_artifact
from tests.helpers.runs import (final_accuracy, run_killed_after_first_epoch, run_train, tiny_opts,
                                train_args)

pytestmark = pytest.mark.slow


def search(root, out, clip_path, seed=1, epochs=2, extra_opts=()):
    argv = train_args("DPLSearch", "vit_b16", "dtd", root, out, seed)
    run_train(argv + tiny_opts(clip_path, epochs) + list(extra_opts))
    return os.path.join(out, "prompt_config.json")


@pytest.fixture(scope="module")
def search_run(data_root, tiny_clip_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    return out, search(data_root, out, tiny_clip_path)


def test_search_writes_valid_artifact_history_and_plots(search_run):
    out, art_path = search_run
    art = load_artifact(art_path)
    for branch in ("text", "vision"):
        alpha = torch.tensor(art[branch]["alpha"])
        assert art[branch]["lengths"] == derive_lengths(alpha, art[branch]["options"])
        assert art[branch]["options"] == [0, 2, 4, 6]
    assert art["text"]["num_blocks"] == 3 and art["vision"]["width"] == 128
    assert art["provenance"]["epochs_run"] == 2 and art["provenance"]["dataset"] == "DescribableTextures"
    history = json.load(open(os.path.join(out, "alpha_history.json")))
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["text"]["lengths"] == art["text"]["lengths"]
    # α moved away from its ~1e-3 init (2 epochs x 2 steps, an α step at each: four Adam steps, each
    # moving every entry by about ALPHA_LR = 3.5e-3)
    assert max(abs(v) for row in art["text"]["alpha"] for v in row) > 3e-3
    for png in ("alpha_heatmap.png", "alpha_convergence.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    log = open(os.path.join(out, "log.txt")).read()
    assert "Finish training" in log and "* accuracy:" in log


def search_killed_after_first_epoch(root, out, clip_path, monkeypatch):
    from trainers.dpl_search import DPLSearch

    run_killed_after_first_epoch(monkeypatch, DPLSearch,
                                 train_args("DPLSearch", "vit_b16", "dtd", root, out)
                                 + tiny_opts(clip_path))


def assert_same_artifact(first, second):
    """Two prompt_config.json files are equal apart from their creation time."""
    a, b = json.load(open(first)), json.load(open(second))
    for x in (a, b):
        x["provenance"].pop("created")
    assert a == b


def test_same_seed_gives_identical_artifact(search_run, data_root, tiny_clip_path, tmp_path):
    _, first = search_run
    assert_same_artifact(first, search(data_root, tmp_path / "again", tiny_clip_path))


def test_interrupted_search_resumes_to_the_same_artifact(search_run, data_root, tiny_clip_path,
                                                         tmp_path, monkeypatch):
    _, reference = search_run
    out = tmp_path / "killed"
    search_killed_after_first_epoch(data_root, out, tiny_clip_path, monkeypatch)
    assert not os.path.exists(out / "prompt_config.json")
    assert_same_artifact(reference, search(data_root, out, tiny_clip_path))


def test_train_on_artifact_then_eval_only_reproduces(search_run, data_root, tiny_clip_path, tmp_path):
    _, art = search_run
    out = tmp_path / "train"
    opts = tiny_opts(tiny_clip_path) + ["TRAINER.DPL.CONFIG_FILE", art]
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, out) + opts)
    acc = final_accuracy(out / "log.txt")
    assert os.path.isfile(out / "prompt_learner" / "model.pth.tar-2")
    assert not os.path.exists(out / "prompt_learner" / "model.pth.tar-1")  # KEEP_CHECKPOINTS 1
    ckpt = torch.load(out / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    assert all("clip" not in k for k in ckpt["state_dict"])  # prompts only
    ev = tmp_path / "eval"
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, ev,
                         extra=["--eval-only", "--model-dir", str(out), "--load-epoch", "2"])
              + tiny_opts(tiny_clip_path) + ["TRAINER.DPL.CONFIG_FILE", str(out / "prompt_config.json")])
    assert final_accuracy(ev / "log.txt") == acc


def test_artifact_of_another_model_is_refused(search_run, data_root, tiny_clip_path, tmp_path, capsys):
    _, art = search_run
    bad = json.load(open(art))
    bad["vision"]["width"] = 768
    path = tmp_path / "other.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SystemExit) as exit_info:
        run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, tmp_path / "o")
                  + tiny_opts(tiny_clip_path) + ["TRAINER.DPL.CONFIG_FILE", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "other.json" in err and "width 768" in err


def test_eval_encodes_class_prompts_once_per_pass(search_run, data_root, tiny_clip_path, tmp_path,
                                                  monkeypatch):
    from dpl.model import DPLCLIP

    calls = []
    original = DPLCLIP.encode_text

    def counting(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(DPLCLIP, "encode_text", counting)
    out = tmp_path / "zs"
    # no prompts at all + eval-only = zero-shot CLIP through DPLTrain; test split has 10 images,
    # batch 2 -> 5 test batches, but the class prompts are encoded once.
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, out, extra=["--eval-only"])
              + tiny_opts(tiny_clip_path) + ["DATALOADER.TEST.BATCH_SIZE", "2"])
    assert len(calls) == 1


def test_kd_weight_zero_builds_no_teacher(search_run, data_root, tiny_clip_path, tmp_path, monkeypatch):
    import dpl.distill

    built = []
    monkeypatch.setattr(dpl.distill.ZeroShotTeacher, "__init__",
                        lambda self, *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    _, art = search_run
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, tmp_path / "nokd")
              + tiny_opts(tiny_clip_path, epochs=1) + ["TRAINER.DPL.CONFIG_FILE", art])
    assert built == []


def test_alpha_batches_cover_the_val_split_each_epoch_and_never_test(data_root, tiny_clip_path, tmp_path,
                                                                     monkeypatch):
    from trainers.dpl_search import CyclingBatches, DPLSearch

    seen = []
    original = CyclingBatches.next

    def recording_next(self):
        b = original(self)
        seen.append(list(b["impath"]))
        return b

    monkeypatch.setattr(CyclingBatches, "next", recording_next)
    trainers = []
    build = DPLSearch.build_model

    def keep(self):
        build(self)
        trainers.append(self)

    monkeypatch.setattr(DPLSearch, "build_model", keep)
    # 5 classes x 2 val shots = 10 val images; 10 train images / batch 4 = 2 steps per epoch;
    # val batch 5 -> the 2 α steps of an epoch see exactly the whole val split.
    search(data_root, tmp_path / "s", tiny_clip_path, epochs=2,
           extra_opts=["TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "5", "TRAINER.DPL.SEARCH.ALPHA_EVERY", "1"])
    dataset = trainers[0].dm.dataset
    val, test = {d.impath for d in dataset.val}, {d.impath for d in dataset.test}
    assert len(seen) == 4
    for epoch in (seen[:2], seen[2:]):
        assert sorted(p for b in epoch for p in b) == sorted(val)
    assert not {p for b in seen for p in b} & test
    assert seen[:2] != seen[2:]  # a fresh random order each pass


def test_kd_config_trains_with_a_teacher(search_run, data_root, tiny_clip_path, tmp_path):
    _, art = search_run
    out = tmp_path / "kd"
    run_train(train_args("DPLTrain", "vit_b16_kd", "dtd", data_root, out)
              + tiny_opts(tiny_clip_path, epochs=1) + ["TRAINER.DPL.CONFIG_FILE", art])
    log = open(out / "log.txt").read()
    assert "Knowledge distillation from zero-shot CLIP (weight 1.0" in log
    assert " kd " in log and "* accuracy:" in log


def test_unseeded_search_resumes_with_the_same_alpha_batches(data_root, tiny_clip_path, tmp_path,
                                                             monkeypatch):
    """SEED -1: the α-batch seed is random, but it is checkpointed, so a resumed run keeps it."""
    from trainers.dpl_search import CyclingBatches, DPLSearch

    seeds = []
    original_start = CyclingBatches.start

    def recording_start(self, position):
        seeds.append(self.seed)
        return original_start(self, position)

    monkeypatch.setattr(CyclingBatches, "start", recording_start)
    argv = train_args("DPLSearch", "vit_b16", "dtd", data_root, tmp_path / "s", seed=1)
    argv[argv.index("--seed"):argv.index("--seed") + 2] = []  # no --seed ...
    opts = tiny_opts(tiny_clip_path) + ["SEED", "-1"]         # ... and no seed at all
    run_killed_after_first_epoch(monkeypatch, DPLSearch, argv + opts)
    run_train(argv + opts)
    assert len(seeds) == 2 and seeds[0] == seeds[1]  # epoch 1 (first run), epoch 2 (resumed run)


def test_alpha_is_saved_once_and_the_batch_seed_is_trainer_state(search_run):
    out, art_path = search_run
    prompts = torch.load(out / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    alpha = torch.load(out / "alpha" / "model.pth.tar-2", weights_only=True)
    assert prompts["state_dict"] and not any("alpha" in k for k in prompts["state_dict"])
    assert set(alpha["state_dict"]) == {"text", "vision"}  # no tensor buffer for the seed
    assert alpha["trainer_state"]["alpha_batch_seed"] == 1  # SEED 1
    art = load_artifact(art_path)
    assert torch.allclose(alpha["state_dict"]["text"], torch.tensor(art["text"]["alpha"]))


def test_search_checkpoint_of_the_older_layout_still_resumes(search_run, data_root, tiny_clip_path,
                                                             tmp_path, monkeypatch):
    """Older versions saved α in prompt_learner/ too and the seed as an alpha/ buffer."""
    _, reference = search_run
    out = tmp_path / "old"
    search_killed_after_first_epoch(data_root, out, tiny_clip_path, monkeypatch)
    prompt_file, alpha_file = out / "prompt_learner" / "model.pth.tar-1", out / "alpha" / "model.pth.tar-1"
    prompts, alpha = (torch.load(f, weights_only=True) for f in (prompt_file, alpha_file))
    seed = alpha.pop("trainer_state")["alpha_batch_seed"]
    prompts.pop("trainer_state")
    prompts["state_dict"].update({"text.alpha": alpha["state_dict"]["text"],
                                  "vision.alpha": alpha["state_dict"]["vision"]})
    alpha["state_dict"]["batch_seed"] = torch.tensor(seed)
    torch.save(prompts, prompt_file)
    torch.save(alpha, alpha_file)
    assert_same_artifact(reference, search(data_root, out, tiny_clip_path))


def _real_dassl_warmup_load(self, state_dict):
    """What the real Dassl's warm-up scheduler does on load: its successor becomes an unpickled
    copy, bound to a copy of the optimizer, so stepping it no longer changes the live LR."""
    import copy

    state = dict(state_dict)
    successor_state = state.pop("successor")
    self.__dict__.update(state)
    self.successor = copy.deepcopy(self.successor)  # deep-copies the optimizer it drives too
    self.successor.load_state_dict(successor_state)


@pytest.mark.parametrize("trainer", ["DPLTrain", "CoOp"])
def test_resume_on_an_engine_with_a_stale_warmup_successor_keeps_the_schedule(
        data_root, tiny_clip_path, tmp_path, monkeypatch, trainer):
    """Killed after epoch 1 of 4 and resumed on an engine whose warm-up scheduler restores a stale
    successor (the real Dassl): same LR per epoch and same prompts as an uninterrupted run."""
    from dassl.optim.lr_scheduler import _BaseWarmupScheduler
    from trainers.coop import CoOp
    from trainers.dpl_train import DPLTrain

    cls = {"DPLTrain": DPLTrain, "CoOp": CoOp}[trainer]
    monkeypatch.setattr(_BaseWarmupScheduler, "load_state_dict", _real_dassl_warmup_load)
    lrs = []
    before_epoch = cls.before_epoch

    def record_lr(self):
        before_epoch(self)
        lrs.append((self.epoch, self.get_current_lr()))

    monkeypatch.setattr(cls, "before_epoch", record_lr)
    config = "vit_b16" if trainer == "DPLTrain" else "vit_b16_ep50"
    opts = tiny_opts(tiny_clip_path, epochs=4) + ["TRAIN.CHECKPOINT_FREQ", "1"]
    if trainer == "DPLTrain":
        opts += ["TRAINER.DPL.MANUAL.TEXT_LENGTH", "2", "TRAINER.DPL.MANUAL.VISION_LENGTH", "2"]
    else:
        opts += ["TRAINER.COOP.PREC", "fp32"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_train(train_args(trainer, config, "dtd", data_root, whole) + opts)
    whole_lrs, lrs[:] = list(lrs), []
    run_killed_after_first_epoch(monkeypatch, cls, train_args(trainer, config, "dtd", data_root, parts)
                                 + opts)
    run_train(train_args(trainer, config, "dtd", data_root, parts) + opts)
    assert lrs == whole_lrs and len({lr for _, lr in lrs}) == 4
    a, b = (torch.load(d / "prompt_learner" / "model.pth.tar-4", weights_only=True)["state_dict"]
            for d in (whole, parts))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_best_val_run_resumed_keeps_the_same_best_model(data_root, tiny_clip_path, tmp_path,
                                                        monkeypatch):
    """TEST.FINAL_MODEL best_val, val results 50/40/45: killed after epoch 1 and resumed, the
    best model is still epoch 1's (it used to become epoch 2's, the first after the resume)."""
    from trainers.dpl_train import DPLTrain

    real_test = DPLTrain.test

    def scripted_test(self, split=None):
        return {0: 50.0, 1: 40.0, 2: 45.0}[self.epoch] if split == "val" else real_test(self, split)

    monkeypatch.setattr(DPLTrain, "test", scripted_test)
    opts = (tiny_opts(tiny_clip_path, epochs=3)
            + ["TEST.FINAL_MODEL", "best_val", "TRAINER.DPL.MANUAL.TEXT_LENGTH", "2"])
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, whole) + opts)
    run_killed_after_first_epoch(monkeypatch, DPLTrain,
                                 train_args("DPLTrain", "vit_b16", "dtd", data_root, parts) + opts)
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, parts) + opts)
    a, b = (torch.load(d / "prompt_learner" / "model-best.pth.tar", weights_only=True)
            for d in (whole, parts))
    assert a["epoch"] == b["epoch"] == 1 and b["val_result"] == 50.0
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())


def test_early_stop_ends_the_search_through_the_engine(data_root, tiny_clip_path, tmp_path,
                                                       monkeypatch, capsys):
    """PATIENCE 1 and a configuration that never changes: the engine's loop ends after epoch 2 of
    4 (DPLSearch has no loop of its own); re-running the finished search runs no epoch."""
    from dpl.search import AlphaHistory

    monkeypatch.setattr(AlphaHistory, "unchanged_epochs", lambda self: len(self.records) - 1)
    out = tmp_path / "early"
    opts = ["TRAINER.DPL.SEARCH.PATIENCE", "1", "TRAINER.DPL.SEARCH.MIN_EPOCHS", "0",
            "TRAIN.CHECKPOINT_FREQ", "1"]
    art = load_artifact(search(data_root, out, tiny_clip_path, epochs=4, extra_opts=opts))
    assert art["provenance"]["early_stopped"] is True and art["provenance"]["epochs_run"] == 2
    assert sorted(os.listdir(out / "alpha")) == ["checkpoint", "model.pth.tar-2"]
    first = capsys.readouterr().out
    assert "epoch [2/4]" in first and "epoch [3/4]" not in first and "Early stop" in first
    search(data_root, out, tiny_clip_path, epochs=4, extra_opts=opts)
    again = capsys.readouterr().out
    assert "epoch [" not in again and "Prompt configuration saved" in again
