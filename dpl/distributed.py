"""DPL under ``torch.distributed`` (one run on N processes): class-sharded text encoding with a
differentiable all-gather, loss shares of a sharded global batch, and a rank-consistent GradScaler.

Framework-free (torch only). Without an initialised process group of more than one rank every
function is the identity: one process encodes all classes and keeps its mean loss.

Convention shared with the training loop: each rank scales its loss by its share of the global
batch, and the ranks' gradients are *summed* (not averaged) before the optimizer step; the result
is the gradient of the mean loss over the global batch, exactly as one process would compute it.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 (or a single process): the process that writes files."""
    return rank() == 0


def _comm_device() -> torch.device:
    """Where tensors for collectives live: NCCL takes only CUDA tensors (the rank's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_rank0(value):
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if world_size() <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------------------------------------
# Class sharding.

def even_ranges(n: int, world: int) -> List[Tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges of ``range(n)``, one per rank, sizes differing by at
    most one (the first ranks get the larger ones)."""
    base, extra = divmod(n, world)
    ranges, start = [], 0
    for r in range(world):
        stop = start + base + (1 if r < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


class _GatherRows(torch.autograd.Function):
    """Concatenate every rank's rows (uneven counts allowed). Backward: the gradient of this rank's
    rows summed over all ranks' losses (all-reduce of the full gradient, then this rank's slice)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: Tuple[int, ...]) -> torch.Tensor:
        me = rank()
        ctx.start, ctx.stop = sum(sizes[:me]), sum(sizes[:me + 1])
        padded = local.new_zeros((max(sizes),) + tuple(local.shape[1:]))
        padded[:local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start:ctx.stop], None


def gather_rows(local: torch.Tensor, sizes: Tuple[int, ...]) -> torch.Tensor:
    """(sizes[rank], ...) on each rank -> (sum(sizes), ...) on every rank, differentiable."""
    return _GatherRows.apply(local, tuple(sizes))


def shard_classes(encode: Callable[..., torch.Tensor], *per_class: torch.Tensor) -> torch.Tensor:
    """``encode(*per_class)`` computed as C/N classes per rank and gathered: (C, D) on every rank.

    per_class: tensors whose first dimension is the class (C, ...); each rank calls ``encode`` on
    its contiguous slice only, so the text encoder's time and activation memory per rank fall by
    N. Exact: the same features as one call over all classes, and (with the summed-gradient
    convention above) the same gradients. With fewer classes than ranks every rank encodes all.
    """
    world, num_classes = world_size(), per_class[0].shape[0]
    if world <= 1 or num_classes < world:
        return encode(*per_class)
    ranges = even_ranges(num_classes, world)
    start, stop = ranges[rank()]
    local = encode(*(t[start:stop] for t in per_class))
    return gather_rows(local, tuple(b - a for a, b in ranges))


# ---------------------------------------------------------------------------------------------
# Sharded global batches and their losses.

def rank_part(indices: Sequence) -> list:
    """This rank's contiguous part of a global batch; the whole batch when it has fewer samples
    than ranks (each rank then weighs it 1/N through ``sharded_mean`` / ``batch_share``)."""
    world = world_size()
    if len(indices) < world:
        return list(indices)
    start, stop = even_ranges(len(indices), world)[rank()]
    return list(indices[start:stop])


def global_count(n_local: int, device) -> torch.Tensor:
    """The global batch size: ``n_local`` summed over ranks (a float tensor on ``device``)."""
    count = torch.tensor(float(n_local), device=device)
    if world_size() > 1:
        dist.all_reduce(count)
    return count


def batch_share(labels: torch.Tensor):
    """This rank's share of the global batch, ``n_local / n_global`` (1.0 in one process):
    multiply a per-rank mean loss by it before backward."""
    if world_size() <= 1:
        return 1.0
    return labels.shape[0] / global_count(labels.shape[0], labels.device)


def sharded_mean(loss_fn: Callable) -> Callable:
    """``loss_fn(logits, labels, reduction=...)`` turned into this rank's part of the global-batch
    mean: sum over local samples / global count. Defined also for a rank with no sample (0)."""
    if world_size() <= 1:
        return loss_fn

    def loss(logits, labels):
        return loss_fn(logits, labels, reduction="sum") / global_count(labels.shape[0], labels.device)

    return loss


def sum_over_ranks(values: dict) -> dict:
    """Sum float entries across ranks (e.g. loss shares -> the global-batch loss for logging)."""
    if world_size() <= 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


class SyncedGradScaler(torch.amp.GradScaler):
    """A GradScaler that agrees across ranks: an inf/NaN gradient on any rank makes every rank skip
    the step and lower the scale, so the ranks' scales and parameters never diverge."""

    def unscale_(self, optimizer):
        super().unscale_(optimizer)
        if self._enabled and world_size() > 1:
            state = self._per_optimizer_states[id(optimizer)]
            for found_inf in state["found_inf_per_device"].values():
                dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)
