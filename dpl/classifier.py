"""A trained DPL run as an image classifier, free of the engine (no dassl, no train.py).

    from dpl import load_classifier
    clf = load_classifier("output/.../DPLTrain/.../seed1")   # the train run's output folder
    probs = clf.predict([PIL.Image.open("cat.jpg")])         # (1, num_classes), rows sum to 1
    clf.set_classnames(["cat", "dog", "fox"])                # other classes, same learned prompts

A run folder holds what is needed: ``prompt_config.json`` (prompt lengths; the CLIP checkpoint's
name, file and hash; and, from ``DPLTrain``, the ``classifier`` section: class names, text input,
input preprocessing) and ``prompt_learner/model.pth.tar-N`` (the prompts). The CLIP file is read
from the path recorded there unless ``clip_path`` says otherwise; its hash must match.
Preprocessing is the evaluation transform of the run: shorter side resized to max(size), centre
crop, scaled to [0, 1], normalised.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Union

import torch
from PIL import Image
from torchvision import transforms as T

from dpl.artifact import ArtifactError, check_backbone, check_fits, load_artifact, lengths_from_artifact
from dpl.clip_loader import backbone_record, load_clip, preprocess_of, reload_config
from dpl.images import to_rgb
from dpl.io import BEST_CHECKPOINT, epoch_checkpoint_name, saved_epochs
from dpl.model import DPLCLIP, build_fixed_model, model_dims
from dpl.errors import UserError, load_weights_only

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
PROMPT_MODULE = "prompt_learner"  # the registered name of the prompts in a run folder
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST}


def classifier_info(classnames: Sequence[str], text_input: str, dataset: str, size: Sequence[int],
                    mean: Sequence[float], std: Sequence[float], interpolation: str,
                    normalize: bool = True) -> dict:
    """The ``classifier`` section a train run adds to its ``prompt_config.json``."""
    return {"classnames": list(classnames), "text_input": text_input, "dataset": dataset,
            "input": {"size": [int(v) for v in size], "mean": [float(v) for v in mean],
                      "std": [float(v) for v in std], "interpolation": interpolation,
                      "normalize": bool(normalize)}}


def eval_transform(size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                   interpolation: str = "bicubic", normalize: bool = True) -> T.Compose:
    """PIL image -> (3, H, W) tensor exactly as the run's evaluation transform."""
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"interpolation {interpolation!r} is unknown; use one of {list(INTERPOLATIONS)}.")
    size = tuple(int(v) for v in size)
    ops = [T.Resize(max(size), interpolation=INTERPOLATIONS[interpolation]), T.CenterCrop(size),
           T.ToTensor()]
    if normalize:
        ops.append(T.Normalize(mean=list(mean), std=list(std)))
    return T.Compose(ops)


class PromptClassifier:
    """A DPL model with its preprocessing: PIL images -> class probabilities.

    model: a ``DPLCLIP`` (fixed configuration) in eval mode; transform: PIL -> (3, H, W).
    """

    def __init__(self, model: DPLCLIP, transform, device: Union[str, torch.device] = "cpu"):
        self.model = model.eval()
        self.transform = transform
        self.device = torch.device(device)
        self._text_features = None

    @property
    def classnames(self) -> List[str]:
        return list(self.model.classnames)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Classify into other classes with the same learned prompts (open vocabulary)."""
        self.model.set_classnames(list(classnames))
        self._text_features = None

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> logits (B, num_classes)."""
        if self._text_features is None:
            self._text_features = self.model.encode_text()
        return self.model(images.to(self.device), text_features=self._text_features)

    @torch.no_grad()
    def predict(self, images: Union[Image.Image, Sequence[Image.Image]], batch_size: int = 64) -> torch.Tensor:
        """PIL image(s) -> probabilities (N, num_classes) on the CPU, rows summing to 1."""
        if isinstance(images, Image.Image):
            images = [images]
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.transform(to_rgb(img)) for img in images[start:start + batch_size]])
            out.append(self.logits(batch).float().softmax(dim=-1).cpu())
        if not out:
            return torch.zeros(0, len(self.model.classnames))
        return torch.cat(out)


