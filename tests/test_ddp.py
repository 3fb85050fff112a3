"""One run on 2 processes (issue 17 §1), for real on CPU with gloo: sharded class prompts and
batches give the single-process features, gradients and updates (up to float32 rounding of the
other batch shapes) and exactly its accuracies; only rank 0 writes; a SIGKILLed torchrun job
resumes to exactly the result of an uninterrupted one.

Each rank runs with ``DPL_TEST_THREADS`` (default 1) torch threads; the single-process references
run in this process with one thread too, so float results are comparable.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.ddp import free_port, run_ranks, torchrun_env
from tests.helpers.runs import REPO, final_accuracy, run_train, tiny_opts, train_args

WORLD = 2
CLASSNAMES = ["cat", "dog", "hot air balloon", "tram", "zebra"]  # 5 classes: 3 + 2 per rank
TOL = 1e-6  # relative to the tensor's largest entry when that exceeds 1 (float32 sums)


def close(a, b, tol=TOL):
    return (a - b).abs().max() <= tol * max(1.0, float(b.abs().max()))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fixture("DescribableTextures", root)  # 5 classes, 10 train / 10 val / 10 test images
    return root


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _init(rank):
    from dassl.utils.distributed import init_distributed

    if rank >= 0:
        assert init_distributed(use_cuda=False) == WORLD


def _close(rank):
    from dassl.utils.distributed import close_distributed

    if rank >= 0:
        close_distributed()


# ---------------------------------------------------------------------------------------------
# Class-sharded text encoding: exact features and gradients (uneven C).

def _models(clip_path):
    from dpl.baselines import build_coop
    from dpl.clip_loader import load_clip
    from dpl.model import build_supernet_model

    clip = load_clip("tiny", clip_path, config="openai")
    torch.manual_seed(0)
    supernet = build_supernet_model(clip, CLASSNAMES, [0, 2], [0, 2], alpha_init_std=0.5,
                                    prompt_init="normal", prompt_init_std=0.5)
    coop = build_coop(clip, CLASSNAMES, n_ctx=2, csc=True)  # class-specific contexts are sliced too
    return {"supernet": supernet, "coop": coop}


def _encode_in_rank_chunks(encode, *per_class):
    """One process encoding the classes in the chunks the ranks take, then concatenating."""
    from dpl.distributed import even_ranges

    return torch.cat([encode(*(t[a:b] for t in per_class))
                      for a, b in even_ranges(per_class[0].shape[0], WORLD)])


def _features_and_grads(rank, clip_path, out, fname=None):
    """Text features and the gradients of one global-batch loss (4 images: 2 per rank)."""
    from dassl.utils.distributed import sum_gradients
    from dpl.distributed import rank_part, sharded_mean

    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 4, 2, 3])
    mine = rank_part(range(4))
    result = {}
    for name, model in _models(clip_path).items():
        params = model.prompt_parameters() + model.arch_parameters()
        text = model.encode_text()
        loss = sharded_mean(F.cross_entropy)(model(images[mine], text_features=text), labels[mine])
        loss.backward()
        sum_gradients(params)
        result[name] = {"text": text.detach(), "grads": [p.grad for p in params]}
    torch.save(result, os.path.join(out, fname or f"rank{rank}.pt"))


def _rank_checks(rank, clip_path, out):
    """One spawn for the unit checks: sharded features/gradients, then the AMP step."""
    _init(rank)
    _features_and_grads(rank, clip_path, out)
    _amp_step(rank, out)
    _close(rank)


@pytest.fixture(scope="module")
def rank_checks(tiny_clip_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    run_ranks(_rank_checks, WORLD, tiny_clip_path, str(out))
    return out


def test_sharded_class_prompts_give_the_exact_features_and_gradients(rank_checks, tiny_clip_path,
                                                                     one_thread, monkeypatch):
    """Against one process encoding the same class chunks: equal to 1e-6 (relative to the
    largest entry, as all float32 comparisons here). Against one pass over all C classes: equal up
    to float32 rounding of the other batch shapes (1e-5; one process chunking its own classes
    differs from its unchunked pass by ~1e-6 of the gradient's scale already)."""
    tmp_path = rank_checks
    _features_and_grads(-1, tiny_clip_path, str(tmp_path), "whole.pt")
    monkeypatch.setattr("dpl.model.shard_classes", _encode_in_rank_chunks)
    monkeypatch.setattr("dpl.baselines.model.shard_classes", _encode_in_rank_chunks)
    _features_and_grads(-1, tiny_clip_path, str(tmp_path), "chunked.pt")
    chunked = torch.load(tmp_path / "chunked.pt", weights_only=True)
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in whole:
            assert got[name]["text"].shape == (len(CLASSNAMES), 32)
            assert close(got[name]["text"], chunked[name]["text"]), name
            assert close(got[name]["text"], whole[name]["text"], 1e-5), name
            assert len(got[name]["grads"]) == len(whole[name]["grads"]) > 0
            for g, c, w in zip(got[name]["grads"], chunked[name]["grads"], whole[name]["grads"]):
                assert w.abs().max() > 0 and close(g, c), name
                assert close(g, w, 1e-5), name


def test_class_ranges_cover_every_class_once():
    from dpl.distributed import even_ranges

    for n, world in [(5, 2), (1000, 8), (3, 3), (7, 4)]:
        ranges = even_ranges(n, world)
        assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


# ---------------------------------------------------------------------------------------------
# One trainer step and one evaluation: 2 ranks == 1 process on the same global batch.

SEARCH_OPTS = ["TRAINER.DPL.SEARCH.TEXT_OPTIONS", "[0, 2]", "TRAINER.DPL.SEARCH.VISION_OPTIONS",
               "[0, 2]", "TRAINER.DPL.SEARCH.PLOT", "False", "TRAINER.DPL.SEARCH.ALPHA_INIT_STD", "0.5",
               # 3 val images per α step: 2 + 1 per rank (uneven shares)
               "TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "3"]
MANUAL = ["TRAINER.DPL.MANUAL.TEXT_LENGTH", "2", "TRAINER.DPL.MANUAL.VISION_LENGTH", "2"]


def _argv(trainer, root, clip_path, out):
    opts = SEARCH_OPTS if trainer == "DPLSearch" else MANUAL
    return train_args(trainer, "vit_b16", "dtd", root, out) + tiny_opts(clip_path, epochs=2) + opts


def _build(argv):
    import train
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    cfg = train.setup_cfg(train.get_parser().parse_args(argv))
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def _one_step(rank, trainer_name, root, clip_path, out):
    from dpl.artifact import branch_summary
    from dpl.distributed import rank_part

    _init(rank)
    trainer = _build(_argv(trainer_name, root, clip_path, os.path.join(out, f"out{rank}")))
    accuracy = trainer.test()  # the same (seeded) prompts everywhere: a checkpoint's evaluation
    counted = trainer.evaluator._total

    gen = torch.Generator().manual_seed(2)
    images, labels = torch.randn(4, 3, 32, 32, generator=gen), torch.tensor([1, 0, 3, 4])
    mine = rank_part(range(4))
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 2
    trainer.before_epoch()
    trainer.forward_backward({"img": images[mine], "label": labels[mine]})
    params = trainer.model.prompt_parameters() + trainer.model.arch_parameters()
    result = {"accuracy": accuracy, "counted": counted, "grads": [p.grad for p in params],
              "params": [p.detach() for p in params]}
    if trainer_name == "DPLSearch":
        result["artifact"] = json.dumps({b: branch_summary(a, trainer.options[b], 64, 0.5)
                                         for b, a in trainer._alphas().items()})
        trainer.write_artifact()
        trainer.after_epoch()  # α history + checkpoints
    else:
        trainer.save_model(0, trainer.output_dir)
    # Every rank resumes its own RNG state from rank 0's checkpoint (the states differ by rank).
    torch.manual_seed(100 + rank)
    saved = torch.get_rng_state()
    trainer.save_model(1, trainer.output_dir)
    torch.rand(3)
    trainer.resume_model_if_exist(os.path.join(out, "out0" if rank >= 0 else "out-1"))
    result["rng_restored"] = torch.equal(torch.get_rng_state(), saved)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    _close(rank)


@pytest.mark.parametrize("trainer", ["DPLSearch", "DPLTrain"])
def test_one_step_and_evaluation_on_two_ranks_equal_one_process(trainer, data_root, tiny_clip_path,
                                                                tmp_path, one_thread):
    run_ranks(_one_step, WORLD, trainer, str(data_root), tiny_clip_path, str(tmp_path))
    _one_step(-1, trainer, str(data_root), tiny_clip_path, str(tmp_path))
    ref = torch.load(tmp_path / "rank-1.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for got in ranks:
        assert got["counted"] == ref["counted"] == 10  # the test shards add up to the split
        assert got["rng_restored"]
        assert got["accuracy"] == ref["accuracy"]
        # float32: other batch shapes alone move gradients by ~2e-6 of their scale (see above)
        for g, r in zip(got["grads"], ref["grads"]):
            assert r.abs().max() > 0 and close(g, r, 1e-5), ((g - r).abs().max(), r.abs().max())
        for p, r in zip(got["params"], ref["params"]):
            assert close(p, r), ((p - r).abs().max(), r.abs().max())
    if trainer == "DPLSearch":
        # α is identical on every rank, so every rank derives the same artifact ...
        assert ranks[0]["artifact"] == ranks[1]["artifact"]
        for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
            assert torch.equal(a, b)
    # ... and only rank 0 wrote anything.
    written = sorted(os.listdir(tmp_path / "out0"))
    assert "prompt_learner" in written and "prompt_config.json" in written
    assert not os.path.exists(tmp_path / "out1") or os.listdir(tmp_path / "out1") == []
    if trainer == "DPLSearch":
        assert {"alpha", "alpha_history.json"} <= set(written)
        # The artifact's search block records the number of processes (issue 22 §1).
        for out, world in (("out0", WORLD), ("out-1", 1)):
            search = json.loads((tmp_path / out / "prompt_config.json").read_text())["search"]
            assert search["world_size"] == world and search["seed"] == 1, search


# ---------------------------------------------------------------------------------------------
# Every trainer through train.py on 2 ranks.

BASELINES = {"CoOp": ("vit_b16_ep50", "COOP"),
             "IVLP": ("vit_b16_c2_ep5_batch4_2+2ctx", "IVLP"),
             "MaPLe": ("vit_b16_c2_ep5_batch4_2ctx", "MAPLE")}


def _baseline_argvs(root, clip_path, out):
    runs = {}
    for name, (config, section) in BASELINES.items():
        runs[name] = (train_args(name, config, "dtd", root, os.path.join(out, name))
                      + tiny_opts(clip_path, epochs=1) + [f"TRAINER.{section}.PREC", "fp32"])
    zs = os.path.join(out, "ZeroshotCLIP")
    runs["ZeroshotCLIP"] = (train_args("ZeroshotCLIP", "vit_b16", "dtd", root, zs,
                                       extra=["--eval-only"])
                            + tiny_opts(clip_path) + ["TRAINER.ZEROSHOTCLIP.PREC", "fp32",
                                                      # no training: need not divide by 2
                                                      "DATALOADER.TRAIN_X.BATCH_SIZE", "3"])
    runs["DPLTrain"] = _argv("DPLTrain", root, clip_path, os.path.join(out, "DPLTrain"))
    return runs


def _train_every_trainer(rank, root, clip_path, out, ports):
    import contextlib
    import io

    import train

    os.environ["MASTER_PORT"] = str(ports[0])
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):  # a global batch of 3 on 2 ranks: refused
        try:
            train.main(_argv("DPLTrain", root, clip_path, os.path.join(out, "odd"))
                       + ["DATALOADER.TRAIN_X.BATCH_SIZE", "3"])
        except SystemExit as exit_:
            code = exit_.code
    open(os.path.join(out, f"odd{rank}.txt"), "w").write(f"{code}\n{stderr.getvalue()}")

    for (name, argv), port in zip(_baseline_argvs(root, clip_path, out).items(), ports[1:]):
        os.environ["MASTER_PORT"] = str(port)  # a fresh rendezvous per run, as torchrun would
        train.main(argv)


@pytest.fixture(scope="module")
def two_rank_runs(data_root, tiny_clip_path, tmp_path_factory):
    """train.py in 2 spawned ranks: an odd global batch, then every trainer (tiny, 1 epoch)."""
    out = tmp_path_factory.mktemp("runs")
    runs = _baseline_argvs(str(data_root), tiny_clip_path, str(out))
    ports = [free_port() for _ in range(len(runs) + 1)]
    run_ranks(_train_every_trainer, WORLD, str(data_root), tiny_clip_path, str(out), ports)
    return out, runs


@pytest.mark.slow
def test_global_batch_not_divisible_by_world_is_a_clear_error(two_rank_runs):
    out, _ = two_rank_runs
    for rank in range(WORLD):
        code, err = (out / f"odd{rank}.txt").read_text().split("\n", 1)
        assert code == "2"
        assert "train.py: error: DATALOADER.TRAIN_X.BATCH_SIZE 3 is the global batch" in err
        assert "divisible by the 2 processes" in err


@pytest.mark.slow
def test_every_trainer_runs_on_two_ranks(two_rank_runs):
    tmp_path, runs = two_rank_runs
    for name in runs:
        logs = sorted(os.listdir(tmp_path / name))
        assert [f for f in logs if f.startswith("log.txt")] == ["log.txt"], name  # rank 0 only
        log = (tmp_path / name / "log.txt").read_text()
        assert "World size: 2 process(es)" in log, name
        assert "* total: 10" in log, name  # every test image counted once
        final_accuracy(tmp_path / name / "log.txt")
    # ZeroshotCLIP has no training: its 2-rank evaluation must equal the single-process one.
    run_train(runs["ZeroshotCLIP"][:runs["ZeroshotCLIP"].index("--output-dir") + 1]
              + [str(tmp_path / "zs1")] + runs["ZeroshotCLIP"][runs["ZeroshotCLIP"].index(
                  "--output-dir") + 2:])
    assert (final_accuracy(tmp_path / "zs1" / "log.txt")
            == final_accuracy(tmp_path / "ZeroshotCLIP" / "log.txt"))


# ---------------------------------------------------------------------------------------------
# A torchrun job killed with SIGKILL resumes to the uninterrupted result.

EPOCHS = 3


def _torchrun(argv, out, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("DPL_TEST_THREADS", "1")}
    env.pop("DPL_DEBUG", None)
    for key in torchrun_env(0, 1, 0):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "train.py", *argv]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(f"{out}.stderr", "w"), start_new_session=True, **popen)


