"""Stopping and restarting protocol grids: Ctrl-C of a local grid, a SLURM cell requeued at its time
limit and resumed, appended cell logs, the CPUs a SLURM cell asks for, GPU checks that agree between
executors, and no pathname expansion against the caller's working directory. The runs are the
stand-in ``train.py`` of tests/helpers/fake_train.py (milliseconds, or as long as a test needs)."""
import json
import os
import signal
import subprocess
import time

import pytest

from tests.helpers.fake_train import write_fake_python
from tests.helpers.runs import REPO
from tools import grid

def fake_env(tmp_path, base=None, **knobs) -> dict:
    """Environment of a protocol script whose train.py calls are the stand-in's; ``base``: e.g. a
    SLURM cluster's environment."""
    (tmp_path / "fake").mkdir(exist_ok=True)
    env = dict(base or os.environ, DATA=str(tmp_path), OUTPUT=str(tmp_path / "out"), SEEDS="1", SHOTS_LIST="1",
               PYTHON=write_fake_python(tmp_path / "fake"), FAKE_CALLS=str(tmp_path / "fake" / "calls"),
               FAKE_PIDS=str(tmp_path / "fake" / "pids"), GRID_POLL="0.2")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(knobs)
    return env


def calls(tmp_path) -> list:
    path = tmp_path / "fake" / "calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has ended
        return fh.read().split(")")[-1].split()[0] != "Z"


