"""Multi-process correctness (issue 22 §3-§4, issue 23 cases 7 and 17), for real on 2 CPU
processes joined by gloo (``tests/helpers/ddp.py``):

- without ``--seed`` every rank starts alike (rank 0's seed, module state broadcast) and, on a first
  run, reads the same few-shot set (rank 0 builds splits and caches, the others read them);
- after the models are built each rank has its own random streams (augmentation), and a resumed
  2-rank run still equals an uninterrupted one;
- a resume with another number of processes works and says what differs;
- DPLTrain/CoOp/IVLP/MaPLe log the global-batch loss and accuracy;
- DPLTrain's refusal to replace a trained configuration and a bad ``DPL_DIST_TIMEOUT_MIN`` end every
  rank in one line (exit 2).
"""
from __future__ import annotations

import contextlib
import datetime
import glob
import io
import os
import random
import shutil

import numpy as np
import pytest
import torch

from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.ddp import free_port, run_ranks
from tests.helpers.runs import run_train, tiny_opts, train_args
from tests.test_ddp import BASELINES, MANUAL, SEARCH_OPTS
from dpl.errors import UserError

WORLD = 2


def _unseeded(argv):
    """``argv`` without ``--seed`` (SEED stays -1)."""
    i = argv.index("--seed")
    return argv[:i] + argv[i + 2:]


def _argv(trainer, root, clip_path, out, epochs=1, extra=(), seeded=True, shots=2):
    config = {"DPLSearch": SEARCH_OPTS, "DPLTrain": MANUAL}[trainer]
    argv = (train_args(trainer, "vit_b16", "dtd", root, out, extra=extra)
            + tiny_opts(clip_path, epochs=epochs, shots=shots) + config)
    return argv if seeded else _unseeded(argv)


def _main(argv, port):
    """train.main in this rank: (exit code, stderr)."""
    import train

    os.environ["MASTER_PORT"] = str(port)  # a fresh rendezvous per run, as torchrun would
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            train.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, stderr.getvalue()


def _logs(folder):
    return "".join(open(f).read() for f in sorted(glob.glob(os.path.join(folder, "log.txt*"))))


# ---------------------------------------------------------------------------------------------
# Without --seed: identical prompts after init and after a step, identical few-shot sets.

def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _unseeded_start(rank, roots, clip_path, out, ports):
    import train

    original = train.build_trainer
    for (name, root), port in zip(roots.items(), ports):
        def recording(cfg, name=name):
            trainer = original(cfg)
            record = {"init": _state(trainer.model.prompt_learner),
                      "train_x": [d.impath for d in trainer.dm.dataset.train_x],
                      "val": [d.impath for d in trainer.dm.dataset.val],
                      # the streams augmentation draws from, right after the model is built
                      "streams": (torch.rand(4), random.random(), float(np.random.rand()))}
            if name == "DPLSearch":
                record["alpha_batch_seed"] = trainer.val_batches.seed
            trainer.epoch, trainer.batch_idx = 0, 0
            trainer.num_batches = len(trainer.train_loader_x)
            trainer.before_epoch()
            trainer.forward_backward(next(iter(trainer.train_loader_x)))
            record["step"] = _state(trainer.model.prompt_learner)
            torch.save(record, os.path.join(out, f"{name}-rank{rank}.pt"))
            return trainer

        train.build_trainer = recording
        try:
            # 1 shot of the 2 training images per class: the ranks could pick differently
            code, err = _main(_argv(name, root, clip_path, os.path.join(out, name),
                                    extra=["--no-train"], seeded=False, shots=1), port)
        finally:
            train.build_trainer = original
        assert code == 0, err


