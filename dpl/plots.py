"""Pictures of a search run: softmax(α) heatmaps (paper Fig. 2a/b), convergence curves
(Fig. 2c) and the α evolution across epochs and runs (Fig. 4). Input: ``alpha_history.json``.

Every figure uses matplotlib's constrained layout, one style (``STYLE``) and figure sizes that grow
with the number of blocks, options and panels, so no two texts overlap even at 12 blocks, 80 epochs
and several runs (``tests/test_figures.py`` checks the rendered text boxes). Builders named
``*_figure`` return the figure; ``plot_*`` save it as a PNG and return the path.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dpl.io import atomic_open  # noqa: E402

BRANCHES = ("text", "vision")
ENCODER = {"text": "text encoder", "vision": "image encoder"}
HEATMAP = "alpha_heatmap.png"
CONVERGENCE = "alpha_convergence.png"
SCALES = ("auto", "unit", "data")
CHOSEN_COLOR = "tab:orange"
CHOSEN_GID = "chosen"  # gid of the outline marking the chosen option of a block
# One readable style for every figure of the project (sizes in points at print size).
STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "legend.fontsize": 8, "figure.titlesize": 11,
         "figure.labelsize": 9, "figure.dpi": 100}


def styled(builder):
    """Run a figure builder under ``STYLE`` (fonts are fixed when each text is created)."""
    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return builder(*args, **kwargs)
    return wrapper


def save_figure(fig, path: str) -> str:
    """Write ``fig`` as a PNG atomically, then close it; returns ``path``.

    An OSError names ``path`` (not the temporary file written first)."""
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=150)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), path) from err
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
def read_history(path: str) -> list:
    """The per-epoch records of ``alpha_history.json`` (a ValueError names ``path``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            records = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the file is truncated or was edited; "
                         "restore it, or re-run the search into a fresh output directory."
                         ) from None
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} holds no epochs; run the search for at least one epoch.")
    return records


@dataclass(frozen=True)
class RunInfo:
    """What a figure says about a search run."""
    label: str        # e.g. "Caltech101 · 16 shots · seed 1"
    short: str        # e.g. "Caltech101" (row headers)
    options: dict     # branch -> option lengths, or None when the run has no artifact


def read_run(run_dir: str) -> RunInfo:
    """Name and option lists of a run: from its ``prompt_config.json``, else from its path."""
    art = os.path.join(run_dir, "prompt_config.json")
    if not os.path.isfile(art):
        return _path_info(run_dir)
    try:
        with open(art, encoding="utf-8") as fh:
            data = json.load(fh)
        options = {b: [int(o) for o in data[b]["options"]] for b in BRANCHES}
        prov = data.get("provenance") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{art} is not a readable prompt configuration ({type(err).__name__}: "
                         f"{err}); restore it, or move it away to plot without option lengths."
                         ) from None
    path_info = _path_info(run_dir)
    dataset = prov.get("dataset") or path_info.short
    parts = [dataset]
    if prov.get("num_shots") is not None:
        parts.append(f"{prov['num_shots']} shots")
    if prov.get("seed") is not None:
        parts.append(f"seed {prov['seed']}")
    return RunInfo(" · ".join(parts), dataset, options)


def _path_info(run_dir: str) -> RunInfo:
    """<dataset>/shots_K/seedS (the scripts' layout) -> "dataset · K shots · seed S"."""
    parts = os.path.abspath(run_dir).split(os.sep)
    if len(parts) >= 3 and parts[-2].startswith("shots_") and parts[-1].startswith("seed"):
        label = f"{parts[-3]} · {parts[-2][len('shots_'):]} shots · seed {parts[-1][len('seed'):]}"
        return RunInfo(label, parts[-3], {b: None for b in BRANCHES})
    return RunInfo(parts[-1], parts[-1], {b: None for b in BRANCHES})


