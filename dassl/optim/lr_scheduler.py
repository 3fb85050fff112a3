"""``build_lr_scheduler(optimizer, cfg.OPTIM)`` with optional constant / linear warm-up.

Stepped once per epoch. LR during epoch e (0-based) for cosine + constant warm-up of W epochs:
CONS_LR for e < W, then ``0.5 * LR * (1 + cos(pi * (e - W) / MAX_EPOCH))`` (as in Dassl 0.6.3).

Unlike real Dassl, a warm-up scheduler's ``state_dict`` stores its successor's *state dict* (plain
values), not the successor object, so checkpoints load with ``weights_only=True`` and a resumed
schedule keeps driving the live optimizer.
"""
from __future__ import annotations

from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR, StepLR
from dpl.errors import UserError

__all__ = ["build_lr_scheduler", "ConstantWarmupScheduler", "LinearWarmupScheduler", "AVAI_SCHEDS"]

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


class _BaseWarmupScheduler(LRScheduler):
    """Runs its own ``get_lr`` for ``warmup_epoch`` epochs, then hands over to ``successor``."""

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        raise NotImplementedError

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        successor_state = state.pop("successor", None)
        self.__dict__.update(state)
        if successor_state is not None:
            if isinstance(successor_state, LRScheduler):
                # Legacy real-Dassl checkpoint (loaded with the unsafe opt-in): keep our own
                # successor, bound to the live optimizer, and take only its state.
                successor_state = {k: v for k, v in successor_state.__dict__.items() if k != "optimizer"}
            self.successor.load_state_dict(successor_state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``cons_lr`` for every param group during warm-up."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``min_lr`` at epoch 0, then ``base_lr * epoch / warmup_epoch`` until warm-up ends."""

    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    """The scheduler named ``optim_cfg.LR_SCHEDULER``, wrapped in a warm-up if ``WARMUP_EPOCH > 0``."""
    lr_scheduler = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    gamma = optim_cfg.GAMMA
    max_epoch = optim_cfg.MAX_EPOCH

    if lr_scheduler not in AVAI_SCHEDS:
        raise UserError("scheduler must be one of {}, but got {}".format(AVAI_SCHEDS, lr_scheduler))

    if lr_scheduler == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(
                "For single_step lr_scheduler, stepsize must be an integer, but got {}".format(
                    type(stepsize)))
        if stepsize <= 0:
            stepsize = max_epoch
        scheduler = StepLR(optimizer, step_size=stepsize, gamma=gamma)
    elif lr_scheduler == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(
                "For multi_step lr_scheduler, stepsize must be a list, but got {}".format(type(stepsize)))
        scheduler = MultiStepLR(optimizer, milestones=list(stepsize), gamma=gamma)
    else:
        scheduler = CosineAnnealingLR(optimizer, T_max=float(max_epoch))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH

        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(
                optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(
                optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
        else:
            raise UserError(
                "OPTIM.WARMUP_TYPE must be 'constant' or 'linear', but got {!r}".format(
                    optim_cfg.WARMUP_TYPE))

    return scheduler
