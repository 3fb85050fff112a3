"""The recipe of the demo's micro-CLIP: contrastive pretraining on the procedural world.

Nothing pretrains on first use any more: every machine loads the same committed weights,
``demo/weights/demo-clip.safetensors`` (4 image / 3 text blocks) and
``demo/weights/demo-clip-depth12.safetensors`` (12 and 12, as ViT-B/16), whose SHA-256 are
``SHIPPED`` below and in docs/DEMO.md. ``get_demo_clip()`` returns the verified path; the files are
ordinary OpenAI-format state dicts that ``load_clip("demo", path)`` reads like any real CLIP.

This module is how they were made (docs/DEMO.md gives the exact commands, threads and torch):

    python -m demo.pretrain --variant base|depth12 [--out PATH] [--threads 1]

What makes it cheap enough for 2 CPU cores:
- 32x32 images with 8x8 patches: 17 image tokens per image, drawn fresh each step in ~10 ms.
- The text tower is causal and pools at the end-of-text token, so tokens after the longest
  caption never influence the features; training runs it on that short prefix of the 77-token
  context (exactly the same function, see ``encode_text_prefix``).
- Fused AdamW (the 49408-row token embedding would otherwise dominate the update).
Captions that are true of several images in a batch ("a photo of a red circle." for every red
circle) are all positives of the contrastive loss, not false negatives.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from open_clip import tokenize
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from demo import world
from dpl.clip_loader import load_clip
from dpl.errors import UserError

# Bump when the drawing code or the training loop changes (recorded in the exported file; the
# world's constants, the captions and DemoClipConfig are hashed by ``digest``).
RECIPE_VERSION = 1

# Pretraining captions; the slots a template names are the attributes it asserts about the image.
TEMPLATES: Tuple[str, ...] = (
    "a photo of a {color} {shape}.",
    "a photo of a {size} {color} {shape}.",
    "a {size} {color} {shape} on a {background} background.",
    "a {color} {shape} on a {background} background.",
    "a photo of a {shape}.",
    "a photo of a {color} object.",
)
ATTRIBUTES = ("size", "color", "shape", "background")  # column order of CaptionBank.required


@dataclass(frozen=True)
class DemoClipConfig:
    """Everything that determines the checkpoint (``digest`` hashes it with the world)."""

    seed: int = 0
    image_size: int = world.IMAGE_SIZE
    patch_size: int = 8            # 4x4 grid -> 17 image tokens
    vision_width: int = 64         # heads = width // 64 (OpenAI checkpoint convention)
    vision_layers: int = 4
    text_width: int = 64
    text_layers: int = 3
    embed_dim: int = 64
    context_length: int = 77       # CLIP's; training uses only the caption prefix
    vocab_size: int = 49408        # CLIP's BPE tokenizer
    steps: int = 1200
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 40
    weight_decay: float = 0.1

    def digest(self) -> str:
        blob = json.dumps({"recipe": RECIPE_VERSION, "world": world.fingerprint(),
                           "templates": TEMPLATES, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


FULL = DemoClipConfig()
QUICK = replace(FULL, steps=300)   # learns colour, shape only a little
# 12 blocks in each tower, as ViT-B/16: the searched α spans as many blocks as in the paper.
DEPTH12 = replace(FULL, vision_layers=12, text_layers=12)
VARIANTS = {"base": FULL, "depth12": DEPTH12, "quick": QUICK}


# --------------------------------------------------------------------------- shipped weights

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


@dataclass(frozen=True)
class ShippedWeights:
    """A committed checkpoint: file name under demo/weights/ and the SHA-256 of its bytes."""

    variant: str
    file: str
    sha256: str
    config: DemoClipConfig

    @property
    def path(self) -> str:
        return os.path.join(WEIGHTS_DIR, self.file)


# The weights every machine uses (made once by this module's recipe; see docs/DEMO.md).
SHIPPED: Dict[str, ShippedWeights] = {
    "base": ShippedWeights("base", "demo-clip.safetensors",
                           "32eec73e33fa7286fcf275912153b1a8d2484ec6e3f78e4ce07b1c306eb27b3c", FULL),
    "depth12": ShippedWeights("depth12", "demo-clip-depth12.safetensors",
                              "b14113c876d922c623977d41ddcd57df4e01effdca8e99426e033193bcb05635", DEPTH12),
}


class DemoWeightsError(UserError):
    """The shipped demo weights are missing or differ from the committed bytes."""


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_demo_clip(variant: str = "base", log: Optional[Callable[[str], None]] = None) -> str:
    """Path of the shipped demo CLIP weights, after checking their SHA-256 (nothing is trained).

    variant: "base" (4 image / 3 text blocks) or "depth12" (12 blocks in each tower, as ViT-B/16).
    log: if given, receives one line naming the file and its verified hash.
    """
    if variant not in SHIPPED:
        raise DemoWeightsError(f"demo CLIP variant {variant!r} does not exist; use one of "
                               f"{', '.join(SHIPPED)}.")
    shipped = SHIPPED[variant]
    if not os.path.isfile(shipped.path):
        raise DemoWeightsError(f"{shipped.path} is missing; restore it with "
                               f"`git checkout -- demo/weights/{shipped.file}`.")
    digest = file_sha256(shipped.path)
    if digest != shipped.sha256:
        raise DemoWeightsError(f"{shipped.path} has SHA-256 {digest}, expected {shipped.sha256}; "
                               f"restore it with `git checkout -- demo/weights/{shipped.file}` "
                               "(a Git LFS pointer or a damaged copy cannot be used).")
    if log is not None:
        log(f"[demo] demo CLIP {variant}: {shipped.path} (SHA-256 {digest}, verified)")
    return shipped.path


# --------------------------------------------------------------------------- model

def build_model(config: DemoClipConfig) -> CLIP:
    """A fresh open_clip ``CLIP`` with ViT image tower, QuickGELU, OpenAI head width 64."""
    for name in ("vision_width", "text_width"):
        if getattr(config, name) % 64:
            raise ValueError(f"DemoClipConfig.{name}={getattr(config, name)} must be a multiple "
                             "of 64: OpenAI checkpoints are rebuilt with heads = width // 64.")
    vision = CLIPVisionCfg(layers=config.vision_layers, width=config.vision_width,
                           patch_size=config.patch_size, image_size=config.image_size)
    text = CLIPTextCfg(context_length=config.context_length, vocab_size=config.vocab_size,
                       width=config.text_width, heads=config.text_width // 64,
                       layers=config.text_layers)
    return CLIP(config.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)


def encode_text_prefix(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on the first L of its 77 positions. tokens: (n, L) long -> (n, embed).

    Equal to ``encode_text`` on the zero-padded 77-token input whenever every end-of-text token
    lies within the prefix: attention is causal and features are read at that token.
    """
    length = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]   # end-of-text has the largest id
    return x @ model.text_projection