def distinct_labels(infos: Sequence[RunInfo]) -> list:
    """Short labels, the full label where two runs would share one."""
    shorts = [i.short for i in infos]
    return [i.short if shorts.count(i.short) == 1 else i.label for i in infos]


def record_at(records: list, epoch: int) -> dict:
    for rec in records:
        if rec["epoch"] == epoch:
            return rec
    have = [r["epoch"] for r in records]
    raise ValueError(f"epoch {epoch} is not in the history (epochs {have[0]}..{have[-1]}).")


# ----------------------------------------------------------------------------------------------
# One heatmap panel
# ----------------------------------------------------------------------------------------------
def color_norm(prob_tables: Sequence, scale: str) -> Normalize:
    """The colour scale of softmax(α) panels.

    unit: 0..1 (comparable across runs); data: fitted to the shown values (early or short searches,
    all ≈ 1/options, stay readable); auto: unit when some block has a clear preference (p ≥ 0.5),
    else data.
    """
    if scale not in SCALES:
        raise ValueError(f"colour scale {scale!r} is not one of {SCALES}.")
    values = np.concatenate([np.asarray(p, dtype=float).ravel() for p in prob_tables if len(p)])
    if scale == "unit" or (scale == "auto" and values.max() >= 0.5):
        return Normalize(0.0, 1.0)
    low, high = float(values.min()), float(values.max())
    pad = max(1e-3, 0.05 * (high - low))
    return Normalize(low - pad, high + pad)


def chosen_columns(probs: np.ndarray, options: Optional[Sequence[int]],
                   lengths: Sequence[int]) -> list:
    """Column of the chosen option per block: the record's length when the options are known,
    else argmax softmax(α) (first maximum, as ``derive_lengths``)."""
    if options and all(n in options for n in lengths):
        return [list(options).index(n) for n in lengths]
    return [int(row.argmax()) for row in probs]


def heatmap_panel(ax, rec: dict, options: Optional[Sequence[int]], norm: Normalize,
                  values: bool = False):
    """Blocks × options softmax(α) of one branch record on ``ax``, chosen option outlined.

    rec: a history record of one branch (``probs`` (blocks, options), ``lengths``). Tick labels
    are the option lengths (option numbers when unknown). Returns the image (for a colour bar).
    """
    probs = np.asarray(rec["probs"], dtype=float).reshape(len(rec["probs"]), -1)
    n_blocks, n_opts = probs.shape
    im = ax.imshow(probs, cmap="Blues", norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_opts), [str(o) for o in options] if options else range(1, n_opts + 1))
    ax.set_yticks(range(n_blocks), range(1, n_blocks + 1))
    ax.tick_params(length=2)
    for block, col in enumerate(chosen_columns(probs, options, rec["lengths"])):
        ax.add_patch(Rectangle((col - 0.5, block - 0.5), 1, 1, fill=False, linewidth=1.6,
                               edgecolor=CHOSEN_COLOR, gid=CHOSEN_GID))
    if values:
        for (block, col), p in np.ndenumerate(probs):
            ax.text(col, block, f"{p:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if norm(p) > 0.6 else "black")
    return im


def option_axis_label(options) -> str:
    """x label of heatmaps: the option lengths come from the run's prompt_config.json."""
    return "prompt length (tokens)" if options else "option (lengths unknown)"


def chosen_legend(fig) -> None:
    fig.legend(handles=[Patch(fill=False, edgecolor=CHOSEN_COLOR, linewidth=1.6,
                              label="chosen length (argmax α)")], loc="outside lower center")


# ----------------------------------------------------------------------------------------------
# Figures of one run
# ----------------------------------------------------------------------------------------------
@styled
def heatmap_figure(records: list, options: dict, epoch: Optional[int] = None, title: str = "",
                   scale: str = "auto", values: bool = True):
    """Blocks × options heatmaps of softmax(α) of both encoders at ``epoch`` (default: last).

    options: branch -> option lengths (or None). title: the run, e.g. ``RunInfo.label``.
    values: write each probability into its cell.
    """
    rec = records[-1] if epoch is None else record_at(records, epoch)
    shapes = [np.asarray(rec[b]["probs"]).shape for b in BRANCHES]
    n_blocks = max(s[0] for s in shapes)
    n_opts = max(s[1] if len(s) > 1 else 1 for s in shapes)
    fig, axes = plt.subplots(1, 2, layout="constrained",
                             figsize=(2 * (0.55 * n_opts + 0.9) + 1.2, 0.34 * n_blocks + 2.0))
    norm = color_norm([rec[b]["probs"] for b in BRANCHES], scale)
    im = None
    for ax, branch in zip(axes, BRANCHES):
        if not rec[branch]["probs"]:
            ax.set_axis_off()
            ax.set_title(f"{ENCODER[branch]}: no searched blocks")
            continue
        im = heatmap_panel(ax, rec[branch], options.get(branch), norm, values)
        ax.set_title(f"{ENCODER[branch]}: {sum(rec[branch]['lengths'])} tokens")
        ax.set_xlabel(option_axis_label(options.get(branch)))
        ax.set_ylabel("block")
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label=_scale_label(norm))
    chosen_legend(fig)
    head = f"{title} — " if title else ""
    fig.suptitle(f"{head}softmax(α) at epoch {rec['epoch']} of {records[-1]['epoch']}")
    return fig


