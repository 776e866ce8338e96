"""Point-wise losses ``loss(y, z)`` of a label ``y`` and a model output ``z``.

Every loss is a pure, elementwise JAX function; its first and second derivatives with respect to
the output (``loss'`` and ``loss''``, needed by the simulators and by the DMFT) come from
automatic differentiation, so a new smooth loss is one line.

Conventions follow Mignacco, Krzakala, Urbani, Zdeborova, NeurIPS 2020 (arXiv 2006.06098):

- ``square``: ``(y - z)^2 / 2``
- ``logistic``: ``log(1 + exp(-y z))`` (evaluated stably as ``logaddexp(0, -y z)``)
- ``squared_hinge``: ``max(0, kappa - y z)^2 / 2`` (margin ``kappa``)
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

LOSS_NAMES = ("square", "logistic", "squared_hinge")


def square(y: jax.Array, z: jax.Array) -> jax.Array:
    """Square loss ``(y - z)^2 / 2``, elementwise."""
    return 0.5 * (y - z) ** 2


def logistic(y: jax.Array, z: jax.Array) -> jax.Array:
    """Logistic loss ``log(1 + exp(-y z))``, elementwise and overflow-free."""
    return jnp.logaddexp(0.0, -y * z)


def squared_hinge(y: jax.Array, z: jax.Array, kappa: float = 0.0) -> jax.Array:
    """Squared hinge ``max(0, kappa - y z)^2 / 2``, elementwise."""
    return 0.5 * jnp.maximum(0.0, kappa - y * z) ** 2


def get_loss(name: str, kappa: float = 0.0) -> LossFn:
    """Return the elementwise loss ``(y, z) -> loss`` called ``name`` (one of ``LOSS_NAMES``)."""
    if name == "square":
        return square
    if name == "logistic":
        return logistic
    if name == "squared_hinge":
        return partial(squared_hinge, kappa=kappa)
    raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSS_NAMES)}")


def derivative(loss: LossFn, order: int = 1) -> LossFn:
    """Elementwise ``d^order loss(y, z) / dz^order`` by automatic differentiation.

    The returned function takes arrays of any (equal, broadcastable) shape.
    """
    f = loss
    for _ in range(order):
        f = _elementwise_grad(f)
    return f


def _elementwise_grad(f: LossFn) -> LossFn:
    def df(y, z):
        y, z = jnp.broadcast_arrays(y, z)
        return jax.grad(lambda zz: jnp.sum(f(y, zz)))(z)

    return df
