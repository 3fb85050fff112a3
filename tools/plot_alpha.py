#!/usr/bin/env python
"""Plots of DPL search runs, from their ``alpha_history.json``.

    python tools/plot_alpha.py RUN_DIR                 # alpha_heatmap.png + alpha_convergence.png in RUN_DIR
    python tools/plot_alpha.py RUN_DIR --epoch 5       # heatmap at epoch 5 instead of the last
    python tools/plot_alpha.py --evolution RUN_DIR [RUN_DIR ...] --epochs 1 10 40 --branch text \
        --out evolution.png [--labels caltech101 dtd]  # softmax(α) at chosen epochs, one row per run
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dpl.plots import (CONVERGENCE, HEATMAP, plot_convergence, plot_evolution,  # noqa: E402
                       plot_heatmaps, read_history, read_options)


def history_path(run_dir: str) -> str:
    path = os.path.join(run_dir, "alpha_history.json")
    if not os.path.isfile(path):
        raise SystemExit(f"plot_alpha.py: error: {path} does not exist; pass a DPLSearch output "
                         "directory (it holds alpha_history.json after the first epoch).")
    return path


def main(argv=None) -> int:
    try:
        return _run(argv)
    except ValueError as err:  # unreadable history or an epoch it does not hold
        raise SystemExit(f"plot_alpha.py: error: {err}") from None
    except KeyError as err:
        raise SystemExit(f"plot_alpha.py: error: an alpha_history.json record has no {err} entry; "
                         "pass histories written by DPLSearch.") from None


def _run(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", nargs="+", help="DPLSearch output directories")
    p.add_argument("--epoch", type=int, help="heatmap at this epoch (default: last)")
    p.add_argument("--evolution", action="store_true", help="one figure: runs x epochs")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 10, 40, 80])
    p.add_argument("--branch", choices=("text", "vision"), default="text")
    p.add_argument("--labels", nargs="+", help="row labels for --evolution (default: dir names)")
    p.add_argument("--out", help="output PNG (--evolution; default alpha_evolution.png)")
    args = p.parse_args(argv)

    if args.evolution:
        labels = args.labels or [_label(d) for d in args.run_dirs]
        if len(labels) != len(args.run_dirs):
            p.error("--labels needs one label per run directory")
        runs = [(lab, read_history(history_path(d)), read_options(d)[args.branch])
                for lab, d in zip(labels, args.run_dirs)]
        out = plot_evolution(runs, args.epochs, args.out or "alpha_evolution.png", args.branch)
        print(f"Saved {out}")
        return 0
    for run_dir in args.run_dirs:
        records = read_history(history_path(run_dir))
        print("Saved", plot_heatmaps(records, read_options(run_dir),
                                     os.path.join(run_dir, HEATMAP), args.epoch))
        print("Saved", plot_convergence(records, os.path.join(run_dir, CONVERGENCE)))
    return 0


def _label(run_dir: str) -> str:
    """A readable label: the dataset component of a run path if there is one."""
    parts = os.path.abspath(run_dir).split(os.sep)
    return parts[-3] if len(parts) >= 3 and parts[-2].startswith("shots_") else parts[-1]


if __name__ == "__main__":
    sys.exit(main())
