"""One run on N processes (``torchrun --nproc_per_node N train.py ...``): process group, ranks,
gradient sums, sharded samplers and evaluation merging.

Without torchrun (no ``WORLD_SIZE`` in the environment, or 1) every function here is a no-op:
world size 1, rank 0, samplers and gradients untouched.

Gradient convention: each rank scales its loss by its share of the global batch
(``n_local / n_global``), so *summing* the ranks' gradients gives exactly the gradient of the mean
loss over the global batch — the same as one process on that batch, also when the last batch splits
unevenly. ``install_grad_sync`` adds that sum in front of every ``optimizer.step()``.
"""
from __future__ import annotations

import datetime
import math
import os
import random

import torch
import torch.distributed as dist

# dpl's torch-only helpers: one contiguous-range split for class shards, batches and eval shards.
from dpl.distributed import even_ranges, from_rank0, rank_part
from dpl.errors import UserError

__all__ = [
    "init_distributed", "close_distributed", "get_world_size", "get_rank", "is_main_process",
    "barrier", "per_rank_batch", "sum_gradients", "install_grad_sync", "dist_timeout",
    "broadcast_modules", "ShardedBatchSampler", "shard_of", "merge_classification",
    "all_rank_rng_states", "shared_seed", "run_seed", "seed_rank_streams", "main_process_first",
]

TIMEOUT_ENV = "DPL_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 30


# ---------------------------------------------------------------------------------------------
# Process group and ranks.

