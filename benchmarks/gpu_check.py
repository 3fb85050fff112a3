"""GPU check: run everything only a GPU can run, and end with one table (check, result, time, peak memory).

    bash scripts/gpu_check.sh [--workdir DIR] [--keep]

Needs no data and no weights: a random-init CLIP with ViT-B/16's sizes is written in OpenAI's format,
and a miniature synthetic dataset in DTD's layout, both into a temporary folder. In order:

1. ``pytest -m cuda``: the CUDA-marked tests (precision steps, fused vs reference, fp16 teacher,
   resume, deterministic mode);
2. ``benchmarks/bench_supernet.py --device cuda``: fused vs reference speed, memory and agreement;
3. per precision (fp32, amp, fp16, bf16): a 2-epoch DPLSearch -> 2-epoch DPLTrain on its artifact ->
   ``--eval-only`` of the trained prompts, all through ``train.py``.

Each step runs in its own process; "peak memory" is that process's ``torch.cuda.max_memory_allocated``.
Exit status 1 when a check failed. Without a CUDA device it says so and exits 0 after running nothing.
Runs on one GPU (the first, unless CUDA_VISIBLE_DEVICES says otherwise). ``--device cpu --tiny`` runs
the same pipeline on the CPU with a tiny CLIP and fp32 only, so that the check itself is tested.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "amp", "fp16", "bf16")
EPOCHS = 2
PEAK_MARK = "GPU_CHECK_PEAK_BYTES="
MAX_FUSED_DIFF = 1e-3  # fused vs reference outputs of bench_supernet (fp32)
STEP_TIMEOUT = 20 * 60  # seconds; a hung step becomes a failed row instead of a hung check


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


def run_step(device: str, target: List[str], log: Path, env: dict) -> Step:
    """Run ``target`` in a child process, its output to ``log``; return what it did."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--device", device, "--child", *target]
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=STEP_TIMEOUT)
        code, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as hung:
        output = hung.output.decode(errors="replace") if isinstance(hung.output, bytes) else hung.output or ""
        code, output = -1, output + f"\ntimed out after {STEP_TIMEOUT} s"
    seconds = time.perf_counter() - start
    log.write_text(output)
    peaks = re.findall(rf"^{PEAK_MARK}(\d+)$", output, flags=re.M)
    return Step(code, output, seconds, int(peaks[-1]) if peaks else None)


def tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line and not line.startswith(PEAK_MARK)]
    return " / ".join(kept[-lines:])


# --- the checks -----------------------------------------------------------------------------------

def check_pytest(device, workdir, env, paths) -> Check:
    step = run_step(device, ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *paths],
                    workdir / "logs" / "pytest.log", env)
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error).*?)(?: in [\d.]+s.*)?=*$",
                         step.output, flags=re.M)
    text = summary[-1].strip() if summary else tail(step.output, 1)
    if step.code == 5:
        text = "no CUDA-marked tests were collected"
    return Check("pytest -m cuda", step.code == 0, text, step.seconds, step.peak_bytes)


