"""The supernet (docs/METHOD.md, "The supernet block"): one-hot α == fixed configuration; fused == reference."""
import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock

from dpl.attention import prompted_block, supernet_block
from dpl.model import build_fixed_model, build_supernet_model

CLASSNAMES = ["golden_retriever", "cat", "hot air balloon"]
OPTION_LISTS = [[0, 2, 4, 6], [0, 1, 2, 3, 4, 5, 6], [0, 3]]


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _free_block(width=96, heads=3, seed=0):
    """A standalone open_clip block with 3 heads (the tiny CLIP has 1 and 2)."""
    torch.manual_seed(seed)
    block = ResidualAttentionBlock(width, heads, act_layer=QuickGELU, norm_layer=LayerNorm).eval()
    for p in block.parameters():
        p.requires_grad_(False)
    return block


def _case(clip_model, branch):
    """(block, width, mask, prompt_pos) for a text block, an image block or a 3-head block."""
    if branch == "text":
        return clip_model.transformer.resblocks[1], 64, clip_model.attn_mask, 1
    if branch == "image":
        return clip_model.visual.transformer.resblocks[0], 128, None, 17
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(17, 17, generator=g) > 0.6        # bool: True = blocked
    mask.fill_diagonal_(False)                          # every query keeps one real key
    return _free_block(), 96, mask, 17


def _inputs(options, width, batch, tokens, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, width, generator=g).requires_grad_()
    prompts = [None] + [torch.randn(c, width, generator=g).requires_grad_() for c in options[1:]]
    alpha = torch.randn(len(options), generator=g).requires_grad_()
    return x, prompts, alpha


def _run(block, x, prompts, alpha, mask, pos, impl):
    y = supernet_block(block, x, prompts, alpha.softmax(-1), mask, pos, impl)
    w = torch.linspace(-1, 1, y.numel()).view_as(y)     # a fixed, non-trivial loss direction
    grads = torch.autograd.grad((y * w).sum(), [x, alpha] + [p for p in prompts if p is not None])
    return y.detach(), grads


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("options", OPTION_LISTS, ids=lambda o: "-".join(map(str, o)))
@pytest.mark.parametrize("branch", ["text", "image", "3heads_boolmask"])
def test_fused_equals_reference_outputs_and_gradients(clip_model, branch, options, batch):
    block, width, mask, pos = _case(clip_model, branch)
    tokens = 77 if branch == "text" else 17
    x, prompts, alpha = _inputs(options, width, batch, tokens)
    y_ref, g_ref = _run(block, x, prompts, alpha, mask, pos, "reference")
    y_fus, g_fus = _run(block, x, prompts, alpha, mask, pos, "fused")
    assert (y_fus - y_ref).abs().max() <= 1e-5
    names = ["input", "alpha"] + [f"prompt len {c}" for c in options[1:]]
    for name, a, b in zip(names, g_fus, g_ref):
        assert b.abs().max() > 1e-4, f"{name}: reference gradient is trivially small"
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_fused_is_exact_in_float64():
    """In float64 the two implementations agree to ~1e-12: the fusion is exact, not approximate."""
    block = _free_block().double()
    x, prompts, alpha = _inputs([0, 1, 2, 3, 4, 5, 6], 96, 2, 17)
    x = x.detach().double().requires_grad_()
    prompts = [None] + [p.detach().double().requires_grad_() for p in prompts[1:]]
    causal = torch.full((17, 17), float("-inf"), dtype=torch.float64).triu(1)
    y_ref, g_ref = _run(block, x, prompts, alpha, causal, 1, "reference")
    y_fus, g_fus = _run(block, x, prompts, alpha, causal, 1, "fused")
    assert (y_fus - y_ref).abs().max() <= 1e-12
    assert max((a - b).abs().max().item() for a, b in zip(g_fus, g_ref)) <= 1e-11


