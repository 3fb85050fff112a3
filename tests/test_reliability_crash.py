"""Crash safety and determinism (issue #10): a search or train run killed with SIGKILL at a random
point after its first checkpoint, then re-run with the same command, ends exactly like an
uninterrupted run; so does a run stopped between the saves of two models; the same seed gives the
same artifact, weights and accuracy.

The killed runs are real ``python train.py`` subprocesses; the reference and resumed runs are
in-process (same torch thread count, so the floating-point results are comparable bit for bit).
``test_dpl_trainers.py`` already proves resume after an exception at an epoch boundary.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers.runs import REPO, final_accuracy, run_train
from tests.test_reliability import search_argv, train_argv

pytestmark = pytest.mark.slow

EPOCHS = 5  # the kill lands within epoch 2, so the killed run always has epochs left


def search(root, out, clip_path):
    return search_argv(root, out, clip_path, epochs=EPOCHS)


def train(root, out, clip_path, config_file):
    return train_argv(root, out, clip_path, epochs=EPOCHS, opts=["TRAINER.DPL.CONFIG_FILE", str(config_file)])


@pytest.fixture(scope="module")
def reference(data_root, tiny_clip_path, tmp_path_factory):
    """An uninterrupted search, then DPLTrain on its artifact (seed 1)."""
    base = tmp_path_factory.mktemp("reference")
    run_train(search(data_root, base / "search", tiny_clip_path))
    run_train(train(data_root, base / "train", tiny_clip_path, base / "search" / "prompt_config.json"))
    return base


def artifact(out):
    art = json.loads((out / "prompt_config.json").read_text())
    art["provenance"].pop("created")
    return art


def final_weights(out, name):
    pointer = (out / name / "checkpoint").read_text().strip()
    ckpt = torch.load(out / name / pointer, map_location="cpu", weights_only=True)
    return pointer, ckpt["state_dict"]


def assert_same_weights(a, b, names):
    for name in names:
        (ptr_a, sd_a), (ptr_b, sd_b) = final_weights(a, name), final_weights(b, name)
        assert ptr_a == ptr_b == f"model.pth.tar-{EPOCHS}"
        assert sd_a.keys() == sd_b.keys()
        assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a), name


def newest_log(out):
    # "log.txt" sorts before the timestamped "log.txt-YYYY-..." files of later runs
    return out / sorted(f for f in os.listdir(out) if f.startswith("log.txt"))[-1]


def kill_after_first_checkpoint(argv, out, watched, seed):
    """Start ``python train.py argv`` and SIGKILL it at a random moment within one epoch after
    ``out/<watched>/checkpoint`` appears: a seeded fraction of the first epoch's duration, measured
    from the TensorBoard event file (created just before epoch 1) to that checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    env.pop("DPL_DEBUG", None)
    fraction = random.Random(seed).random()
    with open(out.parent / f"{out.name}.stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            started = wait_for(lambda: list((out / "tensorboard").glob("events.*")), proc, stderr)
            first_checkpoint = wait_for((out / watched / "checkpoint").exists, proc, stderr)
            time.sleep(fraction * (first_checkpoint - started))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill; raise EPOCHS"


def wait_for(condition, proc, stderr, timeout=300):
    """Poll until ``condition()`` is true while ``proc`` runs; return the time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"train.py ended early: {open(stderr.name).read()[-2000:]}"
        assert time.monotonic() < deadline, f"nothing after {timeout} s"
        time.sleep(0.005)
    return time.monotonic()


def test_search_killed_at_a_random_point_resumes_to_the_same_artifact(reference, data_root,
                                                                      tiny_clip_path, tmp_path):
    out = tmp_path / "search"
    argv = search(data_root, out, tiny_clip_path)
    kill_after_first_checkpoint(argv, out, "prompt_learner", seed=1)
    assert not (out / "prompt_config.json").exists()

    run_train(argv)  # the same command again
    assert artifact(out) == artifact(reference / "search")
    history = json.loads((out / "alpha_history.json").read_text())
    assert history == json.loads((reference / "search" / "alpha_history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert_same_weights(out, reference / "search", ["prompt_learner", "alpha"])


def test_train_killed_at_a_random_point_resumes_to_the_same_accuracy(reference, data_root,
                                                                     tiny_clip_path, tmp_path):
    out = tmp_path / "train"
    argv = train(data_root, out, tiny_clip_path, reference / "search" / "prompt_config.json")
    kill_after_first_checkpoint(argv, out, "prompt_learner", seed=2)

    run_train(argv)
    assert "Found checkpoint at" in newest_log(out).read_text()
    assert final_accuracy(newest_log(out)) == final_accuracy(reference / "train" / "log.txt")
    assert_same_weights(out, reference / "train", ["prompt_learner"])


def test_search_stopped_between_the_saves_of_two_models_resumes_consistently(
        reference, data_root, tiny_clip_path, tmp_path, monkeypatch):
    import dassl.engine.trainer as engine

    save = engine.save_checkpoint

    def stop_before_alpha_of_epoch_2(state, save_dir, *args, **kwargs):
        if os.path.basename(save_dir) == "alpha" and state["epoch"] == 2:
            raise KeyboardInterrupt("killed between the prompt and the alpha save")
        return save(state, save_dir, *args, **kwargs)

    out = tmp_path / "search"
    argv = search(data_root, out, tiny_clip_path)
    monkeypatch.setattr(engine, "save_checkpoint", stop_before_alpha_of_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_train(argv)
    monkeypatch.undo()
    assert (out / "prompt_learner" / "checkpoint").read_text() == "model.pth.tar-2\n"
    assert (out / "alpha" / "checkpoint").read_text() == "model.pth.tar-1\n"

    run_train(argv)
    assert "resuming every model from epoch 1" in newest_log(out).read_text()
    assert artifact(out) == artifact(reference / "search")
    assert_same_weights(out, reference / "search", ["prompt_learner", "alpha"])


def test_same_seed_gives_identical_artifact_weights_and_accuracy(reference, data_root, tiny_clip_path,
                                                                 tmp_path):
    run_train(search(data_root, tmp_path / "search", tiny_clip_path))
    assert artifact(tmp_path / "search") == artifact(reference / "search")
    art = tmp_path / "search" / "prompt_config.json"
    run_train(train(data_root, tmp_path / "train", tiny_clip_path, art))
    assert final_accuracy(tmp_path / "train" / "log.txt") == final_accuracy(reference / "train" / "log.txt")
    assert_same_weights(tmp_path / "train", reference / "train", ["prompt_learner"])


def test_dpl_deterministic_turns_on_deterministic_algorithms(data_root, tiny_clip_path, tmp_path,
                                                            monkeypatch, capsys):
    monkeypatch.setenv("DPL_DETERMINISTIC", "1")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        run_train(train_argv(data_root, tmp_path / "out", tiny_clip_path, flags=["--no-train"]))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert "deterministic algorithms on" in (tmp_path / "out" / "log.txt").read_text()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
