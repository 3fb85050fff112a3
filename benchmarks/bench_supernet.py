"""Cost of one supernet block: fused vs reference (one attention per option) vs a single prompt.

Forward + backward of a whole frozen block (attention + MLP) at ViT-B/16 sizes, random weights:
image block (batch 4, 197 tokens, width 768, 12 heads) and text block (100 class prompts, 77
tokens, width 512, 8 heads, causal mask). Gradients flow to the prompts, α and the block input (as
in the search, where earlier blocks hold prompts too). Prints median times, ratios measured in the
same run (wall-clock, and CPU time of the process, which is steadier on a shared machine;
with ``--threads 1`` it is the single-core time), activation memory (bytes saved for backward, de-duplicated by storage; on CUDA also
``torch.cuda.max_memory_allocated``) and the max output difference fused vs reference.
The fused block runs its default path (explicit (B, H, L, L) scores); on CUDA with torch >= 2.9 it
is also timed with the opt-in kernel path (real tokens through compiled flex_attention with the
log-sum-exp, ``dpl.attention.real_path_for``).
Never asserts anything (targets: fused >= 2.5x faster than reference at 7 options,
>= 1.8x at 4, <= 1.5x the single-option block, lower memory).

    python benchmarks/bench_supernet.py [--quick] [--repeats N] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dpl.attention import flex_unusable_reason, prompted_block, supernet_block  # noqa: E402

OPTION_SETS = {"[0..6]": [0, 1, 2, 3, 4, 5, 6], "[0,2,4,6]": [0, 2, 4, 6]}


def make_block(width: int, heads: int, device) -> ResidualAttentionBlock:
    block = ResidualAttentionBlock(width, heads, act_layer=QuickGELU).to(device).eval()
    for p in block.parameters():
        p.requires_grad_(False)
    return block


class SavedBytes:
    """Bytes of the tensors autograd saves for backward (unique storages): activation memory."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        s = t.untyped_storage()
        self.storages[(s.data_ptr(), t.device)] = s.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def run_case(fn, x, params, device, measure_memory=False):
    """One forward + backward -> (wall s, CPU s of this process, saved bytes, CUDA peak bytes)."""
    for p in params + [x]:
        p.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    saved = SavedBytes() if measure_memory else None
    t0, c0 = time.perf_counter(), time.process_time()
    if saved is not None:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            y = fn()
    else:
        y = fn()
    y.square().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return dt, dc, (saved.total if saved else None), peak


def bench_branch(name, batch, tokens, width, heads, causal, options, repeats, device):
    torch.manual_seed(0)
    block = make_block(width, heads, device)
    x = torch.randn(batch, tokens, width, device=device, requires_grad=True)
    mask = torch.full((tokens, tokens), float("-inf"), device=device).triu(1) if causal else None
    pos = 1 if causal else tokens
    prompts = [None] + [torch.randn(c, width, device=device, requires_grad=True) for c in options[1:]]
    alpha = (1e-3 * torch.randn(len(options), device=device)).requires_grad_()
    single = torch.randn(max(options), width, device=device, requires_grad=True)
    params = [p for p in prompts if p is not None] + [alpha]

    cases = {
        "reference": (lambda: supernet_block(block, x, prompts, alpha.softmax(-1), mask, pos,
                                             "reference"), params),
        "fused": (lambda: supernet_block(block, x, prompts, alpha.softmax(-1), mask, pos, "fused"),
                  params),
        f"single (len {max(options)})": (lambda: prompted_block(block, x, single, mask, pos), [single]),
    }
    flex_reason = flex_unusable_reason(device)
    if flex_reason is None:  # the opt-in kernel path vs the default explicit scores
        cases["fused (flex)"] = (lambda: supernet_block(block, x, prompts, alpha.softmax(-1), mask, pos,
                                                        "fused", real="lse-flex"), params)
    with torch.no_grad():
        diff = (cases["fused"][0]() - cases["reference"][0]()).abs().max().item()

    wall, cpu, memory = {k: [] for k in cases}, {k: [] for k in cases}, {}
    for k, (fn, ps) in cases.items():  # warm-up + memory
        run_case(fn, x, ps, device)
        memory[k] = run_case(fn, x, ps, device, measure_memory=True)[2:]
    for _ in range(repeats):  # interleaved, so load drift hits every case alike
        for k, (fn, ps) in cases.items():
            dt, dc, _, _ = run_case(fn, x, ps, device)
            wall[k].append(dt)
            cpu[k].append(dc)
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}

    single_key = list(cases)[2]  # "single (len n)"
    print(f"\n{name} block: batch {batch}, {tokens} tokens, width {width}, {heads} heads, "
          f"options {options}")
    for k in cases:
        saved, peak = memory[k]
        extra = f", CUDA peak {peak / 2**20:7.1f} MiB" if peak is not None else ""
        print(f"  {k:<16} wall {med[k] * 1e3:8.1f} ms   CPU {med_cpu[k] * 1e3:8.1f} ms   "
              f"saved-for-backward {saved / 2**20:7.1f} MiB{extra}")
    for label, m in (("wall", med), ("CPU", med_cpu)):
        print(f"  [{label:>4}] fused vs reference: {m['reference'] / m['fused']:.2f}x faster   "
              f"fused / single: {m['fused'] / m[single_key]:.2f}x")
    if "fused (flex)" in cases:
        print(f"  fused with flex_attention (opt-in) vs explicit scores (default): "
              f"{med['fused'] / med['fused (flex)']:.2f}x faster, memory "
              f"{memory['fused (flex)'][0] / memory['fused'][0]:.2f}x")
    elif device.type == "cuda":
        print(f"  flex_attention path not timed: {flex_reason}")
    print(f"  memory fused / reference: {memory['fused'][0] / memory['reference'][0]:.2f}   "
          f"max |fused - reference| = {diff:.2e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches and fewer repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # gpu_check's CPU test
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (3 if args.quick else 7)
    img_batch, text_batch = (1, 20) if args.quick else (4, 100)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"median of {repeats} forward+backward runs")
    for label, options in OPTION_SETS.items():
        print(f"\n=== options {label} ===")
        if args.tiny:  # tiny widths: exercises the same code in about a second on a CPU
            bench_branch("image", 1, 17, 64, 1, False, options, 1, device)
            bench_branch("text", 4, 77, 64, 1, True, options, 1, device)
            continue
        bench_branch("image", img_batch, 197, 768, 12, False, options, repeats, device)
        bench_branch("text", text_batch, 77, 512, 8, True, options, repeats, device)


if __name__ == "__main__":
    main()
