#!/usr/bin/env python
"""Trainable parameters and forward FLOPs of prompt configurations vs frozen CLIP (paper Fig. 5).

    # searched configurations, one row per artifact, with the manual baselines and a bar plot
    python tools/complexity.py --random-init ViT-B/16 \\
        --artifacts output/fewshot/DPLSearch/vit_b16/*/shots_16/seed1/prompt_config.json \\
        --baseline coop --baseline ivlp --baseline maple --plot complexity.png
    # manual configurations on a real checkpoint
    python tools/complexity.py --backbone ViT-B/16 --clip-checkpoint /path/to/ViT-B-16.pt \\
        --text-lengths 6 6 6 0 0 6 6 6 6 4 4 4 --vision-lengths 0 0 0 0 6 0 6 0 0 6 0 6 --uniform 2 9
    # a run's own model (any trainer), rebuilt like gradcam.py's --run
    python tools/complexity.py --backbone ViT-B/16 --run MaPLe "--root data --trainer MaPLe ..."

Every row is a real model: DPL configurations via ``dpl.model.build_fixed_model``; ``--baseline
NAME [CONFIG_FILE]`` (coop / ivlp / maple, their TRAINER.* keys, ``--opts KEY VALUE ...`` on top)
via that trainer's own ``build_baseline`` (``dpl.baselines``); ``--run`` via the run's trainer.
Parameters: those with requires_grad. FLOPs: FlopCounterMode on the module graph, per image and
per class prompt; "extra" is relative to frozen CLIP of the same backbone. Everything runs on the
``meta`` device (FLOPs do not depend on weights), so even ViT-L counts in seconds.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from dpl.cost import (PLACEHOLDER_CLASS, ForwardFlops, clip_flops, dpl_cost,  # noqa: E402
                      image_input, model_flops, random_init_clip, total_parameters,
                      trainable_parameters)
from dpl.plots import save_figure, styled  # noqa: E402  (selects the Agg backend)
from dpl.errors import UserError, exit_error, os_error_line, output_problem  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402,I100
from matplotlib.patches import Patch  # noqa: E402,I100

PROG = "complexity.py"
BASELINES = {"coop": "CoOp", "ivlp": "IVLP", "maple": "MaPLe"}


@dataclass
class Row:
    """One configuration of the table."""
    label: str
    kind: str                       # "clip" / "dpl" / "baseline" / "run"
    params: int                     # trainable parameters
    flops: ForwardFlops             # forward FLOPs per image / per class prompt
    extra: ForwardFlops             # flops - frozen CLIP's


# ----------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------
def load_backbone(backbone: str, checkpoint: str, random_init: str, config: str = ""):
    """Frozen CLIP on the meta device: random-init architecture, or a local checkpoint's."""
    if random_init:
        return random_init_clip(random_init, device="meta")
    from dpl.clip_loader import load_clip

    return load_clip(backbone, checkpoint, precision="fp32", config=config).to("meta")


def dpl_row(label: str, clip_model, text_lengths, vision_lengths, reference: ForwardFlops) -> Row:
    cost = dpl_cost(clip_model, text_lengths, vision_lengths, reference)
    return Row(label, "dpl", cost.params, cost.flops, cost.extra)


def artifact_rows(paths: Sequence[str], labels: Optional[Sequence[str]], clip_model, dims,
                  reference: ForwardFlops) -> List[Row]:
    from dpl.artifact import lengths_from_artifact, load_artifact

    arts = [load_artifact(p, dims) for p in paths]
    names = list(labels) if labels else _artifact_labels(paths, arts)
    return [dpl_row(name, clip_model, *lengths_from_artifact(art), reference)
            for name, art in zip(names, arts)]


def _artifact_labels(paths, arts) -> List[str]:
    """The dataset of each artifact (its directory if unknown); the seed is added to repeats."""
    names = [a["provenance"].get("dataset") or os.path.basename(os.path.dirname(os.path.abspath(p)))
             for p, a in zip(paths, arts)]
    return [f"{n} seed{a['provenance'].get('seed')}" if names.count(n) > 1 else n
            for n, a in zip(names, arts)]


