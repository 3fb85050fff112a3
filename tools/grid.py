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
                    (--cpus-per-task defaults to the cells' DATALOADER.NUM_WORKERS x GPUs per cell)
    SLURM_SIGNAL_DELAY  seconds before SLURM_TIME at which a running cell is checkpointed and requeued
                    (default 90); the requeued cell resumes its runs from their last checkpoints
    SLURM_MAX_REQUEUE   how often one cell may be requeued that way (default 3)
    GRID_POLL       seconds between progress checks (default 10)

A cell's log is appended to across attempts (re-runs, SLURM requeues), each attempt opening with a
``[grid] cell ...`` line. Ctrl-C stops a local grid: queued cells are cancelled, running ones
terminated; a re-run resumes.

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
import threading
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


class CellTask:
    """Runs one cell, its output appended to its log. Called by the local executor and, pickled, by
    submitit in a SLURM task; submitit calls ``checkpoint`` when SLURM signals the time limit (or a
    preemption): the running cell is stopped and the task requeued with the same cell, whose runs then
    resume from their last checkpoints (``_cell.sh`` resumes unfinished runs)."""

    def __init__(self):
        self.process = None  # the running cell's process (leader of its own process group)
        self.stopped = False  # stop() came first: the cell is not started any more
        self._lock = threading.Lock()

    def __getstate__(self):  # submitit pickles the task: a fresh one, without process or lock
        return {}

    def __setstate__(self, state):
        self.__init__()

    def __call__(self, cell: Cell, gpus=None) -> int:
        """``gpus`` (e.g. "0,1"; "" for none) sets CUDA_VISIBLE_DEVICES, None keeps the environment's
        (SLURM sets it). Returns the exit code."""
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        os.makedirs(os.path.dirname(cell.log), exist_ok=True)
        with open(cell.log, "a") as log:
            job = os.environ.get("SLURM_JOB_ID", "")
            if os.environ.get("SLURM_ARRAY_JOB_ID"):
                job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
            restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
            log.write(f"[grid] cell {cell.name} on {os.uname().nodename}, {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      + (f", SLURM job {job}" if job else "")
                      + (f" (requeued {restarts}x: resuming)" if restarts else "")
                      + (f", CUDA_VISIBLE_DEVICES={gpus}" if gpus is not None else "") + "\n")
            log.flush()
            with self._lock:
                if self.stopped:
                    log.write("[grid] cancelled before it started\n")
                    return -signal.SIGTERM
                # Its own process group, so that stopping the cell stops train.py and its workers too;
                # a Ctrl-C in the terminal reaches grid.py only, which then stops the cells (run_local).
                self.process = subprocess.Popen(cell.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
            try:
                return self.process.wait()
            finally:
                self.stop()

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the running cell's process group (SIGTERM, then SIGKILL after ``grace`` s); a cell
        not started yet never starts."""
        with self._lock:
            self.stopped = True
            process = self.process
        if process is not None and process.poll() is None:
            stop_group(process, grace)

    def checkpoint(self, cell: Cell, gpus=None):
        """submitit: SLURM's time-limit (or preemption) signal arrived. Stop the cell and requeue it."""
        import submitit

        self.stop()
        with open(cell.log, "a") as log:
            log.write(f"[grid] {time.strftime('%Y-%m-%d %H:%M:%S')} SLURM time limit near (or preempted): "
                      f"cell stopped and requeued; the next attempt resumes from the last checkpoints\n")
        return submitit.helpers.DelayedSubmission(CellTask(), cell, gpus)


def stop_group(process, grace: float) -> None:
    """SIGTERM to ``process``'s group, SIGKILL to what is left after ``grace`` seconds. Polls instead of
    ``process.wait()``: this also runs inside a signal handler that interrupted a ``wait()`` of the
    same process (submitit's checkpoint), whose lock a second ``wait()`` would never get."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait_s
        while time.time() < deadline:
            if ended(process):
                return
            time.sleep(0.05)


def ended(process) -> bool:
    """Whether ``process`` has exited (a zombie not yet reaped counts as exited)."""
    try:
        with open(f"/proc/{process.pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc (not Linux)
        return process.poll() is not None


def run_cell(cell: Cell, gpus=None) -> int:
    """Run one cell to its end (see CellTask). Returns the exit code."""
    return CellTask()(cell, gpus)


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
    """Run the cells as local processes, JOBS at a time, each on its own GPUs. Returns Outcomes.
    Ctrl-C (or SIGTERM) stops the grid: queued cells are cancelled, running ones terminated."""
    gpus = node_gpus()
    per_job = int_knob("GPUS_PER_JOB", 1 if gpus else 0)
    slots = queue.Queue()
    groups = gpu_groups(gpus, per_job, int_knob("JOBS", None))
    for group in groups:
        slots.put(group)
    tasks = {cell.name: CellTask() for cell in cells}

    def on_a_slot(cell):
        group = slots.get()
        try:
            return tasks[cell.name](cell, group)
        finally:
            slots.put(group)

    print(f"[grid] {len(cells)} cell(s) as local processes, {min(len(groups), len(cells))} at a time"
          + (f", {per_job} GPU(s) each" if per_job else " (no GPUs)"), flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    pool = ThreadPoolExecutor(max_workers=len(groups))
    futures = []
    try:
        futures = [(pool.submit(on_a_slot, cell), cell) for cell in cells]
        return wait_for(futures, lambda f: f.done(), future_error, poll)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        queued = sum(future.cancel() for future, _ in futures)
        running = [task for task in tasks.values() if task.process is not None and task.process.poll() is None]
        stop_all(tasks.values())
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"\n[grid] stopped: {len(running)} running cell(s) terminated, {queued} queued cell(s) "
              f"cancelled. Re-run the same command to resume: finished cells are skipped, the others "
              f"resume from their last checkpoints.", flush=True)
        raise SystemExit(130)
    finally:
        pool.shutdown(wait=True)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_all(tasks, grace: float = 10.0) -> None:
    """Stop every task at once: SIGTERM to all their groups first, then wait (SIGKILL after grace)."""
    threads = [threading.Thread(target=task.stop, args=(grace,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


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


def cells_cpus(cell: Cell, gpus: int) -> int:
    """CPUs a cell's task asks for: its runs' DATALOADER.NUM_WORKERS (the largest of its trainer's and
    search's config files, or the override among the cell's KEY VALUE arguments), at least 1, times its
    processes (one per GPU under torchrun)."""
    env = dict(a.split("=", 1) for a in cell.argv if "=" in a and not a.startswith("-"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    opts = cell.argv[cell.argv.index("--") + 1:] if "--" in cell.argv else []
    overrides = dict(zip(opts[::2], opts[1::2]))
    if overrides.get("DATALOADER.NUM_WORKERS", "").isdigit():
        workers = [int(overrides["DATALOADER.NUM_WORKERS"])]
    else:
        workers = [0]
        configs = [(env.get("TRAINER"), env.get("CFG"))]
        if env.get("TRAINER") == "DPLTrain":  # the cell runs the search too
            configs.append(("DPLSearch", env.get("SEARCH_CFG")))
        for trainer, name in configs:
            path = os.path.join(repo, "configs", "trainers", str(trainer), f"{name}.yaml")
            if trainer and name and os.path.isfile(path):
                import yaml

                with open(path) as fh:
                    found = (yaml.safe_load(fh) or {}).get("DATALOADER", {}).get("NUM_WORKERS")
                if isinstance(found, int):
                    workers.append(found)
    return max(1, max(workers)) * max(1, gpus)


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
                                                          + f"-{os.getpid()}", "%j"),
                                      max_num_timeout=int_knob("SLURM_MAX_REQUEUE", 3))
    params = dict(time=int_knob("SLURM_TIME", 24 * 60), job_name="dpl-grid", stderr_to_stdout=True,
                  array_parallelism=int_knob("JOBS", None) or len(cells),
                  signal_delay_s=int_knob("SLURM_SIGNAL_DELAY", 90),
                  additional_parameters=slurm_extra(os.environ.get("SLURM_EXTRA", "")))
    gpus = int_knob("GPUS_PER_JOB", 1)
    if gpus:
        params["gpus_per_node"] = gpus
    if "cpus_per_task" not in params["additional_parameters"]:
        params["cpus_per_task"] = max(cells_cpus(cell, gpus) for cell in cells)
    for knob, key in (("SLURM_PARTITION", "partition"), ("SLURM_ACCOUNT", "account")):
        if os.environ.get(knob):
            params[key] = os.environ[knob]
    executor.update_parameters(**params)
    try:
        jobs = executor.map_array(CellTask(), cells)
    except Exception as err:  # sbatch refused: its message names the problem
        why = str(err).strip().splitlines()[-1]
        if gpus and "generic resource" in why.lower():  # e.g. "Invalid generic resource (gres) specification"
            why += f" (this asked for {gpus} GPU(s) per cell; on a CPU-only partition set GPUS_PER_JOB=0)"
        elif "node configuration is not available" in why and "cpus_per_task" in params:
            why += (f" (this asked for {params['cpus_per_task']} CPU(s) per cell: DATALOADER.NUM_WORKERS x GPUs; "
                    f"ask for fewer with SLURM_EXTRA=--cpus-per-task=N or lower DATALOADER.NUM_WORKERS)")
        raise GridError(f"sbatch refused the job array: {why}") from None
    for job, cell in zip(jobs, cells):
        os.makedirs(os.path.dirname(cell.log), exist_ok=True)
        with open(task_file(cell), "w") as fh:
            fh.write(job.job_id + "\n")
    print(f"[grid] {len(cells)} cell(s) submitted as SLURM job array {jobs[0].job_id.split('_')[0]} "
          f"({params['array_parallelism']} at a time, {gpus} GPU(s) each, {params['time']} min"
          + (f", {params['cpus_per_task']} CPU(s) each" if "cpus_per_task" in params else "") + "); "
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
    parser.add_argument("cells_file", nargs="?")
    parser.add_argument("--folder", help="where SLURM's submitit files go (required with CELLS_FILE)")
    parser.add_argument("--check-gpus", type=int, metavar="N",
                        help="only check that this node has N GPUs (exit 2 naming the fix if not): the "
                             "scripts' one-by-one executor checks GPUS_PER_JOB as EXECUTOR=local does")
    args = parser.parse_args(argv)
    if args.check_gpus is not None:
        try:
            gpu_groups(node_gpus(), args.check_gpus, 1)
        except GridError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.cells_file is None or args.folder is None:
        parser.error("CELLS_FILE and --folder are required")
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
