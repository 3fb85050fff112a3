"""Protocol grids through EXECUTOR=slurm (a real one-node SLURM, started here) and EXECUTOR=local:
the same runs and result table as the sequential default, a failing cell reported with its log while
the others finish, and a re-run that runs the failed cell only.

Grid: fewshot.sh on dtd + eurosat, 1 shot, seeds 1 and 2 (4 cells of search + train; tiny CLIP,
1 epoch). The sequential reference runs its ``train.py`` calls inside the test process (quicker);
the grids run real ``train.py`` processes; all with one thread, so the results agree bit for bit.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.fake_train import write_fake_python
from tests.helpers.in_process import InProcessPython
from tests.helpers.runs import REPO, final_accuracy, tiny_opts
from tools import grid, parse_test_res

DATASETS = ("dtd", "eurosat")
SEEDS = (1, 2)
FAILING = "fewshot/DPLTrain/vit_b16/eurosat/shots_1/seed2"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in ("DescribableTextures", "EuroSAT"):
        write_fixture(name, root)
    return root


def fewshot(output, data_root, clip_path, env=None, **knobs):
    """bash scripts/dpl/fewshot.sh dtd eurosat (tiny settings) -> the finished process."""
    opts = tiny_opts(clip_path, epochs=1)
    del opts[2:4]  # MODEL.BACKBONE.PATH comes from CLIP_CHECKPOINT
    env = dict(env or os.environ, DATA=str(data_root), OUTPUT=str(output), CLIP_CHECKPOINT=str(clip_path),
               SEEDS=" ".join(map(str, SEEDS)), SHOTS_LIST="1", OMP_NUM_THREADS="1",
               GRID_POLL="0.5", **{"PYTHON": sys.executable, **knobs})
    return subprocess.run(["bash", "scripts/dpl/fewshot.sh", *DATASETS, *opts], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def results(output) -> dict:
    """Per run: the artifact without its timestamp, and the final accuracy; plus the result table."""
    found = {}
    for trainer in ("DPLSearch", "DPLTrain"):
        for ds in DATASETS:
            for seed in SEEDS:
                run = output / "fewshot" / trainer / "vit_b16" / ds / "shots_1" / f"seed{seed}"
                artifact = json.loads((run / "prompt_config.json").read_text())
                del artifact["provenance"]["created"]
                found[f"{trainer}/{ds}/{seed}"] = (artifact, final_accuracy(run / "log.txt"))
    parse_test_res.main([str(output / "fewshot"), "--csv", str(output / "table.csv")])
    found["table"] = (output / "table.csv").read_text()
    return found


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, data_root, tiny_clip_path):
    output = tmp_path_factory.mktemp("sequential")
    python, threads = InProcessPython(tmp_path_factory.mktemp("shim")), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        proc = fewshot(output, data_root, tiny_clip_path, PYTHON=str(python.path), SHIM_DIR=str(python.dir))
    finally:
        python.close()
        torch.set_num_threads(threads)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return results(output)


def failing_log(output):
    """Where the grid runner puts the failing cell's output."""
    return output / "grid_logs" / (FAILING.replace("/", "-") + ".log")


def make_cell_fail(output):
    """A file where the failing cell's search writes its output: train.py stops with an error."""
    blocker = output / FAILING.replace("DPLTrain", "DPLSearch")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    return blocker


def check_failure_then_rerun(output, first, rerun, sequential):
    """The grid's first run (FAILING made to fail) and its re-run after the fix (the log is checked
    before: the re-run overwrites it)."""
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    log = failing_log(output)
    assert f"FAILED: {FAILING} (exit 2), log: {log}" in first.stdout
    assert f"1 of 4 cell(s) failed:\n  {FAILING}  (exit 2)  log: {log}" in first.stdout
    for cell in set(f"fewshot/DPLTrain/vit_b16/{d}/shots_1/seed{s}" for d in DATASETS for s in SEEDS) - {FAILING}:
        assert f"done: {cell}" in first.stdout
        assert (output / cell / ".done").is_file()  # the others finished

    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert rerun.stdout.count("Skip (finished): ") == 3 and "1 cell(s)" in rerun.stdout
    assert f"done: {FAILING}" in rerun.stdout
    assert results(output) == sequential


