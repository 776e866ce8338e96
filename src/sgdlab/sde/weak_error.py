"""Weak errors of continuous models against SGD, versus the learning rate, and their log-log slopes.

``weak_error_study(problem, models, etas, observables, T)`` answers "which continuous model
describes my SGD, and to which order": for every learning rate ``eta`` (``T/eta`` an integer) it
computes each observable for SGD and for each model at time ``T``, the error
``model - SGD``, and per (model, observable) the fitted slope of ``log|error|`` against
``log eta`` with a 95% confidence interval.

Solvers, per process: ``exact`` moments (:mod:`sgdlab.sde.moments`) when the problem has
linear gradients, the observable is quadratic and the model's moment equations close; otherwise
Monte Carlo (:mod:`sgdlab.sde.solvers`) with ``n_paths`` paths. ``method="auto"`` picks
exact where possible, per process.

Slope confidence interval (:func:`fit_slope`): the OLS slope of ``log|e_j|`` on ``log eta_j``
has two error sources, combined in quadrature into a half-width
``sqrt((t_{0.975, k-2} s_fit)^2 + (1.96 s_mc)^2)``: the misfit of a straight line (residual
standard error, ``k - 2`` degrees of freedom; it measures how far from asymptotic the etas are)
and the Monte Carlo error, propagated by the delta method, ``var log|e_j| = (se_j / e_j)^2``.
Exact errors have ``s_mc = 0``. An error smaller than twice its standard error is flagged
(``resolved = False``): its logarithm carries no information on the order.

A value that is not finite (SGD or a model diverges at that learning rate) raises
:class:`~sgdlab.core.errors.NonFiniteError` naming the quantity, ``eta``, the process, the time
(the horizon ``T``: the only time computed) and the seed (Monte Carlo); its ``partial`` is the
Dataset with what was computed (NaN for the rest).

This is the study module: it puts the simulator (:mod:`sgdlab.sde.sgd`) beside the theory
(:mod:`~sgdlab.sde.moments`, :mod:`~sgdlab.sde.solvers`, :mod:`~sgdlab.sde.mean_field`), here and in
:func:`mean_field_study` (SGD, the distribution-dependent SMF and the mean-field PDE on
two-layer networks).
"""

from __future__ import annotations

import json
import math
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy import stats

from sgdlab.core.errors import NonFiniteError
from sgdlab.core.functions import spec_of
from sgdlab.sde import mean_field as mf
from sgdlab.sde.models import SDEModel, SVAG, expected_order, get_model
from sgdlab.sde.moments import NoClosedMomentsError, expectation_from_moments, moments_of, n_steps_of
from sgdlab.sde.observables import Estimate, Observable, combine_with_error, get_observable, quadratic_form
from sgdlab.sde.problems import FiniteSumProblem, NotLinearGradientError, linear_gradient
from sgdlab.sde.sgd import mean_field_sgd_enumeration, mean_field_sgd_monte_carlo, sgd_monte_carlo, svag_monte_carlo
from sgdlab.sde.solvers import SCHEMES, sde_monte_carlo

METHODS = ("auto", "exact", "monte_carlo")

ProgressFn = Callable[[int, int], None]


def fit_slope(etas, errors, errors_se=None, level: float = 0.95) -> tuple[float, float, float]:
    """``(slope, low, high)`` of ``log|errors|`` against ``log etas`` (module docstring for the CI).

    Needs at least 2 points (3 for the misfit part of the interval).
    """
    u = np.log(np.asarray(etas, dtype=np.float64))
    e = np.abs(np.asarray(errors, dtype=np.float64))
    if np.any(e == 0) or len(u) < 2:
        return float("nan"), float("nan"), float("nan")
    v = np.log(e)
    k = len(u)
    du = u - u.mean()
    suu = float(du @ du)
    slope = float(du @ (v - v.mean()) / suu)
    z = stats.norm.ppf(0.5 + level / 2)
    var_fit, tq = 0.0, 0.0
    if k > 2:
        resid = v - v.mean() - slope * du
        var_fit = float(resid @ resid) / (k - 2) / suu
        tq = float(stats.t.ppf(0.5 + level / 2, k - 2))
    var_mc = 0.0
    if errors_se is not None:
        rel = np.asarray(errors_se, dtype=np.float64) / e
        w = du / suu
        var_mc = float(np.sum(w**2 * rel**2))
    half = math.sqrt(tq**2 * var_fit + z**2 * var_mc)
    return slope, slope - half, slope + half