def test_fused_is_stable_with_large_attention_logits():
    """Per-option maxima: with scores of order 1e3 nothing under- or overflows, and fused fp32 is
    as close to the float64 truth as the reference fp32 is."""
    block = _free_block()
    block.ln_1.weight.mul_(40.0)
    x, prompts, alpha = _inputs([0, 2, 4, 6], 96, 2, 17, seed=3)
    y_ref, g_ref = _run(block, x, prompts, alpha, None, 17, "reference")
    y_fus, g_fus = _run(block, x, prompts, alpha, None, 17, "fused")
    x64 = x.detach().double().requires_grad_()
    p64 = [None] + [p.detach().double().requires_grad_() for p in prompts[1:]]
    a64 = alpha.detach().double().requires_grad_()
    y_64, g_64 = _run(copy.deepcopy(block).double(), x64, p64, a64, None, 17, "reference")
    assert torch.isfinite(y_fus).all() and all(torch.isfinite(g).all() for g in g_fus)
    for fus, ref, truth in zip((y_fus, *g_fus), (y_ref, *g_ref), (y_64, *g_64)):
        err_fused = (fus.double() - truth).abs().max()
        err_ref = (ref.double() - truth).abs().max()
        assert err_fused <= 2 * err_ref + 1e-5 * truth.abs().max()


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_one_hot_alpha_equals_fixed_configuration(clip_model, images, impl):
    text_opts, vision_opts = [0, 2, 4, 6], [0, 1, 3]
    supernet = build_supernet_model(clip_model, CLASSNAMES, text_opts, vision_opts, impl=impl)
    choice = {"text": [2, 0, 3], "vision": [2, 1]}       # option index per block
    learner = supernet.prompt_learner
    with torch.no_grad():
        for branch, picks in choice.items():
            alpha = getattr(learner, branch).alpha
            alpha.zero_()
            alpha[torch.arange(len(picks)), torch.tensor(picks)] = 1e4
    lengths = {"text": [text_opts[k] for k in choice["text"]],
               "vision": [vision_opts[k] for k in choice["vision"]]}
    fixed = build_fixed_model(clip_model, CLASSNAMES, lengths["text"], lengths["vision"])
    with torch.no_grad():  # give the fixed model the supernet's chosen prompt tensors
        for branch in ("text", "vision"):
            options = getattr(learner, branch).per_block()
            for i, p in enumerate(getattr(fixed.prompt_learner, branch).per_block()):
                if p is not None:
                    p.copy_(options[i][choice[branch][i]])

    # block by block, on the same inputs
    for branch, blocks, width, mask, pos, tokens in (
            ("text", clip_model.transformer.resblocks, 64, clip_model.attn_mask, 1, 77),
            ("vision", clip_model.visual.transformer.resblocks, 128, None, 17, 17)):
        sup, fix = getattr(learner, branch), getattr(fixed.prompt_learner, branch)
        x = torch.randn(2, tokens, width)
        with torch.no_grad():
            for i, block in enumerate(blocks):
                y_sup = supernet_block(block, x, sup.per_block()[i], sup.weights()[i], mask, pos, impl)
                y_fix = prompted_block(block, x, fix.per_block()[i], mask, pos)
                assert (y_sup - y_fix).abs().max() <= 1e-6, (branch, i)
    with torch.no_grad():
        assert (supernet(images) - fixed(images)).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_supernet_gradients_reach_only_prompts_and_alpha(clip_model, images, impl):
    model = build_supernet_model(clip_model, CLASSNAMES, [0, 2, 4], [0, 1, 3], impl=impl)
    clip_before = {k: v.clone() for k, v in clip_model.state_dict().items()}
    learnable = model.prompt_parameters() + model.arch_parameters()
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in learnable}
    opt = torch.optim.SGD(learnable, lr=1.0)
    model.train()
    F.cross_entropy(model(images), torch.tensor([0, 1, 2])).backward()
    for p in learnable:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip_model.parameters())
    opt.step()
    for k, v in clip_model.state_dict().items():
        assert torch.equal(v, clip_before[k]), k


