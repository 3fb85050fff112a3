"""The DPL search step and the per-epoch α history (docs/METHOD.md, "The search loop").

``BilevelSearch`` owns the α optimizer and performs one first-order iteration: an α step on a
validation mini-batch, then a prompt step on a training mini-batch (Algorithm 1 order). The caller
owns the prompt optimizer (e.g. Dassl's SGD + cosine schedule) and the data. Mixed precision
(``precision``, dpl/precision.py): forward passes under autocast, each update (α, prompts) through
its own GradScaler for "amp".
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from dpl.artifact import derive_lengths, dominant_flags
from dpl.precision import (autocast, grad_scaler, optimizer_step, scaled_backward,
                           scaled_step)
from dpl.errors import UserError

UPDATE_MODES = ("alternate", "simultaneous")


class BilevelSearch:
    """First-order bilevel optimisation of α (outer) and prompts (inner).

    model: a ``dpl.model.DPLCLIP`` supernet; ``model(images, text_features=None) -> logits``.
    prompt_optimizer: optimizes ``model.prompt_parameters()`` only (never α).
    mode: "alternate" — α step then prompt step, each with its own text pass (Algorithm 1);
          "simultaneous" — one text pass shared by both steps (cheaper; α and prompts see the same
          pre-update state, so it is not Algorithm 1's order).
    precision: "fp32" / "fp16" (weights as loaded) / "amp" / "bf16" (autocast forward; "amp" also
          gives ``alpha_scaler`` and ``prompt_scaler``, one GradScaler per optimizer).
    class_sample: 0 (exact, default) or N > 0: each step scores only the batch's classes plus random
          others, N in all (an approximation for many classes; opt-in, ``SEARCH.CLASS_SAMPLE``).
    """

    def __init__(self, model, prompt_optimizer, lr=3.5e-3, betas=(0.5, 0.999), weight_decay=0.0,
                 mode: str = "alternate", loss_fn: Callable = F.cross_entropy,
                 precision: str = "fp32", class_sample: int = 0):
        if mode not in UPDATE_MODES:
            raise UserError(f"UPDATE_MODE must be one of {UPDATE_MODES}, got {mode!r}")
        self.model = model
        self.prompt_optimizer = prompt_optimizer
        self.arch_params = list(model.arch_parameters())
        self.prompt_params = list(model.prompt_parameters())
        if not self.arch_params:
            raise ValueError("BilevelSearch needs a supernet model with α parameters")
        self.alpha_optimizer = torch.optim.Adam(self.arch_params, lr=lr, betas=tuple(betas),
                                                weight_decay=weight_decay)
        self.mode = mode
        self.loss_fn = loss_fn
        self.precision = precision
        self.device_type = self.arch_params[0].device.type
        self.alpha_scaler = grad_scaler(precision, self.device_type)
        self.prompt_scaler = grad_scaler(precision, self.device_type)
        self.class_sample = int(class_sample)

    def scaler_state(self) -> dict:
        """{"alpha": ..., "prompts": ...} GradScaler states (plain values); {} without scalers."""
        if self.alpha_scaler is None:
            return {}
        return {"alpha": self.alpha_scaler.state_dict(), "prompts": self.prompt_scaler.state_dict()}

    def load_scaler_state(self, state: dict) -> None:
        if self.alpha_scaler is not None and state:
            self.alpha_scaler.load_state_dict(state["alpha"])
            self.prompt_scaler.load_state_dict(state["prompts"])

    def _forward_loss(self, images, labels, text_features=None, classes=None):
        """(logits, targets, loss); ``classes``: the class sample the text features are of."""
        with autocast(self.precision, self.device_type):
            if text_features is None and classes is not None:
                text_features = self.model.encode_text(classes)
            logits = self.model(images, text_features=text_features)
            targets = _targets(labels, classes)
            loss = self.loss_fn(logits, targets)
        return logits, targets, loss

    def _classes(self, labels) -> Optional[torch.Tensor]:
        """The class sample for these labels, or None (every class)."""
        if not self.class_sample or self.class_sample >= self.model.num_classes:
            return None
        return sample_classes(labels, self.model.num_classes, self.class_sample)

    def step(self, train_batch, val_batch, update_alpha: bool = True) -> dict:
        """One iteration. Batches are ``(images, labels)`` on the model's device.

        update_alpha False: the prompt step only (``SEARCH.ALPHA_EVERY`` k > 1 skips the α step on
        k - 1 of every k steps; ``val_batch`` may then be None).
        """
        val_loss = None
        if not update_alpha or self.mode == "alternate":
            if update_alpha:
                val_loss = self._update(val_batch, self.arch_params, self.alpha_optimizer,
                                        self.alpha_scaler)
            train_loss, (logits, targets) = self._update(train_batch, self.prompt_params,
                                                         self.prompt_optimizer, self.prompt_scaler,
                                                         return_logits=True)
        else:
            val_loss, train_loss, (logits, targets) = self._simultaneous(train_batch, val_batch)
        out = {"loss": train_loss, "acc": (logits.argmax(dim=1) == targets).float().mean().item() * 100}
        if val_loss is not None:
            out["loss_val"] = val_loss
        return out

    def _update(self, batch, params, optimizer, scaler, return_logits=False):
        images, labels = batch
        optimizer.zero_grad(set_to_none=True)
        logits, targets, loss = self._forward_loss(images, labels, classes=self._classes(labels))
        _check_finite(loss)
        # `inputs=` keeps gradients out of the other parameter set (no cross-contamination).
        scaled_step(loss, optimizer, scaler, inputs=params)
        if return_logits:
            return loss.item(), (logits.detach(), targets)
        return loss.item()

    def _simultaneous(self, train_batch, val_batch):
        self.alpha_optimizer.zero_grad(set_to_none=True)
        self.prompt_optimizer.zero_grad(set_to_none=True)
        classes = self._classes(torch.cat([train_batch[1], val_batch[1]]))
        with autocast(self.precision, self.device_type):
            text = self.model.encode_text(classes)
        _, _, val_loss = self._forward_loss(*val_batch, text_features=text, classes=classes)
        logits, targets, train_loss = self._forward_loss(*train_batch, text_features=text,
                                                         classes=classes)
        _check_finite(val_loss)
        _check_finite(train_loss)
        # Both backward passes before either step: both see the pre-update parameters.
        scaled_backward(val_loss, self.alpha_scaler, inputs=self.arch_params, retain_graph=True)
        scaled_backward(train_loss, self.prompt_scaler, inputs=self.prompt_params)
        optimizer_step(self.alpha_optimizer, self.alpha_scaler)
        optimizer_step(self.prompt_optimizer, self.prompt_scaler)
        return val_loss.item(), train_loss.item(), (logits.detach(), targets)


def sample_classes(labels: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """Sorted class indices (size,): every class in ``labels`` plus random others (global RNG)."""
    present = torch.zeros(num_classes, dtype=torch.bool)
    present[labels.cpu()] = True
    others = (~present).nonzero().flatten()
    extra = max(0, size - int(present.sum()))
    chosen = others[torch.randperm(len(others))[:extra]]
    return torch.cat([present.nonzero().flatten(), chosen]).sort().values.to(labels.device)


def _targets(labels: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
    """Labels re-indexed into the sorted class sample (unchanged without one)."""
    return labels if classes is None else torch.searchsorted(classes, labels)


def _check_finite(loss: torch.Tensor) -> None:
    if not torch.isfinite(loss).all():
        raise FloatingPointError("Loss is infinite or NaN!")


def branch_record(alpha: torch.Tensor, options: Sequence[int], threshold: float,
                  previous_probs: Optional[torch.Tensor]) -> dict:
    """History entry of one branch: softmax(α), derived lengths, dominance and change metrics.

    argmax_changes and tv_distance compare with ``previous_probs`` (the previous epoch, or the
    initial α before the first epoch). tv_distance = mean over blocks of ½·Σ|p_t − p_{t−1}|.
    """
    probs = alpha.detach().float().cpu().softmax(dim=1)
    record = {
        "probs": probs.tolist(),
        "lengths": derive_lengths(alpha, options),
        "num_dominant": sum(dominant_flags(probs, threshold)),
        "argmax_changes": 0,
        "tv_distance": 0.0,
    }
    if previous_probs is not None:
        prev = previous_probs.float().cpu()
        record["argmax_changes"] = int((prev.argmax(1) != probs.argmax(1)).sum())
        record["tv_distance"] = float(0.5 * (probs - prev).abs().sum(dim=1).mean())
    return record


class AlphaHistory:
    """Per-epoch records of both branches, as written to ``alpha_history.json``."""

    def __init__(self, options: Mapping[str, Sequence[int]], threshold: float,
                 records: Optional[list] = None, initial_probs: Optional[Mapping] = None):
        self.options = {k: list(v) for k, v in options.items()}
        self.threshold = threshold
        self.records = list(records or [])
        self.initial_probs = dict(initial_probs or {})

    def add(self, epoch: int, alphas: Mapping[str, torch.Tensor]) -> dict:
        entry = {"epoch": int(epoch)}
        for branch, alpha in alphas.items():
            prev = self._previous_probs(branch)
            entry[branch] = branch_record(alpha, self.options[branch], self.threshold, prev)
        self.records = [r for r in self.records if r["epoch"] < epoch] + [entry]
        return entry

    def _previous_probs(self, branch: str) -> Optional[torch.Tensor]:
        if self.records:
            return torch.tensor(self.records[-1][branch]["probs"])
        init = self.initial_probs.get(branch)
        return None if init is None else torch.as_tensor(init)

    def unchanged_epochs(self) -> int:
        """How many consecutive most-recent epochs left the derived configuration unchanged."""
        count = 0
        for newer, older in zip(reversed(self.records), list(reversed(self.records))[1:]):
            if all(newer[b]["lengths"] == older[b]["lengths"] for b in self.options):
                count += 1
            else:
                break
        return count