def find_prompt_checkpoint(run_dir: str, epoch: Optional[int] = None) -> str:
    """``prompt_learner/model.pth.tar-<epoch>``; without ``epoch`` the run's last saved file (its
    ``checkpoint`` pointer, else the highest epoch, else ``model-best.pth.tar``)."""
    folder = os.path.join(run_dir, PROMPT_MODULE)
    if epoch is not None:
        path = os.path.join(folder, epoch_checkpoint_name(epoch))
    else:
        pointer = os.path.join(folder, "checkpoint")
        path = ""
        if os.path.isfile(pointer):
            with open(pointer) as fh:
                path = os.path.join(folder, fh.read().strip())
        if not os.path.isfile(path):
            epochs = saved_epochs(folder)
            path = os.path.join(folder, epoch_checkpoint_name(epochs[-1]) if epochs else BEST_CHECKPOINT)
    if not os.path.isfile(path):
        raise ArtifactError(f"No prompt checkpoint {path}; is {run_dir} the output folder of a "
                                "finished DPLTrain run (with --load-epoch / epoch as it saved)?")
    return path


def load_prompt_state(path: str) -> dict:
    """The prompt tensors of an engine checkpoint ({"state_dict": ..., "epoch": ...}) or a bare state
    dict, read weights-only as ``--eval-only`` reads it: a truncated file raises
    CorruptCheckpointError, one holding pickled objects UnsafeCheckpointError (nothing in it runs)."""
    ckpt = load_weights_only(
        path, "cpu",
        corrupt_fix="copy the run folder again, or use another saved epoch (load_classifier(epoch=N); "
                    "tools/predict.py: --load-epoch N in --run).",
        unsafe_fix="Use a prompt_learner/model.pth.tar-N that a DPLTrain run saved.")
    return ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt


def load_classifier(run_dir: str = "", *, config_file: str = "", checkpoint: str = "",
                    clip_path: str = "", clip_config: str = "", backbone: str = "",
                    classnames: Optional[Sequence[str]] = None, epoch: Optional[int] = None,
                    device: Union[str, torch.device] = "cpu") -> PromptClassifier:
    """A ``PromptClassifier`` from a DPLTrain output folder (or the individual files).

    run_dir: the train run's folder; or give ``config_file`` (its ``prompt_config.json``) and
    ``checkpoint`` (a ``prompt_learner/model.pth.tar-N``). clip_path / clip_config / backbone
    override the CLIP file, model-config JSON and name recorded in the configuration.
    classnames: replaces the run's classes. epoch: which saved epoch (default: the last).
    """
    config_file = config_file or os.path.join(run_dir, "prompt_config.json")
    art = load_artifact(config_file)
    info = art.get("classifier")
    recorded = art.get("backbone") if isinstance(art.get("backbone"), dict) else {"name": art.get("backbone")}
    if info is None and classnames is None:
        raise ArtifactError(f"Prompt configuration {config_file} has no 'classifier' section (class names "
                            "and preprocessing); use the prompt_config.json of a DPLTrain run folder, or "
                            "pass classnames.")
    info = info or {}
    clip_model = load_clip(backbone or recorded.get("name") or "", clip_path or recorded.get("file") or "",
                           device=device, config=clip_config or ("" if backbone else reload_config(recorded)))
    check_backbone(art, backbone_record(clip_model), config_file)
    check_fits(art, model_dims(clip_model), config_file)
    text_lengths, vision_lengths = lengths_from_artifact(art)
    model = build_fixed_model(clip_model, list(classnames or info["classnames"]), text_lengths,
                              vision_lengths, text_input=info.get("text_input", "default"),
                              dataset_name=info.get("dataset", "")).to(device)
    prompts = checkpoint or find_prompt_checkpoint(run_dir, epoch)
    try:
        model.prompt_learner.load_state_dict(load_prompt_state(prompts), strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{prompts} does not hold the prompts of the configuration {config_file} "
                            f"({' '.join(str(exc).split())[:200]}); give the files of one DPLTrain run.") from None
    pre = {**preprocess_of(clip_model), **info.get("input", {})}
    transform = eval_transform(pre["size"], pre["mean"], pre["std"], pre["interpolation"],
                               pre.get("normalize", True))
    return PromptClassifier(model, transform, device)
