"""GPU check: run everything only a GPU can run, and end with one table (check, result, time, peak memory).

    bash scripts/gpu_check.sh [--workdir DIR] [--keep] [--out DIR]

Needs no data and no weights: a random-init CLIP with ViT-B/16's sizes is written in OpenAI's format,
and a miniature synthetic dataset in DTD's layout, both into a temporary folder. In order:

1. ``benchmarks/flex_check.py``: compiled flex_attention vs the explicit-score path of the fused
   supernet block, forward and backward, at 8/18/77 text and 197 image tokens in fp32/amp/bf16; its
   one-line verdict says whether flex may become the default;
2. ``pytest -m cuda``: the CUDA-marked tests (precision steps, fused vs reference, fp16 teacher,
   resume, deterministic mode);
3. ``benchmarks/bench_supernet.py --device cuda``: fused vs reference speed, memory and agreement;
4. per precision (fp32, amp, fp16, bf16): a 2-epoch DPLSearch -> 2-epoch DPLTrain on its artifact ->
   ``--eval-only`` of the trained prompts, all through ``train.py``.

Each step runs in its own process (group); "peak memory" is that process's
``torch.cuda.max_memory_allocated``. Time: the whole check stays within ``GPU_CHECK_BUDGET_S``
seconds (default 450, so it ends within 8 minutes on one H100); each step also has its own cap
(SECTION_BUDGET_S); a step that runs past its time is stopped and fails its row, and a step that no
longer fits is skipped. All verdicts go to stdout and to ``gpu_check_result.json`` in ``--out``
(default: $GPU_CHECK_OUT, else ./output/gpu_check), written when the check ends.
Exit status 1 when a check failed. Without a CUDA device it says so and exits 0 after running
nothing (and writes nothing). Runs on one GPU (the first, unless CUDA_VISIBLE_DEVICES says
otherwise). ``--device cpu --tiny`` runs the same pipeline on the CPU with a tiny CLIP and fp32 only,
so that the check itself is tested. ``--missing-packages`` prints the pip names of what this
interpreter lacks (scripts/gpu_check.sh uses it; imports nothing but the standard library).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import resource
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "amp", "fp16", "bf16")
EPOCHS = 2
PEAK_MARK = "GPU_CHECK_PEAK_BYTES="
MAX_FUSED_DIFF = 1e-3  # fused vs reference outputs of bench_supernet (fp32)
# Time (seconds). The whole check: GPU_CHECK_BUDGET_S, default 450 (7.5 minutes, so that it ends within
# 8 on one H100). Each step is also capped by its section's budget; the flex comparison stops starting
# comparisons FLEX_MARGIN_S before its cap, so that it still reports its verdict.
TOTAL_BUDGET_S = 450.0
SECTION_BUDGET_S = {"flex": 150.0, "pytest": 120.0, "bench": 45.0, "pipeline": 60.0}  # pipeline: per step
FLEX_MARGIN_S = 30.0
MIN_STEP_S = 10.0  # a step with less time left than this is skipped, not started
RESULT_FILE = "gpu_check_result.json"
# What the check imports: module -> pip name. torch is never installed by scripts/gpu_check.sh;
# pytest is optional (without it the CUDA-marked tests are a skipped row).
REQUIRED_MODULES = {"torch": "torch", "torchvision": "torchvision", "open_clip": "open-clip-torch",
                    "yacs": "yacs", "ftfy": "ftfy", "wcwidth": "wcwidth", "regex": "regex", "tqdm": "tqdm",
                    "numpy": "numpy", "PIL": "pillow", "scipy": "scipy", "tabulate": "tabulate",
                    "matplotlib": "matplotlib", "tensorboard": "tensorboard", "submitit": "submitit"}
OPTIONAL_MODULES = {"pytest": "pytest"}


def missing_packages(find_spec=importlib.util.find_spec) -> List[str]:
    """Pip names of the required modules this interpreter cannot import (nothing is imported)."""
    return [pip for module, pip in REQUIRED_MODULES.items() if find_spec(module) is None]


class Clock:
    """The check's deadline and each section's cap: how long the next step may run."""

    def __init__(self, total_s: float, now=time.perf_counter):
        self.now, self.start, self.total_s = now, now(), total_s

    def left(self) -> float:
        return self.total_s - (self.now() - self.start)

    def step_limit(self, section: str) -> Optional[float]:
        """Seconds the next step of ``section`` may run, or None when it no longer fits. The caps
        scale with the whole budget (GPU_CHECK_BUDGET_S=900 doubles each)."""
        limit = min(SECTION_BUDGET_S[section] * self.total_s / TOTAL_BUDGET_S, self.left())
        return limit if limit >= MIN_STEP_S else None


@dataclass
class Check:
    name: str
    ok: Optional[bool]  # None: skipped
    result: str
    seconds: float = 0.0
    peak_bytes: Optional[int] = None


@dataclass
class Step:
    """What a child process did: exit code, combined output, wall time, peak memory."""
    code: int
    output: str
    seconds: float
    peak_bytes: Optional[int]
    timed_out: bool = False


def over_time(name: str, limit: Optional[float]) -> Check:
    return Check(name, None, f"not run: the check's time budget is spent ({max(limit, 0):.0f} s left of "
                             "GPU_CHECK_BUDGET_S)")


# --- child processes ----------------------------------------------------------------------------

def child_main(device: str, target: List[str]) -> None:
    """Run ``target`` (``-m module args`` or ``script.py args``) here, then print the peak memory."""
    import torch

    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        run = lambda: runpy.run_module(target[1], run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        sys.argv = list(target)
        sys.path.insert(0, str(Path(target[0]).resolve().parent))
        run = lambda: runpy.run_path(target[0], run_name="__main__")  # noqa: E731
    code = 0
    try:
        run()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except Exception:  # a bug in the step: its traceback goes to the log, the peak is still reported
        traceback.print_exc()
        code = 1
    if device == "cuda" and torch.cuda.is_available():
        peak = max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
    else:  # CPU: the process's peak resident memory (ru_maxrss is in KiB on Linux)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sys.stdout.flush()
    print(f"\n{PEAK_MARK}{peak}", flush=True)
    sys.exit(code)


def run_step(device: str, target: List[str], log: Path, env: dict, timeout: float = 20 * 60) -> Step:
    """Run ``target`` in a child process (its own process group), its output to ``log``; return what
    it did. Past ``timeout`` seconds the whole group is killed (pytest's and train.py's children too)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--device", device, "--child", *target]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        output = (output or "") + f"\nstopped after {timeout:.0f} s (its time budget)"
    seconds = time.perf_counter() - start
    code = -1 if timed_out else proc.returncode
    log.write_text(output)
    peaks = re.findall(rf"^{PEAK_MARK}(\d+)$", output, flags=re.M)
    return Step(code, output, seconds, int(peaks[-1]) if peaks else None, timed_out)


def tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line and not line.startswith(PEAK_MARK)]
    return " / ".join(kept[-lines:])


# --- the checks -----------------------------------------------------------------------------------

def timed_out(name: str, step: Step) -> Check:
    return Check(name, False, f"stopped at its time budget ({step.seconds:.0f} s): {tail(step.output, 2)}",
                 step.seconds, step.peak_bytes)


def check_flex(device, workdir, env, clock: Clock, tiny=False) -> tuple:
    """flex_attention vs the explicit scores (benchmarks/flex_check.py): (row, its JSON or None)."""
    limit = clock.step_limit("flex")
    if limit is None:
        return over_time("flex vs scores", clock.left()), None
    result_file = workdir / "logs" / "flex_check.json"
    target = [str(REPO / "benchmarks" / "flex_check.py"), "--device", device, "--json", str(result_file),
              "--budget", f"{max(limit - FLEX_MARGIN_S, 0):.0f}"]
    target += ["--tiny", "--candidate", "lse-math"] if tiny else []  # CPU: no flex backward there
    step = run_step(device, target, workdir / "logs" / "flex_check.log", env, timeout=limit)
    if step.timed_out:
        return timed_out("flex vs scores", step), None
    flex = json.loads(result_file.read_text()) if result_file.is_file() else None
    if flex is None:
        return Check("flex vs scores", False, f"exit {step.code}: {tail(step.output)}", step.seconds,
                     step.peak_bytes), None
    # The row fails only when a comparison that ran failed; the verdict (yes / no / undecided) is its text.
    return Check("flex vs scores", step.code == 0, flex["line"], step.seconds, step.peak_bytes), flex


