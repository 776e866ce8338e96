"""Discrete-time dynamical mean-field theory (DMFT) of GD / SGD / persistent SGD / Langevin on the
Gaussian mixture, solved with a Monte-Carlo sample of the effective process.

Sources
-------
- F. Mignacco, F. Krzakala, P. Urbani, L. Zdeborova, "Dynamical mean-field theory for stochastic
  gradient descent in Gaussian mixture classification", NeurIPS 2020, arXiv:2006.06098
  (the effective process and its kernels, in continuous time);
- C. Gerbelot, E. Troiani, F. Mignacco, F. Krzakala, L. Zdeborova, "Rigorous dynamical mean field
  theory for stochastic gradient descent methods", arXiv:2210.06591 (the discrete-time equations
  used here, exact for the discrete algorithm as ``d -> infinity`` at fixed ``alpha = n/d``);
- H. Eissfeller, M. Opper, "New method for studying the dynamics of disordered spin systems
  without finite-size effects", Phys. Rev. Lett. 68, 2094 (1992) (solving the self-consistency by
  iterating a Monte-Carlo sample of the effective process);
- ``docs/dmft.md`` (equations and conventions, the estimator, accuracy, performance).

Dynamics (always the *unnormalised* update; the caller maps the normalised convention by
``eta' = eta/b, lambda' = b lambda, tau' = tau/b, T' = b T``)::

    w_{k+1} = w_k - eta [ lambda w_k + sum_mu s_mu(k) loss'(y_mu, h_mu(k)) x_mu / sqrt(d) ]
              + sqrt(2 T eta) xi_k,        k = 0 .. n_steps - 1,  time t = k eta,

with the batch mask ``s_mu(k)`` a two-state chain ``s(0) ~ Bernoulli(b)``, ``P(0 -> 1) = p_on``,
``P(1 -> 0) = p_off`` (GD: ``p_on = 1, p_off = 0, b = 1``; i.i.d. minibatches: ``p_on = b,
p_off = 1 - b``; persistent SGD: ``p_on = eta/tau, p_off = (1 - b) eta/(b tau)``); ``s(k)`` gates
the step from ``w_k`` to ``w_{k+1}``.

Equations (grid ``k = 0 .. T`` with ``T = n_steps``; vectors ``(T+1,)``, matrices ``(T+1, T+1)``
with the first index the later time)
------------------------------------------------------------------------------------------------
Effective sample (one of ``N`` Monte-Carlo trajectories)::

    c ~ clusters,  y = labels(c),  s = mask chain,  g0 ~ N(0, C),
    h_k   = c m_k + sqrt(Delta) g0_k - Delta sum_{j<k} R_{kj} Lam_j,
    Lam_k = s_k loss'(y, h_k),   a_k = s_k loss''(y, h_k).

Kernels::

    M_{kj} = alpha Delta E[Lam_k Lam_j]                   (noise kernel, ``M_C`` of the spec)
    mu_k   = alpha E[c Lam_k]                             (drift along the centroid)
    Q_{kj} = alpha sqrt(Delta) E[d Lam_k / d g0_j]        (memory kernel, lower triangular)
           = alpha Delta E[a_k chi_{kj}],  chi = (I + Delta R diag(a))^{-1},   Q_kk = alpha Delta E[a_k].

Weight side (``R_{j+1, j} = eta``, ``R`` strictly lower triangular)::

    R_{k+1,j} = (1 - eta lambda) R_{kj} - eta sum_{l=j..k} Q_{kl} R_{lj} + eta delta_{kj}
    P_{k+1}   = (1 - eta lambda) P_k   - eta sum_{l<=k}  Q_{kl} P_l,           P_0 = 1
    m_{k+1}   = (1 - eta lambda) m_k   - eta (mu_k + sum_{l<=k} Q_{kl} m_l),    m_0 = m0
    C         = m m^T + sigma0^2 P P^T + R M R^T + (2 T / eta) R R^T.

``R_{kj}`` is the response of ``w_k`` to a field ``f_j`` added *inside* the bracket of step ``j``
(``w_{j+1} = w_j - eta [... - f_j]``), hence ``R_{j+1,j} = eta``; ``C`` is the full correlation
``w_k . w_j / d`` including ``m m^T``.

Memory-kernel estimator
-----------------------
``SolverOptions.response``:

- ``"probe"`` (default): forward-mode differentiation of the effective process along one random
  Rademacher direction ``eps`` per trajectory (``g0 -> g0 + eps``), carried through the memory term
  in the same time scan (one tangent: ``O(N T^2)``). The tangent is ``dLam = J eps`` with
  ``J = dLam/dg0`` lower triangular and ``J_kk = sqrt(Delta) a_k`` known. Row ``k`` of ``Q`` is the
  least-squares regression, over the ``N`` trajectories, of the off-diagonal tangent
  ``dLam_k - J_kk eps_k = sum_{j<k} J_kj eps_j`` on the probes ``eps_{<k}``::

      Q_{k, <k} = alpha sqrt(Delta) G_{<k}^{-1} E_N[eps_{<k} (dLam_k - J_kk eps_k)],   G = E_N[eps eps^T],
      Q_kk = alpha Delta E_N[a_k],   Q_kj = 0 for j > k (causality, exact).

  Plain Hutchinson (``G -> I``) is unbiased too, but each entry then picks up the cross-talk
  ``sum_{j' != j} J_kj' eps_j' eps_j``, whose noise does not decay with the lag and accumulates in
  ``sum_l Q_kl m_l`` over long horizons (a converged GD solution drifts by ~0.5% by t = 30 at ``N = 6000``).
  The regression removes it: what remains is the trajectory-to-trajectory spread of ``J`` (none
  for GD with the square loss, where ``J`` is the same for every trajectory and the estimate is
  exact), plus a bias ``O(T/N)``. ``G`` is factorised once per solve (common random numbers);
  each row costs two ``O(T^2)`` triangular solves with leading blocks of that factor.
- ``"stein"``: the Novikov/Stein identity ``Q = alpha sqrt(Delta) E[Lam g0^T] C^{-1}``, evaluated as
  ``alpha sqrt(Delta) E[Lam z^T] L^{-1}`` with ``g0 = L z``, then masked to its causal part. Its
  noise is amplified by ``L^{-1}``, i.e. by the conditioning of ``C``, which is poor for small
  ``eta`` or near a fixed point, and it is undefined for the rank-deficient ``C`` of the zero
  start. Kept as an independent cross-check (``docs/dmft.md`` has measurements).

Solving
-------
Every solve uses *common random numbers*: the clusters, masks, white noise ``z`` (``g0 = L z``,
``L L^T`` the Cholesky factorisation of ``C`` with a relative jitter) and probes are drawn once
from ``SolverOptions.seed``. The sampled equations are then a deterministic, *causal* map
``K -> K_hat(K)`` on the kernels ``K = (mu, M, Q)``: rows ``<= k`` of ``K_hat`` depend on rows
``< k`` of ``K`` only. Two ways to its fixed point, which agree to rounding:

- ``start = "march"`` (default): one causal time march, ``O(N T^2)``: at step ``k`` the Cholesky
  row ``k`` of ``C``, the fields ``h_k`` of all trajectories, kernel row ``k``, then the weight-side
  row ``k + 1``. This *is* the fixed point of the sampled map, reached with no iteration error and
  no risk of transient divergence. It is followed by the fixed-point iteration below, whose first
  residual (~1e-12) certifies it.
- ``start = "zero"``: the damped Eissfeller-Opper iteration from zero kernels (the free ridge
  dynamics). Each iteration (one jitted call, ``O(N T^2)`` with the past memory done as matrix
  products per time block) is ``K <- damping K + (1 - damping) K_hat(K)``. Plain iteration can
  overshoot on long horizons (large transient kernels); damping ``0.3`` converges geometrically
  (15-25 iterations to ``1e-6`` on the test cases), while the three-cluster warm start diverges
  below ``damping ~ 0.8`` and is left to the march.

The residual of an iteration is ``max_X |X_hat - X|_inf / max(|X_hat|_inf, 1e-12)`` over
``X in (mu, M, Q)``; the solver stops when it is below ``tolerance``.

Precision (``SolverOptions.precision``): the ``N``-sized work (common random numbers, the
histories of the effective process, the products over the trajectories) runs in float32 under
``"mixed"``, the ``T x T`` algebra in float64. The float32 numbers are the float64 draws rounded,
so the two solves differ by rounding (~1e-7 relative), far below the Monte-Carlo error
(``tests/dmft/test_dmft_long_horizon.py``), as long as ``C`` stays away from singular: a
converging deterministic dynamics (GD) drives the variance of ``w_k`` given its past to ~1e-10 of
its own, below float32 rounding. The default ``"auto"`` therefore takes float64 for noiseless
full-batch GD, for tolerances below 1e-5 and for starts other than the march; otherwise it marches
in mixed precision and marches again in float64 when the march reports a smallest relative
innovation variance below ``MIXED_MIN_INNOVATION`` (or a failed factorisation).
``DMFTResult.options.precision`` records what ran.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.keys import fold_in, root_key
from sgdlab.dmft import problem as gm
from sgdlab.dmft.dynamics import (  # noqa: F401  (re-exported: the public face of the solver)
    MIXED_MIN_INNOVATION, MIXED_TOLERANCE, PRECISIONS, RESPONSES, STARTS, DMFTConvergenceWarning, DMFTError, Dynamics, SolverOptions, _validate_problem,
)
from sgdlab.dmft.effective import (  # noqa: F401
    Noise, Sample, _mask_chain_path, draw_noise, effective_process, effective_scan, estimate_kernels,
    probe_regression, regularised_cholesky,
)
from sgdlab.dmft.march import march  # noqa: F401
from sgdlab.dmft.weight_side import (  # noqa: F401
    Kernels, OrderParameters, lookahead, lookahead_matrix, per_step_vector, weight_side, zero_kernels,
)

__all__ = [
    "DMFTConvergenceWarning",
    "DMFTError",
    "DMFTResult",
    "Dynamics",
    "Kernels",
    "Noise",
    "OrderParameters",
    "Sample",
    "SolverOptions",
    "dmft_dataset",
    "draw_noise",
    "effective_process",
    "effective_scan",
    "estimate_kernels",
    "march",
    "probe_regression",
    "regularised_cholesky",
    "solve_dmft",
    "weight_side",
    "zero_kernels",
]


def _relative_change(new: Kernels, old: Kernels) -> jax.Array:
    """``max_X |X_new - X_old|_inf / max(|X_new|_inf, 1e-12)`` over the three kernels."""
    out = [jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(a)), 1e-12) for a, b in zip(new, old)]
    return jnp.max(jnp.stack(out))


# The jitted cores take the float parameters as traced values, so that a sweep over, e.g., the
# ridge, eta or the batch fraction reuses one compilation; only shapes and the kind of loss and
# mixture are static.
_PROBLEM_FLOATS = ("alpha", "delta", "rho", "kappa", "threshold", "ridge", "m0", "sigma0")
_DYNAMICS_FLOATS = ("eta", "p_on", "p_off", "b", "temperature", "beta", "gamma")


def _split(problem: gm.GaussianMixture, dynamics: Dynamics):
    """``(static skeleton, n_steps, dynamic float parameters)``."""
    skeleton = dataclasses.replace(problem, **{f: 0.0 for f in _PROBLEM_FLOATS})
    # NumPy values (the jitted programs take them as arguments): no eager JAX operation per solve
    params = {f: np.asarray(float(getattr(problem, f)), np.float64) for f in _PROBLEM_FLOATS}
    params.update({f: np.asarray(getattr(dynamics, f), np.float64) for f in _DYNAMICS_FLOATS})
    return skeleton, dynamics.n_steps, params


@partial(jax.jit, static_argnames="skeleton")
def _test_observables(params: dict, m: jax.Array, q: jax.Array, skeleton: gm.GaussianMixture):
    """``(test_loss, test_error)`` of the order parameters ``m, q (T+1,)`` (one program)."""
    problem = _problem_of(skeleton, params)
    return gm.test_loss(problem, m, q), gm.test_error(problem, m, q)


def _problem_of(skeleton: gm.GaussianMixture, params: dict) -> gm.GaussianMixture:
    """The problem of :func:`_split`'s skeleton with its float parameters put back."""
    return dataclasses.replace(skeleton, **{f: params[f] for f in _PROBLEM_FLOATS})


