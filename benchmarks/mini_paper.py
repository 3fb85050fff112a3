"""The paper in miniature: every method and protocol of the DPL paper on the offline demo world.

    python benchmarks/mini_paper.py              # the whole benchmark (resumable: re-run to continue)
    python benchmarks/mini_paper.py --quick      # 2 tasks, 16-shot few-shot + base-to-new, 1 seed
    python benchmarks/mini_paper.py --report     # only rebuild the tables from the finished runs

Methods: ZeroshotCLIP, CoOp, IVLP, MaPLe, DPLTrain on a uniform manual configuration, DPL searched
with the paper's loop and DPL searched with the fast loop (``configs/trainers/*/mini_paper*.yaml``).
Protocols: few-shot (1, 4, 16 shots), base-to-new (base / new / harmonic mean), cross-dataset and
domain generalisation (train on DemoCombos, evaluate on the other tasks / on its shifted renderings).
3 seeds per cell. Every run is an ordinary ``train.py`` run, called in-process inside ``--jobs``
worker processes (one thread each, no Python start-up per run), written in the protocol scripts'
layout (``<out>/fewshot/<Trainer>/<cfg>/<dataset>/shots_<K>/seed<S>``, ``base2new_base``,
``base2new_new``, ``xd_train``, ``xd_test``, ``dg_test``), so ``tools/parse_test_res.py <out>/fewshot``
reads it too. A finished run has ``.done`` and is never repeated; an interrupted one resumes from
its last epoch checkpoint.

Outputs: ``<json>`` (default ``benchmarks/results/mini_paper.json``) and the Markdown tables with the
claims section next to it (``.md``); ``--quick`` writes under ``<out>`` only. Tables give mean ± 95 %
confidence interval (t-distribution, n - 1 degrees of freedom) per task and averaged over tasks
(the average is taken per seed, then its interval over seeds). docs/MINI_PAPER.md explains the
design, the budget and how to read the claims.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from dpl.io import atomic_write_json, atomic_write_text, checkpoint_file_epoch  # noqa: E402
from tools.parse_test_res import run_result  # noqa: E402

DEFAULT_JSON = os.path.join(REPO, "benchmarks", "results", "mini_paper.json")


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    trainer: str
    cfg: str
    search_cfg: str = ""       # DPLSearch config whose artifact DPLTrain trains ("" = none)


METHODS: Tuple[Method, ...] = (
    Method("zeroshot", "ZeroshotCLIP", "ZeroshotCLIP", "mini_paper"),
    Method("coop", "CoOp", "CoOp", "mini_paper"),
    Method("ivlp", "IVLP", "IVLP", "mini_paper"),
    Method("maple", "MaPLe", "MaPLe", "mini_paper"),
    Method("uniform", "DPL uniform (manual)", "DPLTrain", "mini_paper_uniform"),
    Method("dpl", "DPL searched (paper loop)", "DPLTrain", "mini_paper", "mini_paper"),
    Method("dpl_fast", "DPL searched (fast loop)", "DPLTrain", "mini_paper_fast", "mini_paper_fast"),
)
BY_KEY = {m.key: m for m in METHODS}
MANUAL = ("coop", "ivlp", "maple", "uniform")      # the manually designed prompt methods
SEARCHED = "dpl"

FEWSHOT_TASKS = ("demo_shapes", "demo_combos", "demo_colors", "demo_sizeshapes", "demo_textures")
SOURCE = "demo_combos"                               # source of cross-dataset and DG (ImageNet's role)
XD_TARGETS = tuple(t for t in FEWSHOT_TASKS if t != SOURCE)
DG_TARGETS = ("demo_combos_sketch", "demo_combos_clutter", "demo_combos_jitter")
SHOTS = (1, 4, 16)
SEEDS = (1, 2, 3)
QUICK_TASKS = ("demo_combos", "demo_colors")


# --------------------------------------------------------------------------- runs

@dataclass
class Run:
    out: str                   # run directory
    argv: List[str]            # train.py arguments
    needs: Tuple[str, ...] = ("log.txt*",)


class Layout:
    """The protocol scripts' directory layout (scripts/dpl/_lib.sh) and the train.py arguments."""

    def __init__(self, out: str, clip: str, opts: Tuple[str, ...] = ()):
        self.out, self.clip, self.opts = out, clip, tuple(opts)

    def run_dir(self, protocol, trainer, cfg, dataset, shots, seed) -> str:
        shots = "all" if shots == -1 else shots
        return os.path.join(self.out, protocol, trainer, cfg, dataset, f"shots_{shots}", f"seed{seed}")

    def _argv(self, out, trainer, cfg, dataset, shots, seed, sub, *extra) -> List[str]:
        return ["--root", os.path.join(self.out, "data"), "--output-dir", out, "--seed", str(seed),
                "--trainer", trainer,
                "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{dataset}.yaml"),
                "--config-file", os.path.join(REPO, "configs", "trainers", trainer, f"{cfg}.yaml"),
                *extra, "DATASET.NUM_SHOTS", str(shots), "DATASET.SUBSAMPLE_CLASSES", sub,
                "MODEL.BACKBONE.PATH", self.clip, *self.opts]

    def search(self, protocol, method: Method, dataset, shots, seed, sub) -> Run:
        out = self.run_dir(protocol, "DPLSearch", method.search_cfg, dataset, shots, seed)
        return Run(out, self._argv(out, "DPLSearch", method.search_cfg, dataset, shots, seed, sub),
                   ("log.txt*", "prompt_config.json"))

    def train(self, protocol, method: Method, dataset, shots, seed, sub) -> List[Run]:
        runs, extra = [], []
        if method.search_cfg:
            search = self.search(protocol, method, dataset, shots, seed, sub)
            runs.append(search)
            extra = ["TRAINER.DPL.CONFIG_FILE", os.path.join(search.out, "prompt_config.json")]
        out = self.run_dir(protocol, method.trainer, method.cfg, dataset, shots, seed)
        flags = ["--eval-only"] if method.trainer == "ZeroshotCLIP" else []
        argv = self._argv(out, method.trainer, method.cfg, dataset, shots, seed, sub, *flags)
        runs.append(Run(out, argv + extra))
        return runs

    def evaluate(self, source_dir, protocol, method: Method, dataset, shots, seed, sub) -> Run:
        out = self.run_dir(protocol, method.trainer, method.cfg, dataset, shots, seed)
        extra = ["--eval-only"]
        if method.trainer != "ZeroshotCLIP":
            extra += ["--model-dir", source_dir, "--load-epoch", "LAST"]   # resolved when run
        argv = self._argv(out, method.trainer, method.cfg, dataset, shots, seed, sub, *extra)
        if method.trainer == "DPLTrain":
            argv += ["TRAINER.DPL.CONFIG_FILE", os.path.join(source_dir, "prompt_config.json")]
        return Run(out, argv)