@pytest.fixture(scope="module")
def unseeded_runs(tiny_clip_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("unseeded")
    roots = {}
    for name in ("DPLSearch", "DPLTrain"):  # a data folder each: both are first runs
        roots[name] = str(tmp_path_factory.mktemp(f"data-{name}"))
        write_fixture("DescribableTextures", roots[name])
    run_ranks(_unseeded_start, WORLD, roots, tiny_clip_path, str(out),
              [free_port() for _ in roots])
    return {name: [torch.load(out / f"{name}-rank{r}.pt", weights_only=False) for r in range(WORLD)]
            for name in roots}, out


@pytest.mark.parametrize("trainer", ["DPLSearch", "DPLTrain"])
def test_unseeded_ranks_start_alike_and_stay_alike_after_a_step(unseeded_runs, trainer):
    runs, out = unseeded_runs
    r0, r1 = runs[trainer]
    assert r0["init"].keys() == r1["init"].keys() and len(r0["init"]) > 0
    for key in r0["init"]:
        assert torch.equal(r0["init"][key], r1["init"][key]), key
        assert torch.equal(r0["step"][key], r1["step"][key]), key
    assert any(not torch.equal(r0["init"][k], r0["step"][k]) for k in r0["init"])  # it stepped
    if trainer == "DPLSearch":  # the α batches are drawn from one seed on every rank
        assert r0["alpha_batch_seed"] == r1["alpha_batch_seed"]
    assert "SEED -1 (no --seed): this run draws seed " in _logs(out / trainer)
    assert "every one of the 2 processes starts from it" in _logs(out / trainer)


@pytest.mark.parametrize("trainer", ["DPLSearch", "DPLTrain"])
def test_unseeded_first_run_gives_every_rank_the_same_few_shot_files(unseeded_runs, trainer):
    r0, r1 = unseeded_runs[0][trainer]
    assert len(r0["train_x"]) == 5  # 1 shot x 5 classes
    assert r0["train_x"] == r1["train_x"] and r0["val"] == r1["val"]


def _differ(a, b):
    (torch0, py0, np0), (torch1, py1, np1) = a, b
    return not torch.equal(torch0, torch1) and py0 != py1 and np0 != np1


@pytest.mark.parametrize("trainer", ["DPLSearch", "DPLTrain"])
def test_unseeded_ranks_draw_their_own_augmentation_streams(unseeded_runs, trainer):
    r0, r1 = unseeded_runs[0][trainer]
    assert _differ(r0["streams"], r1["streams"])


# ---------------------------------------------------------------------------------------------
# Resume: exact with the same number of processes, explained with another; global step summaries.

def _die_after_first_epoch(cls):
    original = cls.after_epoch

    def after_epoch(self):
        original(self)
        if self.epoch == 0:
            raise KeyboardInterrupt("simulated kill")

    return original, after_epoch


def _resume_ranks(rank, root, clip_path, out, ports):
    from trainers.dpl_train import DPLTrain

    argv = {name: _argv("DPLTrain", root, clip_path, os.path.join(out, name), epochs=2)
            for name in ("full", "killed", "one")}
    code, err = _main(argv["full"], ports[0])
    assert code == 0, err
    original, dying = _die_after_first_epoch(DPLTrain)
    DPLTrain.after_epoch = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            _main(argv["killed"], ports[1])
    finally:
        DPLTrain.after_epoch = original
    if rank == 0:  # a copy to resume with one process (the other rank waits in the next run)
        shutil.copytree(os.path.join(out, "killed"), os.path.join(out, "two"))
    for name, port in (("killed", ports[2]), ("one", ports[3])):  # 2 -> 2 and 1 -> 2 processes
        code, err = _main(argv[name], port)
        assert code == 0, err
    _step_summaries(rank, root, clip_path, out, ports[4])


@pytest.fixture(scope="module")
def resumed_runs(data_root, tiny_clip_path, tmp_path_factory):
    from trainers.dpl_train import DPLTrain

    out = tmp_path_factory.mktemp("resume")
    original, dying = _die_after_first_epoch(DPLTrain)
    with pytest.MonkeyPatch.context() as mp:  # a 1-process run stopped after epoch 1
        mp.setattr(DPLTrain, "after_epoch", dying)
        with pytest.raises(KeyboardInterrupt):
            run_train(_argv("DPLTrain", str(data_root), tiny_clip_path, out / "one", epochs=2))
    run_ranks(_resume_ranks, WORLD, str(data_root), tiny_clip_path, str(out),
              [free_port() for _ in range(5)])
    run_train(_argv("DPLTrain", str(data_root), tiny_clip_path, out / "two", epochs=2))  # 2 -> 1
    return out


def _final(folder):
    return torch.load(os.path.join(folder, "prompt_learner", "model.pth.tar-2"),
                      weights_only=True)


@pytest.mark.slow
def test_resumed_two_rank_run_equals_the_uninterrupted_one(resumed_runs):
    full, resumed = _final(resumed_runs / "full"), _final(resumed_runs / "killed")
    assert "Found checkpoint at" in _logs(resumed_runs / "killed")
    assert "process(es) and this run has" not in _logs(resumed_runs / "killed")
    assert full["state_dict"].keys() == resumed["state_dict"].keys()
    for key in full["state_dict"]:
        assert torch.equal(full["state_dict"][key], resumed["state_dict"][key]), key
    # the ranks' streams differ (augmentation), and each rank resumed its own
    states = full["rank_rng_states"]
    assert len(states) == WORLD and not torch.equal(states[0]["torch"], states[1]["torch"])
    assert full["trainer_state"]["world_size"] == WORLD


@pytest.mark.slow
@pytest.mark.parametrize("name, before, after", [("two", 2, 1), ("one", 1, 2)])
def test_resume_with_another_number_of_processes_works_and_says_so(resumed_runs, name, before,
                                                                   after):
    folder = resumed_runs / name
    log = _logs(folder)
    assert (f"was written by a run on {before} process(es) and this run has {after}: training "
            "resumes from epoch 1, but the data order and the random streams") in log
    assert f"World size: {after} process(es)" in log
    assert _final(folder)["epoch"] == 2  # it finished
    assert "* accuracy:" in log.rsplit("Found checkpoint at", 1)[1]


def test_an_older_checkpoint_without_a_world_size_counts_its_rank_states(capsys):
    from dassl.engine.trainer import _note_world_size

    _note_world_size({"rank_rng_states": [{}, {}, {}]}, None, "out", 3)  # 3 ranks, now 1
    assert "written by a run on 3 process(es) and this run has 1" in capsys.readouterr().out
    _note_world_size({"rng_state": {}}, None, "out", 3)  # a single-process checkpoint
    assert capsys.readouterr().out == ""


# Global-batch loss and accuracy of one step, 3 images on 2 ranks (2 + 1): the single-process
# values, not the mean over ranks (DPLSearch averaged the ranks' accuracies before).

STEP_TRAINERS = ["DPLSearch", "DPLTrain", "CoOp", "IVLP", "MaPLe"]


def _step_argv(trainer, root, clip_path, out):
    if trainer in ("DPLSearch", "DPLTrain"):
        return _argv(trainer, root, clip_path, out)
    config, section = BASELINES[trainer]
    return (train_args(trainer, config, "dtd", root, out) + tiny_opts(clip_path, epochs=1)
            + [f"TRAINER.{section}.PREC", "fp32"])


def _step_summaries(rank, root, clip_path, out, port):
    from dassl.utils.distributed import close_distributed, init_distributed
    from dpl.distributed import rank_part
    from tests.test_ddp import _build

    if rank >= 0:
        os.environ["MASTER_PORT"] = str(port)
        init_distributed(use_cuda=False)
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(3, 3, 32, 32, generator=gen)
    mine = rank_part(range(3))
    summaries = {}
    for name in STEP_TRAINERS:
        trainer = _build(_step_argv(name, root, clip_path, os.path.join(out, f"step-{name}{rank}")))
        # --seed 1 on both ranks; after the build the streams augmentation draws from
        streams = (torch.rand(4), random.random(), float(np.random.rand()))
        # Labels: the model's own predictions for images 0 and 1 (rank 0's), a wrong one for image
        # 2 (rank 1's): 2 of 3 right, 66.7 %, while the ranks' own accuracies are 100 % and 0 %.
        with torch.no_grad():
            predicted = trainer.model(images).argmax(1)
        labels = torch.cat([predicted[:2], (predicted[2:] + 1) % trainer.num_classes])
        trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 2
        trainer.before_epoch()  # DPLSearch: the α batches (3 images: 2 + 1 per rank)
        summaries[name] = trainer.forward_backward({"img": images[mine], "label": labels[mine]})
        summaries[name]["streams"] = streams
    torch.save(summaries, os.path.join(out, f"steps{rank}.pt"))
    if rank >= 0:
        close_distributed()


@pytest.mark.slow
def test_prompt_trainers_log_the_global_batch_loss_and_accuracy(resumed_runs, data_root,
                                                                tiny_clip_path):
    out = resumed_runs
    _step_summaries(-1, str(data_root), tiny_clip_path, str(out), None)
    ref = torch.load(out / "steps-1.pt")
    for rank in range(WORLD):
        got = torch.load(out / f"steps{rank}.pt")
        for name in STEP_TRAINERS:
            assert got[name].keys() == ref[name].keys(), name
            for key in ("loss", "loss_val", "kd"):  # DPLSearch logs its α-step loss too
                if key in ref[name]:
                    assert got[name][key] == pytest.approx(ref[name][key], rel=1e-5), (name, key)
            assert got[name]["acc"] == pytest.approx(ref[name]["acc"], abs=1e-4), name
            assert got[name]["acc"] == pytest.approx(200 / 3, abs=1e-4), name  # not (100 + 0) / 2


@pytest.mark.slow
def test_seeded_ranks_draw_their_own_augmentation_streams_after_the_model_is_built(resumed_runs):
    """--seed 1 on both ranks: alike up to the synced models, then seed + rank."""
    r0, r1 = (torch.load(resumed_runs / f"steps{r}.pt") for r in range(WORLD))
    for name in STEP_TRAINERS:
        assert _differ(r0[name]["streams"], r1[name]["streams"]), name


# ---------------------------------------------------------------------------------------------
# One line on every rank: a bad DPL_DIST_TIMEOUT_MIN, DPLTrain refusing to replace a configuration.
# Rank 0 builds the dataset first (split and caches), the others then read them.

def _one_line_ranks(rank, root, clip_path, out, ports, own_root):
    results = {}
    trained = os.path.join(out, "trained")
    # --eval-only into the training folder with another configuration (text length 1, not 2)
    other_config = _argv("DPLTrain", root, clip_path, trained, extra=["--eval-only"])
    other_config[other_config.index("TRAINER.DPL.MANUAL.TEXT_LENGTH") + 1] = "1"
    for case, value, port in (("abc", "abc", ports[0]), ("zero", "0", ports[1]),
                              ("refusal", "1.5", ports[2])):
        os.environ["DPL_DIST_TIMEOUT_MIN"] = value
        argv = other_config if case == "refusal" else _argv("DPLTrain", root, clip_path,
                                                             os.path.join(out, case))
        results[case] = _main(argv, port)
    os.environ.pop("DPL_DIST_TIMEOUT_MIN")
    os.environ["MASTER_PORT"] = str(ports[3])
    results["datasets"] = _first_builds(rank, root, own_root)
    torch.save(results, os.path.join(out, f"lines{rank}.pt"))


def _first_builds(rank, coop_root, own_root):
    from dassl.config import get_cfg_default
    from dassl.data import DataManager
    from dassl.utils.distributed import close_distributed, init_distributed, main_process_first
    from trainers.config import extend_cfg

    import datasets  # noqa: F401

    init_distributed(use_cuda=False)
    built = {}
    for name, root in (("DescribableTextures", coop_root), ("ImageFolder", own_root)):
        cfg = get_cfg_default()
        extend_cfg(cfg)
        cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS = name, root, 2
        cfg.DATALOADER.NUM_WORKERS = 0
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            dm = DataManager(cfg)
        built[name] = {"stdout": stdout.getvalue(),
                       "train_x": [d.impath for d in dm.dataset.train_x],
                       "test": [d.impath for d in dm.dataset.test]}

    def fails_on_rank0():
        if rank == 0:
            raise UserError("rank 0's data is broken; fix it.")
        return "built"

    try:
        built["failure"] = main_process_first(fails_on_rank0, "the dataset")
    except UserError as err:
        built["failure"] = f"UserError: {err}"
    built["broadcast"] = _broadcast_views(rank)
    close_distributed()
    return built


class _Learner(torch.nn.Module):
    def __init__(self, rank):
        super().__init__()
        self.prompt = torch.nn.Parameter(torch.full((2, 3), float(rank)))
        self.alpha = torch.nn.Parameter(torch.full((2,), float(rank)))
        self.register_buffer("counts", torch.full((2,), float(rank)))

    def arch_parameters(self):
        return [self.alpha]


def _broadcast_views(rank):
    """The start-of-run broadcast reaches a parameter-less checkpoint view (DPLSearch's prompts
    without α) and buffers: every rank ends with rank 0's values."""
    from dassl.utils.distributed import broadcast_modules
    from trainers.dpl_search import PromptsWithoutAlpha

    learner = _Learner(rank)
    view = PromptsWithoutAlpha(learner)
    assert list(view.parameters()) == []
    broadcast_modules([view])
    return {"prompt": learner.prompt.detach().clone(), "counts": learner.counts.clone(),
            "alpha": learner.alpha.detach().clone()}  # α: not in the view (model "alpha" has it)


@pytest.fixture(scope="module")
def one_line_runs(tiny_clip_path, tmp_path_factory):
    from tests.test_own_data import make_imagefolder

    out = tmp_path_factory.mktemp("lines")
    root = tmp_path_factory.mktemp("data")
    write_fixture("DescribableTextures", root)
    own_root = make_imagefolder(tmp_path_factory.mktemp("own") / "d")
    # A trained DPLTrain folder (text length 2) that the 2-rank run with text length 1 must not touch.
    run_train(_argv("DPLTrain", str(root), tiny_clip_path, out / "trained"))
    run_ranks(_one_line_ranks, WORLD, str(root), tiny_clip_path, str(out),
              [free_port() for _ in range(4)], own_root)
    return [torch.load(out / f"lines{r}.pt") for r in range(WORLD)], out


@pytest.mark.parametrize("case, value", [("abc", "'abc'"), ("zero", "'0'")])
def test_bad_dist_timeout_is_one_line_on_every_rank(one_line_runs, case, value):
    for results in one_line_runs[0]:
        code, err = results[case]
        assert code == 2
        assert err.strip().splitlines() == [
            f"train.py: error: DPL_DIST_TIMEOUT_MIN={value} is not a positive number of minutes; "
            "set e.g. DPL_DIST_TIMEOUT_MIN=30 (fractions such as 1.5 work too) or unset it for the "
            "default 30."]


def test_dpltrain_refusal_stops_every_rank_in_one_line(one_line_runs):
    results, out = one_line_runs
    for rank_results in results:  # DPL_DIST_TIMEOUT_MIN=1.5 was accepted: the ranks joined
        code, err = rank_results["refusal"]
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "holds prompts trained on the configuration in" in err
        assert "gives text [1, 1" in err
    from dpl.artifact import lengths_from_artifact, load_artifact

    text, _ = lengths_from_artifact(load_artifact(str(out / "trained" / "prompt_config.json")))
    assert text[0] == 2  # the trained folder's configuration is intact


@pytest.mark.parametrize("dataset, built_once", [
    ("DescribableTextures", "Saving preprocessed few-shot data to"),
    ("ImageFolder", "ImageFolder: 3 classes"),  # the split, then its few-shot cache
])
def test_rank0_builds_splits_and_caches_first_and_the_others_read_them(one_line_runs, dataset,
                                                                       built_once):
    r0, r1 = (results["datasets"][dataset] for results in one_line_runs[0])
    assert built_once in r0["stdout"] and built_once not in r1["stdout"]
    assert "Saving preprocessed" not in r1["stdout"]
    assert "Loading preprocessed few-shot data from" in r1["stdout"]
    assert r0["train_x"] == r1["train_x"] and r0["test"] == r1["test"] and len(r0["train_x"]) > 0


def test_start_of_run_broadcast_reaches_parameterless_views_and_buffers(one_line_runs):
    for rank, results in enumerate(one_line_runs[0]):
        got = results["datasets"]["broadcast"]
        assert torch.equal(got["prompt"], torch.zeros(2, 3))  # rank 0's
        assert torch.equal(got["counts"], torch.zeros(2))
        assert torch.equal(got["alpha"], torch.full((2,), float(rank)))  # the view leaves α out


def test_a_failure_of_rank0_while_building_first_stops_every_rank(one_line_runs):
    for results in one_line_runs[0]:
        assert results["datasets"]["failure"] == "UserError: rank 0's data is broken; fix it."


# ---------------------------------------------------------------------------------------------
# Single-process units.

@pytest.mark.parametrize("value, minutes", [("1.5", 1.5), ("", 30), (" 45 ", 45), ("0.25", 0.25)])
def test_dist_timeout_takes_minutes_with_fractions(monkeypatch, value, minutes):
    from dassl.utils.distributed import dist_timeout

    monkeypatch.setenv("DPL_DIST_TIMEOUT_MIN", value)
    assert dist_timeout() == datetime.timedelta(minutes=minutes)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "1,5"])
