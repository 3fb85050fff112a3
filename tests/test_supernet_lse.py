"""ISSUE 16 §3: the fused supernet's kernel path (real tokens via an attention kernel returning the
log-sum-exp, combined exactly with each option's prompt keys) gives the numbers of the explicit
score path and of the reference. On CPU the torch twin "lse-math" runs with gradients and the flex
kernel forward-only; the CUDA tests run "lse-flex" itself."""
import collections
import os
import subprocess
import sys
import types

import pytest
import torch
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock

from dpl import attention
from dpl.attention import mixed_attention_fused, option_segments, real_path_for, supernet_block
from dpl.model import build_supernet_model
from tests.helpers.runs import REPO
from dpl.errors import UserError

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


@pytest.fixture
def fresh_selection(monkeypatch):
    """No DPL_SUPERNET_REAL, no remembered messages, the flex import checked anew, triton present."""
    monkeypatch.delenv("DPL_SUPERNET_REAL", raising=False)
    monkeypatch.setattr(attention, "_said", set())
    monkeypatch.setattr(attention, "_triton_missing", lambda: False)
    attention.flex_import_error.cache_clear()
    yield
    attention.flex_import_error.cache_clear()


def without_aux_request(monkeypatch):
    """Make ``torch.nn.attention.flex_attention`` look like torch 2.5-2.8's: no AuxRequest."""
    old = types.ModuleType("torch.nn.attention.flex_attention")
    old.flex_attention = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "torch.nn.attention.flex_attention", old)
    attention.flex_import_error.cache_clear()


def test_default_is_the_explicit_score_path_on_every_device(fresh_selection, capsys):
    assert real_path_for("cpu") == "scores" and real_path_for("cuda") == "scores"
    assert real_path_for(torch.device("cuda", 0), "scores") == "scores"
    assert capsys.readouterr().out == ""  # nothing to say about the default


def test_flex_is_opt_in_and_runs_on_cuda_when_it_imports(fresh_selection, monkeypatch, capsys):
    assert real_path_for("cuda", "flex") == "lse-flex"
    assert real_path_for("cuda", "flex") == "lse-flex"  # resolved every forward pass, said once
    assert capsys.readouterr().out.splitlines() == [
        "Supernet attention: real tokens through compiled flex_attention "
        "(TRAINER.DPL.SEARCH.REAL_ATTENTION=flex)."]
    monkeypatch.setenv("DPL_SUPERNET_REAL", "flex")  # the environment variable wins over the key
    assert real_path_for("cuda", "scores") == "lse-flex"
    monkeypatch.setenv("DPL_SUPERNET_REAL", "scores")
    assert real_path_for("cuda", "flex") == "scores"
    monkeypatch.setenv("DPL_SUPERNET_REAL", "lse-math")
    assert real_path_for("cuda") == "lse-math"
    monkeypatch.setenv("DPL_SUPERNET_REAL", "fast")
    with pytest.raises(UserError, match="DPL_SUPERNET_REAL='fast' is unknown"):
        real_path_for("cpu")
    monkeypatch.delenv("DPL_SUPERNET_REAL")
    with pytest.raises(UserError, match="REAL_ATTENTION = 'fast' is unknown; use one of"):
        real_path_for("cuda", "fast")


def test_flex_without_aux_request_says_why_in_one_line_and_runs_the_scores(fresh_selection, monkeypatch,
                                                                            capsys):
    without_aux_request(monkeypatch)
    monkeypatch.setenv("DPL_SUPERNET_REAL", "flex")
    assert real_path_for("cuda") == "scores"
    assert real_path_for("cuda") == "scores"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Supernet attention: DPL_SUPERNET_REAL=flex asks for flex_attention, but "
                               f"torch {torch.__version__} has no flex_attention with a log-sum-exp output "
                               "(AuxRequest needs torch >= 2.9")
    assert lines[0].endswith("; the explicit-score path runs instead.")


