"""Pictures of a search run: softmax(α) heatmaps (paper Fig. 2a/b), convergence curves
(Fig. 2c) and the α evolution across epochs and runs (Fig. 4). Input: ``alpha_history.json``.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dpl.io import atomic_open  # noqa: E402

BRANCHES = ("text", "vision")
HEATMAP = "alpha_heatmap.png"
CONVERGENCE = "alpha_convergence.png"


def read_history(path: str) -> list:
    with open(path, encoding="utf-8") as fh:
        records = json.load(fh)
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} holds no epochs; run the search for at least one epoch.")
    return records


def read_options(run_dir: str) -> dict:
    """Option lists from the run's artifact if present, else None per branch."""
    art = os.path.join(run_dir, "prompt_config.json")
    if os.path.isfile(art):
        with open(art, encoding="utf-8") as fh:
            data = json.load(fh)
        return {b: data[b]["options"] for b in BRANCHES}
    return {b: None for b in BRANCHES}


def _heatmap(ax, probs, options, title):
    im = ax.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    n_blocks, n_opts = len(probs), len(probs[0])
    ax.set_xticks(range(n_opts))
    ax.set_xticklabels([str(o) for o in options] if options else range(n_opts))
    ax.set_yticks(range(n_blocks))
    ax.set_yticklabels([str(i + 1) for i in range(n_blocks)])
    ax.set_xlabel("context length")
    ax.set_ylabel("block")
    ax.set_title(title, fontsize=9)
    return im


def save_figure(fig, path: str) -> str:
    """Write ``fig`` as a PNG atomically, then close it; returns ``path``."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_heatmaps(records: list, options: dict, path: str, epoch: Optional[int] = None) -> str:
    """Blocks × options heatmaps of softmax(α) for both branches at ``epoch`` (default: last)."""
    rec = records[-1] if epoch is None else _record_at(records, epoch)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    for ax, branch in zip(axes, BRANCHES):
        im = _heatmap(ax, rec[branch]["probs"], options.get(branch),
                      f"{branch} — epoch {rec['epoch']} — lengths {rec[branch]['lengths']}")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="softmax(α)")
    return save_figure(fig, path)


def plot_convergence(records: list, path: str) -> str:
    """Per epoch: number of single-dominant blocks and α change (TV distance, argmax changes)."""
    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for branch, style in zip(BRANCHES, ("-", ":")):
        axes[0].plot(epochs, [r[branch]["num_dominant"] for r in records], style, color="tab:blue",
                     label=f"# dominant ({branch})")
        axes[0].plot(epochs, [r[branch]["argmax_changes"] for r in records], style,
                     color="tab:orange", label=f"# argmax changes ({branch})")
        axes[1].plot(epochs, [r[branch]["tv_distance"] for r in records], style, color="tab:red",
                     label=f"TV distance ({branch})")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("blocks")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("mean TV distance to previous epoch")
    axes[1].legend(fontsize=7)
    return save_figure(fig, path)


def plot_search_run(run_dir: str) -> list:
    """Write ``alpha_heatmap.png`` and ``alpha_convergence.png`` into a search output dir."""
    records = read_history(os.path.join(run_dir, "alpha_history.json"))
    options = read_options(run_dir)
    return [
        plot_heatmaps(records, options, os.path.join(run_dir, HEATMAP)),
        plot_convergence(records, os.path.join(run_dir, CONVERGENCE)),
    ]


def _record_at(records: list, epoch: int) -> dict:
    for rec in records:
        if rec["epoch"] == epoch:
            return rec
    have = [r["epoch"] for r in records]
    raise ValueError(f"epoch {epoch} is not in the history (epochs {have[0]}..{have[-1]}).")


def evolution_figure(runs: Sequence[tuple], epochs: Sequence[int], branch: str = "text"):
    """softmax(α) heatmaps at chosen epochs side by side, one row per run (paper Fig. 4).

    runs: (label, records, options) triples; epochs: epochs to show (clipped to each run's last;
    <= 0 = the first recorded epoch). Returns the figure: len(runs) × len(epochs) heatmap panels
    plus one colorbar.
    """
    n_rows, n_cols = len(runs), len(epochs)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols + 1, 2.6 * n_rows),
                             squeeze=False)
    im = None
    for row, (label, records, options) in enumerate(runs):
        last = records[-1]["epoch"]
        for col, epoch in enumerate(epochs):
            rec = _record_at(records, min(epoch, last)) if epoch > 0 else records[0]
            im = _heatmap(axes[row][col], rec[branch]["probs"], options,
                          f"{label} — {branch} — epoch {rec['epoch']}")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="softmax(α)")
    return fig


def plot_evolution(runs: Sequence[tuple], epochs: Sequence[int], path: str,
                   branch: str = "text") -> str:
    """``evolution_figure`` saved as a PNG at ``path``; returns ``path``."""
    return save_figure(evolution_figure(runs, epochs, branch), path)
