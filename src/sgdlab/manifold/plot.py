"""Figure, summary table and bias statistics of a manifold Dataset, from the Dataset alone.

Everything here reads only the Dataset of :func:`sgdlab.manifold.experiment.run`, also as read
back from a zarr store (:func:`sgdlab.core.store.load`): the figure settings come from the config
JSON in its attrs. No pyplot: figures are made with :func:`sgdlab.core.plot.subplots`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from sgdlab.core.plot import band, subplots
from sgdlab.core.report import table as rich_table

__all__ = ["bias_summary", "figures", "observables", "plot_manifold", "simulation_bias", "table"]


def observables(ds: xr.Dataset) -> list[str]:
    """The observables of the Dataset (every variable along ``method``), in the model's order."""
    names = ds.attrs.get("observables")
    if names:
        return [n for n in json.loads(names) if n in ds.data_vars]
    return [str(v) for v in ds.data_vars if "method" in ds[v].dims]


def _stochastic(ds: xr.Dataset) -> bool:
    return bool(int(ds.attrs.get("limit_stochastic", 0)))


def simulation_bias(ds: xr.Dataset, var: str) -> xr.Dataset:
    """Bias of the simulation against the limit: ``bias(eta, t) = mean_seed sim - mean_seed limit``
    and its standard error ``se`` (seed-to-seed spread of both, over the number of runs)."""
    sim, lim = ds[var].sel({"method": "sim"}), ds[var].sel({"method": "limit"})
    n = ds.sizes["seed"]
    lim_var = lim.var("seed", ddof=1) if _stochastic(ds) else 0.0 * lim.isel(seed=0)
    return xr.Dataset({"bias": sim.mean("seed") - lim.mean("seed"), "se": np.sqrt(sim.var("seed", ddof=1) / n + lim_var / n)})


def bias_summary(ds: xr.Dataset, var: str) -> list[dict]:
    """Per eta: the largest ``|bias|`` over ``t > 0`` (and its t and SE) of observable ``var``
    (``t = 0`` compares ``w0`` with ``Phi(w0)``: the fast phase, instantaneous in the limit)."""
    b = simulation_bias(ds, var)
    rows = []
    for ie, eta in enumerate(ds.eta.values):
        bias, se = np.abs(b.bias.values[ie]), b.se.values[ie]
        j = 1 + int(np.nanargmax(bias[1:])) if bias.size > 1 else 0  # t > 0: after the fast phase
        rows.append({"eta": float(eta), "sigma": float(ds.sigma.values[ie]), "max_bias": float(bias[j]), "se": float(se[j]), "t": float(ds.t.values[j])})
    return rows


def _plot_settings(ds: xr.Dataset) -> tuple[list[str] | None, str]:
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        cfg = {}
    return (cfg.get("plot") or {}).get("variables"), cfg.get("description") or ""