def uniform_lengths(length: int, depth: int, dims) -> tuple:
    """``length`` tokens in the first ``depth`` blocks (-1 = all) of both branches, as DPLTrain's
    TRAINER.DPL.MANUAL.{TEXT,VISION}_{LENGTH,DEPTH}."""
    from trainers.dpl_train import manual_lengths

    manual = SimpleNamespace(TEXT_LENGTHS=[], VISION_LENGTHS=[], TEXT_LENGTH=length,
                             TEXT_DEPTH=depth, VISION_LENGTH=length, VISION_DEPTH=depth)
    return tuple(manual_lengths(manual, dims[b]["num_blocks"], b) for b in ("text", "vision"))


def uniform_label(length: int, depth: int, dims) -> str:
    """E.g. "uniform 2 x 9"; a depth beyond an encoder's blocks is clamped as in DPLTrain, and the
    label says so with the depths used ("uniform 2 x 3 text / 2 image (depth 40 clamped)")."""
    blocks = [dims[b]["num_blocks"] for b in ("text", "vision")]
    if depth < 0:
        return f"uniform {length} x all"
    if depth <= min(blocks):
        return f"uniform {length} x {depth}"
    used = [min(depth, n) for n in blocks]
    depths = str(used[0]) if used[0] == used[1] else f"{used[0]} text / {used[1]} image"
    label = f"uniform {length} x {depths} (depth {depth} clamped)"
    print(f"{PROG}: note: --uniform {length} {depth}: the encoders have {blocks[0]} text and "
          f"{blocks[1]} image blocks, so the depth is clamped; row \"{label}\".", file=sys.stderr)
    return label


def baseline_row(name: str, config_file: str, opts: Sequence[str], clip_model,
                 reference: ForwardFlops, num_classes: Optional[int] = None) -> Row:
    """A CoOp / IVLP / MaPLe setting (its TRAINER.* keys), built by its own trainer's
    ``build_baseline`` on ``clip_model`` and measured like a DPL configuration."""
    import train
    from dassl.engine import TRAINER_REGISTRY

    argv = (["--config-file", config_file] if config_file else []) + list(opts)
    cfg = train.setup_cfg(train.get_parser().parse_args(argv))
    trainer_class = TRAINER_REGISTRY.get(BASELINES[name])
    if name == "coop" and cfg.TRAINER.COOP.CSC and not cfg.TRAINER.COOP.CTX_INIT and not num_classes:
        raise ValueError("TRAINER.COOP.CSC is True (one context per class): pass --num-classes N, "
                         "the dataset's number of classes.")
    classnames = [PLACEHOLDER_CLASS] * (num_classes or 1)
    # build_baseline only reads self.cfg: the exact config -> model mapping of the trainer.
    model = trainer_class.build_baseline(SimpleNamespace(cfg=cfg), clip_model, classnames)
    flops = model_flops(model, image_input(clip_model.visual))
    return Row(baseline_label(name, model), "baseline", trainable_parameters(model), flops,
               flops - reference)


def baseline_label(name: str, model) -> str:
    """E.g. "MaPLe (2 ctx, depth 9)", from the built model (depths as capped by the builder)."""
    learner = model.prompt_learner
    if name == "coop":
        return f"CoOp ({learner.n_ctx} ctx{', CSC' if learner.ctx.dim() == 3 else ''})"
    text = [n for n in learner.text.lengths if n]
    if name == "maple":
        return f"MaPLe ({max(text)} ctx, depth {len(text)})"
    vision = [n for n in learner.vision.lengths if n]
    return f"IVLP ({max(text)}+{max(vision, default=0)} ctx, depth {len(text)}/{len(vision)})"


