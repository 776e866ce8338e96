"""Figures and the summary table of a weak-error study, from its Dataset alone (also one read back
from a zarr store). No pyplot: figures are made with :func:`sgdlab.core.plot.subplots`."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from sgdlab.core.plot import subplots
from sgdlab.core.report import table as report_table

__all__ = ["figures", "plot_weak_errors", "table"]

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_MARKERS = "osD^vPX<>*"


def _eta_label(eta: float) -> str:
    inv = 1 / eta
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-9 * inv else f"{eta:.3g}"


def _config(ds: xr.Dataset) -> dict:
    try:
        return json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        return {}


def _title(ds: xr.Dataset) -> str:
    cfg = _config(ds)
    return cfg.get("description") or cfg.get("name") or f"weak errors at T = {ds.attrs.get('horizon', '?')} ({ds.attrs.get('problem', '')})"


def plot_weak_errors(ds: xr.Dataset, title: str | None = None):
    """``|error|`` versus ``eta`` on log-log axes, one panel per observable, one line per model
    (error bars: 2 standard errors; hollow markers: unresolved, ``|error| <= 2 se``), with
    reference slopes 1 and 2; each panel's legend (right of it) gives the fitted slope, its 95% CI
    and the theory's order. Models with equal errors overlap; their markers differ."""
    from matplotlib.ticker import NullLocator

    obs = [str(o) for o in ds.observable.values]
    ncols = 1 if len(obs) == 1 else 2
    nrows = int(np.ceil(len(obs) / ncols))
    fig, axes = subplots(nrows, ncols, figsize=(7.4 * ncols, 3.6 * nrows), squeeze=False)
    eta = np.asarray(ds.eta.values, dtype=float)
    for ax, o in zip(axes.flat, obs):
        sub = ds.sel(observable=o)
        plotted = []
        for i, m in enumerate(map(str, ds.model.values)):
            err = np.abs(np.asarray(sub.error.sel(model=m).values, dtype=float))
            se = np.asarray(sub.error_se.sel(model=m).values, dtype=float)
            res = np.asarray(sub.resolved.sel(model=m).values, dtype=float) > 0.5
            if not np.any(err > 0):
                continue
            c, mk = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
            s, lo, hi = (float(sub[v].sel(model=m)) for v in ("slope", "slope_low", "slope_high"))
            label = f"{m}: {s:.2f} [{lo:.2f}, {hi:.2f}] (theory {int(sub.expected_order.sel(model=m))})"
            ax.plot(eta, err, "-", color=c, lw=1.2, marker=mk, ms=5, mfc="none", label=label)
            ax.plot(eta[res], err[res], mk, color=c, ms=3)
            if np.any(se > 0):
                ax.errorbar(eta, err, yerr=np.minimum(2 * se, 0.999 * err), fmt="none", ecolor=c, lw=0.8, capsize=2)
            plotted.append(err[err > 0])
        if plotted:  # reference slopes through the geometric middle of the data
            mid = np.exp(np.mean(np.log(np.concatenate(plotted))))
            e0 = np.exp(np.mean(np.log(eta)))
            for order, ls in ((1, "--"), (2, ":")):
                ax.plot(eta, mid * (eta / e0) ** order, ls, color="0.35", lw=1.2, label=f"slope {order}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(eta)
        ax.set_xticklabels([_eta_label(e) for e in eta])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(r"learning rate $\eta$")
        ax.set_ylabel("|weak error| vs SGD")
        desc = str(sub.observable_description.values) if "observable_description" in sub.coords else o
        ax.set_title(f"{o}: {desc}")
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    for ax in list(axes.flat)[len(obs):]:
        ax.set_visible(False)
    fig.suptitle(title or _title(ds))
    return fig


def figures(ds: xr.Dataset) -> dict:
    """``{"": the weak-error figure}`` (:func:`plot_weak_errors`), written to ``NAME.png``."""
    return {"": plot_weak_errors(ds)}


def table(ds: xr.Dataset):
    """The summary table: per (model, observable) the fitted slope, its 95% CI, the theory's
    order, the error at the smallest eta (± its standard error) and the solver."""
    i_small = int(np.argmin(ds.eta.values))
    rows = []
    for m in map(str, ds.model.values):
        for o in map(str, ds.observable.values):
            s = ds.sel(model=m, observable=o)
            err, se = float(s.error.isel(eta=i_small)), float(s.error_se.isel(eta=i_small))
            rows.append([
                m, o, f"{float(s.slope):.3f}", f"[{float(s.slope_low):.3f}, {float(s.slope_high):.3f}]", str(int(s.expected_order)),
                f"{err:.3e}" + (f" ± {se:.1e}" if se > 0 else ""), str(s.solver.values),
            ])
    name = _config(ds).get("name")
    columns = ["model", "observable", "slope", "95% CI", "theory", f"error at eta={_eta_label(float(ds.eta.min()))}", "solver"]
    return report_table(f"{name + ': ' if name else ''}measured weak orders", columns, rows,
                        right=[False, False, True, True, True, True, False])