@pytest.mark.slow
def test_slurm_grid_matches_sequential_and_reruns_only_the_failed_cell(slurm, tmp_path, data_root,
                                                                       tiny_clip_path, sequential):
    knobs = dict(EXECUTOR="slurm", JOBS="2", GPUS_PER_JOB="0", SLURM_PARTITION="debug", SLURM_TIME="10")
    blocker = make_cell_fail(tmp_path)
    first = fewshot(tmp_path, data_root, tiny_clip_path, env=slurm.env, **knobs)
    assert "submitted as SLURM job array" in first.stdout and "(2 at a time, 0 GPU(s) each, 10 min, 1 CPU(s) each)" in first.stdout
    failed_log = failing_log(tmp_path).read_text()
    assert "is not writable" in failed_log and "SLURM job " in failed_log  # train.py's error, in the task
    blocker.unlink()
    rerun = fewshot(tmp_path, data_root, tiny_clip_path, env=slurm.env, **knobs)
    check_failure_then_rerun(tmp_path, first, rerun, sequential)


@pytest.mark.slow
def test_local_grid_matches_sequential_and_reruns_only_the_failed_cell(tmp_path, data_root, tiny_clip_path,
                                                                       sequential):
    knobs = dict(EXECUTOR="local", JOBS="2", GPUS_PER_JOB="0")
    blocker = make_cell_fail(tmp_path)
    first = fewshot(tmp_path, data_root, tiny_clip_path, **knobs)
    assert "4 cell(s) as local processes, 2 at a time (no GPUs)" in first.stdout
    assert "is not writable" in failing_log(tmp_path).read_text()
    blocker.unlink()
    rerun = fewshot(tmp_path, data_root, tiny_clip_path, **knobs)
    check_failure_then_rerun(tmp_path, first, rerun, sequential)