def _scale_label(norm: Normalize) -> str:
    fitted = (norm.vmin, norm.vmax) != (0.0, 1.0)
    return "softmax(α)" + (" (scale fitted to the data)" if fitted else "")


@styled
def convergence_figure(records: list, title: str = ""):
    """Per epoch: blocks with one dominant option, argmax changes, and the TV distance of softmax(α)
    to the previous epoch; solid = text encoder, dotted = image encoder."""
    epochs = [r["epoch"] for r in records]
    fig, (blocks_ax, tv_ax) = plt.subplots(1, 2, layout="constrained", figsize=(9, 4))
    styles = {"text": "-", "vision": ":"}
    marker = "o" if len(epochs) <= 10 else None  # a short history is a few points, not lines
    for branch in BRANCHES:
        line = {"linestyle": styles[branch], "marker": marker, "markersize": 3}
        blocks_ax.plot(epochs, [r[branch]["num_dominant"] for r in records], color="tab:blue",
                       **line)
        blocks_ax.plot(epochs, [r[branch]["argmax_changes"] for r in records], color="tab:orange",
                       **line)
        tv_ax.plot(epochs, [r[branch]["tv_distance"] for r in records], color="tab:red", **line)
    max_blocks = max(len(records[0][b]["probs"]) for b in BRANCHES)
    blocks_ax.set_ylim(-0.5, max_blocks + 0.5)
    blocks_ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    blocks_ax.set_ylabel("blocks")
    blocks_ax.set_title("dominant blocks and changed choices")
    tv_ax.set_ylim(bottom=0.0)
    tv_ax.set_ylabel("mean TV distance to the previous epoch")
    tv_ax.set_title("change of softmax(α)")
    for ax in (blocks_ax, tv_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        ax.set_xlabel("epoch")
    handles = [Line2D([], [], color="tab:blue", label="blocks with a dominant option"),
               Line2D([], [], color="tab:orange", label="blocks whose choice changed"),
               Line2D([], [], color="tab:red", label="TV distance"),
               Line2D([], [], color="black", linestyle=styles["text"], label=ENCODER["text"]),
               Line2D([], [], color="black", linestyle=styles["vision"], label=ENCODER["vision"])]
    fig.legend(handles=handles, loc="outside lower center", ncol=5)
    head = f"{title} — " if title else ""
    fig.suptitle(f"{head}α convergence over {len(epochs)} epoch{'s' if len(epochs) > 1 else ''}")
    return fig


def plot_heatmaps(records: list, options: dict, path: str, epoch: Optional[int] = None,
                  title: str = "", scale: str = "auto", values: bool = True) -> str:
    """``heatmap_figure`` saved as a PNG at ``path``; returns ``path``."""
    return save_figure(heatmap_figure(records, options, epoch, title, scale, values), path)


def plot_convergence(records: list, path: str, title: str = "") -> str:
    """``convergence_figure`` saved as a PNG at ``path``; returns ``path``."""
    return save_figure(convergence_figure(records, title), path)


def plot_search_run(run_dir: str) -> list:
    """Write ``alpha_heatmap.png`` and ``alpha_convergence.png`` into a search output dir."""
    records = read_history(os.path.join(run_dir, "alpha_history.json"))
    info = read_run(run_dir)
    return [
        plot_heatmaps(records, info.options, os.path.join(run_dir, HEATMAP), title=info.label),
        plot_convergence(records, os.path.join(run_dir, CONVERGENCE), title=info.label),
    ]


# ----------------------------------------------------------------------------------------------
# Several runs
# ----------------------------------------------------------------------------------------------
def _shown_record(records: list, epoch: int) -> dict:
    """The record of ``epoch``, clipped to the run's last (<= 0: the first recorded epoch)."""
    return record_at(records, min(epoch, records[-1]["epoch"])) if epoch > 0 else records[0]


@styled
def evolution_figure(runs: Sequence[tuple], epochs: Sequence[int], branch: str = "text",
                     scale: str = "unit"):
    """softmax(α) heatmaps at chosen epochs, one row per run (paper Fig. 4).

    runs: (label, records, options) triples; epochs: epochs to show (clipped to each run's last;
    <= 0 = the first recorded epoch). Row headers name the runs, column headers the epochs (a panel
    that shows another epoch than its column's names it); one shared colour bar.
    """
    shown = [[_shown_record(records, e) for e in epochs] for _, records, _ in runs]
    tables = [rec[branch]["probs"] for row in shown for rec in row]
    shapes = {np.asarray(t).shape for t in tables}
    n_blocks = max(s[0] for s in shapes)
    n_opts = max(s[1] for s in shapes)
    n_rows, n_cols = len(runs), len(epochs)
    # Panels share axes (ticks on outer panels only) when all runs have the same blocks and options.
    same = len(shapes) == 1 and all(run[2] == runs[0][2] for run in runs)
    fig, axes = plt.subplots(n_rows, n_cols, layout="constrained", squeeze=False,
                             sharex=same, sharey=same,
                             figsize=(n_cols * max(1.9, 0.3 * n_opts + 0.5) + 1.8,
                                      n_rows * (0.19 * n_blocks + 0.75) + 1.4))
    norm = color_norm(tables, scale)
    im = None
    for row, (label, _, options) in enumerate(runs):
        for col, rec in enumerate(shown[row]):
            ax = axes[row][col]
            im = heatmap_panel(ax, rec[branch], options, norm)
            header = shown[0][col]["epoch"]
            if row == 0 or rec["epoch"] != header:
                clipped = 0 < epochs[col] != rec["epoch"]
                ax.set_title(f"epoch {rec['epoch']}" + (" (last)" if clipped else ""))
            if same and row < n_rows - 1:
                ax.tick_params(labelbottom=False)
            if same and col > 0:
                ax.tick_params(labelleft=False)
            if not same or row == n_rows - 1:
                ax.set_xlabel(option_axis_label(options))
        axes[row][0].set_ylabel(f"{label}\nblock")
    fig.colorbar(im, ax=axes, shrink=min(1.0, 0.3 + 0.2 * n_rows), label=_scale_label(norm))
    chosen_legend(fig)
    fig.suptitle(f"softmax(α) of the {ENCODER[branch]} across epochs")
    return fig


def plot_evolution(runs: Sequence[tuple], epochs: Sequence[int], path: str,
                   branch: str = "text", scale: str = "unit") -> str:
    """``evolution_figure`` saved as a PNG at ``path``; returns ``path``."""
    return save_figure(evolution_figure(runs, epochs, branch, scale), path)
