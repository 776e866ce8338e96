"""Weight side of the discrete-time DMFT: the linear recursions that turn the kernels
``(mu, M, Q)`` into the order parameters ``(m, P, R, C)``, with per-step step sizes and momentum.

See :mod:`sgdlab.dmft.solver` (section Equations) and ``docs/own_models.md`` (Momentum).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from sgdlab.dmft import problem as gm
from sgdlab.dmft.dynamics import Dynamics


class Kernels(NamedTuple):
    """DMFT kernels on the grid ``k = 0..T``: ``mu (T+1,)``, ``M (T+1, T+1)`` (noise, symmetric
    PSD; ``M_C`` of the spec), ``Q (T+1, T+1)`` (memory, lower triangular incl. the diagonal).
    Row/column ``T`` never enters the weight side (no step leaves the last time)."""

    mu: jax.Array
    M: jax.Array
    Q: jax.Array


class OrderParameters(NamedTuple):
    """Weight-side solution: ``m (T+1,)``, ``P (T+1,)`` (propagator of the random part of
    ``w(0)``), ``R (T+1, T+1)`` (strictly lower triangular, ``R[j+1, j] = eta``), ``C (T+1, T+1)``
    (``w_k . w_j / d``, including ``m m^T``)."""

    m: jax.Array
    P: jax.Array
    R: jax.Array
    C: jax.Array


def zero_kernels(n_steps: int) -> Kernels:
    """All-zero kernels (the free ridge dynamics): the ``start = "zero"`` point of the iteration."""
    tp = n_steps + 1
    return Kernels(jnp.zeros((tp,)), jnp.zeros((tp, tp)), jnp.zeros((tp, tp)))


def weight_side(problem: gm.GaussianMixture, dynamics: Dynamics, kernels: Kernels, momentum: bool = False) -> OrderParameters:
    """Solve the weight-side recursions for ``(m, P, R)`` and assemble ``C``; pure, ``O(T^3)``.

    The recursions ``Y_{k+1} = (1 - eta lambda) Y_k - eta sum_{l<=k} Q_kl Y_l + B_{k+1}`` for the
    columns of ``Y = [R | P | m]`` form the unit-lower-triangular system
    ``(I - S((1 - eta lambda) I - eta Q)) Y = B`` with the down-shift ``S`` (``(S X)_{k+1} = X_k``)
    and ``B = [eta S | e_0 | m0 e_0 - eta S mu]``: one triangular solve. With per-step ``eta_k``
    or momentum (``momentum=True``, static) the general form of :func:`_weight_side_general`.
    """
    if dynamics.per_step or momentum:
        return _weight_side_general(problem, dynamics, kernels)
    eta, lam = dynamics.eta, problem.ridge
    tp = kernels.mu.shape[0]
    eye = jnp.eye(tp)
    shift = jnp.eye(tp, k=-1)
    lower = eye - shift @ ((1.0 - eta * lam) * eye - eta * kernels.Q)
    e0 = eye[:, :1]
    rhs = jnp.concatenate([eta * shift, e0, problem.m0 * e0 - eta * (shift @ kernels.mu)[:, None]], axis=1)
    y = solve_triangular(lower, rhs, lower=True, unit_diagonal=True)
    R, P, m = y[:, :tp], y[:, tp], y[:, tp + 1]
    C = jnp.outer(m, m) + problem.sigma0**2 * jnp.outer(P, P) + R @ kernels.M @ R.T
    C = C + (2.0 * dynamics.temperature / eta) * (R @ R.T)  # Langevin (zero at T = 0)
    C = 0.5 * (C + C.T)
    return OrderParameters(m, P, R, C)


def lookahead_matrix(c, tp: int) -> jax.Array:
    """``A (tp, tp)`` with ``(A X)_k = (1 + c) X_k - c X_{k-1}`` and ``X_{-1} = X_0`` (row 0 is ``X_0``)."""
    a = (1.0 + c) * jnp.eye(tp) - c * jnp.eye(tp, k=-1)
    return a.at[0, 0].set(1.0)


def per_step_vector(x, tp: int) -> jax.Array:
    """A scalar or per-step array ``(tp - 1,)`` as ``(tp,)`` (the last, unused entry repeated)."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        return jnp.full((tp,), x)
    return jnp.concatenate([x, x[-1:]])


def _weight_side_general(problem: gm.GaussianMixture, dynamics: Dynamics, kernels: Kernels) -> OrderParameters:
    """Weight side with per-step ``eta_k`` and momentum (see the module docstring, Momentum)::

        X_{k+1} = X_k + beta (X_k - X_{k-1}) - eta_k [lambda (A X)_k + sum_{l<=k} Q_kl (A X)_l] + B_{k+1},

    ``A`` = :func:`lookahead_matrix` of ``gamma``, ``X_{-1} = X_0``: the unit-lower-triangular
    system ``(I - S (H - diag(eta) (lambda I + Q) A)) X = B`` with ``H`` the lookahead matrix of
    ``beta``; the Langevin term of ``C`` is ``R diag(2 T / eta) R^T``.
    """
    lam = problem.ridge
    tp = kernels.mu.shape[0]
    eta = per_step_vector(dynamics.eta, tp)
    eye = jnp.eye(tp)
    shift = jnp.eye(tp, k=-1)
    a = lookahead_matrix(dynamics.gamma, tp)
    z = lookahead_matrix(dynamics.beta, tp) - eta[:, None] * ((lam * eye + kernels.Q) @ a)
    lower = eye - shift @ z
    e0 = eye[:, :1]
    rhs = jnp.concatenate([shift * eta[None, :], e0, problem.m0 * e0 - (shift @ (eta * kernels.mu))[:, None]], axis=1)
    y = solve_triangular(lower, rhs, lower=True, unit_diagonal=True)
    R, P, m = y[:, :tp], y[:, tp], y[:, tp + 1]
    C = jnp.outer(m, m) + problem.sigma0**2 * jnp.outer(P, P) + R @ kernels.M @ R.T
    C = C + (R * (2.0 * dynamics.temperature / eta)[None, :]) @ R.T
    C = 0.5 * (C + C.T)
    return OrderParameters(m, P, R, C)


def lookahead(order: OrderParameters, gamma) -> OrderParameters:
    """The order parameters of the point ``y_k = w_k + gamma (w_k - w_{k-1})`` where the gradient
    is taken: ``(A m, A P, A R, A C A^T)`` (Nesterov; ``gamma = 0`` is ``w`` itself)."""
    a = lookahead_matrix(gamma, order.m.shape[0])
    return OrderParameters(a @ order.m, a @ order.P, a @ order.R, a @ order.C @ a.T)