def check_pytest(device, workdir, env, paths, clock: Optional[Clock] = None) -> Check:
    if importlib.util.find_spec("pytest") is None:
        return Check("pytest -m cuda", None, "pytest is not installed: the CUDA-marked tests did not run")
    limit = clock.step_limit("pytest") if clock else SECTION_BUDGET_S["pytest"]
    if limit is None:
        return over_time("pytest -m cuda", clock.left())
    step = run_step(device, ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *paths],
                    workdir / "logs" / "pytest.log", env, timeout=limit)
    if step.timed_out:
        return timed_out("pytest -m cuda", step)
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error).*?)(?: in [\d.]+s.*)?=*$",
                         step.output, flags=re.M)
    text = summary[-1].strip() if summary else tail(step.output, 1)
    if step.code == 5:
        text = "no CUDA-marked tests were collected"
    return Check("pytest -m cuda", step.code == 0, text, step.seconds, step.peak_bytes)


def check_bench(device, workdir, env, tiny, clock: Optional[Clock] = None) -> Check:
    limit = clock.step_limit("bench") if clock else SECTION_BUDGET_S["bench"]
    if limit is None:
        return over_time("bench_supernet", clock.left())
    target = [str(REPO / "benchmarks" / "bench_supernet.py"), "--device", device, "--quick"]
    target += ["--tiny"] if tiny else []
    step = run_step(device, target, workdir / "logs" / "bench_supernet.log", env, timeout=limit)
    if step.timed_out:
        return timed_out("bench_supernet", step)
    ratios = [float(x) for x in re.findall(r"\[wall\] fused vs reference: ([\d.]+)x", step.output)]
    diffs = [float(x) for x in re.findall(r"max \|fused - reference\| = ([\d.eE+-]+)", step.output)]
    if step.code != 0 or not ratios or not diffs:
        return Check("bench_supernet", False, f"exit {step.code}: {tail(step.output)}", step.seconds,
                     step.peak_bytes)
    ok = max(diffs) <= MAX_FUSED_DIFF
    text = (f"fused {min(ratios):.2f}-{max(ratios):.2f}x faster than reference, "
            f"max abs diff {max(diffs):.1e}" + ("" if ok else f" > {MAX_FUSED_DIFF:g}"))
    return Check("bench_supernet", ok, text, step.seconds, step.peak_bytes)


def last_accuracy(log_text: str) -> Optional[float]:
    values = re.findall(r"^\* accuracy: ([\d.]+)%", log_text, flags=re.M)
    return float(values[-1]) if values else None