def wait_until(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def cell_log(tmp_path, cell: str):
    return tmp_path / "out" / "grid_logs" / (cell.replace("/", "-") + ".log")


# ---- Ctrl-C of EXECUTOR=local -----------------------------------------------------------------------

def test_ctrl_c_stops_a_local_grid_and_a_rerun_resumes(tmp_path):
    env = fake_env(tmp_path, EXECUTOR="local", JOBS="1", GPUS_PER_JOB="0", SEEDS="1 2 3", FAKE_SLEEP="60")
    script = ["bash", "scripts/dpl/fewshot.sh", "dtd", "eurosat"]  # 6 cells, one at a time
    # its own session: os.killpg below is the terminal's Ctrl-C to the foreground process group
    proc = subprocess.Popen(script, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    pids = tmp_path / "fake" / "pids"
    wait_until(lambda: pids.is_file() and pids.read_text().strip(), what="the first cell's train.py")
    started = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert time.time() - started < 30  # not after the 60 s cell
    assert "Traceback" not in err, err
    assert ("[grid] stopped: 1 running cell(s) terminated, 5 queued cell(s) cancelled. Re-run the same "
            "command to resume") in out
    (pid,) = map(int, pids.read_text().split())
    wait_until(lambda: not alive(pid), timeout=10, what="the running train.py to end")  # terminated
    time.sleep(1.0)  # had a queued cell started, its train.py would be listed by now
    assert pids.read_text().split() == [str(pid)] and calls(tmp_path) == []
    assert len(list((tmp_path / "out" / "grid_logs").glob("*.log"))) == 1

    rerun = subprocess.run(script, cwd=REPO, env=dict(env, FAKE_SLEEP="0"), capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "all 6 cell(s) finished" in rerun.stdout
    assert len(calls(tmp_path)) == 12  # search + train of every cell


def test_a_cell_log_is_appended_across_attempts(tmp_path):
    cells = tmp_path / "cells"
    log = tmp_path / "logs" / "a.log"
    cells.write_bytes(b"a/b\0" + str(log).encode() + b"\0" + b"3\0bash\0-c\0echo attempt\0")
    env = dict(EXECUTOR="local", GPUS_PER_JOB="0", GRID_POLL="0.1")
    for _ in range(2):
        proc = subprocess.run(["python", "tools/grid.py", str(cells), "--folder", str(tmp_path)], cwd=REPO,
                              env=dict(os.environ, **env), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = log.read_text().splitlines()
    assert [line.startswith("[grid] cell a/b on ") for line in lines] == [True, False, True, False]
    assert lines[1] == lines[3] == "attempt"


# ---- SLURM ----------------------------------------------------------------------------------------

def test_slurm_cell_at_its_time_limit_is_requeued_and_resumes(slurm, tmp_path):
    """SLURM signals USR2 SLURM_SIGNAL_DELAY seconds before SLURM_TIME (here sent by hand, as the
    controller would): the cell is stopped, requeued, and its next attempt resumes the unfinished run;
    its log keeps both attempts."""
    env = fake_env(tmp_path, slurm.env, EXECUTOR="slurm", GPUS_PER_JOB="0", SLURM_TIME="10",
                   FAKE_SLEEP_FIRST="120", SLURM_EXTRA="--cpus-per-task=1")
    cell = "fewshot/DPLTrain/vit_b16/dtd/shots_1/seed1"
    log = cell_log(tmp_path, cell)
    proc = subprocess.Popen(["bash", "scripts/dpl/fewshot.sh", "dtd"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = tmp_path / "fake" / "pids"
    wait_until(lambda: pids.is_file() and pids.read_text().strip(), what="the cell's search to start")
    sbatch = next((tmp_path / "out" / "grid_logs" / "slurm").glob("*/*/*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR2@90\n" in sbatch
    task = log.read_text().split("SLURM job ")[1].split()[0]
    subprocess.run(["scancel", "--signal=USR2", task], env=env, check=True)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err + log.read_text()
    text = log.read_text()
    assert text.count(f"[grid] cell {cell} on ") == 2, text
    assert "SLURM time limit near (or preempted): cell stopped and requeued" in text
    assert "(requeued 1x: resuming)" in text
    search = "fewshot/DPLSearch/vit_b16/dtd/shots_1/seed1"
    assert f"Run: {tmp_path}/out/{search}" in text and f"Resume (unfinished): {tmp_path}/out/{search}" in text
    (first_pid, *_) = map(int, pids.read_text().split())
    assert not alive(first_pid)
    assert (tmp_path / "out" / cell / ".done").is_file()


def test_slurm_cells_ask_for_their_loader_workers_as_cpus(slurm, tmp_path):
    env = fake_env(tmp_path, slurm.env, EXECUTOR="slurm", GPUS_PER_JOB="0")
    script = ["bash", "scripts/dpl/fewshot.sh", "dtd", "DATALOADER.NUM_WORKERS", "1"]
    proc = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 CPU(s) each" in proc.stdout
    sbatch = [p.read_text() for p in (tmp_path / "out" / "grid_logs" / "slurm").glob("*/*/*_submission.sh")]
    assert "#SBATCH --cpus-per-task=1\n" in sbatch[0]
    # SLURM_EXTRA wins over the loader workers
    proc = subprocess.run(script, cwd=REPO, env=dict(env, SEEDS="2", SLURM_EXTRA="--cpus-per-task=2"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CPU(s) each" not in proc.stdout
    sbatch = [p.read_text() for p in (tmp_path / "out" / "grid_logs" / "slurm").glob("*/*/*_submission.sh")]
    assert sum("#SBATCH --cpus-per-task=2\n" in text for text in sbatch) == 1


def test_cells_cpus_follow_the_configs_and_overrides():
    def cell(trainer, cfg, *opts, search="vit_b16"):
        return grid.Cell("x", "x.log", ["env", f"TRAINER={trainer}", f"CFG={cfg}", f"SEARCH_CFG={search}",
                                        "bash", "_cell.sh", "train", "--", *opts])
    assert grid.cells_cpus(cell("DPLTrain", "vit_b16"), 0) == 8
    assert grid.cells_cpus(cell("DPLTrain", "vit_b16"), 2) == 16  # one process per GPU under torchrun
    assert grid.cells_cpus(cell("DPLTrain", "demo", search="demo"), 1) == 1  # 0 workers -> at least 1
    assert grid.cells_cpus(cell("DPLTrain", "demo"), 1) == 8  # the cell's search: 8 workers
    assert grid.cells_cpus(cell("CoOp", "vit_b16_ep50", "DATALOADER.NUM_WORKERS", "3"), 1) == 3


def test_gres_refusal_says_to_set_gpus_per_job_0(tmp_path, monkeypatch, capsys):
    """A cluster without GPUs refuses --gpus-per-node: the message gives the CPU-partition fix."""
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid generic resource "
                      "(gres) specification' >&2\nexit 1\n")
    sbatch.chmod(0o755)
    cells = tmp_path / "cells"
    cells.write_bytes(b"a/b\0" + str(tmp_path / "a.log").encode() + b"\0" + b"1\0true\0")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("EXECUTOR", "slurm")
    monkeypatch.setenv("GPUS_PER_JOB", "1")
    assert grid.main([str(cells), "--folder", str(tmp_path)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # (sbatch's own line may come before it)
    assert last.startswith("grid.py: error: sbatch refused the job array: ")
    assert "Invalid generic resource" in last and "on a CPU-only partition set GPUS_PER_JOB=0" in last


# ---- the one-by-one executor --------------------------------------------------------------------

def test_gpus_per_job_without_gpus_is_refused_one_by_one_as_locally(tmp_path):
    """GPUS_PER_JOB=2 on a node without GPUs: the default executor refuses as EXECUTOR=local does
    (it used to start two CPU processes under torchrun)."""
    for executor in ("", "local"):
        env = fake_env(tmp_path, GPUS_PER_JOB="2", EXECUTOR=executor, CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run(["bash", "scripts/dpl/fewshot.sh", "dtd"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, (executor, proc.stdout + proc.stderr)
        assert "GPUS_PER_JOB=2 but this node has 0 GPU(s)" in proc.stderr and "0 runs on the CPU" in proc.stderr
        assert calls(tmp_path) == []
    ok = subprocess.run(["bash", "scripts/dpl/fewshot.sh", "dtd"], cwd=REPO, env=dict(env, EXECUTOR="",
                        CUDA_VISIBLE_DEVICES="0,1"), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert calls(tmp_path)[0]["launcher"][:2] == ["-m", "torch.distributed.run"]


def test_patterns_are_not_expanded_in_the_callers_directory(tmp_path):
    """A finished run is skipped whatever files the caller's working directory holds (its artifact
    patterns and SEEDS used to be expanded there as globs)."""
    env = fake_env(tmp_path)
    first = subprocess.run(["bash", f"{REPO}/scripts/dpl/fewshot.sh", "dtd"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    caller = tmp_path / "caller"
    (caller / "a").mkdir(parents=True)
    for name in ("log.txt.old", "a/checkpoint", "prompt_config.json.bak", "1x"):
        (caller / name).write_text("")
    again = subprocess.run(["bash", f"{REPO}/scripts/dpl/fewshot.sh", "dtd"], cwd=caller,
                           env=dict(env, OUTPUT=str(tmp_path / "out"), DATA=str(tmp_path)), capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Skip (finished)" in again.stdout and len(calls(tmp_path)) == 2  # nothing ran again
    star = subprocess.run(["bash", f"{REPO}/scripts/dpl/fewshot.sh", "dtd"], cwd=caller,
                          env=dict(env, OUTPUT=str(tmp_path / "out"), DATA=str(tmp_path), SEEDS="1*"),
                          capture_output=True, text=True, timeout=60)
    assert "seed1x" not in star.stdout + star.stderr