def test_flex_off_cuda_or_without_triton_runs_the_scores(fresh_selection, monkeypatch, capsys):
    assert real_path_for("cpu", "flex") == "scores"
    monkeypatch.setattr(attention, "_triton_missing", lambda: True)
    assert real_path_for("cuda", "flex") == "scores"
    assert capsys.readouterr().out.splitlines() == [
        "Supernet attention: TRAINER.DPL.SEARCH.REAL_ATTENTION=flex asks for flex_attention, but "
        "flex_attention runs compiled on CUDA only (this model is on cpu); the explicit-score path runs "
        "instead.",
        "Supernet attention: TRAINER.DPL.SEARCH.REAL_ATTENTION=flex asks for flex_attention, but "
        "torch.compile needs triton for CUDA kernels and it is not installed; the explicit-score path "
        "runs instead."]


def test_dpl_and_the_trainers_import_on_a_torch_without_aux_request(tmp_path):
    """torch 2.1-2.8 (no AuxRequest): importing dpl and the trainers works; flex is never imported."""
    code = (
        "import sys, types\n"
        "old = types.ModuleType('torch.nn.attention.flex_attention')\n"
        "sys.modules['torch.nn.attention.flex_attention'] = old\n"
        "import dpl, dpl.attention, dpl.encoders, trainers.dpl_search\n"
        "print(dpl.attention.flex_import_error() is not None, dpl.attention._flex_kernel is None)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


def test_supernet_model_with_flex_requested_on_cpu_says_so_once_and_equals_scores(
        fresh_selection, clip_model, capsys):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    logits = {}
    for real in ("scores", "flex"):
        torch.manual_seed(0)
        model = build_supernet_model(clip_model, ["cat", "dog"], [0, 2], [0, 2], real_attention=real)
        with torch.no_grad():
            logits[real] = model(images)
            model(images)
    assert torch.equal(logits["flex"], logits["scores"])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["Supernet attention: TRAINER.DPL.SEARCH.REAL_ATTENTION=flex asks for flex_attention, "
                     "but flex_attention runs compiled on CUDA only (this model is on cpu); the "
                     "explicit-score path runs instead."]
    with pytest.raises(UserError, match="REAL_ATTENTION\\) = 'fast' is unknown"):
        build_supernet_model(clip_model, ["cat"], [0, 2], [0, 2], real_attention="fast")


def test_search_checks_the_real_attention_key():
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg
    from trainers.dpl_search import DPLSearch, config_hash

    cfg = get_cfg_default()
    extend_cfg(cfg)
    assert cfg.TRAINER.DPL.SEARCH.REAL_ATTENTION == "scores"
    before = config_hash(cfg)
    cfg.TRAINER.DPL.SEARCH.REAL_ATTENTION = "flex"
    DPLSearch.check_cfg(None, cfg)
    assert config_hash(cfg) == before  # a kernel choice, not another search: resume works across it
    cfg.TRAINER.DPL.SEARCH.REAL_ATTENTION = "lse-flex"
    with pytest.raises(UserError, match="TRAINER.DPL.SEARCH.REAL_ATTENTION = 'lse-flex' is unknown; use "
                                        "one of \\('scores', 'flex'\\)"):
        DPLSearch.check_cfg(None, cfg)


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
def test_cuda_default_is_the_scores_path_and_flex_is_chosen_when_asked(monkeypatch):
    monkeypatch.delenv("DPL_SUPERNET_REAL", raising=False)
    assert real_path_for(torch.device("cuda", 0)) == "scores"
    assert real_path_for(torch.device("cuda", 0), "flex") == "lse-flex"  # torch >= 2.9 with triton


# --- the compiled flex path: how many graphs one run makes ------------------------------------------

Aux = collections.namedtuple("Aux", "lse")


def flex_twin(q, k, v, score_mod=None, block_mask=None, scale=None, return_aux=None):
    """flex_attention's numbers written in torch, with gradients on the CPU (PyTorch's CPU flex has no
    backward); score_mod is applied to the whole score tensor through broadcast index tensors."""
    B, H, L, _ = q.shape
    s = (q @ k.transpose(-1, -2)).float() * scale
    if score_mod is not None:
        idx = [torch.arange(n).view(*(-1 if i == j else 1 for j in range(4)))
               for i, n in enumerate((B, H, L, k.shape[-2]))]
        s = score_mod(s, *idx)
    lse = torch.logsumexp(s, dim=-1)
    return (torch.exp(s - lse.unsqueeze(-1)).to(v.dtype) @ v), Aux(lse)


class GraphCounter:
    """A torch.compile backend that counts the graphs it is given and runs them as they are (eager)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward


@pytest.fixture
def counted_flex(monkeypatch, fresh_selection):
    """The flex path enabled on this CPU, compiled exactly as on CUDA but with a counting backend
    (no C compiler needed); Dynamo fails loudly instead of falling back past FLEX_GRAPH_BOUND."""
    import torch._dynamo

    counter = GraphCounter()
    torch._dynamo.reset()
    compiled = torch.compile(attention._flex_lse, backend=counter, dynamic=False)
    monkeypatch.setattr(attention, "flex_unusable_reason", lambda device: None)
    monkeypatch.setattr(attention, "_flex_runner", lambda device_type: compiled)
    with torch._dynamo.config.patch(recompile_limit=attention.FLEX_GRAPH_BOUND,
                                    fail_on_recompile_limit_hit=True):
        yield counter
    torch._dynamo.reset()


CLASSES = ["cat", "golden retriever", "hot air balloon over the sea"]  # names of different lengths


def search_like_run(model, autocast_dtype, device="cpu"):
    """What a search does to the supernet: prompt and α steps on batches of 4, 3 and a last batch of 1
    (under the PREC's autocast), class-sampled text passes, evaluation without gradients and without
    autocast; logits of each."""
    g = torch.Generator().manual_seed(3)
    params = model.prompt_parameters() + model.arch_parameters()
    out = []
    for epoch in range(2):
        model.train()
        for batch, classes in ((4, None), (3, [0, 1]), (1, [0])):
            images = torch.randn(batch, 3, 32, 32, generator=g).to(device)
            with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(images)
                if classes is not None:  # as the search's class sampling does
                    text = model.encode_text(torch.tensor(classes, device=device))
                    logits = torch.cat([logits.flatten(), text.flatten()])
            grads = torch.autograd.grad(logits.float().square().mean(), params)
            out.append((logits.detach().float(), [gr.float() for gr in grads]))
        model.eval()
        with torch.no_grad():
            out.append((model(torch.randn(3, 3, 32, 32, generator=g).to(device)).float(), []))
    return out


@pytest.mark.parametrize("autocast_dtype, graphs", [(None, 4), (torch.bfloat16, 6)], ids=["fp32", "bf16"])
def test_compiled_flex_graphs_stay_within_the_stated_bound_over_a_search(clip_model, counted_flex,
                                                                         monkeypatch, autocast_dtype,
                                                                         graphs, capsys):
    """Batch sizes 4, 3 and 1 share graphs; what remains is tower x gradient x autocast state, at most
    FLEX_GRAPH_BOUND (< Dynamo's recompile limit of 8, past which it would silently stop compiling).
    flex_attention itself has no CPU backward, so the twin above stands in for the kernel inside the
    very function that is compiled on CUDA."""
    monkeypatch.setattr(attention, "_flex_kernel", flex_twin)
    monkeypatch.setattr(attention, "_aux_request", lambda lse: None)
    runs = {}
    for real in ("scores", "flex"):
        torch.manual_seed(0)
        model = build_supernet_model(clip_model, CLASSES, [0, 2, 4], [0, 2], real_attention=real)
        runs[real] = search_like_run(model, autocast_dtype)
    assert len(counted_flex.graphs) == graphs <= attention.FLEX_GRAPH_BOUND
    shapes = {shape[:3] for graph in counted_flex.graphs for shape in graph if len(shape) == 4}
    # Traced at the first call of each tower: 3 classes (all cut to the longest class prompt), 4 images;
    # the smaller batches (1 padded to 2) and the class samples (2 and 1 classes) reuse those graphs.
    text_tokens = int(model.eot_index.max()) + 1
    assert {s[0] for s in shapes} == {3, 4} and {s[2] for s in shapes} == {text_tokens, 17}
    tol = 1e-5 if autocast_dtype is None else 5e-2  # bf16: relative to each tensor's largest entry
    for (y, gs), (want_y, want_gs) in zip(runs["flex"], runs["scores"]):
        for a, b in zip([y, *gs], [want_y, *want_gs]):
            assert (a - b).abs().max() <= tol * max(1.0, b.abs().max().item())


def test_real_cpu_flex_kernel_makes_one_graph_per_tower_for_every_batch_size(counted_flex):
    """flex_attention itself (forward only on the CPU) through the compiled wrapper: batches of 4, 3, 1
    and 2 for a masked (text-like) and an unmasked (image-like) tower -> 2 graphs, the same numbers as
    the torch twin."""
    g = torch.Generator().manual_seed(0)
    for batch in (4, 3, 1, 2):
        for tokens, masked in ((13, True), (17, False)):
            q, k, v = (torch.randn(batch, 2, tokens, 8, generator=g) for _ in range(3))
            mask = causal(tokens) if masked else None
            with torch.no_grad():
                out, lse = attention.flex_real_attention(q, k, v, mask)
                want, want_lse = attention._real_attention_lse(q, k, v, mask, torch.float32, flex=False)
            assert out.shape == (batch, 2, tokens, 8) and lse.shape == (batch, 2, tokens)
            assert (out - want).abs().max() <= 1e-5 and (lse - want_lse.squeeze(-1)).abs().max() <= 1e-5
    assert len(counted_flex.graphs) == 2


@pytest.mark.cuda
@cuda
def test_cuda_compiled_flex_search_stays_within_the_graph_bound_and_equals_scores(clip_model, monkeypatch):
    """The real thing: inductor-compiled flex_attention, forward and backward, through a search-like
    sequence under amp (fp16 autocast; evaluation in fp32) -- at most FLEX_GRAPH_BOUND graphs, never a
    recompile-limit fallback, and the explicit path's numbers."""
    import copy

    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.delenv("DPL_SUPERNET_REAL", raising=False)
    cuda_clip = copy.deepcopy(clip_model).cuda()
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    runs = {}
    with torch._dynamo.config.patch(recompile_limit=attention.FLEX_GRAPH_BOUND, fail_on_recompile_limit_hit=True):
        for real in ("scores", "flex"):
            torch.manual_seed(0)
            model = build_supernet_model(cuda_clip, CLASSES, [0, 2, 4], [0, 2], real_attention=real)
            runs[real] = search_like_run(model, torch.float16, "cuda")
    graphs = counters["stats"]["unique_graphs"] - before
    torch._dynamo.reset()
    assert 0 < graphs <= attention.FLEX_GRAPH_BOUND
    for (y, gs), (want_y, want_gs) in zip(runs["flex"], runs["scores"]):
        for a, b in zip([y, *gs], [want_y, *want_gs]):
            assert torch.isfinite(a).all() and (a - b).abs().max() <= 2e-2 * max(1.0, b.abs().max().item())


# --- through train.py -------------------------------------------------------------------------------

def test_a_cpu_search_asked_for_flex_says_once_why_and_runs_the_scores(data_root, tiny_clip_path, tmp_path,
                                                                         fresh_selection):
    from tests.helpers.runs import run_train

    out = tmp_path / "search"
    run_train(train_args_for_search(data_root, tiny_clip_path, tmp_path)
              + ["TRAINER.DPL.SEARCH.REAL_ATTENTION", "flex"])
    log = (out / "log.txt").read_text()
    assert [line for line in log.splitlines() if line.startswith("Supernet attention:")] == [
        "Supernet attention: TRAINER.DPL.SEARCH.REAL_ATTENTION=flex asks for flex_attention, but "
        "flex_attention runs compiled on CUDA only (this model is on cpu); the explicit-score path runs "
        "instead."]
    assert (out / "prompt_config.json").is_file()


def test_an_unknown_real_attention_value_is_one_line_and_exit_2(data_root, tiny_clip_path, tmp_path, capsys,
                                                                monkeypatch):
    from tests.test_reliability import run_fails

    msg = run_fails(train_args_for_search(data_root, tiny_clip_path, tmp_path)
                    + ["TRAINER.DPL.SEARCH.REAL_ATTENTION", "flash"], capsys, monkeypatch)
    assert msg == ("TRAINER.DPL.SEARCH.REAL_ATTENTION = 'flash' is unknown; use one of ('scores', 'flex') "
                   "(flex: compiled flex_attention, CUDA only).")
    assert not (tmp_path / "search" / "prompt_config.json").exists()


def train_args_for_search(data_root, tiny_clip_path, tmp_path):
    from tests.helpers.runs import tiny_opts, train_args

    return train_args("DPLSearch", "vit_b16", "dtd", data_root, tmp_path / "search") + \
        tiny_opts(tiny_clip_path, epochs=1)