_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)  # CLIP's pixel stats
_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> float normalised like CLIP (and Dassl's ``normalize`` transform)."""
    return (images.float() / 255 - _MEAN) / _STD


# --------------------------------------------------------------------------- captions

@dataclass
class CaptionBank:
    """Every distinct pretraining caption, tokenized once."""

    tokens: torch.Tensor     # (m, L) long: the captions' prefix of CLIP's 77-token context
    required: torch.Tensor   # (m, 4) long: attribute value each caption asserts, -1 = says nothing
    lookup: torch.Tensor     # (templates, sizes, colors, shapes, backgrounds) -> caption index


def build_caption_bank() -> CaptionBank:
    """Tokenize every caption the templates can produce, once (a few hundred)."""
    names = {"size": world.SIZE_NAMES, "color": world.COLOR_NAMES, "shape": world.SHAPES,
             "background": world.BACKGROUNDS}
    dims = [len(TEMPLATES)] + [len(names[a]) for a in ATTRIBUTES]
    lookup = torch.empty(dims, dtype=torch.long)
    texts, required, index = [], [], {}
    for flat, (t, *values) in enumerate(itertools.product(*map(range, dims))):  # row-major
        template = TEMPLATES[t]
        asserted = [v if "{" + a + "}" in template else -1 for a, v in zip(ATTRIBUTES, values)]
        key = (t, *asserted)
        if key not in index:
            index[key] = len(texts)
            texts.append(template.format(**{a: names[a][v] for a, v in zip(ATTRIBUTES, asserted)
                                            if v >= 0}))
            required.append(asserted)
        lookup.view(-1)[flat] = index[key]
    tokens = tokenize(texts)
    length = int((tokens > 0).sum(1).max())
    return CaptionBank(tokens[:, :length], torch.tensor(required), lookup)


def positives(bank: CaptionBank, scenes: world.Scenes, captions: torch.Tensor) -> torch.Tensor:
    """(n, n) bool: caption j is true of image i (every attribute it asserts matches)."""
    attrs = torch.stack([scenes.size, scenes.color, scenes.shape, scenes.background], 1)  # (n, 4)
    req = bank.required[captions]                                                      # (n, 4)
    return ((req[None] < 0) | (req[None] == attrs[:, None])).all(-1)


# --------------------------------------------------------------------------- training

def pretrain(config: DemoClipConfig = FULL, log: Callable[[str], None] = print) -> CLIP:
    """Train a micro-CLIP from scratch on the world; deterministic from ``config.seed``.

    Uses its own RNGs: the caller's global torch RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)              # open_clip initialises from the global RNG
        model = build_model(config).train()
    bank = build_caption_bank()
    combos = world.seen_combos()
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(model, config)
    start = time.time()
    every = max(1, config.steps // 20)
    for step in range(1, config.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config)
        scenes = world.sample_scenes(config.batch_size, gen, combos)
        images = normalize_images(world.render(scenes, gen, config.image_size))
        template = torch.randint(len(TEMPLATES), (config.batch_size,), generator=gen)
        captions = bank.lookup[template, scenes.size, scenes.color, scenes.shape, scenes.background]
        loss = _contrastive_loss(model, images, bank.tokens[captions],
                                 positives(bank, scenes, captions))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % every == 0 or step == 1 or step == config.steps:
            log(f"[demo] step {step}/{config.steps}  loss {loss.item():.3f}  "
                f"elapsed {_hms(time.time() - start)}")
    return model.eval()


def _contrastive_loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor,
                      pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row/column. pos: (n, n) image x caption."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(encode_text_prefix(model, tokens), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.t()                   # (n images, n captions)
    target = pos.float()
    i2t = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    t2i = -(target / target.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
    return (i2t + t2i) / 2


def _optimizer(model: CLIP, config: DemoClipConfig) -> torch.optim.Optimizer:
    # Decay matrices only; norms, biases, embeddings and the temperature are left alone.
    decay, rest = [], []
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or "embedding" in name or name in ("logit_scale", "visual.class_embedding")
        (rest if no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    try:  # the fused kernel is ~6x faster on CPU (the 49408-row token embedding dominates)
        return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):  # older torch: no fused AdamW for this device
        return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_factor(step: int, config: DemoClipConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step <= config.warmup_steps:
        return step / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------- export

def trained_token_ids(bank: Optional[CaptionBank] = None) -> torch.Tensor:
    """(k,) long: the token ids that occur in some pretraining caption (sorted)."""
    bank = bank or build_caption_bank()
    return torch.unique(bank.tokens[bank.tokens > 0])


def export_weights(model: CLIP, path: str, config: DemoClipConfig) -> str:
    """Write ``model`` as the shipped file: an OpenAI-format state dict, every tensor fp16, in
    ``.safetensors``; returns the SHA-256 of the bytes written (atomically).

    Rows of the token embedding for tokens that no pretraining caption contains are zeroed: no
    gradient ever reached them (AdamW leaves them at their random initialisation), and zeros keep
    the committed file compressible. Every demo class name and template uses trained tokens only.
    """
    from safetensors.torch import save as safetensors_bytes

    from dpl.io import atomic_open

    lp = copy.deepcopy(model).cpu().float()
    state = {k: v.detach().contiguous() for k, v in lp.state_dict().items() if k != "attn_mask"}
    keep = torch.zeros(state["token_embedding.weight"].shape[0], dtype=torch.bool)
    keep[trained_token_ids()] = True
    state["token_embedding.weight"][~keep] = 0
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in sorted(state.items())}
    # One metadata entry: safetensors writes its metadata map in hash order, so two keys would
    # make the bytes (and the SHA-256) differ from run to run.
    recipe = json.dumps({"recipe_version": RECIPE_VERSION, **asdict(config)}, sort_keys=True)
    blob = safetensors_bytes(state, metadata={"recipe": recipe})
    with atomic_open(path, "wb") as fh:
        fh.write(blob)
    return hashlib.sha256(blob).hexdigest()


# --------------------------------------------------------------------------- report

@torch.no_grad()
def zero_shot_accuracy(model: CLIP, task: world.DemoTask, split: str = "test",
                       template: str = "a photo of a {}.") -> float:
    """Top-1 zero-shot accuracy of ``model`` on a demo task's split (images drawn in memory)."""
    images, labels = world.task_split(task, split)
    text = F.normalize(model.encode_text(tokenize([template.format(c) for c in task.classnames])), dim=-1)
    image = F.normalize(model.encode_image(normalize_images(images)), dim=-1)
    return ((image @ text.t()).argmax(1) == labels).float().mean().item()


def report(path: str, log: Callable[[str], None] = print) -> Dict[str, float]:
    """Load a checkpoint like any CLIP and log zero-shot test accuracy per demo task vs chance."""
    model = load_clip("demo", path)
    results = {}
    for name, task in world.TASKS.items():
        results[name] = acc = zero_shot_accuracy(model, task)
        log(f"[demo] zero-shot {name}: {100 * acc:.1f}% ({len(task.classes)} classes, "
            f"chance {100 / len(task.classes):.1f}%)")
    return results


# --------------------------------------------------------------------------- CLI

def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="base",
                        help="base: 4 image / 3 text blocks; depth12: 12 and 12; quick: 300 steps")
    parser.add_argument("--out", default="",
                        help="weights file (default output/demo-clip-<variant>.safetensors; the "
                             "shipped files under demo/weights/ are never overwritten by default)")
    parser.add_argument("--steps", type=int, default=0, help="override the number of steps")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as the shipped weights were made: the "
                             "reduction order, hence the bits, depend on it)")
    parser.add_argument("--from-state", default="",
                        help="export an fp32 state dict saved by --raw instead of pretraining")
    parser.add_argument("--raw", default="", help="also save the fp32 state dict here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = VARIANTS[args.variant]
    if args.steps:
        config = replace(config, steps=args.steps)
    out = args.out or os.path.join("output", f"demo-clip-{args.variant}.safetensors")
    start = time.time()
    if args.from_state:
        model = build_model(config)
        model.load_state_dict(torch.load(args.from_state, map_location="cpu", weights_only=True))
        model.eval()
    else:
        model = pretrain(config)
    if args.raw:
        torch.save(model.state_dict(), args.raw)
    digest = export_weights(model, out, config)
    print(f"[demo] saved {out} ({_hms(time.time() - start)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s))")
    print(f"[demo] SHA-256 {digest}")
    shipped = SHIPPED.get(args.variant)
    if shipped is not None and config == shipped.config:
        same = "equals" if digest == shipped.sha256 else "differs from"
        print(f"[demo] this {same} the shipped demo/weights/{shipped.file} ({shipped.sha256})")
    report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
