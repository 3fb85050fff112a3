"""May flex_attention become the fused supernet's default on CUDA? Compare it with the explicit-score path.

    python benchmarks/flex_check.py [--budget SECONDS] [--json FILE]

One fused supernet block (options [0, 2, 4, 6], random frozen weights, ViT-B/16 sizes): text blocks
(width 512, 8 heads, causal mask, 32 class prompts) at 8, 18 and 77 tokens and an image block (width
768, 12 heads, batch 8) at 197 tokens, each in fp32, amp (fp16 autocast) and bf16 (bf16 autocast).
For each, the block runs forward *and* backward once through the explicit-score path (the default)
and once through compiled flex_attention ("lse-flex"); the outputs and the gradients with respect to
the block input, α and every prompt are compared. A comparison passes when, for the output and for
each gradient, ``max |flex - scores| <= TOLERANCE[prec] * max |scores|`` -- or, under amp / bf16, when
flex is at least as close as the explicit path to the same block computed in fp32 (within 1.5x);
the compiled path must also have made at most 2 graphs (with and without gradients) for three batch
sizes, the last of them 1. TF32 is off, so fp32 means fp32 in both paths. Each comparison compiles
its own graphs (the first run of a size pays the compile time; PyTorch caches the kernels on disk,
so a second run is faster): run this script alone with a larger ``--budget`` when the GPU check's
share of time ends before all 12 comparisons.

The last line is the verdict: flex may become the default only when every comparison passed and flex
is faster than the explicit path at 77 and 197 tokens (median forward + backward time). ``--json``
writes the rows and the verdict. Stops starting comparisons after ``--budget`` seconds; any that did
not run leave the verdict undecided. Never changes any default by itself.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "amp", "bf16")
# Order: the sizes a search runs first (CLIP's 77 text tokens, ViT-B/16's 197 image tokens).
CASES = (("text", 77), ("image", 197), ("text", 8), ("text", 18))
TIMED_TOKENS = (77, 197)
TIMED = "/".join(map(str, TIMED_TOKENS))
# max |flex - scores| / max |scores|, per tensor (the output and each gradient), by precision:
# fp32 agrees to rounding; fp16 keeps 11 mantissa bits, bf16 8, and the two paths round differently.
TOLERANCE = {"fp32": 1e-4, "amp": 1e-2, "bf16": 5e-2}
ACCURACY_SLACK = 1.5  # amp / bf16: flex's error vs fp32 may be this many times the explicit path's
MAX_GRAPHS = 2  # per comparison: one graph with gradients, one without, whatever the batch size
OPTIONS = (0, 2, 4, 6)
SIZES = {"text": dict(width=512, heads=8, batch=32), "image": dict(width=768, heads=12, batch=8)}
TINY = {"text": dict(width=32, heads=2, batch=3), "image": dict(width=48, heads=3, batch=2)}


def rel_diff(got, want) -> float:
    """max |got - want| / max |want| (inf when either is not finite)."""
    import torch

    got, want = got.float(), want.float()
    if not (torch.isfinite(got).all() and torch.isfinite(want).all()):
        return math.inf
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1e-30)


def row_ok(row: dict) -> bool:
    """Whether one comparison passed (see the module docstring); ``row`` holds plain numbers."""
    if row.get("error") or row.get("skipped"):
        return False
    if row["graphs"] is not None and row["graphs"] > MAX_GRAPHS:
        return False
    tol = TOLERANCE[row["prec"]]
    if max(row["out_diff"], row["grad_diff"]) <= tol:
        return True
    if row["prec"] == "fp32" or row.get("flex_err") is None:
        return False
    return math.isfinite(row["flex_err"]) and row["flex_err"] <= ACCURACY_SLACK * row["scores_err"]


def verdict(rows: List[dict]) -> dict:
    """{"flex_may_be_default": True / False / None (undecided), "line": one line saying so and why}."""
    ran = [r for r in rows if not r.get("skipped")]
    failed = [r for r in ran if not row_ok(r)]
    tols = ", ".join(f"{p} {TOLERANCE[p]:g}" for p in PRECISIONS)
    name = lambda r: f"{r['branch']} {r['tokens']} {r['prec']}"  # noqa: E731
    if failed:
        why = "; ".join(f"{name(r)}: " + (r["error"] if r.get("error") else
                                          f"graphs {r['graphs']}" if (r["graphs"] or 0) > MAX_GRAPHS else
                                          f"output {r['out_diff']:.1e}, gradients {r['grad_diff']:.1e}")
                        for r in failed[:4])
        return {"flex_may_be_default": False,
                "line": f"flex verdict: NO, keep the explicit-score default: {len(failed)} of {len(rows)} "
                        f"comparisons failed (tolerance {tols} of the largest value): {why}"}
    if len(ran) < len(rows) or not rows:
        return {"flex_may_be_default": None,
                "line": f"flex verdict: UNDECIDED: {len(rows) - len(ran)} of {len(rows)} comparisons did not "
                        f"run (time budget); the {len(ran)} that ran agree"}
    timed = [r for r in ran if r.get("ms_flex") and r.get("ms_scores")]
    speed = (math.exp(statistics.mean(math.log(r["ms_scores"] / r["ms_flex"]) for r in timed))
             if timed else None)
    agree = f"all {len(rows)} comparisons within tolerance ({tols} of the largest value)"
    if speed is None:
        return {"flex_may_be_default": None, "line": f"flex verdict: UNDECIDED: {agree}, but no timing"}
    if speed <= 1.0:
        return {"flex_may_be_default": False,
                "line": f"flex verdict: NO, keep the explicit-score default: {agree}, but flex is slower "
                        f"({speed:.2f}x the explicit path's speed at {TIMED} tokens)"}
    return {"flex_may_be_default": True,
            "line": f"flex verdict: YES, flex may become the default: {agree}; {speed:.2f}x the explicit "
                    f"path's speed at {TIMED} tokens"}


# --- the comparison --------------------------------------------------------------------------------

def _setup(branch, tokens, sizes, device, seed=0):
    import torch
    from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock

    torch.manual_seed(seed)
    s = sizes[branch]
    block = ResidualAttentionBlock(s["width"], s["heads"], act_layer=QuickGELU, norm_layer=LayerNorm)
    block = block.to(device).eval().requires_grad_(False)
    mask = torch.full((tokens, tokens), float("-inf"), device=device).triu(1) if branch == "text" else None
    return block, mask, (1 if branch == "text" else tokens)


def _inputs(batch, tokens, width, device, seed=1):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, width, generator=g).to(device).requires_grad_()
    prompts = [None] + [torch.randn(c, width, generator=g).to(device).requires_grad_() for c in OPTIONS[1:]]
    alpha = (0.5 * torch.randn(len(OPTIONS), generator=g)).to(device).requires_grad_()
    return x, prompts, alpha


def _run(block, x, prompts, alpha, mask, pos, real, prec, device_type):
    """Output (float) and gradients (float) along a fixed direction, one forward + backward."""
    import torch

    from dpl.attention import supernet_block

    dtype = {"amp": torch.float16, "bf16": torch.bfloat16}.get(prec)
    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        y = supernet_block(block, x, prompts, alpha.softmax(-1), mask, pos, "fused", real)
    direction = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    wrt = [x, alpha] + [p for p in prompts if p is not None]
    grads = torch.autograd.grad((y.float() * direction).sum(), wrt)
    return y.detach().float(), [g.float() for g in grads]


def _median_ms(fn, device_type, repeats=5) -> float:
    import torch

    times = []
    for _ in range(repeats):
        if device_type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device_type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def compare(branch, tokens, prec, device, candidate="lse-flex", sizes=SIZES) -> dict:
    """One row: flex (``candidate``) vs the explicit scores at one size and precision."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    row = {"branch": branch, "tokens": tokens, "prec": prec, "graphs": None}
    device_type = torch.device(device).type
    block, mask, pos = _setup(branch, tokens, sizes, device)
    batch, width = sizes[branch]["batch"], sizes[branch]["width"]
    x, prompts, alpha = _inputs(batch, tokens, width, device)
    torch._dynamo.reset()  # each comparison compiles its own graphs: count them alone
    before = counters["stats"]["unique_graphs"]
    y_s, g_s = _run(block, x, prompts, alpha, mask, pos, "scores", prec, device_type)
    y_f, g_f = _run(block, x, prompts, alpha, mask, pos, candidate, prec, device_type)
    row["out_diff"] = rel_diff(y_f, y_s)
    row["grad_diff"] = max(rel_diff(a, b) for a, b in zip(g_f, g_s))
    if prec != "fp32":  # both against the same block in fp32
        y_r, g_r = _run(block, x, prompts, alpha, mask, pos, "scores", "fp32", device_type)
        err = lambda y, g: max([rel_diff(y, y_r)] + [rel_diff(a, b) for a, b in zip(g, g_r)])  # noqa: E731
        row["flex_err"], row["scores_err"] = err(y_f, g_f), err(y_s, g_s)
    # The same compiled function for a smaller batch and a batch of 1; at the timed sizes also an
    # evaluation without gradients (a second graph; the others skip its compile time).
    for b in (max(batch - 1, 1), 1):
        xb, pb, ab = _inputs(b, tokens, width, device, seed=2)
        _run(block, xb, pb, ab, mask, pos, candidate, prec, device_type)
    if tokens in TIMED_TOKENS:
        with torch.no_grad():
            _eval_no_grad(block, x, prompts, alpha, mask, pos, candidate)
    row["graphs"] = counters["stats"]["unique_graphs"] - before
    if tokens in TIMED_TOKENS:
        for real, key in (("scores", "ms_scores"), (candidate, "ms_flex")):
            row[key] = _median_ms(lambda: _run(block, x, prompts, alpha, mask, pos, real, prec, device_type),
                                  device_type)
    return row


