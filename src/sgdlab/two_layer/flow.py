"""Population gradient flow of wide two-layer networks on single-index targets (BMZ), and the
ODE driver shared with the reduced dynamics (:mod:`sgdlab.two_layer.reduced`).

Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks", FoCM 2024.
Problem, conventions and the Mehler risk: :mod:`sgdlab.two_layer.problem`.

Dynamics (BMZ eq. (2.4)), two learning rates with ratio ``eps`` and mean-field scaling::

    eps da_i/dt = -m dR/da_i,      du_i/dt = -m (I - u_i u_i^T) grad_{u_i} R.

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
* :func:`overlap_escape_time` -- the single-neuron escape time (Ben Arous, Gheissari & Jagannath
  2021), used to check the ``log d`` law for information exponent 2.

**The ODE driver** (:func:`solve_ode`): diffrax, float64, adaptive steps (PID controller), the
observables saved on a time grid padded to a bucket size (:func:`padded_times`: grids of 65 to
128 times share one compiled solver). Solvers: ``"tsit5"`` (explicit), ``"kvaerno5"`` (implicit,
a dense LU of the Jacobian of the whole state per step) and the default ``"auto"``: Tsit5 first,
with the step budget :func:`explicit_budget`; only if that budget runs out (or the explicit solve
fails otherwise) -- the problem is stiff -- Kvaerno5 from the start with ``max_steps``. The budget
is the number of explicit steps that cost as much as a typical implicit solve
(:data:`IMPLICIT_REFERENCE_STEPS` steps, each priced by :func:`step_cost_ratio`), the ski-rental
rule: whichever solver is the cheaper, ``auto`` costs at most about twice as much. The system is
singularly perturbed (``eps`` multiplies ``da/dt``), but how stiff depends on the problem: with
``sigma_0 = 0`` the fast rates are ``~ sigma_k^2 <s^{2k}> / eps`` and stay moderate while ``s`` is
small, so the explicit solver is cheaper at large ``m`` down to very small ``eps`` (reduced dynamics,
``m = 400``, ``eps = 1e-8``: 1.6e5 Tsit5 steps against minutes of Kvaerno5 LUs); with
``sigma_0 != 0`` (relu) the rate ``sigma_0^2 / eps`` is there from ``t = 0`` and the implicit
solver wins once ``t_max / eps`` is large.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import host_input
from sgdlab.core.runtime_checks import nan_checks
from sgdlab.two_layer.problem import SingleIndex, U_poly, V_poly, mehler_risk_per_degree, powers


class FlowObservables(NamedTuple):
    """Saved on the time grid ``ts`` (``n_t`` times): ``M`` ``(n_t, K+1)`` per-degree moments
    ``M_k``; ``risk`` ``(n_t, K+1)`` risk per degree; ``a``, ``s`` ``(n_t, m)`` the particles."""

    M: jax.Array
    risk: jax.Array
    a: jax.Array
    s: jax.Array


class ODESolution(NamedTuple):
    """What :func:`solve_ode` returns: ``obs`` (:class:`FlowObservables` on the requested times;
    a leading seed axis when vmapped), ``num_steps`` and ``success`` (scalars, or ``(seeds,)``) and
    ``solver``, the name of the solver that produced them (``"tsit5"`` or ``"kvaerno5"``)."""

    obs: FlowObservables
    num_steps: jax.Array
    success: jax.Array
    solver: str


def dpoly(coef: jax.Array, s: jax.Array) -> jax.Array:
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
    c = a * dpoly(VU, s)
    off = 1.0 - jnp.eye(m)
    A = (a[:, None] * a[None, :] * dpoly(U2, G)) * off / m
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


#: Tolerances of the implicit stages' chord (Newton) iterations. diffrax's default ties them to
#: the step controller's ``rtol/atol``; at ``atol ~ 1e-14`` the chord iteration then rarely meets
#: them after ``eps ~ 1e-8`` (the a-dynamics is stiff with rate ``~ <s^2>/eps``) and more than half
#: the steps are rejected. Looser root tolerances leave the accuracy to the embedded error
#: estimate: at eps = 1e-10, m = 32 the steps to t = 4e-3 drop from 7853 (3516 accepted) to 1445
#: (808 accepted), and the half-learning times agree to < 1e-5 relative
#: (tests/two_layer/test_timescales_checks.py).
ROOT_RTOL, ROOT_ATOL = 1e-4, 1e-8


SOLVERS = ("auto", "tsit5", "kvaerno5")
#: flop-equivalent fixed cost of one vector-field evaluation or one linear-algebra call (dispatch,
#: loop bookkeeping) on a CPU; with it :func:`step_cost_ratio` gives, for the reduced dynamics, 17
#: at m = 32 (measured on 2 shared cores: 10-22, a Kvaerno5 step 1.0-2.2 ms against a Tsit5 step
#: 0.094-0.097 ms) and 2300 at m = 400 (measured 900-1800: 0.84-0.9 s against 0.5-0.9 ms)
CALL_OVERHEAD = 1.0e4
#: the step count of a typical implicit solve (Kvaerno5, reduced dynamics, m = 32: ~350 to t = 1 at
#: eps = 1e-4, 2591 at eps = 1e-8; 1132-3326 to t = 2.5 eps^(1/4) at eps = 1e-7 ... 1e-10)
IMPLICIT_REFERENCE_STEPS = 3000


def step_cost_ratio(state_size: int, field_flops: float) -> float:
    """Cost of one Kvaerno5 step over one Tsit5 step for a state of ``state_size`` numbers whose
    vector field costs ``field_flops`` flops. Tsit5: 6 field evaluations. Kvaerno5: the Jacobian
    (``n`` forward-mode products), its LU (``2 n^3 / 3``) and 5 implicit stages of ~4 chord
    iterations, each two triangular solves (``2 n^2``) and a field evaluation; every evaluation
    costs :data:`CALL_OVERHEAD` more, an iteration three of them."""
    n, w = float(state_size), float(field_flops)
    explicit = 6.0 * (w + CALL_OVERHEAD)
    implicit = 2.0 * n**3 / 3.0 + 2.0 * n * w + 20.0 * (2.0 * n * n + w + 3.0 * CALL_OVERHEAD)
    return implicit / explicit


def explicit_budget(state_size: int, field_flops: float) -> int:
    """The step budget of the explicit attempt of ``solver="auto"``: as many Tsit5 steps as cost
    :data:`IMPLICIT_REFERENCE_STEPS` Kvaerno5 steps (:func:`step_cost_ratio`), in ``[1000, 1e7]``.
    Reduced dynamics: 50 000 at ``m = 32``, 135 000 at ``m = 64``, 6.8e6 at ``m = 400``."""
    return int(min(1e7, max(1e3, IMPLICIT_REFERENCE_STEPS * step_cost_ratio(state_size, field_flops))))


def _make_solver(solver: str):
    if solver == "kvaerno5":
        return diffrax.Kvaerno5(root_finder=diffrax.VeryChord(rtol=ROOT_RTOL, atol=ROOT_ATOL))
    if solver == "kvaerno3":
        return diffrax.Kvaerno3(root_finder=diffrax.VeryChord(rtol=ROOT_RTOL, atol=ROOT_ATOL))
    if solver == "kvaerno5_strict":
        return diffrax.Kvaerno5()
    if solver == "tsit5":
        return diffrax.Tsit5()
    raise ValueError(f"unknown solver {solver!r}; use 'auto', 'tsit5' or 'kvaerno5' (or 'kvaerno3', 'kvaerno5_strict')")


def padded_times(ts) -> tuple[np.ndarray | jax.Array, int]:
    """``(ts padded to the bucket size, n)``: ``ts`` ``(n,)`` followed by copies of ``ts[-1]`` up
    to the next power of two (at least 16), so that grids of neighbouring sizes share one compiled
    solver (the solve still ends at ``ts[-1]``; the copies are sliced off). Padded in NumPy (no
    eager JAX operation) unless ``ts`` is traced."""
    xp = jnp if isinstance(ts, jax.core.Tracer) else np
    ts = xp.asarray(ts)
    n = int(ts.shape[0])
    size = max(16, 1 << (n - 1).bit_length())
    return xp.concatenate([ts, xp.full(size - n, 1.0, ts.dtype) * ts[-1]]), n


@partial(jax.jit, static_argnames=("field", "observe", "train_second_layer", "solver", "max_steps"))
def ode_kernel(field, observe, problem, y0, eps, ts, train_second_layer, rtol, atol, solver, max_steps):
    """One adaptive diffrax solve of ``field(problem, eps, y, train_second_layer)`` from ``t = 0``,
    ``observe(problem, y)`` saved at ``ts``: ``(obs, num_steps, success)``. ``field`` and
    ``observe`` are module-level functions (static: one compiled solver per model); ``problem`` is
    traced (a pytree), so every target and activation of one degree share the compiled solver."""
    term = diffrax.ODETerm(lambda t, y, args: field(problem, eps, y, train_second_layer))
    with nan_checks():  # diffrax's checks of ts and dt0 without a host callback: a cacheable program
        sol = diffrax.diffeqsolve(
            term,
            _make_solver(solver),
            t0=0.0,
            t1=ts[-1],
            dt0=jnp.minimum(ts[-1], eps) * 1e-3,
            y0=y0,
            saveat=diffrax.SaveAt(ts=ts, fn=lambda t, y, args: observe(problem, y)),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
            throw=False,
        )
    return sol.ys, sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful


def solve_ode(run: Callable[[str, int], tuple], solver: str, max_steps: int, budget: int, implicit_ok: bool = True) -> ODESolution:
    """The solver policy (module docstring). ``run(name, steps)`` solves with solver ``name`` and
    step budget ``steps`` and returns ``(obs, num_steps, success)``; ``budget`` is the explicit
    budget of ``"auto"`` (:func:`explicit_budget`); ``implicit_ok=False`` (no implicit solver for
    this size) keeps ``"auto"`` explicit with ``max_steps``. ``"auto"`` decides on the computed
    ``success``: call it outside ``jit``/``vmap`` (inside, name the solver)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
    if solver != "auto":
        return ODESolution(*run(solver, max_steps), solver)
    out = run("tsit5", budget if implicit_ok else max_steps)
    if isinstance(out[2], jax.core.Tracer):
        raise ValueError("solver='auto' chooses after the explicit solve and needs concrete values: "
                         "call it outside jit / vmap, or pass solver='tsit5' or 'kvaerno5'")
    if not implicit_ok or bool(np.all(np.asarray(out[2]))):
        return ODESolution(*out, "tsit5")
    return ODESolution(*run("kvaerno5", max_steps), "kvaerno5")