def test_dist_timeout_refuses_what_is_not_a_positive_number(monkeypatch, value):
    from dassl.utils.distributed import dist_timeout

    monkeypatch.setenv("DPL_DIST_TIMEOUT_MIN", value)
    with pytest.raises(UserError, match=rf"DPL_DIST_TIMEOUT_MIN='{value}' is not a positive number"):
        dist_timeout()


def test_dassl_shards_with_dpls_one_contiguous_split(monkeypatch):
    import dassl.utils.distributed as ddist
    import dpl.distributed

    assert ddist.even_ranges is dpl.distributed.even_ranges
    for n, world in [(10, 3), (2, 4), (7, 2)]:
        monkeypatch.setattr(ddist, "get_world_size", lambda: world)
        parts = []
        for rank in range(world):
            monkeypatch.setattr(ddist, "get_rank", lambda: rank)
            parts.append(ddist.shard_of(list(range(n))))
        assert [list(range(a, b)) for a, b in dpl.distributed.even_ranges(n, world)] == parts


def test_checkpoints_load_onto_the_cpu(tmp_path, monkeypatch):
    """A file saved from cuda:0 is read with map_location="cpu" (each rank then moves it)."""
    from dassl.utils import load_checkpoint

    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen["map_location"] = kwargs.get("map_location")
        return real_load(*args, **kwargs)

    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "m.pth.tar")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "load", spy)
    assert torch.equal(load_checkpoint(str(tmp_path / "m.pth.tar"))["state_dict"]["w"], torch.ones(2))
    assert seen["map_location"] == "cpu"


