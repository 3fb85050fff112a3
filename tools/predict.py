"""Top-k predictions of a trained DPL run on new images (docs/PREDICT.md).

    python tools/predict.py --run "<train.py flags of the run>" IMAGE_OR_FOLDER ... \
        [--topk 5] [--classnames FILE] [--json out.json] [--batch-size 64]

``--run`` takes the flags the run was trained with (its ``--output-dir`` is the run folder;
``--load-epoch``, ``MODEL.BACKBONE.PATH`` and ``MODEL.BACKBONE.CONFIG`` are honoured, the rest is
read from the folder), or simply the run folder. Folders are searched recursively for images;
hidden entries (names starting with ".", e.g. ``.ipynb_checkpoints/``) are skipped as training
skips them, and a line says how many images were read and what was skipped.
``--classnames`` (one name per line) classifies into other classes with the same learned prompts.
Prints one table row per image; ``--json`` also writes
``[{"image": path, "topk": [{"class": name, "prob": p}, ...]}, ...]`` (its path is checked before
predicting). Mistakes (a bad path, a truncated or not weights-only checkpoint, ...) end in one
``predict.py: error:`` line with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dpl.images import load_rgb  # noqa: E402

from dpl.classifier import IMAGE_EXTENSIONS  # noqa: E402
from dpl.errors import UserError, exit_error, os_error_line, output_problem  # noqa: E402

PROG = "predict.py"


class PredictError(UserError):
    """A mistake in predict.py's command line or inputs; reported as one line, exit code 2."""


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


def collect_images(paths: Sequence[str]) -> Tuple[List[str], str]:
    """Image files among ``paths`` and one line saying how many were read and what was skipped.

    Folders are searched recursively (sorted). As in training, hidden entries inside them (names
    starting with ".", e.g. ``.ipynb_checkpoints/`` or ``._x.jpg``) are skipped, and so are files
    without an image extension; a file named on the command line is always read.
    """
    found, hidden, not_images, hidden_names = [], 0, 0, []
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                for d in sorted(dirs):
                    if d.startswith("."):
                        hidden += _count_images(os.path.join(folder, d))
                        hidden_names.append(d + "/")
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.lower().endswith(IMAGE_EXTENSIONS):
                        not_images += not f.startswith(".")  # .DS_Store and the like: not worth a word
                    elif f.startswith("."):
                        hidden += 1
                        hidden_names.append(f)
                    else:
                        found.append(os.path.join(folder, f))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise PredictError(f"{path} is neither an image file nor a folder.")
    if not found:
        raise PredictError(f"no images found in {list(paths)} (extensions {', '.join(IMAGE_EXTENSIONS)}"
                           f"{'; hidden entries are skipped' if hidden else ''}).")
    return found, _read_line(len(found), hidden, sorted(set(hidden_names)), not_images)


def _count_images(folder: str) -> int:
    return sum(f.lower().endswith(IMAGE_EXTENSIONS) for _, _, files in os.walk(folder) for f in files)


def _read_line(read: int, hidden: int, hidden_names: Sequence[str], not_images: int) -> str:
    skipped = []
    if hidden:
        names = ", ".join(hidden_names[:3]) + (", ..." if len(hidden_names) > 3 else "")
        skipped.append(f"{_images(hidden)} in hidden files or folders ({names}; training skips them too)")
    if not_images:
        skipped.append(f"{not_images} file{'s' * (not_images != 1)} without an image extension")
    return f"Read {_images(read)}" + (f"; skipped {' and '.join(skipped)}." if skipped else ".")


def _images(n: int) -> str:
    return f"{n} image{'s' * (n != 1)}"


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
                images.append(load_rgb(path))
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
    except (UserError, FileNotFoundError, NotADirectoryError) as err:
        exit_error(PROG, err)


def run(args) -> list:
    from dpl.classifier import load_classifier

    if args.topk < 1 or args.batch_size < 1:
        raise PredictError("--topk and --batch-size must be >= 1.")
    problem = args.json and output_problem(args.json, "predictions.json")
    if problem:  # before minutes of predicting
        raise PredictError(f"--json {problem}.")
    spec = parse_run(args.run)
    files, read_line = collect_images(args.images)
    names = read_classnames(args.classnames) if args.classnames else None
    clf = load_classifier(spec["run_dir"], clip_path=spec["clip_path"], clip_config=spec["clip_config"],
                          classnames=names, epoch=spec["epoch"], device=args.device)
    print(read_line)
    results = predict_files(clf, files, args.topk, args.batch_size)
    print(format_table(results))
    if args.json:
        from dpl.io import atomic_write_json

        try:
            atomic_write_json(args.json, results)
        except OSError as err:  # e.g. the disk filled up since the check
            raise PredictError(os_error_line(err, args.json)) from None
        print(f"Wrote {len(results)} predictions to {args.json}")
    return results


if __name__ == "__main__":
    main()
