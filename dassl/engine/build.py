"""Trainer registry and factory (``cfg.TRAINER.NAME``)."""
from dassl.utils import Registry, build_from_registry

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate the registered trainer class named ``cfg.TRAINER.NAME`` with ``(cfg)``."""
    return build_from_registry(TRAINER_REGISTRY, cfg.TRAINER.NAME, "trainer", cfg.VERBOSE, cfg)
