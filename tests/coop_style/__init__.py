"""Trainer files written the way CoOp-family repositories write theirs (test fixtures).

They use OpenAI's ``clip`` API and Dassl exactly as CoOp, CoCoOp, KgCoOp, ProGrad, ... do, and must
run here unchanged. Registered under test-only names (``CoOpStyleTest``, ``ZSStyleTest``).
``add_config_keys`` holds the lines a user would add to ``trainers/config.py`` for them;
``registered()`` imports them for the duration of a test module only.
"""
import importlib
import sys
from contextlib import contextmanager

from yacs.config import CfgNode as CN

MODULES = ("coop_style_coop", "coop_style_zsclip")
TRAINER_NAMES = ("CoOpStyleTest", "ZSStyleTest")


@contextmanager
def registered():
    """Import the trainer modules (registering their trainers) and yield them as a dict by name.

    On exit the test-only names leave TRAINER_REGISTRY and the modules leave sys.modules, so that
    registry-driven tests elsewhere never meet these trainers (a later import registers them again).
    """
    from dassl.engine import TRAINER_REGISTRY

    try:
        yield {name: importlib.import_module(f"{__name__}.{name}") for name in MODULES}
    finally:
        for name in TRAINER_NAMES:
            TRAINER_REGISTRY._obj_map.pop(name, None)  # Registry has no public unregister
        for name in MODULES:
            sys.modules.pop(f"{__name__}.{name}", None)


def add_config_keys(cfg):
    """The ``extend_cfg`` additions of these trainers (idempotent)."""
    if "COOPSTYLETEST" not in cfg.TRAINER:
        cfg.TRAINER.COOPSTYLETEST = CN()
        cfg.TRAINER.COOPSTYLETEST.N_CTX = 4
        cfg.TRAINER.COOPSTYLETEST.CTX_INIT = ""
        cfg.TRAINER.COOPSTYLETEST.PREC = "fp32"