def _join(skeleton: gm.GaussianMixture, n_steps: int, params: dict):
    problem = _problem_of(skeleton, params)
    dynamics = Dynamics(n_steps=n_steps, **{f: params[f] for f in _DYNAMICS_FLOATS})
    return problem, dynamics


def _noiseless_full_batch(dynamics: Dynamics) -> bool:
    """Full-batch GD without Langevin noise: its ``C`` becomes singular as it converges (the march's
    smallest relative innovation variance reaches the jitter), so ``precision="auto"`` takes float64."""
    return bool(np.all(np.asarray(dynamics.p_on) == 1.0) and np.all(np.asarray(dynamics.p_off) == 0.0)
                and dynamics.b == 1.0 and dynamics.temperature == 0.0)


class _Step(NamedTuple):
    order: OrderParameters
    sample: Sample
    residual: jax.Array
    next_kernels: Kernels


#: The dtype of the N-sized work of each ``SolverOptions.precision``.
_NOISE_DTYPE = {"float64": jnp.float64, "mixed": jnp.float32}


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "samples", "probe", "precision"))
def _draw(key, params, *, skeleton, n_steps, samples, probe, precision="float64") -> Noise:
    """The common random numbers of a solve, drawn once (jitted); their dtype (that of all the
    N-sized work of the solve) is float32 for ``precision = "mixed"``."""
    problem, dynamics = _join(skeleton, n_steps, params)
    return draw_noise(problem, dynamics, key, samples, probe, _NOISE_DTYPE[precision])


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "response", "block", "momentum"))
def _iteration(kernels, noise, params, damping, jitter, *, skeleton, n_steps, response, block, momentum) -> _Step:
    """One fixed-point iteration: weight side from ``kernels``, sample, re-estimate, damp."""
    problem, dynamics = _join(skeleton, n_steps, params)
    order = weight_side(problem, dynamics, kernels, momentum)
    sample = effective_process(problem, order, noise, response, jitter, block, dynamics.gamma if momentum else None)
    residual = _relative_change(sample.kernels, kernels)
    nxt = Kernels(*(damping * old + (1.0 - damping) * new for old, new in zip(kernels, sample.kernels)))
    return _Step(order, sample, residual, nxt)


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "chunks", "momentum"))
def _march_solve(noise, params, jitter, *, skeleton, n_steps, chunks, momentum):
    problem, dynamics = _join(skeleton, n_steps, params)
    return march(problem, dynamics, noise, jitter, chunks, momentum)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


