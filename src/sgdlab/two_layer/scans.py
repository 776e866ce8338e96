"""The in-run scans of ``sgdlab timescales``: the axes the study's own result needs.

- :func:`eps_scan` (``[scan] eps``): the reduced dynamics at every ``eps``, the half-learning
  times ``t_l`` and the fitted exponents of ``t_l ~ eps^{1/(2l)}`` with 95% CIs: the fit needs
  every ``eps`` of the list, so the list is one axis of one run (not a ``[sweep]``);
- :func:`d_scan` (``[scan] d``): the finite-``d`` flow at every ``d``, the convergence check of
  ``t_l`` in ``d``.

Both use the theory only (:mod:`sgdlab.two_layer.flow`, :mod:`sgdlab.two_layer.reduced`, :mod:`sgdlab.two_layer.analysis`).
:func:`check_solved` turns a failed adaptive solve into a
:class:`~sgdlab.core.errors.NonFiniteError` that names the key to change.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
import xarray as xr

from sgdlab.core.errors import NonFiniteError
from sgdlab.core.keys import fold_in
from sgdlab.two_layer import flow as tl
from sgdlab.two_layer.analysis import fit_power_law, half_learning_times
from sgdlab.two_layer.config import log_grid
from sgdlab.two_layer.problem import SingleIndex
from sgdlab.two_layer.reduced import degree_one_time, solve_reduced


def check_solved(what: str, risk, ok, num_steps, t: np.ndarray, max_steps: int, fix: str) -> None:
    """Raise :class:`NonFiniteError` if an adaptive ODE solve of ``what`` failed.

    ``risk`` ``(seeds, n_t, K+1)`` or ``(n_t, K+1)``, ``ok`` and ``num_steps`` ``(seeds,)`` or
    scalars, ``t`` the save times. The message names the seed, the time reached, whether the step
    budget ``dynamics.max_steps`` ran out (otherwise: non-finite values) and what to change
    (``fix``, e.g. ``"lower dynamics.t_max or flow.m"``)."""
    t = np.asarray(t)
    total = np.asarray(risk, float).sum(-1).reshape(-1, len(t))
    ok = np.asarray(ok).reshape(-1)
    steps = np.asarray(num_steps).reshape(-1)
    for seed in range(total.shape[0]):
        finite = np.isfinite(total[seed])
        if bool(ok[seed]) and finite.all():
            continue
        bad = t[~finite][0] if (~finite).any() else t[-1]
        reached = f"t = {t[finite][-1]:.4g}" if finite.any() else "the first saved time"
        seed_txt = f" (seed {seed})" if total.shape[0] > 1 else ""
        if int(steps[seed]) >= max_steps:
            why = (f"the adaptive ODE solver used its whole step budget dynamics.max_steps={max_steps} before t = {bad:.4g} "
                   f"(last saved time reached: {reached})")
            todo = f"raise dynamics.max_steps, or {fix}"
        else:
            why = f"the solution became non-finite before t = {bad:.4g} (last finite saved time: {reached})"
            todo = f"lower dynamics.rtol / dynamics.atol, or {fix}"
        raise NonFiniteError(f"{what}{seed_txt}: {why}; {todo}")


def check_finite(what: str, risk, t: np.ndarray, fix: str) -> None:
    """Raise :class:`NonFiniteError` naming the seed and the time if a simulated risk ``(seeds,
    n_t, K+1)`` is not finite (a step size too large for the problem), with what to change."""
    t = np.asarray(t)
    total = np.asarray(risk, float).sum(-1).reshape(-1, len(t))
    for seed in range(total.shape[0]):
        finite = np.isfinite(total[seed])
        if not finite.all():
            reached = f"t = {t[finite][-1]:.4g}" if finite.any() else "none"
            raise NonFiniteError(f"{what} (seed {seed}): the risk became non-finite before t = {t[~finite][0]:.4g} "
                                 f"(last finite saved time: {reached}); {fix}")


def eps_scan(prob: SingleIndex, eps_values, m: int, a_scale: float = 1.0, a_law: str = "uniform", t_max: float = 0.3,
             n_times: int = 161, rtol: float = 1e-7, atol: float = 1e-12, max_steps: int = 50_000,
             train_second_layer: bool = True, solver: str = "auto", progress: Callable[[], None] | None = None) -> xr.Dataset:
    """Reduced dynamics for every ``eps`` on one log grid ``t_scan`` from ``min(eps)/100`` to
    ``t_max`` (one compilation); half-learning times and fitted exponents.

    Returns a Dataset with ``risk_scan (eps, t_scan)``, ``t_half_scan (eps, degree)``,
    ``scan_ok (eps)``, ``scan_implicit (eps)`` (``solver = "auto"`` chose the implicit solver),
    ``t1_closed_form (eps)`` (:func:`~sgdlab.two_layer.reduced.degree_one_time`),
    ``t1_log_factor (eps)`` ``= logit(1/2) - logit(kappa_0)`` and the fits ``exponent``,
    ``exponent_low``, ``exponent_high``, ``exponent_predicted`` ``(degree)``. Degree 1: fit of
    ``t_1 / t1_log_factor``, expected 1/2; degree ``l >= 2``: fit of ``t_l``, expected ``1/(2l)``.
    A run that fails (step budget) gives ``nan`` and ``scan_ok = False`` (the other ``eps`` are
    still fitted)."""
    eps_values = np.sort(np.asarray(eps_values, float))
    K = prob.degree
    phi, sig = np.asarray(prob.phi), np.asarray(prob.sigma)
    a0 = tl.initial_second_layer(m, a_scale, a_law)
    t = log_grid(eps_values.min() / 100, t_max, n_times)
    th = np.full((len(eps_values), K + 1), np.nan)
    risk = np.full((len(eps_values), len(t)), np.nan)
    ok = np.zeros(len(eps_values), bool)
    implicit = np.zeros(len(eps_values), bool)
    t1c, logfac = np.full(len(eps_values), np.nan), np.full(len(eps_values), np.nan)
    for i, e in enumerate(eps_values):
        sol = solve_reduced(prob, a0, np.zeros(m), float(e), t, train_second_layer, rtol, atol, solver, max_steps)
        obs = sol.obs
        implicit[i] = sol.solver == "kvaerno5"
        R = np.asarray(obs.risk).sum(-1)
        ok[i] = bool(sol.success) and np.all(np.isfinite(R))
        if ok[i]:
            risk[i] = R
            th[i] = half_learning_times(t, np.asarray(obs.M), phi, sig)
        if phi[1] * sig[1] != 0:
            try:
                t1c[i] = degree_one_time(prob, np.asarray(a0), np.zeros(m), float(e))
                logfac[i] = t1c[i] / (np.sqrt(e) / (2 * abs(phi[1] * sig[1])))
            except ValueError:  # eps outside the singular-perturbation regime
                pass
        if progress is not None:
            progress()
    expo = np.full((3, K + 1), np.nan)
    for l in range(1, K + 1):
        y = th[:, l] / logfac if l == 1 else th[:, l]
        if np.sum(np.isfinite(y)) >= 3:
            f = fit_power_law(eps_values, y)
            expo[:, l] = (f.exponent, f.low, f.high)
    return xr.Dataset(
        {
            "risk_scan": (("eps", "t_scan"), risk),
            "t_half_scan": (("eps", "degree"), th),
            "scan_ok": ("eps", ok),
            "scan_implicit": ("eps", implicit),
            "t1_closed_form": ("eps", t1c),
            "t1_log_factor": ("eps", logfac),
            "exponent": ("degree", expo[0]),
            "exponent_low": ("degree", expo[1]),
            "exponent_high": ("degree", expo[2]),
            "exponent_predicted": ("degree", np.array([np.nan] + [1 / (2 * l) for l in range(1, K + 1)])),
        },
        coords={"eps": eps_values, "t_scan": t, "degree": np.arange(K + 1)},
    )


def d_scan(prob: SingleIndex, d_values, m: int, seeds: int, eps: float, t: np.ndarray, key: jax.Array, a_scale: float = 1.0,
           a_law: str = "uniform", rtol: float = 1e-7, atol: float = 1e-12, solver: str = "auto", max_steps: int = 50_000,
           train_second_layer: bool = True) -> xr.Dataset:
    """The exact finite-``d`` flow at every ``d`` (``seeds`` initial conditions each, one compilation:
    ``d`` enters only through the initial overlaps): half-learning times per seed.

    Returns ``t_half_dscan``, ``t_half_dscan_err`` ``(d, degree)``, ``dscan_implicit (d)`` (mean and standard error over
    seeds of the per-seed ``t_l``; NaN where a degree is not learned by ``t[-1]``). As ``d`` grows
    the initial overlaps ``~ d^{-1/2}`` become negligible against ``sqrt(eps)`` and ``t_l``
    converges to its ``d = inf`` value: BMZ's time scales are powers of ``eps``, not of ``d``, once
    ``d >> 1/eps``. Raises :class:`NonFiniteError` if a solve fails."""
    d_values = np.asarray(sorted(d_values), np.int64)
    phi, sig = np.asarray(prob.phi), np.asarray(prob.sigma)
    a0 = tl.initial_second_layer(m, a_scale, a_law)
    K = prob.degree
    mean, err = np.full((len(d_values), K + 1), np.nan), np.full((len(d_values), K + 1), np.nan)
    implicit = np.zeros(len(d_values), bool)
    for i, d in enumerate(d_values):  # one compilation: d enters only through the initial overlaps
        sol = tl.flow_from_random_starts(prob, fold_in(key, int(d)), a0, m, int(d), seeds, eps, t,
                                         train_second_layer, rtol, atol, solver, max_steps)
        check_solved(f"finite-d flow of the d scan at d = {int(d)}", sol.obs.risk, sol.success, sol.num_steps, t, max_steps,
                     "lower dynamics.t_max or flow.m, or remove the smallest scan.d values")
        implicit[i] = sol.solver == "kvaerno5"
        th = np.stack([half_learning_times(t, np.asarray(sol.obs.M)[j], phi, sig) for j in range(seeds)])
        mean[i] = th.mean(0)
        if seeds > 1:
            err[i] = th.std(0, ddof=1) / np.sqrt(seeds)
    return xr.Dataset(
        {"t_half_dscan": (("d", "degree"), mean), "t_half_dscan_err": (("d", "degree"), err), "dscan_implicit": ("d", implicit)},
        coords={"d": d_values, "degree": np.arange(K + 1)},
    )
