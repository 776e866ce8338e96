"""Observables of SGD and its continuous models at the horizon, one-point and multi-point.

An observable is ``combine(E[features(X)])``: ``features`` maps the state of the copies
``xs (K, d)`` (copy ``k`` started at ``x0s[k]``, all fed the same samples / noise) to a few numbers,
``combine`` turns their expectations into the scalar reported. This shape serves both solvers:

- Monte Carlo averages ``features`` over paths; the standard error of ``combine`` follows by the
  delta method (:func:`combine_with_error`);
- exact moments need ``E[features]`` for features that are quadratic polynomials of the state:
  with ``z = (1, xs.ravel())`` each feature is ``z.W z`` for the matrix ``W`` of its Taylor
  coefficients at 0, so ``E[feature] = sum(W * E[z z^T])`` (:func:`quadratic_form`).

Built-in observables (``MEAN`` etc., by name in :data:`OBSERVABLES`):

=================  ======  =================================================
name               copies  value
=================  ======  =================================================
``mean``           1       ``E X^x_1`` (first coordinate)
``second_moment``  1       ``E |X^x|^2``
``variance``       1       ``Var X^x_1``
``loss``           1       ``E F(X^x)``
``inner``          2       ``E <X^x, X^y>``
``cross_cov``      2       ``Cov(X^x_1, X^y_1)``
``sq_distance``    2       ``E |X^x - X^y|^2``
=================  ======  =================================================

``variance`` and ``cross_cov`` are *fluctuations* (``O(eta)`` themselves): a drift error of
order ``eta`` changes them only at order ``eta^2``, so their predicted orders differ from the
moments' (:func:`sgdlab.sde.models.expected_order`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.sde.problems import FiniteSumProblem

Array = jax.Array


@dataclass(frozen=True)
class Observable:
    """``combine(E[features(xs, problem)])`` at the horizon.

    Attributes:
        name: short name.
        copies: number of starting points it needs (1: one-point, 2: two-point).
        features: ``(xs (K, d), problem) -> (k,)``; uses ``xs[:copies]``.
        combine: ``(k,) -> scalar``, smooth (its gradient gives the delta-method error).
        description: the formula, for tables and plots.
        fluctuation: the value is itself ``O(eta)`` (a variance or covariance), so a model whose
            noise has the right leading-order law for it is one order better than its drift
            (:func:`sgdlab.sde.models.expected_order`).
    """

    name: str
    copies: int
    features: Callable[[Array, FiniteSumProblem], Array]
    combine: Callable[[Array], Array]
    description: str = ""
    fluctuation: bool = False


def _first(v):
    return v[0]


MEAN = Observable("mean", 1, lambda xs, p: xs[0, :1], _first, "E X_1")
SECOND_MOMENT = Observable("second_moment", 1, lambda xs, p: jnp.sum(xs[0] ** 2)[None], _first, "E |X|^2")
VARIANCE = Observable(
    "variance", 1, lambda xs, p: jnp.stack([xs[0, 0] ** 2, xs[0, 0]]), lambda m: m[0] - m[1] ** 2, "Var X_1", fluctuation=True
)
LOSS = Observable("loss", 1, lambda xs, p: p.full_loss(xs[0])[None], _first, "E F(X)")
INNER = Observable("inner", 2, lambda xs, p: jnp.sum(xs[0] * xs[1])[None], _first, "E <X^x, X^y>")
CROSS_COV = Observable(
    "cross_cov",
    2,
    lambda xs, p: jnp.stack([xs[0, 0] * xs[1, 0], xs[0, 0], xs[1, 0]]),
    lambda m: m[0] - m[1] * m[2],
    "Cov(X^x_1, X^y_1)",
    fluctuation=True,
)
SQ_DISTANCE = Observable("sq_distance", 2, lambda xs, p: jnp.sum((xs[0] - xs[1]) ** 2)[None], _first, "E |X^x - X^y|^2")

#: Built-in observables by name.
OBSERVABLES: dict[str, Observable] = {o.name: o for o in (MEAN, SECOND_MOMENT, VARIANCE, LOSS, INNER, CROSS_COV, SQ_DISTANCE)}


def get_observable(obs: str | Observable) -> Observable:
    """An observable from its name or itself."""
    if isinstance(obs, Observable):
        return obs
    if obs not in OBSERVABLES:
        raise ValueError(f"unknown observable {obs!r}; available: {', '.join(OBSERVABLES)}")
    return OBSERVABLES[obs]


def all_features(observables: tuple[Observable, ...], xs: Array, problem: FiniteSumProblem) -> Array:
    """The concatenated features of ``observables`` at ``xs (K, d)``, shape ``(sum k,)``."""
    return jnp.concatenate([jnp.atleast_1d(o.features(xs, problem)) for o in observables])


def feature_slices(observables: tuple[Observable, ...], K: int, d: int, problem: FiniteSumProblem) -> list[slice]:
    """Where each observable's features sit in :func:`all_features`."""
    out, start = [], 0
    xs = jnp.zeros((K, d))
    for o in observables:
        k = int(jnp.atleast_1d(o.features(xs, problem)).shape[0])
        out.append(slice(start, start + k))
        start += k
    return out


