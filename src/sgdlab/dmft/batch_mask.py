"""The batch-mask Markov chain ``s_mu(k) in {0, 1}`` of GD, SGD, persistent SGD and SGF.

Source: Mignacco, Krzakala, Urbani, Zdeborova, NeurIPS 2020 (arXiv 2006.06098), persistent SGD;
documentation ``docs/dmft.md``.

Each sample's mask is an independent two-state chain started from its stationary law
``s(0) ~ Bernoulli(b)`` and moved once per step with

- ``P(0 -> 1) = p_on`` and ``P(1 -> 0) = p_off``,

so that its stationary fraction is ``b = p_on / (p_on + p_off)`` and its lag-k autocovariance is
``b (1 - b) (1 - p_on - p_off)^k``. The algorithms are choices of ``(p_on, p_off)``:

========================  ==========================================  ==========================
algorithm                 p_on                                        p_off
========================  ==========================================  ==========================
``gd``                    1                                           0
``sgd`` (i.i.d. batches)  b                                           1 - b
``persistent_sgd``        eta / tau                                   (1 - b) eta / (b tau)
``sgf`` (telegraph)       b (1 - exp(-eta / (b tau)))                 (1 - b)(1 - exp(-eta/(b tau)))
========================  ==========================================  ==========================

For persistent SGD ``1 - p_on - p_off = 1 - eta / (b tau)``; ``tau = eta / b`` gives i.i.d.
batches and ``b = 1`` gives GD. ``sgf`` is the exact step-``eta`` transition of the
continuous-time telegraph process with rates ``1/tau`` (on) and ``(1-b)/(b tau)`` (off), which is
what the stochastic gradient flow samples at the observation times ``k eta``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class MaskChain(NamedTuple):
    """Transition probabilities of the two-state chain, and its stationary on-fraction."""

    p_on: float
    p_off: float
    b: float

    @property
    def lag_factor(self) -> float:
        """``1 - p_on - p_off``: the autocorrelation decays as ``lag_factor**k``."""
        return 1.0 - self.p_on - self.p_off


def mask_chain(algorithm: str, eta: float, b: float = 1.0, tau: float | None = None) -> MaskChain:
    """The chain of ``algorithm`` (``gd``, ``sgd``, ``persistent_sgd``, ``sgf``) at step ``eta``.

    Raises ``ValueError`` naming the parameter when the probabilities would leave [0, 1].
    """
    if not 0.0 < b <= 1.0:
        raise ValueError(f"batch_fraction b={b} must lie in (0, 1]")
    if algorithm == "gd" or b == 1.0:
        return MaskChain(1.0, 0.0, 1.0)
    if algorithm == "sgd":
        return MaskChain(b, 1.0 - b, b)
    if tau is None or tau <= 0:
        raise ValueError(f"persistence_time tau={tau} must be > 0 for {algorithm}")
    if algorithm == "persistent_sgd":
        if eta > tau:
            raise ValueError(
                f"persistence_time tau={tau} must be >= eta={eta} (P(0->1) = eta/tau <= 1); "
                "raise algorithm.persistence_time or lower algorithm.eta"
            )
        if (1.0 - b) * eta > b * tau:
            raise ValueError(
                f"persistence_time tau={tau} must be >= (1-b) eta / b = {(1 - b) * eta / b} "
                f"(P(1->0) = (1-b) eta/(b tau) <= 1) with eta={eta}, b={b}; raise algorithm.persistence_time "
                "or algorithm.batch_fraction, or lower algorithm.eta"
            )
        return MaskChain(eta / tau, (1.0 - b) * eta / (b * tau), b)
    if algorithm == "sgf":
        jump = -math.expm1(-eta / (b * tau))
        return MaskChain(b * jump, (1.0 - b) * jump, b)
    raise ValueError(f"unknown algorithm {algorithm!r} for a batch mask")


def decorrelation(algorithm: str, eta, b, tau):
    """``r = p_on + p_off``, the per-step decorrelation of the chain (elementwise in arrays):
    ``1`` for ``sgd``, ``eta / (b tau)`` for ``persistent_sgd``, ``1 - exp(-eta / (b tau))`` for
    ``sgf``. :mod:`sgdlab.dmft.steps` builds time-varying chains from it (``p_on = b r`` when
    ``b`` is constant, as in :func:`mask_chain`)."""
    import numpy as np

    if algorithm == "sgd":
        return np.ones_like(np.asarray(eta, dtype=float))
    if algorithm == "persistent_sgd":
        return np.asarray(eta) / (np.asarray(b) * tau)
    if algorithm == "sgf":
        return -np.expm1(-np.asarray(eta) / (np.asarray(b) * tau))
    raise ValueError(f"unknown algorithm {algorithm!r} for a batch mask")


def init_mask(key: jax.Array, chain: MaskChain, n: int) -> jax.Array:
    """Stationary start ``s(0) ~ Bernoulli(b)``: a boolean array of shape ``(n,)``.

    Branch-free, so the chain's numbers may be traced arrays (vmapped sweeps); callers that know
    statically that ``b = 1`` may skip it (every sample is on).
    """
    return jax.random.uniform(key, (n,)) < chain.b


def step_mask(key: jax.Array, chain: MaskChain, s: jax.Array) -> jax.Array:
    """One transition of every sample's chain; ``s`` is boolean ``(n,)``, returns the same.

    With ``p_on = 1, p_off = 0`` (GD) every sample stays on.
    """
    u = jax.random.uniform(key, s.shape)
    return jnp.where(s, u >= chain.p_off, u < chain.p_on)
