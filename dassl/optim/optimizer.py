"""``build_optimizer(model, cfg.OPTIM)``: sgd / adam / amsgrad / rmsprop / radam / adamw."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from dpl.errors import UserError

__all__ = ["build_optimizer", "AVAI_OPTIMS"]

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def build_optimizer(model, optim_cfg, param_groups=None):
    """Build the optimizer named ``optim_cfg.NAME``.

    Args:
        model: an ``nn.Module`` or an iterable of parameters / param-group dicts. Frozen
            parameters are kept (as in Dassl): optimizers skip params whose grad is None.
        optim_cfg: ``cfg.OPTIM``.
        param_groups: explicit param groups; when given, ``STAGED_LR`` is ignored.
    """
    optim = optim_cfg.NAME
    if optim not in AVAI_OPTIMS:
        raise UserError("optim must be one of {}, but got {}".format(AVAI_OPTIMS, optim))

    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("STAGED_LR will be ignored; if you need it, do not pass param_groups.")

    if param_groups is None:
        param_groups = _default_param_groups(model, optim_cfg)

    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if optim == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas)
    if optim == "amsgrad":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=True)
    if optim == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if optim == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if optim == "radam":
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)


def _default_param_groups(model, optim_cfg):
    if not optim_cfg.STAGED_LR:
        return model.parameters() if isinstance(model, nn.Module) else model

    if not isinstance(model, nn.Module):
        raise TypeError(
            "When OPTIM.STAGED_LR is True, build_optimizer() needs an nn.Module, but got {}".format(
                type(model).__name__))
    if isinstance(model, nn.DataParallel):
        model = model.module

    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]

    # Children named in NEW_LAYERS train at LR; the rest (pretrained) at LR * BASE_LR_MULT.
    base_params, new_params = [], []
    for name, module in model.named_children():
        if name in new_layers:
            new_params += list(module.parameters())
        else:
            base_params += list(module.parameters())
    return [
        {"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]
