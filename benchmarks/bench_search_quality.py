"""Search quality: the default search (the paper's loop) against the fast search, on the offline
demo world.

For every demo task x seed: a DPLSearch with the default, paper loop (Algorithm 1: an α step at
every prompt step, all epochs, no early stop; ``configs/trainers/DPLSearch/vit_b16.yaml``) and one
with the fast loop's options (``--patience``, ``--min-epochs``, ``--alpha-every``;
``vit_b16_fast.yaml`` holds 3, 40, 4 at the paper's 80 epochs), then a DPLTrain of each derived
configuration with the same train settings and seed. Prints per run: search epochs actually run,
search wall time, derived lengths, DPLTrain test accuracy; then the accuracy difference
(fast - paper) with its spread, the worst run, and the mean epochs run. Writes a JSON that
``bench_stages.py`` reads for the fast loop's epoch ratio (JSON files written before the
relabelling call the paper loop "full" and the fast loop "new"). Runs on CPU with the demo's
shipped micro-CLIP; each stage is an ordinary ``train.py`` process.
Never asserts (targets: mean difference within 0.5 points, no run worse by more than 2).

The demo is small, so epochs are scaled: the searches run at most ``--search-epochs`` (default
40) and the train stage ``--train-epochs`` (default 20), the same 2 : 1 as the paper configs' 80 : 40.

    python benchmarks/bench_search_quality.py [--tasks demo_combos demo_shapes] [--seeds 1 2 3]
        [--shots 2] [--out output/bench_search_quality] [--json benchmarks/results/search_quality.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_JSON = REPO / "benchmarks" / "results" / "search_quality.json"


def search_opts(patience: int, min_epochs: int, alpha_every: int) -> list:
    return ["TRAINER.DPL.SEARCH.PATIENCE", str(patience), "TRAINER.DPL.SEARCH.MIN_EPOCHS",
            str(min_epochs), "TRAINER.DPL.SEARCH.ALPHA_EVERY", str(alpha_every)]


def run(trainer: str, task: str, seed: int, out: Path, clip: str, shots: int, epochs: int,
        data: Path, opts: list, threads: int) -> float:
    """One train.py process; returns its wall time. Finished runs (a test result) are not rerun;
    their recorded wall time is returned."""
    from tools.parse_test_res import run_result

    if out.is_dir() and run_result(str(out)) is not None:
        timing = out / "wall_seconds.txt"
        return float(timing.read_text()) if timing.is_file() else float("nan")
    argv = [sys.executable, str(REPO / "train.py"), "--root", str(data), "--seed", str(seed),
            "--trainer", trainer,
            "--dataset-config-file", str(REPO / "configs" / "datasets" / f"{task}.yaml"),
            "--config-file", str(REPO / "configs" / "trainers" / trainer / "demo.yaml"),
            "--output-dir", str(out), "DATASET.NUM_SHOTS", str(shots), "MODEL.BACKBONE.PATH", clip,
            "OPTIM.MAX_EPOCH", str(epochs), *opts]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.txt", "w") as fh:
        subprocess.run(argv, check=True, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    seconds = time.time() - start
    (out / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["demo_combos", "demo_shapes"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--search-epochs", type=int, default=40)
    ap.add_argument("--train-epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=5, help="the fast loop's SEARCH.PATIENCE")
    ap.add_argument("--min-epochs", type=int, default=10,
                    help="the fast loop's SEARCH.MIN_EPOCHS, at this benchmark's epoch scale")
    ap.add_argument("--alpha-every", type=int, default=4, help="the fast loop's SEARCH.ALPHA_EVERY")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip", default="", help="demo CLIP weights (default: the shipped base weights)")
    ap.add_argument("--variant", default="base", help="shipped demo CLIP: base or depth12")
    ap.add_argument("--out", default=str(REPO / "output" / "bench_search_quality"))
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    args = ap.parse_args(argv)

    from tabulate import tabulate

    from demo.pretrain import get_demo_clip
    from tools.parse_test_res import run_result

    clip = args.clip or get_demo_clip(args.variant)
    out, data = Path(args.out), Path(args.out) / "data"
    # The default search is the paper's loop (the key defaults, stated explicitly); the fast one
    # differs only in these three keys.
    variants = {"paper": search_opts(0, 0, 1),
                "fast": search_opts(args.patience, args.min_epochs, args.alpha_every)}
    # Run folders name their settings, so another fast candidate reuses the finished paper-loop runs
    # ("full": the folder name of earlier versions of this benchmark).
    run_names = {"paper": "full", "fast": f"p{args.patience}_m{args.min_epochs}_k{args.alpha_every}"}
    print(f"Demo world, {args.shots} shots, default search (paper loop) {args.search_epochs} epochs, "
          f"train {args.train_epochs} epochs; fast search: PATIENCE {args.patience}, MIN_EPOCHS "
          f"{args.min_epochs}, ALPHA_EVERY {args.alpha_every}; CPU, {args.threads} thread(s)", flush=True)
    runs = []
    for task in args.tasks:
        for seed in args.seeds:
            trained = {}  # configuration -> accuracy: the same configuration trains identically
            for name, opts in variants.items():
                s_dir = out / task / f"seed{seed}" / f"search_{run_names[name]}"
                t = run("DPLSearch", task, seed, s_dir, clip, args.shots, args.search_epochs, data,
                        opts + ["TRAINER.DPL.SEARCH.PLOT", "False"], args.threads)
                art = json.loads((s_dir / "prompt_config.json").read_text())
                key = (tuple(art["text"]["lengths"]), tuple(art["vision"]["lengths"]))
                if key not in trained:
                    t_dir = out / task / f"seed{seed}" / f"train_{run_names[name]}"
                    run("DPLTrain", task, seed, t_dir, clip, args.shots, args.train_epochs, data,
                        ["TRAINER.DPL.CONFIG_FILE", str(s_dir / "prompt_config.json")], args.threads)
                    trained[key] = run_result(str(t_dir))
                runs.append({"task": task, "seed": seed, "variant": name,
                             "epochs_run": art["provenance"]["epochs_run"], "search_seconds": round(t, 1),
                             "text": list(key[0]), "vision": list(key[1]), "accuracy": trained[key]})
                r = runs[-1]
                print(f"  {task} seed {seed} {name}: {r['epochs_run']} epochs, {t:.0f} s, "
                      f"acc {r['accuracy']:.2f}", flush=True)

    print(tabulate([[r["task"], r["seed"], r["variant"], r["epochs_run"], r["search_seconds"],
                     r["text"], r["vision"], f"{r['accuracy']:.2f}"] for r in runs],
                   ["task", "seed", "search", "epochs run", "search s", "text lengths",
                    "vision lengths", "DPLTrain test acc"], tablefmt="github"))
    pairs = {}
    for r in runs:
        pairs.setdefault((r["task"], r["seed"]), {})[r["variant"]] = r
    diffs = [p["fast"]["accuracy"] - p["paper"]["accuracy"] for p in pairs.values()]
    epochs = {v: statistics.mean(r["epochs_run"] for r in runs if r["variant"] == v) for v in variants}
    seconds = {v: sum(r["search_seconds"] for r in runs if r["variant"] == v) for v in variants}
    same = sum(p["fast"]["text"] == p["paper"]["text"] and p["fast"]["vision"] == p["paper"]["vision"]
               for p in pairs.values())
    spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    print(f"\naccuracy fast - paper loop: mean {statistics.mean(diffs):+.2f} ± {spread:.2f} (std over "
          f"{len(diffs)} runs), worst {min(diffs):+.2f}, best {max(diffs):+.2f}; identical "
          f"configurations {same}/{len(diffs)}")
    print(f"search epochs run: paper loop {epochs['paper']:.1f}, fast {epochs['fast']:.1f} (of "
          f"{args.search_epochs}); train epochs {args.train_epochs}; search wall time fast / paper "
          f"{seconds['fast'] / max(seconds['paper'], 1e-9):.2f}")
    from dpl.io import atomic_write_json

    atomic_write_json(args.json, {
        "settings": {k: getattr(args, k) for k in ("tasks", "seeds", "shots", "search_epochs",
                                                   "train_epochs", "patience", "min_epochs",
                                                   "alpha_every", "variant")},
        "runs": runs,
        "accuracy_diff": {"mean": statistics.mean(diffs), "std": spread, "worst": min(diffs)},
        "epochs_run": epochs,
        # Whole search / whole train stage in epochs, for bench_stages.py's R.
        "epoch_ratio": {v: epochs[v] / args.train_epochs for v in variants},
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end",
    })
    print(f"Saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
