"""DPL: differentiable prompt learning for CLIP (framework-free; never imports dassl)."""
__version__ = "0.1.0"

from dpl.classifier import PromptClassifier, load_classifier  # noqa: E402
from dpl.attention import (  # noqa: E402
    mixed_attention_fused,
    mixed_attention_reference,
    prompted_attention,
    prompted_block,
    supernet_block,
)
from dpl.encoders import (  # noqa: E402
    PromptedImageEncoder,
    PromptedTextEncoder,
    SupernetImageEncoder,
    SupernetTextEncoder,
)
from dpl.model import DPLCLIP, build_fixed_model, build_supernet_model, model_dims  # noqa: E402
from dpl.prompts import PromptConfigError, PromptLearner  # noqa: E402

__all__ = [
    "DPLCLIP", "build_fixed_model", "build_supernet_model", "model_dims",
    "PromptedTextEncoder", "PromptedImageEncoder", "SupernetTextEncoder", "SupernetImageEncoder",
    "prompted_block", "prompted_attention", "supernet_block", "mixed_attention_fused",
    "mixed_attention_reference", "PromptConfigError", "PromptLearner",
    "load_classifier", "PromptClassifier",
]
