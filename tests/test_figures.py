"""Figures a reader can put in a paper: rendered at paper scale (12 blocks x 7 options x 80 epochs,
3 runs), no two visible texts overlap or leave the canvas, and each figure says what it shows.

Every figure is taken from the tools' own entry points (``plot_alpha.main``,
``complexity.plot_rows``, ``gradcam.render``) just before it is saved, so the layout tested is the
one users get.
"""
import itertools
import os
from contextlib import contextmanager

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from PIL import Image

import dpl.plots
from dpl.artifact import branch_summary, build_artifact, save_artifact
from dpl.clip_loader import load_clip
from dpl.cost import ForwardFlops
from dpl.io import atomic_write_json
from dpl.model import build_fixed_model
from dpl.search import AlphaHistory
from tools import complexity, gradcam, plot_alpha

matplotlib.use("Agg")

OPTIONS = [0, 2, 4, 6, 8, 10, 12]
BLOCKS, EPOCHS = 12, 80
DATASETS = ("caltech101", "dtd", "eurosat")
TOLERANCE_PX = 1.0


# ----------------------------------------------------------------------------------------------
# Text boxes of a rendered figure
# ----------------------------------------------------------------------------------------------
def _undrawn_tick_labels(fig) -> set:
    """ids of tick labels matplotlib keeps but does not draw: ticks outside the view limits and
    the ticks of axes that are switched off."""
    hidden = set()
    for ax in fig.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            low, high = sorted(limits)
            eps = 1e-9 * max(1.0, abs(high - low))
            drawn = ax.axison and axis.get_visible()
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                loc = tick.get_loc()
                if not drawn or loc is None or not low - eps <= loc <= high + eps:
                    hidden.update((id(tick.label1), id(tick.label2)))
            if not ax.axison:
                hidden.update((id(axis.label), id(axis.offsetText)))
    return hidden


def text_boxes(fig) -> list:
    """(text, window extent) of every visible, non-empty text of the drawn figure: titles, axis
    labels, tick labels, annotations, legend and colour-bar texts."""
    canvas = FigureCanvasAgg(fig)  # a saved figure is closed: draw it on a fresh Agg canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    hidden = _undrawn_tick_labels(fig)
    boxes = []
    for text in fig.findobj(Text):
        if id(text) in hidden or not text.get_visible() or not text.get_text().strip():
            continue
        boxes.append((text.get_text(), text.get_window_extent(renderer)))
    return boxes


def assert_readable(fig) -> list:
    """No two text boxes overlap by more than 1 px each way, and none leaves the canvas.
    Returns the texts (for further checks)."""
    boxes = text_boxes(fig)
    canvas = fig.bbox
    inside = canvas.padded(TOLERANCE_PX)
    outside = [t for t, b in boxes if b.x0 < inside.x0 or b.y0 < inside.y0
               or b.x1 > inside.x1 or b.y1 > inside.y1]
    assert not outside, f"texts cut off at the figure edge: {outside}"
    overlaps = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
                if min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) > TOLERANCE_PX
                and min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > TOLERANCE_PX]
    assert not overlaps, f"{len(overlaps)} overlapping text pairs, e.g. {overlaps[:5]}"
    return [t for t, _ in boxes]


@pytest.fixture
def saved_figures(monkeypatch):
    """Figures passed to ``save_figure`` (by any tool), in order; they are still saved."""
    figures = []
    original = dpl.plots.save_figure

    def spy(fig, path):
        figures.append(fig)
        return original(fig, path)

    for module in (dpl.plots, complexity):
        if hasattr(module, "save_figure"):
            monkeypatch.setattr(module, "save_figure", spy)
    return figures


def test_readability_check_sees_overlaps_and_cut_off_texts():
    """The check itself: overlapping texts and a text leaving the canvas fail, apart ones pass."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 2))
    fig.text(0.1, 0.5, "left")
    fig.text(0.6, 0.5, "right")
    assert assert_readable(fig) == ["left", "right"]
    fig.text(0.65, 0.52, "over")
    with pytest.raises(AssertionError, match="1 overlapping text pairs"):
        assert_readable(fig)
    fig.texts[-1].set_position((0.9, 0.2))
    fig.texts[-1].set_text("beyond the right edge")
    with pytest.raises(AssertionError, match="cut off at the figure edge"):
        assert_readable(fig)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Search runs at paper scale
# ----------------------------------------------------------------------------------------------
@contextmanager
def single_thread():
    """Many tiny torch ops: on a busy machine, threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_search_run(run_dir, dataset: str, seed: int, epochs: int = EPOCHS,
                     drift: float = 0.08) -> list:
    """A DPLSearch-like run: alpha_history.json (α drifting from 0 towards one option per block)
    and its prompt_config.json. Returns the records."""
    gen = torch.Generator().manual_seed(seed)
    history = AlphaHistory({"text": OPTIONS, "vision": OPTIONS}, 0.5)
    target = {b: torch.randn(BLOCKS, len(OPTIONS), generator=gen) for b in ("text", "vision")}
    alphas = {}
    for epoch in range(1, epochs + 1):
        alphas = {b: drift * epoch * t + 0.1 * torch.randn(BLOCKS, len(OPTIONS), generator=gen)
                  for b, t in target.items()}
        history.add(epoch, alphas)
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(os.path.join(run_dir, "alpha_history.json"), history.records)
    branches = {b: branch_summary(a, OPTIONS, 512, 0.5) for b, a in alphas.items()}
    save_artifact(os.path.join(run_dir, "prompt_config.json"),
                  build_artifact("ViT-B/16", branches["text"], branches["vision"],
                                 {"dataset": dataset, "num_shots": 16, "seed": 1}))
    return history.records


