"""DPL: differentiable prompt learning for CLIP (framework-free; never imports dassl).

The public names below load on first use (PEP 562), so that importing one of dpl's foundation
modules (``dpl.errors``, ``dpl.io``, ``dpl.images``, ``dpl.run_keys``), as the engine does, does not
load the method, torch's attention code or open_clip.
"""
import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "dpl.classifier": ("PromptClassifier", "load_classifier"),
    "dpl.attention": ("mixed_attention_fused", "mixed_attention_reference", "prompted_attention",
                      "prompted_block", "supernet_block"),
    "dpl.encoders": ("PromptedImageEncoder", "PromptedTextEncoder", "SupernetImageEncoder",
                     "SupernetTextEncoder"),
    "dpl.model": ("DPLCLIP", "build_fixed_model", "build_supernet_model", "model_dims"),
    "dpl.prompts": ("PromptConfigError", "PromptLearner"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dpl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
