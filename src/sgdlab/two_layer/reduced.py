"""The reduced ``(a, s)`` dynamics of BMZ: ``d = inf``, then the ``m -> inf`` law sampled by ``m``
particles (``docs/timescales.md``; Berthier, Montanari & Zhou, FoCM 2024, eq. (3.2))::

    eps a_i' = sum_k sigma_k s_i^k r_k,   s_i' = (1 - s_i^2) a_i sum_{k>=1} k sigma_k s_i^{k-1} r_k,
    r_k = phi_k - sigma_k M_k,  M_k = (1/m) sum_j a_j s_j^k,  R = (1/2) sum_k r_k^2.

* :func:`solve_reduced` -- the particle dynamics, on the ODE driver of
  :mod:`sgdlab.two_layer.flow` (``solver="auto"``: explicit Tsit5 unless it runs out of its
  budget, then implicit Kvaerno5; see that module).
* :func:`degree_one_time` -- the closed-form degree-1 learning time (derived in its docstring).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import host_input
from sgdlab.two_layer.flow import (FlowObservables, ODESolution, dpoly, explicit_budget, first_times, ode_kernel,
                                   padded_times, solve_ode)
from sgdlab.two_layer.problem import SingleIndex, powers


def reduced_vector_field(problem: SingleIndex, eps, state, train_second_layer: bool = True):
    """``d(a, s)/dt`` of the reduced particle dynamics (module docstring); shapes ``(m,)``."""
    a, s = state
    K = problem.degree
    phi, sig = problem.phi_arr, problem.sigma_arr
    S = powers(s, K)  # (m, K+1)
    M = a @ S / a.shape[0]
    r = phi - sig * M
    da = (S @ (sig * r)) / eps if train_second_layer else jnp.zeros_like(a)
    ds = (1.0 - s**2) * a * dpoly(sig * r, s)
    return da, ds


def _reduced_observables(problem: SingleIndex, state) -> FlowObservables:
    a, s = state
    M = a @ powers(s, problem.degree) / a.shape[0]
    r = problem.phi_arr - problem.sigma_arr * M
    return FlowObservables(M=M, risk=0.5 * r**2, a=a, s=s)


def reduced_field_flops(m: int, degree: int) -> float:
    """Flops of one evaluation of :func:`reduced_vector_field` (powers, two ``(m, K+1)`` products,
    the derivative polynomial)."""
    return 12.0 * m * (degree + 1)


def solve_reduced(
    problem: SingleIndex,
    a0: jax.Array,
    s0: jax.Array,
    eps,
    ts: jax.Array,
    train_second_layer: bool = True,
    rtol: float = 1e-8,
    atol: float = 1e-14,
    solver: str = "auto",
    max_steps: int = 200_000,
) -> ODESolution:
    """Reduced ``(a, s)`` particle dynamics (``d = inf``) from ``a0, s0`` ``(m,)``, saved at ``ts``
    (increasing, ``ts[0] >= 0``; integration starts at 0). Returns an
    :class:`~sgdlab.two_layer.flow.ODESolution` (``obs.a``, ``obs.s`` ``(n_t, m)``: the state).
    ``solver``: ``"auto"`` (explicit unless stiff), ``"tsit5"`` or ``"kvaerno5"``. Cost per step
    ``O(m K)`` explicit, ``O(m^3)`` implicit (dense LU of the ``2m`` state); no ``d``."""
    ts, n = padded_times(ts)
    a0, s0 = host_input(a0), host_input(s0)
    m = int(a0.shape[0])

    def run(name, steps):
        return first_times(ode_kernel(reduced_vector_field, _reduced_observables, problem, (a0, s0), eps,
                                      ts, train_second_layer, rtol, atol, name, steps), n)

    return solve_ode(run, solver, max_steps, explicit_budget(2 * m, reduced_field_flops(m, problem.degree)))


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