class DMFTResult(NamedTuple):
    """Solution on the grid ``k = 0..T`` (``t = k eta``), as float64 numpy arrays.

    - ``t (T+1,)``; ``m``, ``q = diag C``, ``P`` ``(T+1,)``; ``C``, ``R`` ``(T+1, T+1)``
      (``C[k, j] = w_k . w_j / d``; ``R[k, j]`` response of ``w_k`` to a field inside the bracket
      of step ``j``);
    - ``kernels``: the ``mu``, ``M`` (``M_C``), ``Q`` that produced ``(m, C, R)``;
    - ``train_loss``, ``train_error``: averages over the effective sample; ``test_loss``,
      ``test_error``: exact from ``(m, q)`` (``gaussian_mixture.test_loss/test_error``);
    - ``residuals`` (one per fixed-point iteration), ``converged``, ``iterations`` (number run);
    - ``problem``, ``dynamics``, ``options``: the inputs.
    """

    t: np.ndarray
    m: np.ndarray
    q: np.ndarray
    C: np.ndarray
    R: np.ndarray
    P: np.ndarray
    kernels: Kernels
    train_loss: np.ndarray
    train_error: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    residuals: np.ndarray
    converged: bool
    iterations: int
    problem: gm.GaussianMixture
    dynamics: Dynamics
    options: SolverOptions


