"""Checks only a CUDA device can run (marked ``cuda``: skipped without one): fused vs reference on
CUDA, resume on CUDA per precision, deterministic mode, CUDA checkpoints evaluated on the CPU.

``bash scripts/gpu_check.sh`` runs these with ``pytest -m cuda``, together with the precision steps and
the fp16 KD teacher of tests/test_precision.py. Runs use the tiny CLIP and the miniature DTD.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock

from dpl.attention import supernet_block
from tests.helpers.runs import (REPO, final_accuracy, run_killed_after_first_epoch, run_train, tiny_opts,
                                train_args)
# MANUAL: 2 prompt tokens in every block (DPLTrain without a search); data_root: the miniature DTD.
from tests.test_precision import MANUAL

pytestmark = pytest.mark.cuda


def artifact_without_timestamp(path):
    with open(path) as f:
        art = json.load(f)
    art["provenance"].pop("created")
    return art


# --- fused vs reference on CUDA -------------------------------------------------------------------

def cuda_block(width, heads):
    block = ResidualAttentionBlock(width, heads, act_layer=QuickGELU, norm_layer=LayerNorm)
    return block.to("cuda").eval().requires_grad_(False)


def block_outputs(block, x, prompts, alpha, mask, pos, impl, autocast_dtype=None):
    """Output (batch, tokens, width) and gradients wrt x, α and the prompts along a fixed direction."""
    with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
        y = supernet_block(block, x, prompts, alpha.softmax(-1), mask, pos, impl)
    direction = torch.linspace(-1, 1, y.numel(), device="cuda").view_as(y)
    grads = torch.autograd.grad((y.float() * direction).sum(),
                                [x, alpha] + [p for p in prompts if p is not None])
    return y.detach().float(), [g.float() for g in grads]


@pytest.mark.parametrize("autocast_dtype, atol", [(None, 1e-4), (torch.float16, 3e-2),
                                                  (torch.bfloat16, 1.5e-1)], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("branch", ["text", "image"])
def test_fused_supernet_block_equals_reference_on_cuda(branch, autocast_dtype, atol):
    if autocast_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    width, heads, tokens, batch = (256, 4, 77, 6) if branch == "text" else (384, 6, 50, 3)
    block = cuda_block(width, heads)
    mask = torch.full((tokens, tokens), float("-inf"), device="cuda").triu(1) if branch == "text" else None
    pos = 1 if branch == "text" else tokens
    options = [0, 2, 4, 6]
    x = torch.randn(batch, tokens, width, device="cuda", requires_grad=True)
    prompts = [None] + [torch.randn(n, width, device="cuda", requires_grad=True) for n in options[1:]]
    alpha = torch.randn(len(options), device="cuda", requires_grad=True)

    fused, fused_grads = block_outputs(block, x, prompts, alpha, mask, pos, "fused", autocast_dtype)
    reference, ref_grads = block_outputs(block, x, prompts, alpha, mask, pos, "reference", autocast_dtype)
    assert fused.is_cuda and torch.isfinite(fused).all()
    torch.testing.assert_close(fused, reference, atol=atol, rtol=atol)
    for got, expected in zip(fused_grads, ref_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, atol=atol * 10, rtol=atol * 10)


# --- resume on CUDA -------------------------------------------------------------------------------

@pytest.mark.parametrize("prec, atol", [("fp32", 1e-4), ("amp", 1e-3), ("bf16", 1e-3)])
def test_killed_cuda_search_resumes_to_the_uninterrupted_artifact(data_root, tiny_clip_path, tmp_path,
                                                                  monkeypatch, prec, atol):
    """Everything a resume restores (prompts, α, both optimizers, a GradScaler's scale, the RNGs)."""
    from dpl.clip_loader import PRECISIONS
    from trainers.dpl_search import DPLSearch

    if prec not in PRECISIONS or (prec == "bf16" and not torch.cuda.is_bf16_supported()):
        pytest.skip(f"PREC {prec} is not available here")

    def argv(out):
        return (train_args("DPLSearch", "vit_b16", "dtd", data_root, out) + tiny_opts(tiny_clip_path)
                + ["TRAINER.DPL.PREC", prec])

    run_train(argv(tmp_path / "whole"))
    run_killed_after_first_epoch(monkeypatch, DPLSearch, argv(tmp_path / "killed"))
    assert not (tmp_path / "killed" / "prompt_config.json").exists()
    run_train(argv(tmp_path / "killed"))
    whole = artifact_without_timestamp(tmp_path / "whole" / "prompt_config.json")
    resumed = artifact_without_timestamp(tmp_path / "killed" / "prompt_config.json")
    for branch in ("text", "vision"):
        assert resumed[branch]["lengths"] == whole[branch]["lengths"]
        # autotuned cuDNN/cuBLAS kernels may differ between runs: equal up to float noise
        torch.testing.assert_close(torch.tensor(resumed[branch]["alpha"]),
                                   torch.tensor(whole[branch]["alpha"]), atol=atol, rtol=atol)
    assert resumed["provenance"]["epochs_run"] == whole["provenance"]["epochs_run"] == 2


def test_cuda_checkpoint_evaluates_on_the_cpu(data_root, tiny_clip_path, tmp_path):
    trained = tmp_path / "train"
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, trained)
              + tiny_opts(tiny_clip_path, epochs=1) + MANUAL)
    checkpoint = torch.load(trained / "prompt_learner" / "model.pth.tar-1", map_location="cpu",
                            weights_only=True)
    assert checkpoint["state_dict"] and checkpoint["epoch"] == 1
    evaluated = tmp_path / "eval_cpu"
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, evaluated,
                         extra=["--eval-only", "--model-dir", str(trained), "--load-epoch", "1"])
              + tiny_opts(tiny_clip_path) + MANUAL + ["USE_CUDA", "False"])
    # 10 test images: CPU and CUDA float rounding may flip at most a near-tie
    assert abs(final_accuracy(evaluated / "log.txt") - final_accuracy(trained / "log.txt")) <= 10.0


# --- deterministic mode ---------------------------------------------------------------------------

def test_deterministic_mode_repeats_a_cuda_search_exactly(data_root, tiny_clip_path, tmp_path):
    """DPL_DETERMINISTIC=1 must be set before CUDA starts, so each run is its own process."""
    env = dict(os.environ, DPL_DETERMINISTIC="1")
    outputs = []
    for name in ("first", "second"):
        out = tmp_path / name
        argv = train_args("DPLSearch", "vit_b16", "dtd", data_root, out) + tiny_opts(tiny_clip_path)
        proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *argv], cwd=REPO, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "deterministic algorithms on" in (out / "log.txt").read_text() + proc.stdout
        outputs.append(out)
    first, second = outputs
    assert (artifact_without_timestamp(first / "prompt_config.json")
            == artifact_without_timestamp(second / "prompt_config.json"))
    assert (first / "alpha_history.json").read_text() == (second / "alpha_history.json").read_text()