def combine_with_error(obs: Observable, mean: np.ndarray, cov: np.ndarray | None, n_paths: int | None) -> tuple[float, float]:
    """``(combine(mean), standard error)``; the error by the delta method,
    ``sqrt(g.Cov g / n)`` with ``g = grad combine(mean)`` (0 when ``cov`` is ``None``: exact)."""
    m = jnp.asarray(mean, dtype=jnp.float64)
    value = float(obs.combine(m))
    if cov is None or n_paths is None:
        return value, 0.0
    g = np.asarray(jax.grad(lambda v: obs.combine(v))(m), dtype=np.float64)
    var = float(g @ np.asarray(cov, dtype=np.float64) @ g) / n_paths
    return value, float(np.sqrt(max(var, 0.0)))


def quadratic_form(feature_fn: Callable[[Array], Array], n_vars: int, check: bool = True) -> np.ndarray:
    """Matrices ``W (k, 1 + n_vars, 1 + n_vars)`` with ``feature_fn(x) = z.W z``, ``z = (1, x)``.

    ``W[0,0] = f(0)``, ``W[0,1:] = W[1:,0] = grad f(0)/2``, ``W[1:,1:] = Hess f(0)/2``. With ``check``
    the identity is verified at a random point (a non-quadratic feature raises ``ValueError``:
    no exact moments for it).
    """
    zero = jnp.zeros(n_vars, dtype=jnp.float64)
    f0, jac, hess = jax.jit(lambda x: (feature_fn(x), jax.jacfwd(feature_fn)(x), jax.hessian(feature_fn)(x)))(zero)
    f0 = np.atleast_1d(np.asarray(f0, dtype=np.float64))
    jac = np.asarray(jac, dtype=np.float64).reshape(f0.shape[0], n_vars)
    hess = np.asarray(hess, dtype=np.float64).reshape(f0.shape[0], n_vars, n_vars)
    k, D = f0.shape[0], n_vars + 1
    W = np.zeros((k, D, D))
    W[:, 0, 0] = f0
    W[:, 0, 1:] = W[:, 1:, 0] = jac / 2
    W[:, 1:, 1:] = hess / 2
    if check:
        x = np.random.default_rng(7).normal(size=n_vars)
        z = np.concatenate([[1.0], x])
        want = np.atleast_1d(np.asarray(jax.jit(feature_fn)(jnp.asarray(x)), dtype=np.float64))
        got = np.einsum("i,kij,j->k", z, W, z)
        if not np.allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, np.max(np.abs(want)))):
            raise ValueError("feature is not a quadratic polynomial of the state: no exact moments for it")
    return W
