"""``get_cfg_default()`` (a fresh copy of the default tree) and ``clean_cfg``."""
from .defaults import _C as cfg_default

__all__ = ["get_cfg_default", "clean_cfg"]


def get_cfg_default():
    """A deep copy of the default config: an independent, unfrozen yacs ``CfgNode``."""
    return cfg_default.clone()


def clean_cfg(cfg, trainer):
    """Drop every ``cfg.TRAINER`` child except ``NAME`` and ``trainer.upper()`` (in place)."""
    keep = {"NAME", trainer.upper()}
    for key in list(cfg.TRAINER.keys()):
        if key not in keep:
            cfg.TRAINER.pop(key)