def test_slurm_task_killed_midway_is_reported_and_rerun_alone(slurm, tmp_path):
    """scancel of one running task (as a node failure or a time limit would end it): reported as
    not finished, the other cell finishes, the re-run runs that cell only (stand-in train.py)."""
    (tmp_path / "fake").mkdir()
    env = dict(slurm.env, DATA=str(tmp_path), OUTPUT=str(tmp_path / "out"), SEEDS="1", SHOTS_LIST="1",
               PYTHON=write_fake_python(tmp_path / "fake"), FAKE_CALLS=str(tmp_path / "fake" / "calls"),
               EXECUTOR="slurm", GPUS_PER_JOB="0", GRID_POLL="0.3", SLURM_EXTRA="--comment 'dpl grid' --requeue --cpus-per-task=1")
    killed = "fewshot/DPLTrain/vit_b16/eurosat/shots_1/seed1"
    log = tmp_path / "out" / "grid_logs" / (killed.replace("/", "-") + ".log")
    script = ["bash", "scripts/dpl/fewshot.sh", "dtd", "eurosat"]
    grid = subprocess.Popen(script, cwd=REPO, env=dict(env, FAKE_SLEEP="4"), stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (log.is_file() and "SLURM job " in log.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    task = log.read_text().split("SLURM job ")[1].split()[0]
    subprocess.run(["scancel", task], env=env, check=True)
    sbatch = next((tmp_path / "out" / "grid_logs" / "slurm").glob("*/*/*_submission.sh")).read_text()
    for line in ("--array=0-1%2", "--time=1440", "--comment='dpl grid'", "--requeue\n"):
        assert f"#SBATCH {line}" in sbatch
    out, _ = grid.communicate(timeout=120)
    assert grid.returncode == 1, out
    # SLURM signals the task; depending on what dies first it is reported either way
    assert (f"FAILED: {killed} (killed by SIGTERM), log: {log}" in out
            or f"FAILED: {killed} (task {task} did not finish (CANCELLED)" in out), out
    assert "done: fewshot/DPLTrain/vit_b16/dtd/shots_1/seed1" in out
    rerun = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Skip (finished): fewshot/DPLTrain/vit_b16/dtd/shots_1/seed1" in rerun.stdout
    assert "1 cell(s) submitted" in rerun.stdout and f"done: {killed}" in rerun.stdout
    assert (tmp_path / "out" / killed / ".done").is_file()



def test_slurm_rerun_while_tasks_still_run_refuses_then_collects(slurm, tmp_path):
    """Ctrl-C stops the waiting, not the tasks; a re-run meanwhile would start second copies of the
    same cells, so it stops naming the job; once the tasks have ended it has nothing left to do."""
    (tmp_path / "fake").mkdir()
    env = dict(slurm.env, DATA=str(tmp_path), OUTPUT=str(tmp_path / "out"), SEEDS="1 2", SHOTS_LIST="1",
               PYTHON=write_fake_python(tmp_path / "fake"), FAKE_CALLS=str(tmp_path / "fake" / "calls"),
               EXECUTOR="slurm", GPUS_PER_JOB="0", GRID_POLL="0.3", SLURM_EXTRA="--cpus-per-task=1")
    script = ["bash", "scripts/dpl/fewshot.sh", "dtd"]
    first = subprocess.Popen(script, cwd=REPO, env=dict(env, FAKE_SLEEP="2"), stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    tasks = [tmp_path / "out" / "grid_logs" / f"fewshot-DPLTrain-vit_b16-dtd-shots_1-seed{s}.log.slurm-task"
             for s in (1, 2)]
    deadline = time.time() + 60
    while not all(t.is_file() and t.read_text().strip() for t in tasks) and time.time() < deadline:
        time.sleep(0.2)
    array = tasks[0].read_text().split("_")[0]
    during = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert during.returncode == 2, during.stdout + during.stderr
    assert "2 of these cells are still queued or running from an earlier submission" in during.stderr
    assert f"(squeue -j {array}) or cancel them (scancel {array})" in during.stderr
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in the terminal
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 130 and f"the cells keep running as SLURM job {array}" in out
    deadline = time.time() + 60
    while subprocess.run(["squeue", "-h", "-j", array], env=env, capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline
        time.sleep(0.3)
    after = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and "Nothing to run: every cell is finished." in after.stdout


# ---- tools/grid.py's settings ---------------------------------------------------------------------

def test_slurm_extra_becomes_sbatch_options():
    assert grid.slurm_extra("--qos=high --exclusive --constraint a100 --cpus-per-task=8") == {
        "qos": "high", "exclusive": True, "constraint": "a100", "cpus_per_task": "8"}
    with pytest.raises(grid.GridError, match="long sbatch options like --constraint=a100, got '-C'"):
        grid.slurm_extra("-C a100")


def test_local_gpu_groups_are_disjoint_and_checked():
    assert grid.gpu_groups(["0", "1", "2", "3", "4"], 2, None) == ["0,1", "2,3"]
    assert grid.gpu_groups(["0", "1", "2", "3"], 1, 2) == ["0", "1"]
    assert grid.gpu_groups([], 0, 3) == ["", "", ""]
    with pytest.raises(grid.GridError, match="GPUS_PER_JOB=2 but this node has 1 GPU"):
        grid.gpu_groups(["0"], 2, None)


def test_grid_without_sbatch_says_what_to_do(tmp_path, monkeypatch, capsys):
    cells = tmp_path / "cells"
    cells.write_bytes(b"a/b\0" + str(tmp_path / "a.log").encode() + b"\0" + b"1\0true\0")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    monkeypatch.setenv("EXECUTOR", "slurm")
    assert grid.main([str(cells), "--folder", str(tmp_path)]) == 2
    assert "EXECUTOR=slurm but sbatch is not on PATH" in capsys.readouterr().err
    monkeypatch.setenv("EXECUTOR", "local")
    monkeypatch.setenv("GPUS_PER_JOB", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert grid.main([str(cells), "--folder", str(tmp_path)]) == 2
    assert "GPUS_PER_JOB=1 but this node has 0 GPU(s)" in capsys.readouterr().err
