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

Monte Carlo estimation shared by the SDE solvers (:mod:`~sgdlab.sde.solvers`) and the SGD
simulator (:mod:`~sgdlab.sde.sgd`): a compiled chunk returns the feature sums and outer products
(:func:`feature_sums`), :func:`collect_estimates` adds the chunks up and returns one
:class:`Estimate` per observable. Every process draws from its own random stream of one seed
(``STREAM_SGD``, ``STREAM_SDE``, ``STREAM_SVAG``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

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
    zero = np.zeros(n_vars, dtype=np.float64)  # NumPy inputs: no eager JAX operation
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
        want = np.atleast_1d(np.asarray(jax.jit(feature_fn)(x), dtype=np.float64))
        got = np.einsum("i,kij,j->k", z, W, z)
        if not np.allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, np.max(np.abs(want)))):
            raise ValueError("feature is not a quadratic polynomial of the state: no exact moments for it")
    return W


# ------------------------------------------------------------------------------------------------
# Monte Carlo estimates from per-path features
# ------------------------------------------------------------------------------------------------
#: independent random streams of one seed
STREAM_SGD, STREAM_SDE, STREAM_SVAG = 1, 2, 3


class Estimate(NamedTuple):
    """A Monte Carlo (or exact, ``se = 0``) value with its standard error."""

    value: float
    se: float


def feature_sums(F: Array) -> tuple[Array, Array]:
    """``(sum over rows, F^T F)`` of per-path features ``F (paths, k)``: what a chunk returns."""
    return jnp.sum(F, axis=0), F.T @ F


def prepare_starts(problem: FiniteSumProblem, x0s, observables: Sequence[Observable]) -> tuple[Array, tuple[Observable, ...]]:
    """``x0s`` as a float64 ``(K, d)`` array checked against the observables' copies and the
    problem's dimension, and the observables as a tuple (a static jit argument)."""
    x0s = jnp.atleast_2d(jnp.asarray(x0s, dtype=jnp.float64))
    observables = tuple(observables)
    need = max(o.copies for o in observables)
    if x0s.shape[0] < need:
        raise ValueError(f"observables {[o.name for o in observables]} need {need} starting points; got {x0s.shape[0]}")
    if x0s.shape[1] != problem.dim:
        raise ValueError(f"starting points have dimension {x0s.shape[1]}, the problem {problem.dim}")
    return x0s, observables


def collect_estimates(kernel, key, n_paths: int, chunk: int, observables, K: int, d: int, problem, per_row: int = 1) -> dict[str, Estimate]:
    """Run ``kernel(chunk_key, size) -> feature_sums`` over chunks (chunk ``c`` gets
    ``fold_in(key, c)``); per-observable values and delta-method errors. ``n_paths`` is rounded up
    to a whole number of chunks; each chunk returns ``size / per_row`` i.i.d. rows
    (``per_row = 2``: antithetic pair averages)."""
    size = max(1, min(int(chunk), int(n_paths)))
    n_chunks = math.ceil(n_paths / size)
    if size % per_row:
        size += per_row - size % per_row
    total, outer = None, None
    for c in range(n_chunks):
        s, o = kernel(jax.random.fold_in(key, c), size)
        s, o = np.asarray(s, dtype=np.float64), np.asarray(o, dtype=np.float64)
        total = s if total is None else total + s
        outer = o if outer is None else outer + o
    N = size * n_chunks // per_row
    with np.errstate(over="ignore", invalid="ignore"):  # diverging paths: NaN / inf, reported by the caller
        mean = total / N
        cov = (outer - N * np.outer(mean, mean)) / max(N - 1, 1)
    out = {}
    for obs, sl in zip(observables, feature_slices(observables, K, d, problem)):
        out[obs.name] = Estimate(*combine_with_error(obs, mean[sl], cov[sl, sl], N))
    return out