def first_times(out: tuple, n: int) -> tuple:
    """``(obs, num_steps, success)`` with the padded save times cut to the first ``n`` (the time
    axis is the last but one of every observable, after an optional seed axis). Concrete results
    are cut in NumPy (no eager JAX operation), traced ones in JAX."""
    obs, steps, ok = out

    def cut(x):  # every observable is (..., n_t, k)
        return x[..., :n, :] if isinstance(x, jax.core.Tracer) else np.asarray(x)[..., :n, :]

    return jax.tree.map(cut, obs), steps, ok


def flow_field_flops(m: int, degree: int) -> float:
    """Flops of one evaluation of :func:`population_flow_vector_field` (``B G``, ``c s^T``, ``U'(G)``)."""
    return 4.0 * m**3 + 6.0 * m * m * (degree + 1)


#: the largest m of the implicit flow solver (its Jacobian is (m^2 + 2m)-square)
FLOW_IMPLICIT_MAX_M = 24


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
    solver: str = "auto",
    max_steps: int = 200_000,
) -> ODESolution:
    """Exact finite-``d`` population gradient flow from ``(a0 (m,), s0 (m,), G0 (m, m))``.

    ``ts``: increasing save times ``(n_t,)`` with ``ts[0] >= 0`` (integration starts at 0).
    Returns an :class:`ODESolution`. ``solver``: ``"auto"`` (module docstring), ``"tsit5"`` or
    ``"kvaerno5"`` (``m <= 24``: it factorises an ``(m^2 + 2m)``-square Jacobian). Cost per step
    ``O(m^3)``, independent of ``d``. With a named solver ``solve_population_flow(...)[:3]`` (the
    arrays, without the solver's name) can be vmapped over the initial state;
    :func:`flow_from_random_starts` does it for seeds, with ``"auto"`` too."""
    ts, n = padded_times(ts)
    m = int(a0.shape[0])

    def run(name, steps):
        return first_times(ode_kernel(population_flow_vector_field, _flow_observables, problem, (a0, s0, G0), eps, ts,
                                      train_second_layer, rtol, atol, name, steps), n)

    return solve_ode(run, solver, max_steps, explicit_budget(m * m + 2 * m, flow_field_flops(m, problem.degree)),
                     implicit_ok=m <= FLOW_IMPLICIT_MAX_M)


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


