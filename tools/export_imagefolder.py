"""Export a registered dataset's split as an ImageFolder tree (docs/DATASETS.md, "Your own data").

    python tools/export_imagefolder.py --root ./data --dataset DemoShapes OUT_FOLDER [--link]

writes ``OUT_FOLDER/{train,val,test}/<class folder>/<image>`` and ``classnames.txt`` (class folder
TAB class name), i.e. the layout ``DATASET.NAME ImageFolder`` reads, with the dataset's own
train/val/test split. Images are copied (``--link``: symbolic links). Useful to see the layout with
the offline demo's generated images, or to hand a CoOp dataset to code that reads folders.
Each file is written under a temporary name and renamed when complete; if the export fails (e.g. a
full disk) what it wrote is removed and one ``export_imagefolder.py: error:`` line says why.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dpl.io import atomic_open, atomic_write_text  # noqa: E402
from dpl.errors import UserError, exit_error, os_error_line  # noqa: E402

PROG = "export_imagefolder.py"


def class_folder(label: int, classname: str) -> str:
    """A file-system-safe folder name; the exact name goes to classnames.txt."""
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in classname.replace(" ", "_"))
    return f"{label:03d}_{safe}"


def export(dataset, out: str, link: bool = False) -> dict:
    """Write ``dataset``'s train_x/val/test under ``out``; returns the image count per split.

    All or nothing: on an error (a full disk, a vanished source image) everything written is
    removed again and a UserError names the file; no file ever holds a partial copy under its name.
    """
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"{out} exists and is not empty; choose a new output folder.")
    created = not os.path.exists(out)
    try:
        return _write_tree(dataset, out, link)
    except OSError as err:
        _remove_export(out, created)
        raise UserError(f"{os_error_line(err)} The partial export in {out} was removed.") from None
    except BaseException:
        _remove_export(out, created)
        raise


def _write_tree(dataset, out: str, link: bool) -> dict:
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
                _copy(item.impath, target)
        counts[split] = len(items)
    atomic_write_text(os.path.join(out, "classnames.txt"),
                      "".join(f"{class_folder(label, name)}\t{name}\n" for label, name in sorted(names.items())))
    return counts


def _copy(source: str, target: str) -> None:
    """Copy ``source`` to ``target`` under a temporary name, renamed when complete."""
    with open(source, "rb") as src, atomic_open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _remove_export(out: str, created: bool) -> None:
    """Remove what an interrupted export wrote (``out`` itself if the export created it)."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in os.listdir(out):  # ``out`` was an empty folder before the export
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


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
    except (UserError, FileExistsError, FileNotFoundError, ValueError) as err:
        exit_error(PROG, err)
    print(f"Wrote {counts} images to {args.out} (DATASET.NAME ImageFolder, --root {args.out})")
    return counts


if __name__ == "__main__":
    main()
