"""Algorithms as pure pieces: batch-mask chains and gradient updates (nothing of any model)."""

from sgdlab.algorithms.batch_mask import MaskChain, init_mask, mask_chain, step_mask
from sgdlab.algorithms.update import UpdateRule, apply_update, to_unnormalised, update_rule

__all__ = [
    "MaskChain",
    "init_mask",
    "mask_chain",
    "step_mask",
    "UpdateRule",
    "apply_update",
    "to_unnormalised",
    "update_rule",
]
