"""Figures and summary table of the effective-noise study, from its Dataset alone.

:func:`figures` -> ``{"fdt", "distance", "margins"}`` (written ``NAME_fdt.png``, ...), drawn
without pyplot; :func:`table` -> the rich summary printed after ``sgdlab noise``. Both work on
a Dataset read back from a zarr store. A ``[sweep]`` of the study is drawn by the generic
:func:`sgdlab.core.sweep_plot.plot_sweep` (``sgdlab plot STORE --var T_eff``).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from sgdlab.core.plot import Figure, band, comparison_axes, legend, residual, set_xlabel, subplots
from sgdlab.core.report import pm, table as rich_table

__all__ = ["figures", "plot_distance", "plot_fdt", "plot_margins", "table"]

COLORS = {"sim": "C0", "dmft": "k"}
LABELS = {"sim": "simulation", "dmft": "DMFT"}


def _methods(ds: xr.Dataset, var: str) -> list[tuple[int, str]]:
    """``(index, method)`` of the methods with finite values of ``var``."""
    return [(i, str(m)) for i, m in enumerate(ds["method"].values) if np.isfinite(ds[var].isel(method=i).values).any()]


def _units(ds: xr.Dataset) -> str:
    return "loss units" if str(ds.attrs.get("T_units", "")).startswith("T in loss") else "field units"


def _sem(a: np.ndarray, axis: int = 0) -> np.ndarray:
    n = a.shape[axis]
    return a.std(axis=axis, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(a.mean(axis=axis))


def plot_fdt(ds: xr.Dataset):
    """Parametric FDT plot ``chi(s)`` against ``dC(s)`` per method, with the lines of slope
    ``1/T_eff`` and the weak-noise heuristic."""
    fig, ax = subplots(figsize=(5.4, 4.2))
    units = _units(ds)
    for i, m in _methods(ds, "dC"):
        x, y = ds["dC"].isel(method=i).values, ds["chi"].isel(method=i).values
        T, e = float(ds["T_eff"].isel(method=i)), float(ds["T_eff_err"].isel(method=i))
        color = COLORS.get(m, f"C{i}")
        ax.plot(x, y, "o-" if m == "sim" else "--", ms=3, color=color, label=f"{LABELS.get(m, m)}: $T_{{\\rm eff}}$ = {pm(T, e, '.3g')}")
        ax.plot(x, x / T, ":", color=color, lw=1, label=f"slope $1/T_{{\\rm eff}}$ ({LABELS.get(m, m)})")
    heur = float(ds.attrs.get("T_weak_noise_heuristic", float("nan")))
    if heur > 0 and np.isfinite(ds["dC"].values).any():
        dc = ds["dC"].values[np.isfinite(ds["dC"].values)]
        x = float(dc[np.argmax(np.abs(dc))])  # the extent of the measured curves (either sign)
        ax.plot([0, x], [0, x / heur], color="0.5", ls="-.", lw=0.8, label=f"weak-noise heuristic $T$ = {heur:.3g}")
    ax.set_xlabel(r"$\Delta C(s) = C(t,t) - C(t,t-s)$")
    ax.set_ylabel(rf"integrated response $\chi(s)$ (1 / {units})")
    ax.set_title(rf"FDT: slope $1/T_{{\rm eff}}$, $T$ in {units}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def plot_distance(ds: xr.Dataset):
    """Replica distance ``D(t)``: simulated pairs (mean ± s.e. over seeds) and the two-replica
    DMFT (mean ± s.e. over Monte-Carlo seeds), with the residual ``(sim - DMFT) / combined
    s.e.`` under it when both are there."""
    t = ds["t"].values
    D = ds["D"].values
    compare = "D_dmft" in ds and D.shape[0] > 1 and ds["D_dmft"].shape[0] > 1
    fig = Figure(figsize=(5.6, 5.2 if compare else 4.2), layout="constrained")
    ax, rax = comparison_axes(fig) if compare else (fig.add_subplot(), None)
    band(ax, t, D.mean(0), _sem(D), COLORS["sim"], label=f"simulation: mean ± s.e. over {D.shape[0]} seeds (replica pairs)")
    if "D_dmft" in ds:
        Dd = ds["D_dmft"].values
        band(ax, t, Dd.mean(0), _sem(Dd), COLORS["dmft"], label=f"two-replica DMFT: mean ± s.e. over {Dd.shape[0]} solves", ls="--")
        if compare:
            residual(rax, t, D.mean(0), _sem(D), Dd.mean(0), _sem(Dd), color=COLORS["dmft"], names=("sim", "DMFT"))
    set_xlabel(ax, rax, r"time $t = k\eta$")
    ax.set_ylabel(r"replica distance $D(t) = |\mathbf{w}_1 - \mathbf{w}_2|^2 / 2d$")
    legend(ax, axes=[ax] + ([rax] if rax is not None else []), fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_margins(ds: xr.Dataset):
    """Distribution of the margins ``kappa_mu = y_mu h_mu / sqrt(q)`` at the end (from the stored
    quantiles, equal weight per quantile and seed) with ``kappa_max`` (seed mean)."""
    fig, ax = subplots(figsize=(5.4, 4.2))
    values = ds["margin_quantile"].values.ravel()
    values = values[np.isfinite(values)]
    ax.hist(values, bins=min(60, max(10, values.size // 20)), density=True, color=COLORS["sim"], alpha=0.7,
            label="simulation, all seeds")
    i = list(map(str, ds["method"].values)).index("sim")
    km, ke = float(ds["kappa_max"].isel(method=i)), float(ds["kappa_max_err"].isel(method=i))
    ax.axvline(km, color="k", ls="--", label=rf"$\kappa_{{\max}}$ = {pm(km, ke, '.3g')} (seed mean)")
    ax.set_xlabel(r"margin $\kappa_\mu = y_\mu h_\mu / \sqrt{q}$ (dimensionless)")
    ax.set_title(f"training-set margins at $t$ = {float(ds['t'][-1]):g}", fontsize=9)
    ax.set_ylabel("probability density")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def figures(ds: xr.Dataset) -> dict:
    """The figures of a noise run: ``{"fdt", "distance", "margins"}``."""
    return {"fdt": plot_fdt(ds), "distance": plot_distance(ds), "margins": plot_margins(ds)}


def table(ds: xr.Dataset):
    """The summary of a noise run: temperatures, drift, distances and margins, sim beside DMFT."""
    methods = list(map(str, ds["method"].values))

    def cell(method: str, var: str, err: str | None = None, fmt: str = ".4g") -> str:
        v = float(ds[var].isel(method=methods.index(method)))
        if not np.isfinite(v):
            return "-"
        return pm(v, float(ds[err].isel(method=methods.index(method))) if err else None, fmt)

    rows = [
        ["T_eff (global)", *(cell(m, "T_eff", "T_eff_err") for m in methods)],
        ["T_eff (short lags)", *(cell(m, "T_short", "T_short_err") for m in methods)],
        ["curvature", *(cell(m, "curvature", fmt=".3g") for m in methods)],
    ]
    drift = []
    for m in methods:
        c = cell(m, "drift", fmt=".3g")
        st = float(ds["stationary"].isel(method=methods.index(m)))
        drift.append(c + (" (not stationary)" if np.isfinite(st) and st == 0 else ""))
    rows.append(["stationarity drift", *drift])
    rows.append(["T weak-noise heuristic", *(cell(m, "T_heuristic") for m in methods)])
    D = ds["D"].values[:, -1]
    sem1 = lambda a: float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")  # noqa: E731
    d_end = [pm(float(D.mean()), sem1(D), ".4g")]
    if "D_dmft" in ds:
        Dd = ds["D_dmft"].values[:, -1]
        d_end.append(pm(float(Dd.mean()), sem1(Dd), ".4g"))
    rows.append(["D(t_max)", *(d_end + ["-"] * (len(methods) - len(d_end)))])
    rows.append(["D_inf (tail mean)", *(cell(m, "D_inf", "D_inf_err") for m in methods)])
    rows.append(["kappa_max (margin)", *(cell(m, "kappa_max", "kappa_max_err") for m in methods)])
    title = f"effective noise: t = {float(ds['t'][-1]):g}, T in {_units(ds)}"
    return rich_table(title, ["quantity", *methods], rows)
