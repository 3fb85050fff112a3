"""Mixed precision for the training steps (``TRAINER.<X>.PREC``; the list is ``clip_loader.PRECISIONS``).

- ``fp32``: fp32 weights, no autocast.
- ``fp16``: fp16 CLIP weights (CUDA only), no autocast, no scaler (CoOp's default).
- ``amp``:  fp32 weights, forward under ``torch.autocast`` at the device's default low precision
  (fp16 on CUDA, bf16 on CPU), gradients scaled by a ``GradScaler`` (one per optimizer).
- ``bf16``: fp32 weights, forward under bf16 autocast; bf16 has fp32's range, so no scaler.

Only the forward pass runs under autocast; ``backward()`` and ``step()`` run outside it.
"""
from __future__ import annotations

import contextlib

import torch

from dpl.distributed import SyncedGradScaler

AUTOCAST_PRECISIONS = ("amp", "bf16")


def autocast(prec: str, device_type: str):
    """Context manager for the forward pass of a step at precision ``prec``."""
    if prec == "amp":
        return torch.autocast(device_type=device_type)
    if prec == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def grad_scaler(prec: str, device_type: str):
    """A ``GradScaler`` for PREC amp, else None (fp32, fp16 and bf16 steps are not scaled).
    Under torch.distributed its inf/NaN checks agree across ranks (``SyncedGradScaler``)."""
    return SyncedGradScaler(device_type) if prec == "amp" else None


def scaled_backward(loss: torch.Tensor, scaler, inputs=None, retain_graph: bool = False) -> None:
    """``loss.backward`` (only into ``inputs`` when given), scaled when there is a ``scaler``.
    Call outside autocast."""
    (loss if scaler is None else scaler.scale(loss)).backward(inputs=inputs,
                                                              retain_graph=retain_graph)


def optimizer_step(optimizer, scaler) -> None:
    """``optimizer.step()``, through ``scaler`` when there is one (which unscales the gradients,
    skips a step with inf/NaN gradients and adapts its scale)."""
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


def scaled_step(loss: torch.Tensor, optimizer, scaler, inputs=None) -> None:
    """Backward of ``loss`` and one step of ``optimizer`` (after ``optimizer.zero_grad()``)."""
    scaled_backward(loss, scaler, inputs=inputs)
    optimizer_step(optimizer, scaler)
