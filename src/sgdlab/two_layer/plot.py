"""Figures and the summary table of the ``two_layer`` study, from its Dataset alone.

Both work on a Dataset fresh from :func:`sgdlab.two_layer.experiment.run` and on one read back
from a zarr store (:func:`sgdlab.core.store.load`): everything they show is in its variables,
coordinates and ``config`` attr. No pyplot (figures from :func:`sgdlab.core.plot.subplots`).
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from rich.console import Group
from rich.text import Text

from sgdlab.core.plot import band, subplots
from sgdlab.core.report import table as report_table
from sgdlab.two_layer.analysis import detect_plateaus
from sgdlab.two_layer.config import TRUNCATION_WARN

__all__ = ["figures", "table"]

_COLORS = {"flow": "C0", "sim": "C1", "reduced": "k"}
_LABELS = {"flow": "finite-d flow", "sim": "online SGD", "reduced": "reduced (d = inf)"}


def _config(ds: xr.Dataset) -> dict:
    cfg = ds.attrs.get("config", "{}")
    return json.loads(cfg) if isinstance(cfg, str) else dict(cfg)


def _eps(ds: xr.Dataset) -> float:
    return float(_config(ds).get("dynamics", {}).get("eps", ds.attrs.get("eps", float("nan"))))


def _methods(ds: xr.Dataset) -> list[str]:
    return [str(m) for m in ds.method.values]


def _method_label(ds: xr.Dataset, m: str) -> str:
    cfg = _config(ds)
    if m == "flow" and "flow" in cfg:
        return f"{_LABELS[m]} (d={cfg['flow']['d']:.0e}, m={cfg['flow']['m']}, {cfg['flow']['seeds']} seeds)"
    if m == "sim" and "sgd" in cfg:
        g = cfg["sgd"]
        return f"{_LABELS[m]} (d={g['d']}, m={g['m']}, eta={g['eta']:g}, B={g['batch']}, {g['seeds']} seeds)"
    if m == "reduced" and "reduced" in cfg:
        return f"{_LABELS[m]} ({cfg['reduced']['m']} particles)"
    return m


def _predicted_lines(ax, ds: xr.Dataset) -> None:
    for lev in np.unique(np.round(ds.plateau_predicted.values, 12)):
        ax.axhline(lev, color="0.45", ls=":", lw=0.9, zorder=0)


def _staircase(ds: xr.Dataset):
    """Main figure: risk on log time per method (+ the eps scan of the reduced dynamics)."""
    from matplotlib import colormaps

    has_scan = "t_half_scan" in ds
    fig, axes = subplots(1, 2 if has_scan else 1, figsize=(12.5 if has_scan else 6.5, 4.4), squeeze=False)
    ax = axes[0, 0]
    t = ds.t.values
    for i, m in enumerate(_methods(ds)):
        c = _COLORS.get(m, f"C{i}")
        mean = ds.risk_mean.isel(method=i).values
        err = ds.risk_err.isel(method=i).values if m == "sim" and np.isfinite(ds.risk_err.isel(method=i).values).any() else None
        band(ax, t, mean, err, c, label=_method_label(ds, m), ls="--" if m == "reduced" else "-", lw=1.6)
        for k in range(ds.sizes["plateau"]):
            lev = float(ds.plateau_level.isel(method=i, plateau=k))
            if np.isfinite(lev):
                ax.plot([float(ds.plateau_start.isel(method=i, plateau=k)), float(ds.plateau_end.isel(method=i, plateau=k))],
                        [lev, lev], color=c, lw=7, alpha=0.18, solid_capstyle="butt")
    _predicted_lines(ax, ds)
    if "reduced" in _methods(ds):
        for l in ds.degree.values:
            th = float(ds.t_half.sel({"method": "reduced", "degree": l}))
            if np.isfinite(th):
                ax.axvline(th, color="k", lw=0.6, alpha=0.4)
                ax.text(th, 0.55 - 0.06 * (int(l) % 3), f"$t_{l}$", transform=ax.get_xaxis_transform(), ha="right", fontsize=8,
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_xscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("population risk R(t)")
    ax.set_title(f"eps = {_eps(ds):.0e}: dotted = predicted plateaus, bars = detected")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="lower left")
    if has_scan:
        ax = axes[0, 1]
        ts = ds.t_scan.values
        cmap = colormaps["viridis"]
        eps = ds.eps.values
        for j, e in enumerate(eps):
            r = ds.risk_scan.isel(eps=j).values
            if not np.isfinite(r).any():
                continue
            col = cmap(j / max(len(eps) - 1, 1))
            ax.plot(ts, r, color=col, lw=1.4, label=f"eps = {e:.0e}")
            for p in detect_plateaus(ts[np.isfinite(r)], r[np.isfinite(r)]):
                ax.plot([p.start, p.end], [p.level, p.level], color=col, lw=7, alpha=0.18, solid_capstyle="butt")
        _predicted_lines(ax, ds)
        ax.set_xscale("log")
        ax.set_xlabel("t")
        ax.set_title("reduced dynamics as eps -> 0 (bars: detected plateaus)")
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=7, loc="lower left")
    cfg = _config(ds)
    fig.suptitle(cfg.get("description") or cfg.get("name", "time scales"), fontsize=10)
    return fig


def _eps_scaling(ds: xr.Dataset):
    fig, ax = subplots(figsize=(6.8, 4.6))
    eps = ds.eps.values
    for l in ds.degree.values[1:]:
        y = ds.t_half_scan.sel(degree=l).values
        if not np.isfinite(y).any():
            continue
        c = f"C{int(l) - 1}"
        e, lo, hi = (float(ds[v].sel(degree=l)) for v in ("exponent", "exponent_low", "exponent_high"))
        fitted = y / ds.t1_log_factor.values if l == 1 else y
        what = "t_1 / L(eps)" if l == 1 else f"t_{l}"
        ax.plot(eps, y, "o" if l > 1 else "s", color=c, mfc="none" if l == 1 else c, label=f"t_{l}" + (" (raw)" if l == 1 else ""))
        if np.isfinite(e):
            ok = np.isfinite(fitted)
            pre = np.exp(np.mean(np.log(fitted[ok]) - e * np.log(eps[ok])))
            if l == 1:
                ax.plot(eps, fitted, "o", color=c)
            ax.plot(eps, pre * eps**e, "--", color=c, lw=1.1, label=f"{what}: exponent {e:.3f} [{lo:.3f}, {hi:.3f}] (theory 1/{2 * int(l)})")
    if np.isfinite(ds.t1_closed_form.values).any():
        ax.plot(eps, ds.t1_closed_form.values, ":", color="C0", lw=1.2, label="t_1 closed form")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eps")
    ax.set_ylabel("half-learning time t_l")
    ax.set_title("time scales of the reduced dynamics (95% CIs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def _d_scan(ds: xr.Dataset):
    fig, ax = subplots(figsize=(6.2, 4.2))
    dv = ds.d.values
    eps = _eps(ds)
    for l in range(1, ds.sizes["degree"]):
        y, e = ds.t_half_dscan.values[:, l], ds.t_half_dscan_err.values[:, l]
        if not np.isfinite(y).any():
            continue
        ax.errorbar(dv, y, yerr=np.nan_to_num(e), fmt="o-", ms=4, capsize=2, color=f"C{l - 1}", label=f"t_{l}, finite-d flow")
        if "reduced" in _methods(ds):
            ax.axhline(float(ds.t_half.sel({"method": "reduced", "degree": l})), color=f"C{l - 1}", ls=":", lw=1,
                       label=f"t_{l}, reduced (d = inf)")
    ax.axvline(1 / eps, color="0.5", lw=0.8, ls="--", label="d = 1/eps")
    ax.set_xscale("log")
    ax.set_xlabel("d")
    ax.set_ylabel("half-learning time t_l")
    ax.set_title(f"finite-d flow at eps = {eps:.0e} (mean ± s.e. over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def figures(ds: xr.Dataset) -> dict:
    """The figures of a study: ``""`` (main, ``NAME.png``), ``"eps_scaling"`` (with ``scan.eps``)
    and ``"d_scan"`` (with ``scan.d``).

    Main: left, the risk on log time for every method at ``eps`` (seed mean; online SGD with a
    band of one standard error over seeds), the predicted plateau levels
    ``(1/2) sum_{k>=l} phi_k^2`` (dotted), the detected plateaus (thick translucent bars) and the
    half-learning times ``t_l`` of the reduced dynamics (ticks); right (with a scan), the reduced
    dynamics for every scanned ``eps``: the staircase sharpening as ``eps -> 0``.
    ``eps_scaling``: ``t_l`` versus ``eps`` (log-log) with the fitted power laws, their exponents
    and 95% CIs in the legend beside ``1/(2l)``; degree 1 also divided by its log factor (the
    fitted quantity) and the closed-form ``t_1``. ``d_scan``: ``t_l`` of the finite-``d`` flow
    versus ``d`` (mean ± standard error over seeds) beside the reduced dynamics (``d = inf``)."""
    figs = {"": _staircase(ds)}
    if "t_half_scan" in ds:
        figs["eps_scaling"] = _eps_scaling(ds)
    if "t_half_dscan" in ds:
        figs["d_scan"] = _d_scan(ds)
    return figs


def _f(x: float, fmt: str = ".3g") -> str:
    return "-" if not np.isfinite(x) else format(x, fmt)


def table(ds: xr.Dataset) -> Group:
    """Two tables (plain-text cells): per level, the predicted and measured (per method) plateau;
    per degree, ``t_l`` per method and, with a scan, the fitted exponent with its 95% CI beside
    ``1/(2l)``; a third when a target or activation was given as a function: its Hermite
    projection's truncation error (:func:`_projection_table`)."""
    methods = _methods(ds)
    name = _config(ds).get("name", "time scales")
    lev = report_table(
        f"{name}: plateau levels",
        ["level l", "predicted (1/2) sum_{k>=l} phi_k^2"] + [f"measured {m}" for m in methods],
        [[str(l), f"{float(ds.plateau_predicted[l]):.4f}", *[_f(float(ds.plateau_measured.sel({"method": m, "level": l})), ".4f") for m in methods]]
         for l in map(int, ds.level.values)],
        right=[True] * (2 + len(methods)),
    )
    cols = ["l", "phi_l", "sigma_l"] + methods
    if "carrier_fraction" in ds:
        cols.append("carriers")
    if "exponent" in ds:
        cols += ["exponent", "95% CI", "1/(2l)"]
    rows = []
    for l in map(int, ds.degree.values):
        row = [str(l), f"{float(ds.phi[l]):.3g}", f"{float(ds.sigma[l]):.3g}"]
        row += [_f(float(ds.t_half.sel({"method": m, "degree": l}))) for m in methods]
        if "carrier_fraction" in ds:
            row.append(_f(float(ds.carrier_fraction[l]), ".2f"))
        if "exponent" in ds:
            e = float(ds.exponent[l])
            row += [_f(e, ".3f"), "-" if not np.isfinite(e) else f"[{float(ds.exponent_low[l]):.3f}, {float(ds.exponent_high[l]):.3f}]",
                    "-" if l == 0 else f"{1 / (2 * l):.3f}"]
        rows.append(row)
    title = f"half-learning times t_l per method (eps = {_eps(ds):.0e})" + (" and eps-scan exponents" if "exponent" in ds else "")
    tt = report_table(title, cols, rows, right=[True] * len(cols))
    if "exponent" in ds:
        tt.caption = Text("l = 1: exponent of t_1 / L(eps), the log factor of the closed form removed")
    tables = [lev, tt] + _projection_table(ds)
    for t in tables:  # numbers are never cut (headers wrap instead)
        for col in t.columns:
            col.min_width = max((len(str(c)) for c in col._cells), default=1)
    return Group(*tables)


def _projection_table(ds: xr.Dataset) -> list:
    """The Hermite projections of the functions given as ``problem.target`` / ``activation``
    (attr ``truncation_error``): ``||f||``, the remainder ``||f - P_K f||`` and its ratio, flagged
    above :data:`~sgdlab.two_layer.config.TRUNCATION_WARN`; none for coefficient lists."""
    trunc = json.loads(ds.attrs.get("truncation_error", "{}") or "{}")
    if not trunc:
        return []
    K = ds.sizes["degree"] - 1
    rows = [[f"problem.{key}", f"{p['norm']:.4g}", f"{p['remainder']:.3g}", f"{p['relative']:.2%}",
             f"raise problem.degree: the degree-{K} polynomial is not the function" if p["relative"] > TRUNCATION_WARN else "ok"]
            for key, p in trunc.items()]
    return [report_table(f"functions projected on Hermite degrees 0..{K} (every method uses the projection)",
                         ["key", "||f||", "||f - P_K f||", "relative", "note"], rows, right=[False, True, True, True, False])]
