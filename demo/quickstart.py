"""The offline demo of the whole pipeline (``bash scripts/quickstart.sh``).

For each of 3 seeds: zero-shot CLIP -> DPLSearch -> prompt_config.json -> DPLTrain on the searched
configuration and on a uniform manual one; then one table of mean ± std over the seeds. Every stage
is an ordinary ``train.py`` run with the demo configs ``configs/trainers/{DPLSearch,DPLTrain}/demo.yaml``
on the shipped micro-CLIP (``demo/weights/``, SHA-256 verified); their full logs are in the run
folders ``<output>/seed<N>/{zeroshot,search,dpl,uniform<K>}``. Seeds run in parallel worker processes
(``--jobs``, one thread each, all seeds at once by default). Re-running resumes: finished runs
are read, not repeated.

A run whose loss becomes non-finite is reported as diverged and left out of the mean (the table
says so); it is never averaged in.

    python -m demo.quickstart [--output DIR] [--dataset demo_combos] [--seeds 1 2 3] [--shots 16]
                              [--search-epochs 10] [--train-epochs 10] [--uniform 2] [--jobs 3]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from dpl.io import atomic_write_json, atomic_write_text  # noqa: E402
from tools.parse_test_res import run_result  # noqa: E402

SHOWN = re.compile(r"^(\* accuracy:|α:|Prompt configuration saved|Generating|Creating a|\[demo\])")
EPOCH_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\]")
METHODS = ("zero-shot CLIP", "uniform", "DPL (searched)")
DIVERGED = "diverged"


class _ProgressFilter(io.TextIOBase):
    """Console view of a run: the last batch line of each epoch and the result lines only."""

    def __init__(self, console, prefix="    "):
        self.console, self.buffer, self.prefix = console, "", prefix

    def write(self, text):
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            m = EPOCH_LINE.match(line)
            if (m and m.group(3) == m.group(4)) or SHOWN.match(line):
                self.console.write(self.prefix + line + "\n")
        return len(text)

    def flush(self):
        self.console.flush()


def run_stage(title: str, argv: list, console=None) -> Optional[float]:
    """One train.py run, console filtered; its final test accuracy, or None when it diverged
    (a non-finite loss). A finished run (a test result in its log) is read, not repeated."""
    import train
    from dpl.errors import NonFiniteLossError

    console = console or sys.stdout
    out = argv[argv.index("--output-dir") + 1]
    done = os.path.join(out, ".diverged")
    if os.path.isfile(done):
        console.write(f"{title}: diverged in an earlier run ({done})\n")
        return None
    acc = run_result(out) if os.path.isdir(out) else None
    if acc is not None and os.path.isfile(os.path.join(out, ".done")):
        console.write(f"{title}: finished earlier, test accuracy {acc:.1f}%\n")
        return acc
    console.write(f"\n== {title}\n")
    console.flush()
    start, saved = time.time(), (sys.stdout, sys.stderr)
    sys.stdout = _ProgressFilter(console)
    sys.stderr = _ProgressFilter(console)   # drops the evaluation progress bars
    try:
        train.main(argv)
    except NonFiniteLossError as exc:
        sys.stdout, sys.stderr = saved
        console.write(f"   diverged: {exc}\n")
        atomic_write_text(done, f"{exc}\n")
        return None
    finally:
        sys.stdout, sys.stderr = saved
    acc = run_result(out)  # the newest log's result (a resumed run writes log.txt-<time>)
    if acc is None:
        raise RuntimeError(f"no test accuracy in {out}/log.txt")
    atomic_write_text(os.path.join(out, ".done"), "")
    console.write(f"   done in {time.time() - start:.0f} s: test accuracy {acc:.1f}%\n")
    console.flush()
    return acc


def run_seed(args: dict, seed: int, console=None) -> dict:
    """The four stages for one seed; returns {"seed", "accuracy": {method: acc|None}, "lengths"}."""
    import torch

    import functools

    import train

    # The micro-CLIP is too small to gain from a second thread, and OpenMP threads that compete
    # with another busy process slow small ops down by an order of magnitude.
    torch.set_num_threads(int(os.environ.get("DPL_DEMO_THREADS", "1")))
    # Each log still records the environment, collected once per process (it runs pip).
    if not hasattr(train.collect_env_info, "cache_info"):
        train.collect_env_info = functools.lru_cache(maxsize=None)(train.collect_env_info)
    out = os.path.join(args["output"], f"seed{seed}")
    data = os.path.join(args["output"], "data")
    common = ["DATASET.NUM_SHOTS", str(args["shots"]), "MODEL.BACKBONE.PATH", args["clip"]]

    def argv_for(trainer, run, *flags, epochs=None, opts=()):
        extra = ["OPTIM.MAX_EPOCH", str(epochs)] if epochs else []
        return ["--root", data, "--seed", str(seed), "--trainer", trainer,
                "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{args['dataset']}.yaml"),
                "--config-file", os.path.join(REPO, "configs", "trainers", trainer, "demo.yaml"),
                "--output-dir", os.path.join(out, run), *flags, *common, *extra, *opts]

    tag = f"seed {seed}"
    acc = {}
    acc["zero-shot CLIP"] = run_stage(f"[{tag}] 1/4 zero-shot CLIP (no prompts)",
                                      argv_for("DPLTrain", "zeroshot", "--eval-only"), console)
    run_stage(f"[{tag}] 2/4 DPLSearch ({args['search_epochs']} epochs): α over context lengths per block",
              argv_for("DPLSearch", "search", epochs=args["search_epochs"]), console)
    artifact = os.path.join(out, "search", "prompt_config.json")
    acc["DPL (searched)"] = run_stage(
        f"[{tag}] 3/4 DPLTrain on the searched configuration ({args['train_epochs']} epochs)",
        argv_for("DPLTrain", "dpl", epochs=args["train_epochs"],
                 opts=["TRAINER.DPL.CONFIG_FILE", artifact]), console)
    u = str(args["uniform"])
    acc["uniform"] = run_stage(
        f"[{tag}] 4/4 DPLTrain on a uniform manual configuration, {u} tokens in every block "
        f"({args['train_epochs']} epochs)",
        argv_for("DPLTrain", f"uniform{u}", epochs=args["train_epochs"],
                 opts=["TRAINER.DPL.MANUAL.TEXT_LENGTH", u, "TRAINER.DPL.MANUAL.VISION_LENGTH", u]),
        console)
    lengths = {}
    if os.path.isfile(artifact):
        with open(artifact, encoding="utf-8") as fh:
            art = json.load(fh)
        lengths = {"text": art["text"]["lengths"], "vision": art["vision"]["lengths"]}
    return {"seed": seed, "accuracy": acc, "lengths": lengths}


def _worker(args: dict, seed: int) -> dict:
    """A seed in a worker process: its console view goes to <output>/seed<N>/console.txt."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    path = os.path.join(args["output"], f"seed{seed}", "console.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as console:
        return run_seed(args, seed, console)


