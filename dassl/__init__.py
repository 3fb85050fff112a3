"""A from-scratch, API-compatible subset of Dassl.pytorch 0.6.3 (see docs/BRING_YOUR_TRAINER.md).

Only what CoOp-family trainers, datasets and ``train.py`` use. Module paths and names match the real
package, so code written against one runs on the other.
"""
__version__ = "0.6.3"
