"""Effective temperature of a stationary dynamics from the fluctuation-dissipation relation (FDT).

Source: F. Mignacco, P. Urbani, "The effective noise of stochastic gradient descent",
J. Stat. Mech. (2022) 083405, arXiv:2112.10852; documentation ``docs/effective_noise.md``.

Conventions (those of :mod:`sgdlab.dmft.solver`)
-------------------------------------------------
``C[k, j] = w_k . w_j / d`` (full correlation) and ``R[k, j] = (1/d) sum_i d w_{k,i} / d f_{j,i}``
the response of ``w_k`` to a field ``f_j`` added *inside the bracket* of step ``j`` of the
unnormalised update ``w_{j+1} = w_j - eta [lambda w_j + sum_mu s_mu loss' x_mu / sqrt(d) - f_j]``,
so ``R[j+1, j] = eta``: ``R[k, j]`` is already the response integrated over one step, and the
discrete integrated response and correlation drop at a late reference step ``k`` are::

    chi(l) = sum_{j=k-l}^{k-1} R[k, j],        dC(l) = C[k, k] - C[k, k-l],      l = 0 .. L.

In equilibrium at temperature ``T`` (Langevin, ``sqrt(2 T eta) xi`` per step) the FDT reads
``chi(l) = dC(l) / T`` up to ``O(eta)``; for SGD the slope of the parametric plot
``(dC(l), chi(l))`` *defines* ``1 / T_eff``. A straight plot means one temperature at all time
scales; a bent one (curvature) a time-scale-dependent temperature.

Mobility / units
----------------
``T_eff`` measured against the field above is in *field units* (``units="field"``). With the
unnormalised update the mean drift is ``-b grad H`` (a sample is in the batch a fraction ``b`` of
the time), i.e. the mobility is ``b``; the temperature of the Gibbs-like measure
``exp(-H / T_loss)`` in *loss units* is ``T_loss = T_field / mobility`` (``units="loss"``, with
``mobility = b`` for the unnormalised update and ``1`` for the normalised one, whose batch sum is
already divided by ``b``). For Langevin (``b = 1``) the two coincide.

Estimators
----------
The plot is averaged over ``n_ref`` reference steps ``k`` spread over the last part of the grid
(time-translation invariance in the stationary state). The slopes are least-squares fits
*through the origin* (``chi(0) = dC(0) = 0`` exactly): the *short-lag* slope over lags
``1 .. short_lags``, the *global* slope over ``1 .. L``; the curvature is the relative change of
the local slope across the window, ``curvature = slope_late / slope_short - 1`` with
``slope_late`` the least-squares slope (with intercept) over lags ``L/2 .. L`` (``0`` for a
straight plot; ``> 0``: the slope grows with the lag, the slow degrees of freedom are colder).
``T_eff = 1 / global slope``. Error bars: with several independent
replicates (leading batch axis of ``C, R``: DMFT solves with different Monte-Carlo seeds, or
simulation seeds) the standard error of the mean over replicates; with one replicate the
least-squares standard error of the fit (which ignores the correlation of the residuals and is
therefore only indicative: ``err_kind`` says which).

Stationarity diagnostic: ``drift = max_l |C[k2, k2-l] - C[k1, k1-l]| / C[k2, k2]`` between the
first and last reference steps ``k1 < k2``, of the replicate mean, with its standard error over
replicates; ``stationary = drift < drift_tolerance or drift < 3 drift_err``. The second clause
matters for noisy estimators (a sampled DMFT, a simulation at finite ``d``) whose ``C`` fluctuates
by more than the tolerance between reference times without any systematic drift.

The weak-noise estimate of the spec (:func:`weak_noise_temperature`) is a *heuristic* to plot
beside the measurement, never an oracle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "FDTCurve",
    "FDTResult",
    "UNITS",
    "effective_temperature",
    "fdt_curve",
    "fit_fdt",
    "weak_noise_temperature",
]

UNITS = ("field", "loss")


class FDTCurve(NamedTuple):
    """Parametric FDT curve at lags ``l = 0..L`` (arrays ``(..., L+1)``, replicates leading)."""

    lag: np.ndarray  # (L+1,) in steps
    dC: np.ndarray  # (..., L+1)  C(k,k) - C(k,k-l)
    chi: np.ndarray  # (..., L+1)  sum_{j=k-l}^{k-1} R(k,j)
    drift_curve: np.ndarray | None = None  # (..., L+1) signed [C(k2, k2-l) - C(k1, k1-l)] / C(k2, k2); None: unknown


class FDTResult(NamedTuple):
    """Effective temperature and its diagnostics.

    ``T_eff = 1/slope_global`` and ``T_short = 1/slope_short`` in ``units`` (``"field"`` or
    ``"loss"``), with standard errors ``T_eff_err``, ``T_short_err`` (``err_kind``: ``"replicates"``
    or ``"fit"``); ``curvature`` (dimensionless); ``curve`` the replicate-mean curve;
    ``drift`` (with its standard error ``drift_err`` over replicates, NaN with one replicate),
    ``stationary`` (``drift < drift_tolerance`` or ``drift < 3 drift_err``: no drift resolved
    beyond the estimator's noise); ``convention``: a sentence stating units and mobility.
    """

    T_eff: float
    T_eff_err: float
    T_short: float
    T_short_err: float
    slope_global: float
    slope_short: float
    curvature: float
    drift: float
    stationary: bool
    n_replicates: int
    err_kind: str
    units: str
    mobility: float
    convention: str
    curve: FDTCurve
    drift_err: float = float("nan")


def fdt_curve(C, R, max_lag: int, n_ref: int = 1, ref_span: int | None = None) -> FDTCurve:
    """Parametric curve from correlation and response matrices.

    ``C, R``: ``(..., T+1, T+1)`` (first index the later time, :mod:`sgdlab.dmft.solver`
    convention). Averaged over ``n_ref`` reference steps ``k`` equally spaced in
    ``[T - ref_span, T]`` (default ``ref_span = max_lag``; ``n_ref = 1``: ``k = T`` only).
    Requires ``max_lag + ref_span <= T``.
    """
    C, R = np.asarray(C, np.float64), np.asarray(R, np.float64)
    T = C.shape[-1] - 1
    span = max_lag if ref_span is None else int(ref_span)
    if max_lag < 1 or max_lag + (span if n_ref > 1 else 0) > T:
        raise ValueError(f"max_lag={max_lag} (+ ref_span={span}) must lie in [1, T={T}]")
    refs = np.unique(np.round(np.linspace(T - span, T, n_ref)).astype(int)) if n_ref > 1 else np.array([T])
    lags = np.arange(max_lag + 1)
    dcs, chis = [], []
    for k in refs:
        row_c, row_r = C[..., k, :], R[..., k, :]
        dcs.append(row_c[..., k : k + 1] - row_c[..., k - lags])
        # chi(l) = sum_{j=k-l}^{k-1} R[k,j]: cumulative sum of R[k, k-1], R[k, k-2], ...
        back = row_r[..., k - lags[1:]]
        chis.append(np.concatenate([np.zeros(back.shape[:-1] + (1,)), np.cumsum(back, axis=-1)], axis=-1))
    if len(refs) > 1:
        k1, k2 = refs[0], refs[-1]
        dcurve = (C[..., k2, k2 - lags] - C[..., k1, k1 - lags]) / np.abs(C[..., k2, k2])[..., None]
    else:
        dcurve = None
    return FDTCurve(lags, np.mean(dcs, axis=0), np.mean(chis, axis=0), dcurve)


def _slope_through_origin(x, y):
    """Least-squares slope of ``y = a x`` and its standard error (last axis)."""
    sxx = np.sum(x * x, axis=-1)
    a = np.sum(x * y, axis=-1) / sxx
    n = x.shape[-1]
    res = y - a[..., None] * x
    se = np.sqrt(np.sum(res * res, axis=-1) / max(n - 1, 1) / sxx) if n > 1 else np.full_like(a, np.nan)
    return a, se


def _curvature(x, y, short):
    """``slope_late / short - 1``, ``slope_late`` fitted with intercept over the last half (last axis)."""
    half = x.shape[-1] // 2
    xl, yl = x[..., half:], y[..., half:]
    xc, yc = xl - xl.mean(-1, keepdims=True), yl - yl.mean(-1, keepdims=True)
    late = np.sum(xc * yc, -1) / np.sum(xc * xc, -1)
    return late / short - 1.0


def fit_fdt(
    curve: FDTCurve,
    short_lags: int = 3,
    units: str = "field",
    mobility: float = 1.0,
    drift_tolerance: float = 0.02,
) -> FDTResult:
    """Fit the slopes of a :class:`FDTCurve` (replicates along leading axes) into a :class:`FDTResult`.

    ``units="field"``: ``T = 1/slope``; ``units="loss"``: ``T = 1/(slope mobility)``.
    """
    if units not in UNITS:
        raise ValueError(f"units={units!r}; allowed: {', '.join(UNITS)}")
    if not mobility > 0:
        raise ValueError(f"mobility={mobility} must be > 0")
    L = curve.lag.shape[0] - 1
    if not 1 <= short_lags <= L:
        raise ValueError(f"short_lags={short_lags} must lie in [1, max_lag={L}]")
    x = np.asarray(curve.dC).reshape(-1, L + 1)[:, 1:]
    y = np.asarray(curve.chi).reshape(-1, L + 1)[:, 1:]
    scale = 1.0 if units == "field" else mobility
    n_rep = x.shape[0]
    sg, sg_se = _slope_through_origin(x, y)
    ss, ss_se = _slope_through_origin(x[:, :short_lags], y[:, :short_lags])
    curv = _curvature(x, y, ss)
    Tg, Ts = 1.0 / (sg * scale), 1.0 / (ss * scale)
    if n_rep > 1:
        kind = "replicates"
        T_eff, T_short = float(np.mean(Tg)), float(np.mean(Ts))
        T_err, Ts_err = (float(np.std(v, ddof=1) / np.sqrt(n_rep)) for v in (Tg, Ts))
    else:
        kind = "fit"
        T_eff, T_short = float(Tg[0]), float(Ts[0])
        T_err, Ts_err = float(abs(Tg[0]) * sg_se[0] / abs(sg[0])), float(abs(Ts[0]) * ss_se[0] / abs(ss[0]))
    drift, drift_err = _drift(curve)
    convention = (
        "T in field units: response to a field added inside the bracket of the unnormalised update"
        if units == "field"
        else f"T in loss units: field-unit temperature divided by the mobility {mobility:g}"
    )
    mean_curve = FDTCurve(curve.lag, np.mean(x, 0), np.mean(y, 0), curve.drift_curve)
    mean_curve = mean_curve._replace(
        dC=np.concatenate([[0.0], mean_curve.dC]), chi=np.concatenate([[0.0], mean_curve.chi])
    )
    return FDTResult(
        T_eff, T_err, T_short, Ts_err, float(np.mean(sg)), float(np.mean(ss)), float(np.mean(curv)), drift,
        bool(drift < drift_tolerance or drift < 3.0 * drift_err) if np.isfinite(drift) else False, n_rep, kind,
        units, float(mobility), convention, mean_curve, drift_err,
    )


def _drift(curve: FDTCurve) -> tuple[float, float]:
    """``(drift, drift_err)`` from the signed drift curves: the largest ``|mean over replicates|``
    over lags and the standard error at that lag (NaN with one replicate); ``(NaN, NaN)`` without
    drift curves (one reference time)."""
    if curve.drift_curve is None:
        return float("nan"), float("nan")
    dc = np.asarray(curve.drift_curve, np.float64)
    dc = dc.reshape(-1, dc.shape[-1])
    mean = dc.mean(0)
    i = int(np.nanargmax(np.abs(mean)))
    se = dc[:, i].std(ddof=1) / np.sqrt(dc.shape[0]) if dc.shape[0] > 1 else float("nan")
    return float(abs(mean[i])), float(se)


def effective_temperature(
    C,
    R,
    max_lag: int,
    short_lags: int = 3,
    n_ref: int = 5,
    ref_span: int | None = None,
    units: str = "field",
    mobility: float = 1.0,
    drift_tolerance: float = 0.02,
) -> FDTResult:
    """``T_eff`` from ``C, R`` of shape ``(T+1, T+1)`` or ``(n_replicates, T+1, T+1)``.

    See the module docstring for the estimators; ``max_lag`` is in steps. For a DMFT solution use
    ``mobility = dynamics.b`` with ``units="loss"`` to get loss units (unnormalised update).
    """
    curve = fdt_curve(C, R, max_lag, n_ref, ref_span)
    return fit_fdt(curve, short_lags, units, mobility, drift_tolerance)


def weak_noise_temperature(alpha, delta, mean_sq_dloss, b, tau, eta):
    """Heuristic weak-noise estimate (spec 2), field units, unnormalised update::

        T_field ~ alpha Delta <loss'^2> b (1 - b) (b tau - eta / 2),

    with ``<loss'^2>`` the mean over training samples of ``loss'(y, h)^2`` in the stationary
    state. Minibatch SGD (``tau = eta / b``) gives ``alpha Delta <loss'^2> b (1 - b) eta / 2``,
    the variance of the minibatch gradient matched to a Langevin noise ``2 T eta``. A heuristic
    to plot beside the FDT measurement, not an oracle; it neglects the correlation between the
    mask and the weights.
    """
    return alpha * delta * mean_sq_dloss * b * (1.0 - b) * (b * tau - eta / 2.0)
