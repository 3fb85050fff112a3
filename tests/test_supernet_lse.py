"""ISSUE 16 §3: the fused supernet's kernel path (real tokens via an attention kernel returning the
log-sum-exp, combined exactly with each option's prompt keys) gives the numbers of the explicit
score path and of the reference. On CPU the torch twin "lse-math" runs with gradients and the flex
kernel forward-only; the CUDA tests run "lse-flex" itself."""
import pytest
import torch
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock

from dpl.attention import mixed_attention_fused, option_segments, real_path_for, supernet_block

OPTIONS = [[0, 2, 4, 6], [0, 1, 2, 3, 4, 5, 6], [0, 3]]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def make_block(width=96, heads=3, dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    block = ResidualAttentionBlock(width, heads, act_layer=QuickGELU, norm_layer=LayerNorm)
    block = block.to(device=device, dtype=dtype).eval()
    for p in block.parameters():
        p.requires_grad_(False)
    return block


def inputs(options, width=96, batch=2, tokens=11, dtype=torch.float32, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(1)
    x = (scale * torch.randn(batch, tokens, width, generator=g, dtype=dtype)).to(device).requires_grad_()
    prompts = [None] + [(scale * torch.randn(c, width, generator=g, dtype=dtype)).to(device).requires_grad_()
                        for c in options[1:]]
    alpha = torch.randn(len(options), generator=g, dtype=dtype).to(device).requires_grad_()
    return x, prompts, alpha


def run(block, x, prompts, alpha, mask, impl, monkeypatch, real):
    monkeypatch.setenv("DPL_SUPERNET_REAL", real)
    y = supernet_block(block, x, prompts, alpha.softmax(-1), mask, 1 if mask is not None else x.shape[1],
                       impl)
    w = torch.linspace(-1, 1, y.numel(), device=y.device, dtype=y.dtype).view_as(y)
    grads = torch.autograd.grad((y * w).sum(), [x, alpha] + [p for p in prompts if p is not None])
    return y.detach(), grads


def causal(tokens, device="cpu", dtype=torch.float32):
    return torch.full((tokens, tokens), float("-inf"), device=device, dtype=dtype).triu(1)


@pytest.mark.parametrize("masked", [True, False], ids=["causal", "nomask"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o)))
def test_lse_combine_equals_scores_and_reference(options, masked, monkeypatch):
    block = make_block()
    x, prompts, alpha = inputs(options)
    mask = causal(x.shape[1]) if masked else None
    want_y, want_g = run(block, x, prompts, alpha, mask, "reference", monkeypatch, "scores")
    for real in ("scores", "lse-math"):
        y, g = run(block, x, prompts, alpha, mask, "fused", monkeypatch, real)
        assert (y - want_y).abs().max() <= 1e-5, real
        for a, b in zip(g, want_g):
            assert (a - b).abs().max() <= 1e-5, real


def test_lse_combine_is_exact_in_float64_and_stable_with_large_logits(monkeypatch):
    block = make_block(dtype=torch.float64)
    x, prompts, alpha = inputs([0, 2, 5], dtype=torch.float64)
    mask = causal(x.shape[1], dtype=torch.float64)
    ref, ref_g = run(block, x, prompts, alpha, mask, "reference", monkeypatch, "scores")
    y, g = run(block, x, prompts, alpha, mask, "fused", monkeypatch, "lse-math")
    assert (y - ref).abs().max() <= 1e-12 and all((a - b).abs().max() <= 1e-10 for a, b in zip(g, ref_g))
    # Huge attention logits (prompts 300x the tokens' scale): still finite and equal.
    block32 = make_block()
    with torch.no_grad():
        block32.attn.in_proj_weight.mul_(30.0)
    x, prompts, alpha = inputs([0, 2, 5], scale=10.0)
    want, _ = run(block32, x, prompts, alpha, causal(x.shape[1]), "reference", monkeypatch, "scores")
    got, grads = run(block32, x, prompts, alpha, causal(x.shape[1]), "fused", monkeypatch, "lse-math")
    assert torch.isfinite(got).all() and all(torch.isfinite(t).all() for t in grads)
    assert ((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_flex_kernel_forward_on_cpu_gives_the_same_numbers():
    """flex_attention's own log-sum-exp feeds the combine (no backward on CPU: PyTorch has none)."""
    block = make_block()
    x, prompts, alpha = inputs([0, 2, 4, 6])
    cat, segment = option_segments(prompts, "cpu")
    with torch.no_grad():
        h = block.ln_1(x)
        args = (block.attn, h, block.ln_1(cat), segment, alpha.softmax(-1), causal(x.shape[1]))
        want = mixed_attention_fused(*args, real="scores")
        got = mixed_attention_fused(*args, real="lse-flex")
    assert (got - want).abs().max() <= 1e-5


def test_real_path_follows_the_device_and_the_override(monkeypatch):
    monkeypatch.delenv("DPL_SUPERNET_REAL", raising=False)
    assert real_path_for("cpu") == "scores" and real_path_for("cuda") == "lse-flex"
    monkeypatch.setenv("DPL_SUPERNET_REAL", "lse-math")
    assert real_path_for("cuda") == "lse-math"
    monkeypatch.setenv("DPL_SUPERNET_REAL", "fast")
    with pytest.raises(ValueError, match="DPL_SUPERNET_REAL='fast'"):
        real_path_for("cpu")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("masked", [True, False], ids=["causal", "nomask"])
def test_cuda_flex_path_equals_reference(masked, monkeypatch):
    block = make_block(device="cuda")
    x, prompts, alpha = inputs([0, 2, 4, 6], tokens=77 if masked else 197, device="cuda")
    mask = causal(x.shape[1], device="cuda") if masked else None
    want_y, want_g = run(block, x, prompts, alpha, mask, "reference", monkeypatch, "scores")
    y, g = run(block, x, prompts, alpha, mask, "fused", monkeypatch, "lse-flex")
    assert (y - want_y).abs().max() <= 1e-4
    for a, b in zip(g, want_g):
        assert (a - b).abs().max() <= 1e-4


@pytest.mark.cuda
@cuda
def test_cuda_default_is_the_flex_path(monkeypatch):
    monkeypatch.delenv("DPL_SUPERNET_REAL", raising=False)
    assert real_path_for(torch.device("cuda", 0)) == "lse-flex"
