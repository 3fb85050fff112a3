#!/usr/bin/env python
"""Plots of DPL search runs, from their ``alpha_history.json``.

    python tools/plot_alpha.py RUN_DIR                 # alpha_heatmap.png + alpha_convergence.png in RUN_DIR
    python tools/plot_alpha.py RUN_DIR --epoch 5       # heatmap at epoch 5 instead of the last
    python tools/plot_alpha.py --evolution RUN_DIR [RUN_DIR ...] --epochs 1 10 40 --branch text \\
        --out evolution.png [--labels caltech101 dtd]  # softmax(α) at chosen epochs, one row per run

Figures name the run (dataset, shots and seed from its prompt_config.json, else from the path
``<dataset>/shots_K/seedS``) and outline the chosen length of each block. Colour scale (--scale):
``unit`` is 0..1, ``data`` fits the shown values, ``auto`` (heatmap default) fits them only when no
block has a probability >= 0.5 (early or short searches); the evolution figure defaults to ``unit``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dpl.errors import exit_error, os_error_line, output_problem  # noqa: E402
from dpl.plots import (CONVERGENCE, HEATMAP, SCALES, distinct_labels,  # noqa: E402
                       plot_convergence, plot_evolution, plot_heatmaps, read_history, read_run)

PROG = "plot_alpha.py"


def history_path(run_dir: str) -> str:
    path = os.path.join(run_dir, "alpha_history.json")
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist; pass a DPLSearch output directory (it holds "
                         "alpha_history.json after the first epoch).")
    return path


def main(argv=None) -> int:
    """Run the CLI; a user's mistake ends with one ``plot_alpha.py: error:`` line, exit status 2."""
    try:
        return _run(argv)
    except ValueError as err:  # unreadable history or artifact, an epoch it does not hold
        exit_error(PROG, str(err))
    except KeyError as err:
        exit_error(PROG, f"an alpha_history.json record has no {err} entry; pass histories "
                   "written by DPLSearch.")
    except OSError as err:  # a file that cannot be read or a PNG that cannot be written
        exit_error(PROG, os_error_line(err))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dirs", nargs="+", help="DPLSearch output directories")
    p.add_argument("--epoch", type=int, help="heatmap at this epoch (default: last)")
    p.add_argument("--evolution", action="store_true", help="one figure: runs x epochs")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 10, 40, 80])
    p.add_argument("--branch", choices=("text", "vision"), default="text")
    p.add_argument("--labels", nargs="+", help="row labels for --evolution (default: the datasets)")
    p.add_argument("--scale", choices=SCALES,
                   help="colour scale (default: auto for the heatmap, unit for --evolution)")
    p.add_argument("--no-values", action="store_true",
                   help="heatmap without the value in each cell")
    p.add_argument("--out", help="output PNG (--evolution; default alpha_evolution.png)")
    return p


def _run(argv) -> int:
    p = get_parser()
    args = p.parse_args(argv)
    if args.evolution:
        out = args.out or "alpha_evolution.png"
        problem = output_problem(out)
        if problem:
            exit_error(PROG, f"--out {problem}")
        infos = [read_run(d) for d in args.run_dirs]
        labels = args.labels or distinct_labels(infos)
        if len(labels) != len(args.run_dirs):
            exit_error(PROG, f"--labels gives {len(labels)} labels for {len(args.run_dirs)} run "
                       "directories; give one per directory.")
        runs = [(lab, read_history(history_path(d)), info.options[args.branch])
                for lab, d, info in zip(labels, args.run_dirs, infos)]
        print(f"Saved {plot_evolution(runs, args.epochs, out, args.branch, args.scale or 'unit')}")
        return 0
    if args.out:
        exit_error(PROG, f"--out {args.out} is for --evolution; the heatmap and convergence PNGs "
                   "go into each RUN_DIR (drop --out, or add --evolution).")
    for run_dir in args.run_dirs:
        records = read_history(history_path(run_dir))
        info = read_run(run_dir)
        heatmap = os.path.join(run_dir, HEATMAP)
        print("Saved", plot_heatmaps(records, info.options, heatmap, args.epoch, info.label,
                                     args.scale or "auto", not args.no_values))
        print("Saved", plot_convergence(records, os.path.join(run_dir, CONVERGENCE), info.label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
