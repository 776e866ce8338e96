"""Population gradient flow of wide two-layer networks on single-index targets (BMZ).

Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks", FoCM 2024.
Problem, conventions and the Mehler risk: :mod:`sgdlab.two_layer.problem`.

Dynamics (BMZ eq. (2.4)), two learning rates with ratio ``eps`` and mean-field scaling::

    eps da_i/dt = -m dR/da_i,      du_i/dt = -m (I - u_i u_i^T) grad_{u_i} R.

Three solvers, all pure functions of (problem, initial state, eps, time grid), float64, integrated
with diffrax (implicit ``Kvaerno5`` by default: the system is singularly perturbed, ``eps``
multiplies ``da/dt``):

* :func:`solve_population_flow` -- the *exact* finite-``d`` flow. The velocity of ``u_i`` lies in
  ``span(theta*, u_1..u_m)``, so the overlaps ``s = U theta*`` and ``G = U U^T`` obey a *closed*
  ODE (derived below); ``d`` enters only through the initial ``(s, G)`` (random unit vectors have
  ``s_i, G_ij ~ d^{-1/2}``). This is the (a, u) flow without any Monte Carlo and without
  approximation. With ``u_i' = c_i theta* + sum_j B_ij u_j``::

      c_i     = a_i V'(s_i)
      B_ij    = -(a_i a_j / m) U'(G_ij)                                  (j != i)
      B_ii    = -c_i s_i + (a_i / m) sum_{j != i} a_j U'(G_ij) G_ij       (tangent projection)
      s'      = c + B s,     G' = c s^T + s c^T + B G + G B^T            (diag G' = 0 exactly)
      eps a'  = V(s) - (1/m) U(G) a.

* :func:`flow_from_random_starts` -- that flow from random first layers, vmapped over seeds.

* :func:`random_overlaps_wishart` -- initial overlaps of random unit vectors in ``R^d`` in ``O(m^2)``,
  independent of ``d`` (so ``d >> 1/eps`` costs nothing).

* :func:`solve_reduced` -- the reduced ``(a, s)`` particle dynamics (``d = inf``, then the
  ``m -> inf`` law approximated by ``m`` particles; spec 05 / BMZ eq. (3.2))::

      eps a_i' = sum_k sigma_k s_i^k r_k,   s_i' = (1 - s_i^2) a_i sum_{k>=1} k sigma_k s_i^{k-1} r_k,
      r_k = phi_k - sigma_k M_k,  M_k = (1/m) sum_j a_j s_j^k,  R = (1/2) sum_k r_k^2.

* :func:`degree_one_time` -- the closed-form degree-1 learning time (derived here, see its
  docstring) and :func:`overlap_escape_time` -- the single-neuron escape time (Ben Arous,
  Gheissari & Jagannath 2021), used to check the ``log d`` law for information exponent 2.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.two_layer.problem import SingleIndex, U_poly, V_poly, mehler_risk_per_degree, powers


class FlowObservables(NamedTuple):
    """Saved on the time grid ``ts`` (``n_t`` times): ``M`` ``(n_t, K+1)`` per-degree moments
    ``M_k``; ``risk`` ``(n_t, K+1)`` risk per degree; ``a``, ``s`` ``(n_t, m)`` the particles."""

    M: jax.Array
    risk: jax.Array
    a: jax.Array
    s: jax.Array


def _dpoly(coef: jax.Array, s: jax.Array) -> jax.Array:
    """Derivative of ``sum_k coef_k s^k`` at ``s`` (elementwise)."""
    K = coef.shape[0] - 1
    if K == 0:
        return jnp.zeros_like(s)
    return jnp.polyval((coef[1:] * jnp.arange(1, K + 1.0))[::-1], s)


def population_flow_vector_field(problem: SingleIndex, eps, state, train_second_layer: bool = True):
    """``d(a, s, G)/dt`` of the exact finite-``d`` flow (module docstring); shapes ``(m,)``,
    ``(m,)``, ``(m, m)``."""
    a, s, G = state
    m = a.shape[0]
    phi, sig = problem.phi_arr, problem.sigma_arr
    VU = phi * sig
    U2 = sig**2
    c = a * _dpoly(VU, s)
    off = 1.0 - jnp.eye(m)
    A = (a[:, None] * a[None, :] * _dpoly(U2, G)) * off / m
    B = -A + jnp.diag(-c * s + jnp.sum(A * G, axis=1))
    ds = c + B @ s
    dG = jnp.outer(c, s) + B @ G
    dG = (dG + dG.T) * off
    if train_second_layer:
        da = (V_poly(problem, s) - U_poly(problem, G) @ a / m) / eps
    else:
        da = jnp.zeros_like(a)
    return da, ds, dG


def _flow_observables(problem: SingleIndex, state) -> FlowObservables:
    a, s, G = state
    M = a @ powers(s, problem.degree) / a.shape[0]
    return FlowObservables(M=M, risk=mehler_risk_per_degree(problem, a, s, G), a=a, s=s)


def reduced_vector_field(problem: SingleIndex, eps, state, train_second_layer: bool = True):
    """``d(a, s)/dt`` of the reduced particle dynamics (module docstring); shapes ``(m,)``."""
    a, s = state
    K = problem.degree
    phi, sig = problem.phi_arr, problem.sigma_arr
    S = powers(s, K)  # (m, K+1)
    M = a @ S / a.shape[0]
    r = phi - sig * M
    da = (S @ (sig * r)) / eps if train_second_layer else jnp.zeros_like(a)
    ds = (1.0 - s**2) * a * _dpoly(sig * r, s)
    return da, ds


def _reduced_observables(problem: SingleIndex, state) -> FlowObservables:
    a, s = state
    M = a @ powers(s, problem.degree) / a.shape[0]
    r = problem.phi_arr - problem.sigma_arr * M
    return FlowObservables(M=M, risk=0.5 * r**2, a=a, s=s)


#: Tolerances of the implicit stages' chord (Newton) iterations. diffrax's default ties them to
#: the step controller's ``rtol/atol``; at ``atol ~ 1e-14`` the chord iteration then rarely meets
#: them after ``eps ~ 1e-8`` (the a-dynamics is stiff with rate ``~ <s^2>/eps``) and more than half
#: the steps are rejected. Looser root tolerances leave the accuracy to the embedded error
#: estimate: at eps = 1e-10, m = 32 the steps to t = 4e-3 drop from 7853 (3516 accepted) to 1445
#: (808 accepted), and the half-learning times agree to < 1e-5 relative
#: (tests/test_timescales_checks.py).
ROOT_RTOL, ROOT_ATOL = 1e-4, 1e-8


def _make_solver(solver: str):
    if solver == "kvaerno5":
        return diffrax.Kvaerno5(root_finder=diffrax.VeryChord(rtol=ROOT_RTOL, atol=ROOT_ATOL))
    if solver == "kvaerno3":
        return diffrax.Kvaerno3(root_finder=diffrax.VeryChord(rtol=ROOT_RTOL, atol=ROOT_ATOL))
    if solver == "kvaerno5_strict":
        return diffrax.Kvaerno5()
    if solver == "tsit5":
        return diffrax.Tsit5()
    raise ValueError(f"unknown solver {solver!r}; use 'kvaerno5', 'kvaerno3', 'kvaerno5_strict' or 'tsit5'")


def _solve(vf, obs, y0, ts, rtol, atol, solver, max_steps, dt0):
    term = diffrax.ODETerm(lambda t, y, args: vf(y))
    solv = _make_solver(solver)
    sol = diffrax.diffeqsolve(
        term,
        solv,
        t0=0.0,
        t1=ts[-1],
        dt0=dt0,
        y0=y0,
        saveat=diffrax.SaveAt(ts=ts, fn=lambda t, y, args: obs(y)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    return sol.ys, sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful


@partial(jax.jit, static_argnames=("problem", "train_second_layer", "solver", "max_steps"))
def solve_population_flow(
    problem: SingleIndex,
    a0: jax.Array,
    s0: jax.Array,
    G0: jax.Array,
    eps,
    ts: jax.Array,
    train_second_layer: bool = True,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    solver: str = "kvaerno5",
    max_steps: int = 200_000,
):
    """Exact finite-``d`` population gradient flow from ``(a0 (m,), s0 (m,), G0 (m, m))``.

    ``ts``: increasing save times ``(n_t,)`` with ``ts[0] >= 0`` (integration starts at 0).
    Returns ``(FlowObservables, num_steps, success)``. ``solver="tsit5"`` (explicit) is cheaper
    per step for large ``m`` but needs ``O(1/eps)`` steps. Cost per step ``O(m^3)``, independent
    of ``d``. Vmappable over seeds (the initial state).
    """
    vf = lambda y: population_flow_vector_field(problem, eps, y, train_second_layer)  # noqa: E731
    obs = lambda y: _flow_observables(problem, y)  # noqa: E731
    return _solve(vf, obs, (a0, s0, G0), ts, rtol, atol, solver, max_steps, jnp.minimum(ts[-1], eps) * 1e-3)


@partial(jax.jit, static_argnames=("problem", "train_second_layer", "solver", "max_steps"))
def solve_reduced(
    problem: SingleIndex,
    a0: jax.Array,
    s0: jax.Array,
    eps,
    ts: jax.Array,
    train_second_layer: bool = True,
    rtol: float = 1e-8,
    atol: float = 1e-14,
    solver: str = "kvaerno5",
    max_steps: int = 200_000,
):
    """Reduced ``(a, s)`` particle dynamics (``d = inf``) from ``a0, s0`` ``(m,)``; see
    :func:`solve_population_flow` for ``ts`` and the return value. Cost per step ``O(m K)``
    plus the implicit solve ``O(m^3)`` (dense Jacobian of the ``2m`` state); no ``d``."""
    vf = lambda y: reduced_vector_field(problem, eps, y, train_second_layer)  # noqa: E731
    obs = lambda y: _reduced_observables(problem, y)  # noqa: E731
    return _solve(vf, obs, (a0, s0), ts, rtol, atol, solver, max_steps, jnp.minimum(ts[-1], eps) * 1e-3)


def random_overlaps(key: jax.Array, m: int, d: int) -> tuple[jax.Array, jax.Array]:
    """``(s, G)`` of ``m`` i.i.d. uniform unit vectors in ``R^d`` with ``theta* = e_1``:
    ``s`` ``(m,)``, ``G`` ``(m, m)``. Exact in law (draws the vectors: cost ``O(m^2 d)``)."""
    u = jax.random.normal(key, (m, d))
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    return u[:, 0], u @ u.T


def _sqrt_chi2(key: jax.Array, dof: np.ndarray) -> jax.Array:
    """``sqrt`` of independent chi-square draws with ``dof`` (> 100) degrees of freedom by the
    Wilson-Hilferty transform ``chi2_k = k (1 - c + z sqrt(c))^3``, ``c = 2/(9k)``, ``z ~ N(0, 1)``
    (error of its quantiles ``O(k^{-3/2})``: below 1e-4 relative for ``k > 100``)."""
    dof = np.asarray(dof, float)
    z = jax.random.normal(key, dof.shape)
    c = 2.0 / (9.0 * dof)
    return jnp.sqrt(jnp.asarray(dof) * (1.0 - c + z * jnp.sqrt(c)) ** 3)


@partial(jax.jit, static_argnames=("m", "d"))
def random_overlaps_wishart(key: jax.Array, m: int, d: int) -> tuple[jax.Array, jax.Array]:
    """``(s (m,), G (m, m))`` of ``m`` i.i.d. uniform unit vectors ``u_i = g_i / |g_i|`` in ``R^d``
    with ``theta* = e_1``, drawn in ``O(m^2)`` operations independently of ``d``.

    Same law as :func:`random_overlaps` (which draws the ``m x d`` vectors, and is used for
    ``d <= m + 1000``): with ``g_i = (x_i, g_i')``, ``x_i ~ N(0, 1)``, the Gram
    matrix of the ``g_i'`` is ``Wishart_m(d - 1, I) = L L^T`` (Bartlett: ``L`` lower triangular,
    ``L_kk^2 ~ chi^2_{d-1-k}``, ``L_kj ~ N(0, 1)`` below the diagonal); ``W = x x^T + L L^T``,
    ``s_i = x_i / sqrt(W_ii)``, ``G = W / sqrt(W_ii W_jj)``. The chi-square draws use the
    Wilson-Hilferty transform (:func:`_sqrt_chi2`)."""
    if d <= m + 1000:
        return random_overlaps(key, m, d)
    k1, k2, k3 = jax.random.split(key, 3)
    x = jax.random.normal(k1, (m,))
    L = jnp.tril(jax.random.normal(k3, (m, m)), -1) + jnp.diag(_sqrt_chi2(k2, (d - 1) - np.arange(m)))
    W = jnp.outer(x, x) + L @ L.T
    n = jnp.sqrt(jnp.diag(W))
    G = (W / jnp.outer(n, n)).at[jnp.diag_indices(m)].set(1.0)
    return x / n, G


def flow_from_random_starts(problem: SingleIndex, key: jax.Array, a0, m: int, d: int, seeds: int, eps, ts,
                            train_second_layer: bool = True, rtol: float = 1e-8, atol: float = 1e-12, solver: str = "kvaerno5",
                            max_steps: int = 200_000):
    """The exact finite-``d`` flow (:func:`solve_population_flow`) from ``seeds`` random first
    layers of ``m`` unit vectors in ``R^d`` (overlaps drawn by :func:`random_overlaps_wishart`
    from ``split(key, seeds)``) and the second layer ``a0`` ``(m,)``, vmapped over the seeds.

    Returns ``(FlowObservables, num_steps, success)`` with a leading seed axis (``(seeds,)`` for
    the last two). A solve that ran out of ``max_steps`` has ``success = False`` and non-finite
    values after the time it reached."""
    keys = jax.random.split(key, seeds)
    s0, G0 = jax.vmap(lambda k: random_overlaps_wishart(k, m, d))(keys)
    a0 = jnp.asarray(a0)
    ts = jnp.asarray(ts)
    return jax.vmap(lambda s, G: solve_population_flow(problem, a0, s, G, eps, ts, train_second_layer, rtol, atol, solver,
                                                       max_steps))(s0, G0)


def initial_second_layer(m: int, scale: float, law: str = "uniform", key: jax.Array | None = None) -> np.ndarray:
    """Initial ``a`` ``(m,)``: ``law="uniform"`` on ``[-scale, scale]`` or ``"gaussian"``
    ``N(0, scale^2)``. With ``key=None`` the deterministic quantiles ``(i + 1/2)/m`` are used (a
    low-noise particle approximation of the ``m -> inf`` law); with a key, i.i.d. draws."""
    if key is None:
        q = (np.arange(m) + 0.5) / m
    else:
        q = np.asarray(jax.random.uniform(key, (m,), minval=1e-12, maxval=1 - 1e-12))
    if law == "uniform":
        return scale * (2 * q - 1)
    if law == "gaussian":
        from scipy.special import ndtri

        return scale * ndtri(q)
    raise ValueError(f"unknown law {law!r}; use 'uniform' or 'gaussian'")


def degree_one_time(problem: SingleIndex, a: np.ndarray, s0: np.ndarray, eps: float, fraction: float = 0.5) -> float:
    """Closed-form time at which ``sigma_1 M_1`` reaches ``fraction * phi_1`` (degree-1 learning).

    Derivation (information exponent 1, ``phi_1 sigma_1 != 0``, small ``eps``). While ``s = O(eps^{1/4})``
    the degree-1 terms dominate: with ``g = sigma_1 r_1(t)``, ``x_i = s_i`` and ``y_i = sqrt(eps) a_i``,
    ``x_i' = g y_i / sqrt(eps)``, ``y_i' = g x_i / sqrt(eps)``: a linear instability with rate
    ``|sigma_1 phi_1| / sqrt(eps)`` at ``r_1 = phi_1``. In the clock ``tau = int |g| dt / sqrt(eps)``
    the growing mode is ``c_i e^tau`` with ``c_i = (s_i(0) + sgn(sigma_1 phi_1) sqrt(eps) a_i(0)) / 2``,
    so ``kappa = sigma_1 M_1 / phi_1 = kappa_0 e^{2 tau}``,
    ``kappa_0 = |sigma_1| <c^2> / (|phi_1| sqrt(eps))``, and ``dtau/dt = |sigma_1 phi_1| (1 - kappa) /
    sqrt(eps)``: a logistic law, integrated exactly::

        t_1(fraction) = sqrt(eps) / (2 |sigma_1 phi_1|) * [logit(fraction) - logit(kappa_0)]
                      ~ sqrt(eps) log(1/eps) / (4 |sigma_1 phi_1|)      (eps -> 0).

    If ``sigma_0 != 0`` the fast degree-0 phase (``t ~ eps``) pins ``M_0 = phi_0/sigma_0``; its
    Lagrange-multiplier term removes the mean of ``a`` and ``s`` from the instability, so the
    centred particles are used. Corrections: relative ``O(eps^{1/4})`` (degree-2 terms) and
    ``O(sqrt(eps) log)`` (the frozen mean mode). ``a``, ``s0``: ``(m,)`` initial particles.
    """
    phi1, sig1 = problem.phi[1], problem.sigma[1]
    if phi1 * sig1 == 0:
        raise ValueError("degree_one_time needs phi_1 sigma_1 != 0 (information exponent 1)")
    a, s0 = np.asarray(a, float), np.asarray(s0, float)
    if problem.sigma[0] != 0:
        a, s0 = a - a.mean(), s0 - s0.mean()
    c = 0.5 * (s0 + np.sign(sig1 * phi1) * np.sqrt(eps) * a)
    k0 = abs(sig1) * np.mean(c**2) / (abs(phi1) * np.sqrt(eps))
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    if not 0 < k0 < fraction:
        raise ValueError(f"kappa_0 = {k0:.3g} is not small: eps is outside the singular-perturbation regime")
    return float(np.sqrt(eps) / (2 * abs(sig1 * phi1)) * (logit(fraction) - logit(k0)))


def overlap_escape_time(problem: SingleIndex, a: float, s0: float, level: float = 0.5) -> float:
    """Time for one neuron with fixed second layer ``a`` to go from overlap ``s0`` to ``level``
    under ``s' = (1 - s^2) a V'(s)`` (the ``m = 1`` population flow with a fixed second layer;
    Ben Arous, Gheissari & Jagannath 2021, eq. (1.3) for the correlation loss):
    ``t = int_{s0}^{level} ds / ((1 - s^2) a V'(s))`` by adaptive quadrature in ``log s``.
    For information exponent 2 (``phi_1 = 0``): ``t = log(1/s0) / (2 a phi_2 sigma_2) + O(1)``,
    i.e. ``log d / (4 a phi_2 sigma_2)`` from ``s0 = d^{-1/2}``."""
    from scipy import integrate

    VU = np.asarray(problem.phi) * np.asarray(problem.sigma)
    dV = np.polynomial.polynomial.Polynomial(VU).deriv()

    def integrand(x):
        s = np.exp(x)
        return s / ((1 - s * s) * a * dV(s))

    val, _ = integrate.quad(integrand, np.log(s0), np.log(level), epsabs=1e-12, epsrel=1e-11, limit=400)
    return float(val)