def run_row(label: str, train_args: str, backbone: str, reference: ForwardFlops, workdir: str) -> Row:
    """Measure a run's own model (any trainer), rebuilt from train.py flags + opts."""
    from tools.gradcam import trainer_from_args

    trainer = trainer_from_args(shlex.split(train_args), workdir)
    if trainer.cfg.MODEL.BACKBONE.NAME != backbone:
        raise ValueError(f"--run {label} uses MODEL.BACKBONE.NAME {trainer.cfg.MODEL.BACKBONE.NAME!r} "
                         f"but the table's frozen CLIP is {backbone!r}; pass the same backbone.")
    params = trainable_parameters(trainer.model)
    model = trainer.model.to("meta")  # shapes only: all of the run's classes are counted for free
    flops = model_flops(model, torch.zeros(1, 3, *trainer.cfg.INPUT.SIZE, device="meta"))
    return Row(label, "run", params, flops, flops - reference)


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
HEADERS = ["configuration", "trainable params", "% of CLIP", "GFLOPs / image", "extra / image",
           "GFLOPs / class prompt", "extra / class prompt"]


def table(rows: Sequence[Row], clip_params: int, reference: ForwardFlops) -> str:
    """The rows as a GitHub-markdown table (tabulate)."""
    def extra(value, ref):
        return f"{value / 1e6:+,.2f} M ({100.0 * value / ref:+.2f} %)"

    lines = []
    for r in rows:
        lines.append([r.label, f"{r.params:,}", f"{100.0 * r.params / clip_params:.4f}",
                      f"{r.flops.image / 1e9:.4g}", extra(r.extra.image, reference.image),
                      f"{r.flops.text / 1e9:.4g}", extra(r.extra.text, reference.text)])
    return tabulate(lines, headers=HEADERS, tablefmt="github")


def text_length_line(rows: Sequence[Row], context_length: int) -> str:
    """Which text length each row's per-class-prompt FLOPs were counted on."""
    lengths = ", ".join(f"{r.label} {r.flops.text_tokens}" for r in rows)
    return (f"Text FLOPs are per class prompt with class name {PLACEHOLDER_CLASS!r}, on the tokens up "
            f"to its end-of-text (not the {context_length}-token context): {lengths}.")


def as_records(rows: Sequence[Row]) -> list:
    """JSON-ready rows."""
    return [{"label": r.label, "kind": r.kind, "params": r.params,
             "image_flops": r.flops.image, "text_flops": r.flops.text,
             "extra_image_flops": r.extra.image, "extra_text_flops": r.extra.text} for r in rows]


KIND_COLORS = {"dpl": ("tab:blue", "DPL configuration"), "baseline": ("tab:gray", "baseline"),
               "run": ("tab:orange", "trained run")}


@styled
def complexity_figure(rows: Sequence[Row], reference: ForwardFlops, title: str = ""):
    """Horizontal bars per configuration (frozen CLIP left out): trainable parameters on a log axis,
    extra FLOPs per image and per class prompt in % of frozen CLIP; each bar carries its value and
    a legend names the colours. title: e.g. the backbone."""
    shown = [r for r in rows if r.kind != "clip"]
    y = list(range(len(shown)))
    colors = [KIND_COLORS[r.kind][0] for r in shown]
    fig, axes = plt.subplots(1, 3, sharey=True, layout="constrained",
                             figsize=(11, 1.6 + 0.32 * max(len(shown), 3)))
    _params_panel(axes[0], y, [r.params for r in shown], colors)
    for ax, key, ref, what in ((axes[1], "image", reference.image, "per image"),
                               (axes[2], "text", reference.text, "per class prompt")):
        values = [100.0 * getattr(r.extra, key) / ref for r in shown]
        ax.barh(y, values, color=colors)
        ax.set_xlim(0, 1.3 * max(max(values), 0.01))
        ax.set_xlabel(f"extra FLOPs {what} (%)")
        _bar_labels(ax, y, values, [f"{v:.2f} %" for v in values])
    axes[0].set_yticks(y, [r.label for r in shown])
    axes[0].invert_yaxis()
    kinds = [k for k in KIND_COLORS if any(r.kind == k for r in shown)]
    fig.legend(handles=[Patch(color=KIND_COLORS[k][0], label=KIND_COLORS[k][1]) for k in kinds],
               loc="outside lower center", ncol=len(kinds))
    fig.suptitle(f"{title + ': ' if title else ''}trainable parameters and extra forward FLOPs "
                 "(% of frozen CLIP's)")
    return fig


