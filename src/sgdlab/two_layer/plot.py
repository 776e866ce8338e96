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

from sgdlab.core.plot import Figure, band, comparison_grid, legend, param_text, residual, set_xlabel, subplots
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
        f = cfg["flow"]
        return rf"finite-$d$ flow ($d$ = {_power(f['d'])}, $m$ = {f['m']}): mean ± s.e. over {f['seeds']} seeds"
    if m == "sim" and "sgd" in cfg:
        g = cfg["sgd"]
        return (rf"online SGD ($d$ = {g['d']}, $m$ = {g['m']}, $\eta$ = {g['eta']:g}, $B$ = {g['batch']}): "
                f"mean ± s.e. over {g['seeds']} seeds")
    if m == "reduced" and "reduced" in cfg:
        return rf"reduced dynamics ($d = \infty$, {cfg['reduced']['m']} particles)"
    return _LABELS.get(m, m)


def _coefficients(c) -> str:
    """Hermite coefficients as ``He_1 + He_2 + He_3`` in mathtext (a function given by name: the
    name); no space inside a formula, so that a wrapped title never breaks one."""
    if not isinstance(c, (list, tuple)):
        return str(c)
    terms = [f"${'' if v == 1 else format(v, '.3g')}\\mathrm{{He}}_{k}$" for k, v in enumerate(c) if v]
    return " + ".join(terms) or "0"


def _power(x: float) -> str:
    """``x`` as mathtext, ``10^k`` for a power of ten."""
    k = np.log10(x) if x > 0 else 0.5
    return f"$10^{{{int(round(k))}}}$" if abs(k - round(k)) < 1e-9 else f"{x:g}"


def _title(ds: xr.Dataset, width: int) -> str:
    """The title from the config that ran (``--set`` overrides included)."""
    cfg = _config(ds)
    p, dyn = cfg.get("problem", {}), cfg.get("dynamics", {})
    head = f"target {_coefficients(p.get('target'))}, activation {_coefficients(p.get('activation'))} (Hermite degrees <= {p.get('degree')})"
    params = [(r"\varepsilon", _eps(ds)), (r"t_{\max}", dyn.get("t_max")),
              ("", "second layer trained" if dyn.get("train_second_layer", True) else "second layer fixed"),
              ("", f"a(0) {dyn['a_law']} x {dyn.get('a_scale', 1):g}" if dyn.get("a_law") else None)]
    return param_text(head, params, width)


def _predicted_lines(ax, ds: xr.Dataset) -> None:
    levels = np.unique(np.round(ds.plateau_predicted.values, 12))
    for i, lev in enumerate(levels):
        ax.axhline(lev, color="0.45", ls=":", lw=0.9, zorder=0,
                   label=r"predicted plateaus $\frac{1}{2}\sum_{k\geq \ell}\phi_k^2$" if i == 0 else None)


def _plateau_bar(ax, start, end, level, color, label=None):
    ax.plot([start, end], [level, level], color=color, lw=7, alpha=0.18, solid_capstyle="butt", label=label)


def _staircase(ds: xr.Dataset):
    """Main figure: risk on log time per method (+ the eps scan of the reduced dynamics), and
    under it the residual of online SGD against the finite-d flow."""
    from matplotlib import colormaps

    has_scan = "t_half_scan" in ds
    methods = _methods(ds)
    errs = {m: ds.risk_err.isel(method=i).values for i, m in enumerate(methods)}
    compare = {"sim", "flow"} <= set(methods) and all(np.isfinite(errs[m]).any() for m in ("sim", "flow"))
    fig = Figure(figsize=(13.5 if has_scan else 7.0, 7.0 if compare else 6.0), layout="constrained")
    mains, resids = comparison_grid(fig, 2 if has_scan else 1, ncols=2, residuals=[compare, False][: 2 if has_scan else 1])
    ax, rax = mains[0], resids[0]
    t = ds.t.values
    bar_label = "detected plateaus"
    for i, m in enumerate(methods):
        c = _COLORS.get(m, f"C{i}")
        mean = ds.risk_mean.isel(method=i).values
        err = errs[m] if np.isfinite(errs[m]).any() else None
        band(ax, t, mean, err, c, label=_method_label(ds, m), ls="--" if m == "reduced" else "-", lw=1.6, alpha=0.3)
        for k in range(ds.sizes["plateau"]):
            lev = float(ds.plateau_level.isel(method=i, plateau=k))
            if np.isfinite(lev):
                _plateau_bar(ax, float(ds.plateau_start.isel(method=i, plateau=k)), float(ds.plateau_end.isel(method=i, plateau=k)),
                             lev, c, label=bar_label)
                bar_label = None
    if compare:
        residual(rax, t, ds.risk_mean.sel({"method": "sim"}).values, errs["sim"], ds.risk_mean.sel({"method": "flow"}).values,
                 errs["flow"], color=_COLORS["sim"], names=("SGD", "flow"))
    _predicted_lines(ax, ds)
    if "reduced" in methods:  # t_1 < t_2 < ... are often within a few per cent: one legend entry, no text on the lines
        ths = [float(ds.t_half.sel({"method": "reduced", "degree": l})) for l in ds.degree.values]
        ths = [th for th in ths if np.isfinite(th)]
        for j, th in enumerate(ths):
            ax.axvline(th, color="k", lw=0.6, alpha=0.4, label=r"half-learning times $t_1 < t_2 < \dots$ (reduced)" if j == 0 else None)
    ax.set_xscale("log")
    set_xlabel(ax, rax, r"time $t$ (log scale)")
    ax.set_ylabel(r"population risk $R(t)$")
    ax.set_title(rf"$\varepsilon$ = {_eps(ds):.3g}: flow, online SGD and the reduced dynamics", fontsize=10)
    ax.grid(alpha=0.3, which="major")
    if has_scan:
        ax = mains[1]
        ts = ds.t_scan.values
        cmap = colormaps["viridis"]
        eps = ds.eps.values
        bar_label = "detected plateaus"
        for j, e in enumerate(eps):
            r = ds.risk_scan.isel(eps=j).values
            if not np.isfinite(r).any():
                continue
            col = cmap(j / max(len(eps) - 1, 1))
            ax.plot(ts, r, color=col, lw=1.4, label=rf"$\varepsilon$ = {_power(e)}")
            for p in detect_plateaus(ts[np.isfinite(r)], r[np.isfinite(r)]):
                _plateau_bar(ax, p.start, p.end, p.level, col, label=bar_label)
                bar_label = None
        _predicted_lines(ax, ds)
        ax.set_xscale("log")
        ax.set_xlabel(r"time $t$ (log scale)")
        ax.set_ylabel(r"population risk $R(t)$")
        ax.set_title(r"reduced dynamics as $\varepsilon \to 0$", fontsize=10)
        ax.grid(alpha=0.3, which="major")
    legend(fig, axes=[a for a in (*mains, *resids) if a is not None], ncols=3, fontsize=8)
    fig.suptitle(_title(ds, int(12.5 * fig.get_figwidth())), fontsize=10)
    return fig