def solve_dmft(
    problem: gm.GaussianMixture,
    dynamics: Dynamics,
    options: SolverOptions = SolverOptions(),
    initial: Kernels | None = None,
) -> DMFTResult:
    """Solve the discrete-time DMFT of ``problem`` under ``dynamics``.

    ``options.start = "march"`` computes the fixed point of the sampled equations by one causal
    time march (:func:`march`); ``"zero"`` starts from zero kernels. ``initial`` (kernels of
    shapes ``(T+1,)``, ``(T+1, T+1)``, ``(T+1, T+1)``) overrides the start. Then the damped
    fixed-point iteration runs until the residual is below ``options.tolerance`` or
    ``options.iterations`` iterations have run (one jitted call each; the Python loop runs over
    iterations only, never over time).

    Returns a :class:`DMFTResult` for the last iteration: ``(m, C, R)`` from its input kernels and
    the training observables sampled with them. Warns :class:`DMFTConvergenceWarning` when the
    tolerance is not reached. Raises :class:`DMFTError` (naming the iteration) if ``C`` is not
    positive definite even with jitter or a kernel becomes non-finite; ``ValueError`` for invalid
    parameters.
    """
    _validate_problem(problem)
    dynamics = Dynamics(*dynamics).validate()
    options = SolverOptions(*options).validate()
    precision = options.resolved_precision
    if options.precision == "auto" and (initial is not None or _noiseless_full_batch(dynamics)):
        precision = "float64"
    tp = dynamics.n_steps + 1
    if options.samples < 2 * tp:
        raise ValueError(
            f"samples={options.samples} must be >= 2 (n_steps + 1) = {2 * tp} (the probe regression needs "
            f"N > T + 1; its error is O(T/N), so use N >> T)"
        )
    key = root_key(options.seed)
    if options.replica:
        key = fold_in(key, options.replica)
    skeleton, _, params = _split(problem, dynamics)

    def draw(precision):  # the common random numbers, drawn once: every iteration (and the march) reuses them
        return _draw(key, params, skeleton=skeleton, n_steps=dynamics.n_steps, samples=options.samples, probe=True,
                     precision=precision)

    noise = draw(precision)
    if initial is not None:
        kernels = Kernels(*(jnp.asarray(x, jnp.float64) for x in initial))
        if kernels.mu.shape != (tp,) or kernels.M.shape != (tp, tp) or kernels.Q.shape != (tp, tp):
            raise ValueError(f"initial kernels must have shapes ({tp},), ({tp}, {tp}), ({tp}, {tp})")
    elif options.start == "march":
        march_static = dict(skeleton=skeleton, n_steps=dynamics.n_steps, chunks=options.chunks, momentum=dynamics.momentum)
        kernels, _, _, _, ok, innovation = _march_solve(noise, params, options.jitter, **march_static)
        if options.precision == "auto" and precision == "mixed" and not (bool(ok) and float(innovation) >= MIXED_MIN_INNOVATION):
            precision = "float64"  # C (nearly) singular: float32 rounding would reach its smallest eigenvalues
            noise = draw(precision)
            kernels, _, _, _, ok, innovation = _march_solve(noise, params, options.jitter, **march_static)
        if not bool(ok):
            raise DMFTError(
                f"DMFT time march: C(t, t') is not positive definite even with jitter {options.jitter:g}; "
                f"the sampled dynamics diverged - lower eta or check the parameters"
                + (" (or use precision='float64')" if precision == "mixed" else "")
            )
        if not all(np.isfinite(np.asarray(x)).all() for x in kernels):
            raise DMFTError("DMFT time march: a kernel became non-finite; the dynamics diverged - lower eta")
    else:
        kernels = zero_kernels(dynamics.n_steps)
    options = options._replace(precision=precision)  # the result records what ran

    static = dict(skeleton=skeleton, n_steps=dynamics.n_steps, response=options.response, block=options.block,
                  momentum=dynamics.momentum)
    residuals: list[float] = []
    converged = False
    step = None
    for it in range(options.iterations):
        step = _iteration(kernels, noise, params, options.damping, options.jitter, **static)
        if not bool(step.sample.cholesky_ok):
            hint = " (the Stein estimator needs a well-conditioned C: use response='probe')" if options.response == "stein" else ""
            raise DMFTError(
                f"DMFT iteration {it}: C(t, t') is not positive definite even with jitter {options.jitter:g} "
                f"(relative); the iterates diverged - raise damping, use start='march', lower eta{hint}"
            )
        res = float(step.residual)
        if not math.isfinite(res):
            raise DMFTError(
                f"DMFT iteration {it}: a kernel became non-finite (residual {res}); the iterates diverged - "
                f"raise damping, use start='march' or lower eta"
            )
        residuals.append(res)
        if res < options.tolerance:
            converged = True
            break
        kernels = step.next_kernels
    assert step is not None
    if not converged:
        warnings.warn(
            f"DMFT did not converge in {options.iterations} iterations: last residual "
            f"{residuals[-1]:.3g} > tolerance {options.tolerance:g}",
            DMFTConvergenceWarning,
            stacklevel=2,
        )
    order = step.order
    m = np.asarray(order.m)
    C = np.asarray(order.C)
    q = np.diag(C).copy()
    test_loss, test_error = _test_observables(params, m, q, skeleton=skeleton)
    return DMFTResult(
        t=np.concatenate([[0.0], np.cumsum(per_step_vector(dynamics.eta, tp)[:-1])]) if dynamics.per_step else np.arange(tp) * dynamics.eta,
        m=m,
        q=q,
        C=C,
        R=np.asarray(order.R),
        P=np.asarray(order.P),
        kernels=Kernels(*(np.asarray(x) for x in kernels)),
        train_loss=np.asarray(step.sample.train_loss),
        train_error=np.asarray(step.sample.train_error),
        test_loss=np.asarray(test_loss),
        test_error=np.asarray(test_error),
        residuals=np.asarray(residuals),
        converged=converged,
        iterations=len(residuals),
        problem=problem,
        dynamics=dynamics,
        options=options,
    )


