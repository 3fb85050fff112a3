"""Prompted attention inside one frozen open_clip residual block (docs/METHOD.md: the prompted and the supernet block).

A prompt ``P`` (c, width) of block i is an extra set of key/value tokens: the queries are the L real
tokens only, keys/values are ``LN1`` of the real tokens together with ``LN1(P)``. Every query may see
every prompt token; the block's own mask (causal for text) applies among the real tokens. Prompt
outputs are never computed, so the sequence length never changes.

Public functions (all batch-first; x is ``(batch, L, width)``):

- ``prompted_block(block, x, prompt, mask, prompt_pos)``: one block with one prompt (train stage).
- ``supernet_block(block, x, prompts, weights, mask, prompt_pos, impl)``: one block whose attention
  output is ``sum_k weights[k] * Attn(Q, KV_k)`` (search stage), then the MLP once.
- ``mixed_attention_reference`` / ``mixed_attention_fused``: the two implementations of that mixture.
  The reference runs one full ``nn.MultiheadAttention`` call per option. The fused one projects the
  real tokens and scores token against token once, scores every option's prompt keys once, and
  combines each option's softmax exactly from per-option partial sums (log-sum-exp with a per-option
  running max), then applies the output projection once (it is linear).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dpl.errors import UserError

IMPLS = ("fused", "reference")


# ----------------------------------------------------------------------------------------------
# Checks and small helpers
# ----------------------------------------------------------------------------------------------
def check_block(block: nn.Module) -> None:
    """Raise if ``block`` is not an open_clip block with a plain packed ``nn.MultiheadAttention``."""
    attn = getattr(block, "attn", None)
    for name in ("ln_1", "ln_2", "mlp"):
        if not hasattr(block, name):
            raise TypeError(f"{type(block).__name__} has no `{name}`; prompted blocks need open_clip's "
                            "ResidualAttentionBlock (ln_1, attn, ln_2, mlp).")
    if not isinstance(attn, nn.MultiheadAttention):
        raise TypeError(f"{type(block).__name__}.attn is {type(attn).__name__}, not "
                        "nn.MultiheadAttention; custom-attention open_clip blocks are not supported.")
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        raise TypeError("Prompted blocks need nn.MultiheadAttention with packed in_proj_weight, "
                        "no bias_k/bias_v and add_zero_attn=False (as in CLIP).")


def additive_mask(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """(L, S) mask -> additive float mask; a bool mask marks *blocked* positions (PyTorch's rule)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def insert_prompts(tokens: torch.Tensor, prompts: torch.Tensor, pos: int) -> torch.Tensor:
    """Insert ``prompts`` (B, c, W) into ``tokens`` (B, L, W) before index ``pos`` -> (B, L+c, W)."""
    return torch.cat([tokens[:, :pos], prompts, tokens[:, pos:]], dim=1)


def prompt_kv_mask(mask: Optional[torch.Tensor], num_prompts: int, pos: int) -> Optional[torch.Tensor]:
    """Extend an additive (L, L) mask over real keys to (L, L+c): prompt columns (at ``pos``) are 0.

    That is, every query may attend to every prompt token; the real-token mask is unchanged.
    """
    if mask is None:
        return None
    visible = mask.new_zeros(mask.shape[0], num_prompts)
    return torch.cat([mask[:, :pos], visible, mask[:, pos:]], dim=1)


def _has_tokens(prompt: Optional[torch.Tensor]) -> bool:
    return prompt is not None and prompt.shape[0] > 0


def _mha(attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
         mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``attn(q, kv, kv)`` for batch-first tensors whatever ``attn.batch_first`` is."""
    if not attn.batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    out = attn(q, kv, kv, need_weights=False, attn_mask=mask)[0]
    return out if attn.batch_first else out.transpose(0, 1)


def _mlp_residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + block.ls_2(block.mlp(block.ln_2(x)))


# ----------------------------------------------------------------------------------------------
# Single prompt per block (fixed configuration)
# ----------------------------------------------------------------------------------------------
def prompted_attention(block: nn.Module, h: torch.Tensor, prompt: Optional[torch.Tensor],
                       mask: Optional[torch.Tensor] = None, prompt_pos: int = 1) -> torch.Tensor:
    """Attention output (before the residual) for queries ``h = LN1(x)`` (B, L, W).

    prompt: raw prompt tokens (c, W) or None; they get ``LN1`` here. mask: (L, L) over real tokens.
    prompt_pos: where the prompts sit in the key sequence (text: 1, after SOS; image: L). The
    position does not change the result (attention is a set operation over keys); it is kept so the
    key sequence is literally the one docs/METHOD.md ("The prompted block") describes.
    """
    mask = additive_mask(mask, h.dtype)
    if not _has_tokens(prompt):
        return _mha(block.attn, h, h, mask)
    p = block.ln_1(prompt.to(h.dtype)).unsqueeze(0).expand(h.shape[0], -1, -1)  # (B, c, W)
    kv = insert_prompts(h, p, prompt_pos)
    return _mha(block.attn, h, kv, prompt_kv_mask(mask, prompt.shape[0], prompt_pos))


def prompted_block(block: nn.Module, x: torch.Tensor, prompt: Optional[torch.Tensor] = None,
                   mask: Optional[torch.Tensor] = None, prompt_pos: int = 1) -> torch.Tensor:
    """One frozen block with key/value prompts: (B, L, W) -> (B, L, W).

    A missing or zero-length prompt runs the frozen block itself (exactly CLIP).
    """
    if not _has_tokens(prompt):
        return block(x, attn_mask=mask)
    x = x + block.ls_1(prompted_attention(block, block.ln_1(x), prompt, mask, prompt_pos))
    return _mlp_residual(block, x)


# ----------------------------------------------------------------------------------------------
# Mixture of options per block (supernet)
# ----------------------------------------------------------------------------------------------
def mixed_attention_reference(block: nn.Module, h: torch.Tensor,
                              prompts: Sequence[Optional[torch.Tensor]], weights: torch.Tensor,
                              mask: Optional[torch.Tensor] = None, prompt_pos: int = 1) -> torch.Tensor:
    """``sum_k weights[k] * Attn(h, KV_k)`` with one full attention call per option (B, L, W).

    prompts[k]: raw prompt of option k (c_k, W), or None / empty for "no prompt".
    weights: (K,) mixture weights (softmax of the block's α row).
    """
    out = 0
    for k, prompt in enumerate(prompts):
        out = out + weights[k].to(h.dtype) * prompted_attention(block, h, prompt, mask, prompt_pos)
    return out


# How the fused path computes the real-token part (see ``mixed_attention_fused``):
# "scores": explicit (B, H, L, L) scores, the default on every device (what the CPU tests cover);
# "lse-math": softmax output + log-sum-exp written in torch (the CPU twin of the kernel path, for
# tests); "lse-flex": PyTorch's flex_attention kernel returning the log-sum-exp (compiled; CUDA
# only, opt-in). Users choose between "scores" and "flex" (TRAINER.DPL.SEARCH.REAL_ATTENTION);
# the environment variable DPL_SUPERNET_REAL overrides that choice and also takes the path names.
REAL_PATHS = ("scores", "lse-math", "lse-flex")
REAL_CHOICES = ("scores", "flex")  # TRAINER.DPL.SEARCH.REAL_ATTENTION
_ALIASES = {"flex": "lse-flex"}
_said: set = set()


def _say_once(message: str) -> None:
    """Print ``message`` the first time only (the path is resolved at every forward pass)."""
    if message not in _said:
        _said.add(message)
        print(message, flush=True)


@functools.lru_cache(maxsize=None)
def flex_import_error() -> Optional[str]:
    """None when flex_attention with a log-sum-exp output can be imported, else why not.

    Imported here, lazily: ``AuxRequest`` exists from torch 2.9 on, and importing dpl must work on
    every torch the requirements allow."""
    try:
        from torch.nn.attention.flex_attention import AuxRequest, flex_attention  # noqa: F401
    except ImportError as error:
        return (f"torch {torch.__version__} has no flex_attention with a log-sum-exp output "
                f"(AuxRequest needs torch >= 2.9; {error})")
    return None


def flex_unusable_reason(device) -> Optional[str]:
    """None when the flex path can run on ``device``, else one clause saying why not."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"flex_attention runs compiled on CUDA only (this model is on {device.type})"
    reason = flex_import_error()
    if reason is None and _triton_missing():
        reason = "torch.compile needs triton for CUDA kernels and it is not installed"
    return reason


def _triton_missing() -> bool:
    return importlib.util.find_spec("triton") is None


def real_path_for(device, requested: str = "scores") -> str:
    """The real-token path (one of ``REAL_PATHS``) for tensors on ``device``.

    requested: "scores" or "flex" (TRAINER.DPL.SEARCH.REAL_ATTENTION; "lse-math"/"lse-flex" are
    accepted too). DPL_SUPERNET_REAL, when set, wins. "flex" runs only where it can (CUDA, a torch
    with ``AuxRequest``, triton); elsewhere one line says why and the explicit-score path runs.
    """
    source = "TRAINER.DPL.SEARCH.REAL_ATTENTION"
    forced = os.environ.get("DPL_SUPERNET_REAL", "")
    if forced:
        requested, source = forced, "DPL_SUPERNET_REAL"
    path = _ALIASES.get(requested, requested)
    if path not in REAL_PATHS:
        if source == "DPL_SUPERNET_REAL":
            raise UserError(f"The environment variable DPL_SUPERNET_REAL={forced!r} is unknown; set "
                            f"one of {REAL_CHOICES + REAL_PATHS[1:]} or unset it.")
        raise UserError(f"{source} = {requested!r} is unknown; use one of {REAL_CHOICES}.")
    if path == "lse-flex":
        reason = flex_unusable_reason(device)
        if reason is not None:
            _say_once(f"Supernet attention: {source}={requested} asks for flex_attention, but {reason}; "
                      "the explicit-score path runs instead.")
            return "scores"
        _say_once(f"Supernet attention: real tokens through compiled flex_attention ({source}={requested}).")
    return path


def mixed_attention_fused(attn: nn.MultiheadAttention, h: torch.Tensor, prompt_h: torch.Tensor,
                          segment: torch.Tensor, weights: torch.Tensor,
                          mask: Optional[torch.Tensor] = None, real: str = "auto") -> torch.Tensor:
    """The same mixture as ``mixed_attention_reference``, sharing all real-token work.

    h: (B, L, W) queries/real keys, already ``LN1``. prompt_h: (P, W) the prompts of all options
    concatenated, already ``LN1``. segment: (P,) long, the option index of each prompt token.
    weights: (K,). mask: (L, L) over real tokens (bool or additive). real: one of ``REAL_PATHS`` or
    "auto" (``real_path_for(h.device)``: the explicit scores unless DPL_SUPERNET_REAL asks for
    another path); all give the same numbers (tests check to 1e-5).

    For option k with running max ``m_k`` (per query and head), its softmax denominator is
    ``Z_k = exp(m0 - m_k) * sum_j exp(s_j - m0) + sum_{p in k} exp(s_p - m_k)``, so the mixture is
    ``R * (e0 @ V) + (r_seg * e_p) @ V_p`` with ``r_k = w_k / Z_k`` and
    ``R = sum_k r_k exp(m0 - m_k)``. Every ``m_k`` is the max over what option k sees, so nothing
    underflows; the maxima are constants of the exact result and are detached.
    """
    B, L, W = h.shape
    H = attn.num_heads
    d = W // H
    num_p = prompt_h.shape[0]
    w_in, b_in = attn.in_proj_weight, attn.in_proj_bias

    q, k, v = F.linear(h, w_in, b_in).view(B, L, 3, H, d).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d)
    kp, vp = F.linear(prompt_h.to(h.dtype), w_in[W:], None if b_in is None else b_in[W:]) \
        .view(num_p, 2, H, d).permute(1, 2, 0, 3)                                  # 2 x (H, P, d)
    q = q * d ** -0.5
    # Softmax bookkeeping in at least fp32 whatever the compute dtype (amp / fp16 weights).
    acc = torch.promote_types(q.dtype, torch.float32)
    mask = additive_mask(mask, acc)
    real = real_path_for(h.device) if real == "auto" else real
    if real == "scores":
        out = _mixture_from_scores(q, k, v, kp, vp, segment, weights, mask, acc)
    elif real in ("lse-math", "lse-flex"):
        o0, lse0 = _real_attention_lse(q, k, v, mask, acc, real == "lse-flex")
        out = _mixture_from_lse(o0, lse0, q, kp, vp, segment, weights, acc)
    else:
        raise ValueError(f"real must be one of {REAL_PATHS} or 'auto', got {real!r}.")

    out = out.transpose(1, 2).reshape(B, L, W)
    # Output projection once (linear); its bias scales with the total weight (1 for a softmax).
    bias = attn.out_proj.bias
    return F.linear(out, attn.out_proj.weight,
                    None if bias is None else bias * weights.sum().to(bias.dtype))


def _mixture_from_scores(q, k, v, kp, vp, segment, weights, mask, acc) -> torch.Tensor:
    """Explicit-score path: (B, H, L, d) mixture of the options' attention outputs."""
    B, H, L, _ = q.shape
    num_opts, num_p = weights.shape[0], kp.shape[-2]
    s = (q @ k.transpose(-1, -2)).to(acc)                                         # (B, H, L, L)
    if mask is not None:
        s = s + mask
    sp = (q @ kp.transpose(-1, -2)).to(acc)                                       # (B, H, L, P)

    idx = segment.view(1, 1, 1, num_p).expand(B, H, L, num_p)
    m0 = s.detach().amax(dim=-1, keepdim=True)                                    # (B, H, L, 1)
    mk = m0.expand(B, H, L, num_opts).scatter_reduce(-1, idx, sp.detach(), "amax")  # (B, H, L, K)
    e0 = torch.exp(s - m0)                                                        # masked -> 0
    ep = torch.exp(sp - mk.gather(-1, idx))
    decay = torch.exp(m0 - mk)                                                    # <= 1
    z = e0.sum(dim=-1, keepdim=True) * decay + \
        ep.new_zeros(B, H, L, num_opts).scatter_add(-1, idx, ep)                  # (B, H, L, K) >= 1
    r = weights.to(acc) / z
    r0 = (r * decay).sum(dim=-1, keepdim=True)                                    # (B, H, L, 1)
    # r0 is per row, so scale the (L, d) product rather than the (L, L) weights.
    return (e0.to(v.dtype) @ v) * r0.to(v.dtype) + (ep * r.gather(-1, idx)).to(vp.dtype) @ vp


def _real_attention_lse(q, k, v, mask, acc, flex: bool) -> tuple:
    """Softmax attention among the real tokens only: output (B, H, L, d) and log-sum-exp
    (B, H, L, 1) of the scores, from flex_attention (a fused kernel, no (L, L) tensor kept) or
    written out in torch (same numbers; CPU tests run this twin)."""
    if flex:
        o0, lse0 = flex_real_attention(q, k, v, mask)
        return o0, lse0.unsqueeze(-1).to(acc)
    s = (q @ k.transpose(-1, -2)).to(acc)
    if mask is not None:
        s = s + mask
    lse0 = torch.logsumexp(s, dim=-1, keepdim=True)
    return torch.exp(s - lse0).to(v.dtype) @ v, lse0


# How many graphs the compiled flex path makes. Past Dynamo's recompile_limit (8 per code object)
# Dynamo silently runs the function uncompiled, i.e. flex_attention's slow reference, so the count
# must stay bounded:
# - batch size: no graph of its own. The batch dimension is marked dynamic, and a batch of 1 (which
#   Dynamo would specialise) is padded to 2. Inputs are packed so that their strides follow from
#   their sizes and never differ between calls (Dynamo guards on strides, size-1 dims included).
# - sequence length, heads, head size: static (the best kernels) and fixed per run: the image
#   length by the model, the text length by the dataset's class prompts, which the model cuts once
#   to max(EOT) + 1 of all classes (class samples and rank shards keep that length).
# - the tower: text (causal mask as score_mod, its length) or image (none) -> 2 variants.
# - gradient: calls whose output needs none run under no_grad, so "grad mode off" (evaluation) and
#   "grad on but no input requires grad" (the first block) are one state -> 2 variants.
# - dtype: the kernel always runs with autocast off, in the dtype of its inputs. Training passes
#   give the run's PREC dtype; evaluation runs without autocast, so under amp / bf16 its fp32
#   inputs make one more state, only without gradients -> +1 per tower there.
# Per process: 2 x 2 = 4 graphs for PREC fp32 / fp16, 4 + 2 = 6 for amp / bf16 (a test checks it).
FLEX_GRAPH_BOUND = 6

_flex_kernel = None  # torch.nn.attention.flex_attention.flex_attention, imported on first use
_aux_request = None  # ... and its AuxRequest


def _flex_lse(q, k, v, mask):
    """What gets compiled: flex_attention's output (B, H, L, d) and log-sum-exp (B, H, L)."""
    score_mod = None if mask is None else (lambda score, b, h, qi, kv: score + mask[qi, kv])
    out, aux = _flex_kernel(q, k, v, score_mod=score_mod, scale=1.0, return_aux=_aux_request(lse=True))
    return out, aux.lse


def _load_flex() -> None:
    global _flex_kernel, _aux_request
    if _flex_kernel is None:
        from torch.nn.attention.flex_attention import AuxRequest, flex_attention

        _flex_kernel, _aux_request = flex_attention, AuxRequest


@functools.lru_cache(maxsize=None)
def _compiled_flex_lse():
    # dynamic=False: no automatic dynamic shapes (lengths stay static); the batch dimension is
    # dynamic because flex_real_attention marks it so (mark_dynamic is honoured with dynamic=False).
    return torch.compile(_flex_lse, dynamic=False)


def _flex_runner(device_type: str):
    """The compiled function on CUDA; on the CPU flex_attention's eager reference (forward only:
    PyTorch has no flex backward on CPU), used by tests."""
    return _compiled_flex_lse() if device_type == "cuda" else _flex_lse


def _packed(t: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of a new contiguous tensor. ``contiguous()`` alone may keep any stride
    of a size-1 dim (one attention head), and Dynamo would compile a graph for each such layout."""
    t = t.contiguous()
    want, step = [], 1
    for size in reversed(t.shape):
        want.append(step)
        step *= size
    return t if list(t.stride()) == want[::-1] else t.new_empty(t.shape).copy_(t)


def flex_real_attention(q, k, v, mask=None) -> tuple:
    """flex_attention over (B, H, L, d) queries/keys/values with an additive (L, L) ``mask`` (or
    None) and scale 1: output (B, H, L, d) and log-sum-exp (B, H, L), through one compiled graph
    whatever the batch size (see FLEX_GRAPH_BOUND)."""
    import torch._dynamo  # noqa: F401  (mark_dynamic)

    _load_flex()
    batch = q.shape[0]
    q, k, v = (_packed(torch.cat([t, t]) if batch == 1 else t) for t in (q, k, v))
    for t in (q, k, v):
        torch._dynamo.mark_dynamic(t, 0)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    # Autocast off: q, k, v already have the dtype the kernel should use (the projections ran under
    # the caller's autocast), and the compiled graph then never depends on the autocast state.
    with torch.autocast(q.device.type, enabled=False), torch.set_grad_enabled(needs_grad):
        out, lse = _flex_runner(q.device.type)(q, k, v, mask)
    return (out[:1], lse[:1]) if batch == 1 else (out, lse)


def _mixture_from_lse(o0, lse0, q, kp, vp, segment, weights, acc) -> torch.Tensor:
    """Combine the real tokens' softmax output ``o0`` and log-sum-exp ``lse0`` exactly with each
    option's prompt keys: (B, H, L, d).

    ``log Z_k = logaddexp(lse0, logsumexp_{p in k} s_p)``; the mixture is
    ``sum_k w_k exp(lse0 - log Z_k) * o0 + sum_p w_seg(p) exp(s_p - log Z_seg(p)) v_p``. The shift
    ``m_k = max(lse0, max_{p in k} s_p)`` is detached (a constant of the exact result); every
    exponent is <= 0.
    """
    B, H, L, _ = o0.shape
    num_opts, num_p = weights.shape[0], kp.shape[-2]
    sp = (q @ kp.transpose(-1, -2)).to(acc)                                       # (B, H, L, P)
    idx = segment.view(1, 1, 1, num_p).expand(B, H, L, num_p)
    mk = lse0.detach().expand(B, H, L, num_opts).scatter_reduce(-1, idx, sp.detach(), "amax")
    z = torch.exp(lse0 - mk) + \
        sp.new_zeros(B, H, L, num_opts).scatter_add(-1, idx, torch.exp(sp - mk.gather(-1, idx)))
    log_z = mk + torch.log(z)                                                     # (B, H, L, K)
    w = weights.to(acc)
    c0 = (w * torch.exp(lse0 - log_z)).sum(dim=-1, keepdim=True)                  # (B, H, L, 1)
    cp = w[segment] * torch.exp(sp - log_z.gather(-1, idx))                       # (B, H, L, P)
    return o0 * c0.to(o0.dtype) + cp.to(vp.dtype) @ vp


def option_segments(prompts: Sequence[Optional[torch.Tensor]], device) -> tuple:
    """Concatenate the options' prompts -> (P, W) tensor (or None) and (P,) option indices."""
    parts = [(k, p) for k, p in enumerate(prompts) if _has_tokens(p)]
    if not parts:
        return None, None
    layout = tuple((k, p.shape[0]) for k, p in parts)
    return torch.cat([p for _, p in parts], dim=0), _segment_ids(layout, torch.device(device))


@functools.lru_cache(maxsize=64)
def _segment_ids(layout: tuple, device: torch.device) -> torch.Tensor:
    """(option, length) pairs -> (P,) option index per prompt token; cached (same every block)."""
    return torch.tensor([k for k, n in layout for _ in range(n)], dtype=torch.long, device=device)


def supernet_block(block: nn.Module, x: torch.Tensor, prompts: Sequence[Optional[torch.Tensor]],
                   weights: torch.Tensor, mask: Optional[torch.Tensor] = None, prompt_pos: int = 1,
                   impl: str = "fused", real: str = "auto") -> torch.Tensor:
    """One frozen block whose attention is a weighted mixture over prompt options: (B, L, W).

    ``x + sum_k weights[k] * Attn(LN1(x), KV_k)``, then ``+ MLP(LN2(.))`` once.
    prompts: one entry per option (None / empty for length 0). weights: (K,), e.g. softmax(α_i).
    impl: "fused" (default, shared projections) or "reference" (one attention call per option).
    real: the fused path's real-token computation (``REAL_PATHS``; "auto" picks by device).
    """
    if len(prompts) != weights.shape[0]:
        raise ValueError(f"supernet_block got {len(prompts)} prompts but {weights.shape[0]} weights.")
    h = block.ln_1(x)
    if impl == "reference":
        a = mixed_attention_reference(block, h, prompts, weights, mask, prompt_pos)
    elif impl == "fused":
        cat, segment = option_segments(prompts, x.device)
        if cat is None:  # no option has tokens: every option is plain self-attention
            a = weights.sum().to(h.dtype) * _mha(block.attn, h, h, additive_mask(mask, h.dtype))
        else:
            a = mixed_attention_fused(block.attn, h, block.ln_1(cat.to(h.dtype)), segment, weights, mask,
                                      real)
    else:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}.")
    return _mlp_residual(block, x + block.ls_1(a))
