#!/usr/bin/env python
"""Result tables from run directories: mean ± 95 % CI over seeds, per dataset and averaged.

    python tools/parse_test_res.py output/fewshot                 # few-shot / xd / dg tables
    python tools/parse_test_res.py output --base2new              # base / new / harmonic mean
    python tools/parse_test_res.py output/fewshot --csv r.csv --md r.md

A run is a ``seed<N>`` directory holding ``log.txt`` (a resumed run writes ``log.txt-<time>``; the
newest log with a result wins). Its result is the last ``* accuracy: X%`` line after
``Finish training`` (training logs) or after ``=> result`` (eval-only logs) — this also reads
CoOp/MaPLe run directories. Runs are grouped by their path without the seed; the dataset is the
path component that names a dataset config (``caltech101``, ``imagenet``, ...), the rest of the path
names the experiment (trainer, config, shots). The CI is CoOp's: 1.96 · std / sqrt(n), population
std; the average over datasets is the mean of the per-dataset means.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import OrderedDict, defaultdict

from tabulate import tabulate

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_DIR)

from dpl.io import atomic_write_text  # noqa: E402

SEED_DIR = re.compile(r"^seed(\d+)$")
END_SIGNALS = ("Finish training", "Finished training")


COOP_DATASETS = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch",
    "imagenet_a", "imagenet_r",
)


def known_datasets() -> set:
    """CoOp's dataset config names plus any other config in configs/datasets."""
    cfg_dir = os.path.join(REPO_DIR, "configs", "datasets")
    extra = [f[:-5] for f in os.listdir(cfg_dir) if f.endswith(".yaml")] if os.path.isdir(cfg_dir) else []
    return set(COOP_DATASETS) | set(extra)


def read_result(log_path: str, keyword: str = "accuracy"):
    """The run's final metric in percent, or None. Training logs: last match after the end
    signal; eval-only logs (no end signal): last match after ``=> result``."""
    pattern = re.compile(r"\* " + re.escape(keyword) + r": ([\.\deE+-]+)%")
    after_end = after_result = None
    ended = seen_result = False
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line in END_SIGNALS:
                ended = True
            if line == "=> result":
                seen_result = True
            m = pattern.search(line)
            if m:
                if ended:
                    after_end = float(m.group(1))
                if seen_result:
                    after_result = float(m.group(1))
    return after_end if ended else after_result


def run_logs(run_dir: str) -> list:
    """log.txt first, then the timestamped logs of later runs in time order."""
    names = [n for n in os.listdir(run_dir) if n == "log.txt" or n.startswith("log.txt-")]
    return [os.path.join(run_dir, n) for n in sorted(names, key=lambda n: (n != "log.txt", n))]


def run_result(run_dir: str, keyword: str = "accuracy"):
    result = None
    for log in run_logs(run_dir):
        value = read_result(log, keyword)
        if value is not None:
            result = value
    return result


def collect(root: str, keyword: str = "accuracy", include_search: bool = False) -> dict:
    """{(experiment, dataset): {seed: value}} for every seed dir below ``root``.

    DPLSearch runs are skipped unless ``include_search`` (their test number is the supernet's)."""
    datasets = known_datasets()
    found = defaultdict(dict)
    for dirpath, dirnames, _ in os.walk(root):
        m = SEED_DIR.match(os.path.basename(dirpath))
        if not m:
            continue
        dirnames[:] = []
        value = run_result(dirpath, keyword)
        if value is None:
            continue
        parts = os.path.relpath(os.path.dirname(dirpath), root).split(os.sep)
        parts = [p for p in parts if p != "."]
        dataset = next((p for p in parts if p in datasets), None)
        if dataset is None:
            dataset = parts[-1] if parts else os.path.basename(os.path.abspath(root))
        experiment = "/".join(p for p in parts if p != dataset) or "."
        if "DPLSearch" in parts and not include_search:
            continue
        found[(experiment, dataset)][int(m.group(1))] = value
    return found


def mean_ci(values) -> tuple:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, 1.96 * std / math.sqrt(n)