@dataclass
class Chain:
    """Runs that depend on each other (search -> train -> evaluations), done in order by one worker."""

    name: str
    runs: List[Run]
    cost: float                # a rough relative cost, to start the long chains first


def build_chains(layout: Layout, tasks, shots_list, seeds, protocols, class_counts) -> List[Chain]:
    chains = []
    weight = lambda m: 4.0 if m.search_cfg else 0.05 if m.trainer == "ZeroshotCLIP" else 1.0  # noqa: E731
    for seed in seeds:
        if "fewshot" in protocols:
            for task in tasks:
                for shots in shots_list:
                    for m in METHODS:
                        if m.trainer == "ZeroshotCLIP" and shots != max(shots_list):
                            continue       # zero-shot does not depend on the shots: run once per task
                        chains.append(Chain(f"fewshot {m.key} {task} {shots}-shot seed{seed}",
                                            layout.train("fewshot", m, task, shots, seed, "all"),
                                            weight(m) * shots * class_counts[task]))
        if "base2new" in protocols:
            for task in tasks:
                for m in METHODS:
                    runs = layout.train("base2new_base", m, task, 16, seed, "base")
                    runs.append(layout.evaluate(runs[-1].out, "base2new_new", m, task, 16, seed, "new"))
                    chains.append(Chain(f"base2new {m.key} {task} seed{seed}", runs,
                                        weight(m) * 8 * class_counts[task]))
        if "transfer" in protocols:
            for m in METHODS:
                runs = layout.train("xd_train", m, SOURCE, 16, seed, "all")
                src = runs[-1].out
                runs += [layout.evaluate(src, "xd_test", m, t, -1, seed, "all") for t in XD_TARGETS]
                runs += [layout.evaluate(src, "dg_test", m, t, -1, seed, "all") for t in DG_TARGETS]
                chains.append(Chain(f"transfer {m.key} seed{seed}", runs,
                                    weight(m) * 16 * class_counts[SOURCE]))
    return chains


def is_done(run: Run) -> bool:
    return os.path.isfile(os.path.join(run.out, ".done")) and all(
        glob.glob(os.path.join(run.out, pattern)) for pattern in run.needs)