@pytest.fixture(scope="module")
def search_runs(tmp_path_factory) -> list:
    """(run dir, records) of three searches; the first stopped early, after 60 epochs."""
    root = tmp_path_factory.mktemp("searches")
    runs = []
    with single_thread():
        for seed, dataset in enumerate(DATASETS):
            run = root / dataset / "shots_16" / "seed1"
            runs.append((run, write_search_run(run, dataset, seed, epochs=EPOCHS if seed else 60)))
    return runs


def heatmap_axes(fig) -> list:
    """The heatmap panels (a colour bar holds no image)."""
    return [ax for ax in fig.axes if ax.images]


def outlined_lengths(ax) -> list:
    """The option length under each block's outline, read from the panel's x tick labels."""
    labels = {round(loc): lab.get_text() for loc, lab in zip(ax.get_xticks(), ax.get_xticklabels())}
    cells = sorted((round(p.get_y() + 0.5), round(p.get_x() + 0.5))
                   for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill())
    return [int(labels[col]) for _, col in cells]


def test_heatmap_and_convergence_of_a_12_block_80_epoch_search(search_runs, saved_figures):
    run, records = search_runs[1]
    plot_alpha.main([str(run)])
    heatmap, convergence = saved_figures

    texts = assert_readable(heatmap)
    assert "dtd · 16 shots · seed 1" in heatmap.get_suptitle()
    assert "epoch 80" in heatmap.get_suptitle()
    panels = heatmap_axes(heatmap)
    assert len(panels) == 2
    for ax, branch in zip(panels, ("text", "vision")):
        assert outlined_lengths(ax) == records[-1][branch]["lengths"]  # the chosen lengths, marked
    assert any("chosen" in t for t in texts)                            # ... and explained

    assert_readable(convergence)
    assert "dtd · 16 shots" in convergence.get_suptitle()
    assert_whole_number_ticks(convergence)
    assert convergence.legends, "the line styles and colours need a legend"


def assert_whole_number_ticks(convergence) -> None:
    """Epochs (both panels) and block counts (left panel) are ticked at whole numbers only."""
    axes = [ax.xaxis for ax in convergence.axes] + [convergence.axes[0].yaxis]
    for axis in axes:
        low, high = sorted(axis.get_view_interval())
        shown = [t for t in axis.get_majorticklocs() if low <= t <= high]
        assert shown and all(float(t).is_integer() for t in shown), shown


def test_flat_alpha_gets_a_fitted_scale_and_values(tmp_path, saved_figures):
    run = tmp_path / "dtd" / "shots_16" / "seed1"
    write_search_run(run, "DescribableTextures", seed=1, epochs=1, drift=0.01)  # all ≈ 1/7
    plot_alpha.main([str(run)])
    heatmap, convergence = saved_figures
    assert_readable(heatmap)
    norm = heatmap_axes(heatmap)[0].images[0].norm
    assert 0.05 < norm.vmin and norm.vmax < 0.3        # not one flat colour on 0..1
    values = [t.get_text() for ax in heatmap_axes(heatmap) for t in ax.texts]
    assert len(values) == 2 * BLOCKS * len(OPTIONS) and all(v.startswith("0.1") for v in values)
    assert_readable(convergence)
    assert_whole_number_ticks(convergence)  # one epoch: a tick at 1, not 0.5 0.6 ... 1.5


def test_evolution_of_3_runs_at_4_epochs(search_runs, tmp_path, saved_figures):
    runs = [run for run, _ in search_runs]
    plot_alpha.main(["--evolution", *map(str, runs), "--epochs", "1", "10", "40", "80",
                     "--out", str(tmp_path / "evolution.png")])
    (fig,) = saved_figures
    assert_readable(fig)
    panels = heatmap_axes(fig)
    assert len(panels) == 3 * 4
    titles = [ax.get_title() for ax in panels]
    assert titles[:4] == ["epoch 1", "epoch 10", "epoch 40", "epoch 60 (last)"]  # column headers
    assert titles[4:7] == ["", "", ""] and titles[7] == "epoch 80"  # only where it differs
    assert [panels[4 * r].get_ylabel().split("\n")[0] for r in range(3)] == list(DATASETS)
    assert all(sum(not p.get_fill() for p in ax.patches) == BLOCKS for ax in panels)  # outlines
    assert "text encoder" in fig.get_suptitle()
    with Image.open(tmp_path / "evolution.png") as png:
        assert png.width > 1000