def fmt(mean, ci=None) -> str:
    return f"{mean:.2f}" if ci is None else f"{mean:.2f} ± {ci:.2f}"


def fewshot_table(found: dict) -> tuple:
    """Rows = experiments, columns = datasets + Average (mean of dataset means)."""
    experiments = sorted({e for e, _ in found})
    datasets = sorted({d for _, d in found})
    headers = ["experiment", *datasets, "average", "seeds"]
    rows = []
    for exp in experiments:
        row, means, seeds = [exp], [], set()
        for ds in datasets:
            vals = found.get((exp, ds))
            if vals:
                mean, ci = mean_ci(list(vals.values()))
                means.append(mean)
                seeds.add(len(vals))
                row.append(fmt(mean, ci))
            else:
                row.append("-")
        row.append(fmt(sum(means) / len(means)) if len(means) == len(datasets) else "-")
        row.append("/".join(str(s) for s in sorted(seeds)))
        rows.append(row)
    return headers, rows


def harmonic(a, b) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def base2new_table(root: str, keyword: str = "accuracy", include_search: bool = False) -> tuple:
    """Rows = (experiment, dataset) + a per-experiment average; base, new, HM columns."""
    base = collect(os.path.join(root, "base2new_base"), keyword, include_search)
    new = collect(os.path.join(root, "base2new_new"), keyword, include_search)
    if not base:
        raise SystemExit(f"Nothing found in {os.path.join(root, 'base2new_base')}")
    headers = ["experiment", "dataset", "base", "new", "HM", "seeds"]
    rows = []
    by_exp = OrderedDict()
    for exp, ds in sorted(base):
        b = base[(exp, ds)]
        n = new.get((exp, ds), {})
        b_mean, b_ci = mean_ci(list(b.values()))
        if n:
            n_mean, n_ci = mean_ci(list(n.values()))
            rows.append([exp, ds, fmt(b_mean, b_ci), fmt(n_mean, n_ci),
                         fmt(harmonic(b_mean, n_mean)), f"{len(b)}/{len(n)}"])
            by_exp.setdefault(exp, []).append((b_mean, n_mean))
        else:
            rows.append([exp, ds, fmt(b_mean, b_ci), "-", "-", f"{len(b)}/0"])
    for exp, pairs in by_exp.items():
        b_avg = sum(p[0] for p in pairs) / len(pairs)
        n_avg = sum(p[1] for p in pairs) / len(pairs)
        rows.append([exp, f"average ({len(pairs)})", fmt(b_avg), fmt(n_avg),
                     fmt(harmonic(b_avg, n_avg)), ""])
    return headers, rows


def write_outputs(headers, rows, csv_path=None, md_path=None) -> None:
    if csv_path:
        import csv
        import io
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(headers)
        writer.writerows(rows)
        atomic_write_text(csv_path, buf.getvalue())
    if md_path:
        atomic_write_text(md_path, tabulate(rows, headers, tablefmt="github") + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="output directory to scan (recursively)")
    parser.add_argument("--base2new", action="store_true",
                        help="DIRECTORY holds base2new_base/ and base2new_new/ (scripts/dpl/base2new.sh)")
    parser.add_argument("--keyword", default="accuracy", help="metric name in '* <keyword>: X%%'")
    parser.add_argument("--include-search", action="store_true",
                        help="also list DPLSearch runs (their accuracy is the supernet's)")
    parser.add_argument("--csv", help="also write the table as CSV")
    parser.add_argument("--md", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.directory):
        parser.error(f"{args.directory} is not a directory")
    if args.base2new:
        headers, rows = base2new_table(args.directory, args.keyword, args.include_search)
        title = "Base-to-new (mean ± 95% CI over seeds; HM of the means)"
    else:
        found = collect(args.directory, args.keyword, args.include_search)
        if not found:
            raise SystemExit(f"Nothing found in {args.directory} (no seed*/log.txt with a result)")
        headers, rows = fewshot_table(found)
        title = f"{args.keyword} (mean ± 95% CI over seeds; average = mean over datasets)"
    print(title)
    print(tabulate(rows, headers, tablefmt="simple"))
    write_outputs(headers, rows, args.csv, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