def _eval_no_grad(block, x, prompts, alpha, mask, pos, real):
    from dpl.attention import supernet_block

    return supernet_block(block, x.detach(), [None if p is None else p.detach() for p in prompts],
                          alpha.detach().softmax(-1), mask, pos, "fused", real)


def run_all(device, budget_s, candidate="lse-flex", sizes=SIZES, precisions=PRECISIONS, cases=CASES,
            log=print) -> List[dict]:
    start, rows = time.perf_counter(), []
    for branch, tokens in cases:
        for prec in precisions:
            row = {"branch": branch, "tokens": tokens, "prec": prec, "graphs": None}
            if time.perf_counter() - start > budget_s:
                row["skipped"] = "time budget"
            else:
                t0 = time.perf_counter()
                try:
                    row = compare(branch, tokens, prec, device, candidate, sizes)
                except Exception as error:  # a failing kernel is a failed comparison, not a crash
                    first = str(error).splitlines()[0][:200] if str(error) else ""
                    row["error"] = f"{type(error).__name__}: {first}"
                row["seconds"] = round(time.perf_counter() - t0, 1)
            row["ok"] = row_ok(row)
            rows.append(row)
            log(format_row(row))
    return rows


def format_row(row: dict) -> str:
    head = f"  {row['branch']:<5} {row['tokens']:>3} tokens {row['prec']:<4}"
    if row.get("skipped"):
        return f"{head}  skipped ({row['skipped']})"
    if row.get("error"):
        return f"{head}  FAIL  {row['error']}"
    text = (f"{head}  {'ok  ' if row['ok'] else 'FAIL'}  output {row['out_diff']:.1e}, gradients "
            f"{row['grad_diff']:.1e} (tolerance {TOLERANCE[row['prec']]:g}), graphs {row['graphs']}")
    if row.get("flex_err") is not None:
        text += f"; vs fp32: flex {row['flex_err']:.1e}, scores {row['scores_err']:.1e}"
    if row.get("ms_flex"):
        text += f"; {row['ms_scores']:.2f} ms scores, {row['ms_flex']:.2f} ms flex"
    return text + f" [{row.get('seconds', 0):.0f} s]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=150.0, help="seconds after which no comparison starts")
    ap.add_argument("--json", default=None, help="write the rows and the verdict here")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    # The CPU test of this script: the torch twin of the kernel path stands in for flex.
    ap.add_argument("--candidate", default="lse-flex", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from dpl.attention import flex_unusable_reason

    if args.device == "cuda" and not torch.cuda.is_available():
        print("flex_check: no CUDA GPU here; nothing was compared.")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is fp32 in both paths
    torch.backends.cudnn.allow_tf32 = False
    reason = flex_unusable_reason(args.device) if args.candidate == "lse-flex" else None
    if reason is not None:  # e.g. torch < 2.9: flex is simply not an option on this machine
        rows, result = [], {"flex_may_be_default": False,
                            "line": f"flex verdict: NO, flex cannot run here: {reason}"}
    else:
        print(f"flex_check: flex_attention vs explicit scores, forward + backward, options {list(OPTIONS)}; "
              f"torch {torch.__version__}", flush=True)
        precisions = PRECISIONS if args.device == "cuda" else ("fp32", "bf16")
        rows = run_all(args.device, args.budget, args.candidate, TINY if args.tiny else SIZES, precisions,
                       log=lambda line: print(line, flush=True))
        result = verdict(rows)
    if args.json:
        from dpl.io import atomic_write_json

        atomic_write_json(args.json, {"rows": rows, **result}, indent=1)
    print(result["line"])
    # Exit 1 only when a comparison that ran failed (a wrong or broken flex path); "slower", "cannot
    # run here" and "undecided" are answers, not failures.
    return 1 if any(not r["ok"] and not r.get("skipped") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
