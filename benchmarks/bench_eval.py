"""Evaluation cost: encode the class prompts once per pass vs once per test batch (docs/PERFORMANCE.md).

A tiny random-init CLIP (the test-suite's ``TinyClipSpec``), 1000 classes, a prompted DPL model, a
synthetic test set. Counts text-encoder calls per evaluation pass and times both strategies; the
two must give the same predictions. Prints, never asserts.

    python benchmarks/bench_eval.py [--classes 1000] [--batches 20] [--batch-size 50]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dpl.model import build_fixed_model, model_dims  # noqa: E402
from tests.helpers.tiny_clip import TinyClipSpec, build_tiny_clip  # noqa: E402


def count_calls(module: torch.nn.Module) -> list:
    """Wrap ``module.forward`` so every call appends to the returned list."""
    calls, original = [], module.forward

    def forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    module.forward = forward
    return calls


@torch.no_grad()
def evaluate(model, batches, once_per_pass: bool) -> torch.Tensor:
    """One evaluation pass -> predictions (N,)."""
    text = model.encode_text() if once_per_pass else None
    return torch.cat([model(images, text_features=text).argmax(dim=1) for images in batches])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=50)
    args = ap.parse_args(argv)

    spec = TinyClipSpec()
    clip_model = build_tiny_clip(spec, seed=0)
    for p in clip_model.parameters():
        p.requires_grad_(False)
    dims = model_dims(clip_model)
    model = build_fixed_model(clip_model, [f"class_{i}" for i in range(args.classes)],
                              [2] * dims["text"]["num_blocks"], [2] * dims["vision"]["num_blocks"])
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch_size, 3, spec.image_size, spec.image_size, generator=g)
               for _ in range(args.batches)]
    calls = count_calls(model.text_encoder)

    results = {}
    for name, once in (("once per pass", True), ("per test batch", False)):
        evaluate(model, batches[:1], once)  # warm-up
        calls.clear()
        t0 = time.perf_counter()
        preds = evaluate(model, batches, once)
        results[name] = (len(calls), time.perf_counter() - t0, preds)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tiny CLIP (text "
          f"{dims['text']}, vision {dims['vision']}), {args.classes} classes, "
          f"{args.batches} batches x {args.batch_size} images")
    for name, (n, dt, _) in results.items():
        print(f"  {name:<15} text-encoder calls per pass: {n:3d}   time {dt:7.2f} s")
    (_, t_once, p_once), (_, t_each, p_each) = results.values()
    print(f"  speed-up from encoding once: {t_each / t_once:.1f}x; identical predictions: "
          f"{bool(torch.equal(p_once, p_each))}")


if __name__ == "__main__":
    main()
