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


#: Named scopes (``jax.named_scope``) of the solver's three parts, for profiles (``benchmarks``):
#: sampling the effective process (Cholesky factor, fields, the process and its tangent), the
#: kernel estimates, the weight side (``R, P, m, C``).
EFFECTIVE, KERNELS, WEIGHT_SIDE = "dmft_effective", "dmft_kernels", "dmft_weight_side"


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
    """Solve the weight-side recursions for ``(m, P, R)`` and assemble ``C``; pure, ``O(T^3)`` (one
    triangular solve with ``T + 3`` right-hand sides and two matrix products; the shifts are slices).

    The recursions ``Y_{k+1} = (1 - eta lambda) Y_k - eta sum_{l<=k} Q_kl Y_l + B_{k+1}`` for the
    columns of ``Y = [R | P | m]`` form the unit-lower-triangular system
    ``(I - S((1 - eta lambda) I - eta Q)) Y = B`` with the down-shift ``S`` (``(S X)_{k+1} = X_k``)
    and ``B = [eta S | e_0 | m0 e_0 - eta S mu]``: one triangular solve. With per-step ``eta_k``
    or momentum (``momentum=True``, static) the general form of :func:`_weight_side_general`.
    """
    with jax.named_scope(WEIGHT_SIDE):
        return _weight_side(problem, dynamics, kernels, momentum)


def _weight_side(problem: gm.GaussianMixture, dynamics: Dynamics, kernels: Kernels, momentum: bool) -> OrderParameters:
    if dynamics.per_step or momentum:
        return _weight_side_general(problem, dynamics, kernels)
    eta, lam = dynamics.eta, problem.ridge
    tp = kernels.mu.shape[0]
    eye = jnp.eye(tp)
    lower = eye - shift_down((1.0 - eta * lam) * eye - eta * kernels.Q)
    e0 = eye[:, :1]
    rhs = jnp.concatenate([eta * jnp.eye(tp, k=-1), e0, problem.m0 * e0 - eta * shift_down(kernels.mu)[:, None]], axis=1)
    y = solve_triangular(lower, rhs, lower=True, unit_diagonal=True)
    R, P, m = y[:, :tp], y[:, tp], y[:, tp + 1]
    return _order(problem, m, P, R, kernels.M, jnp.full((tp,), 2.0 * dynamics.temperature / eta))


def shift_down(x: jax.Array) -> jax.Array:
    """``S x`` for the down-shift ``S`` (``(S x)_{k+1} = x_k``, ``(S x)_0 = 0``), along the first axis."""
    return jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]], axis=0)


def _order(problem: gm.GaussianMixture, m, P, R, M, langevin) -> OrderParameters:
    """``C = m m^T + sigma0^2 P P^T + R (M + diag(langevin)) R^T`` (symmetrised) with ``(m, P, R)``."""
    C = jnp.outer(m, m) + problem.sigma0**2 * jnp.outer(P, P) + R @ (M @ R.T + langevin[:, None] * R.T)
    return OrderParameters(m, P, R, 0.5 * (C + C.T))


def lookahead_matrix(c, tp: int) -> jax.Array:
    """``A (tp, tp)`` with ``(A X)_k = (1 + c) X_k - c X_{k-1}`` and ``X_{-1} = X_0`` (row 0 is ``X_0``)."""
    a = (1.0 + c) * jnp.eye(tp) - c * jnp.eye(tp, k=-1)
    return a.at[0, 0].set(1.0)


def apply_lookahead(x: jax.Array, c) -> jax.Array:
    """``A x`` along the first axis for the :func:`lookahead_matrix` ``A`` of ``c`` (``O(size)``)."""
    return (1.0 + c) * x - c * jnp.concatenate([x[:1], x[:-1]], axis=0)


def _times_lookahead(x: jax.Array, c) -> jax.Array:
    """``x A`` for the :func:`lookahead_matrix` ``A`` of ``c``: column ``j`` is
    ``(1 + c) x_j - c x_{j+1}`` (``x_{tp} = 0``), column 0 ``x_0 - c x_1``."""
    nxt = jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)
    return ((1.0 + c) * x - c * nxt).at[:, 0].add(-c * x[:, 0])


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
    qa = _times_lookahead(lam * eye + kernels.Q, dynamics.gamma)  # (lambda I + Q) A
    z = lookahead_matrix(dynamics.beta, tp) - eta[:, None] * qa
    lower = eye - shift_down(z)
    e0 = eye[:, :1]
    rhs = jnp.concatenate([jnp.eye(tp, k=-1) * eta[None, :], e0, problem.m0 * e0 - shift_down(eta * kernels.mu)[:, None]], axis=1)
    y = solve_triangular(lower, rhs, lower=True, unit_diagonal=True)
    R, P, m = y[:, :tp], y[:, tp], y[:, tp + 1]
    return _order(problem, m, P, R, kernels.M, 2.0 * dynamics.temperature / eta)


def lookahead(order: OrderParameters, gamma) -> OrderParameters:
    """The order parameters of the point ``y_k = w_k + gamma (w_k - w_{k-1})`` where the gradient
    is taken: ``(A m, A P, A R, A C A^T)`` (Nesterov; ``gamma = 0`` is ``w`` itself); ``O(T^2)``."""
    ac = apply_lookahead(order.C, gamma)
    return OrderParameters(apply_lookahead(order.m, gamma), apply_lookahead(order.P, gamma),
                           apply_lookahead(order.R, gamma), apply_lookahead(ac.T, gamma).T)
