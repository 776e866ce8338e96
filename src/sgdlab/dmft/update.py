"""The (noisy) gradient update shared by GD, SGD, persistent SGD, SGF and Langevin.

Source: ``docs/dmft.md`` (the algorithms). With the batch mask
``s`` and the *data gradient* ``g = sum_mu s_mu loss'(y_mu, h_mu) d h_mu / d w`` supplied by the
model, one step is::

    w <- w - eta [ lambda w + g / B ] + sqrt(2 T eta) xi,    xi ~ N(0, I_d)

with ``B = 1`` ("unnormalised", the default) or ``B = b`` ("normalised": the batch sum divided by
the batch fraction). The two map onto each other exactly by
``eta' = eta / b, lambda' = b lambda, tau' = tau / b, T' = b T`` (unnormalised primed), see
:func:`to_unnormalised`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NORMALISATIONS = ("unnormalised", "normalised")


class UpdateRule(NamedTuple):
    """Step size ``eta``, ridge ``lambda``, batch normaliser ``B`` and temperature ``T``."""

    eta: float
    ridge: float
    batch_normaliser: float = 1.0
    temperature: float = 0.0


def update_rule(eta: float, ridge: float, b: float, normalisation: str, temperature: float = 0.0) -> UpdateRule:
    """Build the rule for a normalisation in ``NORMALISATIONS``."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation={normalisation!r}; allowed: {', '.join(NORMALISATIONS)}")
    return UpdateRule(eta, ridge, b if normalisation == "normalised" else 1.0, temperature)


def apply_update(rule: UpdateRule, w: jax.Array, data_grad: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """One step ``w - eta (lambda w + g / B) [+ sqrt(2 T eta) xi]``; shapes ``(d,)``.

    The Langevin noise is added when a ``key`` is given (``rule`` may hold traced numbers).
    """
    w_new = w - rule.eta * (rule.ridge * w + data_grad / rule.batch_normaliser)
    if key is not None:
        noise = jax.random.normal(key, w.shape, jnp.float32).astype(w.dtype)  # same draws in both precisions
        w_new = w_new + jnp.sqrt(2.0 * rule.temperature * rule.eta).astype(w.dtype) * noise
    return w_new


def to_unnormalised(eta: float, ridge: float, b: float, tau: float | None, temperature: float = 0.0):
    """Map a *normalised* ``(eta, lambda, tau, T)`` onto the unnormalised parameters that give the
    identical trajectory: ``(eta / b, b lambda, tau / b, b T)``. Physical time maps as ``t' = t / b``.
    """
    return eta / b, b * ridge, (None if tau is None else tau / b), b * temperature
