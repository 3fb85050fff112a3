"""Baselines in the same codebase: zero-shot CLIP, CoOp, IVLP and MaPLe (framework-free).

They share DPL's frozen-CLIP walks and expose ``DPLCLIP``'s protocol (``prompt_learner``,
``set_classnames``, ``encode_text``, ``encode_image``, ``forward``, ``prompt_parameters``), so any
training loop that drives a DPL model drives these too.
"""
from dpl.baselines.encoders import DeepPromptImageEncoder, DeepPromptTextEncoder
from dpl.baselines.model import (BaselineCLIP, build_coop, build_ivlp, build_maple,
                                 build_zeroshot)
from dpl.baselines.prompts import ContextPrompts, CoupledPrompts, DeepPrompts, TemplatePrompts

__all__ = [
    "BaselineCLIP", "build_zeroshot", "build_coop", "build_ivlp", "build_maple",
    "DeepPromptTextEncoder", "DeepPromptImageEncoder",
    "TemplatePrompts", "ContextPrompts", "DeepPrompts", "CoupledPrompts",
]