def _feature_forms(observables, problem, K, d):
    """Quadratic forms of each observable's features, or ``None`` when a feature is not quadratic."""
    forms = []
    for obs in observables:
        fn = lambda x, o=obs: jnp.atleast_1d(o.features(x.reshape(K, d), problem))  # noqa: E731
        try:
            forms.append(quadratic_form(fn, K * d))
        except ValueError:
            return None
    return forms


def weak_error_study(
    problem: FiniteSumProblem,
    models: Sequence[str | SDEModel | SVAG],
    etas: Sequence[float],
    observables: Sequence[str | Observable],
    T: float,
    *,
    x0=None,
    method: str = "auto",
    n_paths: int = 20_000,
    scheme: str = "weak2",
    substeps: int = 2,
    seed: int = 0,
    chunk: int = 20_000,
    svag_l: int | None = None,
    antithetic: bool = False,
    progress: ProgressFn | None = None,
) -> xr.Dataset:
    """Weak errors of ``models`` against SGD on ``problem`` at horizon ``T``, for each ``eta``.

    Args:
        problem: a finite-sum problem (its ``batch_size`` is SGD's ``B``).
        models: names (``gf, sme1, sme2, smf, smf_independent, smf_expected_gradient, svag``) or
            :class:`SDEModel` / :class:`SVAG` objects.
        etas: learning rates; each ``T/eta`` must be an integer.
        observables: names (``mean, second_moment, variance, loss, inner, cross_cov, sq_distance``)
            or :class:`Observable` objects.
        T: the horizon (time ``t = k eta``).
        x0: starting points ``(K, d)`` (``K`` at least the copies the observables need); default
            ``x^1 = (1, ..., 1)``, ``x^2 = -(1/2, ..., 1/2)`` (opposite signs).
        method: ``auto`` (exact where possible), ``exact`` (error if impossible), ``monte_carlo``.
        n_paths: Monte Carlo paths (rounded up to whole chunks).
        scheme: SDE scheme (``weak2``, ``talay_tubaro``, ``euler``).
        substeps: SDE steps per SGD step.
        seed: seed of the Monte Carlo.
        chunk: paths per compiled batch.
        svag_l: ``l`` of the ``svag`` model given by name.
        antithetic: antithetic pairs for the SDE Monte Carlo (SGD's discrete sampling has none).
        progress: ``progress(done, total)`` after each (process, eta).

    Returns:
        Dataset with dims ``(model, eta, observable)``: ``sgd``, ``sgd_se`` (eta, observable);
        ``value``, ``value_se``, ``error`` (= value - sgd), ``error_se``, ``resolved``
        (model, eta, observable); ``slope``, ``slope_low``, ``slope_high`` (95% CI),
        ``expected_order``, ``solver`` (model, observable: ``exact`` or ``monte_carlo``),
        ``sgd_solver`` (observable) and attrs (``horizon``, ``scheme``, ``substeps``, ``n_paths``,
        ``seed``, ``problem``, ``x0``).

    Raises:
        NonFiniteError: a value or standard error is NaN or inf (``partial``: the Dataset so far).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(METHODS)}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; allowed: {', '.join(SCHEMES)}")
    model_objs = [get_model(m, svag_l) for m in models]
    names = [m.name for m in model_objs]
    if len(set(names)) != len(names):
        raise ValueError(f"models must be distinct; got {names}")
    obs_objs = tuple(get_observable(o) for o in observables)
    etas = [float(e) for e in etas]
    for e in etas:
        n_steps_of(T, e)
    d = problem.dim
    need = max(o.copies for o in obs_objs)
    if x0 is None:
        x0 = np.stack([np.ones(d), -0.5 * np.ones(d)])[: max(need, 1)]
    x0s = np.atleast_2d(np.asarray(x0, dtype=np.float64))
    if x0s.shape[1] != d or x0s.shape[0] < need:
        raise ValueError(f"x0 must have shape (K >= {need}, {d}); got {x0s.shape}")
    B = problem.batch_size

    lin = None
    if method != "monte_carlo":
        try:
            lin = linear_gradient(problem)
        except NotLinearGradientError:
            lin = None
    # exact route: observables grouped by the copies they need (one-point ones from one copy)
    forms = {}
    if lin is not None:
        for o in obs_objs:
            kk = max(o.copies, 1)
            form = _feature_forms((o,), problem, kk, d)
            if form is not None:
                forms[o.name] = (kk, form[0])
    if method == "exact" and (lin is None or len(forms) < len(obs_objs)):
        raise ValueError("method='exact' needs a linear-gradient problem and quadratic observables; use 'auto' or 'monte_carlo'")

    def run(process, eta) -> tuple[dict[str, Estimate], dict[str, str]]:
        out, how, todo = {}, {}, []
        moments: dict[int, np.ndarray | None] = {}
        for o in obs_objs:
            if o.name not in forms:
                todo.append(o)
                continue
            kk, W = forms[o.name]
            if kk not in moments:
                try:
                    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported below
                        moments[kk] = moments_of(process, lin, eta, T, x0s[:kk], B)
                except NoClosedMomentsError:
                    if method == "exact":
                        raise
                    moments[kk] = None
            if moments[kk] is None:
                todo.append(o)
                continue
            out[o.name] = Estimate(*combine_with_error(o, expectation_from_moments(W, moments[kk]), None, None))
            how[o.name] = "exact"
        if todo:
            todo = tuple(todo)
            if process == "sgd":
                res = sgd_monte_carlo(problem, eta, T, x0s, todo, n_paths, seed, chunk)
            elif isinstance(process, SVAG):
                res = svag_monte_carlo(problem, process, eta, T, x0s, todo, n_paths, seed, chunk)
            else:
                res = sde_monte_carlo(problem, process, eta, T, x0s, todo, n_paths, scheme, substeps, seed, chunk, antithetic)
            out.update(res)
            how.update({o.name: "monte_carlo" for o in todo})
        return out, how

    nE, nM, nO = len(etas), len(model_objs), len(obs_objs)
    sgd, sgd_se = np.full((nE, nO), np.nan), np.full((nE, nO), np.nan)
    val, val_se = np.full((nM, nE, nO), np.nan), np.full((nM, nE, nO), np.nan)
    solver = np.full((nM, nO), "", dtype=object)
    sgd_solver = np.full(nO, "", dtype=object)

    def dataset() -> xr.Dataset:
        return _dataset(etas, model_objs, obs_objs, sgd, sgd_se, val, val_se, solver, sgd_solver, attrs)

    attrs = {
        "horizon": float(T),
        "scheme": scheme,
        "substeps": int(substeps),
        "n_paths": int(n_paths),
        "seed": int(seed),
        "antithetic": int(bool(antithetic)),
        "batch_size": int(B),
        "problem": problem.name,
        "x0": json.dumps(x0s.tolist()),
    }
    total, done = nE * (nM + 1), 0
    for ie, eta in enumerate(etas):
        for im, process in enumerate(["sgd", *model_objs]):
            res, how = run(process, eta)
            for io, o in enumerate(obs_objs):
                if im == 0:
                    (sgd[ie, io], sgd_se[ie, io]), sgd_solver[io] = res[o.name], how[o.name]
                else:
                    (val[im - 1, ie, io], val_se[im - 1, ie, io]), solver[im - 1, io] = res[o.name], how[o.name]
            bad = [o for o in obs_objs if not np.all(np.isfinite(res[o.name]))]
            if bad:
                o = bad[0]
                name = "sgd" if im == 0 else process.name
                seed_text = f"seed {seed}" if how[o.name] == "monte_carlo" else "exact moments, no seed"
                raise NonFiniteError(
                    f"{o.name} ({o.description}) of {name} at eta = {eta:g} ({how[o.name]}) is "
                    f"{res[o.name].value} ± {res[o.name].se} at t={T:g} (the horizon; {seed_text}): {name} diverges at "
                    "this learning rate (use smaller etas, a shorter horizon or a better conditioned problem)",
                    partial=dataset(),
                )
            done += 1
            if progress:
                progress(done, total)
    return dataset()


def _dataset(etas, model_objs, obs_objs, sgd, sgd_se, val, val_se, solver, sgd_solver, attrs) -> xr.Dataset:
    """The Dataset of :func:`weak_error_study` from its value arrays (NaN where not computed)."""
    nM, nO = len(model_objs), len(obs_objs)
    err = val - sgd[None]
    err_se = np.sqrt(val_se**2 + sgd_se[None] ** 2)
    slope = np.full((nM, nO), np.nan)
    lo, hi = np.full_like(slope, np.nan), np.full_like(slope, np.nan)
    expected = np.zeros((nM, nO), dtype=np.int64)
    for im, m in enumerate(model_objs):
        for io, o in enumerate(obs_objs):
            if np.all(np.isfinite(err[im, :, io])):
                slope[im, io], lo[im, io], hi[im, io] = fit_slope(etas, err[im, :, io], err_se[im, :, io])
            expected[im, io] = expected_order(m, o.copies, o.fluctuation)
    with np.errstate(invalid="ignore"):
        resolved = np.abs(err) > 2 * err_se

    dims3 = ("model", "eta", "observable")
    return xr.Dataset(
        {
            "sgd": (("eta", "observable"), sgd, {"long_name": "SGD value at the horizon"}),
            "sgd_se": (("eta", "observable"), sgd_se, {"long_name": "standard error of the SGD value (0: exact)"}),
            "value": (dims3, val, {"long_name": "model value at the horizon"}),
            "value_se": (dims3, val_se, {"long_name": "standard error of the model value (0: exact)"}),
            "error": (dims3, err, {"long_name": "weak error: model - SGD"}),
            "error_se": (dims3, err_se, {"long_name": "standard error of the weak error"}),
            "resolved": (dims3, resolved, {"long_name": "|error| > 2 standard errors"}),
            "slope": (("model", "observable"), slope, {"long_name": "fitted log-log slope (measured weak order)"}),
            "slope_low": (("model", "observable"), lo, {"long_name": "95% CI of the slope, low"}),
            "slope_high": (("model", "observable"), hi, {"long_name": "95% CI of the slope, high"}),
            "expected_order": (("model", "observable"), expected, {"long_name": "weak order predicted by the theory"}),
            "solver": (("model", "observable"), solver.astype(str), {"long_name": "how the model was solved: exact or monte_carlo"}),
            "sgd_solver": (("observable",), sgd_solver.astype(str), {"long_name": "how SGD was solved: exact or monte_carlo"}),
        },
        coords={
            "model": np.asarray([m.name for m in model_objs], dtype=str),
            "eta": ("eta", np.asarray(etas), {"long_name": "learning rate"}),
            "observable": np.asarray([o.name for o in obs_objs], dtype=str),
            "observable_description": ("observable", np.asarray([o.description for o in obs_objs], dtype=str)),
            "model_description": ("model", np.asarray([m.description for m in model_objs], dtype=str)),
        },
        attrs=dict(attrs),
    )


# ------------------------------------------------------------------------------------------------
# Mean-field two-layer networks: SGD, the distribution-dependent SMF and the mean-field PDE
# ------------------------------------------------------------------------------------------------
#: the processes of :func:`mean_field_study`
MEAN_FIELD_PROCESSES = ("sgd", *mf.SDE_PROCESSES)


def mean_field_monte_carlo(
    net: mf.MeanFieldNetwork,
    particles0,
    eta: float,
    horizon: float,
    process: str,
    n_paths: int,
    scheme: str = "weak2",
    substeps: int = 2,
    seed: int = 0,
    chunk: int = 20_000,
    exact_sgd_limit: int = 2**20,
) -> dict[str, tuple[float, float, float, float]]:
    """``{observable: (mean, se, variance, variance_se)}`` at ``T`` for ``process``:
    ``sgd`` (``T/eta`` steps; exact by :func:`~sgdlab.sde.sgd.mean_field_sgd_enumeration`,
    ``se = 0``, when there are at most ``exact_sgd_limit`` batch sequences, else
    :func:`~sgdlab.sde.sgd.mean_field_sgd_monte_carlo`), ``smf`` or ``pde``
    (:func:`~sgdlab.sde.mean_field.mean_field_sde_monte_carlo`)."""
    if process not in MEAN_FIELD_PROCESSES:
        raise ValueError(f"process={process!r}; allowed: {', '.join(MEAN_FIELD_PROCESSES)}")
    if process != "sgd":
        return mf.mean_field_sde_monte_carlo(net, particles0, eta, horizon, process, n_paths, scheme, substeps, seed, chunk)
    if net.n_samples ** (net.batch_size * n_steps_of(horizon, eta)) <= exact_sgd_limit:
        exact = mean_field_sgd_enumeration(net, particles0, eta, horizon)
        return {k: (m, 0.0, v, 0.0) for k, (m, v) in exact.items()}
    return mean_field_sgd_monte_carlo(net, particles0, eta, horizon, n_paths, seed, chunk)


def mean_field_study(
    net: mf.MeanFieldNetwork,
    Ns: Sequence[int],
    etas: Sequence[float],
    horizon: float,
    n_paths: int = 20_000,
    scheme: str = "weak2",
    substeps: int = 2,
    seed: int = 0,
    init_scale: float = 1.0,
    chunk: int = 20_000,
    exact_sgd_limit: int = 2**20,
) -> xr.Dataset:
    """SGD, the distribution-dependent SMF and the mean-field PDE for every ``(N, eta)``.

    The particles of width ``N`` start at :func:`~sgdlab.sde.mean_field.init_particles`
    ``(seed, N, p, init_scale)``, the same for every process and ``eta``: all randomness is the
    sampling noise (SGD) or the common Brownian motions (SMF). Returns a Dataset with dims
    ``(process, N, eta)`` and, per observable in ``MEAN_FIELD_OBSERVABLES``, the mean, its standard
    error, the variance (of the common noise, not averaged out by ``N``) and its error; ``error``
    ``(process, N, eta)`` of the mean against SGD, with ``slope``/``slope_low``/``slope_high``
    ``(process, N)`` of the ``second_layer_overlap`` error versus ``eta``.
    """
    Ns, etas = [int(n) for n in Ns], [float(e) for e in etas]
    shape = (len(MEAN_FIELD_PROCESSES), len(Ns), len(etas))
    data = {f"{o}{s}": np.zeros(shape) for o in mf.MEAN_FIELD_OBSERVABLES for s in ("", "_se", "_var", "_var_se")}
    p = net.unit_dim
    for iN, N in enumerate(Ns):
        x0 = mf.init_particles(seed, N, p, init_scale)
        for ie, eta in enumerate(etas):
            for ip, proc in enumerate(MEAN_FIELD_PROCESSES):
                res = mean_field_monte_carlo(net, x0, eta, horizon, proc, n_paths, scheme, substeps, seed, chunk, exact_sgd_limit)
                for o in mf.MEAN_FIELD_OBSERVABLES:
                    for s, v in zip(("", "_se", "_var", "_var_se"), res[o]):
                        data[f"{o}{s}"][ip, iN, ie] = v
    dims = ("process", "N", "eta")
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords={"process": list(MEAN_FIELD_PROCESSES), "N": Ns, "eta": etas})
    key = "second_layer_overlap"
    err = ds[key] - ds[key].sel(process="sgd")
    err_se = np.sqrt(ds[f"{key}_se"] ** 2 + ds[f"{key}_se"].sel(process="sgd") ** 2)
    ds["error"] = err
    ds["error_se"] = err_se
    slope = np.full(shape[:2], np.nan)
    lo, hi = slope.copy(), slope.copy()
    if len(etas) >= 2:
        for ip, proc in enumerate(MEAN_FIELD_PROCESSES):
            if proc == "sgd":
                continue
            for iN in range(len(Ns)):
                slope[ip, iN], lo[ip, iN], hi[ip, iN] = fit_slope(etas, err.values[ip, iN], err_se.values[ip, iN])
    ds["slope"] = (("process", "N"), slope)
    ds["slope_low"] = (("process", "N"), lo)
    ds["slope_high"] = (("process", "N"), hi)
    ds.attrs.update(horizon=float(horizon), n_paths=int(n_paths), scheme=scheme, substeps=int(substeps), seed=int(seed),
                    activation=spec_of(net.activation), init_scale=float(init_scale), observables=json.dumps(mf.MEAN_FIELD_OBSERVABLES))
    return ds