def last_epoch(model_dir: str) -> str:
    """The epoch of the newest checkpoint in a trained run (as _lib.sh's last_epoch)."""
    for pointer in sorted(glob.glob(os.path.join(model_dir, "*", "checkpoint"))):
        with open(pointer, encoding="utf-8") as fh:
            name = fh.readline().strip()
        epoch = checkpoint_file_epoch(name)
        if epoch is not None:
            return str(epoch)
    raise RuntimeError(f"no checkpoint in {model_dir}")


# --------------------------------------------------------------------------- workers

def _init_worker(threads: int) -> None:
    os.environ["TQDM_DISABLE"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import functools

    import torch

    import train

    torch.set_num_threads(threads)
    # Every log still records the environment, but it is collected once per worker: it runs
    # pip and other subprocesses, over a third of a short evaluation run's time.
    if not hasattr(train.collect_env_info, "cache_info"):
        train.collect_env_info = functools.lru_cache(maxsize=None)(train.collect_env_info)


def run_chain(chain: Chain) -> List[dict]:
    """Run a chain's unfinished runs in this process; one record per run (seconds, status)."""
    import train
    from dpl.errors import NonFiniteLossError

    records = []
    for run in chain.runs:
        if is_done(run):
            records.append({"out": run.out, "status": "done earlier", "seconds": _recorded_seconds(run.out)})
            continue
        if os.path.isfile(os.path.join(run.out, ".diverged")):
            records.append({"out": run.out, "status": "diverged", "seconds": 0.0})
            break
        argv = list(run.argv)
        if "LAST" in argv:
            argv[argv.index("LAST")] = last_epoch(argv[argv.index("--model-dir") + 1])
        os.makedirs(run.out, exist_ok=True)
        start, saved = time.time(), (sys.stdout, sys.stderr)
        try:
            with open(os.path.join(run.out, "console.txt"), "a", encoding="utf-8") as console:
                sys.stdout = sys.stderr = console
                train.main(argv)
        except NonFiniteLossError as exc:
            atomic_write_text(os.path.join(run.out, ".diverged"), f"{exc}\n")
            records.append({"out": run.out, "status": "diverged", "seconds": time.time() - start})
            break
        except BaseException as exc:  # noqa: BLE001  (reported by the parent, the chain stops)
            records.append({"out": run.out, "status": f"failed: {type(exc).__name__}: {exc}",
                            "seconds": time.time() - start})
            break
        finally:
            sys.stdout, sys.stderr = saved
        seconds = time.time() - start
        atomic_write_text(os.path.join(run.out, "wall_seconds.txt"), f"{seconds:.2f}\n")
        atomic_write_text(os.path.join(run.out, ".done"), "")
        records.append({"out": run.out, "status": "ran", "seconds": seconds})
    return records


def _recorded_seconds(out: str) -> float:
    path = os.path.join(out, "wall_seconds.txt")
    try:
        with open(path, encoding="utf-8") as fh:
            return float(fh.read())
    except (OSError, ValueError):
        return float("nan")


def execute(chains: List[Chain], jobs: int, threads: int) -> List[dict]:
    """All chains, the long ones first, ``jobs`` at a time; a progress bar counts runs."""
    from tqdm import tqdm

    todo = [c for c in chains if not all(is_done(r) for r in c.runs)]
    total = sum(len(c.runs) for c in chains)
    finished = total - sum(len(c.runs) for c in todo)
    records = []
    bar = tqdm(total=total, initial=finished, unit="run", desc="mini paper", dynamic_ncols=True,
               disable=False, file=sys.stderr)
    todo.sort(key=lambda c: -c.cost)
    if jobs <= 1:
        _init_worker(threads)
        for chain in todo:
            recs = run_chain(chain)
            records += recs
            bar.update(len(chain.runs))
            _report_failures(chain, recs, bar)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(run_chain, chain): chain for chain in todo}
            for future in as_completed(futures):
                chain = futures[future]
                recs = future.result()
                records += recs
                bar.update(len(chain.runs))
                _report_failures(chain, recs, bar)
    bar.close()
    return records


def _shown_path(path: str) -> str:
    """Repository-relative when inside the repository, else absolute."""
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel


def _report_failures(chain: Chain, records: List[dict], bar) -> None:
    for r in records:
        if r["status"].startswith("failed") or r["status"] == "diverged":
            bar.write(f"{chain.name}: {r['status']} ({r['out']})")


# --------------------------------------------------------------------------- statistics