# ----------------------------------------------------------------------------------------------
# Cost and Grad-CAM figures
# ----------------------------------------------------------------------------------------------
def test_complexity_figure(tmp_path, saved_figures):
    reference = ForwardFlops(35_130_000_000, 5_960_000_000)

    def row(label, kind, params, image, text):
        extra = ForwardFlops(image, text)
        return complexity.Row(label, kind, params, ForwardFlops(reference.image + image,
                                                                reference.text + text), extra)

    rows = [row("frozen CLIP", "clip", 0, 0, 0)]
    rows += [row(f"{d} seed{s}", "dpl", 27_648 + 512 * s, 53_000_000 * s, 65_000_000)
             for d in DATASETS for s in (1, 2, 3)]
    rows += [row("uniform 2 x 9", "dpl", 23_040, 53_360_000, 21_710_000),
             row("CoOp (16 ctx)", "baseline", 8_192, 0, 0),
             row("IVLP (2+2 ctx, depth 9/9)", "baseline", 23_040, 368_930_000, 0),
             row("MaPLe (2 ctx, depth 9)", "baseline", 3_555_072, 383_090_000, 0),
             row("CoOp run", "run", 0, 0, 0)]
    complexity.plot_rows(rows, reference, str(tmp_path / "cost.png"))
    (fig,) = saved_figures
    texts = assert_readable(fig)
    assert {"DPL configuration", "baseline", "trained run"} <= set(texts)  # colours explained
    params_ax = fig.axes[0]
    assert params_ax.get_xscale() == "log" and "log" in params_ax.get_xlabel()
    low = params_ax.get_xlim()[0]
    assert np.log10(low).is_integer() and low <= 8_192 < 10 * low  # the decade below the smallest
    assert all(t.get_fontsize() >= 8 for ax in fig.axes for t in ax.texts)  # readable values
    assert fig.get_suptitle()


@pytest.fixture(scope="module")
def tiny_models(tiny_clip_path):
    clip = load_clip("tiny", tiny_clip_path, config="openai")
    torch.manual_seed(0)
    return [gradcam.Column(label, build_fixed_model(clip, ["x"], text, vision).eval())
            for label, text, vision in (("CLIP", [0, 0, 0], [0, 0]),
                                        ("CoOp-like", [4, 0, 0], [0, 0]),
                                        ("MaPLe (2 ctx, depth 2)", [2, 2, 0], [2, 2]),
                                        ("DPL", [2, 0, 1], [1, 3]))]


def test_gradcam_figure(tmp_path, tiny_models, saved_figures):
    images = []
    for i, name in enumerate(("Boeing 737-800", "SR-20", "de Havilland DHC-6 Twin Otter")):
        images.append((str(tmp_path / f"{i}.png"), name))
        pixels = np.random.default_rng(i).integers(0, 255, (40, 48, 3), np.uint8)
        Image.fromarray(pixels).save(images[-1][0])
    with single_thread():
        gradcam.render(tiny_models, images, str(tmp_path / "cam.png"), block=-1)
    (fig,) = saved_figures
    assert_readable(fig)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels[:5]] == ["input", "CLIP", "CoOp-like",
                                                     "MaPLe (2 ctx,\ndepth 2)", "DPL"]
    assert panels[5].get_ylabel() == "SR-20"                       # row header: the class
    colorbars = [ax for ax in fig.axes if not ax.images]
    assert len(colorbars) == 1 and "Grad-CAM" in colorbars[0].get_ylabel()
    assert "image block 1 (blocks 0–1)" in fig.get_suptitle()          # tiny CLIP: 2 image blocks


def test_small_search_figures_are_readable_too():
    """A 2-epoch search on a model with 3 text and 2 image blocks and 4 options (the tiny CLIP)."""
    options = [0, 2, 4, 6]
    history = AlphaHistory({"text": options, "vision": options}, 0.5)
    gen = torch.Generator().manual_seed(0)
    with single_thread():
        for epoch in (1, 2):
            history.add(epoch, {"text": 1e-2 * torch.randn(3, 4, generator=gen),
                                "vision": 1e-2 * torch.randn(2, 4, generator=gen)})
    records, branch_options = history.records, {"text": options, "vision": options}
    heatmap = dpl.plots.heatmap_figure(records, branch_options, title="dtd · 1 shots · seed 1")
    assert_readable(heatmap)
    assert [outlined_lengths(ax) for ax in heatmap_axes(heatmap)] == \
        [records[-1]["text"]["lengths"], records[-1]["vision"]["lengths"]]
    convergence = dpl.plots.convergence_figure(records, "dtd")
    assert_readable(convergence)
    assert_whole_number_ticks(convergence)
    for branch in ("text", "vision"):
        runs = [("dtd", records, options), ("x", records, None)]  # one run without options
        assert_readable(dpl.plots.evolution_figure(runs, [1, 2], branch))