def _params_panel(ax, y, params, colors) -> None:
    """Parameters on a log axis from the decade below the smallest count; 0 cannot be drawn on a
    log axis, so such bars are left out and labelled "0"."""
    positive = [p for p in params if p > 0]
    if positive:
        ax.set_xscale("log")
        decades = math.floor(math.log10(min(positive))), math.log10(max(positive)) + 1.2
        ax.set_xlim(10 ** decades[0], 10 ** decades[1])  # headroom right of the bars for labels
    ax.barh(y, [p if p > 0 else float("nan") for p in params], color=colors)
    ax.set_xlabel("trainable parameters" + (" (log scale)" if positive else ""))
    _bar_labels(ax, y, params, [_short(p) for p in params])


def _bar_labels(ax, ys, values, texts) -> None:
    """Write each bar's value just right of its end (at the axis start for 0)."""
    left = ax.get_xlim()[0]
    for y, value, text in zip(ys, values, texts):
        ax.annotate(text, (max(value, left), y), xytext=(3, 0), textcoords="offset points",
                    va="center", ha="left", fontsize=8)


def plot_rows(rows: Sequence[Row], reference: ForwardFlops, path: str, title: str = "") -> str:
    """``complexity_figure`` saved as a PNG at ``path``; returns ``path``."""
    return save_figure(complexity_figure(rows, reference, title), path)


def _short(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="", help="e.g. ViT-B/16, loaded from --clip-checkpoint")
    p.add_argument("--clip-checkpoint", default="",
                   help="local CLIP file (default: ~/.cache/clip/<usual name>)")
    p.add_argument("--clip-config", default="", metavar="CONFIG",
                   help="as MODEL.BACKBONE.CONFIG: an open_clip model-config JSON, or 'openai' for an "
                        "OpenAI-format file under a --backbone name of your own")
    p.add_argument("--random-init", default="", metavar="ARCH",
                   help="random-init CLIP of this architecture instead (no weights needed)")
    p.add_argument("--artifacts", nargs="+", default=[], help="prompt_config.json files")
    p.add_argument("--labels", nargs="+", help="one label per artifact (default: its dataset)")
    p.add_argument("--text-lengths", nargs="+", type=int, help="manual row: per-block text lengths")
    p.add_argument("--vision-lengths", nargs="+", type=int, help="manual row: per-block image lengths")
    p.add_argument("--uniform", nargs=2, type=int, action="append", default=[],
                   metavar=("LENGTH", "DEPTH"), help="row: LENGTH tokens in the first DEPTH blocks "
                   "of both branches (-1 = all; a deeper DEPTH is clamped and the row says so); "
                   "repeatable")
    p.add_argument("--baseline", nargs="+", action="append", default=[],
                   metavar="NAME [CONFIG_FILE]", help=f"row: one of {sorted(BASELINES)} with an "
                   "optional trainer YAML; repeatable")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides for --baseline settings, e.g. TRAINER.MAPLE.N_CTX 4")
    p.add_argument("--num-classes", type=int, help="classes, for CoOp with CSC True")
    p.add_argument("--run", nargs=2, action="append", default=[], metavar=("LABEL", "TRAIN_ARGS"),
                   help="row: a run's model, from train.py flags + opts in one quoted string")
    p.add_argument("--plot", help="bar plot PNG across the rows (checked before measuring)")
    p.add_argument("--json", help="write the rows as JSON (checked before measuring)")
    return p


