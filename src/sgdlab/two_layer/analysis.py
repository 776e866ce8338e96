"""Time-scale analysis of log-time risk curves: plateaus, half-learning times, exponent fits.

Pure numpy functions of saved curves (no solver, no simulator).

Plateau criterion (documented, used everywhere): on a log-spaced grid, the local log-slope
``beta(t) = d log R / d log t`` is estimated by central differences of ``log R`` against
``log t``. A *plateau* is a maximal run of grid points with ``|beta| <= slope_tol`` (default 0.05:
the risk changes by less than 5 % per e-fold of time) that spans at least ``min_decades`` of time
(default 0.3). Its ``level`` is the median of ``R`` over the run, ``start``/``end`` its first and
last time. The first plateau is the initial risk; the last is the final (converged or
irreducible) level when the curve ends flat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Plateau:
    """A flat stretch of a log-time curve: median ``level``, first/last time ``start``, ``end``."""

    level: float
    start: float
    end: float

    @property
    def decades(self) -> float:
        return float(np.log10(self.end / self.start))


def detect_plateaus(t: np.ndarray, risk: np.ndarray, slope_tol: float = 0.05, min_decades: float = 0.3) -> list[Plateau]:
    """Plateaus of ``risk(t)`` (see the module criterion). ``t`` ``(n,)`` increasing and positive,
    ``risk`` ``(n,)`` positive. Returns them in time order."""
    t, risk = np.asarray(t, float), np.asarray(risk, float)
    if t.ndim != 1 or t.shape != risk.shape or np.any(t <= 0):
        raise ValueError("t and risk must be 1-d of equal length, with t > 0")
    lr = np.log(np.maximum(risk, 1e-300))
    beta = np.gradient(lr, np.log(t))
    flat = np.abs(beta) <= slope_tol
    out, i, n = [], 0, len(t)
    while i < n:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flat[j + 1]:
            j += 1
        if np.log10(t[j] / t[i]) >= min_decades:
            out.append(Plateau(level=float(np.median(risk[i : j + 1])), start=float(t[i]), end=float(t[j])))
        i = j + 1
    return out


def match_plateaus(plateaus: list[Plateau], predicted: np.ndarray, rel_tol: float = 0.1) -> list[tuple[int, Plateau | None]]:
    """For each predicted level (index ``l``), the detected plateau whose level is closest within
    ``rel_tol * max(predicted)`` (absolute), or ``None``. Returns ``[(l, plateau or None)]``."""
    scale = float(np.max(predicted)) if len(predicted) else 1.0
    out = []
    for l, lev in enumerate(predicted):
        best = min(plateaus, key=lambda p: abs(p.level - lev), default=None)
        out.append((l, best if best is not None and abs(best.level - lev) <= rel_tol * scale else None))
    return out


def crossing_time(t: np.ndarray, x: np.ndarray, level: float) -> float:
    """First time at which ``x(t)`` reaches ``level`` from below (``x`` starts below it), by
    linear interpolation in ``log t``; ``nan`` if never reached."""
    t, x = np.asarray(t, float), np.asarray(x, float)
    above = np.nonzero(x >= level)[0]
    if len(above) == 0:
        return float("nan")
    j = above[0]
    if j == 0:
        return float(t[0])
    w = (level - x[j - 1]) / (x[j] - x[j - 1])
    return float(np.exp(np.log(t[j - 1]) + w * (np.log(t[j]) - np.log(t[j - 1]))))


def half_learning_times(t: np.ndarray, M: np.ndarray, phi: np.ndarray, sigma: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """``t_l``: first time ``sigma_l M_l / phi_l`` reaches ``fraction`` (default: half of degree
    ``l`` learned), per degree; ``M`` ``(n_t, K+1)``; ``nan`` where ``phi_l sigma_l = 0`` or never."""
    M = np.asarray(M, float)
    out = np.full(M.shape[1], np.nan)
    for l in range(M.shape[1]):
        if phi[l] * sigma[l] != 0:
            out[l] = crossing_time(t, sigma[l] * M[:, l] / phi[l], fraction)
    return out


@dataclass(frozen=True)
class PowerFit:
    """``y = C x^exponent`` fitted by least squares in log-log: exponent, its ``level`` CI
    (Student t on the regression's standard error, ``n - 2`` degrees of freedom) and prefactor."""

    exponent: float
    low: float
    high: float
    prefactor: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def fit_power_law(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> PowerFit:
    """Least-squares fit of ``log y = log C + exponent log x`` with a ``level`` confidence interval
    on the exponent; needs at least 3 finite positive points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = np.log(x[ok]), np.log(y[ok])
    if len(x) < 3:
        raise ValueError("a power-law fit with a confidence interval needs >= 3 finite points")
    res = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 2) * res.stderr
    return PowerFit(float(res.slope), float(res.slope - half), float(res.slope + half), float(np.exp(res.intercept)), int(len(x)))


def carrier_fraction(a_before: np.ndarray, s_before: np.ndarray, a_after: np.ndarray, s_after: np.ndarray, degree: int, share: float = 0.5) -> float:
    """Intermittency: the smallest fraction of neurons whose change of ``a_i s_i^degree`` carries
    ``share`` of the total absolute change of ``M_degree`` between two saved times
    (``(m,)`` arrays). A vanishing fraction means the drop is carried by few neurons."""
    dm = np.abs(np.asarray(a_after) * np.asarray(s_after) ** degree - np.asarray(a_before) * np.asarray(s_before) ** degree)
    tot = dm.sum()
    if tot == 0:
        return float("nan")
    cs = np.cumsum(np.sort(dm)[::-1]) / tot
    return float((np.searchsorted(cs, share) + 1) / len(dm))
