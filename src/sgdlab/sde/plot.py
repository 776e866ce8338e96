"""Figures and the summary table of a weak-error study, from its Dataset alone (also one read back
from a zarr store). No pyplot: figures are made with :func:`sgdlab.core.plot.subplots`."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from sgdlab.core.plot import Figure, comparison_grid, legend, param_text, residual, set_xlabel
from sgdlab.core.report import table as report_table

__all__ = ["figures", "plot_weak_errors", "table"]

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_MARKERS = "osD^vPX<>*"
#: the built-in observables as mathtext statistics of X_T (others: their description)
_STATISTICS = {
    "mean": r"$\mathbb{E}\,X_{T,1}$", "second_moment": r"$\mathbb{E}\,|X_T|^2$", "variance": r"$\mathrm{Var}\,X_{T,1}$",
    "loss": r"$\mathbb{E}\,F(X_T)$", "inner": r"$\mathbb{E}\,\langle X^x_T, X^y_T\rangle$",
    "cross_cov": r"$\mathrm{Cov}(X^x_{T,1}, X^y_{T,1})$", "sq_distance": r"$\mathbb{E}\,|X^x_T - X^y_T|^2$",
}


def _eta_label(eta: float) -> str:
    inv = 1 / eta
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-9 * inv else f"{eta:.3g}"


def _config(ds: xr.Dataset) -> dict:
    try:
        return json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        return {}


def _title(ds: xr.Dataset, width: int = 120) -> str:
    """The title from the config that ran (``--set`` overrides included): the problem, its
    data and starts, the horizon, SGD's batch and the Monte-Carlo sizes."""
    cfg = _config(ds)
    p, so, st = cfg.get("problem", {}), cfg.get("solver", {}), cfg.get("study", {})
    kind = p.get("kind") or ds.attrs.get("problem", "")
    n = len(p["features"]) if p.get("features") else len(p["a"]) if p.get("a") else p.get("n_samples")
    dim = len(p["features"][0]) if p.get("features") else 1 if p.get("a") else p.get("dim")
    starts = p.get("starts") or json.loads(ds.attrs.get("x0", "null") or "null")
    head = f"weak error against SGD: {kind.replace('_', ' ')}" + (f", {n} samples" if n else "") + (f" in {dim}-d" if dim else "")
    if starts:
        head += ", start" + ("s " if len(starts) > 1 else " ") + " and ".join("(" + ", ".join(f"{v:g}" for v in x) + ")" for x in starts)
    mc = bool((np.asarray(ds.error_se.values) > 0).any())
    params = [("T", st.get("horizon", ds.attrs.get("horizon"))), ("B", p.get("batch_size", ds.attrs.get("batch_size"))),
              (r"\lambda", p.get("ridge")), ("", f"{so.get('paths', ds.attrs.get('n_paths'))} Monte-Carlo paths ({so.get('scheme', ds.attrs.get('scheme'))}, "
                                              f"{so.get('substeps', ds.attrs.get('substeps'))} substeps)" if mc else "exact moments")]
    return param_text(head, params, width)


def plot_weak_errors(ds: xr.Dataset, title: str | None = None):
    """``|error|`` versus ``eta`` on log-log axes, one panel per observable, one line per model
    (error bars: 2 standard errors; hollow markers: unresolved, ``|error| <= 2 se``), with
    reference slopes 1 and 2; each panel's legend (right of it) gives the fitted slope, its 95% CI
    and the theory's order. Models with equal errors overlap; their markers differ. Under a
    panel with Monte-Carlo errors, the residual ``(SGD - model) / combined s.e.`` of those
    models (``-error / error_se``: how many standard errors resolve the weak error); exact
    moments (``error_se = 0``) have no residual, and a panel of exact moments only has no
    residual panel. ``title`` defaults to the parameters of the run (:func:`_title`)."""
    from matplotlib.ticker import NullLocator

    obs = [str(o) for o in ds.observable.values]
    ncols = 1 if len(obs) == 1 else 2
    nrows = int(np.ceil(len(obs) / ncols))
    mc = [bool((np.asarray(ds.error_se.sel(observable=o).values, dtype=float) > 0).any()) for o in obs]
    fig = Figure(figsize=(7.6 * ncols, sum(4.6 if any(mc[r * ncols:(r + 1) * ncols]) else 3.6 for r in range(nrows)) + 0.6),
                 layout="constrained")
    mains, resids = comparison_grid(fig, len(obs), ncols=ncols, residuals=mc)
    eta = np.asarray(ds.eta.values, dtype=float)
    for ax, rax, o in zip(mains, resids, obs):
        sub = ds.sel(observable=o)
        plotted = []
        for i, m in enumerate(map(str, ds.model.values)):
            signed = np.asarray(sub.error.sel(model=m).values, dtype=float)
            err = np.abs(signed)
            se = np.asarray(sub.error_se.sel(model=m).values, dtype=float)
            res = np.asarray(sub.resolved.sel(model=m).values, dtype=float) > 0.5
            if not np.any(err > 0):
                continue
            c, mk = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
            s, lo, hi = (float(sub[v].sel(model=m)) for v in ("slope", "slope_low", "slope_high"))
            how = "" if not np.any(se > 0) else ", MC"
            label = f"{m}: {s:.2f} [{lo:.2f}, {hi:.2f}] (theory {int(sub.expected_order.sel(model=m))}{how})"
            ax.plot(eta, err, "-", color=c, lw=1.2, marker=mk, ms=5, mfc="none", label=label)
            ax.plot(eta[res], err[res], mk, color=c, ms=3)
            if np.any(se > 0):
                ax.errorbar(eta, err, yerr=np.minimum(2 * se, 0.999 * err), fmt="none", ecolor=c, lw=0.8, capsize=2)
                if rax is not None:
                    residual(rax, eta, -signed, se, 0.0, None, color=c, names=("SGD", "model"), marker=mk, ms=4, mfc="none")
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
        set_xlabel(ax, rax, r"learning rate $\eta$")
        ax.set_ylabel(r"weak error $|S^{\rm model} - S^{\rm SGD}|$")
        desc = str(sub.observable_description.values) if "observable_description" in sub.coords else o
        ax.set_title(f"{o}: $S$ = {_STATISTICS.get(o, desc)}", fontsize=10)
        ax.grid(alpha=0.3, which="major")
        legend(ax, axes=[ax] + ([rax] if rax is not None else []), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle(title or _title(ds, width=int(12.5 * fig.get_figwidth())), fontsize=10)
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
