#!/usr/bin/env python
"""Grad-CAM of trained runs side by side (paper Fig. 3): one row per image, one column per model.

    python tools/gradcam.py --image plane.jpg "SR-20" [--image car.jpg "..."] --out gradcam.png \\
        --zeroshot --backbone ViT-B/16 --clip-checkpoint ~/.cache/clip/ViT-B-16.pt \\
        --run DPL "--root data --trainer DPLTrain \\
                   --dataset-config-file configs/datasets/fgvc_aircraft.yaml \\
                   --config-file configs/trainers/DPLTrain/vit_b16.yaml \\
                   --model-dir output/fewshot/DPLTrain/vit_b16/fgvc_aircraft/shots_16/seed1 \\
                   --load-epoch 40 MODEL.BACKBONE.PATH /path/to/ViT-B-16.pt"

``--run LABEL ARGS``: ARGS are train.py's own flags and ``KEY VALUE`` opts in one quoted string; the
model is rebuilt exactly as ``train.py --eval-only`` would (config merge, ``build_trainer``,
``load_model``), so any registered trainer works, baselines included. The dataset must be on disk
(its class list is built), but any image and class name can be shown. For DPLTrain, the run's
``prompt_config.json`` in ``--model-dir`` is used when ``TRAINER.DPL.CONFIG_FILE`` is not given.
``--zeroshot``: a frozen CLIP column (no prompts) from ``--backbone`` / ``--clip-checkpoint``.

Text: each model's own class input (DPL's default input is "a photo of a {}."); ``--template`` makes
every DPL model read ``template.format(name)`` instead. ``--block k``: the map of the tokens entering
image block k (default -1, the last block; see dpl/gradcam.py for why not the last block's output).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dpl.clip_loader import CheckpointError  # noqa: E402
from dpl.gradcam import (CLIP_MEAN, CLIP_STD, displayable, find_image_tower, grad_cam,  # noqa: E402
                         mapped_block, plot_gradcam, prepare_image, set_class_text,
                         vit_input_size)
from dpl.images import load_rgb  # noqa: E402
from dpl.errors import UserError, exit_error, output_problem  # noqa: E402

PROG = "gradcam.py"


@dataclass
class Column:
    """One model of the figure and how its images are normalised."""
    label: str
    model: torch.nn.Module
    mean: Sequence[float] = CLIP_MEAN
    std: Sequence[float] = CLIP_STD


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def trainer_from_args(train_argv: Sequence[str], workdir: str):
    """Build the trainer of a run from train.py flags + opts, load its weights, eval mode.

    Without ``--output-dir`` the trainer writes its side files (e.g. DPLTrain's prompt_config.json)
    into ``workdir``, never into ./output.
    """
    import train
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    args = train.get_parser().parse_args(list(train_argv))
    args.output_dir = args.output_dir or workdir
    args.opts = list(args.opts or [])
    cfg = train.setup_cfg(args)
    run_config = os.path.join(args.model_dir, "prompt_config.json") if args.model_dir else ""
    if cfg.TRAINER.NAME == "DPLTrain" and not cfg.TRAINER.DPL.CONFIG_FILE and os.path.isfile(run_config):
        args.opts += ["TRAINER.DPL.CONFIG_FILE", run_config]
        cfg = train.setup_cfg(args)
    train.validate_cfg(cfg)
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    if args.model_dir:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
    elif any(p.requires_grad for p in trainer.model.parameters()):
        print(f"{PROG}: warning: no --model-dir for trainer {cfg.TRAINER.NAME}: its prompts are "
              "freshly initialised, not trained.", file=sys.stderr)
    trainer.set_model_mode("eval")
    return trainer


def run_column(label: str, train_args: str, workdir: str) -> Column:
    trainer = trainer_from_args(shlex.split(train_args), workdir)
    return Column(label, trainer.model, tuple(trainer.cfg.INPUT.PIXEL_MEAN),
                  tuple(trainer.cfg.INPUT.PIXEL_STD))


def zeroshot_column(label: str, backbone: str, checkpoint: str, device, config: str = "") -> Column:
    """Frozen CLIP as a DPL model with no prompt anywhere (exactly zero-shot CLIP)."""
    from dpl.clip_loader import load_clip, preprocess_of
    from dpl.model import build_fixed_model, model_dims

    clip_model = load_clip(backbone, checkpoint, precision="fp32", device=device, config=config)
    dims = model_dims(clip_model)
    model = build_fixed_model(clip_model, ["object"], [0] * dims["text"]["num_blocks"],
                              [0] * dims["vision"]["num_blocks"])
    pre = preprocess_of(clip_model)  # an open_clip model's own normalisation
    return Column(label, model.eval(), pre["mean"], pre["std"])


# ----------------------------------------------------------------------------------------------
# Maps
# ----------------------------------------------------------------------------------------------
def column_cam(column: Column, image: Image.Image, classname: str, template: Optional[str],
               block: int) -> tuple:
    """(displayed image (H, W, 3), Grad-CAM (H, W)) of one model for one image and class."""
    visual = find_image_tower(column.model)
    device = visual.conv1.weight.device
    tensor = prepare_image(image, vit_input_size(visual), column.mean, column.std).to(device)
    set_class_text(column.model, [classname], template)
    cam = grad_cam(column.model, tensor, class_index=0, block=block)[0]
    return displayable(tensor, column.mean, column.std), cam.cpu().numpy()


def render(columns: Sequence[Column], images: Sequence[tuple], out: str,
           template: Optional[str] = None, block: int = -1) -> str:
    """images: (path, class name) pairs -> the side-by-side PNG at ``out``.

    The title names the mapped block; models with different depths name theirs in their header.
    """
    where = [mapped_block(c.model, block) for c in columns]  # (k, number of blocks) per model
    if len(set(where)) == 1:
        labels = [c.label for c in columns]
        mapped = f"tokens entering image block {where[0][0]} (blocks 0–{where[0][1] - 1})"
    else:
        labels = [f"{c.label} (block {k})" for c, (k, _) in zip(columns, where)]
        mapped = "tokens entering the image block named in each header"
    rows = []
    for path, classname in images:
        pil = load_rgb(path)
        rows.append((classname, [column_cam(c, pil, classname, template, block) for c in columns]))
    return plot_gradcam(rows, labels, out, mapped=mapped)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", nargs=2, action="append", required=True, metavar=("PATH", "CLASSNAME"),
                   help="an image and the class whose logit is explained (repeat for more rows)")
    p.add_argument("--run", nargs=2, action="append", default=[], metavar=("LABEL", "TRAIN_ARGS"),
                   help="a column: a label and train.py's flags + opts as one quoted string")
    p.add_argument("--zeroshot", action="store_true", help="add a frozen zero-shot CLIP column")
    p.add_argument("--zeroshot-label", default="CLIP")
    p.add_argument("--backbone", default="ViT-B/16", help="backbone of the --zeroshot column")
    p.add_argument("--clip-checkpoint", default="",
                   help="local CLIP file for --zeroshot (default: ~/.cache/clip/<usual name>)")
    p.add_argument("--clip-config", default="", metavar="CONFIG",
                   help="as MODEL.BACKBONE.CONFIG, for --zeroshot: an open_clip model-config JSON, or "
                        "'openai' for an OpenAI-format file under a --backbone name of your own")
    p.add_argument("--template", default=None,
                   help='sentence for DPL models, e.g. "a photo of a {}." (default: each model\'s own)')
    p.add_argument("--block", type=int, default=-1, help="image block whose input is mapped")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device of the --zeroshot column (runs use their trainer's device)")
    p.add_argument("--out", default="gradcam.png", help="output PNG")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    p = get_parser()
    args = p.parse_args(argv)
    if not args.run and not args.zeroshot:
        p.error("give at least one column: --run LABEL TRAIN_ARGS and/or --zeroshot")
    if args.template is not None and "{}" not in args.template:
        p.error(f'--template {args.template!r} has no "{{}}" for the class name')
    for path, _ in args.image:
        if not os.path.isfile(path):
            p.error(f"--image {path} does not exist")
    problem = output_problem(args.out)
    if problem:
        exit_error(PROG, f"--out {problem}")
    try:
        with tempfile.TemporaryDirectory(prefix="gradcam-") as workdir:
            columns = [zeroshot_column(args.zeroshot_label, args.backbone, args.clip_checkpoint,
                                       args.device, args.clip_config)] if args.zeroshot else []
            columns += [run_column(label, train_args, workdir) for label, train_args in args.run]
            out = render(columns, args.image, args.out, args.template, args.block)
    except _user_errors() as err:
        exit_error(PROG, str(err))
    print(f"Saved {out}")
    return 0


def _user_errors() -> tuple:
    import pickle

    # ValueError covers bad configs, artifacts (ArtifactError), --block (GradCamError).
    return (UserError, ValueError, FileNotFoundError, CheckpointError, pickle.UnpicklingError,
            OSError)


if __name__ == "__main__":
    sys.exit(main())