# ---------------------------------------------------------------------------------------------
# CUDA: NCCL takes the module state that lives on the CPU too; a checkpoint of cuda:0 resumes on
# the CPU first and then where the model is.

def _nccl_broadcast(rank, out):
    from dassl.utils.distributed import broadcast_modules, close_distributed, init_distributed

    assert init_distributed(use_cuda=True) == WORLD
    module = torch.nn.Linear(2, 2).cuda()
    module.register_buffer("on_cpu", torch.full((3,), float(rank)))  # after .cuda(): stays on the CPU
    with torch.no_grad():
        module.weight.fill_(rank + 1.0)
    broadcast_modules([module])
    torch.save({k: v.cpu() for k, v in module.state_dict().items()},
               os.path.join(out, f"bcast{rank}.pt"))
    close_distributed()


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < WORLD, reason="needs 2 CUDA devices")
def test_nccl_broadcast_of_module_state_on_gpu_and_cpu(tmp_path):
    run_ranks(_nccl_broadcast, WORLD, str(tmp_path))
    for rank in range(WORLD):
        state = torch.load(tmp_path / f"bcast{rank}.pt", weights_only=True)
        assert torch.equal(state["weight"], torch.ones(2, 2))
        assert torch.equal(state["on_cpu"], torch.zeros(3))


@pytest.mark.cuda
def test_a_cuda_checkpoint_resumes_through_the_cpu_onto_the_gpu(tmp_path):
    from dassl.utils import load_checkpoint, resume_from_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2).cuda()
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, device="cuda")).sum().backward()
    optim.step()
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 1,
                     "optimizer": optim.state_dict()}, str(tmp_path))
    loaded = load_checkpoint(str(tmp_path / "model.pth.tar-1"))
    assert loaded["state_dict"]["weight"].device.type == "cpu"
    fresh = torch.nn.Linear(3, 2).cuda()
    fresh_optim = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    assert resume_from_checkpoint(str(tmp_path), fresh, fresh_optim) == 1
    assert fresh.weight.device.type == "cuda" and torch.equal(fresh.weight, model.weight)
    buf = next(iter(fresh_optim.state.values()))["momentum_buffer"]
    assert buf.device == fresh.weight.device