def plot_manifold(ds: xr.Dataset, variables: list[str] | None = None, title: str | None = None):
    """Simulation for every eta (mean over runs, band one standard error) with the limit (black,
    dashed; band one standard deviation of its paths when stochastic) against rescaled time, one
    panel per observable, and a last panel ``|sim - limit| / eta`` of the first observable (curves
    collapse when the bias is O(eta)) or, for a stochastic limit, its variance over runs and over
    the limit's paths. Returns a matplotlib Figure."""
    import matplotlib

    if variables is None:
        variables = [v for v in observables(ds) if v != "loss"][:5]
    panels = len(variables) + 1
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows), squeeze=False)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    t = ds.t.values
    n = ds.sizes["seed"]
    stochastic = _stochastic(ds)
    t_label = ds.t.attrs.get("long_name", "t")
    for ax, var in zip(axes.flat, variables):
        for ie, eta in enumerate(ds.eta.values):
            da = ds[var].sel({"method": "sim"}).isel(eta=ie)
            label = f"sim eta={eta:g}, sigma={float(ds.sigma.values[ie]):.3g}"
            band(ax, t, da.mean("seed").values, da.std("seed", ddof=1).values / np.sqrt(n), colors[ie % len(colors)], label=label, lw=1.3, alpha=0.25)
        lim = ds[var].sel({"method": "limit"}).isel(eta=0)
        label = "limit" + (f" (mean of {n} paths, ±std)" if stochastic else "")
        band(ax, t, lim.mean("seed").values, lim.std("seed", ddof=1).values if stochastic else None, "k", label=label, ls="--", lw=1.5, alpha=0.08)
        ax.set_title(ds[var].attrs.get("long_name", var), fontsize=10)
        ax.set_xlabel(t_label)
        ax.grid(alpha=0.3)
    ax = list(axes.flat)[len(variables)]
    main = variables[0]
    if stochastic:  # the mean bias is noise here: compare the spread (the diffusion of the limit SDE)
        for ie, eta in enumerate(ds.eta.values):
            var_sim = ds[main].sel({"method": "sim"}).isel(eta=ie).var("seed", ddof=1).values
            ax.plot(t, var_sim, color=colors[ie % len(colors)], lw=1.3, label=f"sim eta={eta:g}")
        ax.plot(t, ds[main].sel({"method": "limit"}).isel(eta=0).var("seed", ddof=1).values, "k--", lw=1.5, label="limit SDE")
        ax.set_title(f"variance of {main} over runs / paths", fontsize=10)
    else:
        b = simulation_bias(ds, main)
        for ie, eta in enumerate(ds.eta.values):
            c = colors[ie % len(colors)]
            bias, se = np.abs(b.bias.values[ie, 1:]), b.se.values[ie, 1:]  # t > 0 (after the fast phase)
            ax.plot(t[1:], bias / eta, color=c, lw=1.3, label=f"eta={eta:g}")
            ax.fill_between(t[1:], np.maximum(bias - 2 * se, 0) / eta, (bias + 2 * se) / eta, color=c, alpha=0.15, lw=0)
        ax.set_title(f"|sim - limit| / eta of {main} (band: 2 SE)", fontsize=10)
    ax.set_xlabel(t_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for extra in list(axes.flat)[panels:]:
        extra.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    a = ds.attrs
    fig.suptitle(title or f"{a.get('model', '')}: {a.get('noise', '')} ({a.get('noise_kind', '')}, {a.get('time_scale', '')})", fontsize=10)
    return fig


def figures(ds: xr.Dataset) -> dict:
    """``{"": the figure}`` (:func:`plot_manifold` with the config's ``plot.variables`` and its
    ``description`` as the title)."""
    variables, description = _plot_settings(ds)
    return {"": plot_manifold(ds, variables=variables, title=description or None)}


def table(ds: xr.Dataset):
    """Per observable and eta: the largest ``|sim - limit|`` over ``t > 0``, its SE and the ratio
    to the next (smaller) eta (about 2 when eta halves and the bias is O(eta))."""
    a = ds.attrs
    title = f"{a.get('noise')} on {a.get('model')}: {a.get('noise_kind')}, {a.get('time_scale')}"
    rows = []
    for var in observables(ds):
        summary = bias_summary(ds, var)
        for i, row in enumerate(summary):
            nxt = summary[i + 1]["max_bias"] if i + 1 < len(summary) else 0.0
            rows.append([
                var if i == 0 else "",
                f"{row['eta']:g}",
                f"{row['sigma']:.4g}",
                str(int(ds.steps_per_save.values[i])),
                f"{row['max_bias']:.3e}",
                f"{row['se']:.1e}",
                f"{row['t']:.3g}",
                f"{row['max_bias'] / nxt:.2f}" if nxt > 0 else "",
            ])
    return rich_table(title, ["observable", "eta", "sigma", "steps/save", "max|sim-limit|", "SE", "at t", "ratio"], rows)
