"""Figures from result Datasets. Functions take a Dataset and return a matplotlib Figure.

Simulation (``method = "sim"``) is drawn as the mean over seeds with a shaded band of one
standard deviation (the seed-to-seed spread) and an error bar of one standard error on the mean;
theory methods (no ``seed`` spread) are drawn as plain lines on the same axes.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never require a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

ORDER_PARAMETER_PANELS = ("m", "q", "train_loss", "test_loss", "train_error", "test_error")
TITLES = {
    "m": r"$m(t)$",
    "q": r"$C(t,t)$",
    "train_loss": "training loss",
    "test_loss": "test loss",
    "train_error": "training error",
    "test_error": "test error",
}


def plot_order_parameters(ds: xr.Dataset, variables=ORDER_PARAMETER_PANELS, title: str | None = None):
    """One panel per variable versus ``t``; every method of ``ds`` on the same axes."""
    variables = [v for v in variables if v in ds]
    ncols = 3
    nrows = int(np.ceil(len(variables) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t = ds["t"].values
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
                line = da.mean("seed") if "seed" in da.dims else da
                ax.plot(t, line.values, color=color, lw=1.5, ls="--" if method != "sim" else "-", label=str(method))
        ax.set_title(TITLES.get(var, var))
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(variables):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path) -> None:
    """Write a figure to ``path`` (PNG at 120 dpi) and close it."""
    fig.savefig(path, dpi=120)
    plt.close(fig)
