"""Point-wise losses ``loss(y, z)`` of a label ``y`` and a model output ``z``.

Every loss is a pure, elementwise JAX function; its first and second derivatives with respect to
the output (``loss'`` and ``loss''``, needed by the simulators and by the DMFT) come from
automatic differentiation, so a new smooth loss is one line.

Conventions follow Mignacco, Krzakala, Urbani, Zdeborova, NeurIPS 2020 (arXiv 2006.06098):

- ``square``: ``(y - z)^2 / 2``
- ``logistic``: ``log(1 + exp(-y z))`` (evaluated stably as ``logaddexp(0, -y z)``)
- ``squared_hinge``: ``max(0, kappa - y z)^2 / 2`` (margin ``kappa``)

A loss of one's own is any JAX-traceable elementwise function ``loss(y, z)`` (from Python) or its
import string ``"package.module:function"`` (from TOML); :func:`check_user_loss` checks what the
DMFT and the simulators need of it: it traces, it is elementwise, it and its first two
derivatives are finite, and its first derivative is continuous (no kink: autodiff would drop the
Dirac mass of ``loss''`` at a kink).
"""

from __future__ import annotations

from functools import lru_cache, partial
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


def get_loss(name: str | LossFn, kappa: float = 0.0) -> LossFn:
    """The elementwise loss ``(y, z) -> loss`` called ``name`` (one of ``LOSS_NAMES``), or ``name``
    itself when it is a callable (a user loss; ``kappa`` belongs to the squared hinge only)."""
    if callable(name):
        return name
    if name == "square":
        return square
    if name == "logistic":
        return logistic
    if name == "squared_hinge":
        return partial(squared_hinge, kappa=kappa)
    raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSS_NAMES)}")


def resolve_loss(value: str | LossFn, key: str = "problem.loss") -> str | LossFn:
    """A built-in name unchanged, or the checked user function of a callable or import string.

    Raises :class:`sgdlab.core.functions.FunctionError` naming ``key`` when the function cannot
    be used (see :func:`check_user_loss`).
    """
    from sgdlab.core.functions import resolve

    if isinstance(value, str) and value in LOSS_NAMES:
        return value
    fn = resolve(value, key=key, builtins={name: get_loss(name) for name in LOSS_NAMES})
    check_user_loss(fn, key)
    return fn


@lru_cache(maxsize=64)
def check_user_loss(fn: LossFn, key: str = "problem.loss") -> None:
    """What the DMFT and the simulators need of a user loss ``fn(y, z)``: JAX-traceable and
    elementwise on ``(n,)`` arrays, finite with finite ``loss'``, ``loss''`` on labels ``+-1`` and
    outputs ``z in [-8, 8]``, and ``loss'`` continuous in ``z`` (piecewise-smooth losses such as the
    squared hinge pass; a kink such as ``max(0, 1 - y z)`` is refused). A function that passed is
    not checked again (every point of a sweep validates its config; the check compiles once)."""
    import numpy as np

    from sgdlab.core.functions import check_continuous_derivative, check_traceable

    probe = (np.ones(4), np.linspace(-1.0, 1.0, 4))
    check_traceable(fn, probe, key=key)
    check_continuous_derivative(fn, key=key)


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
