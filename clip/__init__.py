"""OpenAI's ``clip`` package API over open_clip, offline (see docs/BRING_YOUR_TRAINER.md).

``from clip import clip`` gives the ``clip.clip`` module (tokenize, load, build_model, _MODELS,
_download); ``import clip`` also exposes its public names directly, as OpenAI's package does.
``dpl`` never imports this package.
"""
from .clip import *  # noqa: F401,F403
from .clip import __all__  # noqa: F401
