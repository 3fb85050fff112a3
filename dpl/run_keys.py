"""What each config key means for a run: one table, read by the run records of ``train.py``
(``dassl/utils/run_record.py``: may an output folder be re-used?) and by the search's
``config_hash`` (``trainers/dpl_search.py``: which settings define a search?).

A row names a key or a whole subtree; a more specific row wins over its parent's. The columns:

- ``identity``: the key names which run a folder holds. A re-run into the folder with another value
  is refused, whether the run finished or not.
- ``search``: the key defines what a search computes; it is hashed into the artifact's
  ``provenance.config_hash``, so two runs of the same search on other machines or folders carry the
  same hash.
- ``operational``: where a run reads and writes and how fast it goes, not what it trains; it may
  change on a re-run, even of a finished run.

A key in no row (e.g. ``TRAINER.DPL.KD_WEIGHT``) changes results without naming the run: an
unfinished run may resume with another value (the log notes it), a finished one refuses it. Plain
data, no framework: ``dpl`` stays free of the engine, and the engine may import this module.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple


class KeyRole(NamedTuple):
    identity: bool
    search: bool
    operational: bool


RUN_KEYS: Dict[str, KeyRole] = {
    #                                 identity search operational
    "TRAINER.NAME":           KeyRole(True,    True,  False),
    "SEED":                   KeyRole(True,    True,  False),
    "DATASET":                KeyRole(False,   True,  False),
    "DATASET.NAME":           KeyRole(True,    True,  False),
    "DATASET.NUM_SHOTS":      KeyRole(True,    True,  False),
    "DATASET.SUBSAMPLE_CLASSES": KeyRole(True, True,  False),
    "DATASET.ROOT":           KeyRole(False,   False, True),
    "DATASET.CACHE_DIR":      KeyRole(False,   False, True),  # where split/few-shot caches go
    "INPUT":                  KeyRole(False,   True,  False),
    "DATALOADER":             KeyRole(False,   True,  False),
    "DATALOADER.NUM_WORKERS": KeyRole(False,   False, True),
    # Only evaluation reads it, yet it stays in the hash with the rest of DATALOADER, so that the
    # hashes of artifacts written before this table still compare equal.
    "DATALOADER.TEST.BATCH_SIZE": KeyRole(False, True, True),
    "OPTIM":                  KeyRole(False,   True,  False),
    "MODEL.BACKBONE.NAME":    KeyRole(True,    True,  False),
    "MODEL.BACKBONE.PATH":    KeyRole(False,   False, True),
    "TRAINER.DPL.PREC":       KeyRole(False,   True,  False),
    "TRAINER.DPL.SEARCH":     KeyRole(False,   True,  False),
    "TRAINER.DPL.SEARCH.PLOT": KeyRole(False,  False, True),
    # picks a kernel for the same numbers (explicit scores / flex_attention agree to rounding)
    "TRAINER.DPL.SEARCH.REAL_ATTENTION": KeyRole(False, False, True),
    "OUTPUT_DIR":             KeyRole(False,   False, True),
    "RESUME":                 KeyRole(False,   False, True),
    "USE_CUDA":               KeyRole(False,   False, True),
    "VERBOSE":                KeyRole(False,   False, True),
    "TRAIN.PRINT_FREQ":       KeyRole(False,   False, True),
    "TRAIN.CHECKPOINT_FREQ":  KeyRole(False,   False, True),
    "TRAIN.KEEP_CHECKPOINTS": KeyRole(False,   False, True),
}


def _inside(key: str, node: str) -> bool:
    return key == node or key.startswith(node + ".")


def identity_keys() -> Tuple[str, ...]:
    """Keys that name the run: an output folder holding another value is refused."""
    return tuple(k for k, role in RUN_KEYS.items() if role.identity)


def operational_keys() -> frozenset:
    """Keys that may change when a folder is re-used (all of them single keys, not subtrees)."""
    return frozenset(k for k, role in RUN_KEYS.items() if role.operational)


def search_roots() -> Tuple[str, ...]:
    """The keys and subtrees hashed into ``config_hash`` (the search rows under no search row)."""
    rows = [k for k, role in RUN_KEYS.items() if role.search]
    return tuple(k for k in rows if not any(_inside(k, other) and k != other for other in rows))


def search_exclusions() -> Tuple[str, ...]:
    """The rows inside a hashed subtree that are not hashed."""
    roots = search_roots()
    return tuple(k for k, role in RUN_KEYS.items()
                 if not role.search and any(_inside(k, root) for root in roots))
