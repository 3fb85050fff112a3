"""Dassl trainers gluing ``dpl/`` to the engine. Importing this package registers them all."""
import importlib

# Each module registers its trainer(s) in dassl's TRAINER_REGISTRY on import.
_MODULES = ("dpl_search", "dpl_train", "zsclip", "coop", "ivlp", "maple")

for _name in _MODULES:
    importlib.import_module(f"{__name__}.{_name}")