def train_target(trainer, out, data_root, clip_file, prec, tiny, extra=(), opts=()) -> List[str]:
    argv = [str(REPO / "train.py"), "--root", str(data_root), "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", str(REPO / "configs" / "datasets" / "dtd.yaml"),
            "--config-file", str(REPO / "configs" / "trainers" / trainer / "vit_b16.yaml"),
            "--output-dir", str(out), *extra,
            "MODEL.BACKBONE.PATH", str(clip_file), "TRAINER.DPL.PREC", prec,
            "OPTIM.MAX_EPOCH", str(EPOCHS), "DATASET.NUM_SHOTS", "2", "TRAIN.PRINT_FREQ", "100",
            "DATALOADER.NUM_WORKERS", "0" if tiny else "2", "DATALOADER.TEST.BATCH_SIZE", "8"]
    if tiny:
        argv += ["MODEL.BACKBONE.NAME", "tiny", "MODEL.BACKBONE.CONFIG", "openai",
                 "INPUT.SIZE", "(32, 32)",
                 "TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "4"]
    return argv + list(opts)


def check_pipeline(device, workdir, env, data_root, clip_file, prec, tiny,
                   clock: Optional[Clock] = None) -> List[Check]:
    """DPLSearch -> DPLTrain -> --eval-only at one precision: three rows.

    Deterministic kernels (DPL_DETERMINISTIC=1), so that the eval-only process computes exactly the
    logits training's final test did: a random-init CLIP's class scores are close, and kernels
    autotuned differently in two processes could flip one. A step that no longer fits the check's
    time budget is not started (it and the steps after it are skipped rows).
    """
    from dpl.artifact import load_artifact

    env = dict(env, DPL_DETERMINISTIC="1")
    runs, logs = workdir / "runs" / prec, workdir / "logs"
    search_dir, train_dir, eval_dir = runs / "search", runs / "train", runs / "eval"
    names = [f"DPLSearch {prec}", f"DPLTrain {prec}", f"eval-only {prec}"]
    rows: List[Check] = []

    def run(target, log) -> Optional[Step]:
        """The step, or None when it did not fit or ran out of time (its row is then added here)."""
        name = names[len(rows)]
        limit = clock.step_limit("pipeline") if clock else SECTION_BUDGET_S["pipeline"]
        if limit is None:
            rows.append(over_time(name, clock.left()))
            return None
        step = run_step(device, target, log, env, timeout=limit)
        if step.timed_out:
            rows.append(timed_out(name, step))
            return None
        return step

    def skip_rest(why):
        return rows + [Check(name, None, why) for name in names[len(rows):]]

    step = run(train_target("DPLSearch", search_dir, data_root, clip_file, prec, tiny),
               logs / f"search_{prec}.log")
    if step is None:
        return skip_rest("no artifact")
    artifact = search_dir / "prompt_config.json"
    ok = step.code == 0 and artifact.is_file()
    if ok:
        art = load_artifact(str(artifact))
        text = (f"artifact: {sum(art['text']['lengths'])} text + {sum(art['vision']['lengths'])} image "
                f"prompt tokens")
    else:
        text = f"exit {step.code}: {tail(step.output)}"
    rows.append(Check(names[0], ok, text, step.seconds, step.peak_bytes))
    if not ok:
        return skip_rest("no artifact")

    step = run(train_target("DPLTrain", train_dir, data_root, clip_file, prec, tiny,
                            opts=["TRAINER.DPL.CONFIG_FILE", str(artifact)]),
               logs / f"train_{prec}.log")
    if step is None:
        return skip_rest("training did not run")
    trained = last_accuracy(step.output) if step.code == 0 else None
    rows.append(Check(names[1], trained is not None,
                      f"test accuracy {trained:.1f}%" if trained is not None
                      else f"exit {step.code}: {tail(step.output)}", step.seconds, step.peak_bytes))
    if trained is None:
        return skip_rest("training failed")

    step = run(train_target("DPLTrain", eval_dir, data_root, clip_file, prec, tiny,
                            extra=["--eval-only", "--model-dir", str(train_dir), "--load-epoch", str(EPOCHS)],
                            opts=["TRAINER.DPL.CONFIG_FILE", str(train_dir / "prompt_config.json")]),
               logs / f"eval_{prec}.log")
    if step is None:
        return rows
    evaluated = last_accuracy(step.output) if step.code == 0 else None
    if evaluated is None:
        rows.append(Check(names[2], False, f"exit {step.code}: {tail(step.output)}",
                          step.seconds, step.peak_bytes))
    else:  # the same prompts on the same test images: the same accuracy as at the end of training
        same = evaluated == trained
        rows.append(Check(names[2], same, f"test accuracy {evaluated:.1f}%"
                          + (" (= training's)" if same else f" != training's {trained:.1f}%"),
                          step.seconds, step.peak_bytes))
    return rows


# --- inputs ---------------------------------------------------------------------------------------

def write_inputs(workdir: Path, tiny: bool):
    """A random-init CLIP in OpenAI's format (ViT-B/16 sizes, or tiny) and a miniature DTD."""
    from dpl.clip_loader import save_openai_checkpoint
    from tests.helpers.dataset_fixtures import write_fixture
    from tests.helpers.tiny_clip import VIT_B16, TinyClipSpec, build_tiny_clip

    clip_file = workdir / ("tiny-clip.pt" if tiny else "random-ViT-B-16.pt")
    save_openai_checkpoint(build_tiny_clip(TinyClipSpec() if tiny else VIT_B16), str(clip_file))
    data_root = workdir / "data"
    write_fixture("DescribableTextures", data_root)
    return clip_file, data_root


def available_precisions(device: str, tiny: bool):
    from dpl.clip_loader import PRECISIONS as SUPPORTED

    wanted = ("fp32",) if tiny else PRECISIONS
    return [p for p in wanted if p in SUPPORTED], [p for p in wanted if p not in SUPPORTED]


# --- the table ------------------------------------------------------------------------------------

def format_table(checks: List[Check], device: str) -> str:
    from tabulate import tabulate

    memory = "peak memory" if device == "cuda" else "peak RSS"
    rows = [[c.name, ("ok" if c.ok else "FAIL" if c.ok is False else "skip") + ": "
             + c.result.replace("|", "/"),
             f"{c.seconds:.1f} s" if c.seconds else "-",
             f"{c.peak_bytes / 2**20:,.0f} MiB" if c.peak_bytes is not None else "-"] for c in checks]
    return tabulate(rows, headers=["check", "result", "time", memory], tablefmt="github")


def describe_device(device: str) -> str:
    import torch

    if device != "cuda":
        return f"torch {torch.__version__}, CPU"
    props = torch.cuda.get_device_properties(0)
    return (f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.name} "
            f"({props.total_memory / 2**30:.0f} GiB)")


