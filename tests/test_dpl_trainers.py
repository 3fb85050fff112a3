"""DPLSearch and DPLTrain end to end through train.py on a tiny CLIP and the miniature DTD."""
import json
import os

import pytest
import torch

from dpl.artifact import derive_lengths, load_artifact
from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.runs import (final_accuracy, run_killed_after_first_epoch, run_train, tiny_opts,
                                train_args)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fixture("DescribableTextures", root)
    return root


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
    # α moved away from its ~1e-3 init (2 epochs x 2 steps with ALPHA_EVERY 4: one Adam step,
    # which moves every entry by about ALPHA_LR = 3.5e-3)
    assert max(abs(v) for row in art["text"]["alpha"] for v in row) > 3e-3
    for png in ("alpha_heatmap.png", "alpha_convergence.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    log = open(os.path.join(out, "log.txt")).read()
    assert "Finish training" in log and "* accuracy:" in log


def test_same_seed_gives_identical_artifact(search_run, data_root, tiny_clip_path, tmp_path):
    _, first = search_run
    second = search(data_root, tmp_path / "again", tiny_clip_path)
    a, b = json.load(open(first)), json.load(open(second))
    a["provenance"].pop("created")
    b["provenance"].pop("created")
    assert a == b


def test_interrupted_search_resumes_to_the_same_artifact(search_run, data_root, tiny_clip_path,
                                                         tmp_path, monkeypatch):
    from trainers.dpl_search import DPLSearch

    _, reference = search_run
    out = tmp_path / "killed"
    run_killed_after_first_epoch(monkeypatch, DPLSearch,
                                 train_args("DPLSearch", "vit_b16", "dtd", data_root, out)
                                 + tiny_opts(tiny_clip_path))
    assert not os.path.exists(out / "prompt_config.json")
    resumed = search(data_root, out, tiny_clip_path)
    a, b = json.load(open(reference)), json.load(open(resumed))
    for x in (a, b):
        x["provenance"].pop("created")
    assert a == b


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
