"""Evaluator registry and factory (``cfg.TEST.EVALUATOR``)."""
from dassl.utils import Registry, build_from_registry

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    """Instantiate the evaluator named ``cfg.TEST.EVALUATOR`` with ``(cfg, **kwargs)``."""
    return build_from_registry(EVALUATOR_REGISTRY, cfg.TEST.EVALUATOR, "evaluator", cfg.VERBOSE,
                               cfg, **kwargs)