def check_bench(device, workdir, env, tiny) -> Check:
    target = [str(REPO / "benchmarks" / "bench_supernet.py"), "--device", device]
    target += ["--tiny"] if tiny else []
    step = run_step(device, target, workdir / "logs" / "bench_supernet.log", env)
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
        argv += ["MODEL.BACKBONE.NAME", "tiny", "INPUT.SIZE", "(32, 32)",
                 "TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "4"]
    return argv + list(opts)


def check_pipeline(device, workdir, env, data_root, clip_file, prec, tiny) -> List[Check]:
    """DPLSearch -> DPLTrain -> --eval-only at one precision: three rows.

    Deterministic kernels (DPL_DETERMINISTIC=1), so that the eval-only process computes exactly the
    logits training's final test did: a random-init CLIP's class scores are close, and kernels
    autotuned differently in two processes could flip one.
    """
    from dpl.artifact import load_artifact

    env = dict(env, DPL_DETERMINISTIC="1")
    runs, logs = workdir / "runs" / prec, workdir / "logs"
    search_dir, train_dir, eval_dir = runs / "search", runs / "train", runs / "eval"
    rows = []

    step = run_step(device, train_target("DPLSearch", search_dir, data_root, clip_file, prec, tiny),
                    logs / f"search_{prec}.log", env)
    artifact = search_dir / "prompt_config.json"
    ok = step.code == 0 and artifact.is_file()
    if ok:
        art = load_artifact(str(artifact))
        text = (f"artifact: {sum(art['text']['lengths'])} text + {sum(art['vision']['lengths'])} image "
                f"prompt tokens")
    else:
        text = f"exit {step.code}: {tail(step.output)}"
    rows.append(Check(f"DPLSearch {prec}", ok, text, step.seconds, step.peak_bytes))
    if not ok:
        return rows + [Check(f"DPLTrain {prec}", None, "no artifact"),
                       Check(f"eval-only {prec}", None, "no artifact")]

    step = run_step(device, train_target("DPLTrain", train_dir, data_root, clip_file, prec, tiny,
                                         opts=["TRAINER.DPL.CONFIG_FILE", str(artifact)]),
                    logs / f"train_{prec}.log", env)
    trained = last_accuracy(step.output) if step.code == 0 else None
    rows.append(Check(f"DPLTrain {prec}", trained is not None,
                      f"test accuracy {trained:.1f}%" if trained is not None
                      else f"exit {step.code}: {tail(step.output)}", step.seconds, step.peak_bytes))
    if trained is None:
        return rows + [Check(f"eval-only {prec}", None, "training failed")]

    step = run_step(device, train_target("DPLTrain", eval_dir, data_root, clip_file, prec, tiny,
                                         extra=["--eval-only", "--model-dir", str(train_dir),
                                                "--load-epoch", str(EPOCHS)],
                                         opts=["TRAINER.DPL.CONFIG_FILE",
                                               str(train_dir / "prompt_config.json")]),
                    logs / f"eval_{prec}.log", env)
    evaluated = last_accuracy(step.output) if step.code == 0 else None
    if evaluated is None:
        rows.append(Check(f"eval-only {prec}", False, f"exit {step.code}: {tail(step.output)}",
                          step.seconds, step.peak_bytes))
    else:  # the same prompts on the same test images: the same accuracy as at the end of training
        same = evaluated == trained
        rows.append(Check(f"eval-only {prec}", same, f"test accuracy {evaluated:.1f}%"
                          + (" (= training's)" if same else f" != training's {trained:.1f}%"),
                          step.seconds, step.peak_bytes))
    return rows


# --- inputs ---------------------------------------------------------------------------------------

def write_inputs(workdir: Path, tiny: bool):
    """A random-init CLIP in OpenAI's format (ViT-B/16 sizes, or tiny) and a miniature DTD."""
    sys.path.insert(0, str(REPO))
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None, help="folder for the CLIP file, data, runs and logs "
                                                     "(default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder at the end")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pytest-paths", nargs="+", default=["tests"], help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.device, args.child)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is "
              "False); nothing was run. Run it on a machine with an NVIDIA GPU and a CUDA build of torch.")
        return 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    if args.device == "cuda":
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: no DataParallel, comparable numbers
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the trainers pick CUDA whenever they can see one

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dpl_gpu_check_")).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: {describe_device(args.device)}; work folder {workdir}", flush=True)
    checks: List[Check] = []
    try:
        clip_file, data_root = write_inputs(workdir, args.tiny)
        print("gpu_check: pytest -m cuda ...", flush=True)
        checks.append(check_pytest(args.device, workdir, env, args.pytest_paths))
        print("gpu_check: bench_supernet ...", flush=True)
        checks.append(check_bench(args.device, workdir, env, args.tiny))
        runnable, missing = available_precisions(args.device, args.tiny)
        for prec in runnable:
            print(f"gpu_check: DPLSearch -> DPLTrain -> eval-only, PREC {prec} ...", flush=True)
            checks += check_pipeline(args.device, workdir, env, data_root, clip_file, prec, args.tiny)
        checks += [Check(f"pipeline {p}", None, f"PREC {p} is not implemented in this version")
                   for p in missing]
    finally:
        print("\n" + format_table(checks, args.device) + "\n")
    failed = [c.name for c in checks if c.ok is False]
    if failed or args.keep or args.workdir:
        print(f"Logs of every step: {workdir / 'logs'}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"gpu_check: {len(failed)} of {len(checks)} checks failed: {', '.join(failed)}" if failed
          else f"gpu_check: all {sum(c.ok is True for c in checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
