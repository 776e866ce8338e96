"""Figures of a Gaussian-mixture run, from its Dataset alone.

The simulation (``method = "sim"``) is drawn as the mean over seeds with a shaded band of one
standard deviation (the seed-to-seed spread) and error bars of one standard error of the mean;
theories as dashed lines on the same axes, with a band of one Monte-Carlo standard error
(``<name>_se``, from independent DMFT solves) where the Dataset has it.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import xarray as xr

from sgdlab.core.plot import subplots

ORDER_PARAMETER_PANELS = ("m", "q", "train_loss", "test_loss", "train_error", "test_error")
TITLES = {
    "m": r"overlap $m(t) = w\cdot v/d$",
    "q": r"self-overlap $C(t,t) = |w|^2/d$",
    "train_loss": r"training loss $\mathcal{L}_{\rm train}(t)$",
    "test_loss": r"test loss $\mathcal{L}_{\rm test}(t)$",
    "train_error": r"training error $\epsilon_{\rm train}(t)$",
    "test_error": r"test error $\epsilon_{\rm test}(t)$",
}


def plot_order_parameters(ds: xr.Dataset, variables=ORDER_PARAMETER_PANELS, title: str | None = None):
    """One panel per variable versus ``t``; every method of ``ds`` on the same axes."""
    variables = [v for v in variables if v in ds]
    ncols = 3
    nrows = int(np.ceil(len(variables) / ncols))
    fig, axes = subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    t = ds["t"].values
    steps = np.diff(t)
    constant = steps.size == 0 or np.allclose(steps, steps[0], rtol=1e-9)
    xlabel = r"time $t = k\eta$" if constant else r"time $t_k = \sum_{j<k}\eta_j$ (step-size schedule)"
    for ax, var in zip(axes.flat, variables):
        for i, method in enumerate(map(str, ds["method"].values)):
            da = ds[var].isel(method=i)
            color = colors[i % len(colors)]
            if "seed" in da.dims and np.isfinite(da.values).any() and da.sizes["seed"] > 1 and method == "sim":
                mean = da.mean("seed").values
                std = da.std("seed", ddof=1).values
                sem = std / np.sqrt(da.sizes["seed"])
                ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.2, lw=0)
                ax.plot(t, mean, color=color, lw=1.2, label=f"{method} (mean ± std, n={da.sizes['seed']})")
                step = max(1, len(t) // 15)
                ax.errorbar(t[::step], mean[::step], yerr=sem[::step], fmt="none", ecolor=color, capsize=2, lw=0.8)
            else:
                line = (da.mean("seed") if "seed" in da.dims else da).values
                se_name = f"{var}_se"
                label = str(method)
                if se_name in ds and np.isfinite(ds[se_name].isel(method=i).values).any():
                    se = ds[se_name].isel(method=i)
                    se = (se.mean("seed") if "seed" in se.dims else se).values
                    ax.fill_between(t, line - se, line + se, color=color, alpha=0.3, lw=0)
                    label = f"{method} (± s.e., {ds.attrs.get('dmft_solves', '?')} solves)"
                ax.plot(t, line, color=color, lw=1.5, ls="--" if method != "sim" else "-", label=label)
        ax.set_title(TITLES.get(var, var), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(variables):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def figures(ds: xr.Dataset) -> dict:
    """The figures of a run: ``{"": order parameters}``."""
    import json

    cfg = json.loads(ds.attrs.get("config", "{}"))
    return {"": plot_order_parameters(ds, title=cfg.get("description") or cfg.get("name"))}

