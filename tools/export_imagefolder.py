"""Export a registered dataset's split as an ImageFolder tree (docs/DATASETS.md, "Your own data").

    python tools/export_imagefolder.py --root ./data --dataset DemoShapes OUT_FOLDER [--link]

writes ``OUT_FOLDER/{train,val,test}/<class folder>/<image>`` and ``classnames.txt`` (class folder
TAB class name), i.e. the layout ``DATASET.NAME ImageFolder`` reads, with the dataset's own
train/val/test split. Images are copied (``--link``: symbolic links). Useful to see the layout with
the offline demo's generated images, or to hand a CoOp dataset to code that reads folders.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def class_folder(label: int, classname: str) -> str:
    """A file-system-safe folder name; the exact name goes to classnames.txt."""
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in classname.replace(" ", "_"))
    return f"{label:03d}_{safe}"


def export(dataset, out: str, link: bool = False) -> dict:
    """Write ``dataset``'s train_x/val/test under ``out``; returns the image count per split."""
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"{out} exists and is not empty; choose a new output folder.")
    names = dataset.lab2cname
    counts = {}
    for split, items in (("train", dataset.train_x), ("val", dataset.val or []), ("test", dataset.test)):
        for i, item in enumerate(items):
            folder = os.path.join(out, split, class_folder(item.label, names[item.label]))
            os.makedirs(folder, exist_ok=True)
            target = os.path.join(folder, f"{i:06d}_{os.path.basename(item.impath)}")
            if link:
                os.symlink(os.path.abspath(item.impath), target)
            else:
                shutil.copyfile(item.impath, target)
        counts[split] = len(items)
    with open(os.path.join(out, "classnames.txt"), "w", encoding="utf-8") as fh:
        fh.writelines(f"{class_folder(label, name)}\t{name}\n" for label, name in sorted(names.items()))
    return counts


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description="Export a dataset's split as an ImageFolder tree.")
    p.add_argument("--root", required=True, help="DATASET.ROOT of the dataset")
    p.add_argument("--dataset", required=True, help="registered name, e.g. DemoShapes or DescribableTextures")
    p.add_argument("out", help="new folder to write")
    p.add_argument("--link", action="store_true", help="symbolic links instead of copies")
    args = p.parse_args(argv)

    import datasets  # noqa: F401  (registers the loaders)
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.DATASET.NAME, cfg.DATASET.ROOT = args.dataset, args.root
    try:
        counts = export(build_dataset(cfg), args.out, args.link)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"export_imagefolder.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"Wrote {counts} images to {args.out} (DATASET.NAME ImageFolder, --root {args.out})")
    return counts


if __name__ == "__main__":
    main()
