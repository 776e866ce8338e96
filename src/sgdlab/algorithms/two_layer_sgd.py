"""Online SGD for wide two-layer networks on single-index targets (BMZ, spec 05).

The stochastic version of the two-learning-rate, mean-field-scaled population flow of
:mod:`sgdlab.theory.two_layer` (Berthier, Montanari & Zhou, FoCM 2024, eq. (2.4)): fresh Gaussian
samples each step, second-layer step ``dt/eps``, first-layer rows kept on the unit sphere.
Pure ``init``/``step`` functions; :func:`online_sgd` runs them under ``lax.scan`` and saves only
order parameters (moments ``M_k`` and the exact Mehler risk per degree).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from sgdlab.problems.single_index import SingleIndex, mehler_risk_per_degree, online_sgd_grad, powers


def sgd_init(key: jax.Array, a0: jax.Array, d: int) -> tuple[jax.Array, jax.Array]:
    """``(a (m,), u (m, d))``: the given second layer and i.i.d. uniform unit first-layer rows."""
    u = jax.random.normal(key, (a0.shape[0], d))
    return a0, u / jnp.linalg.norm(u, axis=1, keepdims=True)


def sgd_step(problem: SingleIndex, eps, dt, batch: int, train_second_layer: bool, state, key):
    """One online-SGD step, the stochastic version of BMZ eq. (2.4) with step ``dt``:
    ``a <- a - (dt/eps) m dL/da``, ``u_i <- normalise(u_i - dt P_i m grad_{u_i} L)``, fresh ``x``
    ``(batch, d)``."""
    a, u = state
    x = jax.random.normal(key, (batch, u.shape[1]))
    ga, gu = online_sgd_grad(problem, a, u, x)
    gu = gu - jnp.sum(gu * u, axis=1, keepdims=True) * u
    u = u - dt * gu
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    if train_second_layer:
        a = a - (dt / eps) * ga
    return a, u


def _sgd_observe(problem: SingleIndex, state):
    a, u = state
    s, G = u[:, 0], u @ u.T
    return a @ powers(s, problem.degree) / a.shape[0], mehler_risk_per_degree(problem, a, s, G)


@partial(jax.jit, static_argnames=("problem", "batch", "train_second_layer", "d"))
def online_sgd(problem: SingleIndex, key: jax.Array, a0: jax.Array, d: int, eps, dt, steps: jax.Array, batch: int = 1, train_second_layer: bool = True):
    """Online SGD from ``a0`` ``(m,)`` and random ``u``, observed after ``steps`` ``(n_t,)``
    (increasing step counts; time ``t = steps dt``): returns ``M`` and per-degree population risk
    (exact, Mehler) of shape ``(n_t, K+1)``. ``lax.scan`` over saves, ``fori_loop`` between.
    Vmap over ``key`` for seeds."""
    k_init, k_run = jax.random.split(key)
    state = sgd_init(k_init, a0, d)
    incr = jnp.diff(jnp.concatenate([jnp.zeros(1, steps.dtype), steps]))

    def block(carry, n):
        state, done = carry
        body = lambda i, st: sgd_step(problem, eps, dt, batch, train_second_layer, st, jax.random.fold_in(k_run, done + i))  # noqa: E731
        state = jax.lax.fori_loop(0, n, body, state)
        return (state, done + n), _sgd_observe(problem, state)

    _, (M, risk) = jax.lax.scan(block, (state, jnp.zeros((), steps.dtype)), incr)
    return M, risk