def t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci(values: List[float]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and 95 % CI half-width (t-distribution, sample std); CI None for n < 2."""
    if not values:
        return None, None
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None
    return mean, t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def cell(values: List[float]) -> dict:
    mean, ci = mean_ci(values)
    return {"mean": mean, "ci95": ci, "n": len(values), "values": values}


def fmt(c: Optional[dict]) -> str:
    if not c or c["mean"] is None:
        return "-"
    return f"{c['mean']:.1f}" if c["ci95"] is None else f"{c['mean']:.1f} ± {c['ci95']:.1f}"


def harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


# --------------------------------------------------------------------------- collecting results

class Results:
    def __init__(self, layout: Layout, tasks, shots_list, seeds):
        self.layout, self.tasks, self.shots_list, self.seeds = layout, tasks, shots_list, seeds

    def acc(self, protocol, m: Method, dataset, shots, seed) -> Optional[float]:
        out = self.layout.run_dir(protocol, m.trainer, m.cfg, dataset, shots, seed)
        if not os.path.isfile(os.path.join(out, ".done")):
            return None
        return run_result(out)

    def per_seed(self, fn, tasks) -> Dict[str, Dict[int, float]]:
        """{task: {seed: value}} of the seeds where fn(task, seed) has a value."""
        found = {}
        for task in tasks:
            found[task] = {s: v for s in self.seeds if (v := fn(task, s)) is not None}
        return found

    @staticmethod
    def table_row(found: Dict[str, Dict[int, float]]) -> dict:
        """Cells per task and the average: per seed over the tasks (only seeds complete for all)."""
        row = {task: cell(list(v.values())) for task, v in found.items()}
        seeds = set.intersection(*(set(v) for v in found.values())) if found else set()
        row["average"] = cell([statistics.mean(found[t][s] for t in found) for s in sorted(seeds)])
        return row


def collect(res: Results, protocols) -> dict:
    """All tables as nested dicts of cells."""
    tables = {}
    if "fewshot" in protocols:
        top = max(res.shots_list)
        for shots in res.shots_list:
            t = {}
            for m in METHODS:
                k = top if m.trainer == "ZeroshotCLIP" else shots
                t[m.key] = res.table_row(res.per_seed(
                    lambda task, s, m=m, k=k: res.acc("fewshot", m, task, k, s), res.tasks))
            tables[f"fewshot_{shots}"] = t
    if "base2new" in protocols:
        t = {}
        for m in METHODS:
            base = res.per_seed(lambda task, s, m=m: res.acc("base2new_base", m, task, 16, s), res.tasks)
            new = res.per_seed(lambda task, s, m=m: res.acc("base2new_new", m, task, 16, s), res.tasks)
            hm = {task: {s: harmonic(base[task][s], new[task][s]) for s in base[task] if s in new[task]}
                  for task in res.tasks}
            t[m.key] = {"base": res.table_row(base), "new": res.table_row(new), "hm": res.table_row(hm)}
        tables["base2new"] = t
    if "transfer" in protocols:
        for name, protocol, targets in (("xd", "xd_test", XD_TARGETS), ("dg", "dg_test", DG_TARGETS)):
            t = {}
            for m in METHODS:
                k = 16
                src = res.per_seed(lambda task, s, m=m: res.acc(
                    "fewshot" if m.trainer == "ZeroshotCLIP" else "xd_train", m, task, k, s), [SOURCE])
                row = res.table_row(res.per_seed(
                    lambda task, s, m=m: res.acc(protocol, m, task, -1, s), targets))
                row["source"] = cell(list(src[SOURCE].values()))
                t[m.key] = row
            tables[name] = t
    return tables


def searched_lengths(res: Results, protocol="fewshot", shots=16) -> dict:
    """{loop: {task: {seed: {"text": [...], "vision": [...]}}}} from the search artifacts."""
    out = {}
    for key in ("dpl", "dpl_fast"):
        m = BY_KEY[key]
        per_task = {}
        for task in res.tasks:
            per_seed = {}
            for seed in res.seeds:
                path = os.path.join(res.layout.run_dir(protocol, "DPLSearch", m.search_cfg, task, shots, seed),
                                    "prompt_config.json")
                if os.path.isfile(path):
                    with open(path, encoding="utf-8") as fh:
                        art = json.load(fh)
                    per_seed[seed] = {"text": art["text"]["lengths"], "vision": art["vision"]["lengths"],
                                      "epochs_run": (art.get("search") or {}).get("epochs_run")
                                      or _history_epochs(os.path.dirname(path))}
            per_task[task] = per_seed
        out[key] = per_task
    return out


def _history_epochs(search_dir: str) -> Optional[int]:
    path = os.path.join(search_dir, "alpha_history.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        records = json.load(fh)
    return records[-1]["epoch"] if records else None


# --------------------------------------------------------------------------- claims

def claims(tables: dict, lengths: dict, res: Results, alpha: dict) -> List[str]:
    """The paper's claims, answered from the numbers (plain sentences; what fails says so)."""
    lines = []

    def avg(table, key, part=None):
        row = table[key] if part is None else table[key][part]
        return row["average"]

    # 1. searched vs the best manual configuration
    views = [(f"few-shot {k[8:]} shot{'' if k[8:] == '1' else 's'}", tables[k], None)
             for k in tables if k.startswith("fewshot_")]
    if "base2new" in tables:
        views.append(("base-to-new HM", tables["base2new"], "hm"))
    for name, table, part in views:
        manual = [(avg(table, k, part)["mean"], k) for k in MANUAL if avg(table, k, part)["mean"] is not None]
        ours = avg(table, SEARCHED, part)
        if not manual or ours["mean"] is None:
            lines.append(f"- **Searched vs best manual, {name}:** not enough finished runs.")
            continue
        best_mean, best = max(manual)
        delta = ours["mean"] - best_mean
        rows = {k: (table[k] if part is None else table[k][part]) for k in (SEARCHED, best)}
        tasks = [t for t in res.tasks if rows[SEARCHED][t]["mean"] is not None and rows[best][t]["mean"] is not None]
        wins = [t for t in tasks if rows[SEARCHED][t]["mean"] > rows[best][t]["mean"]]
        per_task_best = [t for t in tasks if all(
            rows[SEARCHED][t]["mean"] > (table[k] if part is None else table[k][part])[t]["mean"]
            for k in MANUAL if (table[k] if part is None else table[k][part])[t]["mean"] is not None)]
        ci = ours["ci95"]
        if ci is None:
            verdict = ("holds" if delta > 0 else "does not hold") + " on one seed"
            spread = " (no confidence interval, so this decides nothing)"
        else:
            verdict = ("holds" if delta > ci else "does not hold" if delta < -ci else
                       "undecided: the difference is within the seed spread")
            spread = (f"; the difference is {'larger' if abs(delta) > ci else 'smaller'} than the "
                      f"searched average's 95 % CI (± {ci:.1f})")
        lines.append(
            f"- **Searched vs best manual, {name}: {verdict}.** DPL searched {ours['mean']:.1f} vs "
            f"{BY_KEY[best].label} {best_mean:.1f} (best manual on average): {delta:+.1f} points{spread}. "
            f"Searched beats it on {len(wins)} of {len(tasks)} tasks"
            f"{' (' + ', '.join(wins) + ')' if wins else ''}, and beats every manual method on "
            f"{len(per_task_best)} of {len(tasks)}.")

    # 2. searched lengths differ between tasks and between branches
    paper = lengths.get("dpl", {})
    configs = {t: v for t, v in paper.items() if v}
    if configs:
        first_seed = {t: v[min(v)] for t, v in configs.items()}
        distinct = {(tuple(c["text"]), tuple(c["vision"])) for c in first_seed.values()}
        branch_diff = [t for t, c in first_seed.items() if c["text"] != c["vision"]]
        totals = {t: (sum(c["text"]), sum(c["vision"])) for t, c in first_seed.items()}
        lines.append(
            f"- **Searched lengths differ between tasks: {'yes' if len(distinct) > 1 else 'no'}.** "
            f"{len(distinct)} distinct configurations over {len(first_seed)} tasks (16 shots, first seed, "
            f"paper loop; all seeds in the configuration table).")
        lines.append(
            f"- **Searched lengths differ between the branches: "
            f"{'yes' if branch_diff else 'no'}** on {len(branch_diff)} of {len(first_seed)} tasks; total "
            "prompt tokens text/vision: " + ", ".join(f"{t} {a}/{b}" for t, (a, b) in totals.items()) + ".")
        seeds_same = [t for t, v in configs.items() if len(v) > 1 and
                      len({(tuple(c["text"]), tuple(c["vision"])) for c in v.values()}) == 1]
        multi = [t for t, v in configs.items() if len(v) > 1]
        if multi:
            lines.append(f"- Across seeds the search returns the same configuration on {len(seeds_same)} "
                         f"of {len(multi)} tasks: the per-task choice is "
                         f"{'stable' if len(seeds_same) == len(multi) else 'partly seed noise'}.")

    # 3. fast loop vs paper loop
    for name, table, part in views:
        a, b = avg(table, "dpl", part), avg(table, "dpl_fast", part)
        if a["mean"] is None or b["mean"] is None:
            continue
        delta = b["mean"] - a["mean"]
        spread = max(x for x in (a["ci95"], b["ci95"], 0.0) if x is not None)
        if a["ci95"] is None:
            verdict = f"{delta:+.1f} points (one seed: no spread to compare with)"
        else:
            verdict = (f"{delta:+.1f} points, {'within' if abs(delta) <= spread else 'outside'} the seed "
                       f"spread (95 % CI up to ± {spread:.1f})")
        lines.append(f"- **Fast loop vs paper loop, {name}:** {b['mean']:.1f} vs {a['mean']:.1f}, {verdict}.")
    epochs = [c.get("epochs_run") for v in lengths.get("dpl_fast", {}).values() for c in v.values()]
    epochs = [e for e in epochs if e]
    if epochs:
        paper_epochs = [c.get("epochs_run") for v in lengths.get("dpl", {}).values() for c in v.values()]
        paper_epochs = [e for e in paper_epochs if e]
        of = f" of the paper loop's {max(paper_epochs)}" if paper_epochs else ""
        stopped = sum(e < max(paper_epochs) for e in epochs) if paper_epochs else 0
        lines.append(f"- The fast loop's searches ran {min(epochs)}–{max(epochs)} epochs "
                     f"(mean {statistics.mean(epochs):.1f}){of}; its early stop fired in {stopped} of "
                     f"{len(epochs)} searches.")

    # 5. collapsed runs: trained, finite, but far below zero-shot (averaged in, listed here)
    collapsed = collapsed_runs(tables, res)
    if collapsed:
        lines.append(f"- **{len(collapsed)} trained runs ended more than {COLLAPSE} points below zero-shot** on "
                     "their task (finite loss, so they are averaged in; they are what widens those "
                     "intervals): " + "; ".join(collapsed) + ".")
    else:
        lines.append(f"- No trained run ended more than {COLLAPSE} points below zero-shot.")

    # 4. alpha convergence
    if alpha:
        lines.append(
            f"- **α converges ({alpha['run']}): "
            f"{'yes' if alpha['unchanged_epochs'] >= 2 else 'not within the epochs run'}.** The derived "
            f"configuration last changed at epoch {alpha['last_change']} of {alpha['epochs']}; at the end "
            f"the mean top softmax weight per block is {alpha['mean_top']:.2f} (text) / "
            f"{alpha['mean_top_vision']:.2f} (vision), and {alpha['dominant']} of {alpha['blocks']} blocks have "
            f"one option ≥ 0.5; the mean per-epoch change of softmax(α) (total variation) went from "
            f"{alpha['tv_distance_first']:.3f} in the first epoch to {alpha['tv_distance_last']:.3f} in the "
            f"last. Figure: `{alpha['figure']}`.")
    return lines


COLLAPSE = 15.0   # points below zero-shot that the claims section lists a run for


def collapsed_runs(tables: dict, res: Results) -> List[str]:
    """Runs of a trained method that end more than COLLAPSE points below zero-shot, by name."""
    found = []

    def check(name, row, zs_row, columns):
        for task in columns:
            zs = zs_row.get(task, {}).get("mean")
            values = row.get(task, {}).get("values", [])
            if zs is None or len(values) != len(res.seeds):
                continue
            for seed, value in zip(res.seeds, values):
                if value < zs - COLLAPSE:
                    found.append(f"{name} {task} seed {seed}: {value:.1f} (zero-shot {zs:.1f})")

    for key, table in tables.items():
        for m in METHODS:
            if m.trainer == "ZeroshotCLIP" or m.key not in table:
                continue
            label = f"{key.replace('_', ' ')} {m.label}"
            if key == "base2new":
                for part in ("base", "new"):
                    check(f"{label} ({part})", table[m.key][part], table["zeroshot"][part], res.tasks)
            else:
                columns = [c for c in table[m.key] if c not in ("average",)]
                check(label, table[m.key], table["zeroshot"], columns)
    return found


def alpha_summary(search_dir: str, figure: str, root: str) -> dict:
    path = os.path.join(search_dir, "alpha_history.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        records = json.load(fh)
    if not records:
        return {}

    def derived(r):
        return json.dumps([r["text"]["lengths"], r["vision"]["lengths"]])

    last_change = records[0]["epoch"]
    for prev, cur in zip(records, records[1:]):
        if derived(prev) != derived(cur):
            last_change = cur["epoch"]
    final = records[-1]
    tops = {b: [max(p) for p in final[b]["probs"]] for b in ("text", "vision")}
    all_tops = tops["text"] + tops["vision"]
    return {"run": os.path.relpath(search_dir, root),
            "epochs": final["epoch"], "last_change": last_change,
            "unchanged_epochs": final["epoch"] - last_change,
            "mean_top": statistics.mean(tops["text"]) if tops["text"] else float("nan"),
            "mean_top_vision": statistics.mean(tops["vision"]) if tops["vision"] else float("nan"),
            "dominant": sum(t >= 0.5 for t in all_tops), "blocks": len(all_tops), "figure": figure,
            "tv_distance_first": statistics.mean(records[0][b]["tv_distance"] for b in ("text", "vision")),
            "tv_distance_last": statistics.mean(final[b]["tv_distance"] for b in ("text", "vision"))}


# --------------------------------------------------------------------------- Markdown

def markdown(report: dict) -> str:
    meta, tables = report["meta"], report["tables"]
    labels = {m.key: m.label for m in METHODS}
    tasks = meta["tasks"]
    out = [f"# The paper in miniature ({'quick subset' if meta['quick'] else 'full benchmark'})", "",
           f"Written by `benchmarks/mini_paper.py`{' --quick' if meta['quick'] else ''} "
           f"({meta['date']}); docs/MINI_PAPER.md explains the design. Demo CLIP `{meta['clip_file']}` "
           f"(SHA-256 `{meta['clip_sha256']}`), seeds {meta['seeds']}, torch {meta['torch']}.",
           f"Wall time: {meta['wall_seconds'] / 60:.1f} min ({meta['jobs']} worker(s), "
           f"{meta['threads']} thread each; sum of run times {meta['run_seconds'] / 60:.1f} min; "
           f"{meta['machine']}).",
           "", "Accuracy in %, mean ± 95 % CI over seeds (t-distribution); `-` = no finished run; "
           "the average is over tasks, per seed.", ""]

    def simple(title, table, cols, col_names):
        out.extend([f"## {title}", "", "| method | " + " | ".join(col_names) + " |",
                    "|---|" + "---|" * len(cols)])
        for key, row in table.items():
            out.append(f"| {labels[key]} | " + " | ".join(fmt(row.get(c)) for c in cols) + " |")
        out.append("")

    for key in [k for k in tables if k.startswith("fewshot_")]:
        simple(f"Few-shot, {key[8:]} shot{'' if key[8:] == '1' else 's'}", tables[key], list(tasks) + ["average"], list(tasks) + ["**average**"])
    if "base2new" in tables:
        t = tables["base2new"]
        out.extend(["## Base-to-new generalisation (16 shots on the base half)", "",
                    "| method | base | new | HM |", "|---|---|---|---|"])
        for key, parts in t.items():
            out.append(f"| {labels[key]} | " + " | ".join(fmt(parts[p]["average"]) for p in ("base", "new", "hm")) + " |")
        out.append("")
        for task in tasks:
            out.extend([f"**{task}**", "", "| method | base | new | HM |", "|---|---|---|---|"])
            for key, parts in t.items():
                out.append(f"| {labels[key]} | " + " | ".join(fmt(parts[p][task]) for p in ("base", "new", "hm")) + " |")
            out.append("")
    if "xd" in tables:
        simple(f"Cross-dataset transfer (source {SOURCE}, 16 shots)", tables["xd"],
               ["source", *XD_TARGETS, "average"], [f"source ({SOURCE})", *XD_TARGETS, "**target average**"])
    if "dg" in tables:
        simple(f"Domain generalisation (source {SOURCE}, 16 shots)", tables["dg"],
               ["source", *DG_TARGETS, "average"], [f"source ({SOURCE})", *DG_TARGETS, "**target average**"])
    lengths = report["searched_lengths"]
    out.extend(["## Searched configurations (few-shot, 16 shots; prompt tokens per block, input side first)", "",
                "| loop | task | seed | text | vision | epochs run |", "|---|---|---|---|---|---|"])
    for loop, per_task in lengths.items():
        for task, per_seed in per_task.items():
            for seed, c in per_seed.items():
                out.append(f"| {labels[loop]} | {task} | {seed} | {c['text']} | {c['vision']} | "
                           f"{c.get('epochs_run') or '-'} |")
    out.extend(["", "## The paper's claims, from these numbers", ""] + report["claims"] + [""])
    return "\n".join(out)


# --------------------------------------------------------------------------- entry point

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"{len(QUICK_TASKS)} tasks ({', '.join(QUICK_TASKS)}), few-shot 16 shots and "
                         "base-to-new, 1 seed (results under --out only)")
    ap.add_argument("--report", action="store_true", help="only rebuild the tables from finished runs")
    ap.add_argument("--out", default="", help="run folder (default output/mini_paper[_quick])")
    ap.add_argument("--json", default="", help=f"results JSON (default {os.path.relpath(DEFAULT_JSON, REPO)}; "
                                               "with --quick <out>/mini_paper.json)")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (default: CPU cores)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--variant", default="depth12", help="shipped demo CLIP (depth12 or base)")
    ap.add_argument("--clip", default="", help="another weights file instead of the shipped variant")
    ap.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                    help="config overrides for every run (smoke tests, e.g. OPTIM.MAX_EPOCH 1; "
                         "use their own --out)")
    args = ap.parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"   # the runs' evaluation bars; the benchmark's own bar stays on

    from demo.pretrain import get_demo_clip

    clip = os.path.abspath(args.clip) if args.clip else get_demo_clip(args.variant, log=print)
    tasks = QUICK_TASKS if args.quick else FEWSHOT_TASKS
    shots_list = (16,) if args.quick else SHOTS
    seeds = (1,) if args.quick else SEEDS
    protocols = ("fewshot", "base2new") if args.quick else ("fewshot", "base2new", "transfer")
    out = os.path.abspath(args.out or os.path.join(REPO, "output", "mini_paper_quick" if args.quick else "mini_paper"))
    json_path = os.path.abspath(args.json or (os.path.join(out, "mini_paper.json") if args.quick else DEFAULT_JSON))
    jobs = args.jobs or os.cpu_count() or 1

    from demo.world import TASKS
    class_counts = {t.dataset_dir: len(t.classes) for t in TASKS.values()}
    layout = Layout(out, clip, args.opts)
    chains = build_chains(layout, tasks, shots_list, seeds, protocols, class_counts)
    start = time.time()
    records = [] if args.report else execute(chains, jobs, args.threads)
    wall = time.time() - start

    # Timing of every run (kept across resumed invocations in wall_seconds.txt).
    runs = [r for c in chains for r in c.runs]
    run_seconds = {os.path.relpath(r.out, out): _recorded_seconds(r.out) for r in runs}
    timing_path = os.path.join(out, "timing.json")
    previous = {}
    if os.path.isfile(timing_path):
        with open(timing_path, encoding="utf-8") as fh:
            previous = json.load(fh)
    invocations = previous.get("invocations", []) + ([] if args.report else [{"wall_seconds": wall, "jobs": jobs}])
    atomic_write_json(timing_path, {"invocations": invocations})
    total_wall = sum(i["wall_seconds"] for i in invocations)

    res = Results(layout, tasks, shots_list, seeds)
    tables = collect(res, protocols)
    lengths = searched_lengths(res)
    figure_task = SOURCE if SOURCE in tasks else tasks[0]
    figure_run = layout.run_dir("fewshot", "DPLSearch", BY_KEY["dpl"].search_cfg, figure_task, 16, seeds[0])
    figure = os.path.splitext(json_path)[0] + "_alpha_convergence.png"
    if os.path.isfile(os.path.join(figure_run, "alpha_convergence.png")):
        shutil.copyfile(os.path.join(figure_run, "alpha_convergence.png"), figure)
    alpha = alpha_summary(figure_run, _shown_path(figure), out)

    import platform

    import torch
    from demo.pretrain import file_sha256
    failures = [r for r in records if r["status"].startswith("failed")]
    diverged = [os.path.relpath(r["out"], out) for r in records if r["status"] == "diverged"]
    finite = [s for s in run_seconds.values() if s == s]
    report = {
        "meta": {"quick": args.quick, "date": time.strftime("%Y-%m-%d"), "tasks": list(tasks),
                 "shots": list(shots_list), "seeds": list(seeds), "protocols": list(protocols),
                 "methods": {m.key: m.label for m in METHODS},
                 "configs": {m.key: f"configs/trainers/{m.trainer}/{m.cfg}.yaml"
                             + (f" + configs/trainers/DPLSearch/{m.search_cfg}.yaml" if m.search_cfg else "")
                             for m in METHODS},
                 "clip_file": _shown_path(clip), "clip_sha256": file_sha256(clip),
                 "clip_variant": args.variant, "torch": torch.__version__,
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                 "jobs": jobs, "threads": args.threads, "wall_seconds": total_wall,
                 "run_seconds": sum(finite), "runs": len(runs),
                 "runs_finished": sum(is_done(r) for r in runs),
                 "diverged": diverged, "failed": [f"{os.path.relpath(r['out'], out)}: {r['status']}" for r in failures]},
        "tables": tables,
        "searched_lengths": lengths,
        "alpha": alpha,
        "run_seconds": run_seconds,
    }
    report["claims"] = claims(tables, lengths, res, alpha)
    atomic_write_json(json_path, report)
    md_path = os.path.splitext(json_path)[0] + ".md"
    atomic_write_text(md_path, markdown(report))
    print(f"{report['meta']['runs_finished']}/{len(runs)} runs finished; wall time {total_wall / 60:.1f} min "
          f"(this call {wall / 60:.1f} min). Tables: {md_path}  JSON: {json_path}")
    if failures:
        print(f"{len(failures)} run(s) failed; their console.txt says why. Re-run to retry them.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