# --------------------------------------------------------------------------- the table

def fmt(value: float) -> str:
    """One decimal, always (83.0, not 83)."""
    return f"{value:.1f}"


def summarize(results: List[dict]) -> Dict[str, dict]:
    """Per method: the finite accuracies, their mean and sample std, and the diverged seeds."""
    summary = {}
    for method in METHODS:
        values = [r["accuracy"][method] for r in results if r["accuracy"].get(method) is not None]
        diverged = [r["seed"] for r in results if r["accuracy"].get(method) is None]
        summary[method] = {
            "values": values, "diverged_seeds": diverged,
            "mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
        }
    return summary


def table_text(report: dict) -> str:
    """The printed (and README) table: mean ± std over the seeds, one decimal, and each seed's value."""
    seeds = report["seeds"]
    summary = summarize(report["results"])
    names = {"uniform": f"uniform ({report['uniform']} tokens in every block)"}
    header = ["method", f"accuracy (%), mean ± std over {len(seeds)} seeds"] + [f"seed {s}" for s in seeds]
    rows = []
    for method in METHODS:
        s = summary[method]
        if s["mean"] is None:
            cell = DIVERGED
        else:
            cell = f"{fmt(s['mean'])} ± {fmt(s['std'])}"
            if s["diverged_seeds"]:
                cell += f" ({len(s['diverged_seeds'])} diverged, not averaged)"
        per_seed = [fmt(r["accuracy"][method]) if r["accuracy"].get(method) is not None else DIVERGED
                    for r in report["results"]]
        rows.append([names.get(method, method), cell, *per_seed])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    title = (f"Test accuracy on {report['dataset_name']} ({report['shots']} shots, "
             f"{report['search_epochs']}+{report['train_epochs']} epochs, demo CLIP {report['clip_sha256'][:12]}):")
    out = [title, line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


def lengths_text(report: dict) -> str:
    lines = ["Searched prompt lengths per block (input side first):"]
    for r in report["results"]:
        if r["lengths"]:
            lines.append(f"  seed {r['seed']}:  text {r['lengths']['text']}  vision {r['lengths']['vision']}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- entry point

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Offline DPL demo: search, train, compare over seeds.")
    p.add_argument("--output", default=os.environ.get("OUTPUT", "output") + "/quickstart")
    p.add_argument("--dataset", default="demo_combos", help="config name in configs/datasets")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--search-epochs", type=int, default=10)
    p.add_argument("--train-epochs", type=int, default=10)
    p.add_argument("--uniform", type=int, default=2,
                   help="tokens per block of the uniform baseline (default 2, the manual deep-prompt "
                        "design the paper compares against: IVLP's and MaPLe's 2 tokens per block)")
    p.add_argument("--jobs", type=int, default=0,
                   help="seeds run in parallel worker processes, one thread each (default: all seeds "
                        "at once; on 2 cores three workers finish sooner than two plus one)")
    p.add_argument("--clip", default="", help="demo CLIP weights (default: the shipped, verified file)")
    args = p.parse_args(argv)

    os.environ.setdefault("TQDM_DISABLE", "1")  # the evaluation progress bars would clutter the view
    from demo.pretrain import file_sha256, get_demo_clip

    start = time.time()
    clip_path = os.path.abspath(args.clip) if args.clip else get_demo_clip(log=print)
    config = {"output": os.path.abspath(args.output), "dataset": args.dataset, "shots": args.shots,
              "search_epochs": args.search_epochs, "train_epochs": args.train_epochs,
              "uniform": args.uniform, "clip": clip_path}
    jobs = max(1, min(args.jobs or len(args.seeds), len(args.seeds)))
    if jobs == 1:
        results = [run_seed(config, seed) for seed in args.seeds]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        print(f"[demo] {len(args.seeds)} seeds, {jobs} at a time (one thread each); each seed's "
              f"progress: {config['output']}/seed<N>/console.txt", flush=True)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_worker, config, seed): seed for seed in args.seeds}
            by_seed = {}
            for future in as_completed(futures):
                r = future.result()
                by_seed[r["seed"]] = r
                shown = ", ".join(f"{m} {fmt(a) if a is not None else DIVERGED}" for m, a in r["accuracy"].items())
                print(f"[demo] seed {r['seed']} finished ({time.time() - start:.0f} s): {shown}", flush=True)
        results = [by_seed[s] for s in args.seeds]

    from datasets.demo_shapes import DemoDataset  # noqa: F401  (the task's registered name)
    from demo.world import TASKS
    names = {t.dataset_dir: n for n, t in TASKS.items()}
    report = {"dataset": args.dataset, "dataset_name": names.get(args.dataset, args.dataset),
              "shots": args.shots, "seeds": list(args.seeds), "search_epochs": args.search_epochs,
              "train_epochs": args.train_epochs, "uniform": args.uniform,
              "clip_sha256": file_sha256(clip_path), "results": results,
              "summary": summarize(results)}
    table = table_text(report)
    atomic_write_json(os.path.join(config["output"], "results.json"), report)
    atomic_write_text(os.path.join(config["output"], "table.md"), table)
    print()
    print(table, end="")
    print()
    print(lengths_text(report), end="")
    print(f"\nArtifacts: {config['output']}/seed<N>/search/prompt_config.json (heatmap: alpha_heatmap.png)")
    print(f"Runs and logs: {config['output']}/seed<N>/{{zeroshot,search,dpl,uniform{args.uniform}}}   "
          f"({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
