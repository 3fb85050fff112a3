#!/usr/bin/env python
"""Run the cells of a protocol grid in parallel: as one SLURM job array (through submitit) or as
local processes. The protocol scripts call it (``EXECUTOR=slurm|local bash scripts/dpl/fewshot.sh``);
they decide which cells are left (finished ones are skipped before this runs) and what each cell runs
(a ``bash scripts/dpl/_cell.sh ...`` command that skips/resumes its own runs); this only executes them.

    python tools/grid.py CELLS_FILE --folder DIR

CELLS_FILE holds one record per cell, each field NUL-terminated: name, log path, argc, argv...
A cell's output (stdout + stderr) goes to its log. Environment knobs:

    EXECUTOR        local | slurm
    JOBS            cells at a time (local: default one per GPU group, 1 without GPUs;
                    slurm: the array's parallelism, default all)
    GPUS_PER_JOB    GPUs per cell (default 1; local without GPUs: 0). local: each cell gets its own
                    GPUs from the node's (CUDA_VISIBLE_DEVICES, else nvidia-smi) through
                    CUDA_VISIBLE_DEVICES; the scripts start train.py under torchrun when > 1
    SLURM_PARTITION, SLURM_ACCOUNT, SLURM_TIME (minutes per cell, default 1440),
    SLURM_EXTRA     more sbatch options, long form: "--qos=high --cpus-per-task=8 --exclusive"
    GRID_POLL       seconds between progress checks (default 10)

Exit status: 0 when every cell succeeded, 1 when some failed (listed with their logs), 2 on a
setting that cannot work (one line naming it).
"""
from __future__ import annotations

import argparse
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass


class GridError(Exception):
    """A setting that cannot work; reported as one line, exit 2."""


@dataclass
class Cell:
    name: str   # path of the cell's main run below $OUTPUT, e.g. fewshot/DPLTrain/vit_b16/dtd/shots_1/seed1
    log: str    # where the cell's output goes
    argv: list  # the command (env ... bash scripts/dpl/_cell.sh ...)


@dataclass
class Outcome:
    cell: Cell
    error: str = ""  # empty: success; else e.g. "exit 2"

    @property
    def ok(self) -> bool:
        return not self.error


def read_cells(path: str) -> list:
    """The records of CELLS_FILE (see the module docstring) as Cells."""
    with open(path, "rb") as fh:
        fields = [f.decode() for f in fh.read().split(b"\0")[:-1]]
    cells, i = [], 0
    while i < len(fields):
        name, log, argc = fields[i], fields[i + 1], int(fields[i + 2])
        cells.append(Cell(name, log, fields[i + 3:i + 3 + argc]))
        i += 3 + argc
    return cells