def test_supernet_model_fused_equals_reference(clip_model, images):
    torch.manual_seed(0)
    fused = build_supernet_model(clip_model, CLASSNAMES, [0, 1, 2, 3], [0, 2, 4], impl="fused")
    ref = build_supernet_model(clip_model, CLASSNAMES, [0, 1, 2, 3], [0, 2, 4], impl="reference")
    ref.prompt_learner.load_state_dict(fused.prompt_learner.state_dict())
    with torch.no_grad():
        for m in (fused, ref):
            for a in m.arch_parameters():
                a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(0)))
    grads = {}
    for name, m in (("fused", fused), ("reference", ref)):
        logits = m(images)
        loss = F.cross_entropy(logits, torch.tensor([2, 0, 1]))
        grads[name] = (logits.detach(), torch.autograd.grad(loss, m.prompt_parameters() +
                                                            m.arch_parameters()))
    assert (grads["fused"][0] - grads["reference"][0]).abs().max() <= 1e-5
    for a, b in zip(grads["fused"][1], grads["reference"][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_supernet_parameters_and_initialisation(clip_model):
    torch.manual_seed(0)
    model = build_supernet_model(clip_model, CLASSNAMES, [0, 2, 4, 6], [0, 1, 3])
    text_alpha, vision_alpha = model.arch_parameters()
    assert text_alpha.shape == (3, 4) and vision_alpha.shape == (2, 3)
    for a in (text_alpha, vision_alpha):
        assert 0 < a.abs().max() < 1e-2                 # 1e-3 * N(0, 1)
    keys = set(model.prompt_learner.state_dict())
    want = {"text.alpha", "vision.alpha"}
    want |= {f"text.prompts.block{i}_len{c}" for i in range(3) for c in (2, 4, 6)}
    want |= {f"vision.prompts.block{i}_len{c}" for i in range(2) for c in (1, 3)}
    assert keys == want                                 # no CLIP weights, no class buffers
    sd = model.prompt_learner.state_dict()
    assert sd["text.prompts.block1_len4"].shape == (4, 64)
    assert sd["vision.prompts.block0_len3"].shape == (3, 128)
    text = torch.cat([p.flatten() for p in model.prompt_learner.text.prompt_parameters()])
    vision = torch.cat([p.flatten() for p in model.prompt_learner.vision.prompt_parameters()])
    assert text.min() >= 0 and text.max() < 1            # official: text U[0, 1)
    assert vision.min() < -1 and vision.max() > 1        # official: image N(0, 1)
    assert model.prompt_parameters()[0] is not text_alpha
    normal = build_supernet_model(clip_model, CLASSNAMES, [0, 6], [0, 6], prompt_init="normal",
                                  prompt_init_std=0.02)
    values = torch.cat([p.flatten() for p in normal.prompt_parameters()])
    assert 0.01 < values.std() < 0.03


def test_supernet_alpha_softmax_weights_sum_to_one(clip_model):
    model = build_supernet_model(clip_model, CLASSNAMES, [0, 2], [0, 2], alpha_init_std=1.0)
    w = model.prompt_learner.text.weights()
    assert w.dtype == torch.float32 and torch.allclose(w.sum(-1), torch.ones(3))


def test_single_option_supernet_is_frozen_clip(clip_model, images):
    """Options [0] only: every block is the frozen block, so the model is zero-shot CLIP."""
    sup = build_supernet_model(clip_model, CLASSNAMES, [0], [0])
    zero = build_fixed_model(clip_model, CLASSNAMES, [0, 0, 0], [0, 0])
    assert sup.prompt_parameters() == []
    with torch.no_grad():
        assert (sup(images) - zero(images)).abs().max() <= 1e-6


def test_amp_autocast_runs(clip_model, images):
    """The caller's autocast is honoured (CPU bfloat16 here; CUDA float16 alike)."""
    model = build_supernet_model(clip_model, CLASSNAMES, [0, 2, 4], [0, 1, 3])
    with torch.no_grad():
        want = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(images)
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs().max() < 0.1 * want.abs().max() + 0.1
    copy.deepcopy(model)  # the model stays copyable (trainers deep-copy for EMA / teachers)