def build_rows(args, clip_model, workdir: str) -> tuple:
    """(rows, frozen CLIP FLOPs) for parsed arguments."""
    from dpl.model import model_dims

    dims = model_dims(clip_model)
    reference = clip_flops(clip_model)
    rows = [Row("frozen CLIP", "clip", 0, reference, reference - reference)]
    rows += artifact_rows(args.artifacts, args.labels, clip_model, dims, reference)
    if args.text_lengths or args.vision_lengths:
        text = _manual(args.text_lengths, dims["text"]["num_blocks"], "--text-lengths")
        vision = _manual(args.vision_lengths, dims["vision"]["num_blocks"], "--vision-lengths")
        rows.append(dpl_row("manual", clip_model, text, vision, reference))
    for length, depth in args.uniform:
        text, vision = uniform_lengths(length, depth, dims)
        label = uniform_label(length, depth, dims)
        rows.append(dpl_row(label, clip_model, text, vision, reference))
    for spec in args.baseline:
        rows.append(baseline_row(spec[0].lower(), spec[1] if len(spec) > 1 else "", args.opts,
                                 clip_model, reference, args.num_classes))
    backbone = args.random_init or args.backbone
    rows += [run_row(label, train_args, backbone, reference, workdir) for label, train_args in args.run]
    return rows, reference


def _manual(lengths: Optional[List[int]], num_blocks: int, flag: str) -> List[int]:
    if not lengths:
        return [0] * num_blocks
    if len(lengths) != num_blocks or min(lengths) < 0:
        raise ValueError(f"{flag} {lengths} must give {num_blocks} lengths >= 0, one per block of "
                         "this backbone's encoder.")
    return lengths


def main(argv: Optional[List[str]] = None) -> int:
    p = get_parser()
    args = p.parse_args(argv)
    if bool(args.backbone) == bool(args.random_init):
        p.error("give exactly one of --backbone NAME (with --clip-checkpoint PATH) or --random-init ARCH")
    for spec in args.baseline:
        if spec[0].lower() not in BASELINES or len(spec) > 2:
            p.error(f"--baseline {' '.join(spec)}: use NAME [CONFIG_FILE] with NAME one of "
                    f"{sorted(BASELINES)}")
    if args.labels and len(args.labels) != len(args.artifacts):
        p.error("--labels needs one label per artifact")
    if len(args.opts) % 2:
        p.error(f"--opts {args.opts} must be KEY VALUE pairs")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        problem = path and output_problem(path)
        if problem:  # checked before minutes of measuring
            exit_error(PROG, f"{flag} {problem}")
    try:
        clip_model = load_backbone(args.backbone, args.clip_checkpoint, args.random_init, args.clip_config)
        with tempfile.TemporaryDirectory(prefix="complexity-") as workdir:
            rows, reference = build_rows(args, clip_model, workdir)
    except _user_errors() as err:
        exit_error(PROG, str(err))
    print(table(rows, total_parameters(clip_model), reference))
    print(text_length_line(rows, clip_model.context_length))
    if args.json:
        from dpl.io import atomic_write_json

        try:
            atomic_write_json(args.json, as_records(rows))
        except OSError as err:  # e.g. a folder made read-only or a disk filled since the check
            exit_error(PROG, os_error_line(err, args.json))
        print(f"Saved {args.json}")
    if args.plot:
        try:
            title = args.random_init or args.backbone
            print(f"Saved {plot_rows(rows, reference, args.plot, title)}")
        except OSError as err:
            exit_error(PROG, os_error_line(err))
    return 0


def _user_errors() -> tuple:
    from dpl.clip_loader import CheckpointError

    # ValueError covers artifacts (ArtifactError), lengths (PromptConfigError) and config values.
    return (UserError, ValueError, FileNotFoundError, CheckpointError)


if __name__ == "__main__":
    sys.exit(main())
