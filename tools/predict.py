"""Top-k predictions of a trained DPL run on new images (docs/PREDICT.md).

    python tools/predict.py --run "<train.py flags of the run>" IMAGE_OR_FOLDER ... \
        [--topk 5] [--classnames FILE] [--json out.json] [--batch-size 64]

``--run`` takes the flags the run was trained with (its ``--output-dir`` is the run folder;
``--load-epoch``, ``MODEL.BACKBONE.PATH`` and ``MODEL.BACKBONE.CONFIG`` are honoured, the rest is
read from the folder), or simply the run folder. Folders are searched recursively for images.
``--classnames`` (one name per line) classifies into other classes with the same learned prompts.
Prints one table row per image; ``--json`` also writes
``[{"image": path, "topk": [{"class": name, "prob": p}, ...]}, ...]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from dpl.classifier import IMAGE_EXTENSIONS  # noqa: E402


class PredictError(ValueError):
    """A mistake in the command line or the run's files; reported as one line, exit code 2."""


def parse_run(run: str) -> dict:
    """The run folder and loading options from ``--run`` (a folder, or train.py flags)."""
    if os.path.isdir(run):
        return {"run_dir": run, "epoch": None, "clip_path": "", "clip_config": ""}
    tokens = shlex.split(run)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output-dir", default="")
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--load-epoch", type=int, default=None)
    args, rest = parser.parse_known_args(tokens)
    opts = {}
    for i, token in enumerate(rest[:-1]):
        if token in ("MODEL.BACKBONE.PATH", "MODEL.BACKBONE.CONFIG"):
            opts[token] = rest[i + 1]
    run_dir = args.model_dir or args.output_dir
    if not run_dir or not os.path.isdir(run_dir):
        raise PredictError(f"--run {run!r} names no existing run folder: give the run's folder or its "
                           "train.py flags including --output-dir.")
    return {"run_dir": run_dir, "epoch": args.load_epoch,
            "clip_path": opts.get("MODEL.BACKBONE.PATH", ""), "clip_config": opts.get("MODEL.BACKBONE.CONFIG", "")}


def collect_images(paths: Sequence[str]) -> List[str]:
    """Image files among ``paths``; folders are searched recursively (sorted)."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(folder, f) for f in sorted(files)
                             if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise PredictError(f"{path} is neither an image file nor a folder.")
    if not found:
        raise PredictError(f"no images found in {list(paths)} (extensions {', '.join(IMAGE_EXTENSIONS)}).")
    return found


def read_classnames(path: str) -> List[str]:
    with open(path, encoding="utf-8") as fh:
        names = [line.strip() for line in fh if line.strip()]
    if not names:
        raise PredictError(f"--classnames {path} lists no class names (one per line).")
    return names


def predict_files(clf, files: Sequence[str], topk: int, batch_size: int, progress: bool = True) -> list:
    """[{"image": path, "topk": [{"class", "prob"}, ...]}, ...] for ``files``, batch by batch."""
    from tqdm import tqdm

    names, results = clf.classnames, []
    k = min(topk, len(names))
    starts = range(0, len(files), batch_size)
    for start in tqdm(starts, desc="predict", unit="batch", disable=not progress or len(starts) < 2):
        chunk = files[start:start + batch_size]
        images = []
        for path in chunk:
            try:
                with Image.open(path) as img:
                    images.append(img.convert("RGB"))
            except (OSError, ValueError, SyntaxError) as err:
                raise PredictError(f"cannot read image {path} ({type(err).__name__}: {err}).") from None
        probs = clf.predict(images, batch_size=batch_size)
        values, indices = probs.topk(k, dim=1)
        for path, vals, idxs in zip(chunk, values.tolist(), indices.tolist()):
            results.append({"image": path,
                            "topk": [{"class": names[i], "prob": v} for v, i in zip(vals, idxs)]})
    return results


def format_table(results: list) -> str:
    from tabulate import tabulate

    rows = [[r["image"], *(f"{t['class']} ({t['prob']:.3f})" for t in r["topk"])] for r in results]
    k = max(len(r["topk"]) for r in results)
    return tabulate(rows, headers=["image", *(f"top-{i + 1}" for i in range(k))])


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Top-k predictions of a trained DPL run on images.")
    p.add_argument("--run", required=True, help="the run folder, or the train.py flags of the run (quoted)")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--classnames", default="", help="file with one class name per line (replaces the run's)")
    p.add_argument("--json", default="", help="also write the predictions to this JSON file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    return p


def main(argv: Optional[Sequence[str]] = None) -> list:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except PredictError as err:
        print(f"predict.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args) -> list:
    from dpl.classifier import load_classifier
    from dpl.errors import UserError

    if args.topk < 1 or args.batch_size < 1:
        raise PredictError("--topk and --batch-size must be >= 1.")
    spec = parse_run(args.run)
    files = collect_images(args.images)
    names = read_classnames(args.classnames) if args.classnames else None
    try:
        clf = load_classifier(spec["run_dir"], clip_path=spec["clip_path"], clip_config=spec["clip_config"],
                              classnames=names, epoch=spec["epoch"], device=args.device)
    except (UserError, FileNotFoundError) as err:
        raise PredictError(" ".join(str(err).split())) from None
    results = predict_files(clf, files, args.topk, args.batch_size)
    print(format_table(results))
    if args.json:
        from dpl.io import atomic_write_json

        atomic_write_json(args.json, results)
        print(f"Wrote {len(results)} predictions to {args.json}")
    return results


if __name__ == "__main__":
    main()