@partial(jax.jit, static_argnames=("m", "d", "seeds"))
def random_starts(key: jax.Array, m: int, d: int, seeds: int) -> tuple[jax.Array, jax.Array]:
    """:func:`random_overlaps_wishart` from each of ``split(key, seeds)``: ``s (seeds, m)``,
    ``G (seeds, m, m)`` (one program: the split is not an eager operation)."""
    return jax.vmap(lambda k: random_overlaps_wishart(k, m, d))(jax.random.split(key, seeds))


@partial(jax.jit, static_argnames=("train_second_layer", "solver", "max_steps"))
def flow_kernel(problem, a0, s0, G0, eps, ts, train_second_layer, rtol, atol, solver, max_steps):
    """:func:`ode_kernel` of the finite-``d`` flow vmapped over the seeds of ``s0 (seeds, m)``,
    ``G0 (seeds, m, m)`` (``a0`` shared), in one program."""
    one = lambda s, G: ode_kernel(population_flow_vector_field, _flow_observables, problem, (a0, s, G), eps, ts,  # noqa: E731
                                  train_second_layer, rtol, atol, solver, max_steps)
    return jax.vmap(one)(s0, G0)


def flow_from_random_starts(problem: SingleIndex, key: jax.Array, a0, m: int, d: int, seeds: int, eps, ts,
                            train_second_layer: bool = True, rtol: float = 1e-8, atol: float = 1e-12, solver: str = "auto",
                            max_steps: int = 200_000) -> ODESolution:
    """The exact finite-``d`` flow (:func:`solve_population_flow`) from ``seeds`` random first
    layers of ``m`` unit vectors in ``R^d`` (overlaps drawn by :func:`random_overlaps_wishart`
    from ``split(key, seeds)``) and the second layer ``a0`` ``(m,)``, vmapped over the seeds.

    Returns an :class:`ODESolution` with a leading seed axis (``(seeds,)`` for ``num_steps`` and
    ``success``); ``"auto"`` switches all seeds to the implicit solver if one explicit solve fails.
    A solve that ran out of ``max_steps`` has ``success = False`` and non-finite values after the
    time it reached."""
    s0, G0 = random_starts(key, m, d, seeds)
    a0 = host_input(a0)
    ts, n = padded_times(ts)

    def run(name, steps):
        return first_times(flow_kernel(problem, a0, s0, G0, eps, ts, train_second_layer, rtol, atol, name, steps), n)

    return solve_ode(run, solver, max_steps, explicit_budget(m * m + 2 * m, flow_field_flops(m, problem.degree)),
                     implicit_ok=m <= FLOW_IMPLICIT_MAX_M)


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
