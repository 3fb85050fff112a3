"""Dataset registry and factory (``cfg.DATASET.NAME`` -> instance)."""
from dassl.utils import Registry, build_from_registry

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg):
    """Instantiate the registered dataset class named ``cfg.DATASET.NAME`` with ``(cfg)``."""
    return build_from_registry(DATASET_REGISTRY, cfg.DATASET.NAME, "dataset", cfg.VERBOSE, cfg)
