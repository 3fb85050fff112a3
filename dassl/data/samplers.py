"""Samplers by name (``DATALOADER.*.SAMPLER``). This subset has the two CoOp-family code uses."""
from torch.utils.data.sampler import RandomSampler, SequentialSampler
from dpl.errors import UserError

__all__ = ["build_sampler"]

_SUPPORTED = ("RandomSampler", "SequentialSampler")
_NOT_INCLUDED = ("RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler")


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16):
    """``RandomSampler`` (shuffle with the torch RNG) or ``SequentialSampler`` over ``data_source``."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type in _NOT_INCLUDED:
        raise UserError(
            "Sampler type {} (domain adaptation) is not included in this Dassl subset; use one of "
            "{} in DATALOADER.*.SAMPLER.".format(sampler_type, list(_SUPPORTED)))
    raise UserError("Unknown sampler type: {}".format(sampler_type))
