"""The offline demo of the whole pipeline (``bash scripts/quickstart.sh``).

zero-shot CLIP -> DPLSearch -> prompt_config.json -> DPLTrain on the searched configuration and on a
uniform manual one -> one table. Every stage is an ordinary ``train.py`` run (in this process) with
the demo configs ``configs/trainers/{DPLSearch,DPLTrain}/demo.yaml``; their full logs are in the
run folders. Re-running skips nothing but resumes finished runs instantly.

    python -m demo.quickstart [--output DIR] [--dataset demo_combos] [--seed 1] [--shots 16]
                              [--search-epochs 10] [--train-epochs 10] [--uniform 4]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time

from tabulate import tabulate

from tools.parse_test_res import run_result

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOWN = re.compile(r"^(\* accuracy:|α:|Prompt configuration saved|Generating|Creating a|\[demo\])")
EPOCH_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\]")


class _ProgressFilter(io.TextIOBase):
    """Console view of a run: the last batch line of each epoch and the result lines only."""

    def __init__(self, console):
        self.console, self.buffer = console, ""

    def write(self, text):
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            m = EPOCH_LINE.match(line)
            if (m and m.group(3) == m.group(4)) or SHOWN.match(line):
                self.console.write("    " + line + "\n")
        return len(text)

    def flush(self):
        self.console.flush()


def run_stage(title: str, argv: list) -> float:
    """One train.py run, console filtered; returns its final test accuracy."""
    import train

    print(f"\n== {title}", flush=True)
    start, console = time.time(), sys.stdout
    sys.stdout = _ProgressFilter(console)
    try:
        train.main(argv)
    finally:
        sys.stdout = console
    out = argv[argv.index("--output-dir") + 1]
    acc = run_result(out)  # the newest log's result (a resumed run writes log.txt-<time>)
    if acc is None:
        raise RuntimeError(f"no test accuracy in {out}/log.txt")
    print(f"   done in {time.time() - start:.0f} s: test accuracy {acc:.1f}%", flush=True)
    return acc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Offline DPL demo: search, train, compare.")
    p.add_argument("--output", default=os.environ.get("OUTPUT", "output") + "/quickstart")
    p.add_argument("--dataset", default="demo_combos", help="config name in configs/datasets")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--search-epochs", type=int, default=10)
    p.add_argument("--train-epochs", type=int, default=10)
    p.add_argument("--uniform", type=int, default=4, help="tokens per block of the uniform baseline")
    p.add_argument("--clip", default="", help="demo CLIP checkpoint (default: cached/pretrained)")
    args = p.parse_args(argv)

    sys.path.insert(0, REPO)
    os.environ.setdefault("TQDM_DISABLE", "1")  # the evaluation progress bars would clutter the view
    from demo.pretrain import get_demo_clip

    start = time.time()
    out = os.path.abspath(args.output)
    clip_path = args.clip or get_demo_clip()
    # The micro-CLIP is too small to gain from a second thread, and OpenMP threads that compete
    # with another busy process slow small ops down by an order of magnitude.
    import torch
    torch.set_num_threads(int(os.environ.get("DPL_DEMO_THREADS", "1")))
    data = os.path.join(out, "data")
    common = ["DATASET.NUM_SHOTS", str(args.shots), "MODEL.BACKBONE.PATH", clip_path]

    def argv_for(trainer, run, *flags, epochs=None, opts=()):
        extra = ["OPTIM.MAX_EPOCH", str(epochs)] if epochs else []
        return ["--root", data, "--seed", str(args.seed), "--trainer", trainer,
                "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{args.dataset}.yaml"),
                "--config-file", os.path.join(REPO, "configs", "trainers", trainer, "demo.yaml"),
                "--output-dir", os.path.join(out, run), *flags, *common, *extra, *opts]

    results = {}
    results["zero-shot CLIP"] = run_stage(
        "1/4 zero-shot CLIP (no prompts)", argv_for("DPLTrain", "zeroshot", "--eval-only"))
    run_stage(f"2/4 DPLSearch ({args.search_epochs} epochs): α over context lengths per block",
              argv_for("DPLSearch", "search", epochs=args.search_epochs))
    artifact = os.path.join(out, "search", "prompt_config.json")
    results["DPL (searched)"] = run_stage(
        f"3/4 DPLTrain on the searched configuration ({args.train_epochs} epochs)",
        argv_for("DPLTrain", "dpl", epochs=args.train_epochs,
                 opts=["TRAINER.DPL.CONFIG_FILE", artifact]))
    u = str(args.uniform)
    results[f"uniform ({u} tokens in every block)"] = run_stage(
        f"4/4 DPLTrain on a uniform manual configuration ({args.train_epochs} epochs)",
        argv_for("DPLTrain", "uniform", epochs=args.train_epochs,
                 opts=["TRAINER.DPL.MANUAL.TEXT_LENGTH", u, "TRAINER.DPL.MANUAL.VISION_LENGTH", u]))

    with open(artifact, encoding="utf-8") as fh:
        art = json.load(fh)
    rows = [[name, f"{acc:.1f}"] for name, acc in results.items()]
    rows.insert(1, rows.pop(-1))  # zero-shot, uniform, DPL
    print(f"\nTest accuracy on {art['provenance']['dataset']} ({args.shots} shots, seed {args.seed}):")
    print(tabulate(rows, ["method", "accuracy (%)"], tablefmt="github"))
    print("\nSearched prompt lengths per block (input side first):")
    print(f"  text   ({art['text']['num_blocks']} blocks):  {art['text']['lengths']}")
    print(f"  vision ({art['vision']['num_blocks']} blocks):  {art['vision']['lengths']}")
    print(f"\nArtifact: {artifact}")
    print(f"Heatmap:  {os.path.join(out, 'search', 'alpha_heatmap.png')}")
    print(f"Runs and logs: {out}/{{zeroshot,search,dpl,uniform}}   ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