def _problem_record(problem: gm.GaussianMixture) -> dict:
    from sgdlab.core.functions import spec_of

    record = dataclasses.asdict(problem)
    record["loss"] = spec_of(record["loss"])
    return record


def dmft_dataset(result: DMFTResult, save_every: int = 1, time_step: float | None = None, times=None):
    """The solution as an ``xarray.Dataset`` aligned with the simulation's time coordinate.

    Times ``t = k * time_step`` for ``k = 0, save_every, 2 save_every, ... <= T`` (the simulation
    saves ``j * save_every * eta`` for ``j = 0 .. n_steps // save_every``). ``time_step`` defaults
    to ``result.dynamics.eta``; pass the configured ``eta`` when the solve used the mapped
    ``eta / b`` of the normalised convention, so that ``t`` matches the simulation's. ``times``
    (``(T+1,)``, the time of every step; with schedules) overrides both. Variables: ``m, q,
    train_loss, train_error, test_loss, test_error`` with dims ``(method, t)``; ``C, R`` with dims
    ``(method, t, t_prime)``; ``residual`` with dim ``iteration``. Coordinates: ``method =
    ["dmft"]``, ``t``, ``t_prime``, ``step`` (along ``t``), ``iteration``. Attrs: ``converged``
    (0/1), ``iterations``, JSON ``solver_options``, ``dynamics``, ``problem``, ``sgdlab_version``.
    ``R`` keeps the solver's convention (response to a field inside the bracket of the update that
    was solved, ``R(t + eta, t) = eta``).
    """
    import xarray as xr

    from sgdlab import __version__

    if isinstance(save_every, bool) or not (isinstance(save_every, (int, np.integer)) and save_every >= 1):
        raise ValueError(f"save_every={save_every!r} must be an integer >= 1")
    n_steps = result.dynamics.n_steps
    if save_every > n_steps:
        raise ValueError(f"save_every={save_every} must be <= n_steps={n_steps}")
    if time_step is None:
        time_step = result.dynamics.eta
    if not (isinstance(time_step, (int, float, np.floating)) and math.isfinite(time_step) and time_step > 0):
        raise ValueError(f"time_step={time_step!r} must be > 0")
    idx = np.arange(0, n_steps // save_every + 1) * save_every
    t = idx * float(time_step) if times is None else np.asarray(times, np.float64)[idx]
    scalars = {
        "m": (result.m, "overlap m = w.v/d"),
        "q": (result.q, "self-overlap q = C(t,t) = w.w/d"),
        "train_loss": (result.train_loss, "training loss (mean over samples)"),
        "train_error": (result.train_error, "training error (fraction misclassified)"),
        "test_loss": (result.test_loss, "test loss (exact, from m and q)"),
        "test_error": (result.test_error, "test error (exact, from m and q)"),
    }
    data_vars = {k: (("method", "t"), np.asarray(v)[idx][None], {"long_name": ln}) for k, (v, ln) in scalars.items()}
    sub = np.ix_(idx, idx)
    data_vars["C"] = (("method", "t", "t_prime"), np.asarray(result.C)[sub][None], {"long_name": "C(t,t') = w(t).w(t')/d"})
    data_vars["R"] = (
        ("method", "t", "t_prime"),
        np.asarray(result.R)[sub][None],
        {"long_name": "R(t,t'): response of w(t) to a field inside the update bracket at t' (R(t'+eta,t') = eta)"},
    )
    data_vars["residual"] = (("iteration",), np.asarray(result.residuals), {"long_name": "relative kernel change per iteration"})
    return xr.Dataset(
        data_vars,
        coords={
            "method": ["dmft"],
            "t": ("t", t, {"long_name": "time t = k eta"}),
            "t_prime": ("t_prime", t, {"long_name": "time t' = k' eta"}),
            "step": ("t", idx.astype(np.int64)),
            "iteration": np.arange(len(result.residuals)),
        },
        attrs={
            "converged": int(result.converged),
            "iterations": int(result.iterations),
            "solver_options": json.dumps(result.options._asdict(), sort_keys=True),
            "dynamics": json.dumps({k: np.asarray(v).tolist() for k, v in result.dynamics._asdict().items()}, sort_keys=True),
            "problem": json.dumps(_problem_record(result.problem), sort_keys=True),
            "sgdlab_version": __version__,
        },
    )