def summary_line(checks: List[Check]) -> str:
    failed = [c.name for c in checks if c.ok is False]
    return (f"gpu_check: {len(failed)} of {len(checks)} checks failed: {', '.join(failed)}" if failed
            else f"gpu_check: all {sum(c.ok is True for c in checks)} checks passed")


def write_result(out_dir: Path, device: str, checks: List[Check], flex: Optional[dict], seconds: float,
                 budget_s: float) -> Path:
    """All verdicts in one small JSON file (atomic: a crash never leaves a half-written one)."""
    from dpl.io import atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULT_FILE
    status = {True: "ok", False: "FAIL", None: "skip"}
    atomic_write_json(str(path), {
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device, "seconds": round(seconds, 1), "budget_s": budget_s,
        "verdict": summary_line(checks),
        "flex_verdict": flex["line"] if flex else None,
        "flex_may_be_default": flex["flex_may_be_default"] if flex else None,
        "checks": [dict(asdict(c), ok=status[c.ok]) for c in checks],
        "flex_comparisons": flex["rows"] if flex else [],
    })
    return path


def budget_from_env() -> float:
    text = os.environ.get("GPU_CHECK_BUDGET_S", "")
    if not text:
        return TOTAL_BUDGET_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"gpu_check: GPU_CHECK_BUDGET_S={text!r} is not a positive number of seconds; "
                         f"unset it (default {TOTAL_BUDGET_S:.0f}) or set e.g. GPU_CHECK_BUDGET_S=600.")
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None, help="folder for the CLIP file, data, runs and logs "
                                                     "(default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder at the end")
    ap.add_argument("--out", default=None, help=f"folder for {RESULT_FILE} (default: $GPU_CHECK_OUT, "
                                                "else ./output/gpu_check)")
    ap.add_argument("--missing-packages", action="store_true",
                    help="print the pip names of the packages this interpreter lacks, then exit")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pytest-paths", nargs="+", default=["tests"], help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.missing_packages:
        print(" ".join(missing_packages()))
        return 0
    if args.child:
        child_main(args.device, args.child)
    try:
        budget_s = budget_from_env()
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is "
              "False); nothing was run. Run it on a machine with an NVIDIA GPU and a CUDA build of torch.")
        return 0
    clock = Clock(budget_s)
    sys.path.insert(0, str(REPO))
    out_dir = Path(args.out or os.environ.get("GPU_CHECK_OUT") or "output/gpu_check").resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    if args.device == "cuda":
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: no DataParallel, comparable numbers
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the trainers pick CUDA whenever they can see one

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dpl_gpu_check_")).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    device = describe_device(args.device)
    print(f"gpu_check: {device}; work folder {workdir}; time budget {budget_s:.0f} s", flush=True)
    checks: List[Check] = []
    flex = None
    try:
        clip_file, data_root = write_inputs(workdir, args.tiny)
        print("gpu_check: flex_attention vs explicit scores ...", flush=True)
        row, flex = check_flex(args.device, workdir, env, clock, args.tiny)
        checks.append(row)
        print("gpu_check: pytest -m cuda ...", flush=True)
        checks.append(check_pytest(args.device, workdir, env, args.pytest_paths, clock))
        print("gpu_check: bench_supernet ...", flush=True)
        checks.append(check_bench(args.device, workdir, env, args.tiny, clock))
        runnable, missing = available_precisions(args.device, args.tiny)
        for prec in runnable:
            print(f"gpu_check: DPLSearch -> DPLTrain -> eval-only, PREC {prec} ...", flush=True)
            checks += check_pipeline(args.device, workdir, env, data_root, clip_file, prec, args.tiny, clock)
        checks += [Check(f"pipeline {p}", None, f"PREC {p} is not implemented in this version")
                   for p in missing]
    finally:
        print("\n" + format_table(checks, args.device) + "\n")
        result = write_result(out_dir, device, checks, flex, budget_s - clock.left(), budget_s)
    failed = [c.name for c in checks if c.ok is False]
    if failed or args.keep or args.workdir:
        print(f"Logs of every step: {workdir / 'logs'}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if flex:
        print(flex["line"])
    print(f"Verdicts written to {result}")
    print(summary_line(checks))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
