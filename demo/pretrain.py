"""Contrastively pretrain the demo's micro-CLIP on the procedural world (about 2 min on 2 CPU cores).

The result is an ordinary OpenAI-format checkpoint (``dpl.clip_loader.save_openai_checkpoint``)
that ``load_clip("demo", path)`` reads like any real CLIP. It is built once and cached under
``~/.cache/dpl/demo-clip-<config-hash>.pt`` (directory overridable with ``$DPL_DEMO_CACHE``).

    python -m demo.pretrain [--out PATH] [--steps N] [--quick]

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
from dpl.clip_loader import load_clip, save_openai_checkpoint

# Bump when the drawing code or the training loop changes, so caches are rebuilt (the world's
# constants, the captions and DemoClipConfig are hashed already).
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
    """Everything that determines the checkpoint; its hash names the cache file."""

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
QUICK = replace(FULL, steps=300)   # for tests: learns colour, shape only a little


# --------------------------------------------------------------------------- cache + entry point

def default_cache_dir() -> str:
    return os.path.expanduser(os.environ.get("DPL_DEMO_CACHE", "~/.cache/dpl"))


def checkpoint_path(config: DemoClipConfig, cache_dir: Optional[str] = None) -> str:
    return os.path.join(cache_dir or default_cache_dir(), f"demo-clip-{config.digest()}.pt")


def get_demo_clip(cache_dir: Optional[str] = None, quick: bool = False,
                  log: Callable[[str], None] = print) -> str:
    """Path of the demo CLIP checkpoint, pretraining it on first use (minutes; progress is logged).

    cache_dir: where checkpoints live; default ``$DPL_DEMO_CACHE`` or ``~/.cache/dpl``.
    quick: a shorter pretraining (for tests), cached under its own name.
    """
    config = QUICK if quick else FULL
    path = checkpoint_path(config, cache_dir)
    if not os.path.isfile(path):
        minutes = max(1, round(config.steps / 550))   # ~0.11 s per step on 2 idle CPU cores
        log(f"[demo] pretraining the demo CLIP: first use only, {config.steps} steps, about "
            f"{minutes} min on 2 CPU cores -> {path}")
        save_openai_checkpoint(pretrain(config, log=log), path)
    return path


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
    parser.add_argument("--out", default="", help="checkpoint file (default: the cache path)")
    parser.add_argument("--steps", type=int, default=0, help="override the number of steps")
    parser.add_argument("--quick", action="store_true", help="the short test-suite pretraining")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.steps:
        config = replace(config, steps=args.steps)
    out = args.out or checkpoint_path(config)
    start = time.time()
    model = pretrain(config)
    save_openai_checkpoint(model, out)
    print(f"[demo] saved {out} ({_hms(time.time() - start)})")
    report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
