"""The search artifact ``prompt_config.json``: derive, save, load and validate (docs/METHOD.md, "From α to a configuration"; docs/CONFIG.md).

The search stage writes one JSON file; the train stage reads it. Nothing else passes between them.
Schema version 1::

    {"schema": "dpl-prompt-config/1", "backbone": BACKBONE, "text": BRANCH, "vision": BRANCH,
     "history_file": "alpha_history.json", "provenance": {...}, ["search": SEARCH],
     ["classifier": {...}]}
    BRANCH = {"num_blocks", "width", "options", "lengths", "alpha", "probs", "dominant"}
    BACKBONE = {"name", "file", "config", "sha256", "config_sha256"}
               (``dpl.clip_loader.backbone_record``; older files lack config_sha256), or a name
               string (older files, hand-written configurations)

    SEARCH = {"alpha_every", "patience", "min_epochs", "update_mode", "class_sample", "epochs_run",
              "seed", "world_size"}: how DPLSearch searched (its loop, the seed it used, the number
              of processes). Optional: older files and hand-written configurations lack it.

A train run's copy also holds ``classifier`` (``dpl.classifier.classifier_info``): what a prediction
needs besides the prompts (class names, text input, input preprocessing).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Mapping, Optional, Sequence

import torch

from dpl.io import atomic_write_json
from dpl.errors import UserError

SCHEMA = "dpl-prompt-config/1"
BRANCHES = ("text", "vision")
SEARCH_KEYS = ("alpha_every", "patience", "min_epochs", "update_mode", "class_sample", "epochs_run",
               "seed", "world_size")
PROVENANCE_KEYS = (
    "dataset", "subsample_classes", "num_shots", "seed", "epochs_run", "max_epoch",
    "early_stopped", "config_hash", "code_version", "created",
)


class ArtifactError(UserError):
    """A prompt_config.json is missing, malformed, or does not fit the loaded model."""


def derive_lengths(alpha: torch.Tensor, options: Sequence[int]) -> list:
    """Per block ``options[argmax alpha_i]``; ties go to the shorter prompt (the earlier option)."""
    rows = alpha.detach().float().cpu().tolist()
    lengths = []
    for row in rows:
        best = max(row)
        lengths.append(int(options[row.index(best)]))  # first maximum = shortest option
    return lengths


def dominant_flags(probs: torch.Tensor, threshold: float) -> list:
    """A block is single-dominant when its top softmax weight is at least ``threshold``."""
    return [bool(p >= threshold) for p in probs.max(dim=1).values.tolist()]


def branch_summary(alpha: torch.Tensor, options: Sequence[int], width: int, threshold: float) -> dict:
    """The BRANCH object of the schema for one encoder; ``alpha`` is (num_blocks, num_options)."""
    alpha = alpha.detach().float().cpu()
    probs = alpha.softmax(dim=1)
    return {
        "num_blocks": int(alpha.shape[0]),
        "width": int(width),
        "options": [int(o) for o in options],
        "lengths": derive_lengths(alpha, options),
        "alpha": alpha.tolist(),
        "probs": probs.tolist(),
        "dominant": dominant_flags(probs, threshold),
    }


def shots_provenance(requested: int, train_labels: Sequence[int]) -> dict:
    """Provenance of the few-shot sample: ``num_shots`` is the number of images per class actually
    used (the largest class count); when some class had fewer than ``requested`` images it also
    records ``num_shots_requested`` and ``min_shots_per_class``. ``requested`` < 1 (all images) is
    kept as it is."""
    if requested < 1 or not train_labels:
        return {"num_shots": requested}
    counts = Counter(train_labels).values()
    if min(counts) >= requested:
        return {"num_shots": requested}
    return {"num_shots": max(counts), "num_shots_requested": requested,
            "min_shots_per_class": min(counts)}


def build_artifact(backbone, text: dict, vision: dict, provenance: Mapping,
                   history_file: str = "alpha_history.json", search: Optional[Mapping] = None) -> dict:
    """A schema-1 artifact; ``search`` (SEARCH_KEYS) records how a DPLSearch run searched."""
    art = {
        "schema": SCHEMA,
        "backbone": backbone,
        "text": text,
        "vision": vision,
        "history_file": history_file,
        "provenance": {k: provenance.get(k) for k in PROVENANCE_KEYS},
    }
    extra = {k: v for k, v in provenance.items() if k not in PROVENANCE_KEYS}
    art["provenance"].update(extra)
    if search is not None:
        art["search"] = {k: search.get(k) for k in SEARCH_KEYS}
    validate_artifact(art, "<new artifact>")
    return art


def save_artifact(path: str, artifact: dict) -> None:
    validate_artifact(artifact, path)
    atomic_write_json(path, artifact)


def load_artifact(path: str, dims: Optional[Mapping] = None) -> dict:
    """Read and validate ``path``; with ``dims`` (``dpl.model.model_dims(clip)``), check it fits.

    Raises ArtifactError naming the file and the mismatch.
    """
    if not path:
        raise ArtifactError(
            "No prompt configuration given: set TRAINER.DPL.CONFIG_FILE to a prompt_config.json "
            "written by DPLSearch, or give a manual configuration (TRAINER.DPL.MANUAL.*)."
        )
    if not os.path.isfile(path):
        raise ArtifactError(
            f"Prompt configuration {path} does not exist. Run the search first "
            "(scripts/dpl/search.sh DATASET SEED) or fix TRAINER.DPL.CONFIG_FILE."
        )
    try:
        with open(path, encoding="utf-8") as fh:
            art = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"Prompt configuration {path} is not valid JSON: {exc}.") from exc
    validate_artifact(art, path)
    if dims is not None:
        check_fits(art, dims, path)
    return art


def validate_artifact(art, source: str) -> None:
    """Schema checks that need no model. Raises ArtifactError naming ``source``."""
    def fail(msg):
        raise ArtifactError(f"Prompt configuration {source}: {msg}")

    if not isinstance(art, dict):
        fail("the top level must be a JSON object.")
    if art.get("schema") != SCHEMA:
        fail(f"schema is {art.get('schema')!r}, this code reads {SCHEMA!r}. Re-run the search with "
             "this version of the code, or use the version that wrote the file.")
    if "search" in art and not isinstance(art["search"], dict):
        fail(f"search must be a JSON object (how the run searched), got {json.dumps(art['search'])}; "
             "restore the file from the search output or delete the key.")
    for name in BRANCHES:
        br = art.get(name)
        if not isinstance(br, dict):
            fail(f"missing the {name!r} branch object.")
        for key in ("num_blocks", "width", "options", "lengths"):
            if key not in br:
                fail(f"{name}.{key} is missing.")
        n = br["num_blocks"]
        if not isinstance(n, int) or n < 0:
            fail(f"{name}.num_blocks must be a non-negative integer, got {n!r}.")
        lengths = br["lengths"]
        if not isinstance(lengths, list) or len(lengths) != n:
            fail(f"{name}.lengths must list one length per block ({n}), got {lengths!r}.")
        bad = [v for v in lengths if not _is_int(v) or v < 0]
        if bad:
            fail(f"{name}.lengths must be integers >= 0, got {bad[0]!r}.")
        options = br["options"]
        if not isinstance(options, list) or not all(_is_int(v) for v in options):
            fail(f"{name}.options must be a list of integers, got {options!r}.")
        for block, length in enumerate(lengths):
            if length not in options:
                fail(f"{name} block {block} has length {length}, which is not among its options "
                     f"{options}; set it to one of them (or add it to {name}.options).")
        for key in ("alpha", "probs"):
            rows = br.get(key)
            if rows is None:
                continue
            if (not isinstance(rows, list) or len(rows) != n
                    or any(not isinstance(r, list) or len(r) != len(options) for r in rows)):
                fail(f"{name}.{key} must be {n} rows of {len(options)} values.")
            for block, row in enumerate(rows):
                for v in row:
                    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                        fail(f"{name}.{key} of block {block} holds {json.dumps(v)}, but every value "
                             "must be a finite number; restore the file from the search output.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fits(art: Mapping, dims: Mapping, source: str) -> None:
    """Block counts and widths of the artifact must equal those of the loaded model."""
    for name in BRANCHES:
        have, want = art[name], dims[name]
        if have["num_blocks"] != want["num_blocks"] or have["width"] != want["width"]:
            raise ArtifactError(
                f"Prompt configuration {source} was searched for a model with {name} encoder "
                f"{have['num_blocks']} blocks x width {have['width']} (backbone "
                f"{backbone_name(art)!r}), but the loaded model has {want['num_blocks']} blocks x "
                f"width {want['width']}. Use an artifact searched with this backbone."
            )


def backbone_name(art: Mapping) -> str:
    """The model name of an artifact's ``backbone`` (a record or, in older files, the name)."""
    backbone = art.get("backbone")
    return backbone.get("name", "") if isinstance(backbone, Mapping) else backbone