def _eps_scaling(ds: xr.Dataset):
    """``t_l`` versus ``eps`` (log-log): the data, the fitted power law (its exponent and 95% CI
    in the legend) and the theory's slope ``1/(2l)`` through the data (dash-dotted)."""
    fig, ax = subplots(figsize=(8.8, 6.6))
    eps = ds.eps.values
    for l in ds.degree.values[1:]:
        y = ds.t_half_scan.sel(degree=l).values
        if not np.isfinite(y).any():
            continue
        c = f"C{int(l) - 1}"
        e, lo, hi = (float(ds[v].sel(degree=l)) for v in ("exponent", "exponent_low", "exponent_high"))
        fitted = y / ds.t1_log_factor.values if l == 1 else y
        what = r"$t_1 / L(\varepsilon)$" if l == 1 else rf"$t_{l}$"
        ax.plot(eps, y, "o" if l > 1 else "s", color=c, mfc="none" if l == 1 else c, label=rf"$t_{l}$" + (" (raw)" if l == 1 else ""))
        ok = np.isfinite(fitted) & (fitted > 0)
        if l == 1:
            ax.plot(eps, fitted, "o", color=c, label=what)
        theory = 1 / (2 * int(l))
        if ok.any():  # the theory's slope through the geometric middle of the fitted points
            pre = np.exp(np.mean(np.log(fitted[ok]) - theory * np.log(eps[ok])))
            ax.plot(eps, pre * eps**theory, "-.", color=c, lw=0.9, alpha=0.7, label=rf"slope $1/{2 * int(l)}$ (theory) through {what}")
        if np.isfinite(e):
            pre = np.exp(np.mean(np.log(fitted[ok]) - e * np.log(eps[ok])))
            note = "" if lo <= theory <= hi else f"; the CI excludes 1/{2 * int(l)}"
            ax.plot(eps, pre * eps**e, "--", color=c, lw=1.1, label=f"{what} fit: exponent {e:.3f} [{lo:.3f}, {hi:.3f}] (theory 1/{2 * int(l)}){note}")
    if np.isfinite(ds.t1_closed_form.values).any():
        ax.plot(eps, ds.t1_closed_form.values, ":", color="C0", lw=1.2, label=r"$t_1$ closed form")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"time-scale ratio $\varepsilon$")
    ax.set_ylabel(r"half-learning time $t_\ell$")
    ax.set_title(r"time scales of the reduced dynamics: $t_\ell \sim \varepsilon^{1/(2\ell)}$ (fits with 95% CIs)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    # under the axis (constrained layout makes room for it), so that it never hides the data
    legend(ax, ncols=2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return fig


def _d_scan(ds: xr.Dataset):
    fig, ax = subplots(figsize=(6.6, 4.4))
    dv = ds.d.values
    eps = _eps(ds)
    for l in range(1, ds.sizes["degree"]):
        y, e = ds.t_half_dscan.values[:, l], ds.t_half_dscan_err.values[:, l]
        if not np.isfinite(y).any():
            continue
        ax.errorbar(dv, y, yerr=np.nan_to_num(e), fmt="o-", ms=4, capsize=2, color=f"C{l - 1}", label=rf"$t_{l}$, finite-$d$ flow (mean ± s.e.)")
        if "reduced" in _methods(ds):
            ax.axhline(float(ds.t_half.sel({"method": "reduced", "degree": l})), color=f"C{l - 1}", ls=":", lw=1,
                       label=rf"$t_{l}$, reduced ($d = \infty$)")
    ax.axvline(1 / eps, color="0.5", lw=0.8, ls="--", label=r"$d = 1/\varepsilon$")
    ax.set_xscale("log")
    ax.set_xlabel(r"input dimension $d$")
    ax.set_ylabel(r"half-learning time $t_\ell$")
    seeds = _config(ds).get("flow", {}).get("seeds", "?")
    ax.set_title(rf"finite-$d$ flow at $\varepsilon$ = {eps:.3g} (mean ± s.e. over {seeds} seeds)", fontsize=9)
    legend(ax, fontsize=7)
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