def run_cell(cell: Cell, gpus=None) -> int:
    """Run one cell, its output to its log; ``gpus`` (e.g. "0,1"; "" for none) sets
    CUDA_VISIBLE_DEVICES, None keeps the environment's (SLURM sets it). Returns the exit code."""
    env = dict(os.environ)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    os.makedirs(os.path.dirname(cell.log), exist_ok=True)
    with open(cell.log, "w") as log:
        task = "_".join(os.environ.get(k, "") for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"))
        log.write(f"[grid] cell {cell.name} on {os.uname().nodename}"
                  + (f", SLURM job {task}" if task != "_" else "")
                  + (f", CUDA_VISIBLE_DEVICES={gpus}" if gpus is not None else "") + "\n")
        log.flush()
        return subprocess.run(cell.argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def exit_error(code: int) -> str:
    """'' for exit code 0, else e.g. "exit 2" or "killed by SIGTERM"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}" if code else ""


def int_knob(name: str, default):
    value = os.environ.get(name, "")
    if value == "":
        return default
    if not value.isdigit():
        raise GridError(f"{name}={value} is not a whole number; set {name} to e.g. 2 or leave it unset")
    return int(value)


# ---- local processes ------------------------------------------------------------------------------

def node_gpus() -> list:
    """This node's GPU ids: CUDA_VISIBLE_DEVICES if set, else one per `nvidia-smi -L` line, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if listing.returncode == 0:
            return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU")]
    return []


def gpu_groups(gpus: list, per_job: int, jobs) -> list:
    """Disjoint GPU sets, one per parallel slot: "" (no GPU) per slot when per_job is 0."""
    if per_job == 0:
        return [""] * (jobs or 1)
    if per_job > len(gpus):
        raise GridError(f"GPUS_PER_JOB={per_job} but this node has {len(gpus)} GPU(s) "
                        f"({','.join(gpus) or 'none'}); lower GPUS_PER_JOB (0 runs on the CPU)")
    groups = [",".join(gpus[i:i + per_job]) for i in range(0, len(gpus) - per_job + 1, per_job)]
    return groups[:jobs] if jobs else groups


def run_local(cells: list, poll: float) -> list:
    """Run the cells as local processes, JOBS at a time, each on its own GPUs. Returns Outcomes."""
    gpus = node_gpus()
    per_job = int_knob("GPUS_PER_JOB", 1 if gpus else 0)
    slots = queue.Queue()
    groups = gpu_groups(gpus, per_job, int_knob("JOBS", None))
    for group in groups:
        slots.put(group)

    def on_a_slot(cell):
        group = slots.get()
        try:
            return run_cell(cell, group)
        finally:
            slots.put(group)

    print(f"[grid] {len(cells)} cell(s) as local processes, {min(len(groups), len(cells))} at a time"
          + (f", {per_job} GPU(s) each" if per_job else " (no GPUs)"), flush=True)
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        futures = [(pool.submit(on_a_slot, cell), cell) for cell in cells]
        return wait_for(futures, lambda f: f.done(), future_error, poll)


def future_error(future) -> str:
    """'' if the local cell succeeded, else why not."""
    try:
        code = future.result()
    except OSError as err:  # e.g. its log folder cannot be created
        return f"could not start: {err}"
    return exit_error(code)


# ---- SLURM ----------------------------------------------------------------------------------------

def slurm_extra(text: str) -> dict:
    """SLURM_EXTRA ("--qos=high --exclusive --constraint a100") as submitit's additional_parameters."""
    try:
        params, words = {}, shlex.split(text)
    except ValueError as err:  # e.g. an unclosed quote
        raise GridError(f"SLURM_EXTRA={text!r} cannot be split into options ({err}); check its quotes") from None
    while words:
        word = words.pop(0)
        if not word.startswith("--") or len(word) < 3:
            raise GridError(f"SLURM_EXTRA: use long sbatch options like --constraint=a100, got {word!r}")
        key, has_value, value = word[2:].partition("=")
        if not has_value and words and not words[0].startswith("-"):
            value, has_value = words.pop(0), True
        params[key.replace("-", "_")] = value if has_value else True
    return params


def task_file(cell: Cell) -> str:
    """Where the SLURM task id of the cell's latest submission is kept."""
    return cell.log + ".slurm-task"


def still_queued(cells: list) -> list:
    """The task ids of cells whose earlier submission is still pending or running (so that a re-run
    during it, e.g. after Ctrl-C, does not start a second copy writing the same folders)."""
    recorded = []
    for cell in cells:
        if os.path.exists(task_file(cell)):
            with open(task_file(cell)) as fh:
                recorded.append(fh.read().strip())
    active = set()
    for array in sorted({task.split("_")[0] for task in recorded}):
        listing = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", array], capture_output=True, text=True)
        if listing.returncode == 0:  # an unknown (long finished) job id is an error: nothing active
            active.update(listing.stdout.split())
    return [task for task in recorded if task in active]


def submit_slurm(cells: list, folder: str):
    """Submit the cells as one job array; returns the submitit jobs (one per cell)."""
    if shutil.which("sbatch") is None:
        raise GridError("EXECUTOR=slurm but sbatch is not on PATH; run on a SLURM login node, "
                        "or use EXECUTOR=local")
    busy = still_queued(cells)
    if busy:
        arrays = " ".join(sorted({task.split("_")[0] for task in busy}))
        raise GridError(f"{len(busy)} of these cells are still queued or running from an earlier submission "
                        f"(SLURM task {', '.join(busy[:3])}{', ...' if len(busy) > 3 else ''}); wait for them "
                        f"(squeue -j {arrays}) or cancel them (scancel {arrays}), then re-run")
    try:
        import submitit
    except ImportError:
        raise GridError("EXECUTOR=slurm needs the submitit package: pip install submitit") from None
    executor = submitit.SlurmExecutor(folder=os.path.join(folder, time.strftime("%Y%m%d-%H%M%S")
                                                          + f"-{os.getpid()}", "%j"))
    params = dict(time=int_knob("SLURM_TIME", 24 * 60), job_name="dpl-grid", stderr_to_stdout=True,
                  array_parallelism=int_knob("JOBS", None) or len(cells),
                  additional_parameters=slurm_extra(os.environ.get("SLURM_EXTRA", "")))
    gpus = int_knob("GPUS_PER_JOB", 1)
    if gpus:
        params["gpus_per_node"] = gpus
    for knob, key in (("SLURM_PARTITION", "partition"), ("SLURM_ACCOUNT", "account")):
        if os.environ.get(knob):
            params[key] = os.environ[knob]
    executor.update_parameters(**params)
    try:
        jobs = executor.map_array(run_cell, cells)
    except Exception as err:  # sbatch refused: its message names the problem
        raise GridError(f"sbatch refused the job array: {str(err).strip().splitlines()[-1]}") from None
    for job, cell in zip(jobs, cells):
        os.makedirs(os.path.dirname(cell.log), exist_ok=True)
        with open(task_file(cell), "w") as fh:
            fh.write(job.job_id + "\n")
    print(f"[grid] {len(cells)} cell(s) submitted as SLURM job array {jobs[0].job_id.split('_')[0]} "
          f"({params['array_parallelism']} at a time, {gpus} GPU(s) each, {params['time']} min); "
          f"submitit files: {os.path.dirname(jobs[0].paths.folder)}", flush=True)
    return jobs


def slurm_error(job) -> str:
    """'' if the job's cell succeeded, else why not."""
    try:
        code = job.result()
    except Exception as err:  # the task died (killed, timed out, node failure) or submitit failed
        lines = str(err).strip().splitlines()
        return f"task {job.job_id} did not finish ({job.state}): {lines[0] if lines else type(err).__name__}"
    return exit_error(code)


def run_slurm(cells: list, folder: str, poll: float) -> list:
    jobs = submit_slurm(cells, folder)
    try:
        return wait_for(list(zip(jobs, cells)), lambda j: j.done(), slurm_error, poll)
    except KeyboardInterrupt:
        array = jobs[0].job_id.split("_")[0]
        print(f"\n[grid] stopped waiting; the cells keep running as SLURM job {array} (scancel {array} "
              f"stops them). Re-run the same command once it has ended: finished cells are skipped, "
              f"failed ones run again.", flush=True)
        raise SystemExit(130)


# ---- waiting and reporting ------------------------------------------------------------------------

def wait_for(pairs: list, is_done, error_of, poll: float) -> list:
    """Wait for every (handle, Cell) pair (a future or submitit job), printing each cell as it ends
    and a progress line at least every minute. Returns the Outcomes in the cells' order."""
    pending, outcomes, last_line = list(pairs), {}, time.time()
    while pending:
        for handle, cell in [p for p in pending if is_done(p[0])]:
            pending.remove((handle, cell))
            outcome = outcomes[cell.name] = Outcome(cell, error_of(handle))
            detail = "" if outcome.ok else f" ({outcome.error}), log: {cell.log}"
            print(f"[grid] {'done' if outcome.ok else 'FAILED'}: {cell.name}{detail}", flush=True)
        if pending and time.time() - last_line >= 60:
            failed = sum(not o.ok for o in outcomes.values())
            print(f"[grid] {time.strftime('%H:%M:%S')} {len(outcomes)}/{len(pairs)} cells ended "
                  f"({failed} failed), {len(pending)} queued or running", flush=True)
            last_line = time.time()
        if pending:
            futures = [h for h, _ in pending if hasattr(h, "add_done_callback")]
            if futures:
                wait(futures, timeout=poll, return_when=FIRST_COMPLETED)
            else:
                time.sleep(poll)
    return [outcomes[cell.name] for _, cell in pairs]


def report(outcomes: list) -> int:
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        print(f"[grid] all {len(outcomes)} cell(s) finished.", flush=True)
        return 0
    print(f"[grid] {len(failed)} of {len(outcomes)} cell(s) failed:")
    for o in failed:
        print(f"  {o.cell.name}  ({o.error})  log: {o.cell.log}")
    print("[grid] Fix the cause and re-run the same command: only the failed cells run again.", flush=True)
    return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells_file")
    parser.add_argument("--folder", required=True, help="where SLURM's submitit files go")
    args = parser.parse_args(argv)
    cells = read_cells(args.cells_file)
    executor = os.environ.get("EXECUTOR", "")
    try:
        poll = float(os.environ.get("GRID_POLL", "10"))
    except ValueError:
        poll = -1.0
    try:
        if not poll > 0:
            raise GridError(f"GRID_POLL={os.environ['GRID_POLL']} is not a positive number of seconds")
        if executor == "local":
            outcomes = run_local(cells, poll)
        elif executor == "slurm":
            outcomes = run_slurm(cells, os.path.join(args.folder, "slurm"), poll)
        else:
            raise GridError(f"EXECUTOR={executor or '(unset)'}: grid.py runs EXECUTOR=local or slurm")
    except GridError as err:
        print(f"grid.py: error: {err}", file=sys.stderr)
        return 2
    return report(outcomes)


if __name__ == "__main__":
    sys.exit(main())