def check_backbone(art: Mapping, backbone: Mapping, source: str) -> None:
    """Refuse an artifact made on another checkpoint or architecture: both SHA-256s (of the weights,
    or of the architecture the config builds) known and different.

    ``backbone`` is the loaded model's ``backbone_record``; name-only artifacts are not checked.
    """
    have = art.get("backbone")
    if not isinstance(have, Mapping):
        return
    if have.get("config_sha256") and backbone.get("config_sha256") and \
            have["config_sha256"] != backbone["config_sha256"]:
        raise ArtifactError(
            f"Prompt configuration {source} was made on a model built from {have.get('config')!r} "
            f"(architecture sha256 {have['config_sha256'][:12]}...), but the loaded model's config "
            f"{backbone.get('config')!r} builds another architecture (sha256 "
            f"{backbone['config_sha256'][:12]}...). Set MODEL.BACKBONE.PATH/CONFIG to the model the "
            "search ran on, or search again on this one.")
    if not have.get("sha256") or not backbone.get("sha256"):
        return
    if have["sha256"] != backbone["sha256"]:
        raise ArtifactError(
            f"Prompt configuration {source} was made on the CLIP checkpoint {have.get('file')!r} "
            f"({have.get('name')!r}, sha256 {have['sha256'][:12]}...), but the loaded checkpoint is "
            f"{backbone.get('file')!r} ({backbone.get('name')!r}, sha256 {backbone['sha256'][:12]}...). "
            "Set MODEL.BACKBONE.NAME/PATH to the model the search ran on, or search again on this one."
        )


def lengths_from_artifact(art: Mapping) -> tuple:
    return list(art["text"]["lengths"]), list(art["vision"]["lengths"])


def fixed_artifact(backbone, dims: Mapping, text_lengths: Sequence[int],
                   vision_lengths: Sequence[int], provenance: Mapping) -> dict:
    """An artifact for a configuration that was not searched (e.g. a manual/uniform baseline).

    It has no α; its option list is simply the distinct lengths (with 0)."""
    def branch(name, lengths):
        return {
            "num_blocks": int(dims[name]["num_blocks"]),
            "width": int(dims[name]["width"]),
            "options": sorted({0, *(int(v) for v in lengths)}),
            "lengths": [int(v) for v in lengths],
        }
    return build_artifact(backbone, branch("text", text_lengths), branch("vision", vision_lengths),
                          provenance, history_file="")