def _search_argv(root, clip_path, out):
    return (train_args("DPLSearch", "vit_b16", "dtd", root, out) + tiny_opts(clip_path, EPOCHS)
            + SEARCH_OPTS[:-2] + ["TRAIN.CHECKPOINT_FREQ", "1"])


def _finish(proc, out):
    assert proc.wait(timeout=300) == 0, open(f"{out}.stderr").read()[-3000:]


def _artifact(out):
    art = json.loads((out / "prompt_config.json").read_text())
    art["provenance"].pop("created")
    return art


@pytest.mark.slow
def test_killed_torchrun_search_resumes_to_the_uninterrupted_result(data_root, tiny_clip_path,
                                                                    tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _finish(_torchrun(_search_argv(data_root, tiny_clip_path, ref), ref), ref)
    assert sorted(f for f in os.listdir(ref) if f.startswith("log")) == ["log.txt"]

    argv = _search_argv(data_root, tiny_clip_path, killed)
    proc = _torchrun(argv, killed)
    deadline = time.monotonic() + 300
    while not (killed / "alpha" / "checkpoint").exists():  # epoch 1 saved by both models
        assert proc.poll() is None, open(f"{killed}.stderr").read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks at once
    proc.wait(timeout=60)
    assert not (killed / "prompt_config.json").exists(), "the run finished before the kill"

    _finish(_torchrun(argv, killed), killed)  # the same command again
    logs = sorted(f for f in os.listdir(killed) if f.startswith("log"))
    assert "Found checkpoint at" in (killed / logs[-1]).read_text()
    assert _artifact(killed) == _artifact(ref)
    assert (json.loads((killed / "alpha_history.json").read_text())
            == json.loads((ref / "alpha_history.json").read_text()))
    for name in ("prompt_learner", "alpha"):
        a = torch.load(killed / name / f"model.pth.tar-{EPOCHS}", weights_only=True)["state_dict"]
        b = torch.load(ref / name / f"model.pth.tar-{EPOCHS}", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


# ---------------------------------------------------------------------------------------------
# AMP: an inf gradient on one rank makes every rank skip the step.

def _amp_step(rank, out):
    from dassl.utils.distributed import install_grad_sync
    from dpl.distributed import SyncedGradScaler

    param = torch.nn.Parameter(torch.ones(3))
    optim = torch.optim.SGD([param], lr=0.1)
    install_grad_sync(optim)
    scaler = SyncedGradScaler("cpu", init_scale=4.0)
    steps = []
    for broken in (1, None):  # step 1: rank 1's loss is inf; step 2: finite everywhere
        optim.zero_grad()
        loss = (param * (float("inf") if rank == broken else 1.0)).sum() / WORLD
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
        steps.append((param.detach().clone(), scaler.get_scale()))
    torch.save(steps, os.path.join(out, f"amp{rank}.pt"))


def test_amp_ranks_skip_a_step_together_and_keep_one_scale(rank_checks):
    tmp_path = rank_checks
    steps = [torch.load(tmp_path / f"amp{r}.pt", weights_only=True) for r in range(WORLD)]
    for (p0, s0), (p1, s1) in zip(*steps):
        assert torch.equal(p0, p1) and s0 == s1
    (skipped, scale1), (stepped, scale2) = steps[0]
    assert torch.equal(skipped, torch.ones(3)) and scale1 == 2.0  # inf on rank 1: nobody steps
    assert torch.allclose(stepped, torch.full((3,), 0.9)) and scale2 == 2.0  # summed grad 1


# ---------------------------------------------------------------------------------------------
# NCCL (2 GPUs): the same collectives on CUDA tensors.

def _nccl_collectives(rank, out):
    from dassl.utils.distributed import close_distributed, init_distributed
    from dpl.distributed import gather_rows, sum_over_ranks

    assert init_distributed(use_cuda=True) == WORLD
    local = torch.full((3 - rank, 2), float(rank + 1), device="cuda", requires_grad=True)
    gathered = gather_rows(local, (3, 2))
    (gathered * torch.arange(5.0, device="cuda")[:, None]).sum().backward()
    total = sum_over_ranks({"loss": rank + 1.0})
    torch.save({"gathered": gathered.detach().cpu(), "grad": local.grad.cpu(), "total": total},
               os.path.join(out, f"nccl{rank}.pt"))
    close_distributed()


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < WORLD, reason="needs 2 CUDA devices")
def test_nccl_gather_and_sums_on_two_gpus(tmp_path):
    run_ranks(_nccl_collectives, WORLD, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"nccl{r}.pt", weights_only=True) for r in range(WORLD))
    assert torch.equal(r0["gathered"], r1["gathered"])
    assert r0["gathered"][:, 0].tolist() == [1, 1, 1, 2, 2]
    # d(sum over both ranks' losses)/d(rows): each rank's loss weighs row i by i -> 2i per row
    assert r0["grad"][:, 0].tolist() == [0, 2, 4] and r1["grad"][:, 0].tolist() == [6, 8]
    assert r0["total"] == r1["total"] == {"loss": 3.0}