def init_distributed(use_cuda: bool = True) -> int:
    """Join the torchrun process group (env:// init) when ``WORLD_SIZE`` > 1; return the world size.

    Backend nccl when CUDA is available and wanted (each rank on GPU ``LOCAL_RANK``), else gloo.
    Calling it again, or without torchrun, changes nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return get_world_size()
    cuda = use_cuda and torch.cuda.is_available()
    timeout = dist_timeout()  # before anything is joined: a bad value is refused on every rank
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", timeout=timeout)
    return get_world_size()


def dist_timeout() -> datetime.timedelta:
    """How long a process waits for the others in one collective: ``DPL_DIST_TIMEOUT_MIN`` minutes
    (fractions allowed, e.g. 1.5), default 30. Anything but a positive number is a UserError."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return datetime.timedelta(minutes=DEFAULT_TIMEOUT_MIN)
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        raise UserError(
            f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r} is not a positive number of minutes; set "
            f"e.g. {TIMEOUT_ENV}=30 (fractions such as 1.5 work too) or unset it for the default "
            f"{DEFAULT_TIMEOUT_MIN}.")
    return datetime.timedelta(minutes=minutes)


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 (or no process group): the only process that writes logs and files."""
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def per_rank_batch(global_batch: int, key: str = "DATALOADER.TRAIN_X.BATCH_SIZE") -> int:
    """``global_batch / world``; a UserError naming ``key`` when it does not divide."""
    world = get_world_size()
    if global_batch % world:
        lower = max(world, global_batch - global_batch % world)
        raise UserError(
            f"{key} {global_batch} is the global batch and must be divisible by the {world} "
            f"processes of this torchrun job; pass e.g. {key} {lower} or {lower + world}.")
    return global_batch // world


# ---------------------------------------------------------------------------------------------
# Gradients and parameters.

def sum_gradients(params) -> None:
    """All-reduce (sum) the ``.grad`` of ``params`` across ranks, in place.

    A parameter without a gradient on every rank keeps ``None`` (optimizers then skip it, as in one
    process); one with a gradient on some rank gets zeros elsewhere before the sum.
    """
    params = [p for p in params]
    if get_world_size() <= 1 or not params:
        return
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has_grad)
    for p, flag in zip(params, has_grad.tolist()):
        if not flag:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def _optimizer_params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def install_grad_sync(optimizer) -> None:
    """Sum the gradients of ``optimizer``'s parameters across ranks right before each ``step()``.

    Under a GradScaler the step runs after the (local) inf check, so the scaler must agree across
    ranks (``dpl.distributed.SyncedGradScaler``) or a rank could skip a step the others take.
    """
    if optimizer is None or get_world_size() <= 1 or getattr(optimizer, "_dpl_grad_sync", False):
        return

    def pre_step(opt, args, kwargs):
        sum_gradients(_optimizer_params(opt))

    optimizer.register_step_pre_hook(pre_step)
    optimizer._dpl_grad_sync = True


@torch.no_grad()
def broadcast_modules(modules) -> None:
    """Copy rank 0's module state to every rank (e.g. unseeded inits).

    The state is ``state_dict(keep_vars=True)``: parameters and buffers, and also the tensors of a
    module that holds none itself but whose ``state_dict`` is another module's (a checkpoint view
    such as DPLSearch's ``PromptsWithoutAlpha``), which ``.parameters()`` would miss.
    """
    if get_world_size() <= 1:
        return
    nccl = dist.get_backend() == "nccl"
    seen = set()
    for module in modules:
        if module is None:
            continue
        for tensor in module.state_dict(keep_vars=True).values():
            if not isinstance(tensor, torch.Tensor) or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            data = tensor.data
            if nccl and data.device.type != "cuda":  # NCCL moves CUDA tensors only
                box = data.to(torch.device("cuda", torch.cuda.current_device()))
                dist.broadcast(box, src=0)
                data.copy_(box)
            else:
                dist.broadcast(data, src=0)


# ---------------------------------------------------------------------------------------------
# Data.

def shard_of(indices, replicate_small: bool = False) -> list:
    """This rank's contiguous part of ``indices`` (``dpl.distributed.even_ranges``: parts differ in
    size by at most one; the first ranks get the larger ones). ``replicate_small``: fewer indices
    than ranks -> all of them (a training batch; each rank then weighs it 1/N, see
    ``dpl.distributed.batch_share``)."""
    if replicate_small:
        return rank_part(indices)
    start, stop = even_ranges(len(indices), get_world_size())[get_rank()]
    return list(indices[start:stop])


def main_process_first(build, what: str):
    """``build()`` on rank 0 first (e.g. a dataset whose split and few-shot caches the first run
    writes), then on the other ranks, which then read what rank 0 wrote; every rank continues from
    rank 0's RNG state, as if each had built it. Without torchrun: ``build()``.

    A failure on rank 0 is reported on every rank (one line), so no rank waits for a collective.
    """
    if get_world_size() <= 1:
        return build()
    from .torchtools import get_rng_state, set_rng_state

    failure, result = None, None
    if is_main_process():
        try:
            result = build()
        except Exception as err:  # told to the others below, then raised here
            failure = err
    verdict = from_rank0(None if failure is None else (
        isinstance(failure, UserError), f"{type(failure).__name__}: {failure}", str(failure)))
    if failure is not None:
        raise failure
    if verdict is not None:  # this rank has not started: say what stopped rank 0
        user_error, described, message = verdict
        if user_error:
            raise UserError(message)
        raise UserError(f"rank 0 failed while building {what} ({described}); see its traceback.")
    if not is_main_process():
        result = build()
    # Python, NumPy and torch CPU streams (the ones a dataset draws from; CUDA's stay per device).
    state = get_rng_state()
    state.pop("cuda", None)
    set_rng_state(from_rank0(state))
    return result


# ---------------------------------------------------------------------------------------------
# Seeds and random streams.

_RUN_SEED = None  # the seed this process's run started from (shared_seed)


def shared_seed(seed: int) -> int:
    """The seed every rank of this run starts from: ``seed`` when >= 0; for SEED < 0 (no ``--seed``)
    one that rank 0 draws and shares (one process: its own draw), so the ranks start alike and the
    run can be repeated with ``--seed`` that value. ``run_seed()`` returns it afterwards."""
    global _RUN_SEED
    if seed < 0:
        seed = from_rank0(random.SystemRandom().randrange(2**31))
    _RUN_SEED = int(seed)
    return _RUN_SEED


def run_seed(seed: int) -> int:
    """The seed of the run whose ``SEED`` is ``seed``: itself when >= 0; for SEED < 0 the one
    ``shared_seed`` drew at the start of the run (train.py), drawn (and shared) now when no run
    started one, e.g. for a trainer built in a test."""
    if seed >= 0:
        return seed
    return _RUN_SEED if _RUN_SEED is not None else shared_seed(seed)


def seed_rank_streams(seed: int) -> None:
    """Give each rank its own python/numpy/torch random streams, ``seed + rank`` (e.g. data
    augmentation, once the models are built and identical everywhere). One process: unchanged."""
    if get_world_size() <= 1:
        return
    from .tools import set_random_seed

    set_random_seed((seed + get_rank()) % 2**32)


class ShardedBatchSampler:
    """Global batches of ``sampler``'s order (rank 0's order, broadcast every epoch), each cut into
    one part per rank: every sample of a global batch is seen once per step, by one rank.

    ``len()`` is the number of global batches, the same on every rank.
    """

    def __init__(self, sampler, global_batch: int, drop_last: bool):
        self.sampler, self.global_batch, self.drop_last = sampler, global_batch, drop_last

    def __iter__(self):
        per_rank_batch(self.global_batch)  # checked when training starts (not for --eval-only)
        order = [list(self.sampler)] if is_main_process() else [None]
        if get_world_size() > 1:
            dist.broadcast_object_list(order, src=0)
        order = order[0]
        for k in range(len(self)):
            yield shard_of(order[k * self.global_batch:(k + 1) * self.global_batch], True)

    def __len__(self):
        n = len(self.sampler)
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)


# ---------------------------------------------------------------------------------------------
# Evaluation and checkpoints.

def merge_classification(evaluator) -> None:
    """Make a ``Classification`` evaluator hold the predictions of every rank (each rank evaluated
    its shard of the split), so ``evaluate()`` gives the single-process numbers."""
    if get_world_size() <= 1:
        return
    mine = {"correct": evaluator._correct, "total": evaluator._total,
            "y_true": evaluator._y_true, "y_pred": evaluator._y_pred,
            "per_class": dict(evaluator._per_class_res or {})}
    parts = [None] * get_world_size()
    dist.all_gather_object(parts, mine)
    evaluator._correct = sum(p["correct"] for p in parts)
    evaluator._total = sum(p["total"] for p in parts)
    evaluator._y_true = [y for p in parts for y in p["y_true"]]
    evaluator._y_pred = [y for p in parts for y in p["y_pred"]]
    if evaluator._per_class_res is not None:
        evaluator._per_class_res.clear()
        for p in parts:
            for label, hits in p["per_class"].items():
                evaluator._per_class_res[label].extend(hits)


def all_rank_rng_states(state):
    """Every rank's ``state`` (rank order) when distributed, else None."""
    if get_world_size() <= 1:
        return None
    states = [None] * get_world_size()
    dist.all_gather_object(states, state)
    return states
