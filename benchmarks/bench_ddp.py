"""Class-sharded text encoding under torchrun: per-rank text cost of one DPLSearch step, 2 ranks vs
1 process on the same classes (issue 17 §1). Prints ratios (expect ~0.5), never asserts.

The text tower has ViT-B/16's sizes (width 512, 8 heads, 77 tokens; ``--layers`` of its 12 blocks:
each block costs the same, so the ratio does not depend on the depth) with C = ``--classes``
class prompts and the paper's text options 0/2/4/6 mixed by α. Per rank it measures the time of
``encode_text()`` forward + backward (through the differentiable all-gather; CPU time of the
process, so other load on the machine does not count) and the bytes autograd saves for the
backward pass. The 2 ranks are gloo processes on this machine (spawned here).

    python benchmarks/bench_ddp.py [--classes 1000] [--layers 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dassl.utils.distributed import close_distributed, init_distributed  # noqa: E402
from dpl.model import build_supernet_model  # noqa: E402
from tests.helpers.ddp import run_ranks  # noqa: E402
from tests.helpers.tiny_clip import TinyClipSpec, build_tiny_clip  # noqa: E402

OPTIONS = [0, 2, 4, 6]


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves while ``fn()`` runs (the activation memory)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def measure(rank: int, args, out_dir: str) -> None:
    """Time and activation memory of this process's text pass; written to ``out_dir``."""
    torch.set_num_threads(args.threads)
    if rank >= 0:
        init_distributed(use_cuda=False)
    spec = TinyClipSpec(text_width=512, text_layers=args.layers, embed_dim=512)
    clip_model = build_tiny_clip(spec, seed=0)
    classes = [f"class {i}" for i in range(args.classes)]
    model = build_supernet_model(clip_model, classes, OPTIONS, [0], prompt_init="normal")
    times = []
    for _ in range(args.repeats):
        start = time.process_time()  # CPU time: fair on a machine shared with other work
        memory, text = saved_bytes(model.encode_text)
        text.square().sum().backward()
        times.append(time.process_time() - start)
        del text
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as fh:
        fh.write(f"{statistics.median(times)} {memory}\n")
    if rank >= 0:
        close_distributed()


def read(path):
    seconds, memory = open(path).read().split()
    return float(seconds), int(memory)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=1, help="text blocks (ViT-B/16 has 12)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        measure(-1, args, tmp)
        run_ranks(measure, 2, args, tmp)
        one = read(os.path.join(tmp, "rank-1.txt"))
        ranks = [read(os.path.join(tmp, f"rank{r}.txt")) for r in range(2)]
    print(f"text pass of one DPLSearch step: {args.classes} classes, width 512, {args.layers} "
          f"block(s), options {OPTIONS}, {args.threads} thread(s) per process")
    print(f"1 process : {one[0]:.2f} s CPU, {one[1] / 2**20:.0f} MiB saved for backward")
    for r, (sec, mem) in enumerate(ranks):
        print(f"rank {r}/2  : {sec:.2f} s CPU, {mem / 2**20:.0f} MiB saved for backward "
              f"-> time ratio {sec / one[0]:.2f}, memory ratio {mem / one[1]:.2f}")


if __name__ == "__main__":
    main()
