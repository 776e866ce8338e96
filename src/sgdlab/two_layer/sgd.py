"""Online and finite-data SGD / GD for wide two-layer networks on single-index targets (Berthier, Montanari, Zhou 2024; ``docs/timescales.md``).

The stochastic and finite-sample versions of the two-learning-rate, mean-field-scaled population
flow of :mod:`sgdlab.two_layer.flow` (Berthier, Montanari & Zhou, FoCM 2024, eq. (2.4)):
second-layer step ``eta/eps``, first-layer step ``eta``, time ``t = steps * eta``.

* :func:`online_sgd` -- fresh Gaussian samples every step (one-pass SGD).
* :func:`finite_data_sgd` -- a fixed data set of ``n = alpha d`` samples: full-batch GD
  (``batch=None``) or minibatch SGD (``batch`` indices drawn i.i.d. with replacement each step).

Options shared by both:

* ``train_second_layer=False`` keeps ``a`` at ``a0``.
* ``sphere=True`` (BMZ): rows of ``u`` start uniform on the unit sphere and every step applies the
  tangent projection ``(I - u_i u_i^T)`` and renormalises (a retraction). ``sphere=False``: the
  *unconstrained* first layer, plain (S)GD on ``u`` in ``R^{m x d}``, rows start at unit norm but
  their norms then drift. The population flow it discretises is ``du_i/dt = -m grad_{u_i} R``
  (no projection): the radial part ``-m <u_i, grad_{u_i} R>`` changes ``|u_i|`` and hence the
  effective activation ``z -> sigma(|u_i| z)``, whose Hermite coefficients are mixed across
  degrees of equal parity (:func:`sgdlab.two_layer.problem.hermite_rescale_matrix`); the
  reduced ``(a, s)`` dynamics and the plateau predictions of BMZ do not apply to it as such.

Pure ``init``/``step`` functions; the drivers run them under ``lax.scan`` (a ``fori_loop`` between
saves) and save only order parameters (:class:`TwoLayerObservables`). Vmap over ``key`` for seeds.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sgdlab.two_layer.problem import (
    SingleIndex,
    mehler_risk_per_degree,
    mehler_risk_per_degree_general,
    network_output,
    online_sgd_grad,
    powers,
    target,
)


class TwoLayerObservables(NamedTuple):
    """Order parameters saved at ``n_t`` times.

    ``M`` ``(n_t, K+1)``: moments ``M_k = (1/m) sum_i a_i s_i^k`` of the raw overlaps
    ``s_i = <u_i, theta*>``. ``F`` ``(n_t, K+1)``: ``F_k = E[f(x) h_k(<theta*, x>)]`` (``=
    sigma_k M_k`` on the sphere; degree ``k`` is learned when ``F_k = phi_k``). ``risk``
    ``(n_t, K+1)``: exact population risk per degree (Mehler). ``norm`` ``(n_t,)``: mean
    ``|u_i|`` (1 on the sphere). ``train_risk`` ``(n_t,)``: empirical risk ``(1/2n) sum (y - f)^2``
    on the data set (``nan`` for online SGD)."""

    M: jax.Array
    F: jax.Array
    risk: jax.Array
    norm: jax.Array
    train_risk: jax.Array


def sgd_init(key: jax.Array, a0: jax.Array, d: int) -> tuple[jax.Array, jax.Array]:
    """``(a (m,), u (m, d))``: the given second layer and i.i.d. uniform unit first-layer rows."""
    u = jax.random.normal(key, (a0.shape[0], d))
    return a0, u / jnp.linalg.norm(u, axis=1, keepdims=True)


def gradient_step(eps, eta, train_second_layer: bool, sphere: bool, state, grads):
    """Apply mean-field-scaled gradients ``(m dL/da (m,), m dL/du (m, d))`` to ``(a, u)``:
    ``a <- a - (eta/eps) m dL/da``; ``u_i <- normalise(u_i - eta P_i m grad_{u_i} L)`` with the
    tangent projection ``P_i = I - u_i u_i^T`` if ``sphere``, else ``u <- u - eta m grad_u L``."""
    a, u = state
    ga, gu = grads
    if sphere:
        gu = gu - jnp.sum(gu * u, axis=1, keepdims=True) * u
        u = u - eta * gu
        u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    else:
        u = u - eta * gu
    if train_second_layer:
        a = a - (eta / eps) * ga
    return a, u


def sgd_step(problem: SingleIndex, eps, eta, batch: int, train_second_layer: bool, state, key, sphere: bool = True):
    """One online-SGD step, the stochastic version of BMZ eq. (2.4) with step ``eta``, on a fresh
    batch ``x`` ``(batch, d)`` (see :func:`gradient_step`)."""
    a, u = state
    x = jax.random.normal(key, (batch, u.shape[1]))
    return gradient_step(eps, eta, train_second_layer, sphere, state, online_sgd_grad(problem, a, u, x))


def observe(problem: SingleIndex, state, sphere: bool = True, data: tuple[jax.Array, jax.Array] | None = None) -> TwoLayerObservables:
    """:class:`TwoLayerObservables` of one state ``(a (m,), u (m, d))`` (no time axis); ``data``
    ``(X (n, d), y (n,))`` for the training risk."""
    a, u = state
    s = u[:, 0]
    M = a @ powers(s, problem.degree) / a.shape[0]
    if sphere:
        risk = mehler_risk_per_degree(problem, a, s, u @ u.T)
        F, norm = problem.sigma_arr * M, jnp.ones((), u.dtype)
    else:
        risk, F = mehler_risk_per_degree_general(problem, a, u)
        norm = jnp.mean(jnp.linalg.norm(u, axis=1))
    if data is None:
        train = jnp.full((), jnp.nan, u.dtype)
    else:
        X, y = data
        train = 0.5 * jnp.mean((y - network_output(problem, a, u, X)) ** 2)
    return TwoLayerObservables(M, F, risk, norm, train)


def _run(step, obs, state, k_run, steps):
    """Drive ``step(state, key)`` with ``lax.scan`` over save points (``fori_loop`` between them);
    ``steps`` ``(n_t,)`` non-decreasing step counts; ``obs(state)`` saved after each block."""
    incr = jnp.diff(jnp.concatenate([jnp.zeros(1, steps.dtype), steps]))

    def block(carry, n):
        state, done = carry
        body = lambda i, st: step(st, jax.random.fold_in(k_run, done + i))  # noqa: E731
        state = jax.lax.fori_loop(0, n, body, state)
        return (state, done + n), obs(state)

    return jax.lax.scan(block, (state, jnp.zeros((), steps.dtype)), incr)[1]


@partial(jax.jit, static_argnames=("problem", "batch", "train_second_layer", "d", "sphere", "full"))
def online_sgd(
    problem: SingleIndex,
    key: jax.Array,
    a0: jax.Array,
    d: int,
    eps,
    eta,
    steps: jax.Array,
    batch: int = 1,
    train_second_layer: bool = True,
    sphere: bool = True,
    full: bool = False,
):
    """Online SGD from ``a0`` ``(m,)`` and random unit ``u``, observed after ``steps`` ``(n_t,)``
    (non-decreasing step counts; time ``t = steps eta``).

    Returns ``(M, risk)``, both ``(n_t, K+1)`` (moments and exact per-degree population risk), or
    with ``full=True`` the :class:`TwoLayerObservables`. ``sphere=False``: unconstrained first
    layer (module docstring). Vmap over ``key`` for seeds."""
    k_init, k_run = jax.random.split(key)
    state = sgd_init(k_init, a0, d)
    step = lambda st, k: sgd_step(problem, eps, eta, batch, train_second_layer, st, k, sphere)  # noqa: E731
    out = _run(step, lambda st: observe(problem, st, sphere), state, k_run, steps)
    return out if full else (out.M, out.risk)


@partial(jax.jit, static_argnames=("problem", "d", "seeds", "batch", "train_second_layer"))
def online_sgd_seeds(problem: SingleIndex, key: jax.Array, a0, d: int, eps, eta, steps, seeds: int, batch: int = 1,
                     train_second_layer: bool = True) -> tuple[jax.Array, jax.Array]:
    """:func:`online_sgd` from each of ``split(key, seeds)``, vmapped, in one program:
    ``(M, risk)``, both ``(seeds, n_t, K+1)``."""
    run = lambda k: online_sgd(problem, k, a0, d, eps, eta, steps, batch, train_second_layer)  # noqa: E731
    return jax.vmap(run)(jax.random.split(key, seeds))


def make_data(problem: SingleIndex, key: jax.Array, n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """A data set ``X`` ``(n, d)`` i.i.d. ``N(0, I_d)`` and labels ``y = phi(x_1)`` ``(n,)``
    (``theta* = e_1``, noiseless)."""
    X = jax.random.normal(key, (n, d))
    return X, target(problem, X)


def finite_data_step(problem: SingleIndex, eps, eta, batch: int | None, train_second_layer: bool, sphere: bool, data, state, key):
    """One GD (``batch=None``: gradient of the empirical risk over all ``n`` samples) or minibatch
    SGD step (``batch`` indices i.i.d. uniform with replacement) on the data set ``data = (X, y)``.
    The gradient is that of ``(1/2B) sum_b (y_b - f(x_b))^2`` (labels from the data set, not
    recomputed), mean-field scaled like :func:`sgdlab.two_layer.problem.online_sgd_grad`."""
    X, y = data
    if batch is not None:
        idx = jax.random.randint(key, (batch,), 0, X.shape[0])
        X, y = X[idx], y[idx]
    return gradient_step(eps, eta, train_second_layer, sphere, state, online_sgd_grad(problem, *state, X, y))


@partial(jax.jit, static_argnames=("problem", "d", "n", "batch", "train_second_layer", "sphere"))
def finite_data_sgd(
    problem: SingleIndex,
    key: jax.Array,
    a0: jax.Array,
    d: int,
    n: int,
    eps,
    eta,
    steps: jax.Array,
    batch: int | None = None,
    train_second_layer: bool = True,
    sphere: bool = True,
    u0: jax.Array | None = None,
) -> TwoLayerObservables:
    """GD / minibatch SGD on one data set of ``n = alpha d`` samples (drawn from ``key``), from
    ``a0`` ``(m,)`` and ``u0`` ``(m, d)`` (default: i.i.d. uniform unit rows from ``key``),
    observed after ``steps`` ``(n_t,)``; time ``t = steps eta``. Returns
    :class:`TwoLayerObservables` (``(n_t, ...)``), with the exact population risk per degree
    (the test error) and the training risk. As ``alpha -> inf`` at fixed ``d`` and ``eta -> 0``, GD
    tends to the exact finite-``d`` population flow
    (:func:`sgdlab.two_layer.flow.solve_population_flow`). Vmap over ``key`` for seeds."""
    k_init, k_data, k_run = jax.random.split(key, 3)
    state = sgd_init(k_init, a0, d) if u0 is None else (a0, u0)
    data = make_data(problem, k_data, n, d)
    step = lambda st, k: finite_data_step(problem, eps, eta, batch, train_second_layer, sphere, data, st, k)  # noqa: E731
    return _run(step, lambda st: observe(problem, st, sphere, data), state, k_run, steps)
